package main

import (
	"context"
	"crypto"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"reflect"
	"slices"
	"strings"
	"time"

	"github.com/authz-proxy/authz-proxy/internal/audit"
	"github.com/authz-proxy/authz-proxy/internal/budget"
	"github.com/authz-proxy/authz-proxy/internal/clients"
	"github.com/authz-proxy/authz-proxy/internal/config"
	"github.com/authz-proxy/authz-proxy/internal/metrics"
	"github.com/authz-proxy/authz-proxy/internal/policy"
	"github.com/authz-proxy/authz-proxy/internal/source"
	"github.com/authz-proxy/authz-proxy/internal/store"
	"github.com/authz-proxy/authz-proxy/internal/trust"
	"github.com/authz-proxy/authz-proxy/internal/upstream"
)

var _ policy.Registry = (*source.Source)(nil)

// budgetWait is how long a large manifest request waits for room in the
// manifest budget before it is refused with 503.
const budgetWait = 5 * time.Second

// loaded is a configuration with its policy compiled and its upstream
// clients built.
type loaded struct {
	cfg       *config.Config
	policy    *policy.Policy
	upstreams []*upstream.Client
	byName    map[string]*upstream.Client
	// options are what each of upstreams was built from.
	options []upstream.Options
	// budget bounds the manifest bytes in flight; one per process, kept
	// across reloads.
	budget *budget.Budget
	// checkpointKey signs the decision log's checkpoints (nil without
	// audit.checkpoint), and checkpointKeyID names it.
	checkpointKey   crypto.Signer
	checkpointKeyID string
	// store is what the content store opens with; nil without one.
	store *storeSpec
	// sources are what the proxy reads of each upstream, by name, once
	// withSources built them.
	sources map[string]*source.Source
	// clients authenticate and authorize who pulls; nil: anyone.
	clients *clients.Clients
	// trustRoots keeps the trust roots current (one per process, kept
	// across reloads), and trust is this configuration's roots.
	trustRoots *trust.Manager
	trust      *trust.Set
}

// load reads, validates and compiles the configuration at path, with its
// trust roots read from their caches and mirrors.
func load(path string) (*loaded, error) {
	return loadReusing(path, nil, trust.New(trust.Options{UserAgent: "authz-proxy/" + versionString()}))
}

// loadReusing is load for a reload: an upstream whose options are the same
// as in prev keeps prev's client, with its connections and tokens, and a
// trust root that tm has in use and that is configured the same is kept.
func loadReusing(path string, prev *loaded, tm *trust.Manager) (*loaded, error) {
	if path == "" {
		return nil, usageErr("--config FILE is required")
	}
	cfg, err := config.Load(path)
	if err != nil {
		return nil, err
	}
	roots, err := loadTrust(context.Background(), cfg, tm)
	if err != nil {
		return nil, err
	}
	pol, err := policy.Compile(cfg, policy.WithTrustRoots(roots.Roots(time.Now())))
	if err != nil {
		return nil, err
	}
	sp, err := storeSpecOf(cfg)
	if err != nil {
		return nil, err
	}
	cl, err := clients.Compile(context.Background(), cfg, clients.Options{})
	if err != nil {
		return nil, err
	}
	l := &loaded{cfg: cfg, policy: pol, byName: map[string]*upstream.Client{}, budget: budget.New(cfg.Limits.MaxManifestBytesInFlight, budgetWait), store: sp, clients: cl,
		trustRoots: tm, trust: roots}
	if prev != nil {
		l.budget = prev.budget
	}
	if cp := cfg.Audit.Checkpoint; cp != nil {
		path := []any{"audit", "checkpoint", "keyFile"}
		b, err := os.ReadFile(cfg.Path(cp.KeyFile))
		if err != nil {
			return nil, cfg.Errorf(path, "%v", err)
		}
		if l.checkpointKey, err = audit.ParsePrivateKey(b); err != nil {
			return nil, cfg.Errorf(path, "%s: %v", cp.KeyFile, err)
		}
		if l.checkpointKeyID, err = audit.KeyID(l.checkpointKey.Public()); err != nil {
			return nil, cfg.Errorf(path, "%s: %v", cp.KeyFile, err)
		}
	}
	for i, u := range cfg.Upstreams {
		o := upstream.Options{Name: u.Name, URL: u.URL, Insecure: u.Insecure, Limits: cfg.Limits, Budget: l.budget}
		if a := u.Auth; a != nil {
			o.Username = a.Username
			if a.PasswordFile != "" {
				b, err := os.ReadFile(cfg.Path(a.PasswordFile))
				if err != nil {
					return nil, cfg.Errorf([]any{"upstreams", i, "auth", "passwordFile"}, "%v", err)
				}
				o.Password = strings.TrimRight(string(b), "\r\n")
			} else {
				o.Password = os.Getenv(a.PasswordEnv)
			}
		}
		c := prev.client(o)
		if c == nil {
			if c, err = upstream.New(o); err != nil {
				return nil, cfg.Errorf([]any{"upstreams", i}, "%v", err)
			}
		}
		l.upstreams = append(l.upstreams, c)
		l.options = append(l.options, o)
		l.byName[u.Name] = c
	}
	l.budget.SetMax(cfg.Limits.MaxManifestBytesInFlight)
	l.budget.SetShares(cfg.Limits.MaxManifestBytesPerUpstream, cfg.Limits.MaxManifestBytesPerClient)
	return l, nil
}

