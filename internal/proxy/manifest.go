package proxy

import (
	"context"
	"fmt"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/authz-proxy/authz-proxy/internal/audit"
	"github.com/authz-proxy/authz-proxy/internal/cache"
	"github.com/authz-proxy/authz-proxy/internal/policy"
	"github.com/authz-proxy/authz-proxy/internal/upstream"
	"github.com/distribution/distribution/v3/registry/api/errcode"
)

// verdict is what the cache keeps per digest: the policy's verdict, and the
// media type of the manifest judged, so that a decision answered from the
// cache is logged as fully as the first.
type verdict struct {
	policy.Verdict
	mediaType string
}

// artifactTag matches the tags cosign and the referrers fallback use for
// signature artifacts.
var artifactTag = regexp.MustCompile(`^sha256-[a-f0-9]{64}(\.sig|\.att|\.sbom)?$`)

// manifest serves GET and HEAD of /v2/<name>/manifests/<reference>: fetch
// once, judge the digest of those bytes, serve those bytes or refuse.
// https://github.com/opencontainers/distribution-spec/blob/main/spec.md#pulling-manifests
func (s *Server) manifest(w http.ResponseWriter, r *http.Request, st *state, up *upstream.Client, rt route) error {
	start := time.Now()
	env := st.policy.Environment(policyClient(r))
	rec := audit.Record{
		Image:     rt.upstream + "/" + rt.repo,
		Reference: rt.ref,
		Upstream:  rt.upstream,
		Client:    clientOf(r),
	}
	rec.Client.Environment = env
	key := cache.Key{Generation: st.policy.Generation, Environment: env, Upstream: rt.upstream, Repository: rt.repo}
	// The cached path: a digest whose verdict is cached is answered without
	// the policy, and, when its verified bytes are still held, without the
	// upstream. A HEAD by tag costs one upstream HEAD to learn the digest.
	if digest := s.knownDigest(r, up, rt); digest != "" {
		key.Digest = digest
		if v, ok := s.verdicts.Get(key); ok {
			rec.Digest, rec.MediaType, rec.Cached = digest, v.mediaType, true
			if !v.Serve() {
				s.metrics.Cache(true)
				return s.refuse(w, r, rec, v.Verdict, start)
			}
			if m, ok := up.Cached(rt.repo, digest); ok {
				s.metrics.Cache(true)
				s.serveVerified(w, r, rec, st, key, m, v.Verdict, start)
				return nil
			}
		}
	}
	fetched := time.Now()
	m, err := up.Manifest(r.Context(), rt.repo, rt.ref)
	s.upstreamDone(rt.upstream, "manifest", fetched, err)
	if err != nil {
		he := classify(err, errcode.ErrorCodeManifestUnknown)
		if he.status != http.StatusNotFound {
			rec.Decision, rec.Reasons, rec.Duration = audit.Error, []string{he.err.Message}, time.Since(start)
			s.record(r.Context(), rec)
		}
		return he
	}
	rec.Digest, rec.MediaType = m.Digest, m.MediaType
	if isArtifact(rt.ref, m) {
		rec.Decision, rec.Rule, rec.Duration = audit.Allow, "(signature artifact)", time.Since(start)
		rec.Reasons = []string{"signature artifact with no runnable layer: served without policy"}
		s.record(r.Context(), rec)
		send(w, r, m)
		return nil
	}
	key.Digest = m.Digest
	subj := policy.Subject{Upstream: rt.upstream, Repository: rt.repo, Digest: m.Digest, MediaType: m.MediaType, IsIndex: m.IsIndex(), Environment: env}
	if !isDigest(rt.ref) {
		subj.Tag = rt.ref
	}
	cv, cached, err := s.verdicts.Do(r.Context(), key, st.timeout, func(ctx context.Context) (verdict, time.Duration, error) {
		judged := time.Now()
		v, err := st.policy.Evaluate(ctx, timedSource{up, s, rt.upstream}, subj)
		if err == nil {
			s.metrics.Verification(rt.upstream, time.Since(judged))
		}
		return verdict{v, m.MediaType}, st.ttl(v), err
	})
	if err != nil {
		he := classify(err, errcode.ErrorCodeManifestUnknown)
		rec.Decision, rec.Reasons, rec.Duration = audit.Error, []string{he.err.Message}, time.Since(start)
		s.record(r.Context(), rec)
		return he
	}
	s.metrics.Cache(cached)
	rec.Cached = cached
	v := cv.Verdict
	if !v.Serve() {
		return s.refuse(w, r, rec, v, start)
	}
	s.serveVerified(w, r, rec, st, key, m, v, start)
	return nil
}

