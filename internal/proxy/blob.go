package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/authz-proxy/authz-proxy/internal/oci"
	"github.com/authz-proxy/authz-proxy/internal/store"
	"github.com/authz-proxy/authz-proxy/internal/upstream"
	"github.com/distribution/distribution/v3/registry/api/errcode"
)

// blob serves GET and HEAD of /v2/<name>/blobs/<digest>: from the store
// when it holds the blob for this repository, else from the upstream,
// through one fill per digest that stores it. Without a store, or for what
// the store does not keep, it streams from the upstream.
// https://github.com/opencontainers/distribution-spec/blob/main/spec.md#pulling-blobs
func (s *Server) blob(w http.ResponseWriter, r *http.Request, st *state, up *upstream.Client, rt route) error {
	if s.store == nil {
		return s.blobThrough(w, r, st, up, rt)
	}
	ctx := r.Context()
	scope := store.Scope{Upstream: rt.upstream, Repository: rt.repo}
	o := &blobOrigin{s: s, up: up, rt: rt}
	rng := r.Header.Get("Range")
	if r.Method == http.MethodHead || rng != "" {
		size, err := s.store.Stat(ctx, scope, rt.ref.Digest, o)
		switch {
		case errors.Is(err, store.ErrNotStored):
			if r.Method == http.MethodGet {
				// A client resuming: answered from the upstream, and
				// stored meanwhile for the next one.
				s.store.Prefetch(scope, rt.ref.Digest, o)
			}
			return s.blobThrough(w, r, st, up, rt)
		case err != nil:
			return blobError(err, rt)
		}
		if r.Method == http.MethodHead {
			blobHeaders(w, rt.ref.Digest, size)
			w.WriteHeader(http.StatusOK)
			return nil
		}
		if off, n, ok := parseRange(rng, size); ok {
			return s.blobRange(w, r, st, up, rt, off, n, size)
		} else if n < 0 {
			w.Header().Set("Content-Range", fmt.Sprintf("bytes */%d", size))
			return errorf(errcode.ErrorCodeRangeInvalid, "range %q is outside the blob's %d bytes", rng, size)
		}
		// A form of Range the store does not serve: the whole blob.
	}
	b, err := s.store.Get(ctx, scope, rt.ref.Digest, o)
	switch {
	case errors.Is(err, store.ErrNotStored):
		return s.blobThrough(w, r, st, up, rt)
	case err != nil:
		return blobError(err, rt)
	}
	defer b.Close()
	blobHeaders(w, rt.ref.Digest, b.Size())
	w.WriteHeader(http.StatusOK)
	if _, err := b.WriteTo(newIdleWriter(w, st.writeTimeout)); err != nil {
		return &streamCut{err}
	}
	return nil
}

// blobRange serves n bytes from off of a stored blob of size bytes.
func (s *Server) blobRange(w http.ResponseWriter, r *http.Request, st *state, up *upstream.Client, rt route, off, n, size int64) error {
	rc, err := s.store.ReadRange(r.Context(), rt.ref.Digest, off, n)
	if err != nil {
		return s.blobThrough(w, r, st, up, rt) // evicted since, or the store fails
	}
	defer rc.Close()
	blobHeaders(w, rt.ref.Digest, n)
	w.Header().Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", off, off+n-1, size))
	w.WriteHeader(http.StatusPartialContent)
	if _, err := io.Copy(newIdleWriter(w, st.writeTimeout), rc); err != nil {
		return &streamCut{err}
	}
	return nil
}

// idleWriter writes a response, giving up when the client accepts nothing
// for idle (as stream does: a client that stops reading frees its
// connection). It writes in pieces, each with its own deadline, so that a
// slow client that still reads is not cut; ReadFrom keeps the kernel's
// sendfile for a file.
type idleWriter struct {
	w    http.ResponseWriter
	rc   *http.ResponseController
	idle time.Duration
}

const idlePiece = 256 << 10

func newIdleWriter(w http.ResponseWriter, idle time.Duration) *idleWriter {
	return &idleWriter{w: w, rc: http.NewResponseController(w), idle: idle}
}

