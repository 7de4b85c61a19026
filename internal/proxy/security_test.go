package proxy_test

import (
	"context"
	"crypto/sha512"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/authz-proxy/authz-proxy/internal/limits"
	"github.com/authz-proxy/authz-proxy/internal/oci"
	"github.com/authz-proxy/authz-proxy/internal/policy"
	"github.com/authz-proxy/authz-proxy/internal/proxy"
	"github.com/authz-proxy/authz-proxy/internal/testkit"
)

// runnableTar is a layer a runtime would unpack: an executable script.
func runnableTar(t *testing.T) []byte {
	t.Helper()
	return testkit.Tar(t, "bin/run", []byte("#!/bin/sh\necho pwned\n"))
}

// disguised is an image whose one layer holds content under media type mt,
// with subject set when given.
func disguised(t *testing.T, mt types.MediaType, content []byte, manifestType types.MediaType, subject *v1.Descriptor) v1.Image {
	t.Helper()
	img := mutate.MediaType(empty.Image, manifestType)
	if manifestType == types.OCIManifestSchema1 {
		img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	}
	img, err := mutate.AppendLayers(img, static.NewLayer(content, mt))
	if err != nil {
		t.Fatal(err)
	}
	if subject != nil {
		img = mutate.Subject(img, *subject).(v1.Image)
	}
	return img
}

// TestDisguisedRunnableImagesAreJudged pushes runnable images dressed as
// signature artifacts, the ways found by an attacker with push rights to
// one repository, and checks that the policy judges each, by the .sig tag
// and by digest.
func TestDisguisedRunnableImagesAreJudged(t *testing.T) {
	e := newEnv(t)
	base := e.push("trojan/app:base")
	subject := &v1.Descriptor{MediaType: types.DockerManifestSchema2, Digest: base, Size: 1}
	layer := runnableTar(t)
	tests := []struct {
		name    string
		mt      types.MediaType
		content []byte
		subject *v1.Descriptor
	}{
		{"octet-stream layer with a subject", "application/octet-stream", layer, subject},
		{"layer without a media type", "", layer, nil},
		{"upper-case cosign type", types.MediaType(strings.ToUpper(oci.SimpleSigning)), layer, subject},
		{"cosign type with leading white space", types.MediaType(" " + oci.SimpleSigning), layer, subject},
		{"cosign type holding a tar", oci.SimpleSigning, layer, subject},
		{"DSSE type holding gzip", oci.DSSE, testkit.Gzip(t, layer), nil},
		{"bundle type holding gzip", oci.BundleV03, testkit.Gzip(t, layer), subject},
		{"JSON type", "application/json", layer, subject},
		{"config type", types.OCIConfigJSON, layer, nil},
		{"image layer type with a subject", types.OCILayer, testkit.Gzip(t, layer), subject},
	}
	for i, tt := range tests {
		for _, mtype := range []types.MediaType{types.OCIManifestSchema1, types.DockerManifestSchema2} {
			t.Run(fmt.Sprintf("%s, %s", tt.name, mtype), func(t *testing.T) {
				repo := fmt.Sprintf("trojan/t%d", i)
				img := disguised(t, tt.mt, tt.content, mtype, tt.subject)
				tag := tagOf(base) + ".sig"
				d := e.write(repo+":"+tag, img)
				for _, ref := range []string{tag, d.String()} {
					msg := expectError(t, e.get(http.MethodGet, "/v2/lab/"+repo+"/manifests/"+ref), http.StatusForbidden, "DENIED")
					if !strings.Contains(msg, `rule "signed"`) || !strings.Contains(msg, "not served as a signature artifact") {
						t.Errorf("%s: %s", ref, msg)
					}
					if resp := e.get(http.MethodHead, "/v2/lab/"+repo+"/manifests/"+ref); resp.StatusCode != http.StatusForbidden {
						t.Errorf("HEAD %s: %d", ref, resp.StatusCode)
					}
				}
				if rec := e.lastDecision(d.String()); rec.Decision != "deny" || rec.Rule != "signed" {
					t.Errorf("decision %+v", rec)
				}
			})
		}
	}
}

