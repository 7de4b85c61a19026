package policy

import (
	"context"
	"fmt"
	"runtime/debug"
	"strings"
	"sync"
	"time"

	"github.com/authz-proxy/authz-proxy/internal/cache"
	"github.com/authz-proxy/authz-proxy/internal/config"
	"github.com/authz-proxy/authz-proxy/internal/oci"
	lru "github.com/hashicorp/golang-lru/v2"
)

// storedOutcomeTTL bounds how long an outcome that rests on evidence the
// store kept (the upstream failing) is cached.
const storedOutcomeTTL = 30 * time.Second

// ArtifactRule is the rule name of decisions about signature and attestation
// artifacts, which are served without policy.
const ArtifactRule = "(signature artifact)"

// Judge decides pulls: serve, check and replay all judge through one. The
// rule is matched for every request, so the tag, the digest and the
// client's environment always count; what is costly, the verified outcome
// of each requirement for a digest, is kept in a bounded cache keyed by
// policy generation, upstream, repository, digest and requirement (and the
// tag, for a condition that reads it). Outcomes that an allowed index
// proved are kept apart, for its children: they never replace the child's
// own outcome and expire with the index's. Safe for concurrent use.
type Judge struct {
	outcomes *cache.Cache[outcomeKey, outcome]
	flight   cache.Group[string, []outcome]
	now      func() time.Time

	// prefetched holds, by the flight key of a verification, the
	// evidence read that Prefetch started for it, or a claimed one (with
	// or without a read) while that verification runs: then no other read
	// starts for it.
	mu         sync.Mutex
	prefetched map[string]*prefetch
	// firstPlace remembers, per upstream and repository, where the last
	// verification that held found its evidence: the tag schemes (the
	// default) or the referrers. That place is read first, the other only
	// when the first does not satisfy the rule.
	firstPlace *lru.Cache[string, oci.Places]
	// readers run the reads ahead.
	readers workers
	// keepFindings keeps each scan's findings in the outcomes (for
	// check); otherwise they are dropped, as they can be many.
	keepFindings bool
}

// prefetch is one evidence read started ahead of its verification (done
// is closed once ev and err are set), or a mark that the verification
// runs (done is nil).
type prefetch struct {
	from    oci.Places
	done    chan struct{}
	ev      *oci.Evidence
	err     error
	cancel  context.CancelFunc
	claimed bool
}

// outcomeKey names one requirement's outcome for one digest.
type outcomeKey struct {
	generation, upstream, repository, digest string
	requirement                              string
	// tag is set for a requirement whose outcome depends on it.
	tag string
	// client is set for a requirement whose outcome depends on who asks.
	client string
	// inherited marks an outcome proved by an index that lists the digest.
	inherited bool
}

// NewJudge returns a judge that keeps at most maxEntries outcomes and reads
// the time (outcome and breakglass expiry) from now (nil: time.Now).
func NewJudge(maxEntries int, now func() time.Time) (*Judge, error) {
	if now == nil {
		now = time.Now
	}
	c, err := cache.New[outcomeKey, outcome](maxEntries, now)
	if err != nil {
		return nil, err
	}
	places, err := lru.New[string, oci.Places](4096)
	if err != nil {
		return nil, err
	}
	return &Judge{outcomes: c, now: now, prefetched: map[string]*prefetch{}, firstPlace: places, readers: newWorkers()}, nil
}

// first is where the evidence for s is read first: the referrers when the
// last verification in its repository that held found its evidence there,
// else the tag schemes.
func (j *Judge) first(s Subject) oci.Places {
	if p, ok := j.firstPlace.Get(s.Upstream + "/" + s.Repository); ok {
		return p
	}
	return oci.TagSchemes
}

// KeepFindings makes the verdicts carry every finding of the scans that
// vulnerabilities requirements judged (Verdict.Scans), as `check` shows
// them; call it before the judge is used. A serving judge does not: its
// outcomes, kept per digest, stay small.
func (j *Judge) KeepFindings() { j.keepFindings = true }

