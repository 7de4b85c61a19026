package upstream

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/sigstore/sigstore/pkg/signature/payload"
	"golang.org/x/sync/errgroup"

	"github.com/authz-proxy/authz-proxy/internal/budget"
	"github.com/authz-proxy/authz-proxy/internal/limits"
	"github.com/authz-proxy/authz-proxy/internal/oci"
)

// referrersRecheck is how long an upstream without the referrers API is
// not asked again.
const referrersRecheck = 10 * time.Minute

// Evidence finds what want asks for, stored for digest in repo, in the
// places it names: cosign signatures in the `sha256-<hex>.sig` tag,
// attestations in the `sha256-<hex>.att` tag, and both, with Notary Project
// signatures, among the digest's OCI 1.1 referrers (or, where the upstream
// has no referrers API, in the
// `sha256-<hex>` fallback tag), asking for the referrers once for both. An
// error means the upstream could not be asked; finding nothing is not an
// error.
func (c *Client) Evidence(ctx context.Context, repo, digest string, want oci.Want) (*oci.Evidence, error) {
	ev := &oci.Evidence{}
	if !want.Signatures && len(want.PredicateTypes) == 0 {
		return ev, nil
	}
	if want.After != nil {
		ev.SignatureLayers, ev.AttestationLayers = want.After.SignatureLayers, want.After.AttestationLayers
	}
	from := want.From
	if from == 0 {
		from = oci.Everywhere
	}
	if err := c.gather(ctx, repo, digest, want, ev, from&oci.TagSchemes != 0, from&oci.Referrers != 0); err != nil {
		return nil, err
	}
	return ev, nil
}

// gather reads into ev what want asks for from the tag schemes (tags) and
// from the referrers (referrers), the manifests concurrently.
func (c *Client) gather(ctx context.Context, repo, digest string, want oci.Want, ev *oci.Evidence, tags, referrers bool) error {
	tag := oci.FallbackTag(digest)
	wantAtt := len(want.PredicateTypes) > 0
	var (
		mu   sync.Mutex
		sigs []sourced
		atts []sourced
		refs []sourced
		jobs []func(ctx context.Context) error
	)
	tagged := func(suffix string, into *[]sourced) {
		jobs = append(jobs, func(ctx context.Context) error {
			m, err := c.optionalManifest(ctx, repo, tag+suffix)
			if m != nil {
				mu.Lock()
				*into = append(*into, sourced{"tag " + tag + suffix, m})
				mu.Unlock()
			}
			return err
		})
	}
	if tags && want.Signatures {
		tagged(".sig", &sigs)
	}
	if tags && wantAtt {
		tagged(".att", &atts)
	}
	if referrers {
		jobs = append(jobs, func(ctx context.Context) error {
			var err error
			refs, err = c.referrers(ctx, repo, digest, tag, want, ev)
			return err
		})
	}
	if err := each(ctx, len(jobs), jobs); err != nil {
		return err
	}
	r := &reader{c: c, repo: repo, digest: digest, ev: ev}
	if want.Signatures {
		r.signatureLayers(append(sigs, refs...))
	}
	if wantAtt {
		r.attestationLayers(append(atts, refs...), want.PredicateTypes)
	}
	return r.read(ctx)
}

type sourced struct {
	source string
	m      *oci.Manifest
}

// optionalManifest fetches a signature, attestation or referrers manifest,
// where "not found" is an answer, not an error. Such manifests are small:
// one never seen counts as small against the budget until the upstream says
// its size.
func (c *Client) optionalManifest(ctx context.Context, repo, ref string) (*oci.Manifest, error) {
	m, err := c.manifest(ctx, repo, ref, budget.Large)
	if errors.Is(err, ErrNotFound) {
		return nil, nil
	}
	return m, err
}

