package proxy_test

import (
	"fmt"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/authz-proxy/authz-proxy/internal/config"
	"github.com/authz-proxy/authz-proxy/internal/source"
)

// pullDigest sends method for path and returns the digest the proxy
// answered with; the pull must succeed.
func (e *env) pullDigest(method, path string) string {
	e.t.Helper()
	resp := e.get(method, path)
	if resp.StatusCode != http.StatusOK {
		e.t.Fatalf("%s %s: %d", method, path, resp.StatusCode)
	}
	return resp.Header.Get("Docker-Content-Digest")
}

func TestAMovedTagIsSeenWithinTagTTLByHeadAndByGet(t *testing.T) {
	const ttl = time.Minute
	for _, tt := range []struct {
		name string
		ttl  time.Duration
		// within: how long after the upstream confirmed the old digest the
		// tag is pulled again.
		within time.Duration
		// moved: the new digest is answered (else the old one, without
		// asking the upstream).
		moved bool
	}{
		{"tagTTL 0: at once", 0, 0, true},
		{"within tagTTL: the digest confirmed last, without asking", ttl, ttl - time.Second, false},
		{"at tagTTL: the upstream is asked again", ttl, ttl, true},
		{"past tagTTL: the upstream is asked again", ttl, ttl + time.Second, true},
	} {
		for _, store := range []bool{false, true} {
			name := tt.name
			if store {
				name += ", with a store"
			}
			t.Run(name, func(t *testing.T) {
				opts := []envOption{withTags(map[string]source.Tags{"lab": {TTL: tt.ttl, StaleIfError: config.DefaultStaleIfError}})}
				if store {
					opts = append(opts, withStore(tempStore(t)))
				}
				e := newEnv(t, opts...)
				old := e.signed("signed/app:v1")
				const path = "/v2/lab/signed/app/manifests/v1"
				for _, method := range []string{http.MethodHead, http.MethodGet} {
					if got := e.pullDigest(method, path); got != old.String() {
						t.Fatalf("%s before the move: %s, want %s", method, got, old)
					}
				}
				moved := e.signed("signed/app:v1")
				e.clock.Advance(tt.within)
				heads := e.count(http.MethodHead, "/v2/signed/app/manifests/v1")
				want := old
				if tt.moved {
					want = moved
				}
				for _, method := range []string{http.MethodHead, http.MethodGet} {
					if got := e.pullDigest(method, path); got != want.String() {
						t.Errorf("%s after the move: %s, want %s", method, got, want)
					}
				}
				asked := e.count(http.MethodHead, "/v2/signed/app/manifests/v1") - heads
				if !tt.moved && asked != 0 {
					t.Errorf("within tagTTL the upstream was asked %d times, want 0", asked)
				}
				if tt.moved && tt.ttl > 0 && asked != 1 {
					t.Errorf("past tagTTL the upstream was asked %d times for a HEAD and a GET, want 1 (the GET then uses the HEAD's answer)", asked)
				}
			})
		}
	}
}

func TestAHeadAndAGetOfOneTagAnswerTheSameDigestAtTheSameCost(t *testing.T) {
	e := newEnv(t)
	d := e.signed("signed/app:v1")
	const path = "/v2/lab/signed/app/manifests/v1"
	e.pullDigest(http.MethodGet, path) // the verdict and the bytes
	for _, method := range []string{http.MethodHead, http.MethodGet, http.MethodHead} {
		total := e.upstreamTotal()
		heads := e.count(http.MethodHead, "/v2/signed/app/manifests/v1")
		if got := e.pullDigest(method, path); got != d.String() {
			t.Errorf("%s: %s, want %s", method, got, d)
		}
		if asked, head := e.upstreamTotal()-total, e.count(http.MethodHead, "/v2/signed/app/manifests/v1")-heads; asked != 1 || head != 1 {
			t.Errorf("%s by tag, verdict cached, cost %d upstream requests (%d HEAD), want the one HEAD that resolves the tag", method, asked, head)
		}
	}
}

func TestConcurrentPullsOfOneTagShareOneUpstreamHead(t *testing.T) {
	for _, method := range []string{http.MethodHead, http.MethodGet} {
		t.Run(method, func(t *testing.T) {
			e := newEnv(t)
			d := e.signed("signed/app:v1")
			const path = "/v2/lab/signed/app/manifests/v1"
			e.pullDigest(http.MethodGet, path)
			// The upstream holds its answers to HEADs of the tag until
			// every client has asked.
			const clients = 20
			var arrived sync.WaitGroup
			arrived.Add(1)
			release := make(chan struct{})
			var once sync.Once
			front := func(_ http.ResponseWriter, r *http.Request) bool {
				if r.Method == http.MethodHead && r.URL.Path == "/v2/signed/app/manifests/v1" {
					once.Do(arrived.Done)
					<-release
				}
				return false
			}
			e.front.Store(&front)
			heads := e.count(http.MethodHead, "/v2/signed/app/manifests/v1")
			var wg sync.WaitGroup
			got := make([]string, clients)
			for i := range clients {
				wg.Go(func() { got[i] = e.pullDigest(method, path) })
			}
			arrived.Wait()
			// Every client's request reaches the proxy while the one HEAD
			// is held, and joins it.
			for e.inProxy.Load() < clients {
				time.Sleep(time.Millisecond)
			}
			time.Sleep(100 * time.Millisecond)
			close(release)
			wg.Wait()
			for i, g := range got {
				if g != d.String() {
					t.Errorf("client %d: %s, want %s", i, g, d)
				}
			}
			if n := e.count(http.MethodHead, "/v2/signed/app/manifests/v1") - heads; n != 1 {
				t.Errorf("%d concurrent %ss of one tag cost %d upstream HEADs, want 1", clients, method, n)
			}
		})
	}
}

// TestATagConfirmedWithinTagTTLIsNeverAnotherRepositorysDigest: within
// tagTTL a tag is answered from the digest its own repository's upstream
// confirmed; the same tag of another repository is asked of the upstream,
// and gets its own digest.
func TestATagConfirmedWithinTagTTLIsNeverAnotherRepositorysDigest(t *testing.T) {
	for _, store := range []bool{false, true} {
		t.Run(fmt.Sprintf("store %v", store), func(t *testing.T) {
			opts := []envOption{withTags(map[string]source.Tags{"lab": {TTL: time.Hour, StaleIfError: config.DefaultStaleIfError}})}
			if store {
				opts = append(opts, withStore(tempStore(t)))
			}
			e := newEnv(t, opts...)
			mine, theirs := e.signed("signed/app:v1"), e.signed("other/app:v1")
			for _, method := range []string{http.MethodHead, http.MethodGet} {
				if got := e.pullDigest(method, "/v2/lab/signed/app/manifests/v1"); got != mine.String() {
					t.Fatalf("%s signed/app:v1: %s, want %s", method, got, mine)
				}
			}
			for _, method := range []string{http.MethodHead, http.MethodGet} {
				if got := e.pullDigest(method, "/v2/lab/other/app/manifests/v1"); got != theirs.String() {
					t.Errorf("%s other/app:v1: %s, want its own %s", method, got, theirs)
				}
			}
			if n, m := e.count(http.MethodHead, "/v2/other/app/manifests/v1"), e.count(http.MethodHead, "/v2/signed/app/manifests/v1"); n != m {
				t.Errorf("other/app:v1 was asked of the upstream %d times, signed/app:v1 %d: want the same, each its own", n, m)
			}
		})
	}
}
