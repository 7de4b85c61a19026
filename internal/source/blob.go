package source

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/authz-proxy/authz-proxy/internal/store"
	"github.com/authz-proxy/authz-proxy/internal/upstream"
)

// Blob is the answer to one blob request, to relay as it is.
type Blob struct {
	// Status is 200, 206 (a range) or 416 (a range the upstream could not
	// satisfy).
	Status int
	Header http.Header
	// Body streams the bytes of a GET; nil for a HEAD. A body from the
	// store, or from a fill, is checked against the digest as it streams
	// and fails before its last byte when the bytes do not match; one
	// streamed through from the upstream is the upstream's (the client
	// checks the digest). The caller closes it.
	Body io.ReadCloser
	// FromStore is true when the store answered without the upstream.
	FromStore bool
}

// RangeError is a range that the blob's size cannot satisfy (416).
type RangeError struct {
	Range string
	Size  int64
}

func (e *RangeError) Error() string {
	return fmt.Sprintf("range %q is outside the blob's %d bytes", e.Range, e.Size)
}

// Blob answers a GET, or a HEAD (head), of blob digest in repo, with the
// client's Range header rng ("" for none): from the store when it holds the
// blob for this upstream and repo may read it, else from the upstream
// through one fill per digest that stores it, streamed to the client as it
// arrives. A range of a blob the store does not hold is relayed from the
// upstream while a fill stores the whole. Without a store every answer is
// the upstream's, streamed through. A blob the upstream does not have is an
// error wrapping upstream.ErrNotFound.
// https://github.com/opencontainers/distribution-spec/blob/main/spec.md#pulling-blobs
func (s *Source) Blob(ctx context.Context, repo, digest string, head bool, rng string) (*Blob, error) {
	if s.store == nil {
		return s.blobThrough(ctx, repo, digest, head, rng)
	}
	scope := s.scope(repo)
	o := &origin{s: s, repo: repo, digest: digest}
	if head || rng != "" {
		size, err := s.store.Stat(ctx, scope, digest, o)
		switch {
		case errors.Is(err, store.ErrNotStored):
			if !head {
				// A client resuming: answered from the upstream, and
				// stored meanwhile for the next one.
				s.store.Prefetch(scope, digest, o)
			}
			return s.blobThrough(ctx, repo, digest, head, rng)
		case err != nil:
			return nil, s.notFound(err, repo, digest)
		}
		if head {
			return &Blob{Status: http.StatusOK, Header: blobHeader(digest, size), FromStore: true}, nil
		}
		off, n, ok := parseRange(rng, size)
		switch {
		case ok:
			return s.blobRange(ctx, repo, digest, off, n, size)
		case n < 0:
			return nil, &RangeError{Range: rng, Size: size}
		}
		// A form of Range the store does not serve: the whole blob.
	}
	b, err := s.store.Get(ctx, scope, digest, o)
	switch {
	case errors.Is(err, store.ErrNotStored):
		return s.blobThrough(ctx, repo, digest, head, rng)
	case err != nil:
		return nil, s.notFound(err, repo, digest)
	}
	return &Blob{Status: http.StatusOK, Header: blobHeader(digest, b.Size()), Body: b, FromStore: b.FromStore()}, nil
}

// blobRange answers n bytes from off of a stored blob of size bytes.
func (s *Source) blobRange(ctx context.Context, repo, digest string, off, n, size int64) (*Blob, error) {
	rc, err := s.store.ReadRange(ctx, s.scope(repo), digest, off, n)
	if err != nil {
		// Evicted since, or the store fails.
		return s.blobThrough(ctx, repo, digest, false, fmt.Sprintf("bytes=%d-%d", off, off+n-1))
	}
	h := blobHeader(digest, n)
	h.Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", off, off+n-1, size))
	return &Blob{Status: http.StatusPartialContent, Header: h, Body: rc, FromStore: true}, nil
}

// blobThrough relays the upstream's answer, its body streamed: memory use
// does not grow with the blob's size.
func (s *Source) blobThrough(ctx context.Context, repo, digest string, head bool, rng string) (*Blob, error) {
	hdr := http.Header{}
	if rng != "" {
		hdr.Set("Range", rng)
	}
	method := http.MethodGet
	if head {
		method = http.MethodHead
	}
	start := time.Now()
	resp, err := s.up.Do(ctx, method, repo, "blobs/"+digest, "", hdr)
	if err != nil {
		s.done("blob", start, err)
		return nil, err
	}
	switch resp.StatusCode {
	case http.StatusOK, http.StatusPartialContent, http.StatusRequestedRangeNotSatisfiable:
	default:
		err := s.up.StatusError("blob "+digest, resp)
		resp.Body.Close()
		if errors.Is(err, upstream.ErrNotFound) {
			s.done("blob", start, nil)
			return nil, s.notFound(err, repo, digest)
		}
		s.done("blob", start, err)
		return nil, err
	}
	s.done("blob", start, nil)
	b := &Blob{Status: resp.StatusCode, Header: http.Header{}, Body: resp.Body}
	for _, k := range []string{"Content-Type", "Content-Length", "Content-Range", "Accept-Ranges", "Docker-Content-Digest", "Etag", "Last-Modified"} {
		if v := resp.Header.Values(k); len(v) > 0 {
			b.Header[k] = v
		}
	}
	if head {
		resp.Body.Close()
		b.Body = nil
	}
	return b, nil
}