// referrers returns the manifests that refer to digest and may hold what
// want asks for. At most MaxSignatures+MaxAttestations are read; past
// that, a problem is noted in ev.
func (c *Client) referrers(ctx context.Context, repo, digest, fallbackTag string, want oci.Want, ev *oci.Evidence) ([]sourced, error) {
	index, err := c.referrersIndex(ctx, repo, digest, fallbackTag)
	if index == nil || err != nil {
		return nil, err
	}
	limit := c.limits.MaxSignatures + c.limits.MaxAttestations
	var out []sourced
	read := 0
	seen := map[string]bool{}
	for _, d := range index.Manifests {
		// A referrer listed twice (some clients add it to the fallback
		// tag that the registry client updated already) is read once.
		if !mayHold(want, d) || seen[d.Digest] {
			continue
		}
		seen[d.Digest] = true
		if read == limit {
			p := fmt.Sprintf("more than %d referrers stored for this digest: the rest were not read", limit)
			ev.Problems = append(ev.Problems, p)
			ev.AttestationProblems = append(ev.AttestationProblems, p)
			break
		}
		read++
		m, err := c.optionalManifest(ctx, repo, d.Digest)
		if err != nil {
			return nil, err
		}
		if m != nil && m.Subject != nil && m.Subject.Digest == digest {
			out = append(out, sourced{"referrer " + d.Digest, m})
		}
	}
	return out, nil
}

// mayHold reports whether the referrer d may hold evidence that w wants, judging
// by the artifact type and annotations of its descriptor.
func mayHold(w oci.Want, d oci.Descriptor) bool {
	switch at := d.ArtifactType; {
	case at == "" || at == oci.EmptyJSON:
		// Some registries, and the fallback index that cosign writes,
		// take the artifact type from the empty config: it could be
		// anything.
		return w.Signatures || len(w.PredicateTypes) > 0
	case at == oci.SignatureArtifactType, at == oci.NotationSignature:
		return w.Signatures
	case strings.HasPrefix(at, oci.BundlePrefix) || at == oci.DSSE:
		return wantsBundle(w, d.Annotations) || wantsPredicate(w, d.Annotations[oci.BundlePredicateTypeAnnotation]) &&
			d.Annotations[oci.BundleContentAnnotation] != "message-signature"
	}
	return false // SBOMs, other artifacts
}

// wantsBundle reports whether a bundle annotated with annotations may be
// a wanted image signature: a message signature, cosign's signature
// statement, or one that does not say.
func wantsBundle(w oci.Want, annotations map[string]string) bool {
	if !w.Signatures {
		return false
	}
	pt := annotations[oci.BundlePredicateTypeAnnotation]
	return pt == "" || pt == oci.CosignSignPredicateType || annotations[oci.BundleContentAnnotation] == "message-signature"
}

// wantsPredicate reports whether an attestation annotated with predicate
// type pt is wanted; one without the annotation may be anything.
func wantsPredicate(w oci.Want, pt string) bool {
	if len(w.PredicateTypes) == 0 {
		return false
	}
	return pt == "" || slices.Contains(w.PredicateTypes, pt)
}

// referrersIndex asks the referrers API, and the fallback tag where the
// upstream has no such API.
func (c *Client) referrersIndex(ctx context.Context, repo, digest, fallbackTag string) (*oci.Manifest, error) {
	if time.Now().UnixNano() < c.noReferrersAPIUntil.Load() {
		return c.optionalManifest(ctx, repo, fallbackTag)
	}
	op := "referrers " + repo + "@" + digest
	resp, err := c.Do(ctx, http.MethodGet, repo, "referrers/"+digest, "", http.Header{"Accept": {oci.OCIIndex}})
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	switch {
	case resp.StatusCode == http.StatusOK && strings.HasPrefix(resp.Header.Get("Content-Type"), oci.OCIIndex):
		raw, err := io.ReadAll(io.LimitReader(resp.Body, limits.MaxManifestSize+1))
		if err != nil {
			return nil, &Error{Upstream: c.name, Op: op, Err: err}
		}
		if int64(len(raw)) > limits.MaxManifestSize {
			return nil, &Error{Upstream: c.name, Op: op, Status: resp.StatusCode, Err: ErrManifestTooLarge}
		}
		m, err := oci.ParseManifest(raw, oci.OCIIndex)
		if err != nil {
			return nil, &Error{Upstream: c.name, Op: op, Status: resp.StatusCode, Err: err}
		}
		return m, nil
	case resp.StatusCode == http.StatusNotFound, resp.StatusCode == http.StatusOK:
		// No referrers API (a 404, or a 200 that is not an index): the
		// fallback tag scheme holds them, if anything does. Remember it for
		// a while, which saves a round trip on every cold verification.
		c.noReferrersAPIUntil.Store(time.Now().Add(referrersRecheck).UnixNano())
		return c.optionalManifest(ctx, repo, fallbackTag)
	default:
		return nil, c.StatusError(op, resp)
	}
}

