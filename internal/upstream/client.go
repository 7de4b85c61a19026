// Package upstream is authz-proxy's client for the registries it fronts: one
// Client per configured upstream, with pooled connections and the token
// handshake of the distribution spec. It fetches a manifest once (counted
// against the memory budget) and hashes the bytes it got, streams blobs,
// finds the signatures and attestations stored for a digest (tag schemes,
// referrers, the referrers fallback tag), and reads small layers whole,
// checked against their digests. It makes no policy decisions, and keeps
// nothing but connections, tokens and the manifests it fetched.
package upstream

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/authz-proxy/authz-proxy/internal/budget"
	"github.com/authz-proxy/authz-proxy/internal/cache"
	"github.com/authz-proxy/authz-proxy/internal/limits"
	"github.com/authz-proxy/authz-proxy/internal/oci"
	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	lru "github.com/hashicorp/golang-lru/v2"
	"golang.org/x/sync/singleflight"
)

// Options configure a Client.
type Options struct {
	// Name is the upstream's configured name, used in messages.
	Name string
	// URL is scheme://host[:port].
	URL string
	// Insecure allows plain http and unverified TLS.
	Insecure bool
	// Username and Password, when Username is set, are the proxy's own
	// credential, offered through the registry's Basic or Bearer challenge.
	Username, Password string
	// Limits bound what is read from this upstream; zero fields take the
	// defaults.
	Limits limits.Limits
	// Budget, shared by every upstream, bounds the manifest and signature
	// bytes read at once; nil: unbounded.
	Budget *budget.Budget
}

// Client talks to one upstream registry.
type Client struct {
	name   string
	base   *url.URL
	root   string // base's /v2/, as a URL
	reg    name.Registry
	auth   authn.Authenticator
	inner  http.RoundTripper
	limits limits.Limits

	// repos holds one client on an authenticated transport per
	// repository: registry tokens are scoped to a repository, and reusing
	// the transport reuses its token.
	repos  *lru.Cache[string, *http.Client]
	flight singleflight.Group
	// fetches shares one manifest fetch among concurrent callers.
	fetches cache.Group[string, *oci.Manifest]
	// heads shares one HEAD by tag among concurrent callers.
	heads     cache.Group[headKey, string]
	manifests *cache.Bounded[string, *oci.Manifest] // by "<repo>@<digest>"
	// sizes keeps the size each "<repo>:<ref>" last had, so that a
	// manifest counts at its size against the budget before it is asked.
	sizes  *lru.Cache[string, int64]
	budget *budget.Budget
	// party is this upstream's in the budget: its share bounds what its
	// requests hold.
	party budget.Party
	// noReferrersAPIUntil (unix nanoseconds): until then, the upstream is
	// taken to have no referrers API and the fallback tag is read directly.
	noReferrersAPIUntil atomic.Int64
}

// New returns a Client for one upstream.
func New(o Options) (*Client, error) {
	u, err := url.Parse(o.URL)
	if err != nil {
		return nil, err
	}
	var regOpts []name.Option
	if o.Insecure {
		regOpts = append(regOpts, name.Insecure)
	}
	reg, err := name.NewRegistry(u.Host, regOpts...)
	if err != nil {
		return nil, fmt.Errorf("upstream %s: %w", o.Name, err)
	}
	o.Limits = o.Limits.WithDefaults()
	auth := authn.Anonymous
	if o.Username != "" {
		auth = &authn.Basic{Username: o.Username, Password: o.Password}
	}
	dialer := &net.Dialer{Timeout: o.Limits.DialTimeout, KeepAlive: 30 * time.Second}
	inner := &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           dialer.DialContext,
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          256,
		MaxIdleConnsPerHost:   64, // the default of 2 starves a proxy under load
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   10 * time.Second,
		ResponseHeaderTimeout: o.Limits.ResponseTimeout,
		ExpectContinueTimeout: time.Second,
		TLSClientConfig:       &tls.Config{InsecureSkipVerify: o.Insecure && u.Scheme == "https"}, //nolint:gosec // opt-in, for labs
	}
	repos, _ := lru.New[string, *http.Client](1024)
	sizes, _ := lru.New[string, int64](16384)
	return &Client{
		manifests: cache.NewBounded[string](o.Limits.ManifestCacheBytes, manifestFootprint),
		sizes:     sizes,
		budget:    o.Budget,
		party:     budget.UpstreamParty(o.Name),
		name:      o.Name,
		base:      &url.URL{Scheme: u.Scheme, Host: u.Host},
		root:      (&url.URL{Scheme: u.Scheme, Host: u.Host, Path: "/v2/"}).String(),
		reg:       reg,
		auth:      auth,
		inner:     inner,
		limits:    o.Limits,
		repos:     repos,
	}, nil
}

// Name is the upstream's configured name.
func (c *Client) Name() string { return c.name }

// Limits are the bounds the client reads with.
func (c *Client) Limits() limits.Limits { return c.limits }

// transport returns the client of repo's authenticated transport, doing
// the token handshake once per repository for all concurrent callers.
func (c *Client) transport(ctx context.Context, repo string) (*http.Client, error) {
	if hc, ok := c.repos.Get(repo); ok {
		return hc, nil
	}
	v, err, _ := c.flight.Do(repo, func() (any, error) {
		// Shared by every waiting caller: one caller hanging up must not
		// fail the handshake for the others.
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.limits.ResponseTimeout)
		defer cancel()
		r, err := name.NewRepository(c.reg.RegistryStr() + "/" + repo)
		if err != nil {
			return nil, err
		}
		rt, err := transport.NewWithContext(ctx, c.reg, c.auth, c.inner, []string{r.Scope(transport.PullScope)})
		if err != nil {
			return nil, err
		}
		hc := &http.Client{Transport: rt, CheckRedirect: checkRedirect}
		c.repos.Add(repo, hc)
		return hc, nil
	})
	if err != nil {
		return nil, &Error{Upstream: c.name, Op: "authenticate", Err: err}
	}
	return v.(*http.Client), nil
}

