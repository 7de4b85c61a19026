package proxy_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/authz-proxy/authz-proxy/internal/audit"
	"github.com/authz-proxy/authz-proxy/internal/budget"
	"github.com/authz-proxy/authz-proxy/internal/limits"
	"github.com/authz-proxy/authz-proxy/internal/metrics"
	"github.com/authz-proxy/authz-proxy/internal/proxy"
	"github.com/authz-proxy/authz-proxy/internal/source"
	"github.com/authz-proxy/authz-proxy/internal/store"
	"github.com/authz-proxy/authz-proxy/internal/testkit"
	"github.com/authz-proxy/authz-proxy/internal/upstream"
)

// everyEnvHasAStore makes newEnv give every proxy a store of its own, so
// that a suite written without one runs with one.
var everyEnvHasAStore bool

// tempStore opens a filesystem store in a temporary folder.
func tempStore(t testing.TB) *store.Store {
	t.Helper()
	d, err := store.NewDriver(context.Background(), store.Filesystem, map[string]any{"rootdirectory": t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	st, err := store.New(context.Background(), store.Options{Driver: d, MaxSize: 1 << 30, Owner: "test", SweepInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

// TestTheSecuritySuiteHoldsWithAStore runs the security suite again with
// manifests, evidence and tags going through a store: what it pins holds
// whether bytes come from the upstream or from the store.
func TestTheSecuritySuiteHoldsWithAStore(t *testing.T) {
	everyEnvHasAStore = true
	defer func() { everyEnvHasAStore = false }()
	for _, tt := range []struct {
		name string
		test func(*testing.T)
	}{
		{"DisguisedRunnableImagesAreJudged", TestDisguisedRunnableImagesAreJudged},
		{"GenuineArtifactsAreServedByTagOrDigest", TestGenuineArtifactsAreServedByTagOrDigest},
		{"ReferrersAreAnsweredFromTheFallbackTag", TestReferrersAreAnsweredFromTheFallbackTag},
		{"TheTagAskedForDecidesWhateverWasAskedFirst", TestTheTagAskedForDecidesWhateverWasAskedFirst},
		{"AConditionOnTheTagIsJudgedPerTag", TestAConditionOnTheTagIsJudgedPerTag},
		{"AChildInheritsOnlyWhatItsIndexProved", TestAChildInheritsOnlyWhatItsIndexProved},
		{"OneKeyCountsOnceTowardAThreshold", TestOneKeyCountsOnceTowardAThreshold},
		{"APanicInAVerificationFailsThatPullOnly", TestAPanicInAVerificationFailsThatPullOnly},
		{"CredentialsNeverFollowARedirectToAnotherHost", TestCredentialsNeverFollowARedirectToAnotherHost},
		{"RedirectFromHTTPSToPlainHTTPIsRefused", TestRedirectFromHTTPSToPlainHTTPIsRefused},
		{"ADigestIsJudgedByItsSHA256WhateverAlgorithmWasAskedFor", TestADigestIsJudgedByItsSHA256WhateverAlgorithmWasAskedFor},
		{"MaxSignaturesCountsPerDigestAcrossPlaces", TestMaxSignaturesCountsPerDigestAcrossPlaces},
	} {
		t.Run(tt.name, tt.test)
	}
}

// flush waits until the store runs no fill and no background write.
func (e *storeEnv) flush() {
	e.t.Helper()
	if e.store == nil {
		return
	}
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(time.Millisecond) {
		if st := e.store.Stats(); st.FillsInFlight == 0 && st.WritesInFlight == 0 {
			return
		}
		if time.Now().After(deadline) {
			e.t.Fatal("the store is still writing after a minute")
		}
	}
}

// restart replaces the proxy with a new process's: a new store opened on
// the same folder, new upstream clients, an empty verdict cache, and
// policyText in force. The upstream stays where it is (up or down).
func (e *storeEnv) restart(policyText string) {
	e.t.Helper()
	e.flush()
	e.proxy.Close()
	e.store.Close()
	d, err := store.NewDriver(context.Background(), store.Filesystem, map[string]any{"rootdirectory": e.root})
	if err != nil {
		e.t.Fatal(err)
	}
	st, err := store.New(context.Background(), store.Options{Driver: d, MaxSize: 1 << 30, Owner: "test", Logger: slog.New(slog.NewTextHandler(e.logs, nil)), SweepInterval: time.Hour})
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { st.Close() })
	cfg, pol := e.compile(e.upstream.URL, policyText)
	e.policyText = policyText
	b := budget.New(cfg.Limits.MaxManifestBytesInFlight, 200*time.Millisecond)
	var ups []*upstream.Client
	for _, u := range cfg.Upstreams {
		c, err := upstream.New(upstream.Options{Name: u.Name, URL: u.URL, Insecure: true, Limits: limits.Limits{ResponseTimeout: 5 * time.Second}, Budget: b})
		if err != nil {
			e.t.Fatal(err)
		}
		ups = append(ups, c)
	}
	al, err := audit.New(e.decisions, "")
	if err != nil {
		e.t.Fatal(err)
	}
	e.metrics = metrics.New()
	e.sources = sources(e.t, ups, st, e.tags, e.metrics, nil)
	h, err := proxy.New(proxy.Options{
		Policy: pol, Sources: e.sources, DefaultUpstream: e.labName, MaxEntries: cfg.Cache.MaxEntries, Budget: b,
		Audit: al, Metrics: e.metrics, Clients: compileClients(e.t, cfg),
	})
	if err != nil {
		e.t.Fatal(err)
	}
	e.store, e.server = st, h
	e.metrics.WatchOutages(h.Outages)
	e.proxy = httptest.NewServer(h)
	e.t.Cleanup(e.proxy.Close)
}

// signed pushes a random image to repo:tag upstream, signed by ci.
func (e *env) signed(repoTag string) v1.Hash {
	e.t.Helper()
	d := e.push(repoTag)
	e.signTag(strings.SplitN(repoTag, ":", 2)[0], "ci", d, d)
	return d
}

// manifestOK asserts a 200 for path whose body hashes to want, and
// returns the decision logged for it.
func (e *env) manifestOK(path string, want v1.Hash) testkit.Decision {
	e.t.Helper()
	resp := e.get(http.MethodGet, path)
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		e.t.Fatalf("GET %s: %d %s", path, resp.StatusCode, body)
	}
	if h, _, _ := v1.SHA256(strings.NewReader(string(body))); h != want || resp.Header.Get("Docker-Content-Digest") != want.String() {
		e.t.Fatalf("GET %s: bytes hashing to %s (Docker-Content-Digest %s), want %s", path, h, resp.Header.Get("Docker-Content-Digest"), want)
	}
	return e.lastDecision(want.String())
}

// upstreamTotal counts every request the upstream saw.
func (e *env) upstreamTotal() int64 {
	var n int64
	for _, c := range e.upstreamRequests() {
		n += c
	}
	return n
}

func TestASecondPullIsServedFromTheStoreAndATagIsResolvedWithHEAD(t *testing.T) {
	e := newStoreEnv(t, t.TempDir())
	d := e.signed("signed/app:v1")
	head, getTag, getDigest := e.count(http.MethodHead, "/v2/signed/app/manifests/v1"), e.count(http.MethodGet, "/v2/signed/app/manifests/v1"), e.count(http.MethodGet, "/v2/signed/app/manifests/"+d.String())
	for i, want := range []string{audit.SourceUpstream, audit.SourceStore, audit.SourceStore} {
		if rec := e.manifestOK("/v2/lab/signed/app/manifests/v1", d); rec.Source != want || rec.Decision != "allow" {
			t.Errorf("pull %d by tag: decision %s, source %q; want allow from %s", i+1, rec.Decision, rec.Source, want)
		}
		e.flush()
	}
	if rec := e.manifestOK("/v2/lab/signed/app/manifests/"+d.String(), d); rec.Source != audit.SourceStore {
		t.Errorf("by digest: source %q, want store", rec.Source)
	}
	if n := e.count(http.MethodHead, "/v2/signed/app/manifests/v1") - head; n != 3 {
		t.Errorf("%d upstream HEADs of the tag for three pulls by tag, want 3", n)
	}
	if n := e.count(http.MethodGet, "/v2/signed/app/manifests/"+d.String()) - getDigest; n != 1 {
		t.Errorf("%d upstream GETs of the manifest by digest, want 1: the first pull", n)
	}
	if n := e.count(http.MethodGet, "/v2/signed/app/manifests/v1") - getTag; n != 0 {
		t.Errorf("%d upstream GETs by tag, want 0: the tag is resolved with HEAD, the manifest fetched by its digest", n)
	}

	// After a restart, the manifest comes from the store, not the upstream.
	e.restart(policyYAML)
	if rec := e.manifestOK("/v2/lab/signed/app/manifests/v1", d); rec.Source != audit.SourceStore || rec.Cached {
		t.Errorf("after a restart: source %q, cached %v; want judged again from the store", rec.Source, rec.Cached)
	}
	if n := e.count(http.MethodGet, "/v2/signed/app/manifests/"+d.String()) - getDigest; n != 1 {
		t.Errorf("the manifest was fetched again after the restart (%d GETs)", n)
	}
	fams := scrape(t, e.metrics.Handler())
	if got, _ := value(fams, "authz_proxy_manifests_total", "source", "store", "upstream", "lab"); got != 1 {
		t.Errorf("authz_proxy_manifests_total{source=store} = %v, want 1", got)
	}
	if got, _ := value(fams, "authz_proxy_store_reads_total"); got != 1 {
		t.Errorf("authz_proxy_store_reads_total = %v, want 1", got)
	}
}

func TestImmutableTagsAreServedFromTheirLastResolutionWithoutAskingTheUpstream(t *testing.T) {
	e := newStoreEnv(t, t.TempDir(), withTags(map[string]source.Tags{"lab": {Immutable: []string{"v*.*.*"}, StaleIfError: time.Hour}}))
	release := e.signed("signed/app:v1.2.3")
	latest := e.signed("signed/app:latest")
	e.manifestOK("/v2/lab/signed/app/manifests/v1.2.3", release)
	e.manifestOK("/v2/lab/signed/app/manifests/latest", latest)
	e.flush()

	before := e.upstreamTotal()
	for range 3 {
		if rec := e.manifestOK("/v2/lab/signed/app/manifests/v1.2.3", release); rec.Source != audit.SourceStore {
			t.Errorf("immutable tag: source %q, want store", rec.Source)
		}
		if resp := e.get(http.MethodHead, "/v2/lab/signed/app/manifests/v1.2.3"); resp.StatusCode != 200 || resp.Header.Get("Docker-Content-Digest") != release.String() {
			t.Errorf("HEAD of the immutable tag: %d %s", resp.StatusCode, resp.Header.Get("Docker-Content-Digest"))
		}
	}
	if n := e.upstreamTotal() - before; n != 0 {
		t.Errorf("%d upstream requests for an immutable tag resolved before, want 0", n)
	}
	e.manifestOK("/v2/lab/signed/app/manifests/latest", latest)
	if n := e.upstreamTotal() - before; n != 1 {
		t.Errorf("%d upstream requests for a mutable tag, want 1 (its HEAD)", n)
	}

	// Whoever moves an immutable tag upstream is not followed: the tag is
	// what it was first resolved to, here and after a restart.
	e.signed("signed/app:v1.2.3")
	e.manifestOK("/v2/lab/signed/app/manifests/v1.2.3", release)
	e.restart(policyYAML)
	head := e.count(http.MethodHead, "/v2/signed/app/manifests/v1.2.3")
	if rec := e.manifestOK("/v2/lab/signed/app/manifests/v1.2.3", release); rec.Source != audit.SourceStore {
		t.Errorf("after a restart: source %q", rec.Source)
	}
	if e.count(http.MethodHead, "/v2/signed/app/manifests/v1.2.3") != head {
		t.Error("after a restart, the immutable tag was resolved by the upstream again")
	}
	// Another tag of the pattern, never resolved, is asked for.
	other := e.signed("signed/app:v2.0.0")
	e.manifestOK("/v2/lab/signed/app/manifests/v2.0.0", other)
}

// failures are the ways an upstream fails that stale tags and the store
// answer for: the status a pull never made before gets, and how the
// upstream is made to fail.
var failures = []struct {
	name   string
	status int
	code   string
	fail   func(e *storeEnv)
}{
	{"connection refused", http.StatusServiceUnavailable, "UNAVAILABLE", func(e *storeEnv) { e.upstream.Close() }},
	{"503", http.StatusServiceUnavailable, "UNAVAILABLE", func(e *storeEnv) { e.fault(pathHas("/"), status(http.StatusServiceUnavailable)) }},
	{"500", http.StatusServiceUnavailable, "UNAVAILABLE", func(e *storeEnv) { e.fault(pathHas("/"), status(http.StatusInternalServerError)) }},
	{"429", http.StatusTooManyRequests, "TOOMANYREQUESTS", func(e *storeEnv) {
		// Rate limits count pulls: the registry's ping still answers.
		e.fault(func(r *http.Request) bool { return r.URL.Path != "/v2/" }, status(http.StatusTooManyRequests))
	}},
	{"timeout", http.StatusServiceUnavailable, "UNAVAILABLE", func(e *storeEnv) {
		e.fault(pathHas("/"), func(w http.ResponseWriter, r *http.Request) { <-r.Context().Done() })
	}},
}

func status(code int) func(http.ResponseWriter, *http.Request) {
	return func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(code) }
}

func TestImagesPulledBeforeAreServedWhileTheUpstreamFails(t *testing.T) {
	for _, tt := range failures {
		t.Run(tt.name, func(t *testing.T) {
			e := newStoreEnv(t, t.TempDir(), withLimits(limits.Limits{ResponseTimeout: 300 * time.Millisecond}, 10*time.Second))
			d := e.signed("signed/app:v1")
			never := e.signed("signed/never:v1")
			e.manifestOK("/v2/lab/signed/app/manifests/v1", d)
			e.flush()
			tt.fail(e)

			rec := e.manifestOK("/v2/lab/signed/app/manifests/v1", d)
			if rec.Source != audit.SourceStale || rec.Decision != "allow" {
				t.Errorf("by tag: %s from %q, want allow from stale", rec.Decision, rec.Source)
			}
			if resp := e.get(http.MethodHead, "/v2/lab/signed/app/manifests/v1"); resp.StatusCode != 200 || resp.Header.Get("Docker-Content-Digest") != d.String() {
				t.Errorf("HEAD by tag: %d %s", resp.StatusCode, resp.Header.Get("Docker-Content-Digest"))
			}
			if rec := e.manifestOK("/v2/lab/signed/app/manifests/"+d.String(), d); rec.Source != audit.SourceStore {
				t.Errorf("by digest: source %q, want store", rec.Source)
			}
			for _, ref := range []string{"v1", never.String()} {
				msg := expectError(t, e.get(http.MethodGet, "/v2/lab/signed/never/manifests/"+ref), tt.status, tt.code)
				if !strings.Contains(msg, "upstream lab") {
					t.Errorf("never pulled, %s: %s", ref, msg)
				}
			}
			fams := scrape(t, e.metrics.Handler())
			if got, _ := value(fams, "authz_proxy_stale_tags_total", "upstream", "lab"); got != 2 {
				t.Errorf("authz_proxy_stale_tags_total = %v, want 2", got)
			}
		})
	}
}

func TestStaleIfErrorBoundsHowLongATagIsServedStale(t *testing.T) {
	for _, tt := range []struct {
		name         string
		staleIfError time.Duration
		resolved     time.Duration // how long before the outage the tag was last resolved
		served       bool
	}{
		{"resolved within staleIfError", time.Hour, 59 * time.Minute, true},
		{"resolved before staleIfError", time.Hour, 61 * time.Minute, false},
		{"staleIfError 0s: never stale", 0, 0, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			e := newStoreEnv(t, t.TempDir(), withTags(map[string]source.Tags{"lab": {StaleIfError: tt.staleIfError}}))
			d := e.signed("signed/app:v1")
			e.manifestOK("/v2/lab/signed/app/manifests/v1", d)
			e.flush()
			// The record another replica, or this one before a restart,
			// left: resolved that long ago.
			e.store.SetTag(store.Scope{Upstream: "lab", Repository: "signed/app"}, "v1", store.TagRecord{Digest: d.String(), Resolved: time.Now().Add(-tt.resolved)})
			e.restart(policyYAML)
			e.upstream.Close()
			resp := e.get(http.MethodGet, "/v2/lab/signed/app/manifests/v1")
			if served := resp.StatusCode == 200; served != tt.served {
				body, _ := io.ReadAll(resp.Body)
				t.Fatalf("served %v (%d %s), want %v", served, resp.StatusCode, body, tt.served)
			}
			if !tt.served {
				expectError(t, resp, http.StatusServiceUnavailable, "UNAVAILABLE")
			}
		})
	}
}

func TestAfterARestartWithTheUpstreamDownDigestsAreJudgedAgainUnderThePolicyInForce(t *testing.T) {
	e := newStoreEnv(t, t.TempDir())
	signed := e.signed("signed/app:v1")
	unsigned := e.push("signed/unsigned:v1")
	half := e.signed("two/app:v1") // ci only; two-person needs release too
	never := e.signed("signed/never:v1")
	e.manifestOK("/v2/lab/signed/app/manifests/v1", signed)
	expectError(t, e.get(http.MethodGet, "/v2/lab/signed/unsigned/manifests/v1"), http.StatusForbidden, "DENIED")
	expectError(t, e.get(http.MethodGet, "/v2/lab/two/app/manifests/v1"), http.StatusForbidden, "DENIED")
	// cosign verify reads the signature through the proxy: the .sig
	// manifest, and its layer.
	sigTag := tagOf(signed) + ".sig"
	sigResp := e.get(http.MethodGet, "/v2/lab/signed/app/manifests/"+sigTag)
	sigRaw, _ := io.ReadAll(sigResp.Body)
	sigDigest, _, _ := v1.SHA256(strings.NewReader(string(sigRaw)))
	var sigManifest v1.Manifest
	if err := json.Unmarshal(sigRaw, &sigManifest); err != nil || sigResp.StatusCode != 200 {
		t.Fatalf(".sig manifest: %d %v", sigResp.StatusCode, err)
	}
	if resp, _, err := e.pull(http.MethodGet, blobPath("signed/app", sigManifest.Layers[0])); err != nil || resp.StatusCode != 200 {
		t.Fatalf("signature layer: %v", err)
	}

	e.upstream.Close()
	e.restart(policyYAML)
	for i, ref := range []string{"v1", signed.String()} {
		rec := e.manifestOK("/v2/lab/signed/app/manifests/"+ref, signed)
		if rec.Decision != "allow" || rec.Cached != (i > 0) || len(rec.VerifiedBy) != 1 || rec.VerifiedBy[0].Attestor != "ci" {
			t.Errorf("signed, by %s: %+v; want allowed, verified again by ci", ref, rec)
		}
	}
	for _, tt := range []struct{ path, reason string }{
		{"/v2/lab/signed/unsigned/manifests/v1", "no cosign signature found"},
		{"/v2/lab/two/app/manifests/v1", "missing: release"},
	} {
		if msg := expectError(t, e.get(http.MethodGet, tt.path), http.StatusForbidden, "DENIED"); !strings.Contains(msg, tt.reason) {
			t.Errorf("%s: %s; want %q", tt.path, msg, tt.reason)
		}
	}
	if rec := e.lastDecision(unsigned.String()); rec.Source != audit.SourceStale || rec.Decision != "deny" {
		t.Errorf("the unsigned image: %+v", rec)
	}
	if rec := e.lastDecision(half.String()); rec.Decision != "deny" {
		t.Errorf("the half-signed image: %+v", rec)
	}
	if rec := e.manifestOK("/v2/lab/signed/app/manifests/"+sigTag, sigDigest); rec.Rule != "(signature artifact)" {
		t.Errorf("the signature, recognised from its stored layer: %+v", rec)
	}
	expectError(t, e.get(http.MethodGet, "/v2/lab/signed/never/manifests/v1"), http.StatusServiceUnavailable, "UNAVAILABLE")
	expectError(t, e.get(http.MethodGet, "/v2/lab/signed/never/manifests/"+never.String()), http.StatusServiceUnavailable, "UNAVAILABLE")
	if got, _ := value(scrape(t, e.metrics.Handler()), "authz_proxy_evidence_from_store_total", "upstream", "lab"); got < 3 {
		t.Errorf("authz_proxy_evidence_from_store_total = %v, want at least 3", got)
	}

	// The store keeps what the upstream said, not a verdict: under a
	// policy that takes one signature for lab/two/**, the evidence kept
	// for the image denied before allows it; a rule added before the
	// others denies what was allowed.
	p := strings.Replace(policyYAML, "threshold: 2", "threshold: 1", 1)
	p = strings.Replace(p, "  rules:\n", "  rules:\n    - name: frozen\n      images: [\"lab/signed/app\"]\n      action: deny\n", 1)
	e.reload(p)
	if rec := e.manifestOK("/v2/lab/two/app/manifests/v1", half); rec.Decision != "allow" || rec.Rule != "two-person" || rec.Cached {
		t.Errorf("under the new policy, the image signed by ci alone: %+v", rec)
	}
	if msg := expectError(t, e.get(http.MethodGet, "/v2/lab/signed/app/manifests/v1"), http.StatusForbidden, "DENIED"); !strings.Contains(msg, `rule "frozen"`) {
		t.Errorf("under the new policy, the signed image: %s", msg)
	}
}

func TestTheStoreServesAManifestOnlyToTheRepositoryThatFetchedIt(t *testing.T) {
	e := newStoreEnv(t, t.TempDir())
	d := e.signed("signed/app:v1")
	e.manifestOK("/v2/lab/signed/app/manifests/v1", d)
	e.flush()
	// The rival's repository does not hold it upstream.
	e.fault(pathHas("/rival/"), status(http.StatusNotFound))
	expectError(t, e.get(http.MethodGet, "/v2/lab/signed/rival/manifests/"+d.String()), http.StatusNotFound, "MANIFEST_UNKNOWN")

	// With the upstream down, nothing stored for another repository or
	// another upstream's same repository is served.
	e.upstream.Close()
	for _, path := range []string{"/v2/lab/signed/rival/manifests/" + d.String(), "/v2/other/signed/app/manifests/" + d.String()} {
		expectError(t, e.get(http.MethodGet, path), http.StatusServiceUnavailable, "UNAVAILABLE")
	}
	e.manifestOK("/v2/lab/signed/app/manifests/"+d.String(), d)
}

func TestAStoredManifestOrEvidenceThatWasTamperedWithIsNeverServed(t *testing.T) {
	e := newStoreEnv(t, t.TempDir())
	// Signed as a referrer: both questions (the tag schemes, then the
	// referrers) are kept.
	d := e.push("signed/app:v1")
	e.signReferrer("signed/app", "ci", d, false)
	e.manifestOK("/v2/lab/signed/app/manifests/v1", d)
	e.flush()
	dir := filepath.Join(e.root, "content", "lab", "manifests", "sha256", d.Hex[:2], d.Hex)

	// The evidence kept for the digest: a signature whose bytes were
	// changed no longer verifies, offline or not.
	notes, err := filepath.Glob(filepath.Join(dir, "notes", "signed", "app", "_evidence-*"))
	if err != nil || len(notes) == 0 {
		t.Fatalf("no evidence kept for the digest: %v", err)
	}
	for _, n := range notes {
		b, err := os.ReadFile(n)
		if err != nil {
			t.Fatal(err)
		}
		var doc map[string]any
		if err := json.Unmarshal(b, &doc); err != nil {
			t.Fatal(err)
		}
		sigs, _ := doc["signatures"].([]any)
		for _, s := range sigs {
			sig := s.(map[string]any)
			sig["Signature"] = "MEUCIQDvT0p1ZxGmOQaMn0DqnzqRS4IKmp7qjXG4mlkmcSFd8wIgbVe/ZTEhCFYXXhSDTZjLs6O4jKXD9fc9JQCY2V3fW7I="
		}
		b, _ = json.Marshal(doc)
		if err := os.WriteFile(n, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	e.upstream.Close()
	e.restart(policyYAML)
	if msg := expectError(t, e.get(http.MethodGet, "/v2/lab/signed/app/manifests/"+d.String()), http.StatusForbidden, "DENIED"); !strings.Contains(msg, "none verifies") {
		t.Errorf("tampered evidence: %s", msg)
	}

	// The manifest's bytes changed on disk: refused, evicted, 503.
	if err := os.WriteFile(filepath.Join(dir, "data"), []byte(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","layers":[]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	e.restart(policyYAML)
	expectError(t, e.get(http.MethodGet, "/v2/lab/signed/app/manifests/"+d.String()), http.StatusServiceUnavailable, "UNAVAILABLE")
	if _, err := os.Stat(filepath.Join(dir, "data")); !os.IsNotExist(err) {
		t.Errorf("the tampered manifest was not evicted: %v", err)
	}
}

func TestA429StormOpensNoOutageAndStoredEvidenceCountsOnlyWithinStaleIfError(t *testing.T) {
	const bound = 3 * time.Second
	e := newStoreEnv(t, t.TempDir(), withTags(map[string]source.Tags{"lab": {StaleIfError: bound}}))
	d := e.signed("signed/app:v1")
	e.manifestOK("/v2/lab/signed/app/manifests/v1", d)
	e.flush()
	confirmed := time.Now()
	// One client exhausts the upstream's rate limit: it answers 429 to
	// everything.
	e.fault(func(*http.Request) bool { return true }, func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Retry-After", "60")
		http.Error(w, `{"errors":[{"code":"TOOMANYREQUESTS"}]}`, http.StatusTooManyRequests)
	})
	e.restart(policyYAML)
	// Within staleIfError of the upstream's last word, the kept evidence
	// counts, and the decision says so.
	rec := e.manifestOK("/v2/lab/signed/app/manifests/"+d.String(), d)
	if rec.Decision != "allow" || rec.Evidence != audit.EvidenceStored || rec.EvidenceAge > bound {
		t.Fatalf("within the bound: %+v; want allowed on stored evidence", rec)
	}
	// A 429 is not the upstream failing: no outage is opened, and every
	// request asks it first.
	if out := e.server.Outages(); len(out) != 0 {
		t.Errorf("a 429 opened an outage: %v", out)
	}
	before := e.upstreamTotal()
	for range 3 {
		e.get(http.MethodGet, "/v2/lab/signed/app/manifests/v1")
	}
	if asked := e.upstreamTotal() - before; asked < 3 {
		t.Errorf("the upstream was asked %d times for 3 pulls by tag, want 3: a 429 must not make the store answer first", asked)
	}
	// Past staleIfError of the last confirmation, a signature deleted
	// upstream meanwhile can no longer count: the pull fails closed.
	time.Sleep(time.Until(confirmed.Add(bound + time.Second)))
	e.restart(policyYAML)
	if resp := e.get(http.MethodGet, "/v2/lab/signed/app/manifests/"+d.String()); resp.StatusCode == http.StatusOK {
		t.Fatalf("past staleIfError, stored evidence still counted: %d", resp.StatusCode)
	}
}

func TestAnOutageIsVisibleInTheMetricsAndReadyz(t *testing.T) {
	e := newStoreEnv(t, t.TempDir())
	d := e.signed("signed/app:v1")
	e.manifestOK("/v2/lab/signed/app/manifests/v1", d)
	e.flush()
	e.upstream.Close()
	e.restart(policyYAML)
	e.manifestOK("/v2/lab/signed/app/manifests/"+d.String(), d)
	if v, ok := value(scrape(t, e.metrics.Handler()), "authz_proxy_upstream_outage_since_timestamp_seconds", "upstream", "lab"); !ok || time.Since(time.Unix(int64(v), 0)) > time.Minute {
		t.Errorf("authz_proxy_upstream_outage_since_timestamp_seconds{upstream=lab} = %v (%v)", v, ok)
	}
	rec := httptest.NewRecorder()
	e.metrics.SetReady(true)
	e.metrics.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/readyz", nil))
	if body := rec.Body.String(); rec.Code != http.StatusOK || !strings.Contains(body, "upstream lab: failing since") {
		t.Errorf("/readyz during the outage: %d %q; want ready, saying so", rec.Code, body)
	}
}
