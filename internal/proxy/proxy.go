// Package proxy is authz-proxy's HTTP edge: the read side of the OCI
// distribution API, routed to the configured upstreams. For a manifest it
// goes in a straight line: route, resolve the reference (source), fetch the
// manifest once or take the verified bytes held, judge them (policy.Judge:
// signature artifacts are recognised by their content, everything else is
// judged by policy), send those very bytes or refuse, and write one
// decision record. Blobs, tags/list and referrers are relayed from what the
// upstream's source answers (the content store, when there is one, lives
// behind it). Writes are refused; manifest bytes in flight and response
// write times are bounded. It is the one place that renders OCI errors and
// writes the decision log.
package proxy

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"regexp"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/authz-proxy/authz-proxy/internal/audit"
	"github.com/authz-proxy/authz-proxy/internal/budget"
	"github.com/authz-proxy/authz-proxy/internal/clients"
	"github.com/authz-proxy/authz-proxy/internal/limits"
	"github.com/authz-proxy/authz-proxy/internal/metrics"
	"github.com/authz-proxy/authz-proxy/internal/oci"
	"github.com/authz-proxy/authz-proxy/internal/policy"
	"github.com/authz-proxy/authz-proxy/internal/source"
	"github.com/distribution/distribution/v3/registry/api/errcode"
)

// Options configure a Server.
type Options struct {
	Policy *policy.Policy
	// Sources are what the proxy reads of each upstream (source.New),
	// with or without the content store; they are addressed by their
	// names.
	Sources         []*source.Source
	DefaultUpstream string
	// MaxEntries bounds the cache of verified outcomes (config's
	// cache.maxEntries); required. How long outcomes hold and how long a
	// verification may take are the policy's.
	MaxEntries int
	// Budget bounds the manifest bytes that requests hold at once; give
	// the same one to the upstream clients. nil: unbounded.
	Budget *budget.Budget
	// Limits are the edge's bounds: writeTimeout (a whole manifest
	// response), sendTimeout (each stretch of a response without
	// progress), clientRate and clientBurst; zero fields take their
	// defaults.
	Limits limits.Limits
	Audit  *audit.Log
	Logger *slog.Logger
	// Metrics, if not nil, receives request, decision, latency and cache
	// measurements.
	Metrics *metrics.Metrics
	// Clients, if not nil, authenticate every request and say what each
	// principal may pull (clients.Compile); nil: anyone who reaches the
	// proxy pulls whatever the upstreams' credentials can read.
	Clients *clients.Clients
	// Now is the clock of verdict and breakglass expiry; nil: time.Now.
	// Tests move it by hand.
	Now func() time.Time
}

// Server is the proxy's http.Handler.
type Server struct {
	// state is what a reload replaces; each request reads it once.
	state atomic.Pointer[state]
	judge *policy.Judge
	// registry is what the judge reads of an upstream: its source (tests
	// wrap it to inject faults).
	registry func(*source.Source) policy.Registry
	budget   *budget.Budget
	audit    *audit.Log
	log      *slog.Logger
	metrics  *metrics.Metrics
	// abandonedLogged is when (unix nanoseconds) an abandoned response
	// was last logged.
	abandonedLogged atomic.Int64
	// rates are the clients' request rates; nil: unlimited.
	rates atomic.Pointer[rateLimits]
}

// state is one configuration's policy, sources and bounds.
type state struct {
	policy  *policy.Policy
	sources map[string]*source.Source
	def     string
	limits  limits.Limits
	clients *clients.Clients
}

var _ http.Handler = (*Server)(nil)

