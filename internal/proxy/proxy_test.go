package proxy_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

func tagOf(d v1.Hash) string { return "sha256-" + d.Hex }

func TestSignedManifestIsServedAsTheVerifiedBytes(t *testing.T) {
	e := newEnv(t)
	d := e.push("signed/app:v1")
	e.signTag("signed/app", "ci", d, d)

	for _, path := range []string{"/v2/lab/signed/app/manifests/v1", "/v2/signed/app/manifests/" + d.String(), "/v2/signed/app/manifests/v1?ns=lab"} {
		resp := e.get(http.MethodGet, path)
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("GET %s: %d %s", path, resp.StatusCode, body)
		}
		sum := sha256.Sum256(body)
		if got := "sha256:" + hex.EncodeToString(sum[:]); got != d.String() {
			t.Errorf("GET %s served bytes hashing to %s, want %s", path, got, d)
		}
		if resp.Header.Get("Docker-Content-Digest") != d.String() || resp.Header.Get("Content-Length") != fmt.Sprint(len(body)) {
			t.Errorf("GET %s headers: %v", path, resp.Header)
		}
		if ct := resp.Header.Get("Content-Type"); ct != "application/vnd.docker.distribution.manifest.v2+json" {
			t.Errorf("GET %s Content-Type %q", path, ct)
		}
	}
	rec := e.lastDecision(d.String())
	if rec.Decision != "allow" || rec.Rule != "signed" || len(rec.VerifiedBy) != 1 || rec.VerifiedBy[0].Attestor != "ci" {
		t.Errorf("decision record: %+v", rec)
	}
}

func TestImagePulledThroughTheProxyWithGoContainerregistry(t *testing.T) {
	e := newEnv(t)
	d := e.push("signed/app:v1")
	e.signTag("signed/app", "ci", d, d)
	ref, _ := name.ParseReference(e.proxyHost()+"/lab/signed/app:v1", name.Insecure)
	img, err := remote.Image(ref)
	if err != nil {
		t.Fatal(err)
	}
	layers, _ := img.Layers()
	for _, l := range layers {
		rc, err := l.Compressed()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.Copy(io.Discard, rc); err != nil {
			t.Fatalf("layer through the proxy: %v", err)
		}
		rc.Close()
	}
}

