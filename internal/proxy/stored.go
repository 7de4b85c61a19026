package proxy

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/remote/transport"

	"github.com/authz-proxy/authz-proxy/internal/budget"
	"github.com/authz-proxy/authz-proxy/internal/limits"
	"github.com/authz-proxy/authz-proxy/internal/oci"
	"github.com/authz-proxy/authz-proxy/internal/policy"
	"github.com/authz-proxy/authz-proxy/internal/store"
	"github.com/authz-proxy/authz-proxy/internal/upstream"
)

// stored is what the judge reads of one upstream when a content store is
// configured: the upstream's answers, each written through to the store
// (manifests by digest, the evidence found for a digest as a note about
// it), and, when the upstream fails, what the store kept of its earlier
// answers. The store holds what the upstream said, never a verdict: the
// judge verifies whatever it reads, under the policy in force, so that a
// digest pulled before is judged again offline after a restart or during
// an outage. Bytes read back are checked against their digests by the
// store; artifacts are still recognised by their content.
type stored struct {
	inner policy.Registry
	up    *upstream.Client
	s     *Server
	name  string
}

var _ policy.Registry = stored{}

func (r stored) scope(repo string) store.Scope {
	return store.Scope{Upstream: r.name, Repository: repo}
}

// Manifest asks the upstream and stores what it sent; when the upstream
// fails, a manifest by digest comes from what the proxy holds.
func (r stored) Manifest(ctx context.Context, repo, ref string) (*oci.Manifest, error) {
	m, err := r.inner.Manifest(ctx, repo, ref)
	if err == nil {
		r.s.store.Put(r.scope(repo), m.Digest, m.Raw)
		return m, nil
	}
	if oci.IsDigest(ref) && unavailable(err) {
		r.s.outageBegins(r.name)
		if m := r.s.held(ctx, r.up, r.name, repo, ref); m != nil {
			return m, nil
		}
	}
	return nil, err
}

// Evidence asks the upstream and keeps its answer with the digest; when
// the upstream fails (or failed a moment ago), it answers what the upstream
// answered last for the same question.
func (r stored) Evidence(ctx context.Context, repo, digest string, want oci.Want) (*oci.Evidence, error) {
	key := evidenceKey(want)
	if r.s.outage(r.name) {
		if ev, ok := r.storedEvidence(ctx, repo, digest, key); ok {
			return ev, nil
		}
	}
	ev, err := r.inner.Evidence(ctx, repo, digest, want)
	if err == nil {
		r.keepEvidence(repo, digest, key, ev)
		return ev, nil
	}
	if !unavailable(err) {
		return nil, err
	}
	r.s.outageBegins(r.name)
	if ev, ok := r.storedEvidence(ctx, repo, digest, key); ok {
		return ev, nil
	}
	return nil, err
}

// Recognize asks the upstream for an artifact's layers; when it fails,
// the layers are read from the store (where a client pulling the artifact
// through the proxy put them), and checked the same way.
func (r stored) Recognize(ctx context.Context, repo string, m *oci.Manifest) (oci.Recognition, error) {
	if r.s.outage(r.name) {
		if rec, ok := r.recognizeStored(ctx, repo, m); ok {
			return rec, nil
		}
	}
	rec, err := r.inner.Recognize(ctx, repo, m)
	if err == nil || !unavailable(err) {
		return rec, err
	}
	r.s.outageBegins(r.name)
	if rec, ok := r.recognizeStored(ctx, repo, m); ok {
		return rec, nil
	}
	return rec, err
}

// evidenceDoc is the note kept about a digest: the evidence the upstream
// returned for one question (want), nothing verified.
type evidenceDoc struct {
	Digest   string        `json:"digest"`
	Want     string        `json:"want"`
	Evidence *oci.Evidence `json:"evidence"`
}

// evidenceKey names a question about a digest's evidence: what was wanted,
// where, and after how many layers read. The note is "evidence-<key>".
func evidenceKey(w oci.Want) string {
	h := sha256.New()
	fmt.Fprintf(h, "evidence v1\x00%t\x00%d\x00", w.Signatures, w.From)
	for _, pt := range slices.Sorted(slices.Values(w.PredicateTypes)) {
		fmt.Fprintf(h, "%s\x00", pt)
	}
	if w.After != nil {
		fmt.Fprintf(h, "after\x00%d\x00%d", w.After.SignatureLayers, w.After.AttestationLayers)
	}
	return "evidence-" + hex.EncodeToString(h.Sum(nil))[:32]
}

// keepEvidence writes ev as the note key about digest, unless this process
// wrote the same note last.
func (r stored) keepEvidence(repo, digest, key string, ev *oci.Evidence) {
	doc, err := json.Marshal(evidenceDoc{Digest: digest, Want: key, Evidence: ev})
	if err != nil {
		return
	}
	sum := sha256.Sum256(doc)
	id := r.name + "/" + repo + "@" + digest + "/" + key
	if last, ok := r.s.kept.Get(id); ok && last == sum {
		return
	}
	r.s.kept.Add(id, sum)
	r.s.store.PutNote(r.scope(repo), digest, key, doc)
}

