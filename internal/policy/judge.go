package policy

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/authz-proxy/authz-proxy/internal/cache"
	"github.com/authz-proxy/authz-proxy/internal/config"
	"github.com/authz-proxy/authz-proxy/internal/oci"
)

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
	flight   cache.Group[[]outcome]
	now      func() time.Time
}

// outcomeKey names one requirement's outcome for one digest.
type outcomeKey struct {
	generation, upstream, repository, digest string
	requirement                              string
	// tag is set for a requirement whose outcome depends on it.
	tag string
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
	return &Judge{outcomes: c, now: now}, nil
}

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
	outs := make([]outcome, len(r.reqs))
	var missing []*requirement
	for i, q := range r.reqs {
		o, _, ok := j.lookup(p, s, q)
		if !ok {
			missing = append(missing, q)
			continue
		}
		outs[i] = o
	}
	if len(missing) == 0 {
		return Decision{Verdict: verdict(v, outs), Judged: true, Cached: true}, r, nil
	}
	computed, err := j.flight.Do(ctx, j.flightKey(p, s, missing), p.timeout, func(ctx context.Context) ([]outcome, error) {
		// A verification that ended between this caller's look-up and
		// this flight left its outcomes: no need to verify again.
		if outs, ok := j.lookupAll(p, s, missing); ok {
			return outs, nil
		}
		outs, err := p.verify(ctx, src, s, missing)
		if err != nil {
			return nil, err
		}
		for k, q := range missing {
			ttl := p.denyTTL
			if outs[k].ok {
				ttl = p.allowTTL
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
	outs := make([]outcome, len(reqs))
	for i, q := range reqs {
		o, _, ok := j.lookup(p, s, q)
		if !ok {
			return nil, false
		}
		outs[i] = o
	}
	return outs, true
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
	return k
}

// flightKey names one verification of reqs for s, shared by concurrent
// callers.
func (j *Judge) flightKey(p *Policy, s Subject, reqs []*requirement) string {
	parts := []string{p.Generation, s.Upstream, s.Repository, s.Digest}
	for _, q := range reqs {
		parts = append(parts, q.key)
		if q.tagged {
			parts = append(parts, "tag="+s.Tag)
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
		child := outcome{ok: true, by: o.by, reasons: make([]string, len(o.reasons))}
		for i, reason := range o.reasons {
			child.reasons[i] = fmt.Sprintf("listed in allowed index %s: %s", m.Digest, reason)
		}
		for _, d := range m.Manifests {
			k := outcomeKey{generation: p.Generation, upstream: s.Upstream, repository: s.Repository, digest: d.Digest, requirement: q.key, inherited: true}
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

// verify reads the evidence that reqs need and judges them: the tag schemes
// first, the referrers only when those do not satisfy every requirement.
func (p *Policy) verify(ctx context.Context, src Source, s Subject, reqs []*requirement) ([]outcome, error) {
	w := want(reqs)
	w.From = oci.TagSchemes
	ev, err := src.Evidence(ctx, s.Repository, s.Digest, w)
	if err != nil {
		return nil, fmt.Errorf("reading signatures and attestations of %s@%s: %w", s.Image(), s.Digest, err)
	}
	outs, err := check(ctx, s, ev, reqs)
	if err != nil || allHold(outs) {
		return outs, err
	}
	w.From, w.After = oci.Referrers, ev
	more, err := src.Evidence(ctx, s.Repository, s.Digest, w)
	if err != nil {
		return nil, fmt.Errorf("reading signatures and attestations of %s@%s: %w", s.Image(), s.Digest, err)
	}
	ev.Signatures = append(ev.Signatures, more.Signatures...)
	ev.Problems = append(ev.Problems, more.Problems...)
	ev.Attestations = append(ev.Attestations, more.Attestations...)
	ev.AttestationProblems = append(ev.AttestationProblems, more.AttestationProblems...)
	ev.SignatureLayers, ev.AttestationLayers = more.SignatureLayers, more.AttestationLayers
	return check(ctx, s, ev, reqs)
}

func allHold(outs []outcome) bool {
	for _, o := range outs {
		if !o.ok {
			return false
		}
	}
	return true
}