// Resize changes the most outcomes kept.
func (j *Judge) Resize(maxEntries int) { j.outcomes.Resize(maxEntries) }

// Len and Evictions report the outcome cache's entries and evictions.
func (j *Judge) Len() int          { return j.outcomes.Len() }
func (j *Judge) Evictions() uint64 { return j.outcomes.Evictions() }

// Decision is a verdict with how it was reached.
type Decision struct {
	Verdict
	// Artifact is true for a signature or attestation artifact, served
	// without policy.
	Artifact bool
	// Judged is true when the verdict rests on requirement outcomes (not
	// on the allowlist, breakglass or a rule that needs no evidence).
	Judged bool
	// Cached is true when it did and every outcome came from the cache:
	// nothing was read or verified.
	Cached bool
	// MediaType is, for a decision from the cache alone (CachedRefusal),
	// the media type of the manifest judged earlier.
	MediaType string
}

// Decide judges m, the manifest asked for as s (s.Digest and the media type
// are taken from m): a signature or attestation artifact, recognised by its
// content, is served without policy; anything else is judged by p. When an
// index is allowed by its requirements, its children inherit the outcomes
// it proved.
func (j *Judge) Decide(ctx context.Context, p *Policy, reg Registry, s Subject, m *oci.Manifest) (Decision, error) {
	s.Digest, s.MediaType, s.Size, s.IsIndex = m.Digest, m.MediaType, int64(len(m.Raw)), m.IsIndex()
	rec, err := reg.Recognize(ctx, s.Repository, m)
	if err != nil {
		return Decision{}, fmt.Errorf("checking whether %s@%s is a signature artifact: %w", s.Image(), s.Digest, err)
	}
	if rec.Artifact {
		return Decision{Artifact: true, Verdict: Verdict{Allowed: true, Rule: ArtifactRule, Enforcement: config.Enforce,
			Reasons: []string{"signature or attestation artifact (every layer a signature, attestation or SBOM document): served without policy"}}}, nil
	}
	d, r, err := j.evaluate(ctx, p, reg, s)
	if err != nil {
		return Decision{}, err
	}
	if !d.Allowed && claimsArtifact(s, m) {
		d.Reasons = append(d.Reasons, "not served as a signature artifact: "+rec.Why)
	}
	if d.Allowed && r != nil && m.IsIndex() {
		j.inherit(p, s, m, r)
	}
	return d, nil
}

// Pull fetches the manifest at s's repository and ref through reg and
// decides it, tag-aware when ref is a tag: how check and replay judge an
// image, as the proxy does a pull.
func (j *Judge) Pull(ctx context.Context, p *Policy, reg Registry, s Subject, ref oci.Reference) (Decision, *oci.Manifest, error) {
	m, err := reg.Manifest(ctx, s.Repository, ref.String())
	if err != nil {
		return Decision{}, nil, err
	}
	s.Tag = ref.Tag
	d, err := j.Decide(ctx, p, reg, s, m)
	return d, m, err
}

// Evaluate judges s, a digest already known not to be a signature
// artifact, under p: the rule that matches it, then that rule's
// requirements, each outcome from the cache or verified once for every
// concurrent caller (bounded by the policy's verification timeout, on a
// context no single caller can cancel).
func (j *Judge) Evaluate(ctx context.Context, p *Policy, src Source, s Subject) (Decision, error) {
	d, _, err := j.evaluate(ctx, p, src, s)
	return d, err
}

