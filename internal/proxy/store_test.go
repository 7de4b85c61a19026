package proxy_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/authz-proxy/authz-proxy/internal/source"
	"github.com/authz-proxy/authz-proxy/internal/store"
	"github.com/authz-proxy/authz-proxy/internal/testkit"
)

// storeEnv is an env whose proxy keeps blobs in a filesystem store at root.
type storeEnv struct {
	*env
	store *store.Store
	root  string
	logs  *testkit.Buffer
}

func newStoreEnv(t *testing.T, root string, opts ...envOption) *storeEnv {
	t.Helper()
	return withRestartableStore(t, root, func(more ...envOption) *env { return newEnv(t, append(opts, more...)...) })
}

// withRestartableStore is the env that mk makes with a filesystem store at
// root, which restart opens again.
func withRestartableStore(t *testing.T, root string, mk func(...envOption) *env) *storeEnv {
	t.Helper()
	d, err := store.NewDriver(context.Background(), store.Filesystem, map[string]any{"rootdirectory": root})
	if err != nil {
		t.Fatal(err)
	}
	logs := &testkit.Buffer{}
	st, err := store.New(context.Background(), store.Options{Driver: d, MaxSize: 1 << 30, Owner: "test", Logger: slog.New(slog.NewTextHandler(logs, nil)), SweepInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return &storeEnv{env: mk(withStore(st)), store: st, root: root, logs: logs}
}

// image pushes a signed image of one layer of size bytes to repo:v1 and
// returns the layer.
func (e *storeEnv) image(repo string, size int64) v1.Descriptor {
	e.t.Helper()
	img, err := random.Image(size, 1)
	if err != nil {
		e.t.Fatal(err)
	}
	d := e.write(repo+":v1", img)
	e.signTag(repo, "ci", d, d)
	m, err := img.Manifest()
	if err != nil {
		e.t.Fatal(err)
	}
	return m.Layers[0]
}

// pull reads a blob through the proxy whole; it returns the status and
// the body, and whether the body ended cleanly.
func (e *storeEnv) pull(method, path string, header ...string) (*http.Response, []byte, error) {
	e.t.Helper()
	req, err := http.NewRequest(method, e.proxy.URL+path, nil)
	if err != nil {
		e.t.Fatal(err)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil { // cut before the status line
		return nil, nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp, body, err
}

// settle waits until the store runs no fill: the last byte reaches the
// clients before the blob is moved into place.
func (e *storeEnv) settle() {
	e.t.Helper()
	for deadline := time.Now().Add(time.Minute); e.store.Stats().FillsInFlight > 0; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			e.t.Fatal("fills still running after a minute")
		}
	}
}

func blobPath(repo string, l v1.Descriptor) string {
	return "/v2/lab/" + repo + "/blobs/" + l.Digest.String()
}

func TestBlobsAreServedFromTheStoreAfterTheFirstPull(t *testing.T) {
	e := newStoreEnv(t, t.TempDir())
	l := e.image("signed/app", 1<<20)
	path := blobPath("signed/app", l)
	upstreamPath := "/v2/signed/app/blobs/" + l.Digest.String()
	pushed := e.count(http.MethodHead, upstreamPath) // pushing asks whether it is there
	var first []byte
	for i := range 3 {
		resp, body, err := e.pull(http.MethodGet, path)
		if err != nil || resp.StatusCode != 200 || int64(len(body)) != l.Size {
			t.Fatalf("pull %d: %d, %d bytes, %v", i, resp.StatusCode, len(body), err)
		}
		if h, _, _ := v1.SHA256(bytes.NewReader(body)); h != l.Digest {
			t.Fatalf("pull %d: bytes hash to %s", i, h)
		}
		if resp.Header.Get("Docker-Content-Digest") != l.Digest.String() || resp.Header.Get("Content-Length") != fmt.Sprint(l.Size) {
			t.Errorf("pull %d headers: %v", i, resp.Header)
		}
		first = body
		e.settle()
	}
	if n := e.count(http.MethodGet, upstreamPath); n != 1 {
		t.Errorf("%d upstream GETs for three pulls, want 1", n)
	}
	head, _, _ := e.pull(http.MethodHead, path)
	if head.StatusCode != 200 || head.Header.Get("Content-Length") != fmt.Sprint(l.Size) || head.Header.Get("Accept-Ranges") != "bytes" {
		t.Errorf("HEAD from the store: %d %v", head.StatusCode, head.Header)
	}
	for _, tt := range []struct {
		rng    string
		status int
		want   []byte
		cr     string
	}{
		{"bytes=10-19", 206, first[10:20], fmt.Sprintf("bytes 10-19/%d", l.Size)},
		{fmt.Sprintf("bytes=%d-", l.Size-5), 206, first[l.Size-5:], fmt.Sprintf("bytes %d-%d/%d", l.Size-5, l.Size-1, l.Size)},
		{"bytes=-3", 206, first[l.Size-3:], fmt.Sprintf("bytes %d-%d/%d", l.Size-3, l.Size-1, l.Size)},
		{fmt.Sprintf("bytes=%d-", l.Size), 416, nil, fmt.Sprintf("bytes */%d", l.Size)},
		{"bytes=0-1,5-6", 200, first, ""},
	} {
		resp, body, err := e.pull(http.MethodGet, path, "Range", tt.rng)
		if err != nil || resp.StatusCode != tt.status || (tt.want != nil && !bytes.Equal(body, tt.want)) || resp.Header.Get("Content-Range") != tt.cr {
			t.Errorf("Range %s: %d %q (Content-Range %q), %v; want %d, Content-Range %q", tt.rng, resp.StatusCode, body, resp.Header.Get("Content-Range"), err, tt.status, tt.cr)
		}
	}
	if n := e.count(http.MethodGet, upstreamPath) + e.count(http.MethodHead, upstreamPath) - pushed; n != 1 {
		t.Errorf("%d upstream requests in all, want 1", n)
	}
	fams := scrape(t, e.metrics.Handler())
	for _, m := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"authz_proxy_store_requests_total", []string{"result", "hit"}, 3}, // two pulls, and a multi-range
		{"authz_proxy_store_requests_total", []string{"result", "miss"}, 1},
		{"authz_proxy_store_bytes_total", []string{"source", "upstream"}, float64(l.Size)},
		{"authz_proxy_store_fills_stored_total", nil, 1},
		{"authz_proxy_store_fills_in_flight", nil, 0},
		{"authz_proxy_store_fill_errors_total", []string{"reason", "digest"}, 0},
		{"authz_proxy_store_max_size_bytes", nil, 1 << 30},
	} {
		if got, ok := value(fams, m.name, m.labels...); !ok || got != m.want {
			t.Errorf("%s%v = %v (found %v), want %v", m.name, m.labels, got, ok, m.want)
		}
	}
	if got, _ := value(fams, "authz_proxy_store_bytes_total", "source", "store"); got < float64(2*l.Size) {
		t.Errorf("bytes from the store: %v, want at least %d", got, 2*l.Size)
	}
}