// New returns a Server.
func New(o Options) (*Server, error) {
	if o.Audit == nil {
		return nil, errors.New("proxy: Audit is required")
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	st, err := newState(o)
	if err != nil {
		return nil, err
	}
	judge, err := policy.NewJudge(o.MaxEntries, o.Now)
	if err != nil {
		return nil, err
	}
	s := &Server{
		judge:    judge,
		registry: func(src *source.Source) policy.Registry { return src },
		budget:   o.Budget,
		audit:    o.Audit,
		log:      o.Logger,
		metrics:  o.Metrics,
	}
	s.state.Store(st)
	s.rates.Store(newRateLimits(st.limits.ClientRate, st.limits.ClientBurst))
	o.Metrics.WatchCache(judge.Len, judge.Evictions)
	return s, nil
}

// Reload puts a new configuration in force at once: o's Policy, Sources,
// DefaultUpstream, MaxEntries and Limits replace the old ones
// together (its other fields are ignored; those given to New stay).
// Requests in flight finish under the configuration they started with.
// Outcomes cached under another policy generation are not used again; they
// leave the cache as it fills.
func (s *Server) Reload(o Options) error {
	st, err := newState(o)
	if err != nil {
		return err
	}
	s.judge.Resize(o.MaxEntries)
	s.state.Store(st)
	if !s.rates.Load().same(st.limits.ClientRate, st.limits.ClientBurst) {
		s.rates.Store(newRateLimits(st.limits.ClientRate, st.limits.ClientBurst))
	}
	return nil
}

func newState(o Options) (*state, error) {
	if o.Policy == nil {
		return nil, errors.New("proxy: Policy is required")
	}
	st := &state{
		policy:  o.Policy,
		sources: map[string]*source.Source{},
		def:     o.DefaultUpstream,
		limits:  o.Limits.WithDefaults(),
		clients: o.Clients,
	}
	if o.MaxEntries <= 0 {
		return nil, errors.New("proxy: MaxEntries must be positive")
	}
	for _, src := range o.Sources {
		st.sources[src.Name()] = src
	}
	if st.def != "" && st.sources[st.def] == nil {
		return nil, fmt.Errorf("proxy: default upstream %q is not configured", st.def)
	}
	return st, nil
}

// Outages are the upstreams taken to be failing now, with when each began:
// their store answers first.
func (s *Server) Outages() map[string]time.Time {
	out := map[string]time.Time{}
	for name, src := range s.state.Load().sources {
		if since, ok := src.Outage(); ok {
			out[name] = since
		}
	}
	return out
}

// ServeHTTP routes one request and renders any error it returns. A panic
// fails that request with 503 (if nothing was written yet), not the process.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Docker-Distribution-API-Version", "registry/2.0")
	sw := &statusWriter{ResponseWriter: w}
	var rt route
	defer func() {
		if p := recover(); p != nil {
			if p == http.ErrAbortHandler {
				panic(p)
			}
			s.metrics.Panic()
			s.log.Error("panic serving a request", "method", r.Method, "path", r.URL.Path, "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
			if sw.status == 0 {
				writeError(sw, r, errorf(errcode.ErrorCodeUnavailable, "internal error, failing closed"))
			}
		}
		s.metrics.Request(rt.upstream, orOther(rt.kind), orOK(sw.status))
	}()
	if err := s.rates.Load().allow(r); err != nil {
		s.metrics.RateLimited()
		writeError(sw, r, err.(*httpError))
		return
	}
	rt, err := s.serve(sw, r, s.state.Load())
	var cut *streamCut
	if errors.As(err, &cut) {
		// Past the status line: only a cut connection tells the client.
		// What was written goes out first, so that the client sees the
		// answer end short rather than no answer.
		_ = http.NewResponseController(sw).Flush()
		s.metrics.Request(rt.upstream, orOther(rt.kind), orOK(sw.status))
		if errors.Is(err, os.ErrDeadlineExceeded) {
			s.abandoned(r, rt)
		} else {
			s.log.Debug("response cut", "path", r.URL.Path, "err", err)
		}
		panic(http.ErrAbortHandler)
	}
	if err != nil {
		he := s.classify(r, err, errcode.ErrorCodeUnknown)
		if he.status() >= 500 {
			s.log.Warn("request failed", "method", r.Method, "path", r.URL.Path, "status", he.status(), "err", err)
		}
		writeError(sw, r, he)
	}
}

// abandoned counts, and logs (at most every abandonedLogEvery), a response
// let go because its client read nothing for sendTimeout: what was held
// for it is released, its connection closed.
func (s *Server) abandoned(r *http.Request, rt route) {
	s.metrics.SendAbandoned(orOther(rt.kind))
	now := time.Now().UnixNano()
	if last := s.abandonedLogged.Load(); now-last < int64(abandonedLogEvery) || !s.abandonedLogged.CompareAndSwap(last, now) {
		return
	}
	s.log.Info("a client read nothing for sendTimeout: its response was abandoned and its connection closed", "client", r.RemoteAddr, "method", r.Method, "path", r.URL.Path)
}

// abandonedLogEvery spaces the log lines of abandoned responses: a client
// that reads nothing, a thousand times over, writes one line a second.
const abandonedLogEvery = time.Second

func orOther(kind string) string {
	if kind == "" {
		return "other"
	}
	return kind
}

func orOK(code int) int {
	if code == 0 {
		return http.StatusOK
	}
	return code
}

// statusWriter remembers the status code written, for metrics.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(p []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(p)
}