func (j *Judge) evaluate(ctx context.Context, p *Policy, src Source, s Subject) (Decision, *rule, error) {
	v, r := p.match(s, j.now())
	if r == nil {
		return Decision{Verdict: v}, nil, nil
	}
	outs, missing := j.cached(p, s, r.reqs)
	if len(missing) == 0 {
		return Decision{Verdict: verdict(v, outs), Judged: true, Cached: true}, r, nil
	}
	key := j.flightKey(p, s, missing)
	computed, err := j.flight.Do(ctx, key, p.timeout, func(ctx context.Context) ([]outcome, error) {
		// A verification that ended between this caller's look-up and
		// this flight left its outcomes: no need to verify again.
		if outs, ok := j.lookupAll(p, s, missing); ok {
			return outs, nil
		}
		first := j.first(s)
		if f := j.claim(key); f.done != nil {
			src, first = &prefetchedSource{Source: src, f: f}, f.from
			defer f.cancel()
		}
		defer j.unclaim(key)
		outs, found, err := p.verify(ctx, src, s, missing, first)
		if err != nil {
			return nil, err
		}
		if found != 0 {
			j.firstPlace.Add(s.Upstream+"/"+s.Repository, found)
		}
		now := j.now()
		for k, q := range missing {
			if !j.keepFindings {
				outs[k].scans = nil
			}
			ttl := p.denyTTL
			if outs[k].ok {
				ttl = p.allowTTL
			}
			if !outs[k].storedAt.IsZero() {
				// Kept briefly (an index's children inherit it), so
				// that the upstream is asked again soon once it
				// answers.
				ttl = min(ttl, storedOutcomeTTL)
			}
			if u := outs[k].until; !u.IsZero() {
				ttl = min(ttl, u.Sub(now))
			}
			j.outcomes.Add(j.key(p, s, q), outs[k], ttl)
		}
		return outs, nil
	})
	if err != nil {
		return Decision{}, nil, err
	}
	k := 0
	for i, q := range r.reqs {
		if k < len(missing) && missing[k] == q {
			outs[i] = computed[k]
			k++
		}
	}
	return Decision{Verdict: verdict(v, outs), Judged: true}, r, nil
}

// Prefetch starts reading, for a pull of s by digest whose manifest is
// still being fetched, the evidence that the rule matching s needs from the
// tag schemes and the cache does not hold, so that the manifest and the
// signatures are read at once; the verification that Decide then starts
// for s takes it. Nothing is judged on it before: the manifest may still
// turn out to be a signature artifact, or another digest, and then the read
// is dropped. The caller calls release once Decide has returned (or when
// it will not be called): an unused read is cancelled.
func (j *Judge) Prefetch(ctx context.Context, p *Policy, src Source, s Subject) (release func()) {
	_, r := p.match(s, j.now())
	if r == nil || s.Digest == "" {
		return func() {}
	}
	_, missing := j.cached(p, s, r.reqs)
	if len(missing) == 0 {
		return func() {}
	}
	key := j.flightKey(p, s, missing)
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.prefetched[key] != nil {
		return func() {} // read already, or being verified
	}
	// A verification that ended since the look-up above stored its
	// outcomes before it let go of its mark: look again.
	if _, again := j.cached(p, s, r.reqs); len(again) != len(missing) {
		return func() {}
	}
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), p.timeout)
	f := &prefetch{from: j.first(s), done: make(chan struct{}), cancel: cancel}
	j.prefetched[key] = f
	j.readers.run(func() {
		defer close(f.done)
		// The read runs outside any caller's goroutine: a panic in it
		// fails the verification that takes it, as one inside that
		// verification would, and not the process.
		defer func() {
			if v := recover(); v != nil {
				f.ev, f.err = nil, &cache.PanicError{Value: v, Stack: debug.Stack()}
			}
		}()
		w := want(missing)
		w.From = f.from
		f.ev, f.err = src.Evidence(rctx, s.Repository, s.Digest, w)
	})
	return func() {
		j.mu.Lock()
		defer j.mu.Unlock()
		if j.prefetched[key] == f && !f.claimed {
			delete(j.prefetched, key)
			f.cancel()
		}
	}
}

// claim marks the verification named key as running, so that Prefetch
// starts no read for it, and returns the read Prefetch started for it
// (done is nil when there is none).
func (j *Judge) claim(key string) *prefetch {
	j.mu.Lock()
	defer j.mu.Unlock()
	f := j.prefetched[key]
	if f == nil || f.claimed {
		f = &prefetch{}
		j.prefetched[key] = f
	}
	f.claimed = true
	return f
}

