// Package revalidate is continuous re-validation, Binary Authorization's
// continuous validation for pulls: the digests allowed within a window are
// judged again, from time to time, under the policy and trust in force,
// their evidence read from the upstream again (a judge of its own, with no
// outcome cached), and a digest that would now be denied — its signature
// deleted, its key removed from an attestor, a new rule against it — is
// logged as decision "revoked" with the reasons, once, until it is allowed
// again. What was allowed comes from the decision records the log writes
// (Observe) and from decision logs read back (Read).
package revalidate

import (
	"bufio"
	"context"
	"errors"
	"io"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/authz-proxy/authz-proxy/internal/audit"
	"github.com/authz-proxy/authz-proxy/internal/policy"
	"github.com/authz-proxy/authz-proxy/internal/replay"
)

// Results of one digest judged again, as Observer is told them.
const (
	ResultAllowed = "allowed"
	ResultRevoked = "revoked"
	ResultError   = "error"
)

// Writer takes the revoked records; *audit.Log is one.
type Writer interface {
	Write(ctx context.Context, r audit.Record) error
}

// Observer is told what re-validation finds, for metrics; *metrics.Metrics
// is one.
type Observer interface {
	// Revalidated is told of each digest judged again: ResultAllowed,
	// ResultRevoked or ResultError.
	Revalidated(upstream, result string)
	// RevalidationDone is told of the end of each round.
	RevalidationDone(at time.Time)
}

// Options configure a Revalidator.
type Options struct {
	Observer Observer
	Logger   *slog.Logger
	// Now is the clock (nil: time.Now).
	Now func() time.Time
}

// Revalidator keeps the pulls allowed of late and judges them again. Safe
// for concurrent use.
type Revalidator struct {
	opts Options

	mu     sync.Mutex
	pulls  *replay.Collector
	envs   envs
	window time.Duration // 0: records are not kept
}

// envs are the environments of the policy in force, for grouping records.
type envs struct{ p *policy.Policy }

func (e *envs) Environment(c policy.Client) string {
	if e.p == nil {
		return ""
	}
	return e.p.Environment(c)
}

// New returns a Revalidator that keeps no record until SetWindow.
func New(o Options) *Revalidator {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	r := &Revalidator{opts: o}
	r.pulls = replay.NewCollector(&r.envs)
	return r
}

// SetWindow makes r keep the records of the last window under policy p
// (whose environments group them); 0 (or less) turns re-validation off and
// forgets every record.
func (r *Revalidator) SetWindow(window time.Duration, p *policy.Policy) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.window, r.envs.p = max(window, 0), p
	if r.window == 0 {
		r.pulls = replay.NewCollector(&r.envs)
	}
}

// Observe takes one decision record as the log writes it (audit's
// WithFollower).
func (r *Revalidator) Observe(rec audit.Record) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.window > 0 {
		r.pulls.Add(rec)
	}
}

// Read takes the decision records of a decision log within the window
// (other lines are skipped).
func (r *Revalidator) Read(in io.Reader) error {
	since := r.opts.Now().Add(-r.windowNow())
	sc := bufio.NewScanner(in)
	sc.Buffer(make([]byte, 0, 64<<10), 16<<20)
	for sc.Scan() {
		if rec, err := audit.Parse(sc.Bytes()); err == nil && !rec.Time.Before(since) {
			r.Observe(rec)
		}
	}
	return sc.Err()
}

func (r *Revalidator) windowNow() time.Duration {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.window
}

// Summary is what one round found.
type Summary struct {
	// Judged counts the digests allowed within the window, judged again;
	// Allowed those still served, Revoked those now denied, Errors those
	// that could not be judged (the upstream failing).
	Judged, Allowed, Revoked, Errors int
	// Results are the revoked and failed ones.
	Results []replay.Result
}

// Run judges again, under p reading from registries (by upstream name),
// every pull whose last decision within the window was an allow and that
// re-validation has not found denied since: one now denied is written to
// log (nil: none, the summary alone says) as a revoked record and marked,
// so that the next round does not log it again unless it is allowed again
// first.
func (r *Revalidator) Run(ctx context.Context, p *policy.Policy, registries map[string]policy.Registry, log Writer) Summary {
	now := r.opts.Now()
	r.mu.Lock()
	r.envs.p = p
	r.pulls.Forget(now.Add(-r.window))
	var due []*replay.Pull
	for _, pull := range r.pulls.Log().Pulls {
		if pull.Was.Decision == audit.Allow && pull.LastPulled.After(pull.Revoked) {
			c := *pull
			due = append(due, &c)
		}
	}
	r.mu.Unlock()

	judge := &replay.Judge{Policy: p, Registries: registries}
	results := judge.Run(ctx, due)
	var s Summary
	if ctx.Err() != nil {
		return s // stopped midway: what failed says nothing of the images
	}
	for _, res := range results {
		s.Judged++
		result := ResultAllowed
		switch res.Now.Decision {
		case audit.Deny:
			result = ResultRevoked
			s.Revoked++
			s.Results = append(s.Results, res)
			r.revoke(ctx, res, now, log)
		case audit.Error:
			result = ResultError
			s.Errors++
			s.Results = append(s.Results, res)
			r.opts.Logger.Warn("re-validation could not judge a digest again", "image", res.Image, "digest", res.Digest, "err", strings.Join(res.Now.Reasons, "; "))
		default:
			s.Allowed++
		}
		if r.opts.Observer != nil {
			r.opts.Observer.Revalidated(res.Upstream, result)
		}
	}
	if r.opts.Observer != nil {
		r.opts.Observer.RevalidationDone(r.opts.Now())
	}
	r.opts.Logger.Info("re-validation", "generation", p.Generation, "judged", s.Judged, "allowed", s.Allowed, "revoked", s.Revoked, "errors", s.Errors)
	return s
}

// revoke logs res, a pull allowed before and denied now, and marks it.
func (r *Revalidator) revoke(ctx context.Context, res replay.Result, at time.Time, log Writer) {
	ref := res.Digest
	if res.Tag != "" {
		ref = res.Tag
	}
	rec := audit.Record{
		Decision: audit.Revoked, Image: res.Image, Reference: ref, Digest: res.Digest, MediaType: res.MediaType,
		Upstream: res.Upstream, Rule: res.Now.Rule, Enforcement: res.Now.Enforcement, Reasons: res.Now.Reasons,
		Client: res.Client, Source: audit.SourceUpstream,
	}
	rec.Client.Environment = res.Environment
	r.mu.Lock()
	r.pulls.Add(audit.Record{Time: at, Decision: audit.Revoked, Image: rec.Image, Reference: ref, Digest: rec.Digest, Upstream: rec.Upstream, Client: res.Client})
	r.mu.Unlock()
	if log == nil {
		return
	}
	if err := log.Write(ctx, rec); err != nil && !errors.Is(err, context.Canceled) {
		r.opts.Logger.Error("writing a revoked record", "image", rec.Image, "digest", rec.Digest, "err", err.Error())
	}
}
