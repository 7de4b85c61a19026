package proxy_test

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"regexp"
	"runtime"
	"strings"
	"testing"
	"time"
)

// bigManifest is an OCI image manifest of about size bytes (an annotation
// pads it), distinct for each n.
func bigManifest(n, size int) []byte {
	return []byte(fmt.Sprintf(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%064x","size":2},"layers":[],"annotations":{"n":"%d","pad":"%s"}}`,
		n, n, strings.Repeat("x", size)))
}

// padding is the shared bulk of streamed big manifests.
var padding = bytes.Repeat([]byte("x"), 4<<20)

// writeBigManifest writes bigManifest(n, size) (size at most 4 MiB) to w
// without holding it whole: the upstream of a test is in the proxy's
// process, and its memory must not count as the proxy's.
func writeBigManifest(w http.ResponseWriter, n, size int) {
	head := fmt.Sprintf(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%064x","size":2},"layers":[],"annotations":{"n":"%d","pad":"`, n, n)
	tail := `"}}`
	w.Header().Set("Content-Type", "application/vnd.oci.image.manifest.v1+json")
	w.Header().Set("Content-Length", fmt.Sprint(len(head)+size+len(tail)))
	_, _ = io.WriteString(w, head)
	_, _ = w.Write(padding[:size])
	_, _ = io.WriteString(w, tail)
}

// smallSendBuffers accepts connections with a small send buffer.
type smallSendBuffers struct{ net.Listener }

func (l smallSendBuffers) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetWriteBuffer(8192)
	}
	return c, err
}

