package upstream

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"
)

// Media types and annotations of cosign signatures and attestations.
const (
	SimpleSigningMediaType = "application/vnd.dev.cosign.simplesigning.v1+json"
	SignatureAnnotation    = "dev.cosignproject.cosign/signature"
	SignatureArtifactType  = "application/vnd.dev.cosign.artifact.sig.v1+json"
	// DSSEMediaType is the media type of each layer of the .att manifest:
	// one DSSE envelope of an in-toto statement.
	DSSEMediaType = "application/vnd.dsse.envelope.v1+json"
	// BundleMediaTypePrefix starts the media types of Sigstore bundles, in
	// which `cosign attest --new-bundle-format` stores an attestation as an
	// OCI 1.1 referrer.
	BundleMediaTypePrefix = "application/vnd.dev.sigstore.bundle"
	// PredicateTypeAnnotation names the predicate type of a .att layer;
	// BundlePredicateTypeAnnotation that of a bundle referrer manifest.
	// Neither is signed: they only spare reading attestations of other
	// types, the signed statement decides.
	PredicateTypeAnnotation       = "predicateType"
	BundlePredicateTypeAnnotation = "dev.sigstore.bundle.predicateType"
	bundleContentAnnotation       = "dev.sigstore.bundle.content"
	emptyJSON                     = "application/vnd.oci.empty.v1+json"
	// CosignSignPredicateType is the predicate type of the DSSE bundle
	// that `cosign sign` (v3) stores as a referrer: an image signature.
	CosignSignPredicateType = "https://sigstore.dev/cosign/sign/v1"
	// Annotations of a keyless or logged cosign layer (.sig or .att): the
	// PEM signing certificate, the Rekor entry with its signed entry
	// timestamp, and an RFC 3161 timestamp.
	CertificateAnnotation = "dev.sigstore.cosign/certificate"
	RekorBundleAnnotation = "dev.sigstore.cosign/bundle"
	TimestampAnnotation   = "dev.sigstore.cosign/rfc3161timestamp"
)

// referrersRecheck is how long an upstream without the referrers API is
// not asked again.
const referrersRecheck = 10 * time.Minute

// Signature is one signature found for a digest, checked against its layer
// digest: a cosign simple-signing layer (the payload, the signature from
// its annotation, and the keyless and log annotations), or a Sigstore
// bundle. Nothing about it is verified yet.
type Signature struct {
	// Source says where it was found, for decision logs:
	// "tag sha256-<hex>.sig" or "referrer sha256:<digest>".
	Source    string
	Payload   []byte
	Signature []byte
	// Certificate, RekorBundle and Timestamp are the layer's annotations
	// of those names (see CertificateAnnotation), empty when absent.
	Certificate, RekorBundle, Timestamp []byte
	// Bundle is a Sigstore bundle (BundleMediaType, as `cosign sign`
	// v3 writes), in place of Payload and Signature.
	Bundle []byte
}

// Attestation is one attestation layer found for a digest: a DSSE envelope,
// or a Sigstore bundle holding one, checked against its layer digest.
// Nothing about it is verified yet.
type Attestation struct {
	// Source says where it was found: "tag sha256-<hex>.att" or
	// "referrer sha256:<digest>".
	Source string
	// Digest is the layer's digest: the digest of the envelope (or bundle)
	// bytes, which names this attestation in decision logs.
	Digest    string
	MediaType string
	Raw       []byte
	// Certificate, RekorBundle and Timestamp are the annotations of a
	// keyless or logged DSSE layer of the .att tag, empty when absent.
	Certificate, RekorBundle, Timestamp []byte
}

// Want says which evidence a caller needs, so that nothing else is read.
type Want struct {
	Signatures bool
	// PredicateTypes are the predicate types of the attestations wanted;
	// none means no attestations.
	PredicateTypes []string
	// Enough, when set, is asked once the tag schemes are read: if the
	// evidence found there already suffices, the referrers are not read.
	Enough func(*Evidence) bool
}