// registries are l's sources as the judge reads them, by name, once
// withSources built them: what replay and re-validation read evidence
// from again.
func (l *loaded) registries() map[string]policy.Registry {
	out := make(map[string]policy.Registry, len(l.sources))
	for name, src := range l.sources {
		out[name] = src
	}
	return out
}

// withSources builds the source of each upstream of l, reading through st
// (nil: no store), counting in m and logging to logger (nil: neither). A source of prev,
// the configuration in force, is kept when its client and its tag rules
// are the same (with what it learnt: the tags it resolved, whether the
// upstream fails).
func (l *loaded) withSources(st *store.Store, m *metrics.Metrics, logger *slog.Logger, prev *loaded) error {
	l.sources = map[string]*source.Source{}
	for i, c := range l.upstreams {
		tags := tagsOf(l.cfg.Upstreams[i])
		if old := prev.source(c.Name()); old != nil && old.Upstream() == c && reflect.DeepEqual(old.Tags(), tags) {
			l.sources[c.Name()] = old
			continue
		}
		src, err := source.New(source.Options{Upstream: c, Store: st, Tags: tags, Metrics: m, Logger: logger})
		if err != nil {
			return err
		}
		l.sources[c.Name()] = src
	}
	return nil
}

// source is l's source of upstream name, or nil.
func (l *loaded) source(name string) *source.Source {
	if l == nil {
		return nil
	}
	return l.sources[name]
}

// tagsOf is how upstream u resolves tags.
func tagsOf(u config.Upstream) source.Tags {
	t := source.Tags{TTL: u.TagTTL, Immutable: u.ImmutableTags, StaleIfError: config.DefaultStaleIfError}
	if u.StaleIfError != nil {
		t.StaleIfError = *u.StaleIfError
	}
	return t
}

// client returns l's client built from options equal to o, or nil.
func (l *loaded) client(o upstream.Options) *upstream.Client {
	if l == nil {
		return nil
	}
	for i, prev := range l.options {
		if reflect.DeepEqual(prev, o) {
			return l.upstreams[i]
		}
	}
	return nil
}

// flags returns a FlagSet that reports errors as usage errors, not exits.
func flags(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	return fs
}

func parse(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if err == flag.ErrHelp {
			return &exitError{code: 0, err: nil}
		}
		return usageErr("%s: %v", fs.Name(), err)
	}
	return nil
}

func validateCmd(args []string, stdout, stderr io.Writer) error {
	fs := flags("validate", stderr)
	path := fs.String("config", "", "configuration file")
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usageErr("validate: unexpected argument %q", fs.Arg(0))
	}
	// No network: TUF roots are read from their caches, or reported
	// pending.
	l, err := loadReusing(*path, nil, trust.New(trust.Options{Offline: true}))
	if err != nil {
		return err
	}
	c := l.cfg
	for _, w := range slices.Concat(c.Warnings, l.trust.Warnings, l.policy.Warnings) {
		fmt.Fprintln(stderr, "warning:", w)
	}
	fmt.Fprintf(stdout, "%s: OK (generation %s): %d upstream(s), %d environment(s), %d trust root(s), %d attestor(s), %d rule(s), %d allowlist entr%s, %d breakglass entr%s\n",
		c.File, c.Generation, len(c.Upstreams), len(c.Environments), len(c.TrustRoots), len(c.Attestors), len(c.Policy.Rules),
		len(c.Policy.Allowlist), plural(len(c.Policy.Allowlist), "y", "ies"), len(c.Policy.Breakglass), plural(len(c.Policy.Breakglass), "y", "ies"))
	return nil
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}