// TestGenuineArtifactsAreServedByTagOrDigest checks that what cosign writes
// is served without policy whichever way it is asked for.
func TestGenuineArtifactsAreServedByTagOrDigest(t *testing.T) {
	e := newEnv(t, withPolicy(attestationPolicy))
	d := e.push("acme/app:v1")
	e.signTag("acme/app", "ci", d, d)
	e.attestTag("acme/app", d, e.attestation("acme/app", "ci", d, "https://slsa.dev/provenance/v1", provenance("https://ci.example/builder@v1")))
	e.attestReferrer("acme/app", "ci", d, e.attestation("acme/app", "ci", d, "https://slsa.dev/provenance/v1", provenance("https://ci.example/builder@v1")), false)
	ref, _ := name.ParseReference(e.host()+"/acme/app@"+d.String(), name.Insecure)
	referrers, err := remote.Referrers(ref.(name.Digest))
	if err != nil {
		t.Fatal(err)
	}
	rm, _ := referrers.IndexManifest()
	if len(rm.Manifests) != 1 {
		t.Fatalf("%d referrers", len(rm.Manifests))
	}
	for _, tag := range []string{tagOf(d) + ".sig", tagOf(d) + ".att"} {
		artifact := e.get(http.MethodGet, "/v2/lab/acme/app/manifests/"+tag)
		body, _ := io.ReadAll(artifact.Body)
		if artifact.StatusCode != http.StatusOK {
			t.Fatalf("%s: %d %s", tag, artifact.StatusCode, body)
		}
		digest := artifact.Header.Get("Docker-Content-Digest")
		for _, path := range []string{"/v2/lab/acme/app/manifests/" + digest, "/v2/acme/app/manifests/" + digest + "?ns=lab"} {
			if resp := e.get(http.MethodGet, path); resp.StatusCode != http.StatusOK {
				t.Errorf("%s by digest (%s): %d", tag, path, resp.StatusCode)
			}
		}
		if rec := e.lastDecision(digest); rec.Decision != "allow" || rec.Rule != "(signature artifact)" {
			t.Errorf("%s: %+v", tag, rec)
		}
	}
	bundle := rm.Manifests[0].Digest.String()
	if resp := e.get(http.MethodGet, "/v2/lab/acme/app/manifests/"+bundle); resp.StatusCode != http.StatusOK {
		t.Errorf("bundle referrer by digest: %d", resp.StatusCode)
	}
}

// TestReferrersAreAnsweredFromTheFallbackTag checks that clients of an
// upstream without the referrers API get the referrers from the proxy's
// referrers API, while the fallback tag itself, an index, is judged.
func TestReferrersAreAnsweredFromTheFallbackTag(t *testing.T) {
	e := newEnv(t, withoutReferrersAPI())
	d := e.push("signed/app:v1")
	e.signReferrer("signed/app", "ci", d, true)
	resp := e.get(http.MethodGet, "/v2/lab/signed/app/referrers/"+d.String())
	body, _ := io.ReadAll(resp.Body)
	var index struct {
		MediaType string `json:"mediaType"`
		Manifests []struct {
			ArtifactType string `json:"artifactType"`
		} `json:"manifests"`
	}
	if resp.StatusCode != http.StatusOK || json.Unmarshal(body, &index) != nil || len(index.Manifests) == 0 || index.Manifests[0].ArtifactType != oci.SignatureArtifactType {
		t.Fatalf("referrers: %d %s", resp.StatusCode, body)
	}
	if ct := resp.Header.Get("Content-Type"); ct != oci.OCIIndex {
		t.Errorf("Content-Type %q", ct)
	}
	expectError(t, e.get(http.MethodGet, "/v2/lab/signed/app/manifests/"+tagOf(d)), http.StatusForbidden, "DENIED")
	// Nothing refers to the signature itself: an empty index, not a 404.
	unsigned := e.push("signed/other:v1")
	resp = e.get(http.MethodGet, "/v2/lab/signed/other/referrers/"+unsigned.String())
	body, _ = io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), `"manifests":[]`) {
		t.Errorf("referrers of an unsigned image: %d %s", resp.StatusCode, body)
	}
}