// knownDigest is the digest a request names: its reference when that is a
// digest; for a HEAD by tag, the upstream's answer to a HEAD. "" when
// unknown: the manifest is then fetched.
func (s *Server) knownDigest(r *http.Request, up *upstream.Client, rt route) string {
	if isDigest(rt.ref) {
		return rt.ref
	}
	if r.Method != http.MethodHead {
		return ""
	}
	start := time.Now()
	d, err := up.Head(r.Context(), rt.repo, rt.ref)
	s.upstreamDone(rt.upstream, "head", start, err)
	if err != nil || !digestRE.MatchString(d) {
		return "" // the GET path reports the error properly
	}
	return d
}

// serveVerified sends manifest bytes that the verdict v lets through, after
// passing the verdict on to an index's children, and logs the decision.
func (s *Server) serveVerified(w http.ResponseWriter, r *http.Request, rec audit.Record, st *state, key cache.Key, m *upstream.Manifest, v policy.Verdict, start time.Time) {
	if v.Allowed && m.IsIndex() {
		s.inherit(st, key, m, v)
	}
	s.link(key, m)
	fill(&rec, v, start)
	s.record(r.Context(), rec)
	send(w, r, m)
}

// ttl is how long v may be cached: allowTTL or denyTTL, and never past the
// verdict's own end (a breakglass entry's expiry).
func (st *state) ttl(v policy.Verdict) time.Duration {
	ttl := st.denyTTL
	if v.Allowed {
		ttl = st.allowTTL
	}
	if !v.Expires.IsZero() {
		ttl = min(ttl, time.Until(v.Expires))
	}
	return ttl
}

// timedSource measures the evidence look-ups of one upstream.
type timedSource struct {
	up   *upstream.Client
	s    *Server
	name string
}

func (t timedSource) Evidence(ctx context.Context, repo, digest string, want upstream.Want) (*upstream.Evidence, error) {
	start := time.Now()
	ev, err := t.up.Evidence(ctx, repo, digest, want)
	t.s.upstreamDone(t.name, "evidence", start, err)
	return ev, err
}

// record writes rec to the decision log and counts it.
func (s *Server) record(ctx context.Context, rec audit.Record) {
	s.audit.Write(ctx, rec)
	s.metrics.Decision(rec.Upstream, rec.Client.Environment, rec.Rule, rec.Decision)
}

// inherit lets the children of an allowed index pass: a runtime fetches
// them by digest right after the index.
func (s *Server) inherit(st *state, key cache.Key, index *upstream.Manifest, v policy.Verdict) {
	child := policy.Verdict{
		Allowed:     true,
		Rule:        v.Rule,
		Enforcement: v.Enforcement,
		Reasons:     []string{fmt.Sprintf("listed in allowed index %s", index.Digest)},
		VerifiedBy:  v.VerifiedBy,
		Breakglass:  v.Breakglass,
		Expires:     v.Expires,
	}
	if v.Breakglass {
		child.Reasons = append(child.Reasons, v.Reasons...)
	}
	for _, d := range index.Manifests {
		key.Digest = d.Digest
		s.verdicts.Add(key, verdict{child, d.MediaType}, st.ttl(child))
	}
}

// isArtifact reports whether m is a signature artifact, served without
// policy so that cosign and podman can verify through the proxy: asked for
// by an artifact tag or a referrer (it has a subject), and with no layer a
// runtime would run.
func isArtifact(ref string, m *upstream.Manifest) bool {
	return (artifactTag.MatchString(ref) || m.Subject != nil) && !m.Runnable()
}

func fill(rec *audit.Record, v policy.Verdict, start time.Time) {
	rec.Decision = v.Decision()
	rec.Rule, rec.Enforcement = v.Rule, v.Enforcement
	rec.Reasons, rec.VerifiedBy = v.Reasons, v.VerifiedBy
	rec.Duration = time.Since(start)
}

// refuse answers 403 DENIED with the reasons, and logs the denial.
func (s *Server) refuse(w http.ResponseWriter, r *http.Request, rec audit.Record, v policy.Verdict, start time.Time) error {
	fill(&rec, v, start)
	s.record(r.Context(), rec)
	msg := fmt.Sprintf("%s@%s denied by rule %q: %s", rec.Image, rec.Digest, v.Rule, strings.Join(v.Reasons, "; "))
	// The reasons are in the message already; clients print both.
	return &httpError{status: http.StatusForbidden, err: errcode.ErrorCodeDenied.WithMessage(msg).WithDetail(map[string]string{
		"image":  rec.Image,
		"digest": rec.Digest,
		"rule":   v.Rule,
	})}
}

// send writes the verified manifest bytes. Past the status line, a write
// error can only be the client's hang-up.
func send(w http.ResponseWriter, r *http.Request, m *upstream.Manifest) {
	h := w.Header()
	h.Set("Content-Type", m.MediaType)
	h.Set("Docker-Content-Digest", m.Digest)
	h.Set("Content-Length", strconv.Itoa(len(m.Raw)))
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodGet {
		_, _ = w.Write(m.Raw)
	}
}
