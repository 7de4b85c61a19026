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
	"sync"
	"time"

	"github.com/authz-proxy/authz-proxy/internal/budget"
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
	lease, err := c.budget.Take(ctx, c.party, min(guess, limit))
	if err != nil {
		return nil, &Error{Upstream: c.name, Op: op, Err: err}
	}
	defer lease.Release()
	// The most the manifest may be is counted only while the upstream
	// is quick to answer: one that hangs then holds a small part of its
	// share per request, until it says the size.
	answered := c.holdWorstCase(lease, min(guess, limit))
	resp, err := c.Do(ctx, http.MethodGet, repo, "manifests/"+ref, "", acceptManifests)
	answered()
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
	raw, err := readBody(resp, limit)
	if err != nil {
		return nil, &Error{Upstream: c.name, Op: op, Err: err}
	}
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

// readBody reads a manifest response whole, at most limit+1 bytes (a
// longer one is refused by the caller): into a buffer of the announced
// length when there is one (the memory counted is the memory held), else
// into one that grows.
func readBody(resp *http.Response, limit int64) ([]byte, error) {
	if n := resp.ContentLength; n >= 0 && n <= limit {
		raw := make([]byte, n)
		if _, err := io.ReadFull(resp.Body, raw); err != nil {
			return nil, err
		}
		return raw, nil
	}
	buf := bytes.NewBuffer(make([]byte, 0, 64<<10))
	if _, err := buf.ReadFrom(io.LimitReader(resp.Body, limit+1)); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// holdWorstCase lets lease hold n bytes for limits.HeaderWait, then at
// most budget.Large until answered is called (the upstream sent its
// headers); the caller then resizes it to what they announce.
func (c *Client) holdWorstCase(lease *budget.Lease, n int64) (answered func()) {
	if n <= budget.Large || lease == nil {
		return func() {}
	}
	var mu sync.Mutex
	done := false
	t := time.AfterFunc(c.limits.HeaderWait, func() {
		mu.Lock()
		defer mu.Unlock()
		if !done {
			_ = lease.Resize(context.Background(), budget.Large) // giving back never fails
		}
	})
	return func() {
		t.Stop()
		mu.Lock()
		done = true
		mu.Unlock()
	}
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
// already holds, never something served on its own. Concurrent callers of
// one repo:ref share one round trip (the kubelets of a rollout resolve a
// tag at once), which no single caller hanging up cancels: it is bounded
// by the response timeout of the client's transport (a HEAD has no body).
func (c *Client) Head(ctx context.Context, repo, ref string) (string, error) {
	return c.heads.Do(ctx, headKey{repo, ref}, 0, func(ctx context.Context) (string, error) {
		return c.head(ctx, repo, ref)
	})
}

// headKey names one HEAD in flight.
type headKey struct{ repo, ref string }

// acceptManifests is the Accept header of every manifest request; shared,
// never changed.
var acceptManifests = http.Header{"Accept": {oci.Accept}}

func (c *Client) head(ctx context.Context, repo, ref string) (string, error) {
	resp, err := c.Do(ctx, http.MethodHead, repo, "manifests/"+ref, "", acceptManifests)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return "", c.StatusError("manifest "+repo+":"+ref, resp)
	}
	return resp.Header.Get("Docker-Content-Digest"), nil
}
