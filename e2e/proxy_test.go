//go:build e2e

package e2e_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestDryrunLetsUnsignedImageThroughAndLogsIt(t *testing.T) {
	p := startTestProxy(t, "dryrun", lab.config("dryrun", "http://"+lab.reg))
	mark := p.mark()
	ref := p.addr + "/lab/e2e/app:unsigned"
	out, err := crane(t, "pull", "--insecure", ref, filepath.Join(t.TempDir(), "image.tar"))
	mustSucceed(t, "crane pull "+ref+" (dryrun)", out, err)
	d := p.decisionFor(t, mark, lab.img.unsigned.String(), "unsigned")
	checkDecision(t, d, "dryrun-deny", "lab/e2e/app", "e2e")
	if d.Enforcement != "dryrun" {
		t.Errorf("enforcement %q, want dryrun:\n%s", d.Enforcement, d)
	}
	if !strings.Contains(strings.Join(d.Reasons, "; "), "signature") {
		t.Errorf("the dryrun-deny does not give the reasons it would have denied for:\n%s", d)
	}

	// A signed image is still a plain allow.
	mark = p.mark()
	ref = p.addr + "/lab/e2e/app:signed"
	out, err = crane(t, "pull", "--insecure", ref, filepath.Join(t.TempDir(), "image.tar"))
	mustSucceed(t, "crane pull "+ref+" (dryrun)", out, err)
	checkDecision(t, p.decisionFor(t, mark, lab.img.signed.String(), "signed"), "allow", "lab/e2e/app", "e2e")

	if err := p.stop(); err != nil {
		t.Errorf("stopping the dryrun proxy: %v\n%s", err, p.stderr.String())
	}
	if err := compareAudit(p); err != nil {
		t.Errorf("dryrun proxy audit file: %v", err)
	}
	if n, err := countDecisions(p); err != nil || n < 2 {
		t.Errorf("dryrun proxy logged %d decisions (%v), want at least 2:\n%s", n, err, p.stdout.String())
	}
}

func TestUpstreamDownIsUnavailable(t *testing.T) {
	port, err := freePort() // nothing listens there
	if err != nil {
		t.Fatal(err)
	}
	dead := fmt.Sprintf("127.0.0.1:%d", port)
	p := startTestProxy(t, "upstream-down", lab.config("enforce", "http://"+dead))
	manifest := p.url() + "/v2/lab/e2e/app/manifests/signed"

	mark := p.mark()
	r := getManifest(t, "GET", manifest)
	e := wantOCIError(t, "GET "+manifest+" with the upstream down", r, 503, "UNAVAILABLE")
	if e.Errors[0].Message == "" {
		t.Errorf("the UNAVAILABLE error gives no cause: %s", r.body)
	}
	d := p.waitDecision(t, mark, "lab/e2e/app:signed", func(d decision) bool { return d.Reference == "signed" })
	if d.Decision != "error" || d.Image != "lab/e2e/app" || len(d.Reasons) == 0 {
		t.Errorf("want decision error for lab/e2e/app with the cause in reasons:\n%s", d)
	}
	if h := getManifest(t, "HEAD", manifest); h.status != 503 {
		t.Errorf("HEAD %s with the upstream down: status %d, want 503", manifest, h.status)
	}
	if r := request(t, "GET", p.url()+"/v2/", nil, nil); r.status != 200 {
		t.Errorf("GET /v2/ after an upstream failure: status %d, want 200; body %s", r.status, r.body)
	}

	t.Run("not cached as a deny", func(t *testing.T) {
		// The upstream comes back on the same address: the image is
		// judged afresh and served.
		ln, err := net.Listen("tcp", dead)
		if err != nil {
			t.Skipf("cannot listen on %s again: %v", dead, err)
		}
		target, _ := url.Parse("http://" + lab.reg)
		srv := &http.Server{Handler: httputil.NewSingleHostReverseProxy(target), ReadHeaderTimeout: 10 * time.Second}
		go func() { _ = srv.Serve(ln) }()
		t.Cleanup(func() { _ = srv.Close() })

		mark := p.mark()
		r := getManifest(t, "GET", manifest)
		if r.status != 200 {
			t.Fatalf("GET %s once the upstream is back: status %d, want 200; body %s", manifest, r.status, r.body)
		}
		d := p.decisionFor(t, mark, lab.img.signed.String(), "signed")
		checkDecision(t, d, "allow", "lab/e2e/app", "e2e")
	})
}