// Evidence is everything found stored for one digest.
type Evidence struct {
	Signatures []Signature
	// Problems are signature artifacts that could not be used, each with
	// the reason; they are not infrastructure errors.
	Problems     []string
	Attestations []Attestation
	// AttestationProblems are attestations that could not be used, or were
	// not read because a limit was reached.
	AttestationProblems []string
}

// Evidence finds what want asks for, stored for digest in repo: cosign
// signatures in the `sha256-<hex>.sig` tag, attestations in the
// `sha256-<hex>.att` tag, and both among the digest's OCI 1.1 referrers (or,
// where the upstream has no referrers API, in the `sha256-<hex>` fallback
// tag), asking for the referrers once for both. An error means the upstream
// could not be asked; finding nothing is not an error.
func (c *Client) Evidence(ctx context.Context, repo, digest string, want Want) (*Evidence, error) {
	ev := &Evidence{}
	if !want.Signatures && len(want.PredicateTypes) == 0 {
		return ev, nil
	}
	if want.Enough == nil {
		return ev, c.gather(ctx, repo, digest, want, ev, true, true)
	}
	// The tag schemes first: when they already satisfy the caller, the
	// referrers are not asked, which spares the upstream a request on most
	// cold verifications.
	if err := c.gather(ctx, repo, digest, want, ev, true, false); err != nil {
		return nil, err
	}
	if want.Enough(ev) {
		return ev, nil
	}
	if err := c.gather(ctx, repo, digest, want, ev, false, true); err != nil {
		return nil, err
	}
	return ev, nil
}