// notFound says which blob the upstream does not have, where.
func (s *Source) notFound(err error, repo, digest string) error {
	if errors.Is(err, upstream.ErrNotFound) {
		return fmt.Errorf("blob %s not found in %s/%s: %w", digest, s.name, repo, upstream.ErrNotFound)
	}
	return err
}

func blobHeader(digest string, length int64) http.Header {
	h := http.Header{}
	h.Set("Content-Type", "application/octet-stream")
	h.Set("Docker-Content-Digest", digest)
	h.Set("Accept-Ranges", "bytes")
	h.Set("Etag", `"`+digest+`"`)
	if length >= 0 {
		h.Set("Content-Length", strconv.FormatInt(length, 10))
	}
	return h
}

// parseRange reads a Range header of one range against a blob of size
// bytes: bytes=a-b, bytes=a- or bytes=-n. ok is false for any other form;
// then n is -1 when the range cannot be satisfied (416), 0 when the
// header is to be ignored (the whole blob is served, as RFC 9110 allows).
func parseRange(h string, size int64) (off, n int64, ok bool) {
	spec, found := strings.CutPrefix(h, "bytes=")
	if !found || strings.Contains(spec, ",") {
		return 0, 0, false
	}
	first, last, found := strings.Cut(strings.TrimSpace(spec), "-")
	if !found {
		return 0, 0, false
	}
	if first == "" { // the last n bytes
		k, err := strconv.ParseInt(last, 10, 64)
		if err != nil || k < 0 {
			return 0, 0, false
		}
		if k == 0 || size == 0 {
			return 0, -1, false
		}
		k = min(k, size)
		return size - k, k, true
	}
	a, err := strconv.ParseInt(first, 10, 64)
	if err != nil || a < 0 {
		return 0, 0, false
	}
	b := size - 1
	if last != "" {
		if b, err = strconv.ParseInt(last, 10, 64); err != nil || b < a {
			return 0, 0, false
		}
		b = min(b, size-1)
	}
	if a >= size {
		return 0, -1, false
	}
	return a, b - a + 1, true
}

// origin is the upstream of one blob of one repository, as the store asks
// it: with the proxy's credential for that repository, on the context the
// store gives (a fill outlives the request that started it).
type origin struct {
	s            *Source
	repo, digest string
}

var _ store.Origin = (*origin)(nil)

func (o *origin) Fetch(ctx context.Context, off, size int64) (io.ReadCloser, int64, error) {
	hdr := http.Header{}
	want := http.StatusOK
	if off > 0 {
		// Closed: some registries take no other form.
		hdr.Set("Range", fmt.Sprintf("bytes=%d-%d", off, size-1))
		want = http.StatusPartialContent
	}
	start := time.Now()
	resp, err := o.s.up.Do(ctx, http.MethodGet, o.repo, "blobs/"+o.digest, "", hdr)
	if err != nil {
		o.s.done("blob", start, err)
		return nil, 0, err
	}
	if resp.StatusCode == want && off > 0 && !strings.HasPrefix(resp.Header.Get("Content-Range"), fmt.Sprintf("bytes %d-", off)) {
		resp.StatusCode = http.StatusBadGateway // not the range asked for
	}
	if resp.StatusCode != want {
		err := o.s.up.StatusError("blob "+o.digest, resp)
		resp.Body.Close()
		o.s.done("blob", start, err)
		return nil, 0, err
	}
	o.s.done("blob", start, nil)
	return resp.Body, resp.ContentLength, nil
}

func (o *origin) Confirm(ctx context.Context) error {
	start := time.Now()
	resp, err := o.s.up.Do(ctx, http.MethodHead, o.repo, "blobs/"+o.digest, "", nil)
	if err == nil {
		if resp.StatusCode != http.StatusOK {
			err = o.s.up.StatusError("blob "+o.digest, resp)
		}
		resp.Body.Close()
	}
	o.s.done("blob", start, err)
	return err
}

// Relay sends method to /v2/<repo>/<suffix> on the upstream, with query
// and header, for answers passed through unjudged (tags/list, referrers).
// It returns the upstream's response when its status is one of relay (the
// caller closes the body), nil and no error for a 404 it does not relay,
// and an error for any other answer. The call is counted as op.
func (s *Source) Relay(ctx context.Context, op, method, repo, suffix, query string, header http.Header, relay ...int) (*http.Response, error) {
	start := time.Now()
	resp, err := s.up.Do(ctx, method, repo, suffix, query, header)
	switch {
	case err != nil:
	case slices.Contains(relay, resp.StatusCode):
		s.done(op, start, nil)
		return resp, nil
	case resp.StatusCode == http.StatusNotFound:
		resp.Body.Close()
		s.done(op, start, nil)
		return nil, nil
	default:
		err = s.up.StatusError(suffix, resp)
		resp.Body.Close()
	}
	s.done(op, start, err)
	return nil, err
}

// ReferrersFallback returns the referrers of digest in repo read from the
// `sha256-<hex>` fallback tag, as an OCI image index, for an upstream
// without the referrers API (upstream.Client.ReferrersFallback).
func (s *Source) ReferrersFallback(ctx context.Context, repo, digest string) ([]byte, error) {
	start := time.Now()
	index, err := s.up.ReferrersFallback(ctx, repo, digest)
	s.done("referrers", start, err)
	return index, err
}
