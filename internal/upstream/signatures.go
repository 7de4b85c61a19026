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
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"
)

// Media types and annotations of cosign signatures.
const (
	SimpleSigningMediaType = "application/vnd.dev.cosign.simplesigning.v1+json"
	SignatureAnnotation    = "dev.cosignproject.cosign/signature"
	SignatureArtifactType  = "application/vnd.dev.cosign.artifact.sig.v1+json"
	emptyJSON              = "application/vnd.oci.empty.v1+json"
)

// referrersRecheck is how long an upstream without the referrers API is
// not asked again.
const referrersRecheck = 10 * time.Minute

// Signature is one cosign signature layer found for a digest: the payload
// bytes (checked against the layer digest) and the signature from its
// annotation. Nothing about it is verified yet.
type Signature struct {
	// Source says where it was found, for decision logs:
	// "tag sha256-<hex>.sig" or "referrer sha256:<digest>".
	Source    string
	Payload   []byte
	Signature []byte
}

// Evidence is everything found stored for one digest.
type Evidence struct {
	Signatures []Signature
	// Problems are signature artifacts that could not be used, each with
	// the reason; they are not infrastructure errors.
	Problems []string
}

// Signatures finds the cosign signatures stored for digest in repo: in the
// `sha256-<hex>.sig` tag and among its OCI 1.1 referrers (or, where the
// upstream has no referrers API, in the `sha256-<hex>` fallback tag). An
// error means the upstream could not be asked; finding nothing is not an
// error.
func (c *Client) Signatures(ctx context.Context, repo, digest string) (*Evidence, error) {
	tag := strings.Replace(digest, ":", "-", 1)
	var (
		mu        sync.Mutex
		manifests []sourced
		problems  []string
	)
	add := func(s []sourced, p []string) {
		mu.Lock()
		manifests = append(manifests, s...)
		problems = append(problems, p...)
		mu.Unlock()
	}
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		m, err := c.optionalManifest(gctx, repo, tag+".sig")
		if m != nil {
			add([]sourced{{"tag " + tag + ".sig", m}}, nil)
		}
		return err
	})
	g.Go(func() error {
		refs, problems, err := c.referrers(gctx, repo, digest, tag)
		add(refs, problems)
		return err
	})
	if err := g.Wait(); err != nil {
		return nil, err
	}
	ev, err := c.signatureLayers(ctx, repo, manifests)
	if ev != nil {
		ev.Problems = append(problems, ev.Problems...)
	}
	return ev, err
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

// referrers returns the signature manifests that refer to digest.
func (c *Client) referrers(ctx context.Context, repo, digest, fallbackTag string) ([]sourced, []string, error) {
	index, err := c.referrersIndex(ctx, repo, digest, fallbackTag)
	if index == nil || err != nil {
		return nil, nil, err
	}
	var out []sourced
	followed := 0
	for _, d := range index.Manifests {
		switch d.ArtifactType {
		case SignatureArtifactType, "", emptyJSON:
			// emptyJSON: some registries take the artifact type from
			// the config, which is empty for cosign's referrers.
		default:
			continue // attestations, SBOMs, bundles: not signatures
		}
		if followed == c.limits.MaxSignatures {
			return out, []string{fmt.Sprintf("more than %d signature referrers: the rest were not read", c.limits.MaxSignatures)}, nil
		}
		followed++
		m, err := c.optionalManifest(ctx, repo, d.Digest)
		if err != nil {
			return nil, nil, err
		}
		if m != nil && m.Subject != nil && m.Subject.Digest == digest {
			out = append(out, sourced{"referrer " + d.Digest, m})
		}
	}
	return out, nil, nil
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

// signatureLayers reads the simple-signing layers of the given manifests,
// within the configured limits.
func (c *Client) signatureLayers(ctx context.Context, repo string, manifests []sourced) (*Evidence, error) {
	ev := &Evidence{}
	read := 0 // layers looked at, usable or not: hostile artifacts cost bounded work
	for _, s := range manifests {
		for _, l := range s.m.Layers {
			if l.MediaType != SimpleSigningMediaType {
				continue
			}
			if read == c.limits.MaxSignatures {
				ev.Problems = append(ev.Problems, fmt.Sprintf("more than %d signatures stored: the rest were not read", c.limits.MaxSignatures))
				return ev, nil
			}
			read++
			sig, err := base64.StdEncoding.DecodeString(l.Annotations[SignatureAnnotation])
			if err != nil || len(sig) == 0 {
				ev.Problems = append(ev.Problems, fmt.Sprintf("%s: layer %s has no valid %s annotation", s.source, l.Digest, SignatureAnnotation))
				continue
			}
			payload, problem, err := c.payload(ctx, repo, l)
			if err != nil {
				return nil, err
			}
			if problem != "" {
				ev.Problems = append(ev.Problems, s.source+": "+problem)
				continue
			}
			ev.Signatures = append(ev.Signatures, Signature{Source: s.source, Payload: payload, Signature: sig})
		}
	}
	return ev, nil
}

// payload reads one signature layer, capped, and checks it against its
// digest. A problem is a reason the layer cannot count; an error is an
// upstream failure.
func (c *Client) payload(ctx context.Context, repo string, l Descriptor) ([]byte, string, error) {
	limit := c.limits.MaxPayloadSize
	if l.Size > limit {
		return nil, fmt.Sprintf("signature payload %s is %d bytes, over the %d-byte limit", l.Digest, l.Size, limit), nil
	}
	if !strings.HasPrefix(l.Digest, "sha256:") {
		return nil, fmt.Sprintf("signature payload digest %q is not sha256", l.Digest), nil
	}
	op := "signature payload " + l.Digest
	resp, err := c.Do(ctx, http.MethodGet, repo, "blobs/"+l.Digest, "", nil)
	if err != nil {
		return nil, "", err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		err := c.StatusError(op, resp)
		if errors.Is(err, ErrNotFound) {
			return nil, fmt.Sprintf("signature payload %s is missing upstream", l.Digest), nil
		}
		return nil, "", err
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err != nil {
		return nil, "", &Error{Upstream: c.name, Op: op, Err: err}
	}
	if int64(len(b)) > limit {
		return nil, fmt.Sprintf("signature payload %s is over the %d-byte limit", l.Digest, limit), nil
	}
	sum := sha256.Sum256(b)
	if "sha256:"+hex.EncodeToString(sum[:]) != l.Digest {
		return nil, fmt.Sprintf("signature payload does not match its digest %s", l.Digest), nil
	}
	return b, "", nil
}
