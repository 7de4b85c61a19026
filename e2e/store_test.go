//go:build e2e

package e2e_test

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/random"

	"github.com/authz-proxy/authz-proxy/internal/testkit"
)

// storeConfig is the suite's configuration with a store section and a
// metrics listener, against upstreamURL.
func storeConfig(upstreamURL, metricsAddr, store string) string {
	return lab.config("enforce", upstreamURL) + "metrics: {addr: " + metricsAddr + "}\nstore: " + store + "\n"
}

// pushLayer pushes an allowlisted image of one random layer of size bytes
// to tools/<name>:v1 upstream and returns the image's and the layer's
// digests.
func pushLayer(t *testing.T, name string, size int64) (v1.Hash, v1.Descriptor) {
	t.Helper()
	img, err := random.Image(size, 1)
	if err != nil {
		t.Fatal(err)
	}
	d, err := lab.pushImage(t.Context(), img, "tools/"+name+":v1")
	if err != nil {
		t.Fatal(err)
	}
	m, err := img.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	return d, m.Layers[0]
}

// metric reads one sample from a proxy's /metrics: name with the labels
// given as `k="v"` pairs, 0 when absent.
func metric(t *testing.T, metricsAddr, name string, labels ...string) float64 {
	t.Helper()
	resp, err := http.Get("http://" + metricsAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	want := name
	if len(labels) > 0 {
		want += "{" + strings.Join(labels, ",") + "}"
	}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), want+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatal(err)
			}
			return f
		}
	}
	return 0
}

func freeAddr(t *testing.T) string {
	t.Helper()
	port, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("127.0.0.1:%d", port)
}