// ReadFrom passes a file on to the underlying writer, which sends it with
// sendfile(2) where it can.
func (w *statusWriter) ReadFrom(r io.Reader) (int64, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	if rf, ok := w.ResponseWriter.(io.ReaderFrom); ok {
		return rf.ReadFrom(r)
	}
	return io.Copy(struct{ io.Writer }{w.ResponseWriter}, r)
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// serve answers r under st, the configuration in force when it arrived,
// and returns the route it took (the zero route when it took none).
func (s *Server) serve(w http.ResponseWriter, r *http.Request, st *state) (route, error) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		return route{}, errorf(errcode.ErrorCodeUnsupported, "authz-proxy is read-only: %s is not supported; push to the upstream registry directly", r.Method)
	}
	rt, err := parseRoute(r, func(n string) bool { return st.sources[n] != nil }, st.def)
	if err != nil {
		return route{}, err
	}
	who, err := s.admit(r, st, rt)
	if err != nil {
		return rt, err
	}
	if rt.kind == kindBase {
		w.Header().Set("Content-Type", "application/json")
		_, err := io.WriteString(w, "{}\n")
		return rt, err
	}
	src := st.sources[rt.upstream]
	switch rt.kind {
	case kindManifest:
		return rt, s.manifest(w, r, st, src, rt, who)
	case kindBlob:
		return rt, s.blob(w, r, st, src, rt)
	case kindTags:
		if r.Method != http.MethodGet {
			return rt, errorf(errcode.ErrorCodeUnsupported, "tags/list takes GET")
		}
		_, err := s.passThrough(w, r, src, rt, "tags/list", http.StatusOK, http.StatusNotFound)
		return rt, err
	default:
		return rt, s.referrers(w, r, src, rt)
	}
}

// referrers answers the referrers API: the upstream's answer, or, from an
// upstream without the API, the referrers listed in its `sha256-<hex>`
// fallback tag. Clients (cosign, notation, oras) then never need to pull
// that tag, which is an index and judged like any other.
// https://github.com/opencontainers/distribution-spec/blob/main/spec.md#listing-referrers
func (s *Server) referrers(w http.ResponseWriter, r *http.Request, src *source.Source, rt route) error {
	served, err := s.passThrough(w, r, src, rt, "referrers/"+rt.ref.Digest, http.StatusOK)
	if served || err != nil {
		return err
	}
	index, err := src.ReferrersFallback(r.Context(), rt.repo, rt.ref.Digest)
	if err != nil {
		return err
	}
	h := w.Header()
	h.Set("Content-Type", oci.OCIIndex)
	h.Set("Content-Length", strconv.Itoa(len(index)))
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodGet {
		_, err = w.Write(index)
	}
	return err
}

var streamBuffers = sync.Pool{New: func() any { return new([64 << 10]byte) }}

// stream copies body to w, giving up when the client accepts nothing for
// idle: a client that stops reading frees its connection.
func stream(w http.ResponseWriter, body io.Reader, idle time.Duration) error {
	rc := http.NewResponseController(w)
	buf := streamBuffers.Get().(*[64 << 10]byte)
	defer streamBuffers.Put(buf)
	for {
		n, rerr := body.Read(buf[:])
		if n > 0 {
			_ = rc.SetWriteDeadline(time.Now().Add(idle))
			if _, err := w.Write(buf[:n]); err != nil {
				return err
			}
		}
		if rerr == io.EOF {
			return nil
		}
		if rerr != nil {
			return rerr
		}
	}
}