// unclaim ends the verification named key: its outcomes are cached by
// now (or it failed, and the next pull tries again).
func (j *Judge) unclaim(key string) {
	j.mu.Lock()
	defer j.mu.Unlock()
	if f := j.prefetched[key]; f != nil && f.claimed {
		delete(j.prefetched, key)
	}
}

// prefetchedSource answers the first look of one verification with what
// Prefetch read for it (the same requirements and place, so the same
// Want); everything else goes to Source.
type prefetchedSource struct {
	Source
	f *prefetch
}

func (p *prefetchedSource) Evidence(ctx context.Context, repo, digest string, want oci.Want) (*oci.Evidence, error) {
	f := p.f
	if f == nil || want.From != f.from {
		return p.Source.Evidence(ctx, repo, digest, want)
	}
	p.f = nil
	defer f.cancel()
	select {
	case <-f.done:
		return f.ev, f.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// CachedRefusal returns the decision on s when the cache alone refuses it:
// the matching rule's requirements were judged for s.Digest before (so it is
// no signature artifact) and one does not hold under an enforcing rule. The
// proxy then answers without asking the upstream.
func (j *Judge) CachedRefusal(p *Policy, s Subject) (Decision, bool) {
	v, r := p.match(s, j.now())
	if r == nil {
		return Decision{}, false
	}
	outs, ok := j.lookupAll(p, s, r.reqs)
	if !ok {
		return Decision{}, false
	}
	v = verdict(v, outs)
	if v.Serve() {
		return Decision{}, false
	}
	return Decision{Verdict: v, Judged: true, Cached: true, MediaType: outs[0].mediaType}, true
}

// lookupAll finds the outcomes of reqs for s, if all are cached.
func (j *Judge) lookupAll(p *Policy, s Subject, reqs []*requirement) ([]outcome, bool) {
	outs, missing := j.cached(p, s, reqs)
	return outs, len(missing) == 0
}

// cached finds the cached outcomes of reqs for s, in their order, and
// lists the requirements that have none. A requirement that chooses the
// newest attestation of a group is listed with the others of its group
// when one of them has none: they are judged again together, on the same
// newest attestation, so that one never holds on an attestation that a
// newer one replaced for another.
func (j *Judge) cached(p *Policy, s Subject, reqs []*requirement) (outs []outcome, missing []*requirement) {
	outs = make([]outcome, len(reqs))
	found := make([]bool, len(reqs))
	var stale map[string]bool
	for i, q := range reqs {
		o, _, ok := j.lookup(p, s, q)
		if !ok {
			if q.group != "" {
				if stale == nil {
					stale = map[string]bool{}
				}
				stale[q.group] = true
			}
			continue
		}
		outs[i], found[i] = o, true
	}
	for i, q := range reqs {
		if !found[i] || q.group != "" && stale[q.group] {
			missing = append(missing, q)
		}
	}
	return outs, missing
}

// lookup finds q's outcome for s: one that an index proved, else s's own.
func (j *Judge) lookup(p *Policy, s Subject, q *requirement) (outcome, time.Time, bool) {
	k := j.key(p, s, q)
	inherited := k
	inherited.tag, inherited.inherited = "", true
	if o, exp, ok := j.outcomes.Get(inherited); ok {
		return o, exp, true
	}
	return j.outcomes.Get(k)
}

func (j *Judge) key(p *Policy, s Subject, q *requirement) outcomeKey {
	k := outcomeKey{generation: p.Generation, upstream: s.Upstream, repository: s.Repository, digest: s.Digest, requirement: q.key}
	if q.tagged {
		k.tag = s.Tag
	}
	if q.client {
		k.client = clientKey(s.Client)
	}
	return k
}

// clientKey names who asks, for the outcomes that depend on it.
func clientKey(c Client) string { return c.Principal + "\x00" + c.ClaimsDigest }

// flightKey names one verification of reqs for s, shared by concurrent
// callers.
func (j *Judge) flightKey(p *Policy, s Subject, reqs []*requirement) string {
	parts := []string{p.Generation, s.Upstream, s.Repository, s.Digest}
	for _, q := range reqs {
		parts = append(parts, q.key)
		if q.tagged {
			parts = append(parts, "tag="+s.Tag)
		}
		if q.client {
			parts = append(parts, "client="+clientKey(s.Client))
		}
	}
	return strings.Join(parts, "\x00")
}

// inherit passes to the children of index m, allowed under rule r, the
// outcomes it proved: each child meets those requirements for as long as
// the index's own outcome holds. Whatever else applies to a child (the
// allowlist, breakglass, a rule matching its own name or digest) still
// does.
func (j *Judge) inherit(p *Policy, s Subject, m *oci.Manifest, r *rule) {
	for _, q := range r.reqs {
		o, exp, ok := j.lookup(p, s, q)
		if !ok || !o.ok {
			return
		}
		child := outcome{ok: true, by: o.by, reasons: make([]string, len(o.reasons)), storedAt: o.storedAt}
		for i, reason := range o.reasons {
			child.reasons[i] = fmt.Sprintf("listed in allowed index %s: %s", m.Digest, reason)
		}
		for _, d := range m.Manifests {
			k := outcomeKey{generation: p.Generation, upstream: s.Upstream, repository: s.Repository, digest: d.Digest, requirement: q.key, inherited: true}
			if q.client {
				k.client = clientKey(s.Client)
			}
			child.mediaType = d.MediaType
			j.outcomes.Add(k, child, exp.Sub(j.now()))
		}
	}
}

// claimsArtifact reports whether m looks like a signature artifact (a
// subject, an artifact type, a cosign or referrers tag, a layer that is not
// an image layer): a denial then says why it was judged all the same.
func claimsArtifact(s Subject, m *oci.Manifest) bool {
	if m.Subject != nil || m.ArtifactType != "" || strings.HasPrefix(s.Tag, "sha256-") {
		return true
	}
	for _, l := range m.Layers {
		if !strings.HasPrefix(l.MediaType, "application/vnd.oci.image.layer.") && !strings.HasPrefix(l.MediaType, "application/vnd.docker.image.rootfs.") {
			return true
		}
	}
	return false
}

// verify reads the evidence that reqs need and judges them: first where
// first says (the tag schemes or the referrers), the other place only when
// that does not satisfy every requirement. Evidence only adds to what a
// requirement can count, so the place read first changes what is read,
// never the verdict of what was read. found is where the evidence that
// satisfied them was, 0 when they do not all hold.
func (p *Policy) verify(ctx context.Context, src Source, s Subject, reqs []*requirement, first oci.Places) (outs []outcome, found oci.Places, err error) {
	w := want(reqs)
	w.From = first
	ev, err := src.Evidence(ctx, s.Repository, s.Digest, w)
	if err != nil {
		return nil, 0, fmt.Errorf("reading signatures and attestations of %s@%s: %w", s.Image(), s.Digest, err)
	}
	outs, err = check(ctx, s, ev, reqs)
	if err != nil || allHold(outs) {
		return outs, first, err
	}
	w.From, w.After = oci.Everywhere&^first, ev
	more, err := src.Evidence(ctx, s.Repository, s.Digest, w)
	if err != nil {
		return nil, 0, fmt.Errorf("reading signatures and attestations of %s@%s: %w", s.Image(), s.Digest, err)
	}
	ev.Add(more)
	if outs, err = check(ctx, s, ev, reqs); err != nil || !allHold(outs) {
		return outs, 0, err
	}
	return outs, w.From, nil
}

func allHold(outs []outcome) bool {
	for _, o := range outs {
		if !o.ok {
			return false
		}
	}
	return true
}
