package proxy

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/authz-proxy/authz-proxy/internal/audit"
	"github.com/authz-proxy/authz-proxy/internal/oci"
	"github.com/authz-proxy/authz-proxy/internal/policy"
	"github.com/authz-proxy/authz-proxy/internal/store"
	"github.com/authz-proxy/authz-proxy/internal/upstream"
	"github.com/distribution/distribution/v3/registry/api/errcode"
)

// manifest serves GET and HEAD of /v2/<name>/manifests/<reference>: fetch
// once, judge the digest of those bytes as they were asked for, serve those
// bytes or refuse.
// https://github.com/opencontainers/distribution-spec/blob/main/spec.md#pulling-manifests
func (s *Server) manifest(w http.ResponseWriter, r *http.Request, st *state, up *upstream.Client, rt route) error {
	start := time.Now()
	env := st.policy.Environment(policyClient(r))
	rec := audit.Record{
		Image:     rt.upstream + "/" + rt.repo,
		Reference: rt.ref.String(),
		Upstream:  rt.upstream,
		Client:    clientOf(r),
	}
	rec.Client.Environment = env
	subj := policy.Subject{Upstream: rt.upstream, Repository: rt.repo, Tag: rt.ref.Tag, Environment: env}
	// The cached path: verified bytes still held (in memory, or in the
	// store) are judged again without fetching them (the rule is matched
	// anew, the outcomes come from the cache or are verified again); a
	// digest the cache alone refuses is refused at once. With a store, a
	// tag is resolved first (an immutable tag by its last resolution, else
	// by a HEAD, else, the upstream failing, by its last known digest);
	// without one, a HEAD by tag costs one upstream HEAD to learn the
	// digest.
	var m *oci.Manifest
	source := audit.SourceUpstream
	digest, stale, err := s.knownDigest(r, st, up, rt)
	if err != nil {
		return s.failed(r, rec, err, errcode.ErrorCodeManifestUnknown, start)
	}
	if stale {
		source, rec.Source = audit.SourceStale, audit.SourceStale
	}
	if digest != "" {
		subj.Digest = digest
		if held := s.held(r.Context(), up, rt.upstream, rt.repo, digest); held != nil {
			m = held
			if !stale {
				source = audit.SourceStore
			}
		} else if d, ok := s.judge.CachedRefusal(st.policy, subj); ok {
			rec.Digest, rec.MediaType, rec.Cached = digest, d.MediaType, true
			s.metrics.Cache(true)
			return s.refuse(w, r, rec, d.Verdict, start)
		} else if stale {
			rec.Digest = digest
			return s.failed(r, rec, fmt.Errorf("%s:%s: the upstream failed, and %w (%s)", rec.Image, rt.ref.Tag, errStaleNotHeld, digest), errcode.ErrorCodeManifestUnknown, start)
		}
	}
	reg := s.registry(up, rt.upstream)
	if m == nil {
		if subj.Digest != "" {
			// The digest is known: the signatures are read while the
			// manifest is fetched.
			defer s.judge.Prefetch(r.Context(), st.policy, reg, subj)()
		}
		if m, err = s.fetch(r.Context(), reg, rt, digest); err != nil {
			return s.failed(r, rec, err, errcode.ErrorCodeManifestUnknown, start)
		}
	}
	if stale {
		s.metrics.StaleTag(rt.upstream)
	}
	s.metrics.Manifest(rt.upstream, source)
	rec.Source = source
	rec.Digest, rec.MediaType = m.Digest, m.MediaType
	// The bytes are held from here until the client has them.
	lease, err := s.budget.Take(r.Context(), int64(len(m.Raw)))
	if err != nil {
		return s.failed(r, rec, err, errcode.ErrorCodeManifestUnknown, start)
	}
	defer lease.Release()
	judged := time.Now()
	d, err := s.judge.Decide(r.Context(), st.policy, reg, subj, m)
	if err != nil {
		return s.failed(r, rec, err, errcode.ErrorCodeManifestUnknown, start)
	}
	if d.Judged {
		s.metrics.Cache(d.Cached)
		if !d.Cached {
			s.metrics.Verification(rt.upstream, time.Since(judged))
		}
	}
	rec.Cached = d.Cached
	if !d.Serve() {
		return s.refuse(w, r, rec, d.Verdict, start)
	}
	fill(&rec, d.Verdict, start)
	if err := s.record(r.Context(), rec); err != nil {
		return err
	}
	s.link(rt, m)
	s.send(w, r, st, m, rt.ref)
	return nil
}

// knownDigest is the sha256 digest a request names: its reference when that
// is one; for a tag, with a store, its resolution (stale when the upstream
// failed and its last known digest is given); without a store, for a HEAD
// by tag, the upstream's answer to a HEAD. "" when unknown: the manifest
// is then fetched.
func (s *Server) knownDigest(r *http.Request, st *state, up *upstream.Client, rt route) (digest string, stale bool, err error) {
	if rt.ref.Digest != "" {
		if strings.HasPrefix(rt.ref.Digest, "sha256:") {
			return rt.ref.Digest, false, nil
		}
		return "", false, nil
	}
	if s.tags != nil {
		return s.resolveTag(r.Context(), st, up, rt)
	}
	if r.Method != http.MethodHead {
		return "", false, nil
	}
	start := time.Now()
	d, err := up.Head(r.Context(), rt.repo, rt.ref.Tag)
	s.upstreamDone(rt.upstream, "head", start, err)
	if _, perr := oci.ParseDigest(d); err != nil || perr != nil || !strings.HasPrefix(d, "sha256:") {
		return "", false, nil // the GET path reports the error properly
	}
	return d, false, nil
}