// passThrough relays tags/list and referrers answers of the given statuses
// unjudged, and reports whether it did; a 404 it does not relay is left to
// the caller.
func (s *Server) passThrough(w http.ResponseWriter, r *http.Request, src *source.Source, rt route, suffix string, relay ...int) (bool, error) {
	q := r.URL.Query()
	q.Del("ns")
	resp, err := src.Relay(r.Context(), rt.kind, r.Method, rt.repo, suffix, q.Encode(), http.Header{"Accept": r.Header.Values("Accept")}, relay...)
	if resp == nil || err != nil {
		return false, err
	}
	defer resp.Body.Close()
	copyHeaders(w.Header(), resp.Header, "Content-Type", "Content-Length", "Docker-Content-Digest", "OCI-Filters-Applied")
	if link := rewriteLink(resp.Header.Get("Link"), rt); link != "" {
		w.Header().Set("Link", link)
	}
	w.WriteHeader(resp.StatusCode)
	_, err = io.Copy(w, io.LimitReader(resp.Body, 64<<20))
	return true, err
}

func copyHeaders(dst, src http.Header, names ...string) {
	for _, n := range names {
		if v := src.Values(n); len(v) > 0 {
			dst[http.CanonicalHeaderKey(n)] = v
		}
	}
}

var (
	linkURL   = regexp.MustCompile(`<([^>]*)>`)
	linkStart = regexp.MustCompile(`,\s*<`)
)

// rewriteLink keeps the pagination links of a Link header pointing at the
// same upstream through the proxy: each becomes a path of the proxy (the
// upstream's scheme and host dropped) with the path prefix or the ns
// parameter restored. A link that is not of the registry API (not a /v2/
// path) is dropped, so that the client is never sent elsewhere.
func rewriteLink(link string, rt route) string {
	var out []string
	start := 0
	for _, i := range append(linkStart.FindAllStringIndex(link, -1), []int{len(link), len(link)}) {
		value := strings.TrimSpace(link[start:i[0]])
		start = i[0] + 1
		m := linkURL.FindStringSubmatchIndex(value)
		if m == nil || m[0] != 0 || strings.ContainsAny(value[m[1]:], "<>") {
			continue // not one link-value: <URI-Reference> and its parameters
		}
		u, err := url.Parse(value[m[2]:m[3]])
		if err != nil || u.Opaque != "" {
			continue
		}
		u.Scheme, u.Host, u.User = "", "", nil
		rest, ok := strings.CutPrefix(u.Path, "/v2/")
		if !ok {
			continue
		}
		if rt.prefixed {
			u.Path = "/v2/" + rt.upstream + "/" + rest
		}
		if rt.ns {
			q := u.Query()
			q.Set("ns", rt.upstream)
			u.RawQuery = q.Encode()
		}
		out = append(out, "<"+u.String()+">"+value[m[1]:])
	}
	return strings.Join(out, ", ")
}

// policyClient is what the policy sees of r's sender: the names of a
// verified client certificate, the source address, and who it
// authenticated as.
func policyClient(r *http.Request, who *clients.Principal) policy.Client {
	var c policy.Client
	if who != nil {
		c.Principal, c.Claims, c.ClaimsDigest = who.Name, who.Claims, who.ClaimsDigest
	}
	if ap, err := netip.ParseAddrPort(r.RemoteAddr); err == nil {
		c.Addr = ap.Addr()
	}
	if r.TLS != nil && len(r.TLS.VerifiedChains) > 0 {
		cert := r.TLS.VerifiedChains[0][0]
		if cert.Subject.CommonName != "" {
			c.Names = append(c.Names, cert.Subject.CommonName)
		}
		c.Names = append(c.Names, cert.DNSNames...)
		c.Names = append(c.Names, cert.EmailAddresses...)
		for _, u := range cert.URIs {
			c.Names = append(c.Names, u.String())
		}
	}
	return c
}

// clientOf describes who sent r, for the decision log.
func clientOf(r *http.Request) audit.Client {
	c := audit.Client{Addr: r.RemoteAddr, Party: clientKey(r)}
	if r.TLS != nil && len(r.TLS.PeerCertificates) > 0 {
		cert := r.TLS.PeerCertificates[0]
		c.Identity = cert.Subject.CommonName
		if c.Identity == "" && len(cert.DNSNames) > 0 {
			c.Identity = cert.DNSNames[0]
		}
	}
	return c
}