// TestTheTagAskedForDecidesWhateverWasAskedFirst pins tag-scoped rules:
// latest is denied and v1 allowed on one signed digest, in either order, by
// GET and by the HEAD fast path.
func TestTheTagAskedForDecidesWhateverWasAskedFirst(t *testing.T) {
	const tagPolicy = `
attestors:
  - name: ci
    publicKeys: [{file: ci.pub}]
policy:
  rules:
    - name: no-latest
      images: ["lab/tagged/app:latest"]
      action: deny
    - name: signed
      images: ["lab/**"]
      require:
        - signature: {attestors: [ci]}
`
	for _, order := range [][]string{{"latest", "v1"}, {"v1", "latest"}} {
		t.Run(strings.Join(order, " then "), func(t *testing.T) {
			e := newEnv(t, withPolicy(tagPolicy))
			img, _ := random.Image(256, 1)
			d := e.write("tagged/app:v1", img)
			e.write("tagged/app:latest", img)
			e.signTag("tagged/app", "ci", d, d)
			for round := range 2 { // the second round is answered from the cache
				for _, tag := range order {
					for _, method := range []string{http.MethodGet, http.MethodHead} {
						resp := e.get(method, "/v2/lab/tagged/app/manifests/"+tag)
						want := map[string]int{"latest": http.StatusForbidden, "v1": http.StatusOK}[tag]
						if resp.StatusCode != want {
							t.Errorf("round %d: %s %s: %d, want %d", round, method, tag, resp.StatusCode, want)
						}
					}
				}
			}
			if resp := e.get(http.MethodGet, "/v2/lab/tagged/app/manifests/"+d.String()); resp.StatusCode != http.StatusOK {
				t.Errorf("by digest: %d", resp.StatusCode)
			}
		})
	}
}

// TestAConditionOnTheTagIsJudgedPerTag pins a CEL condition that reads
// image.tag: its outcome is kept per tag.
func TestAConditionOnTheTagIsJudgedPerTag(t *testing.T) {
	policy := strings.Replace(attestationPolicy, `condition: 'predicate.runDetails.builder.id == "https://ci.example/builder@v1"'`,
		`condition: 'image.tag.startsWith("v")'`, 1)
	if policy == attestationPolicy {
		t.Fatal("the attestation policy changed; update this test")
	}
	for _, order := range [][]string{{"latest", "v1"}, {"v1", "latest"}} {
		t.Run(strings.Join(order, " then "), func(t *testing.T) {
			e := newEnv(t, withPolicy(policy))
			img, _ := random.Image(256, 1)
			d := e.write("builder/app:v1", img)
			e.write("builder/app:latest", img)
			e.signTag("builder/app", "ci", d, d)
			e.attestTag("builder/app", d, e.attestation("builder/app", "ci", d, "https://slsa.dev/provenance/v1", provenance("https://ci.example/builder@v1")))
			for range 2 {
				for _, tag := range order {
					want := map[string]int{"latest": http.StatusForbidden, "v1": http.StatusOK}[tag]
					if resp := e.get(http.MethodGet, "/v2/lab/builder/app/manifests/"+tag); resp.StatusCode != want {
						t.Errorf("%s: %d, want %d", tag, resp.StatusCode, want)
					}
				}
			}
		})
	}
}