// Do sends method to /v2/<repo>/<suffix> on the upstream with the given
// query and headers, authenticated for repo, following the upstream's
// redirects (blob stores and CDNs) but never from https to http; the
// credential goes to the upstream's own host only. The caller closes the body. A response
// of any status is returned as is; an error means no response was had.
func (c *Client) Do(ctx context.Context, method, repo, suffix, rawQuery string, header http.Header) (*http.Response, error) {
	client, err := c.transport(ctx, repo)
	if err != nil {
		return nil, err
	}
	var target string
	if plainPath(repo) && plainPath(suffix) && rawQuery == "" {
		// Repository names and references need no escaping: the URL in
		// one piece.
		target = c.root + repo + "/" + suffix
	} else {
		u := *c.base
		u.Path = "/v2/" + repo + "/" + suffix
		u.RawQuery = rawQuery
		target = u.String()
	}
	req, err := http.NewRequestWithContext(ctx, method, target, nil)
	if err != nil {
		return nil, err
	}
	for k, vs := range header {
		req.Header[k] = vs
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, &Error{Upstream: c.name, Op: method + " " + suffix, Err: err}
	}
	return resp, nil
}

// plainPath reports whether s needs no escaping in a URL's path: the
// characters of repository names, tags and digests.
func plainPath(s string) bool {
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c == '/', c == '.', c == '_', c == '-', c == ':':
		default:
			return false
		}
	}
	return true
}

// checkRedirect refuses long chains, other schemes and downgrades. The
// credential never follows a redirect to another host: the authenticating
// transport adds it only for the upstream's host, and http.Client drops
// the headers it copies when the host changes.
func checkRedirect(req *http.Request, via []*http.Request) error {
	if len(via) >= 5 {
		return errors.New("more than 5 redirects")
	}
	if req.URL.Scheme != "https" && req.URL.Scheme != "http" {
		return fmt.Errorf("redirect to a %s URL", req.URL.Scheme)
	}
	if req.URL.Scheme == "http" && slices.ContainsFunc(via, func(r *http.Request) bool { return r.URL.Scheme == "https" }) {
		return fmt.Errorf("refusing a redirect from https to plain http (%s)", req.URL.Redacted())
	}
	return nil
}

// Error is a failure to get an answer from an upstream, or an answer that is
// neither success nor "not found". It means "could not verify", never "denied".
type Error struct {
	Upstream string
	Op       string
	// Status is the upstream's HTTP status, 0 when there was no response.
	Status int
	// RetryAfter is the upstream's Retry-After header on a 429.
	RetryAfter string
	Err        error
}

func (e *Error) Error() string {
	if e.Status != 0 {
		return fmt.Sprintf("upstream %s: %s: HTTP %d: %v", e.Upstream, e.Op, e.Status, e.Err)
	}
	return fmt.Sprintf("upstream %s: %s: %v", e.Upstream, e.Op, e.Err)
}

func (e *Error) Unwrap() error { return e.Err }

// ErrNotFound is wrapped by errors for manifests and blobs the upstream does
// not have.
var ErrNotFound = errors.New("not found")

// StatusError turns an unexpected response into an *Error, reading a little
// of the body for the message; a 404 wraps ErrNotFound.
func (c *Client) StatusError(op string, resp *http.Response) error {
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
	text := strings.TrimSpace(string(msg))
	if text == "" {
		text = http.StatusText(resp.StatusCode)
	}
	err := errors.New(text)
	if resp.StatusCode == http.StatusNotFound {
		err = ErrNotFound
	}
	return &Error{Upstream: c.name, Op: op, Status: resp.StatusCode, RetryAfter: resp.Header.Get("Retry-After"), Err: err}
}

// FailureKind names, for metrics, what went wrong in an upstream
// call: "" when nothing did, when the upstream answered "not found" (an
// answer, not a failure), or when the client hung up.
func FailureKind(err error) string {
	var ue *Error
	switch {
	case err == nil, errors.Is(err, ErrNotFound), errors.Is(err, context.Canceled):
		return ""
	case errors.Is(err, context.DeadlineExceeded):
		return "timeout"
	case errors.Is(err, ErrManifestTooLarge):
		return "too_large"
	case errors.Is(err, ErrDigestMismatch):
		return "digest_mismatch"
	case errors.Is(err, oci.ErrInvalidManifest):
		return "invalid_manifest"
	case !errors.As(err, &ue):
		return "connection"
	case ue.Op == "authenticate":
		return "auth"
	case ue.Status == 0:
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return "timeout"
		}
		return "connection"
	case ue.Status == http.StatusTooManyRequests:
		return "rate_limited"
	case ue.Status == http.StatusUnauthorized, ue.Status == http.StatusForbidden:
		return "unauthorized"
	case ue.Status >= 500:
		return "server_error"
	default:
		return "unexpected_status"
	}
}

// manifestFootprint estimates the memory a cached manifest holds: its bytes,
// and the parsed descriptors with their annotations, which take about twice
// as much again.
func manifestFootprint(m *oci.Manifest) int64 { return 3*int64(len(m.Raw)) + 1024 }