// TestSlowClientsCannotHoldMoreThanTheManifestBudget: clients that ask for
// large manifests and do not read hold at most the budget; past it large
// (or never seen) manifests are refused with Retry-After, everyday pulls
// are still served, and a slow client lets go at the write timeout.
func TestSlowClientsCannotHoldMoreThanTheManifestBudget(t *testing.T) {
	const mib = 1 << 20
	// One client's share is the whole budget here: the budget is under
	// test (TestAClientThatReadsNothingHoldsItsShareUntilTheSendTimeout
	// tests the share).
	e := newEnv(t, withConfigLimits("maxManifestBytesInFlight: 16777216, maxManifestBytesPerClient: 16777216, writeTimeout: 10s, sendTimeout: 10s"))
	d := e.push("signed/app:v1")
	e.signTag("signed/app", "ci", d, d)
	// An everyday pull is of an image pulled before: its size is known.
	if resp := e.get(http.MethodGet, "/v2/lab/signed/app/manifests/v1"); resp.StatusCode != http.StatusOK {
		t.Fatalf("everyday pull: %d", resp.StatusCode)
	}
	f := func(w http.ResponseWriter, r *http.Request) bool {
		var n int
		if _, err := fmt.Sscanf(r.URL.Path, "/v2/open/big/manifests/big-%d", &n); err != nil {
			return false
		}
		body := bigManifest(n, 3*mib)
		w.Header().Set("Content-Type", "application/vnd.oci.image.manifest.v1+json")
		w.Header().Set("Content-Length", fmt.Sprint(len(body)))
		_, _ = w.Write(body)
		return true
	}
	e.front.Store(&f)
	// The proxy's side of each connection gets a small send buffer, so that
	// a client that does not read blocks the write at once, as a full
	// kernel buffer does under a real flood.
	srv := httptest.NewUnstartedServer(e.server)
	srv.Listener = smallSendBuffers{srv.Listener}
	srv.Start()
	t.Cleanup(srv.Close)
	host := strings.TrimPrefix(srv.URL, "http://")
	// 16 MiB, of which large manifests may take 14: four of 3 MiB.
	for n := range 4 {
		rawGet(t, host, fmt.Sprintf("/v2/lab/open/big/manifests/big-%d", n), "Accept: application/vnd.oci.image.manifest.v1+json\r\n")
	}
	// A bound on the wait, not a measure: under the race detector on a
	// loaded 2-core machine, 10 s was not always enough.
	deadline := time.Now().Add(60 * time.Second)
	// Each slow client's manifest is judged (a decision is logged) before
	// it is written.
	allowed := regexp.MustCompile(`"decision":"allow","image":"lab/open/big"`)
	for served := 0; served < 4; served = len(allowed.FindAllString(e.decisions.String(), -1)) {
		if time.Now().After(deadline) {
			t.Fatalf("%d slow clients are being answered, want 4", served)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if held, _ := value(scrape(t, e.metrics.Handler()), "authz_proxy_manifest_bytes_in_flight"); held < 4*3*mib {
		t.Fatalf("the slow clients hold %v bytes, want 4 manifests of 3 MiB", held)
	}
	resp := e.get(http.MethodGet, "/v2/lab/open/big/manifests/big-99")
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("a large manifest while slow clients hold the budget: %d (Retry-After %q), want 503 with Retry-After", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
	if resp := e.get(http.MethodGet, "/v2/lab/signed/app/manifests/v1"); resp.StatusCode != http.StatusOK {
		t.Fatalf("an everyday pull while slow clients hold the budget: %d", resp.StatusCode)
	}
	if log := e.decisions.String(); !strings.Contains(log, `"decision":"error"`) || !strings.Contains(log, "the proxy is busy") {
		t.Errorf("no error record says the proxy was busy:\n%s", log)
	}
	// The write timeout frees the budget.
	deadline = time.Now().Add(10 * time.Second)
	for held := 1.0; held > 0; {
		if time.Now().After(deadline) {
			t.Fatalf("past the write timeout, %v bytes are still held", held)
		}
		time.Sleep(50 * time.Millisecond)
		held, _ = value(scrape(t, e.metrics.Handler()), "authz_proxy_manifest_bytes_in_flight")
	}
	if resp := e.get(http.MethodGet, "/v2/lab/open/big/manifests/big-100"); resp.StatusCode != http.StatusOK {
		t.Fatalf("after the write timeout, a large manifest gets %d", resp.StatusCode)
	}
}

func TestAClientThatReadsNothingHoldsItsShareUntilTheSendTimeout(t *testing.T) {
	const mib = 1 << 20
	e := newEnv(t, withConfigLimits("sendTimeout: 2s"))
	f := func(w http.ResponseWriter, r *http.Request) bool {
		var n int
		if _, err := fmt.Sscanf(r.URL.Path, "/v2/open/big/manifests/big-%d", &n); err != nil {
			return false
		}
		writeBigManifest(w, n, 4*mib-1024)
		return true
	}
	e.front.Store(&f)
	srv := httptest.NewUnstartedServer(e.server)
	srv.Listener = smallSendBuffers{srv.Listener}
	srv.Start()
	t.Cleanup(srv.Close)
	host := strings.TrimPrefix(srv.URL, "http://")
	// One client opens 300 connections, each asking for a distinct 4 MiB
	// manifest, and reads nothing.
	var conns []net.Conn
	for n := range 300 {
		conns = append(conns, rawGet(t, host, fmt.Sprintf("/v2/lab/open/big/manifests/big-%d", n), "Accept: application/vnd.oci.image.manifest.v1+json\r\n"))
	}
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	saturated := func() bool {
		v, _ := value(scrape(t, e.metrics.Handler()), "authz_proxy_share_saturated", "bound", "manifest_bytes", "party", "client", "upstream", "")
		return v >= 1
	}
	for deadline := time.Now().Add(30 * time.Second); !saturated(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the client that reads nothing never held its share")
		}
	}
	if held, _ := value(scrape(t, e.metrics.Handler()), "authz_proxy_share_in_use", "bound", "manifest_bytes", "party", "client", "upstream", ""); held > 32*mib {
		t.Errorf("one client holds %v bytes, more than its share of 32 MiB", held)
	}
	// Meanwhile another client's first pull of a new image is answered,
	// and the memory held stays bounded.
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	if ms.HeapInuse > 512<<20 {
		t.Errorf("the heap holds %d MiB while one client reads nothing, want under 512", ms.HeapInuse>>20)
	}
	e.signed("signed/fresh:v1")
	if rec := serveRecorded(e, httptestRequestFrom(e, "10.1.2.3:4567", "/v2/lab/signed/fresh/manifests/v1")); rec.Code != http.StatusOK {
		t.Fatalf("another client's pull while one holds its share: %d %s", rec.Code, rec.Body)
	}
	// At the send timeout the client that reads nothing is let go: what
	// it held is released, its connections closed, and its next pull is
	// answered.
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if v, _ := value(scrape(t, e.metrics.Handler()), "authz_proxy_manifest_bytes_in_flight"); v == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("past the send timeout, bytes are still held")
		}
	}
	if got, _ := value(scrape(t, e.metrics.Handler()), "authz_proxy_sends_abandoned_total", "kind", "manifests"); got < 8 {
		t.Errorf("authz_proxy_sends_abandoned_total{kind=manifests} = %v, want the share's 8 responses at least", got)
	}
	if resp := e.get(http.MethodGet, "/v2/lab/open/big/manifests/big-1000"); resp.StatusCode != http.StatusOK {
		t.Fatalf("the same client's next pull: %d", resp.StatusCode)
	}
}
