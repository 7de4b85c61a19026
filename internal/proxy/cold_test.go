package proxy_test

import (
	"net/http"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// upstreamRequests lists the upstream requests seen, "METHOD path" with
// their counts.
func (e *env) upstreamRequests() map[string]int64 {
	out := map[string]int64{}
	e.requests.Range(func(k, v any) bool {
		out[k.(string)] = v.(*atomic.Int64).Load()
		return true
	})
	return out
}

// since lists the upstream requests made after before, with the digests
// and tags of this test written as placeholders.
func since(before, after map[string]int64, names map[string]string) []string {
	var out []string
	for k, n := range after {
		named := k
		for long, short := range names {
			named = strings.ReplaceAll(named, long, short)
		}
		for ; n > before[k]; n-- {
			out = append(out, named)
		}
	}
	sort.Strings(out)
	return out
}

func TestColdDecisionCostsTheFewestUpstreamRequestsItsSignatureFormatAllows(t *testing.T) {
	for _, tt := range []struct {
		name string
		opts []envOption
		sign func(e *env, d v1.Hash)
		// byTag pulls v1; otherwise the pull is by digest.
		byTag bool
		want  []string
		// before, when set, signs an image of the same repository that is
		// pulled first (else it is unsigned, and denied).
		before func(e *env, d v1.Hash)
	}{
		// The payload `cosign sign` writes is known from the digest and
		// the repository: its bytes are checked against the layer's digest,
		// not read.
		{"a .sig tag signature, pulled by digest", nil, func(e *env, d v1.Hash) { e.signTag("signed/app", "ci", d, d) }, false,
			[]string{"GET /v2/signed/app/manifests/<digest>", "GET /v2/signed/app/manifests/<tag>.sig"}, nil},
		{"a .sig tag signature, pulled by tag", nil, func(e *env, d v1.Hash) { e.signTag("signed/app", "ci", d, d) }, true,
			[]string{"GET /v2/signed/app/manifests/<tag>.sig", "GET /v2/signed/app/manifests/v1"}, nil},
		// Any other payload is read.
		{"a .sig tag signature with annotations, pulled by digest", nil, func(e *env, d v1.Hash) {
			e.signTagWith("signed/app", "ci", d, map[string]any{"build": "42"})
		}, false,
			[]string{"GET /v2/signed/app/blobs/<payload>", "GET /v2/signed/app/manifests/<digest>", "GET /v2/signed/app/manifests/<tag>.sig"}, nil},
		// The tag schemes are read first: a referrer costs their tag more.
		{"a cosign signature among the referrers", nil, func(e *env, d v1.Hash) { e.signReferrer("signed/app", "ci", d, false) }, false,
			[]string{"GET /v2/signed/app/manifests/<digest>", "GET /v2/signed/app/manifests/<referrer>", "GET /v2/signed/app/manifests/<tag>.sig", "GET /v2/signed/app/referrers/<digest>"}, nil},
		{"a cosign v3 bundle among the referrers", nil, func(e *env, d v1.Hash) { e.keyBundle("signed/app", d) }, false,
			[]string{"GET /v2/signed/app/blobs/<payload>", "GET /v2/signed/app/manifests/<digest>", "GET /v2/signed/app/manifests/<referrer>", "GET /v2/signed/app/manifests/<tag>.sig", "GET /v2/signed/app/referrers/<digest>"}, nil},
		// An upstream without the referrers API is known to be one after
		// the warm-up: its fallback tag is read directly.
		{"a cosign signature in the referrers fallback tag", []envOption{withoutReferrersAPI()}, func(e *env, d v1.Hash) { e.signReferrer("signed/app", "ci", d, true) }, false,
			[]string{"GET /v2/signed/app/manifests/<digest>", "GET /v2/signed/app/manifests/<referrer>", "GET /v2/signed/app/manifests/<tag>", "GET /v2/signed/app/manifests/<tag>.sig"}, nil},
		// Where the last signature of the repository was found is read
		// first: the referrers, for a repository signed by cosign v3.
		{"a cosign v3 bundle, in a repository whose signatures are bundles", nil, func(e *env, d v1.Hash) { e.keyBundle("signed/app", d) }, false,
			[]string{"GET /v2/signed/app/blobs/<payload>", "GET /v2/signed/app/manifests/<digest>", "GET /v2/signed/app/manifests/<referrer>", "GET /v2/signed/app/referrers/<digest>"},
			func(e *env, d v1.Hash) { e.keyBundle("signed/app", d) }},
		// ... and the tag schemes after them, when they do not satisfy.
		{"a .sig tag signature, in a repository whose signatures were bundles", nil, func(e *env, d v1.Hash) { e.signTag("signed/app", "ci", d, d) }, false,
			[]string{"GET /v2/signed/app/manifests/<digest>", "GET /v2/signed/app/manifests/<tag>.sig", "GET /v2/signed/app/referrers/<digest>"},
			func(e *env, d v1.Hash) { e.keyBundle("signed/app", d) }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, tt.opts...)
			// A first pull in the same repository: the token handshake,
			// learning whether the upstream has the referrers API, and where
			// the repository's signatures are.
			first, status := e.push("signed/app:first"), http.StatusForbidden
			if tt.before != nil {
				tt.before(e, first)
				status = http.StatusOK
			}
			if resp := e.get(http.MethodGet, "/v2/lab/signed/app/manifests/first"); resp.StatusCode != status {
				t.Fatalf("warm-up: %d, want %d", resp.StatusCode, status)
			}
			d := e.push("signed/app:v1")
			tt.sign(e, d)
			names := map[string]string{d.String(): "<digest>", tagOf(d): "<tag>"}
			before := e.upstreamRequests()
			path := "/v2/lab/signed/app/manifests/" + d.String()
			if tt.byTag {
				path = "/v2/lab/signed/app/manifests/v1"
			}
			resp := e.get(http.MethodGet, path)
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("%d, want 200", resp.StatusCode)
			}
			got := since(before, e.upstreamRequests(), names)
			// The signature's own digests are not known in advance.
			for i, r := range got {
				switch {
				case strings.HasPrefix(r, "GET /v2/signed/app/blobs/sha256:"):
					got[i] = "GET /v2/signed/app/blobs/<payload>"
				case strings.HasPrefix(r, "GET /v2/signed/app/manifests/sha256:"):
					got[i] = "GET /v2/signed/app/manifests/<referrer>"
				}
			}
			sort.Strings(got)
			if strings.Join(got, "\n") != strings.Join(tt.want, "\n") {
				t.Errorf("upstream requests of one cold decision:\n  %s\nwant\n  %s", strings.Join(got, "\n  "), strings.Join(tt.want, "\n  "))
			}
		})
	}
}