// gather reads into ev what want asks for from the tag schemes (tags) and
// from the referrers (referrers), the manifests concurrently.
func (c *Client) gather(ctx context.Context, repo, digest string, want Want, ev *Evidence, tags, referrers bool) error {
	tag := strings.Replace(digest, ":", "-", 1)
	wantAtt := len(want.PredicateTypes) > 0
	var (
		mu   sync.Mutex
		sigs []sourced
		atts []sourced
		refs []sourced
	)
	g, gctx := errgroup.WithContext(ctx)
	tagged := func(suffix string, into *[]sourced) {
		g.Go(func() error {
			m, err := c.optionalManifest(gctx, repo, tag+suffix)
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
		g.Go(func() error {
			var err error
			refs, err = c.referrers(gctx, repo, digest, tag, want, ev)
			return err
		})
	}
	if err := g.Wait(); err != nil {
		return err
	}
	r := &reader{c: c, repo: repo, ev: ev}
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
	m      *Manifest
}

// optionalManifest is Manifest where "not found" is an answer, not an error.
func (c *Client) optionalManifest(ctx context.Context, repo, ref string) (*Manifest, error) {
	m, err := c.Manifest(ctx, repo, ref)
	if errors.Is(err, ErrNotFound) {
		return nil, nil
	}
	return m, err
}

// referrers returns the manifests that refer to digest and may hold what
// want asks for. At most MaxSignatures+MaxAttestations are read; past
// that, a problem is noted in ev.
func (c *Client) referrers(ctx context.Context, repo, digest, fallbackTag string, want Want, ev *Evidence) ([]sourced, error) {
	index, err := c.referrersIndex(ctx, repo, digest, fallbackTag)
	if index == nil || err != nil {
		return nil, err
	}
	limit := c.limits.MaxSignatures + c.limits.MaxAttestations
	var out []sourced
	read := 0
	for _, d := range index.Manifests {
		if !want.mayHold(d) {
			continue
		}
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

// mayHold reports whether the referrer d may hold wanted evidence, judging
// by the artifact type and annotations of its descriptor.
func (w Want) mayHold(d Descriptor) bool {
	switch at := d.ArtifactType; {
	case at == "" || at == emptyJSON:
		// Some registries, and the fallback index that cosign writes,
		// take the artifact type from the empty config: it could be
		// anything.
		return w.Signatures || len(w.PredicateTypes) > 0
	case at == SignatureArtifactType:
		return w.Signatures
	case strings.HasPrefix(at, BundleMediaTypePrefix) || at == DSSEMediaType:
		return w.wantsBundle(d.Annotations) || w.wantsPredicate(d.Annotations[BundlePredicateTypeAnnotation]) &&
			d.Annotations[bundleContentAnnotation] != "message-signature"
	}
	return false // SBOMs, other artifacts
}

// wantsBundle reports whether a bundle annotated with annotations may be
// a wanted image signature: a message signature, cosign's signature
// statement, or one that does not say.
func (w Want) wantsBundle(annotations map[string]string) bool {
	if !w.Signatures {
		return false
	}
	pt := annotations[BundlePredicateTypeAnnotation]
	return pt == "" || pt == CosignSignPredicateType || annotations[bundleContentAnnotation] == "message-signature"
}

// wantsPredicate reports whether an attestation annotated with predicate
// type pt is wanted; one without the annotation may be anything.
func (w Want) wantsPredicate(pt string) bool {
	if len(w.PredicateTypes) == 0 {
		return false
	}
	return pt == "" || slices.Contains(w.PredicateTypes, pt)
}

// referrersIndex asks the referrers API, and the fallback tag where the
// upstream has no such API.
func (c *Client) referrersIndex(ctx context.Context, repo, digest, fallbackTag string) (*Manifest, error) {
	if time.Now().UnixNano() < c.noReferrersAPIUntil.Load() {
		return c.optionalManifest(ctx, repo, fallbackTag)
	}
	op := "referrers " + repo + "@" + digest
	resp, err := c.Do(ctx, http.MethodGet, repo, "referrers/"+digest, "", http.Header{"Accept": {OCIIndex}})
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	switch {
	case resp.StatusCode == http.StatusOK && strings.HasPrefix(resp.Header.Get("Content-Type"), OCIIndex):
		raw, err := io.ReadAll(io.LimitReader(resp.Body, c.limits.MaxManifestSize+1))
		if err != nil {
			return nil, &Error{Upstream: c.name, Op: op, Err: err}
		}
		if int64(len(raw)) > c.limits.MaxManifestSize {
			return nil, &Error{Upstream: c.name, Op: op, Status: resp.StatusCode, Err: ErrManifestTooLarge}
		}
		m, err := ParseManifest(raw, OCIIndex, "sha256")
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
	c    *Client
	repo string
	ev   *Evidence
	jobs []func(ctx context.Context) error
	mu   sync.Mutex // guards the problem lists while reading
}

// signatureLayers plans reading the simple-signing layers of manifests,
// within the configured limits.
func (r *reader) signatureLayers(manifests []sourced) {
	n := 0
	want := Want{Signatures: true}
	for _, s := range manifests {
		for _, l := range s.m.Layers {
			isBundle := strings.HasPrefix(l.MediaType, BundleMediaTypePrefix) && want.wantsBundle(s.m.Annotations)
			if l.MediaType != SimpleSigningMediaType && !isBundle {
				continue
			}
			if n == r.c.limits.MaxSignatures {
				r.ev.Problems = append(r.ev.Problems, fmt.Sprintf("more than %d signatures stored: the rest were not read", r.c.limits.MaxSignatures))
				return
			}
			n++ // unusable layers count too: hostile artifacts cost bounded work
			if isBundle {
				r.ev.Signatures = append(r.ev.Signatures, Signature{Source: s.source})
				i, source, l := len(r.ev.Signatures)-1, s.source, l
				r.jobs = append(r.jobs, func(ctx context.Context) error {
					raw, problem, err := r.c.blob(ctx, r.repo, l, r.c.limits.MaxEnvelopeSize, "signature bundle")
					if problem != "" {
						r.problem(&r.ev.Problems, source+": "+problem)
					}
					r.ev.Signatures[i].Bundle = raw
					return err
				})
				continue
			}
			sig, err := base64.StdEncoding.DecodeString(l.Annotations[SignatureAnnotation])
			if err != nil || len(sig) == 0 {
				r.ev.Problems = append(r.ev.Problems, fmt.Sprintf("%s: layer %s has no valid %s annotation", s.source, l.Digest, SignatureAnnotation))
				continue
			}
			r.ev.Signatures = append(r.ev.Signatures, Signature{
				Source: s.source, Signature: sig,
				Certificate: []byte(l.Annotations[CertificateAnnotation]),
				RekorBundle: []byte(l.Annotations[RekorBundleAnnotation]),
				Timestamp:   []byte(l.Annotations[TimestampAnnotation]),
			})
			i, source, l := len(r.ev.Signatures)-1, s.source, l
			r.jobs = append(r.jobs, func(ctx context.Context) error {
				payload, problem, err := r.c.blob(ctx, r.repo, l, r.c.limits.MaxPayloadSize, "signature payload")
				if problem != "" {
					r.problem(&r.ev.Problems, source+": "+problem)
				}
				r.ev.Signatures[i].Payload = payload
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
	want := Want{PredicateTypes: predicateTypes}
	max := r.c.limits.MaxAttestations
	for _, s := range manifests {
		for _, l := range slices.Backward(s.m.Layers) {
			pt := l.Annotations[PredicateTypeAnnotation]
			if pt == "" {
				pt = s.m.Annotations[BundlePredicateTypeAnnotation]
			}
			isAtt := l.MediaType == DSSEMediaType || strings.HasPrefix(l.MediaType, BundleMediaTypePrefix)
			if !isAtt || !want.wantsPredicate(pt) {
				continue
			}
			if len(r.ev.Attestations) == max {
				r.ev.AttestationProblems = append(r.ev.AttestationProblems, fmt.Sprintf("more than %d attestations of the required predicate types stored for this digest: the rest were not read", max))
				return
			}
			r.ev.Attestations = append(r.ev.Attestations, Attestation{
				Source: s.source, Digest: l.Digest, MediaType: l.MediaType,
				Certificate: []byte(l.Annotations[CertificateAnnotation]),
				RekorBundle: []byte(l.Annotations[RekorBundleAnnotation]),
				Timestamp:   []byte(l.Annotations[TimestampAnnotation]),
			})
			i, source, l := len(r.ev.Attestations)-1, s.source, l
			r.jobs = append(r.jobs, func(ctx context.Context) error {
				raw, problem, err := r.c.blob(ctx, r.repo, l, r.c.limits.MaxEnvelopeSize, "attestation")
				if problem != "" {
					r.problem(&r.ev.AttestationProblems, source+": "+problem)
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
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(4)
	for _, job := range r.jobs {
		g.Go(func() error { return job(gctx) })
	}
	if err := g.Wait(); err != nil {
		return err
	}
	r.ev.Signatures = slices.DeleteFunc(r.ev.Signatures, func(s Signature) bool { return s.Payload == nil && s.Bundle == nil })
	r.ev.Attestations = slices.DeleteFunc(r.ev.Attestations, func(a Attestation) bool { return a.Raw == nil })
	return nil
}

// blob reads one layer of at most limit bytes and checks it against its
// digest. A problem is a reason the layer cannot count; an error is an
// upstream failure.
func (c *Client) blob(ctx context.Context, repo string, l Descriptor, limit int64, what string) ([]byte, string, error) {
	if l.Size > limit {
		return nil, fmt.Sprintf("%s %s is %d bytes, over the %d-byte limit", what, l.Digest, l.Size, limit), nil
	}
	if !strings.HasPrefix(l.Digest, "sha256:") {
		return nil, fmt.Sprintf("%s digest %q is not sha256", what, l.Digest), nil
	}
	op := what + " " + l.Digest
	resp, err := c.Do(ctx, http.MethodGet, repo, "blobs/"+l.Digest, "", nil)
	if err != nil {
		return nil, "", err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		err := c.StatusError(op, resp)
		if errors.Is(err, ErrNotFound) {
			return nil, fmt.Sprintf("%s %s is missing upstream", what, l.Digest), nil
		}
		return nil, "", err
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err != nil {
		return nil, "", &Error{Upstream: c.name, Op: op, Err: err}
	}
	if int64(len(b)) > limit {
		return nil, fmt.Sprintf("%s %s is over the %d-byte limit", what, l.Digest, limit), nil
	}
	sum := sha256.Sum256(b)
	if "sha256:"+hex.EncodeToString(sum[:]) != l.Digest {
		return nil, fmt.Sprintf("%s does not match its digest %s", what, l.Digest), nil
	}
	return b, "", nil
}
