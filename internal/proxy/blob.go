package proxy

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/authz-proxy/authz-proxy/internal/source"
	"github.com/distribution/distribution/v3/registry/api/errcode"
)

// blob serves GET and HEAD of /v2/<name>/blobs/<digest>: what the
// upstream's source answers (from the store when it holds the blob for the
// repository, else from the upstream), streamed to the client within the
// write timeout of each stretch without progress.
// https://github.com/opencontainers/distribution-spec/blob/main/spec.md#pulling-blobs
func (s *Server) blob(w http.ResponseWriter, r *http.Request, st *state, src *source.Source, rt route) error {
	b, err := src.Blob(r.Context(), rt.repo, rt.ref.Digest, r.Method == http.MethodHead, r.Header.Get("Range"))
	var re *source.RangeError
	switch {
	case errors.As(err, &re):
		w.Header().Set("Content-Range", fmt.Sprintf("bytes */%d", re.Size))
		return errorf(errcode.ErrorCodeRangeInvalid, "%v", re)
	case err != nil:
		return s.classify(r, err, errcode.ErrorCodeBlobUnknown)
	}
	for k, v := range b.Header {
		w.Header()[k] = v
	}
	w.WriteHeader(b.Status)
	if b.Body == nil {
		return nil
	}
	defer b.Body.Close()
	if _, ok := b.Body.(io.WriterTo); ok {
		_, err = io.Copy(newIdleWriter(w, st.writeTimeout), b.Body)
	} else {
		err = stream(w, b.Body, st.writeTimeout)
	}
	if err != nil {
		// Past the status line: only a cut connection tells the client
		// (a body checked against its digest fails before its end).
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

// streamCut is a failure past the status line: the response must end
// without its last bytes, so that the client sees an incomplete body.
type streamCut struct{ err error }

func (e *streamCut) Error() string { return "stream cut: " + e.err.Error() }
func (e *streamCut) Unwrap() error { return e.err }
