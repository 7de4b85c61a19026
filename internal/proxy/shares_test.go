package proxy_test

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/authz-proxy/authz-proxy/internal/limits"
)

// hanging is an upstream that holds every manifest request until released
// (or the request ends), having said nothing.
type hanging struct {
	release chan struct{}
	once    sync.Once
	mu      sync.Mutex
	seen    int
}

func newHanging() *hanging { return &hanging{release: make(chan struct{})} }

func (h *hanging) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == "/v2/" {
		return
	}
	h.mu.Lock()
	h.seen++
	h.mu.Unlock()
	select {
	case <-h.release:
	case <-r.Context().Done():
	}
	http.Error(w, "", http.StatusServiceUnavailable)
}

func (h *hanging) stop() { h.once.Do(func() { close(h.release) }) }

func (h *hanging) requests() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.seen
}

func TestAHangingUpstreamHoldsItsOwnShareNeverAnotherUpstreams(t *testing.T) {
	slow := newHanging()
	// A budget of 32 MiB: 16 MiB for each upstream, 8 of them 4 MiB
	// requests for manifests never seen.
	e := newEnv(t, withUpstreams("lab", "slow", slow), withLimits(limits.Limits{ResponseTimeout: time.Minute}, 10*time.Second),
		withConfigLimits("maxManifestBytesInFlight: 33554432"))
	var wg sync.WaitGroup
	t.Cleanup(wg.Wait)
	t.Cleanup(slow.stop) // first
	for i := range 40 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := http.Get(e.proxy.URL + fmt.Sprintf("/v2/slow/x/manifests/t%d", i))
			if err == nil {
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
		}()
	}
	for deadline := time.Now().Add(time.Minute); slow.requests() < 4; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the hanging upstream was never asked")
		}
	}
	// While it holds its share, first pulls of new signed images from
	// the healthy upstream (manifests never seen: counted at 4 MiB) are
	// served.
	for i := range 5 {
		d := e.signed(fmt.Sprintf("signed/new%d:v1", i))
		e.manifestOK(fmt.Sprintf("/v2/lab/signed/new%d/manifests/v1", i), d)
	}
	select {
	case <-slow.release:
		t.Fatal("the hanging upstream was released before the healthy pulls ended")
	default:
	}
	fams := scrape(t, e.metrics.Handler())
	if got, _ := value(fams, "authz_proxy_share_in_use", "bound", "manifest_bytes", "party", "upstream", "upstream", "slow"); got > 16<<20 {
		t.Errorf("the hanging upstream holds %v bytes, more than its share", got)
	}
}

func TestAClientOverItsRateGets429WithRetryAfterAndAnotherDoesNot(t *testing.T) {
	e := newEnv(t, withConfigLimits("clientRate: 1, clientBurst: 3"))
	var codes []int
	for range 5 {
		resp := e.get(http.MethodGet, "/v2/")
		codes = append(codes, resp.StatusCode)
		if resp.StatusCode == http.StatusTooManyRequests {
			if ra := resp.Header.Get("Retry-After"); ra != "1" {
				t.Errorf("Retry-After %q, want 1", ra)
			}
			body, _ := io.ReadAll(resp.Body)
			if !strings.Contains(string(body), "TOOMANYREQUESTS") || !strings.Contains(string(body), "limits.clientRate") {
				t.Errorf("429 body: %s", body)
			}
		}
	}
	if fmt.Sprint(codes) != "[200 200 200 429 429]" {
		t.Errorf("statuses %v, want the burst of 3 then 429", codes)
	}
	// Another client (another source address) has its own bucket.
	req := httptestRequestFrom(e, "10.9.8.7:1234", "/v2/")
	if rec := serveRecorded(e, req); rec.Code != http.StatusOK {
		t.Errorf("another client: %d", rec.Code)
	}
	if got, _ := value(scrape(t, e.metrics.Handler()), "authz_proxy_rate_limited_total"); got != 2 {
		t.Errorf("authz_proxy_rate_limited_total = %v, want 2", got)
	}
}

// httptestRequestFrom is a GET of path as a client at addr sends it.
func httptestRequestFrom(_ *env, addr, path string) *http.Request {
	r := httptest.NewRequest(http.MethodGet, path, nil)
	r.RemoteAddr = addr
	return r
}

// serveRecorded serves r with the env's proxy in process.
func serveRecorded(e *env, r *http.Request) *httptest.ResponseRecorder {
	rec := httptest.NewRecorder()
	e.server.ServeHTTP(rec, r)
	return rec
}