// TestAChildInheritsOnlyWhatItsIndexProved pins index inheritance: a rule
// on the child's own digest, and the child's own requirements under
// another rule, still apply after its signed index is allowed.
func TestAChildInheritsOnlyWhatItsIndexProved(t *testing.T) {
	e := newEnv(t)
	idx, err := random.Index(128, 1, 3)
	if err != nil {
		t.Fatal(err)
	}
	im, _ := idx.IndexManifest()
	blocked, other := im.Manifests[0].Digest, im.Manifests[1].Digest
	e.reload(fmt.Sprintf(`
attestors:
  - name: ci
    publicKeys: [{file: ci.pub}]
  - name: release
    publicKeys: [{file: release.pub}]
policy:
  rules:
    - name: blocked-build
      images: ["lab/multi/app@%s"]
      action: deny
    - name: release-only
      images: ["lab/multi/app@%s"]
      require:
        - signature: {attestors: [release]}
    - name: signed
      images: ["lab/**"]
      require:
        - signature: {attestors: [ci]}
`, blocked, other))
	ref, _ := name.ParseReference(e.host()+"/multi/app:v1", name.Insecure)
	if err := remote.WriteIndex(ref, idx); err != nil {
		t.Fatal(err)
	}
	d, _ := idx.Digest()
	e.signTag("multi/app", "ci", d, d)
	// The child that a rule denies, first alone, then after the index.
	expectError(t, e.get(http.MethodGet, "/v2/lab/multi/app/manifests/"+blocked.String()), http.StatusForbidden, "DENIED")
	if resp := e.get(http.MethodGet, "/v2/lab/multi/app/manifests/v1"); resp.StatusCode != http.StatusOK {
		t.Fatalf("index: %d", resp.StatusCode)
	}
	if msg := expectError(t, e.get(http.MethodGet, "/v2/lab/multi/app/manifests/"+blocked.String()), http.StatusForbidden, "DENIED"); !strings.Contains(msg, `rule "blocked-build"`) {
		t.Errorf("blocked child: %s", msg)
	}
	// A child that another rule covers needs what that rule requires.
	if msg := expectError(t, e.get(http.MethodGet, "/v2/lab/multi/app/manifests/"+other.String()), http.StatusForbidden, "DENIED"); !strings.Contains(msg, "attestor release") {
		t.Errorf("child under release-only: %s", msg)
	}
	// The third inherits the index's ci signature.
	third := im.Manifests[2].Digest.String()
	if resp := e.get(http.MethodGet, "/v2/lab/multi/app/manifests/"+third); resp.StatusCode != http.StatusOK {
		t.Errorf("third child: %d", resp.StatusCode)
	}
	if rec := e.lastDecision(third); !strings.Contains(strings.Join(rec.Reasons, " "), "listed in allowed index "+d.String()) {
		t.Errorf("third child's record: %+v", rec)
	}
}

// TestOneKeyCountsOnceTowardAThreshold pins thresholds: two attestors that
// hold the same key (a rotation) are not two signers.
func TestOneKeyCountsOnceTowardAThreshold(t *testing.T) {
	const rotation = `
attestors:
  - name: ci-2025
    publicKeys: [{file: ci.pub}]
  - name: ci-2026
    publicKeys: [{file: ci.pub}, {file: release.pub}]
policy:
  rules:
    - name: two
      images: ["lab/**"]
      require:
        - signature: {attestors: [ci-2025, ci-2026], threshold: 2}
`
	e := newEnv(t, withPolicy(rotation))
	one := e.push("app/one:v1")
	e.signTag("app/one", "ci", one, one)
	msg := expectError(t, e.get(http.MethodGet, "/v2/lab/app/one/manifests/v1"), http.StatusForbidden, "DENIED")
	if !strings.Contains(msg, "signed by 1 of the 2 attestors required") || !strings.Contains(msg, "a key counts once") {
		t.Errorf("one signature by a shared key: %s", msg)
	}
	// Two signatures by the one key are still one key.
	e.signReferrer("app/one", "ci", one, false)
	e.reload(rotation + "# again\n") // a new generation: nothing cached
	expectError(t, e.get(http.MethodGet, "/v2/lab/app/one/manifests/v1"), http.StatusForbidden, "DENIED")
	// Two keys: each attestor takes one (ci-2026 the key only it holds).
	two := e.push("app/two:v1")
	e.signTag("app/two", "ci", two, two)
	e.signReferrer("app/two", "release", two, false)
	if resp := e.get(http.MethodGet, "/v2/lab/app/two/manifests/v1"); resp.StatusCode != http.StatusOK {
		t.Fatalf("two keys: %d", resp.StatusCode)
	}
	rec := e.lastDecision(two.String())
	if len(rec.VerifiedBy) != 2 || rec.VerifiedBy[0].KeyID == rec.VerifiedBy[1].KeyID {
		t.Errorf("verified by %+v", rec.VerifiedBy)
	}
}

// panicking is a registry whose evidence look-ups panic while armed.
type panicking struct {
	policy.Registry
	armed *atomic.Bool
}

func (p panicking) Evidence(ctx context.Context, repo, digest string, want oci.Want) (*oci.Evidence, error) {
	if p.armed.Load() {
		var m map[string]int
		m["boom"]++ //nolint:staticcheck // SA5000: a nil map write, a runtime panic inside a verification
	}
	return p.Registry.Evidence(ctx, repo, digest, want)
}

