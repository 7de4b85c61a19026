package proxy_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/authz-proxy/authz-proxy/internal/limits"
	"github.com/authz-proxy/authz-proxy/internal/testkit"
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
	for _, tt := range []struct {
		name  string
		store bool
		// ref is the reference of the nth request to the hanging upstream.
		ref func(n int) string
	}{
		{"distinct tags, no store", false, func(n int) string { return fmt.Sprintf("t%d", n) }},
		{"distinct digests, with a store", true, func(n int) string { return fmt.Sprintf("sha256:%064x", n+1) }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			slow := newHanging()
			opts := []envOption{withUpstreams("lab", "slow", slow), withLimits(limits.Limits{ResponseTimeout: time.Minute}, 10*time.Second),
				// A budget of 32 MiB: 16 MiB for each upstream, 4
				// requests for manifests never seen.
				withConfigLimits("maxManifestBytesInFlight: 33554432")}
			if tt.store {
				opts = append(opts, withStore(tempStore(t)))
			}
			e := newEnv(t, opts...)
			var wg sync.WaitGroup
			t.Cleanup(wg.Wait)
			t.Cleanup(slow.stop) // first
			for i := range 40 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					resp, err := http.Get(e.proxy.URL + "/v2/slow/x/manifests/" + tt.ref(i))
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
			// While it holds its share, first pulls of new signed images
			// from the healthy upstream (manifests never seen: counted at
			// 4 MiB) are served.
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
		})
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

// trickleHead is what trickling sends at once.
var trickleHead = make([]byte, 4<<20+512<<10)

// trickling is an upstream front that sends the first 4.5 MiB of any blob
// at once, then a byte every 10 s: a slow upstream, or a hostile one.
func trickling(e *env) func(http.ResponseWriter, *http.Request) bool {
	done := make(chan struct{})
	e.t.Cleanup(func() { close(done) }) // first: the upstream then closes at once
	return func(w http.ResponseWriter, r *http.Request) bool {
		if r.Method != http.MethodGet || !strings.Contains(r.URL.Path, "/blobs/sha256:") {
			return false
		}
		w.Header().Set("Content-Length", fmt.Sprint(len(trickleHead)+1024))
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write(trickleHead)
		for range 1024 {
			select {
			case <-r.Context().Done():
				return true
			case <-done:
				return true
			case <-time.After(10 * time.Second):
			}
			if _, err := w.Write([]byte{0}); err != nil {
				return true
			}
			http.NewResponseController(w).Flush()
		}
		return true
	}
}

func TestAbandonedFillsKeepNoWindowAndStayWithinTheirBound(t *testing.T) {
	e := newStoreEnv(t, t.TempDir())
	f := trickling(e.env)
	e.front.Store(&f)
	runtime.GC()
	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	// 150 clients ask for distinct blobs and hang up after a second.
	var wg sync.WaitGroup
	for i := range 150 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, e.proxy.URL+fmt.Sprintf("/v2/lab/open/big/blobs/sha256:%064x", i+1), nil)
			if resp, err := http.DefaultClient.Do(req); err == nil {
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
		}()
	}
	wg.Wait()
	// The proxy sees each hang-up, and the fills it cancelled to make room
	// end (each is out of the count at once, its goroutine soon after).
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(10 * time.Millisecond) {
		st := e.store.Stats()
		if st.WindowBytes == 0 && int(st.FillsInFlight) <= st.MaxFillsPerUpstream {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("abandoned fills still hold %d window bytes; %d fills in flight, the upstream's share is %d", st.WindowBytes, st.FillsInFlight, st.MaxFillsPerUpstream)
		}
	}
	runtime.GC()
	runtime.GC()
	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	if grew := int64(after.HeapInuse) - int64(before.HeapInuse); grew > 64<<20 {
		t.Errorf("the heap grew by %d MiB for 150 abandoned fills, want under 64", grew>>20)
	}
	// A client that waits still gets its blob from another upstream's
	// repository, and its pull is stored.
	l := e.image("signed/app", 1<<20)
	e.front.Store(nil)
	if resp, _, err := e.pull(http.MethodGet, blobPath("signed/app", l)); err != nil || resp.StatusCode != 200 {
		t.Fatalf("a pull while 150 fills were abandoned: %v", err)
	}
}

// The decision log's queue is shared by the clients as the proxy names
// them in every other share (its source address here): while the disk
// stalls, a client whose lines fill its share waits for its next answer,
// and another client's pull is answered meanwhile.
func TestAClientWhoseDecisionLinesFillItsShareNeverHoldsUpAnothersPull(t *testing.T) {
	gate := make(chan struct{})
	write := sync.OnceFunc(func() { close(gate) })
	// Written before the log's writer is waited for, whatever failed.
	defer write()
	e := newEnv(t, withStalledAuditQueue(16, gate)) // 2 lines a client
	open := e.push("open/app:v1")
	url := e.proxy.URL + "/v2/lab/open/app/manifests/" + open.String()
	for i := range 2 {
		if code, err := getFrom(t, "127.0.0.2", url); err != nil || code != http.StatusOK {
			t.Fatalf("pull %d of the first client, its line queued: %d, %v", i+1, code, err)
		}
	}
	third := make(chan int, 1)
	go func() {
		code, _ := getFrom(t, "127.0.0.2", url)
		third <- code
	}()
	if code, err := getFrom(t, "127.0.0.3", url); err != nil || code != http.StatusOK {
		t.Fatalf("another client, while the first is at its share of the stalled log: %d, %v", code, err)
	}
	select {
	case code := <-third:
		t.Fatalf("a third pull of a client whose 2 lines fill its share was answered (%d) before the disk wrote them", code)
	case <-time.After(200 * time.Millisecond):
	}
	write()
	if code := <-third; code != http.StatusOK {
		t.Errorf("once the disk wrote: %d", code)
	}
	testkit.WaitFor(t, "the decision log to hold the 4 pulls' lines", func() bool {
		return strings.Count(e.decisions.String(), `"digest":"`+open.String()+`"`) >= 4
	})
}