// versitygw runs the S3 gateway over a fresh folder holding the bucket
// "cache", and returns its endpoint and credential files.
func versitygw(t *testing.T) (endpoint, accessFile, secretFile string) {
	t.Helper()
	dir := t.TempDir()
	if err := os.Mkdir(filepath.Join(dir, "cache"), 0o755); err != nil {
		t.Fatal(err)
	}
	addr := freeAddr(t)
	p, err := startProcess(lab.env(), &testkit.Buffer{}, filepath.Join(lab.tools, "versitygw"), "--quiet", "--access", "AKIAE2E", "--secret", "e2e-secret", "--port", addr, "posix", dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.stop() })
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if resp, err := http.Get("http://" + addr + "/"); err == nil {
			resp.Body.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("versitygw did not come up:\n%s", p.output.String())
		}
	}
	creds := t.TempDir()
	accessFile, secretFile = filepath.Join(creds, "access"), filepath.Join(creds, "secret")
	for f, v := range map[string]string{accessFile: "AKIAE2E\n", secretFile: "e2e-secret\n"} {
		if err := os.WriteFile(f, []byte(v), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return "http://" + addr, accessFile, secretFile
}

func TestTwoProxiesOnOneS3BucketFillTogetherAndServeEachOthersContent(t *testing.T) {
	endpoint, ak, sk := versitygw(t)
	st := fmt.Sprintf("{driver: s3, bucket: cache, regionendpoint: %q, forcepathstyle: true, accesskeyFile: %q, secretkeyFile: %q, rootdirectory: /authz-proxy, maxSize: 1GiB}", endpoint, ak, sk)
	metrics := []string{freeAddr(t), freeAddr(t)}
	proxies := []*proxyProc{
		startTestProxy(t, "s3-a", storeConfig("http://"+lab.reg, metrics[0], st)),
		startTestProxy(t, "s3-b", storeConfig("http://"+lab.reg, metrics[1], st)),
	}
	for _, p := range proxies {
		if strings.Contains(p.stderr.String(), "e2e-secret") {
			t.Fatalf("the S3 secret is in the log of %s", p.name)
		}
	}

	// Both proxies pull the same image at once: both fill its layers.
	_, shared := pushLayer(t, "s3-shared", 24<<20)
	var wg sync.WaitGroup
	for _, p := range proxies {
		for range 2 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				out, err := crane(t, "pull", "--insecure", p.addr+"/lab/tools/s3-shared:v1", filepath.Join(t.TempDir(), "image.tar"))
				mustSucceed(t, "crane pull through "+p.name, out, err)
			}()
		}
	}
	wg.Wait()

	// An image pulled through a alone is served to b from the store.
	_, only := pushLayer(t, "s3-only-a", 8<<20)
	out, err := crane(t, "pull", "--insecure", proxies[0].addr+"/lab/tools/s3-only-a:v1", filepath.Join(t.TempDir(), "image.tar"))
	mustSucceed(t, "crane pull through a", out, err)
	waitNoFills(t, metrics[0])
	waitNoFills(t, metrics[1])
	fetchedBefore := metric(t, metrics[1], "authz_proxy_store_bytes_total", `source="upstream"`)
	hitsBefore := metric(t, metrics[1], "authz_proxy_store_requests_total", `result="hit"`)
	out, err = skopeo(t, proxies[1], "copy", "docker://lab.example/tools/s3-only-a:v1", "oci:"+filepath.Join(t.TempDir(), "oci")+":v1")
	mustSucceed(t, "skopeo copy through b", out, err)
	if got := metric(t, metrics[1], "authz_proxy_store_bytes_total", `source="upstream"`); got != fetchedBefore {
		t.Errorf("b fetched %v bytes from the upstream for what a stored", got-fetchedBefore)
	}
	if got := metric(t, metrics[1], "authz_proxy_store_requests_total", `result="hit"`); got < hitsBefore+2 {
		t.Errorf("b answered %v blob requests from the store, want the layer and the config", got-hitsBefore)
	}

	// Every blob is whole in the bucket: each proxy serves each, and the
	// bytes match their digests; but only to the repository that holds it
	// upstream (the registry keeps repositories apart).
	for _, p := range proxies {
		for repo, l := range map[string]v1.Descriptor{"s3-shared": shared, "s3-only-a": only} {
			resp := request(t, http.MethodGet, p.url()+"/v2/lab/tools/"+repo+"/blobs/"+l.Digest.String(), nil, nil)
			if resp.status != 200 {
				t.Fatalf("%s: %s: %d", p.name, l.Digest, resp.status)
			}
			if h, _, _ := v1.SHA256(bytes.NewReader(resp.body)); h != l.Digest {
				t.Errorf("%s served %s as bytes hashing to %s", p.name, l.Digest, h)
			}
		}
		resp := request(t, http.MethodGet, p.url()+"/v2/lab/tools/s3-shared/blobs/"+only.Digest.String(), nil, nil)
		if resp.status != http.StatusNotFound || !strings.Contains(string(resp.body), "BLOB_UNKNOWN") {
			t.Errorf("%s served a stored blob to a repository that does not hold it: %d %s", p.name, resp.status, tail(string(resp.body), 200))
		}
	}
	for i, m := range metrics {
		if n := metric(t, m, "authz_proxy_store_fill_errors_total", `reason="digest"`); n != 0 {
			t.Errorf("proxy %d: %v digest mismatches", i, n)
		}
	}
}

// waitNoFills waits until a proxy runs no fill.
func waitNoFills(t *testing.T, metricsAddr string) {
	t.Helper()
	for deadline := time.Now().Add(time.Minute); metric(t, metricsAddr, "authz_proxy_store_fills_in_flight") > 0; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("fills still running after a minute")
		}
	}
}

// stallingFront is a reverse proxy in front of the registry that holds the
// body of one blob after its first MiB until released.
type stallingFront struct {
	digest  string
	release chan struct{}
}

func (f *stallingFront) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	u, _ := url.Parse("http://" + lab.reg)
	rp := httputil.NewSingleHostReverseProxy(u)
	if strings.HasSuffix(r.URL.Path, "/blobs/"+f.digest) && r.Method == http.MethodGet {
		rp.ModifyResponse = func(resp *http.Response) error {
			resp.Body = struct {
				io.Reader
				io.Closer
			}{io.MultiReader(io.LimitReader(resp.Body, 1<<20), &waitReader{ctx: r.Context(), release: f.release, r: resp.Body}), resp.Body}
			return nil
		}
	}
	rp.ServeHTTP(w, r)
}