func TestManifestDecisions(t *testing.T) {
	tests := []struct {
		name       string
		setup      func(e *env) (path string, digest v1.Hash)
		wantStatus int
		wantInMsg  string
		wantLog    string
	}{
		{"denied when unsigned", func(e *env) (string, v1.Hash) {
			d := e.push("signed/app:v1")
			return "/v2/lab/signed/app/manifests/v1", d
		}, 403, "no cosign signature found", "deny"},
		{"denied when signed by a key of no listed attestor", func(e *env) (string, v1.Hash) {
			d := e.push("signed/app:v1")
			e.signTag("signed/app", "nobody", d, d)
			return "/v2/lab/signed/app/manifests/v1", d
		}, 403, "none verifies with a key of attestor ci", "deny"},
		{"denied when the signature is for another digest", func(e *env) (string, v1.Hash) {
			a := e.push("signed/app:a")
			b := e.push("signed/app:b")
			e.signTag("signed/app", "ci", b, a) // ci really signed a; stored as b's
			return "/v2/lab/signed/app/manifests/b", b
		}, 403, "was made for sha256:", "deny"},
		{"allowed when signed as an OCI 1.1 referrer", func(e *env) (string, v1.Hash) {
			d := e.push("signed/app:v1")
			e.signReferrer("signed/app", "ci", d, false)
			return "/v2/lab/signed/app/manifests/v1", d
		}, 200, "", "allow"},
		{"denied when only one of two required attestors signed", func(e *env) (string, v1.Hash) {
			d := e.push("two/app:v1")
			e.signTag("two/app", "ci", d, d)
			return "/v2/lab/two/app/manifests/v1", d
		}, 403, "signed by 1 of the 2 attestors required; missing: release", "deny"},
		{"allowed when two distinct attestors signed", func(e *env) (string, v1.Hash) {
			d := e.push("two/app:v1")
			e.signTag("two/app", "ci", d, d)
			e.signReferrer("two/app", "release", d, false)
			return "/v2/lab/two/app/manifests/v1", d
		}, 200, "", "allow"},
		{"two signatures of one attestor do not make a threshold of two", func(e *env) (string, v1.Hash) {
			d := e.push("two/app:v1")
			e.signTag("two/app", "ci", d, d)
			e.signReferrer("two/app", "ci", d, false)
			return "/v2/lab/two/app/manifests/v1", d
		}, 403, "missing: release", "deny"},
		{"allowlisted image is allowed unsigned", func(e *env) (string, v1.Hash) {
			d := e.push("tools/debug:v1")
			return "/v2/lab/tools/debug/manifests/v1", d
		}, 200, "", "allow"},
		{"rule with action allow", func(e *env) (string, v1.Hash) {
			d := e.push("open/app:v1")
			return "/v2/lab/open/app/manifests/v1", d
		}, 200, "", "allow"},
		{"dryrun lets an unsigned image through and logs dryrun-deny", func(e *env) (string, v1.Hash) {
			d := e.push("dry/app:v1")
			return "/v2/lab/dry/app/manifests/v1", d
		}, 200, "", "dryrun-deny"},
		{"image of no rule meets the default deny", func(e *env) (string, v1.Hash) {
			d := e.push("elsewhere/app:v1")
			return "/v2/other/elsewhere/app/manifests/v1", d
		}, 403, `denied by rule "default"`, "deny"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t)
			path, d := tt.setup(e)
			for _, method := range []string{http.MethodGet, http.MethodHead} {
				resp := e.get(method, path)
				if resp.StatusCode != tt.wantStatus {
					body, _ := io.ReadAll(resp.Body)
					t.Fatalf("%s %s: status %d, want %d: %s", method, path, resp.StatusCode, tt.wantStatus, body)
				}
			}
			if tt.wantStatus == 403 {
				msg := expectError(t, e.get(http.MethodGet, path), 403, "DENIED")
				if !strings.Contains(msg, d.String()) || !strings.Contains(msg, tt.wantInMsg) {
					t.Errorf("message %q does not name the digest and say %q", msg, tt.wantInMsg)
				}
			}
			if rec := e.lastDecision(d.String()); rec.Decision != tt.wantLog {
				t.Errorf("logged decision %q, want %q: %+v", rec.Decision, tt.wantLog, rec)
			}
		})
	}
}

func TestSignatureFoundThroughReferrersTagFallback(t *testing.T) {
	e := newEnv(t, withoutReferrersAPI())
	d := e.push("signed/app:v1")
	e.signReferrer("signed/app", "ci", d, true)
	if resp := e.get(http.MethodGet, "/v2/lab/signed/app/manifests/v1"); resp.StatusCode != 200 {
		body, _ := io.ReadAll(resp.Body)
		t.Fatalf("status %d: %s", resp.StatusCode, body)
	}
	if rec := e.lastDecision(d.String()); !strings.HasPrefix(rec.VerifiedBy[0].Source, "referrer ") {
		t.Errorf("verified by %+v, want a referrer", rec.VerifiedBy)
	}
}

func TestHeadAgreesWithGet(t *testing.T) {
	e := newEnv(t)
	signed := e.push("signed/app:ok")
	e.signTag("signed/app", "ci", signed, signed)
	e.push("signed/app:bad")
	for _, tag := range []string{"ok", "bad"} {
		path := "/v2/lab/signed/app/manifests/" + tag
		get, head := e.get(http.MethodGet, path), e.get(http.MethodHead, path)
		for _, h := range []string{"Content-Type", "Docker-Content-Digest", "Content-Length"} {
			if get.Header.Get(h) != head.Header.Get(h) && (tag != "bad" || h != "Content-Length") {
				t.Errorf("%s: %s differs: GET %q, HEAD %q", tag, h, get.Header.Get(h), head.Header.Get(h))
			}
		}
		if get.StatusCode != head.StatusCode {
			t.Errorf("%s: GET %d, HEAD %d", tag, get.StatusCode, head.StatusCode)
		}
		if b, _ := io.ReadAll(head.Body); len(b) != 0 {
			t.Errorf("%s: HEAD has a body", tag)
		}
	}
}

