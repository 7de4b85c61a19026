package main

import (
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/authz-proxy/authz-proxy/internal/audit"
	"github.com/authz-proxy/authz-proxy/internal/config"
	"github.com/authz-proxy/authz-proxy/internal/metrics"
	"github.com/authz-proxy/authz-proxy/internal/policy"
	"github.com/authz-proxy/authz-proxy/internal/proxy"
	"github.com/authz-proxy/authz-proxy/internal/store"
)

// reloader puts a changed configuration in force while serving: it loads
// and checks the new one whole, and only then swaps it in; a configuration
// that fails any check leaves the one in force untouched.
type reloader struct {
	path string
	cur  *loaded // in force
	// mu guards cur for reading on other goroutines (current): reload
	// writes it on serve's own.
	mu sync.RWMutex
	// reloaded is told of each configuration put in force (nil: nobody).
	reloaded chan struct{}
	// fingerprint is of the files cur was loaded from; tried is of the
	// last files a reload was attempted from, so that a broken file is
	// reported once, not at every look.
	fingerprint, tried string

	proxy *proxy.Server
	// store is the content store the sources read through (nil: none);
	// a reload keeps it.
	store   *store.Store
	tls     atomic.Pointer[tls.Config]
	audit   *audit.Log
	metrics *metrics.Metrics
	logger  *slog.Logger
}

// trustChanged puts in force the policy in force compiled anew with the
// trust roots as they are now: after a refresh brought a new
// trusted_root.json, or a root's metadata expired. Requests in flight
// finish under the old policy; outcomes cached under it are not used
// again.
func (r *reloader) trustChanged() {
	pol, err := policy.Compile(r.cur.cfg, policy.WithTrustRoots(r.cur.trust.Roots(time.Now())))
	if err != nil {
		r.logger.Error("trust roots changed, and the policy does not compile with them; the one in force stays", "err", err.Error())
		return
	}
	if pol.Generation == r.cur.policy.Generation {
		return
	}
	l := *r.cur
	l.policy = pol
	if err := r.proxy.Reload(proxyOptions(&l, r.audit, r.logger, r.metrics)); err != nil {
		r.logger.Error("trust roots changed, and the policy could not be put in force; the one in force stays", "err", err.Error())
		return
	}
	old := r.cur.policy.Generation
	r.mu.Lock()
	r.cur = &l
	r.mu.Unlock()
	var roots []string
	for _, s := range l.trust.Status(time.Now()) {
		state := fmt.Sprintf("%s version %d (%s)", s.Name, s.TargetsVersion, s.Digest)
		if s.Withdrawn != "" {
			state = s.Name + " withdrawn: " + s.Withdrawn
		}
		roots = append(roots, state)
	}
	r.logger.Info("trust roots changed; the policy is in force with them", "from", old, "policyGeneration", pol.Generation, "roots", strings.Join(roots, "; "))
}

// reload loads the configuration anew and puts it in force, or logs why
// not. trigger says what asked for it, for the log.
func (r *reloader) reload(trigger string) {
	fp := fingerprint(r.path)
	if fp == r.fingerprint {
		r.logger.Info("configuration unchanged", "trigger", trigger, "generation", r.cur.cfg.Generation)
		return
	}
	r.tried = fp
	l, tc, err := r.prepare()
	if err != nil {
		r.metrics.ReloadFailed()
		r.logger.Error("configuration reload refused; the one in force stays", "trigger", trigger, "generation", r.cur.cfg.Generation, "err", err.Error())
		return
	}
	if err := r.proxy.Reload(proxyOptions(l, r.audit, r.logger, r.metrics)); err != nil {
		r.metrics.ReloadFailed()
		r.logger.Error("configuration reload refused; the one in force stays", "trigger", trigger, "generation", r.cur.cfg.Generation, "err", err.Error())
		return
	}
	if tc != nil {
		r.tls.Store(tc)
	}
	old := r.cur.cfg.Generation
	r.mu.Lock()
	r.cur, r.fingerprint = l, fp
	l.trustRoots.Use(l.trust)
	r.mu.Unlock()
	select {
	case r.reloaded <- struct{}{}:
	default: // told already; it reads the one in force
	}
	r.metrics.ConfigLoaded(l.cfg.Generation, true)
	logWarnings(r.logger, l)
	r.logger.Info("configuration reloaded", "trigger", trigger, "from", old, "generation", l.cfg.Generation, "rules", len(l.cfg.Policy.Rules))
}

// current is the configuration in force.
func (r *reloader) current() *loaded {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.cur
}