// reader plans the layer reads of one Evidence call and then does them,
// a few at a time.
type reader struct {
	c      *Client
	repo   string
	digest string
	ev     *oci.Evidence
	jobs   []func(ctx context.Context) error
	mu     sync.Mutex // guards the problem lists while reading

	// usual is the simple-signing payload `cosign sign` writes for digest
	// in this upstream's repo, and usualDigest its digest; nil until asked.
	usual       []byte
	usualDigest string
}

// knownPayload returns the simple-signing payload that layer l names
// without reading it, when those are the bytes cosign writes by default
// for this digest and repository: their sha256 is the layer's digest, so
// they are the bytes the upstream would send (which are checked against
// the same digest). Any other payload (annotations, another identity or
// digest) is read. This saves the upstream the costliest request of a
// cold decision, a blob GET.
func (r *reader) knownPayload(l oci.Descriptor) []byte {
	if r.usual == nil {
		// What payload.Cosign marshals for the image
		// <registry>/<repo>@<digest>, without parsing that reference.
		var err error
		r.usual, err = json.Marshal(payload.SimpleContainerImage{Critical: payload.Critical{
			Identity: payload.Identity{DockerReference: r.c.reg.RegistryStr() + "/" + r.repo},
			Image:    payload.Image{DockerManifestDigest: r.digest},
			Type:     payload.CosignSignatureType,
		}})
		if err != nil {
			r.usual = []byte{}
			return nil
		}
		sum := sha256.Sum256(r.usual)
		r.usualDigest = "sha256:" + hex.EncodeToString(sum[:])
	}
	// Within maxArtifactSize too: a known payload is held to the limits
	// of one that is read.
	if l.Size != int64(len(r.usual)) || l.Digest != r.usualDigest || l.Size > r.c.limits.MaxArtifactSize {
		return nil
	}
	return r.usual
}

// signatureLayers plans reading the signature layers of manifests (cosign
// simple-signing payloads, Sigstore bundles of image signatures, Notary
// Project envelopes), within the configured limits.
func (r *reader) signatureLayers(manifests []sourced) {
	want := oci.Want{Signatures: true}
	for _, s := range manifests {
		for _, l := range s.m.Layers {
			isBundle := strings.HasPrefix(l.MediaType, oci.BundlePrefix) && wantsBundle(want, s.m.Annotations)
			isNotation := (l.MediaType == oci.JWS || l.MediaType == oci.COSE) && oci.IsNotationSignature(s.m)
			if l.MediaType != oci.SimpleSigning && !isBundle && !isNotation {
				continue
			}
			if r.ev.SignatureLayers == r.c.limits.MaxSignatures {
				r.ev.Problems = append(r.ev.Problems, fmt.Sprintf("more than %d signatures stored: the rest were not read", r.c.limits.MaxSignatures))
				return
			}
			r.ev.SignatureLayers++ // unusable layers count too: hostile artifacts cost bounded work
			if isNotation {
				r.ev.Signatures = append(r.ev.Signatures, oci.Signature{Source: s.source, NotationMediaType: l.MediaType})
				i, source, l := len(r.ev.Signatures)-1, s.source, l
				r.jobs = append(r.jobs, func(ctx context.Context) error {
					raw, problem, err := r.c.blob(ctx, r.repo, l, r.c.limits.MaxArtifactSize, "notation signature envelope")
					if problem != nil {
						r.problem(&r.ev.Problems, source+": "+problem.Why)
					}
					r.ev.Signatures[i].Notation = raw
					return err
				})
				continue
			}
			if isBundle {
				r.ev.Signatures = append(r.ev.Signatures, oci.Signature{Source: s.source})
				i, source, l := len(r.ev.Signatures)-1, s.source, l
				r.jobs = append(r.jobs, func(ctx context.Context) error {
					raw, problem, err := r.c.blob(ctx, r.repo, l, r.c.limits.MaxEnvelopeSize, "signature bundle")
					if problem != nil {
						r.problem(&r.ev.Problems, source+": "+problem.Why)
					}
					r.ev.Signatures[i].Bundle = raw
					return err
				})
				continue
			}
			sig, err := base64.StdEncoding.DecodeString(l.Annotations[oci.SignatureAnnotation])
			if err != nil || len(sig) == 0 {
				r.ev.Problems = append(r.ev.Problems, fmt.Sprintf("%s: layer %s has no valid %s annotation", s.source, l.Digest, oci.SignatureAnnotation))
				continue
			}
			r.ev.Signatures = append(r.ev.Signatures, oci.Signature{
				Source: s.source, Signature: sig,
				Certificate: []byte(l.Annotations[oci.CertificateAnnotation]),
				RekorBundle: []byte(l.Annotations[oci.RekorBundleAnnotation]),
				Timestamp:   []byte(l.Annotations[oci.TimestampAnnotation]),
			})
			i, source, l := len(r.ev.Signatures)-1, s.source, l
			if known := r.knownPayload(l); known != nil {
				r.ev.Signatures[i].Payload = known
				continue
			}
			r.jobs = append(r.jobs, func(ctx context.Context) error {
				raw, problem, err := r.c.blob(ctx, r.repo, l, r.c.limits.MaxArtifactSize, "signature payload")
				if problem != nil {
					r.problem(&r.ev.Problems, source+": "+problem.Why)
				}
				r.ev.Signatures[i].Payload = raw
				return err
			})
		}
	}
}