func TestHeadAgreesWithGet(t *testing.T) {
	base := lab.main.url() + "/v2/lab/"
	for _, c := range []struct {
		name, path string
		status     int
		digest     string
	}{
		{"allowed by tag", "e2e/app/manifests/signed", 200, lab.img.signed.String()},
		{"allowed by digest", "e2e/app/manifests/" + lab.img.signed.String(), 200, lab.img.signed.String()},
		{"allowed index", "e2e/multiarch/manifests/v1", 200, lab.img.index.String()},
		{"denied by tag", "e2e/app/manifests/unsigned", 403, ""},
		{"denied by digest", "e2e/app/manifests/" + lab.img.unsigned.String(), 403, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			// Both orders: whichever comes second may be answered from
			// the verdict cache, and must not differ for it.
			for _, order := range [][2]string{{"GET", "HEAD"}, {"HEAD", "GET"}} {
				rs := map[string]response{}
				for _, m := range order {
					rs[m] = getManifest(t, m, base+c.path)
				}
				get, head := rs["GET"], rs["HEAD"]
				if get.status != c.status {
					t.Fatalf("GET %s: status %d, want %d; body %s", c.path, get.status, c.status, get.body)
				}
				if head.status != get.status {
					t.Errorf("%s then %s: HEAD status %d, GET %d", order[0], order[1], head.status, get.status)
				}
				for _, h := range []string{"Content-Type", "Docker-Content-Digest", "Content-Length"} {
					if g, hh := get.header.Get(h), head.header.Get(h); g != hh {
						t.Errorf("%s then %s: %s: HEAD %q, GET %q", order[0], order[1], h, hh, g)
					}
				}
				if len(head.body) != 0 {
					t.Errorf("HEAD returned a body: %q", head.body)
				}
				if c.status == 200 {
					sum := sha256.Sum256(get.body)
					if got := "sha256:" + hex.EncodeToString(sum[:]); got != c.digest || get.header.Get("Docker-Content-Digest") != c.digest {
						t.Errorf("GET served bytes of digest %s with Docker-Content-Digest %q, want %s", got, get.header.Get("Docker-Content-Digest"), c.digest)
					}
					if cl := get.header.Get("Content-Length"); cl != fmt.Sprint(len(get.body)) {
						t.Errorf("GET Content-Length %q, body %d bytes", cl, len(get.body))
					}
				} else {
					wantOCIError(t, "GET "+c.path, get, c.status, "DENIED")
				}
			}
		})
	}
}

func TestMissingManifestAndBlobAreUnknown(t *testing.T) {
	p := lab.main
	u := p.url() + "/v2/lab/e2e/app/manifests/no-such-tag"
	wantOCIError(t, "GET "+u, getManifest(t, "GET", u), 404, "MANIFEST_UNKNOWN")
	missing := "sha256:" + strings.Repeat("0", 64)
	b := p.url() + "/v2/lab/e2e/app/blobs/" + missing
	wantOCIError(t, "GET "+b, request(t, "GET", b, nil, nil), 404, "BLOB_UNKNOWN")
	ref := p.addr + "/lab/e2e/app:no-such-tag"
	out, err := crane(t, "pull", "--insecure", ref, filepath.Join(t.TempDir(), "image.tar"))
	out = mustFail(t, "crane pull "+ref, out, err)
	wantContains(t, "crane pull "+ref, out, "MANIFEST_UNKNOWN")
}

func TestWritesAreRefused(t *testing.T) {
	p := lab.main
	t.Run("crane push", func(t *testing.T) {
		ref := p.addr + "/lab/e2e/pushed:v1"
		out, err := crane(t, "push", "--insecure", lab.img.tarball, ref)
		out = mustFail(t, "crane push "+ref, out, err)
		wantContains(t, "crane push", out, "UNSUPPORTED")
	})
	t.Run("crane copy", func(t *testing.T) {
		src, dst := lab.reg+"/e2e/app:signed", p.addr+"/lab/e2e/copy:v1"
		out, err := crane(t, "copy", "--insecure", src, dst)
		out = mustFail(t, "crane copy "+src+" "+dst, out, err)
		wantContains(t, "crane copy", out, "UNSUPPORTED")
	})
	manifest, err := crane(t, "manifest", "--insecure", lab.reg+"/e2e/app:unsigned")
	mustSucceed(t, "crane manifest of the upstream", manifest, err)
	for _, c := range []struct{ method, path, contentType, body string }{
		{"PUT", "/v2/lab/e2e/app/manifests/unsigned", "application/vnd.oci.image.manifest.v1+json", manifest},
		{"PUT", "/v2/e2e/app/manifests/overwritten?ns=lab", "application/vnd.oci.image.manifest.v1+json", manifest},
		{"POST", "/v2/lab/e2e/app/blobs/uploads/", "", ""},
		{"PATCH", "/v2/lab/e2e/app/blobs/uploads/0a1b2c", "application/octet-stream", "data"},
		{"DELETE", "/v2/lab/e2e/app/manifests/" + lab.img.signed.String(), "", ""},
		{"DELETE", "/v2/lab/e2e/app/manifests/signed", "", ""},
	} {
		t.Run("raw "+c.method+" "+c.path, func(t *testing.T) {
			h := http.Header{}
			if c.contentType != "" {
				h.Set("Content-Type", c.contentType)
			}
			r := request(t, c.method, p.url()+c.path, strings.NewReader(c.body), h)
			wantOCIError(t, c.method+" "+c.path, r, 405, "UNSUPPORTED")
		})
	}
	// Nothing reached the upstream.
	for _, ref := range []string{"e2e/pushed:v1", "e2e/copy:v1", "e2e/app:overwritten"} {
		if out, err := crane(t, "digest", "--insecure", lab.reg+"/"+ref); err == nil {
			t.Errorf("%s exists on the upstream after writes through the proxy: %s", ref, out)
		}
	}
	if out, err := crane(t, "digest", "--insecure", lab.reg+"/e2e/app:signed"); err != nil || strings.TrimSpace(out) != lab.img.signed.String() {
		t.Errorf("e2e/app:signed changed upstream after writes through the proxy: %v %s", err, out)
	}
}

