package proxy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"

	"github.com/authz-proxy/authz-proxy/internal/budget"
	"github.com/authz-proxy/authz-proxy/internal/cache"
	"github.com/authz-proxy/authz-proxy/internal/oci"
	"github.com/authz-proxy/authz-proxy/internal/upstream"
	"github.com/distribution/distribution/v3/registry/api/errcode"
)

// Error codes of authz-proxy's own, beside the distribution spec's: each
// carries its HTTP status, as distribution's do.
var (
	// errNotRegistryPath answers a path that is not of the registry API.
	errNotRegistryPath = errcode.Register("authz-proxy", errcode.ErrorDescriptor{
		Value:          "NOT_FOUND",
		Message:        "not a registry API path",
		Description:    "The path is not one of the OCI distribution API's.",
		HTTPStatusCode: http.StatusNotFound,
	})
	// errUpstreamInvalid answers what the upstream sent and the proxy will
	// not serve: a manifest over the size limit, not matching its digest,
	// or not a manifest.
	errUpstreamInvalid = errcode.Register("authz-proxy", errcode.ErrorDescriptor{
		Value:          "UPSTREAM_INVALID",
		Message:        "the upstream sent what the proxy will not serve",
		Description:    "The upstream's answer is too large, does not match its digest, or is not a manifest the proxy can judge.",
		HTTPStatusCode: http.StatusBadGateway,
	})
)

// httpError is an OCI error, rendered with the HTTP status of its code.
// Handlers return errors; ServeHTTP renders them, here only.
type httpError struct {
	err        errcode.Error
	retryAfter string
}

func (e *httpError) Error() string { return e.err.Error() }

// status is the HTTP status of e's code.
func (e *httpError) status() int { return e.err.Code.Descriptor().HTTPStatusCode }

func errorf(code errcode.ErrorCode, format string, args ...any) *httpError {
	return &httpError{err: code.WithMessage(fmt.Sprintf(format, args...))}
}

// classify maps an error from upstream or policy onto what the client sees.
// notFound is the code for an upstream 404. Anything not known to be the
// client's or the upstream content's fault is 503: the proxy could not
// verify, and fails closed. A panic recovered in a verification is logged
// with its stack and counted.
func (s *Server) classify(r *http.Request, err error, notFound errcode.ErrorCode) *httpError {
	var he *httpError
	if errors.As(err, &he) {
		return he
	}
	var ue *upstream.Error
	var pe *cache.PanicError
	switch {
	case errors.As(err, &pe):
		s.metrics.Panic()
		s.log.Error("panic while verifying", "method", r.Method, "path", r.URL.Path, "panic", fmt.Sprint(pe.Value), "stack", string(pe.Stack))
		return errorf(errcode.ErrorCodeUnavailable, "could not verify, failing closed: %v", err)
	case errors.Is(err, budget.ErrExhausted):
		e := errorf(errcode.ErrorCodeUnavailable, "the proxy is busy (%v); retry shortly", budget.ErrExhausted)
		e.retryAfter = "1"
		return e
	case errors.Is(err, upstream.ErrNotFound):
		return errorf(notFound, "%v", err)
	case errors.As(err, &ue) && ue.Status == http.StatusTooManyRequests:
		e := errorf(errcode.ErrorCodeTooManyRequests, "%v", err)
		e.retryAfter = ue.RetryAfter
		return e
	case errors.Is(err, upstream.ErrManifestTooLarge), errors.Is(err, upstream.ErrDigestMismatch), errors.Is(err, oci.ErrInvalidManifest):
		return errorf(errUpstreamInvalid, "refusing what the upstream sent: %v", err)
	case errors.Is(err, context.DeadlineExceeded):
		return errorf(errcode.ErrorCodeUnavailable, "could not verify in time, failing closed: %v", err)
	default:
		return errorf(errcode.ErrorCodeUnavailable, "could not verify, failing closed: %v", err)
	}
}

// writeError renders e as an OCI error response.
func writeError(w http.ResponseWriter, r *http.Request, e *httpError) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	if e.retryAfter != "" {
		h.Set("Retry-After", e.retryAfter)
	}
	body, _ := json.Marshal(errcode.Errors{e.err})
	body = append(body, '\n')
	h.Set("Content-Length", fmt.Sprint(len(body))) // on HEAD too: HEAD answers as GET would
	w.WriteHeader(e.status())
	if r.Method != http.MethodHead {
		_, _ = w.Write(body)
	}
}