func TestColdPullByDigestReadsTheSignatureWhileTheManifestIsFetched(t *testing.T) {
	e := newEnv(t)
	d := e.push("signed/app:v1")
	e.signTag("signed/app", "ci", d, d)
	sigAsked := make(chan struct{})
	var once atomic.Bool
	var overlapped atomic.Bool
	f := func(_ http.ResponseWriter, r *http.Request) bool {
		switch r.URL.Path {
		case "/v2/signed/app/manifests/" + tagOf(d) + ".sig":
			if once.CompareAndSwap(false, true) {
				close(sigAsked)
			}
		case "/v2/signed/app/manifests/" + d.String():
			// The manifest is answered only once the signature has been
			// asked for: read one after the other, they would wait here
			// until the deadline.
			select {
			case <-sigAsked:
				overlapped.Store(true)
			case <-time.After(5 * time.Second):
			}
		}
		return false
	}
	e.front.Store(&f)
	if resp := e.get(http.MethodGet, "/v2/lab/signed/app/manifests/"+d.String()); resp.StatusCode != http.StatusOK {
		t.Fatalf("%d, want 200", resp.StatusCode)
	}
	if !overlapped.Load() {
		t.Error("the .sig tag was not asked for while the manifest was being fetched")
	}
	if rec := e.lastDecision(d.String()); rec.Decision != "allow" || len(rec.VerifiedBy) != 1 || rec.VerifiedBy[0].Attestor != "ci" {
		t.Errorf("decision %+v, want allowed by ci", rec)
	}
}

// TestAPullAfterAFailedManifestIsVerified: the signatures read ahead of a
// manifest that failed do not outlive that pull (the judge's own test,
// TestAReadAheadIsTakenByItsVerificationOnlyWhileItIsHeld, counts the
// reads); the next pull is verified, and reads the .sig tag at most once:
// it may join the read still finishing, as reads of one manifest are
// shared.
func TestAPullAfterAFailedManifestIsVerified(t *testing.T) {
	e := newEnv(t)
	d := e.push("signed/app:v1")
	e.signTag("signed/app", "ci", d, d)
	sig := "/v2/signed/app/manifests/" + tagOf(d) + ".sig"
	// The manifest fails once the signature read ahead has been answered,
	// so that the read is counted before the next pull.
	sigServed := make(chan struct{})
	var once sync.Once
	f := func(w http.ResponseWriter, r *http.Request) bool {
		switch r.URL.Path {
		case sig:
			e.registry.ServeHTTP(w, r)
			once.Do(func() { close(sigServed) })
			return true
		case "/v2/signed/app/manifests/" + d.String():
			select {
			case <-sigServed:
			case <-time.After(5 * time.Second):
				t.Error("the signature was not read ahead of the manifest")
			}
			http.Error(w, "boom", http.StatusInternalServerError)
			return true
		}
		return false
	}
	e.front.Store(&f)
	if resp := e.get(http.MethodGet, "/v2/lab/signed/app/manifests/"+d.String()); resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("%d, want 503", resp.StatusCode)
	}
	e.front.Store(nil)
	before := e.count(http.MethodGet, sig)
	if resp := e.get(http.MethodGet, "/v2/lab/signed/app/manifests/"+d.String()); resp.StatusCode != http.StatusOK {
		t.Fatalf("once the upstream answers: %d, want 200", resp.StatusCode)
	}
	if rec := e.lastDecision(d.String()); rec.Decision != "allow" || rec.Cached || len(rec.VerifiedBy) != 1 || rec.VerifiedBy[0].Attestor != "ci" {
		t.Errorf("decision %+v, want verified and allowed by ci", rec)
	}
	if n := e.count(http.MethodGet, sig) - before; n > 1 {
		t.Errorf("the next pull read the .sig tag %d times, want at most once", n)
	}
}