func TestConcurrentColdPullsOfOneBlobFetchItOnce(t *testing.T) {
	e := newStoreEnv(t, t.TempDir())
	l := e.image("signed/app", 8<<20)
	const clients = 32
	var wg sync.WaitGroup
	for i := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, body, err := e.pull(http.MethodGet, blobPath("signed/app", l))
			if err != nil || resp.StatusCode != 200 {
				t.Errorf("client %d: %d, %v", i, resp.StatusCode, err)
				return
			}
			if h, _, _ := v1.SHA256(bytes.NewReader(body)); h != l.Digest {
				t.Errorf("client %d: %d bytes hashing to %s", i, len(body), h)
			}
		}()
	}
	wg.Wait()
	if n := e.count(http.MethodGet, "/v2/signed/app/blobs/"+l.Digest.String()); n != 1 {
		t.Errorf("%d upstream GETs for %d concurrent cold pulls, want 1", n, clients)
	}
}

func TestAStoredBlobIsServedToAnotherRepositoryOnlyWhenItHoldsIt(t *testing.T) {
	e := newStoreEnv(t, t.TempDir())
	// Large enough that the store keeps its chunks' tags, which serve
	// ranges: they must not open another way in.
	l := e.image("signed/app", 2<<20)
	if resp, _, err := e.pull(http.MethodGet, blobPath("signed/app", l)); err != nil || resp.StatusCode != 200 {
		t.Fatalf("first pull: %d %v", resp.StatusCode, err)
	}
	e.settle()
	if resp, body, err := e.pull(http.MethodGet, blobPath("signed/app", l), "Range", "bytes=1000-1999"); err != nil || resp.StatusCode != http.StatusPartialContent || len(body) != 1000 {
		t.Fatalf("a range of the stored blob in its own repository: %d, %d bytes, %v", resp.StatusCode, len(body), err)
	}

	// The upstream keeps repositories apart, as registries with access
	// control do: the rival's repository does not have this layer.
	rival := "/v2/rival/app/blobs/" + l.Digest.String()
	asked := e.fault(pathHas(rival), func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusNotFound) })
	for _, tt := range []struct{ method, rng string }{{http.MethodGet, ""}, {http.MethodHead, ""}, {http.MethodGet, "bytes=1000-1999"}, {http.MethodGet, "bytes=0-"}} {
		resp, body, _ := e.pull(tt.method, "/v2/lab/rival/app/blobs/"+l.Digest.String(), "Range", tt.rng)
		if resp.StatusCode != http.StatusNotFound || len(body) >= 1000 {
			t.Errorf("%s (range %q) of another repository's stored blob: %d, %d bytes; want 404", tt.method, tt.rng, resp.StatusCode, len(body))
		}
	}
	if asked.Load() != 4 {
		t.Errorf("the upstream was asked %d times, want once per request", asked.Load())
	}

	// A repository that has it (the upstream says so) is served from the
	// store, without a fetch.
	e.front.Store(nil)
	resp, body, err := e.pull(http.MethodGet, "/v2/lab/mirror/app/blobs/"+l.Digest.String())
	if err != nil || resp.StatusCode != 200 || int64(len(body)) != l.Size {
		t.Fatalf("repository confirmed by the upstream: %d, %d bytes, %v", resp.StatusCode, len(body), err)
	}
	if e.count(http.MethodGet, "/v2/mirror/app/blobs/"+l.Digest.String()) != 0 || e.count(http.MethodHead, "/v2/mirror/app/blobs/"+l.Digest.String()) != 1 {
		t.Error("want one upstream HEAD and no GET for a confirmed repository")
	}

	// A manifest served for a repository links its layers: no upstream
	// request for them afterwards.
	d := e.write("signed/copy:v1", mustImage(t, e.env, "signed/app"))
	e.signTag("signed/copy", "ci", d, d)
	if resp := e.get(http.MethodGet, "/v2/lab/signed/copy/manifests/v1"); resp.StatusCode != 200 {
		t.Fatalf("manifest: %d", resp.StatusCode)
	}
	copyPath := "/v2/signed/copy/blobs/" + l.Digest.String()
	pushed := e.count(http.MethodGet, copyPath) + e.count(http.MethodHead, copyPath)
	if resp, _, err := e.pull(http.MethodGet, "/v2/lab"+strings.TrimPrefix(copyPath, "/v2")); err != nil || resp.StatusCode != 200 {
		t.Fatalf("linked layer: %d %v", resp.StatusCode, err)
	}
	if n := e.count(http.MethodGet, copyPath) + e.count(http.MethodHead, copyPath) - pushed; n != 0 {
		t.Errorf("%d upstream requests for a layer of a manifest the proxy served, want 0", n)
	}
}

