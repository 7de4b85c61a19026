package proxy_test

import (
	"bufio"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/authz-proxy/authz-proxy/internal/limits"
	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// fault makes the upstream misbehave for requests whose path matches; it
// returns the counter of those requests.
func (e *env) fault(match func(r *http.Request) bool, misbehave func(w http.ResponseWriter, r *http.Request)) *atomic.Int64 {
	var n atomic.Int64
	f := func(w http.ResponseWriter, r *http.Request) bool {
		if !match(r) {
			return false
		}
		n.Add(1)
		misbehave(w, r)
		return true
	}
	e.front.Store(&f)
	return &n
}

func pathHas(s string) func(*http.Request) bool {
	return func(r *http.Request) bool { return strings.Contains(r.URL.Path, s) }
}

// stillServes asserts the proxy answers a signed pull after a fault.
func (e *env) stillServes(t *testing.T) {
	t.Helper()
	e.front.Store(nil)
	d := e.push("signed/after:v1")
	e.signTag("signed/after", "ci", d, d)
	if resp := e.get(http.MethodGet, "/v2/lab/signed/after/manifests/v1"); resp.StatusCode != 200 {
		t.Fatalf("the proxy no longer serves: %d", resp.StatusCode)
	}
}

// hangUp answers with headers promising more than it sends, then cuts the
// connection.
func hangUp(w http.ResponseWriter, _ *http.Request) {
	hj, ok := w.(http.Hijacker)
	if !ok {
		panic("no hijacker")
	}
	conn, buf, _ := hj.Hijack()
	fmt.Fprint(buf, "HTTP/1.1 200 OK\r\nContent-Type: application/vnd.oci.image.manifest.v1+json\r\nContent-Length: 100000\r\n\r\n{\"schemaVersion\":2,")
	buf.Flush()
	conn.Close()
}

func TestUpstreamFaultsEndInAClearErrorAndNothingUnverifiedIsServed(t *testing.T) {
	limits := limits.Limits{ResponseTimeout: 300 * time.Millisecond}
	tests := []struct {
		name      string
		match     func(*http.Request) bool
		misbehave func(http.ResponseWriter, *http.Request)
		status    int
		code      string
		inMsg     string
	}{
		{"manifest slower than the response timeout", pathHas("/manifests/v1"), func(w http.ResponseWriter, r *http.Request) {
			select {
			case <-time.After(5 * time.Second):
			case <-r.Context().Done():
			}
		}, 503, "UNAVAILABLE", "timeout"},
		{"signature store slower than the response timeout", pathHas(".sig"), func(w http.ResponseWriter, r *http.Request) {
			select {
			case <-time.After(5 * time.Second):
			case <-r.Context().Done():
			}
		}, 503, "UNAVAILABLE", "failing closed"},
		{"connection cut in the middle of the manifest", pathHas("/manifests/v1"), hangUp, 503, "UNAVAILABLE", "unexpected EOF"},
		{"connection cut in the middle of the signature manifest", pathHas(".sig"), hangUp, 503, "UNAVAILABLE", "failing closed"},
		{"503 from the upstream", pathHas("/manifests/v1"), func(w http.ResponseWriter, _ *http.Request) {
			w.WriteHeader(http.StatusServiceUnavailable)
		}, 503, "UNAVAILABLE", "HTTP 503"},
		{"500 from the signature store", pathHas(".sig"), func(w http.ResponseWriter, _ *http.Request) {
			w.WriteHeader(http.StatusInternalServerError)
		}, 503, "UNAVAILABLE", "HTTP 500"},
		{"401 to the proxy's own credentials", pathHas("/manifests/v1"), func(w http.ResponseWriter, _ *http.Request) {
			w.WriteHeader(http.StatusUnauthorized)
		}, 503, "UNAVAILABLE", "HTTP 401"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, withLimits(limits, 2*time.Second))
			d := e.push("signed/app:v1")
			e.signTag("signed/app", "ci", d, d)
			e.fault(tt.match, tt.misbehave)
			msg := expectError(t, e.get(http.MethodGet, "/v2/lab/signed/app/manifests/v1"), tt.status, tt.code)
			if !strings.Contains(msg, tt.inMsg) {
				t.Errorf("message %q does not say %q", msg, tt.inMsg)
			}
			e.stillServes(t)
			// The failure was not cached: the image itself passes now.
			if resp := e.get(http.MethodGet, "/v2/lab/signed/app/manifests/v1"); resp.StatusCode != 200 {
				t.Errorf("after the fault cleared: %d", resp.StatusCode)
			}
		})
	}
}