func TestIndexChildrenInheritTheIndexVerdict(t *testing.T) {
	e := newEnv(t)
	idx, err := random.Index(128, 1, 2)
	if err != nil {
		t.Fatal(err)
	}
	ref, _ := name.ParseReference(e.host()+"/signed/multi:v1", name.Insecure)
	if err := remote.WriteIndex(ref, idx); err != nil {
		t.Fatal(err)
	}
	d, _ := idx.Digest()
	e.signTag("signed/multi", "ci", d, d) // the index only, not --recursive
	im, _ := idx.IndexManifest()
	child := im.Manifests[0].Digest

	resp := e.get(http.MethodGet, "/v2/lab/signed/multi/manifests/"+child.String())
	msg := expectError(t, resp, 403, "DENIED")
	if !strings.Contains(msg, "index") || !strings.Contains(msg, "--recursive") {
		t.Errorf("a child asked for on its own should be denied with a hint about its index: %s", msg)
	}
	if resp := e.get(http.MethodGet, "/v2/lab/signed/multi/manifests/v1"); resp.StatusCode != 200 {
		t.Fatalf("index: %d", resp.StatusCode)
	}
	for _, m := range im.Manifests {
		if resp := e.get(http.MethodGet, "/v2/lab/signed/multi/manifests/"+m.Digest.String()); resp.StatusCode != 200 {
			t.Errorf("child %s after its allowed index: %d", m.Digest, resp.StatusCode)
		}
	}
	if rec := e.lastDecision(child.String()); !strings.Contains(strings.Join(rec.Reasons, " "), "listed in allowed index "+d.String()) {
		t.Errorf("child's decision does not name its index: %+v", rec)
	}
	// Another repository does not inherit.
	other, _ := name.ParseReference(e.host()+"/signed/copy:v1", name.Insecure)
	if err := remote.WriteIndex(other, idx); err != nil {
		t.Fatal(err)
	}
	if resp := e.get(http.MethodGet, "/v2/lab/signed/copy/manifests/"+child.String()); resp.StatusCode != 403 {
		t.Errorf("a child in another repository inherited the verdict: %d", resp.StatusCode)
	}
}

func TestSignatureArtifactsAreServedUnjudgedButRunnableImagesAreJudged(t *testing.T) {
	e := newEnv(t)
	d := e.push("signed/app:v1")
	e.signTag("signed/app", "ci", d, d)
	e.signReferrer("signed/app", "ci", d, false)

	if resp := e.get(http.MethodGet, "/v2/lab/signed/app/manifests/"+tagOf(d)+".sig"); resp.StatusCode != 200 {
		t.Errorf(".sig tag through the proxy: %d", resp.StatusCode)
	}
	resp := e.get(http.MethodGet, "/v2/lab/signed/app/referrers/"+d.String())
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || !bytes.Contains(body, []byte("application/vnd.dev.cosign.artifact.sig.v1+json")) && !bytes.Contains(body, []byte("manifests")) {
		t.Errorf("referrers through the proxy: %d %s", resp.StatusCode, body)
	}

	// A runnable image that carries a subject and hides under a .sig tag.
	img, _ := random.Image(256, 1)
	sneaky := mutate.Subject(img, v1.Descriptor{MediaType: "application/vnd.oci.image.manifest.v1+json", Digest: d, Size: 1}).(v1.Image)
	sd := e.write("signed/app:"+tagOf(d)+".att", sneaky)
	for _, ref := range []string{tagOf(d) + ".att", sd.String()} {
		expectError(t, e.get(http.MethodGet, "/v2/lab/signed/app/manifests/"+ref), 403, "DENIED")
	}
}