// storedEvidence reads the note key about digest, kept when the upstream
// last answered the same question.
func (r stored) storedEvidence(ctx context.Context, repo, digest, key string) (*oci.Evidence, bool) {
	// On a context of its own: the upstream may have used up the
	// caller's time before failing.
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), storeReadTimeout)
	defer cancel()
	doc, err := r.s.store.Note(sctx, r.scope(repo), digest, key, maxEvidenceDoc(r.up.Limits()))
	if err != nil {
		return nil, false
	}
	var d evidenceDoc
	if err := json.Unmarshal(doc, &d); err != nil || d.Digest != digest || d.Want != key || d.Evidence == nil {
		return nil, false
	}
	r.s.metrics.EvidenceFromStore(r.name)
	return d.Evidence, true
}

// maxEvidenceDoc bounds an evidence note: every signature and attestation
// layer the limits let the upstream client read, base64 in JSON, and room
// for the rest.
func maxEvidenceDoc(l limits.Limits) int64 {
	layers := int64(l.MaxSignatures)*max(l.MaxArtifactSize, l.MaxEnvelopeSize) + int64(l.MaxAttestations)*l.MaxEnvelopeSize
	return layers/3*4 + 1<<20
}

// recognizeStored is upstream.Client.Recognize on the layers the store
// holds for the scope; ok is false when one is missing.
func (r stored) recognizeStored(ctx context.Context, repo string, m *oci.Manifest) (oci.Recognition, bool) {
	if err := oci.CheckArtifactManifest(m); err != nil {
		return oci.Recognition{Why: strings.TrimPrefix(err.Error(), oci.ErrNotArtifact.Error()+": ")}, true
	}
	l := r.up.Limits()
	if n := l.MaxSignatures + l.MaxAttestations; len(m.Layers) > n {
		return oci.Recognition{Why: fmt.Sprintf("it has %d layers, more than the %d read of an artifact", len(m.Layers), n)}, true
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), storeReadTimeout)
	defer cancel()
	for i, layer := range m.Layers {
		if layer.Size > l.MaxEnvelopeSize {
			return oci.Recognition{Why: fmt.Sprintf("layer %d %s is %d bytes, over the %d-byte limit", i, layer.Digest, layer.Size, l.MaxEnvelopeSize)}, true
		}
		data, err := r.s.store.Read(sctx, r.scope(repo), layer.Digest, l.MaxEnvelopeSize)
		if err != nil {
			return oci.Recognition{}, false
		}
		if err := oci.CheckArtifactLayer(layer.MediaType, data); err != nil {
			return oci.Recognition{Why: fmt.Sprintf("layer %d: %s", i, strings.TrimPrefix(err.Error(), oci.ErrNotArtifact.Error()+": "))}, true
		}
	}
	return oci.Recognition{Artifact: true}, true
}

// storeReadTimeout bounds one read of the store on behalf of an upstream
// that failed.
const storeReadTimeout = 5 * time.Second

// held returns the verified bytes of digest in repo of upstream name that
// the proxy holds: in memory, or in the store for that repository (then
// kept in memory). nil when neither.
func (s *Server) held(ctx context.Context, up *upstream.Client, name, repo, digest string) *oci.Manifest {
	scope := store.Scope{Upstream: name, Repository: repo}
	if m, ok := up.Cached(repo, digest); ok {
		if s.store != nil {
			// Fetched without the store, as evidence: kept from now on
			// (Put writes once per process).
			s.store.Put(scope, digest, m.Raw)
		}
		return m
	}
	if s.store == nil || !strings.HasPrefix(digest, "sha256:") {
		return nil
	}
	raw, err := s.store.Read(ctx, scope, digest, limits.MaxManifestSize)
	if err != nil {
		return nil
	}
	m, err := oci.ParseManifest(raw, "")
	if err != nil || m.Digest != digest {
		return nil
	}
	up.Hold(repo, m)
	return m
}

// outagePause is how long after an upstream failed the store's answers
// are used without asking it first: an upstream that hangs costs one
// timeout per pause, not one per request.
const outagePause = 5 * time.Second

// outage reports whether upstream name failed less than outagePause ago.
func (s *Server) outage(name string) bool {
	v, ok := s.outages.Load(name)
	return ok && time.Now().UnixNano() < v.(*atomic.Int64).Load()
}

// outageBegins notes that upstream name just failed.
func (s *Server) outageBegins(name string) {
	v, _ := s.outages.LoadOrStore(name, new(atomic.Int64))
	v.(*atomic.Int64).Store(time.Now().Add(outagePause).UnixNano())
}

// unavailable reports whether err means the upstream could not answer:
// no connection, no answer in time, a 5xx or a 429. Those are the failures
// the store answers for; a 404, a refused credential or bad content are
// answers.
func unavailable(err error) bool {
	var ue *upstream.Error
	switch {
	case err == nil, errors.Is(err, budget.ErrExhausted), errors.Is(err, context.Canceled):
		return false
	case !errors.As(err, &ue):
		return errors.Is(err, context.DeadlineExceeded)
	case ue.Status == 0:
		// The token handshake's refusal is an answer too.
		var te *transport.Error
		return !errors.As(err, &te) || te.StatusCode >= 500 || te.StatusCode == http.StatusTooManyRequests
	default:
		return ue.Status >= 500 || ue.Status == http.StatusTooManyRequests
	}
}
