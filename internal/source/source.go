package source

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	lru "github.com/hashicorp/golang-lru/v2"

	"github.com/authz-proxy/authz-proxy/internal/budget"
	"github.com/authz-proxy/authz-proxy/internal/metrics"
	"github.com/authz-proxy/authz-proxy/internal/oci"
	"github.com/authz-proxy/authz-proxy/internal/store"
	"github.com/authz-proxy/authz-proxy/internal/upstream"
)

// Options configure a Source.
type Options struct {
	// Upstream is the upstream's client; required.
	Upstream *upstream.Client
	// Store, if not nil, keeps what the upstream served: manifests by
	// digest, blobs, the evidence found for a digest, the last resolution
	// of each tag; what was pulled before is then served, and judged
	// again, while the upstream is down.
	Store *store.Store
	// Tags say how tags are resolved.
	Tags Tags
	// Now is the clock tags' resolutions are dated by; nil: time.Now.
	Now func() time.Time
	// Metrics, if not nil, receives the latency and failures of every
	// upstream call, evidence read from the store and stale tags.
	Metrics *metrics.Metrics
	// Logger receives a line when the upstream begins failing; nil: none.
	Logger *slog.Logger
}

// Source is one upstream as the proxy reads it. Its methods are safe for
// concurrent use.
type Source struct {
	up      *upstream.Client
	name    string
	store   *store.Store
	tags    Tags
	metrics *metrics.Metrics
	// book holds the last resolution of each tag.
	book *tagBook
	// kept are the digests of the evidence notes this process wrote
	// last, by note; nil without a store.
	kept *lru.Cache[string, kept]
	// recognized keeps artifact checks whose answer follows from the
	// bytes alone, by manifest digest.
	recognized *lru.Cache[string, oci.Recognition]
	// outageUntil (unix nanoseconds): until then the upstream is taken to
	// be failing, and the store answers first; outageSince is when that
	// outage began.
	outageUntil, outageSince atomic.Int64
	log                      *slog.Logger
}

var _ interface {
	Evidence(ctx context.Context, repo, digest string, want oci.Want) (*oci.Evidence, error)
	Manifest(ctx context.Context, repo, ref string) (*oci.Manifest, error)
	Recognize(ctx context.Context, repo string, m *oci.Manifest) (oci.Recognition, error)
} = (*Source)(nil)

// New returns the Source of o.Upstream.
func New(o Options) (*Source, error) {
	if o.Upstream == nil {
		return nil, errors.New("source: Upstream is required")
	}
	recognized, err := lru.New[string, oci.Recognition](4096)
	if err != nil {
		return nil, err
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	s := &Source{up: o.Upstream, name: o.Upstream.Name(), store: o.Store, tags: o.Tags, metrics: o.Metrics, recognized: recognized, log: o.Logger, book: newTagBook(o.Store, o.Now)}
	if o.Store != nil {
		if s.kept, err = lru.New[string, kept](1 << 16); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// Name is the upstream's configured name.
func (s *Source) Name() string { return s.name }

// Upstream is the client this source reads through.
func (s *Source) Upstream() *upstream.Client { return s.up }

// Tags are how this source resolves tags.
func (s *Source) Tags() Tags { return s.tags }

func (s *Source) scope(repo string) store.Scope {
	return store.Scope{Upstream: s.name, Repository: repo}
}

// done records the latency and any failure of one upstream call of kind
// op that began at start.
func (s *Source) done(op string, start time.Time, err error) {
	s.metrics.Upstream(s.name, op, time.Since(start), upstream.FailureKind(err))
}

// outagePause is how long after the upstream failed the store's answers
// are used without asking it first: an upstream that hangs costs one
// timeout per pause, not one per request.
const outagePause = 5 * time.Second

// storeReadTimeout bounds one read of the store on behalf of an upstream
// that failed.
const storeReadTimeout = 5 * time.Second

// outage reports whether the upstream failed less than outagePause ago.
func (s *Source) outage() bool {
	return s.store != nil && time.Now().UnixNano() < s.outageUntil.Load()
}

// Outage reports whether the upstream is taken to be failing now, and
// since when; never without a store, which alone answers for it.
func (s *Source) Outage() (since time.Time, ok bool) {
	if !s.outage() {
		return time.Time{}, false
	}
	return time.Unix(0, s.outageSince.Load()), true
}

// failed notes that the upstream could not answer a request the proxy
// needed (err): a failure of its own (no connection, no answer in time, a
// 5xx) opens an outage, or prolongs it, during which the store answers
// first; a 429, which one client's traffic may cause, does not.
func (s *Source) failed(err error) {
	if s.store == nil || rateLimited(err) {
		return
	}
	now := time.Now()
	if now.UnixNano() >= s.outageUntil.Load() {
		s.outageSince.Store(now.UnixNano())
		s.log.Warn("upstream failing: the store answers first, asking it again every few seconds", "upstream", s.name, "err", err.Error())
	}
	s.outageUntil.Store(now.Add(outagePause).UnixNano())
}

// rateLimited reports whether err is the upstream's 429.
func rateLimited(err error) bool {
	var ue *upstream.Error
	var te *transport.Error
	return errors.As(err, &ue) && ue.Status == http.StatusTooManyRequests || errors.As(err, &te) && te.StatusCode == http.StatusTooManyRequests
}

// storeContext is a context of its own for reading the store after the
// upstream failed: the upstream may have used up the caller's time.
func storeContext(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), storeReadTimeout)
}

// unavailable reports whether err means the upstream could not answer:
// no connection, no answer in time, a 5xx or a 429. Those are the failures
// the store answers for; a 404, a refused credential or bad content are
// answers.
func unavailable(err error) bool {
	var ue *upstream.Error
	switch {
	case err == nil, errors.Is(err, budget.ErrExhausted), errors.Is(err, context.Canceled):
		return false
	case !errors.As(err, &ue):
		return errors.Is(err, context.DeadlineExceeded)
	case ue.Status == 0:
		// The token handshake's refusal is an answer too.
		var te *transport.Error
		return !errors.As(err, &te) || te.StatusCode >= 500 || te.StatusCode == http.StatusTooManyRequests
	default:
		return ue.Status >= 500 || ue.Status == http.StatusTooManyRequests
	}
}