// attestationLayers plans reading the attestation layers of manifests whose
// predicate type is wanted, within the configured limits. Layers are taken
// newest first: `cosign attest` appends to the .att manifest, so when the
// limit is reached the oldest attestations are the ones left unread.
func (r *reader) attestationLayers(manifests []sourced, predicateTypes []string) {
	want := oci.Want{PredicateTypes: predicateTypes}
	max := r.c.limits.MaxAttestations
	for _, s := range manifests {
		for _, l := range slices.Backward(s.m.Layers) {
			pt := l.Annotations[oci.PredicateTypeAnnotation]
			if pt == "" {
				pt = s.m.Annotations[oci.BundlePredicateTypeAnnotation]
			}
			isAtt := l.MediaType == oci.DSSE || strings.HasPrefix(l.MediaType, oci.BundlePrefix)
			if !isAtt || !wantsPredicate(want, pt) {
				continue
			}
			if r.ev.AttestationLayers == max {
				r.ev.AttestationProblems = append(r.ev.AttestationProblems, fmt.Sprintf("more than %d attestations of the required predicate types stored for this digest: the rest were not read", max))
				return
			}
			r.ev.AttestationLayers++
			r.ev.Attestations = append(r.ev.Attestations, oci.Attestation{
				Source: s.source, Digest: l.Digest, MediaType: l.MediaType, PredicateType: pt,
				Certificate: []byte(l.Annotations[oci.CertificateAnnotation]),
				RekorBundle: []byte(l.Annotations[oci.RekorBundleAnnotation]),
				Timestamp:   []byte(l.Annotations[oci.TimestampAnnotation]),
			})
			i, source, l := len(r.ev.Attestations)-1, s.source, l
			r.jobs = append(r.jobs, func(ctx context.Context) error {
				raw, problem, err := r.c.blob(ctx, r.repo, l, r.c.limits.MaxEnvelopeSize, "attestation")
				if problem != nil {
					r.problem(&r.ev.AttestationProblems, source+": "+problem.Why)
				}
				r.ev.Attestations[i].Raw = raw
				return err
			})
		}
	}
}

func (r *reader) problem(list *[]string, p string) {
	r.mu.Lock()
	*list = append(*list, p)
	r.mu.Unlock()
}

// read runs the planned reads, a few at a time, and drops the layers that
// could not be used (their problems are noted).
func (r *reader) read(ctx context.Context) error {
	if err := each(ctx, 4, r.jobs); err != nil {
		return err
	}
	r.ev.Signatures = slices.DeleteFunc(r.ev.Signatures, func(s oci.Signature) bool { return s.Payload == nil && s.Bundle == nil && s.Notation == nil })
	r.ev.Attestations = slices.DeleteFunc(r.ev.Attestations, func(a oci.Attestation) bool { return a.Raw == nil })
	return nil
}