// mustImage reads back the image at repo:v1 from the upstream.
func mustImage(t *testing.T, e *env, repo string) v1.Image {
	t.Helper()
	img, err := remote.Image(e.repo(repo).Tag("v1"))
	if err != nil {
		t.Fatal(err)
	}
	return img
}

func TestUpstreamBytesThatDoNotMatchTheDigestNeverReachAClientWhole(t *testing.T) {
	e := newStoreEnv(t, t.TempDir())
	l := e.image("signed/app", 1<<20)
	lie := bytes.Repeat([]byte{'x'}, int(l.Size))
	e.fault(pathHas("/blobs/"+l.Digest.String()), func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Length", fmt.Sprint(len(lie)))
		_, _ = w.Write(lie)
	})
	// The client's stream is cut, or, when the lie is found before the
	// status line, it gets an error status: never a whole 200.
	resp, body, err := e.pull(http.MethodGet, blobPath("signed/app", l))
	if err == nil && resp.StatusCode == http.StatusOK {
		t.Fatalf("lying upstream: %d, %d bytes, err %v: the client got a whole body", resp.StatusCode, len(body), err)
	}
	e.settle()
	e.front.Store(nil)
	resp, body, err = e.pull(http.MethodGet, blobPath("signed/app", l))
	if err != nil || resp.StatusCode != 200 || int64(len(body)) != l.Size {
		t.Fatalf("after the upstream mended: %d, %d bytes, %v", resp.StatusCode, len(body), err)
	}
	if n := e.count(http.MethodGet, "/v2/signed/app/blobs/"+l.Digest.String()); n != 2 {
		t.Errorf("%d upstream GETs, want 2: the lie was not stored", n)
	}
	if !strings.Contains(e.logs.String(), "do not match the digest") {
		t.Errorf("no warning logged: %s", e.logs.String())
	}
}