func TestContainerdNsRouting(t *testing.T) {
	p := lab.main
	t.Run("ns=lab", func(t *testing.T) {
		mark := p.mark()
		u := p.url() + "/v2/e2e/app/manifests/signed?ns=lab"
		for _, method := range []string{"HEAD", "GET"} { // containerd resolves with HEAD first
			r := getManifest(t, method, u)
			if r.status != 200 || r.header.Get("Docker-Content-Digest") != lab.img.signed.String() {
				t.Fatalf("%s %s: status %d, digest %q; want 200 and %s; body %s", method, u, r.status, r.header.Get("Docker-Content-Digest"), lab.img.signed, r.body)
			}
			if method == "GET" {
				var m struct {
					Config struct {
						Digest string `json:"digest"`
					} `json:"config"`
				}
				if err := json.Unmarshal(r.body, &m); err != nil || m.Config.Digest == "" {
					t.Fatalf("GET %s: not an image manifest: %v %s", u, err, r.body)
				}
				blob := p.url() + "/v2/e2e/app/blobs/" + m.Config.Digest + "?ns=lab"
				b := request(t, "GET", blob, nil, nil)
				sum := sha256.Sum256(b.body)
				if b.status != 200 || "sha256:"+hex.EncodeToString(sum[:]) != m.Config.Digest {
					t.Errorf("GET %s: status %d, %d bytes not matching the digest", blob, b.status, len(b.body))
				}
			}
		}
		d := p.decisionFor(t, mark, lab.img.signed.String(), "signed")
		checkDecision(t, d, "allow", "lab/e2e/app", "e2e")
	})
	t.Run("ns=unknown", func(t *testing.T) {
		mark := p.mark()
		u := p.url() + "/v2/e2e/app/manifests/signed?ns=unknown"
		wantOCIError(t, "GET "+u, getManifest(t, "GET", u), 404, "NAME_UNKNOWN")
		if r := getManifest(t, "HEAD", u); r.status != 404 {
			t.Errorf("HEAD %s: status %d, want 404", u, r.status)
		}
		for _, d := range p.decisionsSince(t, mark) {
			if d.Digest == lab.img.signed.String() {
				t.Errorf("ns=unknown was served from an upstream:\n%s", d)
			}
		}
		b := p.url() + "/v2/e2e/app/blobs/" + lab.img.signed.String() + "?ns=unknown"
		wantOCIError(t, "GET "+b, request(t, "GET", b, nil, nil), 404, "NAME_UNKNOWN")
	})
}

func TestAuditFileHasOneLinePerDecision(t *testing.T) {
	p := startTestProxy(t, "audit", lab.config("enforce", "http://"+lab.reg))
	for _, ref := range []string{"e2e/app:signed", "e2e/app:unsigned", "e2e/app:signed", "e2e/app:" + sigTag(lab.img.signed), "tools/debug:latest"} {
		r := getManifest(t, "GET", p.url()+"/v2/lab/"+strings.Replace(ref, ":", "/manifests/", 1))
		if r.status != 200 && r.status != 403 {
			t.Fatalf("GET %s: status %d; body %s", ref, r.status, r.body)
		}
	}
	if err := p.stop(); err != nil {
		t.Fatalf("stopping the proxy: %v\n%s", err, p.stderr.String())
	}
	if err := compareAudit(p); err != nil {
		t.Fatal(err)
	}
	n, err := countDecisions(p)
	if err != nil {
		t.Fatal(err)
	}
	if n < 4 {
		t.Errorf("%d decisions logged for 5 manifest requests:\n%s", n, p.stdout.String())
	}
	if raw := p.stdout.String(); bytes.Contains([]byte(raw), []byte("BEGIN")) || strings.Contains(raw, "PRIVATE") {
		t.Errorf("the decision log carries key material:\n%s", raw)
	}
}
