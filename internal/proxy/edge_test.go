package proxy_test

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

func TestRouting(t *testing.T) {
	e := newEnv(t)
	d := e.push("signed/app:v1")
	e.signTag("signed/app", "ci", d, d)
	tests := []struct {
		name, path string
		status     int
		code       string
	}{
		{"base", "/v2/", 200, ""},
		{"path prefix names the upstream", "/v2/lab/signed/app/manifests/v1", 200, ""},
		{"ns names the upstream", "/v2/signed/app/manifests/v1?ns=lab", 200, ""},
		{"no upstream named: the default", "/v2/signed/app/manifests/v1", 200, ""},
		{"ns naming no upstream is never the default", "/v2/signed/app/manifests/v1?ns=evil.example.com", 404, "NAME_UNKNOWN"},
		{"unknown manifest", "/v2/lab/signed/app/manifests/nope", 404, "MANIFEST_UNKNOWN"},
		{"unknown blob", "/v2/lab/signed/app/blobs/sha256:" + strings.Repeat("0", 64), 404, "BLOB_UNKNOWN"},
		{"bad repository name", "/v2/lab/Signed/App/manifests/v1", 400, "NAME_INVALID"},
		{"bad digest", "/v2/lab/signed/app/blobs/sha256:xyz", 400, "DIGEST_INVALID"},
		{"bad tag", "/v2/lab/signed/app/manifests/-v1", 400, "TAG_INVALID"},
		{"not the registry API", "/v1/search", 404, "NOT_FOUND"},
		{"catalog is not served", "/v2/_catalog", 404, "NOT_FOUND"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp := e.get(http.MethodGet, tt.path)
			if tt.code == "" {
				if resp.StatusCode != tt.status {
					t.Fatalf("status %d, want %d", resp.StatusCode, tt.status)
				}
				return
			}
			expectError(t, resp, tt.status, tt.code)
		})
	}
}

func TestWritesAreRefused(t *testing.T) {
	e := newEnv(t)
	for _, m := range []string{http.MethodPut, http.MethodPost, http.MethodPatch, http.MethodDelete} {
		for _, path := range []string{"/v2/lab/signed/app/manifests/v1", "/v2/lab/signed/app/blobs/uploads/"} {
			msg := expectError(t, e.get(m, path), 405, "UNSUPPORTED")
			if !strings.Contains(msg, "read-only") {
				t.Errorf("%s %s: %s", m, path, msg)
			}
		}
	}
}

