package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/authz-proxy/authz-proxy/internal/audit"
	"github.com/authz-proxy/authz-proxy/internal/config"
	"github.com/authz-proxy/authz-proxy/internal/replay"
	"github.com/authz-proxy/authz-proxy/internal/revalidate"
)

// revalidating runs re-validation while serving: a round when it is turned
// on (at start, or by a reload) and every revalidate.interval of the
// configuration in force, judging under its policy and reading its
// upstreams; off while the configuration has no revalidate section. When
// it is turned on, the records of audit.file within the window are read
// first. Revoked records go to log. It returns once ctx ends and the round
// under way has stopped.
func revalidating(ctx context.Context, r *reloader, rv *revalidate.Revalidator, log *audit.Log, reloaded <-chan struct{}) {
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	var last time.Time // the end of the last round; zero: none since turned on
	for {
		l := r.current()
		var wait <-chan time.Time
		if c := l.cfg.Revalidate; c == nil {
			rv.SetWindow(0, nil)
			last = time.Time{}
		} else {
			rv.SetWindow(c.Window, l.policy)
			if last.IsZero() {
				readAuditFile(rv, log.Path(), r.logger)
			}
			if last.IsZero() || time.Since(last) >= c.Interval {
				rv.Run(ctx, l.policy, l.registries(), log)
				last = time.Now()
				if ctx.Err() != nil {
					return
				}
				continue
			}
			timer.Reset(time.Until(last.Add(c.Interval)))
			wait = timer.C
		}
		select {
		case <-ctx.Done():
			return
		case <-reloaded:
			timer.Stop()
		case <-wait:
		}
	}
}

// readAuditFile gives rv the records of the decision log at path ("": none).
func readAuditFile(rv *revalidate.Revalidator, path string, logger *slog.Logger) {
	if path == "" {
		return
	}
	rc, err := audit.Open(path)
	if err == nil {
		err = rv.Read(rc)
		rc.Close()
	}
	if err != nil {
		logger.Warn("re-validation: reading the decision log for the digests allowed within the window", "file", path, "err", err.Error())
	}
}

// revalidateReport is revalidate's JSON output.
type revalidateReport struct {
	Config  string          `json:"config"`
	Since   time.Time       `json:"since"`
	Judged  int             `json:"judged"`
	Allowed int             `json:"allowed"`
	Revoked int             `json:"revoked"`
	Errors  int             `json:"errors"`
	Results []replay.Result `json:"results"`
}

func revalidateCmd(ctx context.Context, args []string, stdout, stderr io.Writer, now time.Time) error {
	fs := flags("revalidate", stderr)
	path := fs.String("config", "", "configuration file: its policy, attestors and upstreams")
	var logs listFlag
	fs.Var(&logs, "log", "decision log (default: the configuration's audit.file; rotated and gzipped files, folders, - for standard input); repeat, or list several")
	since := fs.String("since", "", "the digests allowed from then on: a duration back from now (24h, 7d) or a time (default: revalidate.window, else 24h)")
	output := fs.String("output", "text", "text, json, or log: the revoked records as decision-log lines")
	rest, err := parseInterleaved(fs, args)
	if err != nil {
		return err
	}
	logs = append(logs, rest...)
	if *output != "text" && *output != "json" && *output != "log" {
		return usageErr("revalidate: --output %q: want text, json or log", *output)
	}
	l, err := load(*path)
	if err != nil {
		return err
	}
	window := config.DefaultRevalidateWindow
	if c := l.cfg.Revalidate; c != nil {
		window = c.Window
	}
	from := now.Add(-window)
	if *since != "" {
		if from, err = when(*since, now); err != nil {
			return usageErr("revalidate: --since %q: %v", *since, err)
		}
	}
	if len(logs) == 0 {
		if l.cfg.Audit.File == "" {
			return usageErr("revalidate: --log FILE is required: %s has no audit.file", l.cfg.File)
		}
		logs = listFlag{l.cfg.Path(l.cfg.Audit.File)}
	}
	files, err := audit.Files(logs)
	if err != nil {
		return usageErr("revalidate: --log: %v", err)
	}
	rv := revalidate.New(revalidate.Options{Now: func() time.Time { return now }})
	rv.SetWindow(now.Sub(from), l.policy)
	for _, f := range files {
		rc, err := audit.Open(f)
		if err != nil {
			return fmt.Errorf("revalidate: %w", err)
		}
		err = rv.Read(rc)
		rc.Close()
		if err != nil {
			return fmt.Errorf("revalidate: %s: %w", f, err)
		}
	}
	var w revalidate.Writer
	if *output == "log" {
		if w, err = audit.New(stdout, ""); err != nil {
			return err
		}
	}
	if err := l.withSources(nil, nil, nil, nil); err != nil {
		return err
	}
	s := rv.Run(ctx, l.policy, l.registries(), w)
	switch *output {
	case "json":
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if s.Results == nil {
			s.Results = []replay.Result{}
		}
		if err := enc.Encode(revalidateReport{Config: l.cfg.File, Since: from, Judged: s.Judged, Allowed: s.Allowed, Revoked: s.Revoked, Errors: s.Errors, Results: s.Results}); err != nil {
			return err
		}
	case "log":
		printRevalidate(stderr, from, s)
	default:
		printRevalidate(stdout, from, s)
	}
	switch {
	case s.Errors > 0:
		return &exitError{code: 2}
	case s.Revoked > 0:
		return &exitError{code: 1}
	}
	return nil
}

func printRevalidate(w io.Writer, from time.Time, s revalidate.Summary) {
	fmt.Fprintf(w, "Re-validated %d digest(s) allowed since %s under the policy in force, their evidence read again: %d still allowed, %d revoked (allowed before, denied now), %d could not be judged.\n",
		s.Judged, from.UTC().Format(time.RFC3339), s.Allowed, s.Revoked, s.Errors)
	if len(s.Results) == 0 {
		return
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "IMAGE\tDIGEST\tENVIRONMENT\tLAST ALLOWED\tNOW\tRULE\tREASON")
	for _, r := range s.Results {
		img, now := r.Image, r.Now.Decision
		if r.Tag != "" {
			img += ":" + r.Tag
		}
		if now == audit.Deny {
			now = audit.Revoked
		}
		env := r.Environment
		if env == "" {
			env = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", img, shortDigest(r.Digest), env, r.LastPulled.UTC().Format(time.RFC3339), now, r.Now.Rule, strings.Join(r.Now.Reasons, "; "))
	}
	tw.Flush()
}