// prepare loads and checks the new configuration, and builds its TLS
// settings: everything that can fail, before anything is swapped.
func (r *reloader) prepare() (*loaded, *tls.Config, error) {
	l, err := loadReusing(r.path, r.cur, r.cur.trustRoots)
	if err != nil {
		return nil, nil, err
	}
	if err := restartNeeded(r.cur, l); err != nil {
		return nil, nil, err
	}
	if (r.cur.store == nil) != (l.store == nil) || (l.store != nil && !l.store.same(r.cur.store)) {
		// Not the parameters: they hold the S3 credential.
		return nil, nil, l.cfg.Errorf([]any{"store"}, "changed (driver, place, size or credential): this takes a restart, not a reload (restart with the new configuration to apply it)")
	}
	if err := l.withSources(r.store, r.metrics, r.logger, r.cur); err != nil {
		return nil, nil, err
	}
	if l.cfg.Listen.TLS == nil {
		return l, nil, nil
	}
	tc, err := tlsConfig(l.cfg)
	if err != nil {
		return nil, nil, err
	}
	return l, tc, nil
}

// restartNeeded refuses changes that a running process cannot apply: where
// it listens, whether it speaks TLS, and how the decision log is written.
func restartNeeded(old, c *loaded) error {
	if err := restartNeededConfig(old.cfg, c.cfg); err != nil {
		return err
	}
	if old.checkpointKeyID != c.checkpointKeyID {
		return c.cfg.Errorf([]any{"audit", "checkpoint", "keyFile"}, "the checkpoint key changed from %s to %s: this takes a restart, not a reload (restart with the new key to apply it; keep the old public key to verify the log written so far)", orNone(old.checkpointKeyID), orNone(c.checkpointKeyID))
	}
	return nil
}

func orNone(s string) string {
	if s == "" {
		return "(none)"
	}
	return s
}

func restartNeededConfig(old, c *config.Config) error {
	metricsAddr := func(c *config.Config) string {
		if c.Metrics == nil {
			return "(none)"
		}
		return c.Metrics.Addr
	}
	pprofOn := func(c *config.Config) string {
		if c.Metrics == nil || !c.Metrics.Pprof {
			return "off"
		}
		return "on"
	}
	auditFile := func(c *config.Config) string {
		if c.Audit.File == "" {
			return "(none)"
		}
		return c.Path(c.Audit.File)
	}
	every := func(c *config.Config) string {
		if c.Audit.Checkpoint == nil {
			return "(none)"
		}
		return c.Audit.Checkpoint.Every.String()
	}
	tlsOn := func(c *config.Config) string {
		if c.Listen.TLS == nil {
			return "off"
		}
		return "on"
	}
	for _, f := range []struct {
		path     []any
		old, new string
	}{
		{[]any{"listen", "addr"}, old.Listen.Addr, c.Listen.Addr},
		{[]any{"listen", "tls"}, tlsOn(old), tlsOn(c)},
		{[]any{"metrics", "addr"}, metricsAddr(old), metricsAddr(c)},
		{[]any{"metrics", "pprof"}, pprofOn(old), pprofOn(c)},
		{[]any{"audit", "file"}, auditFile(old), auditFile(c)},
		{[]any{"audit", "chain"}, fmt.Sprint(old.Audit.Chained()), fmt.Sprint(c.Audit.Chained())},
		{[]any{"audit", "required"}, fmt.Sprint(old.Audit.Required), fmt.Sprint(c.Audit.Required)},
		{[]any{"audit", "logId"}, orNone(old.Audit.LogID), orNone(c.Audit.LogID)},
		{[]any{"audit", "checkpoint", "every"}, every(old), every(c)},
		{[]any{"limits", "maxConnections"}, fmt.Sprint(old.Limits.MaxConnections), fmt.Sprint(c.Limits.MaxConnections)},
		{[]any{"limits", "maxConnectionsPerClient"}, fmt.Sprint(old.Limits.MaxConnectionsPerClient), fmt.Sprint(c.Limits.MaxConnectionsPerClient)},
		{[]any{"limits", "maxFills"}, fmt.Sprint(old.Limits.MaxFills), fmt.Sprint(c.Limits.MaxFills)},
		{[]any{"limits", "maxFillsPerUpstream"}, fmt.Sprint(old.Limits.MaxFillsPerUpstream), fmt.Sprint(c.Limits.MaxFillsPerUpstream)},
		{[]any{"limits", "maxFillWindowBytes"}, fmt.Sprint(old.Limits.MaxFillWindowBytes), fmt.Sprint(c.Limits.MaxFillWindowBytes)},
	} {
		if f.old != f.new {
			return c.Errorf(f.path, "changed from %s to %s: this takes a restart, not a reload (restart with the new configuration to apply it)", f.old, f.new)
		}
	}
	return nil
}

// fingerprint hashes the configuration at path and every file it names,
// so that any change among them, and a named file appearing or vanishing,
// changes the fingerprint.
func fingerprint(path string) string {
	h := sha256.New()
	for _, name := range append([]string{path}, config.ReferencedFiles(path)...) {
		b, err := os.ReadFile(name)
		if err != nil {
			fmt.Fprintf(h, "%s: %v\n", name, err)
			continue
		}
		fmt.Fprintf(h, "%s: %d\n", name, len(b))
		h.Write(b)
	}
	return hex.EncodeToString(h.Sum(nil))
}