func TestCachedDenialOfADigestMakesNoUpstreamCall(t *testing.T) {
	e := newEnv(t)
	d := e.push("signed/app:v1")
	path := "/v2/lab/signed/app/manifests/" + d.String()
	expectError(t, e.get(http.MethodGet, path), 403, "DENIED")
	before := e.count(http.MethodGet, "/v2/signed/app/manifests/"+d.String())
	expectError(t, e.get(http.MethodGet, path), 403, "DENIED")
	if after := e.count(http.MethodGet, "/v2/signed/app/manifests/"+d.String()); after != before {
		t.Errorf("a cached denial fetched the manifest again (%d -> %d)", before, after)
	}
	if rec := e.lastDecision(d.String()); !rec.Cached {
		t.Errorf("second decision not marked cached: %+v", rec)
	}
}

func TestCachedVerdictsAnswerWithoutTheUpstream(t *testing.T) {
	e := newEnv(t, withoutReferrersAPI())
	d := e.push("signed/app:v1")
	e.signTag("signed/app", "ci", d, d)
	byDigest := "/v2/lab/signed/app/manifests/" + d.String()
	first := e.get(http.MethodGet, byDigest)
	want, _ := io.ReadAll(first.Body)
	upstreamManifest := "/v2/signed/app/manifests/" + d.String()
	before := e.count(http.MethodGet, upstreamManifest)

	again := e.get(http.MethodGet, byDigest)
	got, _ := io.ReadAll(again.Body)
	if again.StatusCode != 200 || !bytes.Equal(got, want) {
		t.Fatalf("cached answer: %d, bytes equal %v", again.StatusCode, bytes.Equal(got, want))
	}
	if n := e.count(http.MethodGet, upstreamManifest) - before; n != 0 {
		t.Errorf("a pull by digest with a cached verdict fetched the manifest %d more times", n)
	}
	if rec := e.lastDecision(d.String()); !rec.Cached || rec.Decision != "allow" {
		t.Errorf("decision: %+v", rec)
	}

	// HEAD by tag, the tag pulled before: one upstream HEAD to learn the
	// digest, nothing else (a tag never pulled is fetched by the tag).
	e.get(http.MethodGet, "/v2/lab/signed/app/manifests/v1")
	headsBefore := e.count(http.MethodHead, "/v2/signed/app/manifests/v1")
	getsBefore := e.count(http.MethodGet, "/v2/signed/app/manifests/v1")
	head := e.get(http.MethodHead, "/v2/lab/signed/app/manifests/v1")
	if head.StatusCode != 200 || head.Header.Get("Docker-Content-Digest") != d.String() || head.Header.Get("Content-Length") != fmt.Sprint(len(want)) {
		t.Fatalf("HEAD by tag: %d %v", head.StatusCode, head.Header)
	}
	if h, g := e.count(http.MethodHead, "/v2/signed/app/manifests/v1")-headsBefore, e.count(http.MethodGet, "/v2/signed/app/manifests/v1")-getsBefore; h != 1 || g != 0 {
		t.Errorf("HEAD by tag with a cached verdict made %d upstream HEADs and %d GETs, want 1 and 0", h, g)
	}
}

func TestColdVerificationOfASigTagSignatureCostsTwoUpstreamRequests(t *testing.T) {
	e := newEnv(t, withoutReferrersAPI())
	warm := e.push("signed/app:warm") // learns that the upstream has no referrers API
	e.signTag("signed/app", "ci", warm, warm)
	e.get(http.MethodGet, "/v2/lab/signed/app/manifests/warm")

	d := e.push("signed/app:v1")
	e.signTag("signed/app", "ci", d, d)
	var total int64
	count := func() int64 {
		total = 0
		e.requests.Range(func(_, v any) bool { total += v.(*atomic.Int64).Load(); return true })
		return total
	}
	before := count()
	if resp := e.get(http.MethodGet, "/v2/lab/signed/app/manifests/"+d.String()); resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	// The manifest, the .sig tag, the signature payload: the .sig tag
	// satisfies the rule, so the referrers are not asked.
	if n := count() - before; n > 3 {
		t.Errorf("a cold verification made %d upstream requests, want at most 1 + 2", n)
	}
}