// each runs jobs, at most limit at once, and returns the first error (the
// others are then cancelled). A lone job runs in the caller's goroutine:
// the common case (one signature tag, one payload) starts no goroutine,
// whose stack would grow through the HTTP client on every cold decision.
func each(ctx context.Context, limit int, jobs []func(ctx context.Context) error) error {
	switch len(jobs) {
	case 0:
		return nil
	case 1:
		return jobs[0](ctx)
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(limit)
	for _, job := range jobs {
		g.Go(func() error { return job(gctx) })
	}
	return g.Wait()
}

// blob reads one layer of at most limit bytes and checks it against its
// digest. A problem is a reason the layer cannot count; an error is an
// upstream failure. what names the layer in the problem ("" for the
// digest alone).
func (c *Client) blob(ctx context.Context, repo string, l oci.Descriptor, limit int64, what string) ([]byte, *oci.LayerProblem, error) {
	it := strings.TrimSpace(what + " " + l.Digest)
	if l.Size > limit {
		return nil, &oci.LayerProblem{Why: fmt.Sprintf("%s is %d bytes, over the %d-byte limit", it, l.Size, limit)}, nil
	}
	if !strings.HasPrefix(l.Digest, "sha256:") {
		return nil, &oci.LayerProblem{Why: fmt.Sprintf("%s %q is not sha256", strings.TrimSpace(what+" digest"), l.Digest)}, nil
	}
	op := strings.TrimSpace(what + " " + l.Digest)
	// Read no more than the descriptor declares: bytes past it cannot
	// match the digest anyway.
	if l.Size > 0 {
		limit = l.Size
	}
	lease, err := c.budget.Take(ctx, limit)
	if err != nil {
		return nil, nil, &Error{Upstream: c.name, Op: op, Err: err}
	}
	defer lease.Release()
	resp, err := c.Do(ctx, http.MethodGet, repo, "blobs/"+l.Digest, "", nil)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		err := c.StatusError(op, resp)
		if errors.Is(err, ErrNotFound) {
			return nil, &oci.LayerProblem{Why: it + " is missing upstream", Missing: true}, nil
		}
		return nil, nil, err
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err != nil {
		return nil, nil, &Error{Upstream: c.name, Op: op, Err: err}
	}
	if int64(len(b)) > limit {
		if l.Size > 0 {
			return nil, &oci.LayerProblem{Why: fmt.Sprintf("%s is larger than the %d bytes its descriptor declares", it, l.Size)}, nil
		}
		return nil, &oci.LayerProblem{Why: fmt.Sprintf("%s is over the %d-byte limit", it, limit)}, nil
	}
	sum := sha256.Sum256(b)
	if "sha256:"+hex.EncodeToString(sum[:]) != l.Digest {
		if what == "" {
			what = "its bytes"
		}
		return nil, &oci.LayerProblem{Why: fmt.Sprintf("%s does not match its digest %s", what, l.Digest)}, nil
	}
	return b, nil, nil
}

// Layer reads layer l of a manifest of repo whole, at most max bytes,
// checked against its digest: an oci.LayerReader. A layer that cannot
// count is an *oci.LayerProblem.
func (c *Client) Layer(ctx context.Context, repo string, l oci.Descriptor, max int64) ([]byte, error) {
	data, problem, err := c.blob(ctx, repo, l, max, "")
	if problem != nil {
		return nil, problem
	}
	return data, err
}

// emptyIndex is the referrers answer for a digest that nothing refers to.
var emptyIndex = []byte(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}`)

// ReferrersFallback returns the referrers of digest in repo read from the
// `sha256-<hex>` fallback tag, as an OCI image index (an empty one when the
// tag is absent), for an upstream without the referrers API. The proxy
// answers the referrers API with it, so that clients never need to pull
// that tag: it is an index, judged like any other.
func (c *Client) ReferrersFallback(ctx context.Context, repo, digest string) ([]byte, error) {
	m, err := c.optionalManifest(ctx, repo, oci.FallbackTag(digest))
	if err != nil {
		return nil, err
	}
	if m == nil || m.MediaType != oci.OCIIndex {
		return emptyIndex, nil
	}
	return m.Raw, nil
}
