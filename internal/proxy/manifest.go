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
	"github.com/authz-proxy/authz-proxy/internal/clients"
	"github.com/authz-proxy/authz-proxy/internal/oci"
	"github.com/authz-proxy/authz-proxy/internal/policy"
	"github.com/authz-proxy/authz-proxy/internal/source"
	"github.com/distribution/distribution/v3/registry/api/errcode"
)

// manifest serves GET and HEAD of /v2/<name>/manifests/<reference> in a
// straight line: resolve the reference, take the verified bytes held or
// fetch them once, judge the digest of those bytes as they were asked for,
// send those bytes or refuse, and log the decision.
// https://github.com/opencontainers/distribution-spec/blob/main/spec.md#pulling-manifests
func (s *Server) manifest(w http.ResponseWriter, r *http.Request, st *state, src *source.Source, rt route, who *clients.Principal) error {
	start := time.Now()
	client := policyClient(r, who)
	env := st.policy.Environment(client)
	rec := audit.Record{
		Image:     rt.upstream + "/" + rt.repo,
		Reference: rt.ref.String(),
		Upstream:  rt.upstream,
		Client:    clientOf(r),
	}
	if who != nil {
		rec.Principal = who.Name
	}
	rec.Client.Environment = env
	subj := policy.Subject{Upstream: rt.upstream, Repository: rt.repo, Tag: rt.ref.Tag, Environment: env, Client: client}
	// Resolve: the digest asked for, or the tag's, GET and HEAD alike (the
	// digest the upstream confirmed within tagTTL; with a store, an
	// immutable tag by its last resolution; else by a HEAD that concurrent
	// requests share; else, with a store and the upstream failing, by its
	// last known digest).
	digest, stale, err := src.Resolve(r.Context(), rt.repo, rt.ref)
	if err != nil {
		return s.failed(r, rec, err, errcode.ErrorCodeManifestUnknown, start)
	}
	source := audit.SourceUpstream
	if stale {
		source, rec.Source = audit.SourceStale, audit.SourceStale
	}
	// The cached path: verified bytes still held (in memory, or in the
	// store) are judged again without fetching them (the rule is matched
	// anew, the outcomes come from the cache or are verified again); a
	// digest the cache alone refuses is refused at once.
	var m *oci.Manifest
	if digest != "" {
		subj.Digest = digest
		if m = src.Held(r.Context(), rt.repo, digest); m != nil {
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
	reg := s.registry(src)
	if m == nil {
		if subj.Digest != "" {
			// The digest is known: the signatures are read while the
			// manifest is fetched.
			defer s.judge.Prefetch(r.Context(), st.policy, reg, subj)()
		}
		if m, err = src.Fetch(r.Context(), rt.repo, rt.ref, digest); err != nil {
			return s.failed(r, rec, err, errcode.ErrorCodeManifestUnknown, start)
		}
	}
	if stale {
		s.metrics.StaleTag(rt.upstream)
	}
	s.metrics.Manifest(rt.upstream, source)
	rec.Source = source
	rec.Digest, rec.MediaType = m.Digest, m.MediaType
	// The bytes are held from here until the client has them, counted
	// as its client's: when they do not fit now, they are dropped at once
	// rather than held uncounted while waiting.
	lease, err := s.budget.TryTake(clientParty(r), int64(len(m.Raw)))
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
	src.Served(rt.repo, m)
	return s.send(w, r, st, m, rt.ref)
}

// errStaleNotHeld: the tag's last known digest is not held.
var errStaleNotHeld = errors.New("the manifest of the tag's last known digest is not in the store")

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
	if !v.EvidenceStoredAt.IsZero() {
		rec.Evidence, rec.EvidenceAge = audit.EvidenceStored, time.Since(v.EvidenceStoredAt)
	}
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

// send writes the verified manifest bytes, within writeTimeout in all and
// sendTimeout for each stretch without progress: a client that does not
// read lets go of them then. A request by digest gets that digest back
// (the bytes were checked against it). Past the status line, a failed
// write cuts the connection.
func (s *Server) send(w http.ResponseWriter, r *http.Request, st *state, m *oci.Manifest, ref oci.Reference) error {
	h := w.Header()
	h.Set("Content-Type", m.MediaType)
	digest := m.Digest
	if ref.Digest != "" {
		digest = ref.Digest
	}
	h.Set("Docker-Content-Digest", digest)
	h.Set("Content-Length", strconv.Itoa(len(m.Raw)))
	iw := idleWriter{w: w, rc: http.NewResponseController(w), idle: st.limits.SendTimeout, until: time.Now().Add(st.limits.WriteTimeout)}
	w.WriteHeader(http.StatusOK)
	if r.Method != http.MethodGet {
		return nil
	}
	if _, err := iw.Write(m.Raw); err != nil {
		return &streamCut{err}
	}
	return nil
}