func TestAStoredBlobCorruptedOnDiskIsCutAndFetchedAgain(t *testing.T) {
	root := t.TempDir()
	e := newStoreEnv(t, root)
	l := e.image("signed/app", 1<<20)
	path := blobPath("signed/app", l)
	if resp, _, err := e.pull(http.MethodGet, path); err != nil || resp.StatusCode != 200 {
		t.Fatal(resp.StatusCode, err)
	}
	e.settle()
	data := filepath.Join(root, "content", "lab", "blobs", "sha256", l.Digest.Hex[:2], l.Digest.Hex, "data")
	b, err := os.ReadFile(data)
	if err != nil {
		t.Fatal(err)
	}
	b[100] ^= 0xff
	if err := os.WriteFile(data, b, 0o644); err != nil {
		t.Fatal(err)
	}
	resp, body, err := e.pull(http.MethodGet, path)
	if err == nil || int64(len(body)) >= l.Size {
		t.Fatalf("corrupted blob: %d, %d bytes, err %v: served whole", resp.StatusCode, len(body), err)
	}
	resp, body, err = e.pull(http.MethodGet, path)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("after the eviction: %d, %v", resp.StatusCode, err)
	}
	if h, _, _ := v1.SHA256(bytes.NewReader(body)); h != l.Digest {
		t.Fatal("after the eviction: wrong bytes")
	}
	if n := e.count(http.MethodGet, "/v2/signed/app/blobs/"+l.Digest.String()); n != 2 {
		t.Errorf("%d upstream GETs, want 2", n)
	}
	fams := scrape(t, e.metrics.Handler())
	if got, _ := value(fams, "authz_proxy_store_corrupt_total"); got != 1 {
		t.Errorf("authz_proxy_store_corrupt_total = %v", got)
	}
}

func TestAResumedPullOfABlobNotStoredIsServedByTheUpstreamAndStored(t *testing.T) {
	e := newStoreEnv(t, t.TempDir())
	l := e.image("signed/app", 1<<20)
	resp, body, err := e.pull(http.MethodGet, blobPath("signed/app", l), "Range", fmt.Sprintf("bytes=1000-%d", l.Size-1))
	if err != nil || resp.StatusCode != http.StatusPartialContent || int64(len(body)) != l.Size-1000 {
		t.Fatalf("resumed pull: %d, %d bytes, %v", resp.StatusCode, len(body), err)
	}
	e.settle()
	if st := e.store.Stats(); st.FillsStored != 1 {
		t.Errorf("the blob was not stored for the next pull: %+v", st)
	}
}

func TestAStoreThatFailsServesFromTheUpstreamWithAWarning(t *testing.T) {
	notADir := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(notADir, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	e := newStoreEnv(t, notADir)
	l := e.image("signed/app", 1<<20)
	for i := range 2 {
		resp, body, err := e.pull(http.MethodGet, blobPath("signed/app", l))
		if err != nil || resp.StatusCode != 200 || int64(len(body)) != l.Size {
			t.Fatalf("pull %d with the store failing: %d, %d bytes, %v", i, resp.StatusCode, len(body), err)
		}
		e.settle()
	}
	// The failed write is counted once the fill that tried it ends.
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(10 * time.Millisecond) {
		got, _ := value(scrape(t, e.metrics.Handler()), "authz_proxy_store_errors_total", "op", "write")
		if got >= 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("authz_proxy_store_errors_total{op=write} = %v", got)
		}
	}
	if !strings.Contains(e.logs.String(), "level=WARN") {
		t.Errorf("no warning: %s", e.logs.String())
	}
}