func TestAPanicInAVerificationFailsThatPullOnly(t *testing.T) {
	e := newEnv(t)
	var armed atomic.Bool
	armed.Store(true)
	proxy.WrapRegistry(e.server, func(r policy.Registry) policy.Registry { return panicking{r, &armed} })
	d := e.push("signed/app:v1")
	e.signTag("signed/app", "ci", d, d)
	msg := expectError(t, e.get(http.MethodGet, "/v2/lab/signed/app/manifests/v1"), http.StatusServiceUnavailable, "UNAVAILABLE")
	if !strings.Contains(msg, "panic") || !strings.Contains(msg, "failing closed") {
		t.Errorf("message: %s", msg)
	}
	if rec := e.lastDecision(d.String()); rec.Decision != "error" {
		t.Errorf("decision %+v", rec)
	}
	if got, _ := value(scrape(t, e.metrics.Handler()), "authz_proxy_panics_total"); got != 1 {
		t.Errorf("authz_proxy_panics_total = %v, want 1", got)
	}
	armed.Store(false)
	if resp := e.get(http.MethodGet, "/v2/lab/signed/app/manifests/v1"); resp.StatusCode != http.StatusOK {
		t.Fatalf("the next pull: %d", resp.StatusCode)
	}
}

// TestCredentialsNeverFollowARedirectToAnotherHost has a token-protected
// upstream redirect blob and manifest reads to a store elsewhere.
func TestCredentialsNeverFollowARedirectToAnotherHost(t *testing.T) {
	e := newEnv(t, withCredentials("bot", "s3cret"))
	d := e.push("signed/app:v1")
	e.signTag("signed/app", "ci", d, d)
	var leaked, served atomic.Int64
	elsewhere := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		served.Add(1)
		if r.Header.Get("Authorization") != "" {
			leaked.Add(1)
		}
		e.upstream.Config.Handler.ServeHTTP(w, r)
	}))
	defer elsewhere.Close()
	f := func(w http.ResponseWriter, r *http.Request) bool {
		switch {
		case r.Host == strings.TrimPrefix(elsewhere.URL, "http://"):
			return false
		case r.URL.Path == "/token":
			if u, p, ok := r.BasicAuth(); !ok || u != "bot" || p != "s3cret" {
				w.WriteHeader(http.StatusUnauthorized)
				return true
			}
			_, _ = io.WriteString(w, `{"token":"tok"}`)
			return true
		case r.Header.Get("Authorization") != "Bearer tok":
			w.Header().Set("WWW-Authenticate", `Bearer realm="`+e.upstream.URL+`/token",service="test"`)
			w.WriteHeader(http.StatusUnauthorized)
			return true
		case strings.Contains(r.URL.Path, "/blobs/") || strings.Contains(r.URL.Path, "/manifests/sha256:"):
			http.Redirect(w, r, elsewhere.URL+r.URL.Path, http.StatusTemporaryRedirect)
			return true
		}
		return false
	}
	e.front.Store(&f)
	if err := pullFirstLayer(t, e.proxyHost()+"/lab/signed/app@"+d.String()); err != nil {
		t.Fatal(err)
	}
	if served.Load() == 0 {
		t.Fatal("nothing was redirected; the test tests nothing")
	}
	if n := leaked.Load(); n != 0 {
		t.Errorf("%d requests to another host carried the upstream credential", n)
	}
}

func TestRedirectFromHTTPSToPlainHTTPIsRefused(t *testing.T) {
	var handler atomic.Pointer[http.Handler]
	tlsUpstream := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		(*handler.Load()).ServeHTTP(w, r)
	}))
	defer tlsUpstream.Close()
	e := newEnv(t, withUpstreamURL(tlsUpstream.URL))
	handler.Store(&e.upstream.Config.Handler)
	d := e.push("signed/app:v1")
	e.signTag("signed/app", "ci", d, d)
	if resp := e.get(http.MethodGet, "/v2/lab/signed/app/manifests/v1"); resp.StatusCode != http.StatusOK {
		t.Fatalf("over TLS: %d", resp.StatusCode)
	}
	img, _ := remote.Image(mustRef(t, e.host()+"/signed/app:v1"))
	layers, _ := img.Layers()
	ld, _ := layers[0].Digest()
	f := func(w http.ResponseWriter, r *http.Request) bool {
		if strings.Contains(r.URL.Path, "/blobs/") && r.TLS != nil {
			http.Redirect(w, r, e.upstream.URL+r.URL.Path, http.StatusTemporaryRedirect)
			return true
		}
		return false
	}
	e.front.Store(&f)
	msg := expectError(t, e.get(http.MethodGet, "/v2/lab/signed/app/blobs/"+ld.String()), http.StatusServiceUnavailable, "UNAVAILABLE")
	if !strings.Contains(msg, "from https to plain http") {
		t.Errorf("message: %s", msg)
	}
}

