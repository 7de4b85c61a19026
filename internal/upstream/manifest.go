package upstream

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/authz-proxy/authz-proxy/internal/limits"
	"github.com/authz-proxy/authz-proxy/internal/oci"
)

// Errors that mean the upstream sent something the proxy will not serve.
var (
	ErrManifestTooLarge = errors.New("manifest too large")
	ErrDigestMismatch   = errors.New("manifest bytes do not match the digest asked for")
)

// Manifest fetches the manifest at repo:ref (a tag or a digest) once, reading
// at most the manifest size limit, and derives its digest from the bytes.
// When ref is a digest the bytes must hash to it. From before the request
// until the bytes are read, they count against the memory budget at the
// size last seen for repo:ref, or the limit when none was (so that a flood
// of unknown manifests reaches the upstream only as far as the budget
// allows); past it, the error wraps budget.ErrExhausted.
func (c *Client) Manifest(ctx context.Context, repo, ref string) (*oci.Manifest, error) {
	return c.manifest(ctx, repo, ref, limits.MaxManifestSize)
}

// manifest is Manifest, counting a manifest never seen at guess bytes
// until the upstream says its size. Concurrent requests for one repo:ref
// share one fetch (a rollout of a new image asks the upstream once), which
// no single caller hanging up cancels; it is bounded by the verification
// timeout.
func (c *Client) manifest(ctx context.Context, repo, ref string, guess int64) (*oci.Manifest, error) {
	return c.fetches.Do(ctx, repo+"\x00"+ref, c.limits.VerifyTimeout, func(ctx context.Context) (*oci.Manifest, error) {
		return c.fetchManifest(ctx, repo, ref, guess)
	})
}

func (c *Client) fetchManifest(ctx context.Context, repo, ref string, guess int64) (*oci.Manifest, error) {
	op := "manifest " + repo + ":" + ref
	limit := limits.MaxManifestSize
	if seen, ok := c.sizes.Get(repo + ":" + ref); ok {
		guess = seen
	}
	lease, err := c.budget.Take(ctx, min(guess, limit))
	if err != nil {
		return nil, &Error{Upstream: c.name, Op: op, Err: err}
	}
	defer lease.Release()
	resp, err := c.Do(ctx, http.MethodGet, repo, "manifests/"+ref, "", http.Header{"Accept": {oci.Accept}})
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, c.StatusError(op, resp)
	}
	if resp.ContentLength > limit {
		return nil, &Error{Upstream: c.name, Op: op, Status: resp.StatusCode, Err: fmt.Errorf("%w: %d bytes, over the %d-byte limit", ErrManifestTooLarge, resp.ContentLength, limit)}
	}
	size := limit
	if resp.ContentLength >= 0 {
		size = resp.ContentLength
	}
	if err := lease.Resize(ctx, size); err != nil {
		return nil, &Error{Upstream: c.name, Op: op, Err: err}
	}
	buf := bytes.NewBuffer(make([]byte, 0, size+1))
	if _, err := buf.ReadFrom(io.LimitReader(resp.Body, limit+1)); err != nil {
		return nil, &Error{Upstream: c.name, Op: op, Err: err}
	}
	raw := buf.Bytes()
	if int64(len(raw)) > limit {
		return nil, &Error{Upstream: c.name, Op: op, Status: resp.StatusCode, Err: fmt.Errorf("%w: over the %d-byte limit", ErrManifestTooLarge, limit)}
	}
	sum := sha256.Sum256(raw)
	digest := "sha256:" + hex.EncodeToString(sum[:])
	if oci.IsDigest(ref) {
		got := digest
		if !strings.HasPrefix(ref, "sha256:") {
			if got, err = oci.DigestOf(raw, ref); err != nil {
				return nil, &Error{Upstream: c.name, Op: op, Status: resp.StatusCode, Err: err}
			}
		}
		if got != ref {
			return nil, &Error{Upstream: c.name, Op: op, Status: resp.StatusCode, Err: fmt.Errorf("%w: got %s", ErrDigestMismatch, got)}
		}
	}
	c.sizes.Add(repo+":"+ref, int64(len(raw)))
	// The same digest is the same bytes: keep one copy, parsed once (a
	// pull by tag of bytes held is not parsed again).
	if held, ok := c.Cached(repo, digest); ok {
		return held, nil
	}
	m, err := oci.ParseManifest(raw, resp.Header.Get("Content-Type"))
	if err != nil {
		return nil, &Error{Upstream: c.name, Op: op, Status: resp.StatusCode, Err: err}
	}
	c.manifests.Add(repo+"@"+m.Digest, m)
	return m, nil
}

// Cached returns the manifest with (sha256) digest in repo if it was fetched
// recently: bytes that hash to digest, as fetched from this upstream.
func (c *Client) Cached(repo, digest string) (*oci.Manifest, bool) {
	return c.manifests.Get(repo + "@" + digest)
}

// Hold keeps m, the verified bytes of a manifest of repo that the caller
// read back from elsewhere (the content store), as if fetched: Cached
// finds it.
func (c *Client) Hold(repo string, m *oci.Manifest) {
	c.manifests.Add(repo+"@"+m.Digest, m)
}

// Head asks the upstream which digest repo:ref points at, without reading
// the manifest. The answer is a lookup key for verified bytes the caller
// already holds, never something served on its own.
func (c *Client) Head(ctx context.Context, repo, ref string) (string, error) {
	resp, err := c.Do(ctx, http.MethodHead, repo, "manifests/"+ref, "", http.Header{"Accept": {oci.Accept}})
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return "", c.StatusError("manifest "+repo+":"+ref, resp)
	}
	return resp.Header.Get("Docker-Content-Digest"), nil
}