// BenchmarkCachedManifestWithAStore measures what the store adds to the
// hottest path, a cached manifest pull by digest: linking its layers to the
// repository (after the first pull, a look-up per layer); and a pull by an
// immutable tag, which the store answers without the upstream.
func BenchmarkCachedManifestWithAStore(b *testing.B) {
	d, err := store.NewDriver(context.Background(), store.InMemory, nil)
	if err != nil {
		b.Fatal(err)
	}
	st, err := store.New(context.Background(), store.Options{Driver: d, MaxSize: 1 << 30, SweepInterval: time.Hour})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { st.Close() })
	for _, tt := range []struct {
		name  string
		store *store.Store
		ref   string
	}{{"without a store", nil, ""}, {"with a store", st, ""}, {"by an immutable tag, with a store", st, "v1"}} {
		b.Run(tt.name, func(b *testing.B) {
			e := newEnv(b, withStore(tt.store), withTags(map[string]source.Tags{"lab": {Immutable: []string{"v*"}}}))
			img, err := random.Image(256, 10)
			if err != nil {
				b.Fatal(err)
			}
			dg := e.write("signed/app:v1", img)
			e.signTag("signed/app", "ci", dg, dg)
			h := e.server
			path := "/v2/lab/signed/app/manifests/" + dg.String()
			if tt.ref != "" {
				path = "/v2/lab/signed/app/manifests/" + tt.ref
			}
			b.ReportAllocs()
			for b.Loop() {
				req := httptest.NewRequest(http.MethodGet, path, nil)
				rec := httptest.NewRecorder()
				h.ServeHTTP(rec, req)
				if rec.Code != http.StatusOK {
					b.Fatalf("%d %s", rec.Code, rec.Body)
				}
			}
		})
	}
}

func TestAClientThatStopsReadingAStoredBlobIsLetGoAtTheSendTimeout(t *testing.T) {
	e := newStoreEnv(t, t.TempDir(), withConfigLimits("sendTimeout: 1s"))
	l := e.image("signed/app", 8<<20)
	if resp, _, err := e.pull(http.MethodGet, blobPath("signed/app", l)); err != nil || resp.StatusCode != 200 {
		t.Fatal(resp.StatusCode, err)
	}
	e.settle()
	srv := httptest.NewUnstartedServer(e.server)
	srv.Listener = smallSendBuffers{srv.Listener}
	srv.Start()
	t.Cleanup(srv.Close)
	for _, rng := range []string{"", "Range: bytes=0-8000000\r\n"} {
		conn := rawGet(t, strings.TrimPrefix(srv.URL, "http://"), blobPath("signed/app", l), rng)
		time.Sleep(3 * time.Second) // past the send timeout, reading nothing
		_ = conn.SetReadDeadline(time.Now().Add(30 * time.Second))
		got, err := io.Copy(io.Discard, conn)
		if err != nil || got >= l.Size {
			t.Errorf("%q: %d bytes read after stalling, %v: want the connection closed before the end", rng, got, err)
		}
	}
	if got, _ := value(scrape(t, e.metrics.Handler()), "authz_proxy_sends_abandoned_total", "kind", "blobs"); got != 2 {
		t.Errorf("authz_proxy_sends_abandoned_total{kind=blobs} = %v, want 2", got)
	}
}

// rawGet sends a GET with extra header lines and never reads, with a tiny
// receive buffer.
func rawGet(t *testing.T, host, path, headers string) net.Conn {
	t.Helper()
	d := net.Dialer{Control: func(_, _ string, c syscall.RawConn) error {
		return c.Control(func(fd uintptr) { _ = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096) })
	}}
	conn, err := d.Dial("tcp", host)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	fmt.Fprintf(conn, "GET %s HTTP/1.1\r\nHost: %s\r\n%s\r\n", path, host, headers)
	return conn
}