func TestBlobCutMidStreamFailsTheClientNotTheProxy(t *testing.T) {
	e := newEnv(t)
	d := e.push("signed/app:v1")
	e.signTag("signed/app", "ci", d, d)
	resp := e.get(http.MethodGet, "/v2/lab/signed/app/manifests/v1")
	m, _ := v1.ParseManifest(resp.Body)
	e.fault(pathHas("/blobs/"+m.Layers[0].Digest.String()), hangUp)
	blob := e.get(http.MethodGet, "/v2/lab/signed/app/blobs/"+m.Layers[0].Digest.String())
	if _, err := io.ReadAll(blob.Body); err == nil {
		t.Error("a blob cut mid-stream upstream reached the client as if complete")
	}
	e.stillServes(t)
}

func TestManifestWithAWrongContentTypeIsServedWithItsOwnMediaType(t *testing.T) {
	e := newEnv(t)
	d := e.push("signed/app:v1")
	e.signTag("signed/app", "ci", d, d)
	raw := e.get(http.MethodGet, "/v2/lab/signed/app/manifests/v1")
	body, _ := io.ReadAll(raw.Body)
	e.fault(pathHas("/manifests/v1"), func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		_, _ = w.Write(body)
	})
	resp := e.get(http.MethodGet, "/v2/lab/signed/app/manifests/v1")
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/vnd.docker.distribution.manifest.v2+json" {
		t.Errorf("%d, Content-Type %q: want the manifest's own media type", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
}

// hostileSig is a .sig manifest with n signature layers, none of which
// exists upstream.
func hostileSig(n int, layerSize int64) []byte {
	var b strings.Builder
	b.WriteString(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:` + strings.Repeat("0", 64) + `","size":2},"layers":[`)
	for i := range n {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `{"mediaType":"application/vnd.dev.cosign.simplesigning.v1+json","digest":"sha256:%064x","size":%d,"annotations":{"dev.cosignproject.cosign/signature":"%s"}}`,
			i+1, layerSize, base64.StdEncoding.EncodeToString([]byte("not a signature")))
	}
	b.WriteString("]}")
	return []byte(b.String())
}

// serveHostileSig answers the .sig tag of d with sig and counts the blob
// requests, answering them with blob when it is set.
func serveHostileSig(e *env, d v1.Hash, sig []byte, blob http.HandlerFunc) *atomic.Int64 {
	var blobs atomic.Int64
	f := func(w http.ResponseWriter, r *http.Request) bool {
		switch {
		case strings.HasSuffix(r.URL.Path, tagOf(d)+".sig"):
			w.Header().Set("Content-Type", "application/vnd.oci.image.manifest.v1+json")
			_, _ = w.Write(sig)
			return true
		case strings.Contains(r.URL.Path, "/blobs/"):
			blobs.Add(1)
			if blob != nil {
				blob(w, r)
				return true
			}
		}
		return false
	}
	e.front.Store(&f)
	return &blobs
}

