// Package proxy is authz-proxy's HTTP edge: the read side of the OCI
// distribution API, routed to the configured upstreams. Manifests are
// fetched once, judged by policy (through the verdict cache) and served as
// the very bytes judged, or refused; blobs stream; writes are refused. It is
// the one place that renders OCI errors and writes the decision log.
package proxy

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"time"

	"github.com/authz-proxy/authz-proxy/internal/audit"
	"github.com/authz-proxy/authz-proxy/internal/cache"
	"github.com/authz-proxy/authz-proxy/internal/policy"
	"github.com/authz-proxy/authz-proxy/internal/upstream"
	"github.com/distribution/distribution/v3/registry/api/errcode"
)

// Options configure a Server.
type Options struct {
	Policy          *policy.Policy
	Upstreams       []*upstream.Client
	DefaultUpstream string
	// MaxEntries, AllowTTL and DenyTTL size the verdict cache.
	MaxEntries        int
	AllowTTL, DenyTTL time.Duration
	// VerifyTimeout bounds one verification; default 30s.
	VerifyTimeout time.Duration
	Audit         *audit.Log
	Logger        *slog.Logger
}

// Server is the proxy's http.Handler.
type Server struct {
	policy    *policy.Policy
	upstreams map[string]*upstream.Client
	def       string
	verdicts  *cache.Cache[verdict]
	allowTTL  time.Duration
	denyTTL   time.Duration
	timeout   time.Duration
	audit     *audit.Log
	log       *slog.Logger
}

var _ http.Handler = (*Server)(nil)

// New returns a Server.
func New(o Options) (*Server, error) {
	if o.Policy == nil || o.Audit == nil {
		return nil, errors.New("proxy: Policy and Audit are required")
	}
	if o.MaxEntries == 0 {
		o.MaxEntries = 10000
	}
	if o.VerifyTimeout == 0 {
		o.VerifyTimeout = 30 * time.Second
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	verdicts, err := cache.New[verdict](o.MaxEntries)
	if err != nil {
		return nil, err
	}
	s := &Server{
		policy:    o.Policy,
		upstreams: map[string]*upstream.Client{},
		def:       o.DefaultUpstream,
		verdicts:  verdicts,
		allowTTL:  o.AllowTTL,
		denyTTL:   o.DenyTTL,
		timeout:   o.VerifyTimeout,
		audit:     o.Audit,
		log:       o.Logger,
	}
	for _, u := range o.Upstreams {
		s.upstreams[u.Name()] = u
	}
	if s.def != "" && s.upstreams[s.def] == nil {
		return nil, fmt.Errorf("proxy: default upstream %q is not configured", s.def)
	}
	return s, nil
}

// ServeHTTP routes one request and renders any error it returns.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Docker-Distribution-API-Version", "registry/2.0")
	if err := s.serve(w, r); err != nil {
		he := classify(err, errcode.ErrorCodeUnknown)
		if he.status >= 500 {
			s.log.Warn("request failed", "method", r.Method, "path", r.URL.Path, "status", he.status, "err", err)
		}
		writeError(w, r, he)
	}
}

func (s *Server) serve(w http.ResponseWriter, r *http.Request) error {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		return errorf(http.StatusMethodNotAllowed, errcode.ErrorCodeUnsupported, "authz-proxy is read-only: %s is not supported; push to the upstream registry directly", r.Method)
	}
	rt, err := parseRoute(r, func(n string) bool { return s.upstreams[n] != nil }, s.def)
	if err != nil {
		return err
	}
	if rt.kind == kindBase {
		w.Header().Set("Content-Type", "application/json")
		_, err := io.WriteString(w, "{}\n")
		return err
	}
	up := s.upstreams[rt.upstream]
	switch rt.kind {
	case kindManifest:
		return s.manifest(w, r, up, rt)
	case kindBlob:
		return s.blob(w, r, up, rt)
	case kindTags:
		if r.Method != http.MethodGet {
			return errorf(http.StatusMethodNotAllowed, errcode.ErrorCodeUnsupported, "tags/list takes GET")
		}
		return s.passThrough(w, r, up, rt, "tags/list")
	default: // referrers
		return s.passThrough(w, r, up, rt, "referrers/"+rt.ref)
	}
}