func TestBlobsStreamWithRanges(t *testing.T) {
	e := newEnv(t)
	d := e.push("signed/app:v1")
	e.signTag("signed/app", "ci", d, d)
	// Find a layer through the proxy's own manifest answer.
	resp := e.get(http.MethodGet, "/v2/lab/signed/app/manifests/v1")
	m, err := v1.ParseManifest(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	layer := m.Layers[0]
	path := "/v2/lab/signed/app/blobs/" + layer.Digest.String()
	full := e.get(http.MethodGet, path)
	body, _ := io.ReadAll(full.Body)
	if full.StatusCode != 200 || int64(len(body)) != layer.Size || full.Header.Get("Content-Length") != fmt.Sprint(layer.Size) {
		t.Fatalf("blob: %d, %d bytes, Content-Length %s, want %d", full.StatusCode, len(body), full.Header.Get("Content-Length"), layer.Size)
	}
	h, _, _ := v1.SHA256(bytes.NewReader(body))
	if h != layer.Digest {
		t.Fatalf("blob bytes hash to %s, want %s", h, layer.Digest)
	}
	req, _ := http.NewRequest(http.MethodGet, e.proxy.URL+path, nil)
	req.Header.Set("Range", "bytes=10-19")
	part, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer part.Body.Close()
	got, _ := io.ReadAll(part.Body)
	if part.StatusCode != http.StatusPartialContent || !bytes.Equal(got, body[10:20]) {
		t.Errorf("range request: %d %q, want 206 and bytes 10-19", part.StatusCode, got)
	}
	head := e.get(http.MethodHead, path)
	if head.StatusCode != 200 || head.Header.Get("Content-Length") != fmt.Sprint(layer.Size) {
		t.Errorf("HEAD blob: %d, Content-Length %s", head.StatusCode, head.Header.Get("Content-Length"))
	}
}

func TestTagsListPassesThroughWithPagination(t *testing.T) {
	e := newEnv(t)
	for _, tag := range []string{"a", "b", "c"} {
		e.push("signed/app:" + tag)
	}
	resp := e.get(http.MethodGet, "/v2/lab/signed/app/tags/list?n=2")
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || !bytes.Contains(body, []byte(`"a"`)) {
		t.Fatalf("tags/list: %d %s", resp.StatusCode, body)
	}
	if link := resp.Header.Get("Link"); link != "" && !strings.Contains(link, "/v2/lab/signed/app/tags/list") {
		t.Errorf("Link %q lost the upstream prefix", link)
	}
}

func TestUnreachableUpstreamFailsClosedAndIsNotCached(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := "http://" + ln.Addr().String()
	ln.Close()
	e := newEnv(t, withUpstreamURL(dead))
	for range 2 {
		msg := expectError(t, e.get(http.MethodGet, "/v2/lab/signed/app/manifests/v1"), 503, "UNAVAILABLE")
		if !strings.Contains(msg, "failing closed") {
			t.Errorf("message %q does not say it failed closed", msg)
		}
	}
	if resp := e.get(http.MethodGet, "/v2/"); resp.StatusCode != 200 {
		t.Errorf("the proxy stopped answering: %d", resp.StatusCode)
	}
	if !strings.Contains(e.decisions.String(), `"decision":"error"`) {
		t.Errorf("no error decision logged:\n%s", e.decisions.String())
	}
}

func TestSignatureStoreFailureIsUnavailableNotDenied(t *testing.T) {
	e := newEnv(t)
	d := e.push("signed/app:v1")
	e.signTag("signed/app", "ci", d, d)
	var broken atomic.Bool
	broken.Store(true)
	f := func(w http.ResponseWriter, r *http.Request) bool {
		if broken.Load() && strings.HasSuffix(r.URL.Path, ".sig") {
			http.Error(w, "storage backend down", http.StatusInternalServerError)
			return true
		}
		return false
	}
	e.front.Store(&f)
	expectError(t, e.get(http.MethodGet, "/v2/lab/signed/app/manifests/v1"), 503, "UNAVAILABLE")
	broken.Store(false)
	if resp := e.get(http.MethodGet, "/v2/lab/signed/app/manifests/v1"); resp.StatusCode != 200 {
		t.Errorf("after the signature store recovered: %d (the failure was cached?)", resp.StatusCode)
	}
}

func TestHostileUpstreamAnswers(t *testing.T) {
	tests := []struct {
		name   string
		answer func(w http.ResponseWriter)
		status int
		code   string
		inMsg  string
	}{
		{"manifest over 4 MiB by Content-Length", func(w http.ResponseWriter) {
			w.Header().Set("Content-Length", fmt.Sprint(5<<20))
			w.WriteHeader(200)
			_, _ = w.Write(bytes.Repeat([]byte(" "), 5<<20))
		}, 502, "UPSTREAM_INVALID", "over the 4194304-byte limit"},
		{"manifest over 4 MiB, chunked", func(w http.ResponseWriter) {
			w.WriteHeader(200)
			for range 5 {
				_, _ = w.Write(bytes.Repeat([]byte(" "), 1<<20))
				w.(http.Flusher).Flush()
			}
		}, 502, "UPSTREAM_INVALID", "limit"},
		{"not JSON", func(w http.ResponseWriter) {
			w.Header().Set("Content-Type", "application/vnd.oci.image.manifest.v1+json")
			_, _ = io.WriteString(w, "<html>login</html>")
		}, 502, "UPSTREAM_INVALID", "not JSON"},
		{"truncated JSON", func(w http.ResponseWriter) {
			_, _ = io.WriteString(w, `{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","layers":[`)
		}, 502, "UPSTREAM_INVALID", "not JSON"},
		{"schema 1", func(w http.ResponseWriter) {
			_, _ = io.WriteString(w, `{"schemaVersion":1,"name":"x"}`)
		}, 502, "UPSTREAM_INVALID", "schemaVersion 1"},
		{"too many requests", func(w http.ResponseWriter) {
			w.Header().Set("Retry-After", "7")
			w.WriteHeader(http.StatusTooManyRequests)
		}, 429, "TOOMANYREQUESTS", ""},
		{"server error", func(w http.ResponseWriter) {
			w.WriteHeader(http.StatusBadGateway)
		}, 503, "UNAVAILABLE", "502"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t)
			f := func(w http.ResponseWriter, r *http.Request) bool {
				if strings.Contains(r.URL.Path, "/manifests/") {
					tt.answer(w)
					return true
				}
				return false
			}
			e.front.Store(&f)
			resp := e.get(http.MethodGet, "/v2/lab/signed/app/manifests/v1")
			if tt.status == 429 && resp.Header.Get("Retry-After") != "7" {
				t.Errorf("Retry-After %q not passed on", resp.Header.Get("Retry-After"))
			}
			msg := expectError(t, resp, tt.status, tt.code)
			if !strings.Contains(msg, tt.inMsg) {
				t.Errorf("message %q does not say %q", msg, tt.inMsg)
			}
		})
	}
}