func (iw *idleWriter) Write(p []byte) (int, error) {
	n := 0
	for n < len(p) {
		_ = iw.rc.SetWriteDeadline(time.Now().Add(iw.idle))
		m, err := iw.w.Write(p[n:min(len(p), n+idlePiece)])
		n += m
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// ReadFrom sends a limited file in pieces through the writer's own
// ReadFrom, each piece a limited reader of the file itself, as sendfile
// needs.
func (iw *idleWriter) ReadFrom(r io.Reader) (int64, error) {
	rf, ok := iw.w.(io.ReaderFrom)
	lr, limited := r.(*io.LimitedReader)
	if !ok || !limited {
		return io.Copy(struct{ io.Writer }{iw}, r)
	}
	var total int64
	for lr.N > 0 {
		_ = iw.rc.SetWriteDeadline(time.Now().Add(iw.idle))
		n, err := rf.ReadFrom(&io.LimitedReader{R: lr.R, N: min(lr.N, idlePiece)})
		lr.N -= n
		total += n
		if err != nil || n == 0 {
			return total, err
		}
	}
	return total, nil
}

func blobHeaders(w http.ResponseWriter, digest string, length int64) {
	h := w.Header()
	h.Set("Content-Type", "application/octet-stream")
	h.Set("Docker-Content-Digest", digest)
	h.Set("Accept-Ranges", "bytes")
	h.Set("Etag", `"`+digest+`"`)
	if length >= 0 {
		h.Set("Content-Length", strconv.FormatInt(length, 10))
	}
}

// blobError is what a client sees of an upstream's answer about a blob.
func blobError(err error, rt route) error {
	if errors.Is(err, upstream.ErrNotFound) {
		return errorf(errcode.ErrorCodeBlobUnknown, "blob %s not found in %s/%s", rt.ref.Digest, rt.upstream, rt.repo)
	}
	return err
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

// streamCut is a failure past the status line: the response must end
// without its last bytes, so that the client sees an incomplete body.
type streamCut struct{ err error }

func (e *streamCut) Error() string { return "stream cut: " + e.err.Error() }
func (e *streamCut) Unwrap() error { return e.err }

// link lets the store serve the blobs of a manifest it just served to
// that repository (its config and layers), without asking the upstream.
func (s *Server) link(rt route, m *oci.Manifest) {
	if s.store == nil {
		return
	}
	digests := make([]string, 0, len(m.Layers)+1)
	if m.Config.Digest != "" {
		digests = append(digests, m.Config.Digest)
	}
	for _, l := range m.Layers {
		digests = append(digests, l.Digest)
	}
	s.store.Link(store.Scope{Upstream: rt.upstream, Repository: rt.repo}, m.Digest, digests...)
}

// blobOrigin is the upstream of one blob request, as the store asks it:
// with the requesting repository's credentials, on the context the store
// gives (a fill outlives the request that started it).
type blobOrigin struct {
	s  *Server
	up *upstream.Client
	rt route
}

var _ store.Origin = (*blobOrigin)(nil)

func (o *blobOrigin) Fetch(ctx context.Context, off, size int64) (io.ReadCloser, int64, error) {
	hdr := http.Header{}
	want := http.StatusOK
	if off > 0 {
		// Closed: some registries take no other form.
		hdr.Set("Range", fmt.Sprintf("bytes=%d-%d", off, size-1))
		want = http.StatusPartialContent
	}
	start := time.Now()
	resp, err := o.up.Do(ctx, http.MethodGet, o.rt.repo, "blobs/"+o.rt.ref.Digest, "", hdr)
	if err != nil {
		o.s.upstreamDone(o.rt.upstream, "blob", start, err)
		return nil, 0, err
	}
	if resp.StatusCode == want && off > 0 && !strings.HasPrefix(resp.Header.Get("Content-Range"), fmt.Sprintf("bytes %d-", off)) {
		resp.StatusCode = http.StatusBadGateway // not the range asked for
	}
	if resp.StatusCode != want {
		err := o.up.StatusError("blob "+o.rt.ref.Digest, resp)
		resp.Body.Close()
		o.s.upstreamDone(o.rt.upstream, "blob", start, err)
		return nil, 0, err
	}
	o.s.upstreamDone(o.rt.upstream, "blob", start, nil)
	return resp.Body, resp.ContentLength, nil
}

func (o *blobOrigin) Confirm(ctx context.Context) error {
	start := time.Now()
	resp, err := o.up.Do(ctx, http.MethodHead, o.rt.repo, "blobs/"+o.rt.ref.Digest, "", nil)
	if err == nil {
		if resp.StatusCode != http.StatusOK {
			err = o.up.StatusError("blob "+o.rt.ref.Digest, resp)
		}
		resp.Body.Close()
	}
	o.s.upstreamDone(o.rt.upstream, "blob", start, err)
	return err
}