type waitReader struct {
	ctx     context.Context
	release chan struct{}
	r       io.Reader
}

func (w *waitReader) Read(p []byte) (int, error) {
	select {
	case <-w.release:
	case <-w.ctx.Done():
		return 0, w.ctx.Err()
	}
	return w.r.Read(p)
}

func TestAProxyKilledInTheMiddleOfAFillLeavesNothingPartialAndCleansUpAtRestart(t *testing.T) {
	_, l := pushLayer(t, "killed", 8<<20)
	front := &stallingFront{digest: l.Digest.String(), release: make(chan struct{})}
	srv := &http.Server{Handler: front}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { srv.Close() })

	root := t.TempDir()
	metricsAddr := freeAddr(t)
	p := startTestProxy(t, "killed", storeConfig("http://"+ln.Addr().String(), metricsAddr, fmt.Sprintf("{driver: filesystem, rootdirectory: %q, maxSize: 1GiB}", root)))
	blobURL := p.url() + "/v2/lab/tools/killed/blobs/" + l.Digest.String()
	go func() {
		resp, err := http.Get(blobURL)
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
	}()
	// The fill has written most of the first MiB (the storage driver may
	// still buffer its tail), and waits for the rest.
	uploads := filepath.Join(root, "uploads")
	for deadline := time.Now().Add(time.Minute); filesOver(uploads, 512<<10) == 0; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("no fill in progress under %s", uploads)
		}
	}
	if err := p.cmd.Process.Kill(); err != nil { // kill -9
		t.Fatal(err)
	}
	<-p.exited
	data := filepath.Join(root, "content", "lab", "blobs", "sha256", l.Digest.Hex[:2], l.Digest.Hex, "data")
	if _, err := os.Stat(data); !os.IsNotExist(err) {
		t.Fatalf("a partial blob is in place after kill -9: %v", err)
	}
	if filesOver(uploads, 1) == 0 {
		t.Fatal("the killed fill left nothing: the test did not kill it in the middle")
	}

	// Restarted with the same configuration (same host and port): it
	// clears what it left, then fills the blob whole.
	p2 := restartProxy(t, p)
	if n := filesOver(uploads, 0); n != 0 {
		t.Errorf("%d leftover files under %s after the restart", n, uploads)
	}
	wantContains(t, "the restarted proxy's log", p2.stderr.String(), "removed the leftovers of fills interrupted by the last exit")
	close(front.release)
	resp := request(t, http.MethodGet, blobURL, nil, nil)
	if h, _, _ := v1.SHA256(bytes.NewReader(resp.body)); resp.status != 200 || h != l.Digest {
		t.Fatalf("after the restart: %d, bytes hashing to %s", resp.status, h)
	}
	waitNoFills(t, metricsAddr)
	if b, err := os.ReadFile(data); err != nil || int64(len(b)) != l.Size {
		t.Errorf("the blob is not stored whole after the restart: %d bytes, %v", len(b), err)
	}
}

// filesOver counts the files under dir larger than size bytes.
func filesOver(dir string, size int64) int {
	n := 0
	_ = filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			if fi, err := d.Info(); err == nil && fi.Size() >= size {
				n++
			}
		}
		return nil
	})
	return n
}

// restartProxy runs p's configuration again, on the same address.
func restartProxy(t *testing.T, p *proxyProc) *proxyProc {
	t.Helper()
	p2 := &proxyProc{name: p.name, addr: p.addr, config: p.config, auditFile: p.auditFile, stdout: &testkit.Buffer{}, stderr: &testkit.Buffer{}}
	proc, err := startProcessSplit(lab.env(), p2.stdout, p2.stderr, lab.proxyBin, "serve", "--config", p.config)
	if err != nil {
		t.Fatal(err)
	}
	p2.process = proc
	t.Cleanup(func() { _ = proc.stop() })
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	if err := waitReady(ctx, p.url()+"/v2/", proc.exited); err != nil {
		t.Fatalf("restart: %v\n%s", err, p2.stderr.String())
	}
	return p2
}