func TestManifestWhoseBytesDoNotMatchTheDigestIsRefused(t *testing.T) {
	e := newEnv(t)
	signed := e.push("signed/app:good")
	e.signTag("signed/app", "ci", signed, signed)
	evil := e.push("signed/app:evil")
	// The upstream answers a request for the signed digest with other bytes.
	f := func(w http.ResponseWriter, r *http.Request) bool {
		if r.URL.Path == "/v2/signed/app/manifests/"+signed.String() {
			r2 := r.Clone(r.Context())
			r2.URL.Path = "/v2/signed/app/manifests/" + evil.String()
			http.Redirect(w, r2, r2.URL.Path, http.StatusTemporaryRedirect)
			return true
		}
		return false
	}
	e.front.Store(&f)
	msg := expectError(t, e.get(http.MethodGet, "/v2/lab/signed/app/manifests/"+signed.String()), 502, "UPSTREAM_INVALID")
	if !strings.Contains(msg, "do not match the digest") {
		t.Errorf("message: %s", msg)
	}
}

func TestUpstreamTokenAuthWithTheProxysCredentials(t *testing.T) {
	e := newEnv(t, withCredentials("bot", "s3cret"))
	d := e.push("signed/app:v1")
	e.signTag("signed/app", "ci", d, d)
	var tokens atomic.Int64
	f := func(w http.ResponseWriter, r *http.Request) bool {
		if r.URL.Path == "/token" {
			if u, p, ok := r.BasicAuth(); !ok || u != "bot" || p != "s3cret" {
				w.WriteHeader(http.StatusUnauthorized)
				return true
			}
			tokens.Add(1)
			_, _ = io.WriteString(w, `{"token":"tok-for-`+r.URL.Query().Get("scope")+`"}`)
			return true
		}
		if r.Header.Get("Authorization") != "Bearer tok-for-repository:signed/app:pull" {
			w.Header().Set("WWW-Authenticate", `Bearer realm="`+e.upstream.URL+`/token",service="test"`)
			w.WriteHeader(http.StatusUnauthorized)
			return true
		}
		return false
	}
	e.front.Store(&f)
	for range 3 {
		if resp := e.get(http.MethodGet, "/v2/lab/signed/app/manifests/v1"); resp.StatusCode != 200 {
			body, _ := io.ReadAll(resp.Body)
			t.Fatalf("through a token-protected upstream: %d %s", resp.StatusCode, body)
		}
	}
	if n := tokens.Load(); n != 1 {
		t.Errorf("%d token exchanges for 3 pulls of one repository, want 1 (tokens are reused)", n)
	}
	if strings.Contains(e.decisions.String(), "s3cret") {
		t.Error("the password appears in the decision log")
	}
}

func TestBlobRedirectsAreFollowedByTheProxy(t *testing.T) {
	e := newEnv(t)
	d := e.push("signed/app:v1")
	e.signTag("signed/app", "ci", d, d)
	// A blob store elsewhere: the registry redirects blob reads to it.
	cdn := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "" {
			t.Errorf("the proxy sent its upstream credentials to the blob store")
		}
		e.upstream.Config.Handler.ServeHTTP(w, r)
	}))
	defer cdn.Close()
	var redirected atomic.Int64
	f := func(w http.ResponseWriter, r *http.Request) bool {
		if strings.Contains(r.URL.Path, "/blobs/") && r.Host != strings.TrimPrefix(cdn.URL, "http://") {
			redirected.Add(1)
			http.Redirect(w, r, cdn.URL+r.URL.Path, http.StatusTemporaryRedirect)
			return true
		}
		return false
	}
	e.front.Store(&f)
	if err := pullFirstLayer(t, e.proxyHost()+"/lab/signed/app:v1"); err != nil {
		t.Fatalf("layer through a redirecting upstream: %v", err)
	}
	if redirected.Load() == 0 {
		t.Fatal("the upstream never redirected; the test tests nothing")
	}
}