// fetch gets the manifest rt asks for from reg: with a store, by the
// digest its tag resolved to when there is one (the bytes are checked
// against it, and the tag cannot move in between), falling back to the
// tag for a registry that has no manifest by that digest; the tag's
// resolution is recorded when the manifest came by tag.
func (s *Server) fetch(ctx context.Context, reg policy.Registry, rt route, digest string) (*oci.Manifest, error) {
	if s.tags == nil || rt.ref.Tag == "" {
		return reg.Manifest(ctx, rt.repo, rt.ref.String())
	}
	if digest != "" {
		m, err := reg.Manifest(ctx, rt.repo, digest)
		if !errors.Is(err, upstream.ErrNotFound) {
			return m, err
		}
	}
	m, err := reg.Manifest(ctx, rt.repo, rt.ref.Tag)
	if err == nil {
		s.tags.resolved(tagKey{store.Scope{Upstream: rt.upstream, Repository: rt.repo}, rt.ref.Tag}, m.Digest)
	}
	return m, err
}

// failed logs a decision that could not be made, unless the upstream simply
// has no such manifest, and returns the error to render.
func (s *Server) failed(r *http.Request, rec audit.Record, err error, notFound errcode.ErrorCode, start time.Time) error {
	he := s.classify(r, err, notFound)
	if he.status() != http.StatusNotFound {
		rec.Decision, rec.Reasons, rec.Duration = audit.Error, []string{he.err.Message}, time.Since(start)
		// The request fails either way; a failed write is logged and
		// counted by the audit log itself.
		_ = s.record(r.Context(), rec)
	}
	return he
}

// timedSource measures the evidence look-ups of one upstream.
type timedSource struct {
	up   *upstream.Client
	s    *Server
	name string
}

func (t timedSource) Evidence(ctx context.Context, repo, digest string, want oci.Want) (*oci.Evidence, error) {
	start := time.Now()
	ev, err := t.up.Evidence(ctx, repo, digest, want)
	t.s.upstreamDone(t.name, "evidence", start, err)
	return ev, err
}

func (t timedSource) Manifest(ctx context.Context, repo, ref string) (*oci.Manifest, error) {
	start := time.Now()
	m, err := t.up.Manifest(ctx, repo, ref)
	t.s.upstreamDone(t.name, "manifest", start, err)
	return m, err
}

func (t timedSource) Recognize(ctx context.Context, repo string, m *oci.Manifest) (oci.Recognition, error) {
	return t.up.Recognize(ctx, repo, m)
}

// record writes rec to the decision log and counts it. When the record
// could not be written and the log is required (audit.required), it returns
// the 503 to answer instead of the decision: nothing is served unlogged.
func (s *Server) record(ctx context.Context, rec audit.Record) error {
	err := s.audit.Write(ctx, rec)
	s.metrics.Decision(rec.Upstream, rec.Client.Environment, rec.Rule, rec.Decision)
	if err != nil && s.audit.Required() {
		// The cause (a file name, an errno) is in the operator's log.
		return errorf(errcode.ErrorCodeUnavailable, "%s@%s: the decision could not be written to the decision log, and audit.required forbids answering without it; try again later", rec.Image, rec.Digest)
	}
	return nil
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
	if err := s.record(r.Context(), rec); err != nil {
		return err
	}
	msg := fmt.Sprintf("%s@%s denied by rule %q: %s", rec.Image, rec.Digest, v.Rule, strings.Join(v.Reasons, "; "))
	// The reasons are in the message already; clients print both.
	return &httpError{err: errcode.ErrorCodeDenied.WithMessage(msg).WithDetail(map[string]string{
		"image":  rec.Image,
		"digest": rec.Digest,
		"rule":   v.Rule,
	})}
}

// send writes the verified manifest bytes, within the write timeout: a
// client that does not read lets go of them then. A request by digest gets
// that digest back (the bytes were checked against it). Past the status
// line, a write error can only be the client's hang-up.
func (s *Server) send(w http.ResponseWriter, r *http.Request, st *state, m *oci.Manifest, ref oci.Reference) {
	h := w.Header()
	h.Set("Content-Type", m.MediaType)
	digest := m.Digest
	if ref.Digest != "" {
		digest = ref.Digest
	}
	h.Set("Docker-Content-Digest", digest)
	h.Set("Content-Length", strconv.Itoa(len(m.Raw)))
	_ = http.NewResponseController(w).SetWriteDeadline(time.Now().Add(st.writeTimeout))
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodGet {
		_, _ = w.Write(m.Raw)
	}
}