func TestHostileSignatureArtifactsCostBoundedWork(t *testing.T) {
	tests := []struct {
		name       string
		setup      func(e *env, d v1.Hash) *atomic.Int64 // returns a counter of the requests that hostility costs
		maxFetches int64
		inReason   string
	}{
		{"a .sig manifest with 5,000 layers", func(e *env, d v1.Hash) *atomic.Int64 {
			return serveHostileSig(e, d, hostileSig(5000, 100), nil)
		}, 32, "more than 32 signatures stored"},
		{"a referrers index of 10,000 entries", func(e *env, d v1.Hash) *atomic.Int64 {
			var b strings.Builder
			b.WriteString(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[`)
			for i := range 10000 {
				if i > 0 {
					b.WriteByte(',')
				}
				fmt.Fprintf(&b, `{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%064x","size":500,"artifactType":"application/vnd.dev.cosign.artifact.sig.v1+json"}`, i+1)
			}
			b.WriteString("]}")
			index := []byte(b.String())
			var manifests atomic.Int64
			f := func(w http.ResponseWriter, r *http.Request) bool {
				switch {
				case strings.Contains(r.URL.Path, "/referrers/"):
					w.Header().Set("Content-Type", "application/vnd.oci.image.index.v1+json")
					_, _ = w.Write(index)
					return true
				case strings.Contains(r.URL.Path, "/manifests/sha256:"):
					manifests.Add(1)
				}
				return false
			}
			e.front.Store(&f)
			return &manifests
		}, 64, "more than 64 referrers stored"},
		{"a signature layer of 100 MiB is not downloaded", func(e *env, d v1.Hash) *atomic.Int64 {
			return serveHostileSig(e, d, hostileSig(1, 100<<20), nil)
		}, 0, "over the 131072-byte limit"},
		{"a signature layer that claims 100 bytes and streams 100 MiB", func(e *env, d v1.Hash) *atomic.Int64 {
			return serveHostileSig(e, d, hostileSig(1, 100), func(w http.ResponseWriter, _ *http.Request) {
				bw := bufio.NewWriter(w)
				chunk := make([]byte, 1<<20)
				for range 100 {
					if _, err := bw.Write(chunk); err != nil {
						break
					}
				}
				bw.Flush()
			})
		}, 1, "larger than the 100 bytes its descriptor declares"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, withLimits(limits.Limits{MaxSignatures: 32, MaxArtifactSize: 128 << 10, ResponseTimeout: 5 * time.Second}, 10*time.Second))
			d := e.push("signed/app:v1")
			counter := tt.setup(e, d)
			var before runtime.MemStats
			runtime.ReadMemStats(&before)
			msg := expectError(t, e.get(http.MethodGet, "/v2/lab/signed/app/manifests/v1"), 403, "DENIED")
			if !strings.Contains(msg, tt.inReason) {
				t.Errorf("reason %q does not say %q", msg, tt.inReason)
			}
			if n := counter.Load(); n > tt.maxFetches {
				t.Errorf("the hostile artifact cost %d fetches, want at most %d", n, tt.maxFetches)
			}
			var after runtime.MemStats
			runtime.ReadMemStats(&after)
			if grew := int64(after.HeapAlloc) - int64(before.HeapAlloc); grew > 64<<20 {
				t.Errorf("heap grew by %d MiB", grew>>20)
			}
			e.stillServes(t)
		})
	}
}

func TestHundredConcurrentColdRequestsVerifyOnce(t *testing.T) {
	e := newEnv(t, withoutReferrersAPI())
	d := e.push("signed/app:v1")
	// A payload with annotations is read from the upstream (the default
	// one is known without reading).
	e.signTagWith("signed/app", "ci", d, map[string]any{"build": "42"})
	sig := "/v2/signed/app/manifests/" + tagOf(d) + ".sig"
	resp := e.get(http.MethodGet, "/v2/lab/signed/app/manifests/"+tagOf(d)+".sig")
	var m v1.Manifest
	if err := json.NewDecoder(resp.Body).Decode(&m); err != nil {
		t.Fatal(err)
	}
	payload := "/v2/signed/app/blobs/" + m.Layers[0].Digest.String()
	sigBefore, payloadBefore := e.count(http.MethodGet, sig), e.count(http.MethodGet, payload)

	start := make(chan struct{})
	done := make(chan int, 100)
	for range 100 {
		go func() {
			<-start
			r, err := http.Get(e.proxy.URL + "/v2/lab/signed/app/manifests/" + d.String())
			if err != nil {
				done <- 0
				return
			}
			r.Body.Close()
			done <- r.StatusCode
		}()
	}
	close(start)
	for range 100 {
		if c := <-done; c != 200 {
			t.Fatalf("a request got %d", c)
		}
	}
	if n := e.count(http.MethodGet, sig) - sigBefore; n != 1 {
		t.Errorf(".sig manifest fetched %d times for 100 concurrent cold requests, want 1", n)
	}
	if n := e.count(http.MethodGet, payload) - payloadBefore; n != 1 {
		t.Errorf("signature payload fetched %d times, want 1", n)
	}
}