// blob streams a blob from the upstream; memory use does not grow with its
// size.
func (s *Server) blob(w http.ResponseWriter, r *http.Request, up *upstream.Client, rt route) error {
	hdr := http.Header{}
	if v := r.Header.Get("Range"); v != "" {
		hdr.Set("Range", v)
	}
	resp, err := up.Do(r.Context(), r.Method, rt.repo, "blobs/"+rt.ref, "", hdr)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusOK, http.StatusPartialContent, http.StatusRequestedRangeNotSatisfiable:
	case http.StatusNotFound:
		return errorf(http.StatusNotFound, errcode.ErrorCodeBlobUnknown, "blob %s not found in %s/%s", rt.ref, rt.upstream, rt.repo)
	default:
		return up.StatusError("blob "+rt.ref, resp)
	}
	copyHeaders(w.Header(), resp.Header, "Content-Type", "Content-Length", "Content-Range", "Accept-Ranges", "Docker-Content-Digest", "Etag", "Last-Modified")
	w.WriteHeader(resp.StatusCode)
	if r.Method == http.MethodGet {
		// A failure here is past the status line: the client sees a short
		// body, which its digest check catches.
		if _, err := io.Copy(w, resp.Body); err != nil {
			s.log.Debug("blob stream ended early", "digest", rt.ref, "err", err)
		}
	}
	return nil
}

// passThrough relays tags/list and referrers answers unjudged.
func (s *Server) passThrough(w http.ResponseWriter, r *http.Request, up *upstream.Client, rt route, suffix string) error {
	q := r.URL.Query()
	q.Del("ns")
	resp, err := up.Do(r.Context(), r.Method, rt.repo, suffix, q.Encode(), http.Header{"Accept": r.Header.Values("Accept")})
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusNotFound {
		return up.StatusError(suffix, resp)
	}
	copyHeaders(w.Header(), resp.Header, "Content-Type", "Content-Length", "Docker-Content-Digest", "OCI-Filters-Applied")
	if link := resp.Header.Get("Link"); link != "" {
		w.Header().Set("Link", rewriteLink(link, rt))
	}
	w.WriteHeader(resp.StatusCode)
	_, err = io.Copy(w, io.LimitReader(resp.Body, 64<<20))
	return err
}

func copyHeaders(dst, src http.Header, names ...string) {
	for _, n := range names {
		if v := src.Values(n); len(v) > 0 {
			dst[http.CanonicalHeaderKey(n)] = v
		}
	}
}

var linkURL = regexp.MustCompile(`<([^>]*)>`)

// rewriteLink keeps pagination links pointing at the same upstream through
// the proxy: it restores the path prefix or the ns parameter.
func rewriteLink(link string, rt route) string {
	return linkURL.ReplaceAllStringFunc(link, func(m string) string {
		u, err := url.Parse(m[1 : len(m)-1])
		if err != nil {
			return m
		}
		u.Scheme, u.Host = "", ""
		if rt.prefixed {
			if rest, ok := strings.CutPrefix(u.Path, "/v2/"); ok {
				u.Path = "/v2/" + rt.upstream + "/" + rest
			}
		}
		if rt.ns {
			q := u.Query()
			q.Set("ns", rt.upstream)
			u.RawQuery = q.Encode()
		}
		return "<" + u.String() + ">"
	})
}

// clientOf describes who sent r, for the decision log.
func clientOf(r *http.Request) audit.Client {
	c := audit.Client{Addr: r.RemoteAddr}
	if r.TLS != nil && len(r.TLS.PeerCertificates) > 0 {
		cert := r.TLS.PeerCertificates[0]
		c.Identity = cert.Subject.CommonName
		if c.Identity == "" && len(cert.DNSNames) > 0 {
			c.Identity = cert.DNSNames[0]
		}
	}
	return c
}