func mustRef(t *testing.T, s string) name.Reference {
	t.Helper()
	ref, err := name.ParseReference(s, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	return ref
}

// TestADigestIsJudgedByItsSHA256WhateverAlgorithmWasAskedFor: a rule on the
// sha256 digest holds for a request by sha512 of the same bytes.
func TestADigestIsJudgedByItsSHA256WhateverAlgorithmWasAskedFor(t *testing.T) {
	e := newEnv(t)
	img, _ := random.Image(256, 1)
	d := e.write("signed/app:v1", img)
	e.signTag("signed/app", "ci", d, d)
	raw, _ := img.RawManifest()
	sum := sha512.Sum512(raw)
	sha512Digest := "sha512:" + hex.EncodeToString(sum[:])
	f := func(w http.ResponseWriter, r *http.Request) bool {
		if strings.HasSuffix(r.URL.Path, "/manifests/"+sha512Digest) {
			w.Header().Set("Content-Type", string(types.DockerManifestSchema2))
			w.Header().Set("Docker-Content-Digest", sha512Digest)
			_, _ = w.Write(raw)
			return true
		}
		return false
	}
	e.front.Store(&f)
	if resp := e.get(http.MethodGet, "/v2/lab/signed/app/manifests/"+sha512Digest); resp.StatusCode != http.StatusOK || resp.Header.Get("Docker-Content-Digest") != sha512Digest {
		t.Fatalf("by sha512 while allowed: %d %v", resp.StatusCode, resp.Header)
	}
	e.reload(strings.Replace(policyYAML, "  rules:\n", "  rules:\n    - {name: recalled, images: [\"lab/signed/app@"+d.String()+"\"], action: deny}\n", 1))
	for _, ref := range []string{"v1", d.String(), sha512Digest} {
		msg := expectError(t, e.get(http.MethodGet, "/v2/lab/signed/app/manifests/"+ref), http.StatusForbidden, "DENIED")
		if !strings.Contains(msg, `rule "recalled"`) {
			t.Errorf("%s: %s", ref, msg)
		}
	}
}

// TestMaxSignaturesCountsPerDigestAcrossPlaces: the tag schemes and the
// referrers are read one after the other; the limit holds for both.
func TestMaxSignaturesCountsPerDigestAcrossPlaces(t *testing.T) {
	e := newEnv(t, withLimits(limits.Limits{MaxSignatures: 3}, 10*time.Second))
	d := e.push("signed/app:v1")
	for range 2 {
		e.signTag("signed/app", "nobody", d, d)
		e.signReferrer("signed/app", "nobody", d, false)
	}
	var blobs atomic.Int64
	f := func(w http.ResponseWriter, r *http.Request) bool {
		if strings.Contains(r.URL.Path, "/blobs/") {
			blobs.Add(1)
		}
		return false
	}
	e.front.Store(&f)
	msg := expectError(t, e.get(http.MethodGet, "/v2/lab/signed/app/manifests/v1"), http.StatusForbidden, "DENIED")
	if !strings.Contains(msg, "more than 3 signatures stored") {
		t.Errorf("message: %s", msg)
	}
	if n := blobs.Load(); n > 3 {
		t.Errorf("%d signature layers read for one digest, limit 3", n)
	}
}

// pullFirstLayer pulls ref through the proxy with go-containerregistry and
// reads its first layer whole.
func pullFirstLayer(t *testing.T, ref string) error {
	t.Helper()
	r, err := name.ParseReference(ref, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	img, err := remote.Image(r)
	if err != nil {
		return err
	}
	layers, err := img.Layers()
	if err != nil {
		return err
	}
	rc, err := layers[0].Compressed()
	if err != nil {
		return err
	}
	defer rc.Close()
	_, err = io.Copy(io.Discard, rc)
	return err
}
