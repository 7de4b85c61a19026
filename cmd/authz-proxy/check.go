package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/authz-proxy/authz-proxy/internal/audit"
	"github.com/authz-proxy/authz-proxy/internal/config"
	"github.com/authz-proxy/authz-proxy/internal/oci"
	"github.com/authz-proxy/authz-proxy/internal/policy"
)

// checkResult is one image's outcome, in the decision log's terms.
type checkResult struct {
	Image       string               `json:"image"`
	Reference   string               `json:"reference"`
	Digest      string               `json:"digest,omitempty"`
	MediaType   string               `json:"mediaType,omitempty"`
	Decision    string               `json:"decision"`
	Rule        string               `json:"rule,omitempty"`
	Enforcement string               `json:"enforcement,omitempty"`
	Reasons     []string             `json:"reasons"`
	VerifiedBy  []audit.Verification `json:"verifiedBy"`
}

func checkCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flags("check", stderr)
	path := fs.String("config", "", "configuration file")
	output := fs.String("output", "text", "text or json")
	env := fs.String("environment", "", "judge as a client of this environment (default: of none)")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *output != "text" && *output != "json" {
		return usageErr("check: --output %q: want text or json", *output)
	}
	if fs.NArg() == 0 {
		return usageErr("check: name at least one IMAGE, e.g. docker.io/library/nginx:1.27")
	}
	l, err := load(*path)
	if err != nil {
		return err
	}
	if *env != "" && !slices.ContainsFunc(l.cfg.Environments, func(e config.Environment) bool { return e.Name == *env }) {
		return usageErr("check: --environment %q: %s defines no such environment", *env, l.cfg.File)
	}
	judge, err := policy.NewJudge(l.cfg.Cache.MaxEntries, nil)
	if err != nil {
		return err
	}
	if err := l.withSources(nil, nil, nil); err != nil {
		return err
	}
	var results []checkResult
	denied, failed := false, false
	for _, arg := range fs.Args() {
		r := l.check(ctx, judge, arg, *env)
		switch r.Decision {
		case audit.Deny:
			denied = true
		case audit.Error:
			failed = true
		}
		results = append(results, r)
	}
	if *output == "json" {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(results); err != nil {
			return err
		}
	} else {
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "IMAGE\tDIGEST\tDECISION\tRULE\tREASON")
		for _, r := range results {
			fmt.Fprintf(tw, "%s:%s\t%s\t%s\t%s\t%s\n", r.Image, r.Reference, shortDigest(r.Digest), r.Decision, r.Rule, strings.Join(r.Reasons, "; "))
		}
		tw.Flush()
	}
	switch {
	case failed:
		return &exitError{code: 2}
	case denied:
		return &exitError{code: 1}
	}
	return nil
}

// check judges one IMAGE argument, for a client of environment env, by
// reading its upstream directly, as the proxy would: a platform image named
// after its index inherits what the index proved.
func (l *loaded) check(ctx context.Context, judge *policy.Judge, arg, env string) checkResult {
	up, repo, ref, err := l.parseImage(arg)
	r := checkResult{Image: up + "/" + repo, Reference: ref.String(), Reasons: []string{}, VerifiedBy: []audit.Verification{}}
	if err != nil {
		r.Image, r.Decision, r.Reasons = arg, audit.Error, []string{err.Error()}
		return r
	}
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	v, m, err := judge.Pull(ctx, l.policy, l.sources[up], policy.Subject{Upstream: up, Repository: repo, Environment: env}, ref)
	if m != nil {
		r.Digest, r.MediaType = m.Digest, m.MediaType
	}
	if err != nil {
		r.Decision, r.Reasons = audit.Error, []string{err.Error()}
		return r
	}
	r.Decision, r.Rule, r.Enforcement = v.Decision(), v.Rule, v.Enforcement
	r.Reasons = append(r.Reasons, v.Reasons...)
	r.VerifiedBy = append(r.VerifiedBy, v.VerifiedBy...)
	return r
}

// parseImage splits "<upstream>/<repository>[:tag|@digest]"; the upstream
// may be left out when the configuration has a defaultUpstream. The tag
// defaults to latest.
func (l *loaded) parseImage(arg string) (up, repo string, ref oci.Reference, err error) {
	name, raw := arg, "latest"
	if i := strings.LastIndex(name, "@"); i >= 0 {
		name, raw = name[:i], name[i+1:]
	} else if i := strings.LastIndex(name, ":"); i > strings.LastIndex(name, "/") {
		name, raw = name[:i], name[i+1:]
	}
	if ref, err = oci.ParseReference(raw); err != nil {
		return "", "", ref, err
	}
	first, rest, ok := strings.Cut(name, "/")
	switch {
	case ok && l.byName[first] != nil:
		up, repo = first, rest
	case l.cfg.DefaultUpstream != "":
		up, repo = l.cfg.DefaultUpstream, name
	default:
		return "", "", ref, errors.New("names no configured upstream: write <upstream>/<repository>[:tag|@digest]")
	}
	return up, repo, ref, nil
}

func shortDigest(d string) string {
	if len(d) > 19 {
		return d[:19]
	}
	return d
}
