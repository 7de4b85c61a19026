package upstream_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/authz-proxy/authz-proxy/internal/oci"
	"github.com/authz-proxy/authz-proxy/internal/sign"
	"github.com/authz-proxy/authz-proxy/internal/testkit"
	"github.com/authz-proxy/authz-proxy/internal/upstream"
)

// world is go-containerregistry's registry in process, with or without
// the referrers API, a key to sign with, and a way to see and bend what
// the registry answers.
type world struct {
	t   testing.TB
	srv *httptest.Server
	key *testkit.Key
	// front, when set, sees each request first and answers it when it
	// returns true (fault injection).
	front    atomic.Pointer[func(http.ResponseWriter, *http.Request) bool]
	requests sync.Map // "METHOD /path" -> *atomic.Int64
}

func newWorld(t testing.TB, referrersAPI bool) *world {
	t.Helper()
	w := &world{t: t, key: testkit.NewKey(t)}
	reg := registry.New(registry.WithReferrersSupport(referrersAPI), registry.Logger(log.New(io.Discard, "", 0)))
	w.srv = httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		n, _ := w.requests.LoadOrStore(r.Method+" "+r.URL.Path, new(atomic.Int64))
		n.(*atomic.Int64).Add(1)
		if f := w.front.Load(); f != nil && (*f)(rw, r) {
			return
		}
		reg.ServeHTTP(rw, r)
	}))
	t.Cleanup(w.srv.Close)
	return w
}

// intercept answers the requests for which f returns true with f.
func (w *world) intercept(f func(http.ResponseWriter, *http.Request) bool) { w.front.Store(&f) }

// count is the number of requests seen whose "METHOD /path" has prefix.
func (w *world) count(prefix string) int64 {
	var n int64
	w.requests.Range(func(k, v any) bool {
		if strings.HasPrefix(k.(string), prefix) {
			n += v.(*atomic.Int64).Load()
		}
		return true
	})
	return n
}

// client is a client of the world's registry with limits l.
func (w *world) client(l bounds) *upstream.Client { return newClient(w.t, w.srv.URL, l) }

func (w *world) host() string { return strings.TrimPrefix(w.srv.URL, "http://") }

func (w *world) repo(repo string) name.Repository {
	w.t.Helper()
	r, err := name.NewRepository(w.host()+"/"+repo, name.Insecure)
	if err != nil {
		w.t.Fatal(err)
	}
	return r
}

// push writes a random image to repo:tag and returns its digest.
func (w *world) push(repo, tag string) v1.Hash {
	w.t.Helper()
	img, err := random.Image(256, 1)
	if err != nil {
		w.t.Fatal(err)
	}
	if err := remote.Write(w.repo(repo).Tag(tag), img); err != nil {
		w.t.Fatal(err)
	}
	d, err := img.Digest()
	if err != nil {
		w.t.Fatal(err)
	}
	return d
}

// describe is the descriptor of the manifest repo@d, a referrer's subject.
func (w *world) describe(repo string, d v1.Hash) v1.Descriptor {
	w.t.Helper()
	desc, err := sign.Describe(context.Background(), w.repo(repo).Digest(d.String()))
	if err != nil {
		w.t.Fatal(err)
	}
	return desc
}

// signature signs the simple-signing payload for d in repo.
func (w *world) signature(repo string, d v1.Hash) sign.Signature {
	w.t.Helper()
	s, err := sign.New(w.key.Signer, w.repo(repo), d.String())
	if err != nil {
		w.t.Fatal(err)
	}
	return s
}

// signTag stores n signatures of d in its .sig tag, as `cosign sign` does
// n times, and returns them.
func (w *world) signTag(repo string, d v1.Hash, n int) []sign.Signature {
	w.t.Helper()
	sigs := make([]sign.Signature, n)
	for i := range sigs {
		sigs[i] = w.signature(repo, d)
	}
	if err := sign.AttachTag(context.Background(), w.repo(repo), d.String(), sigs); err != nil {
		w.t.Fatal(err)
	}
	return sigs
}

// signReferrer stores a signature of d as an OCI 1.1 referrer (and, with
// fallbackTag, in the sha256-<hex> index) and returns the referrer's digest.
func (w *world) signReferrer(repo string, d v1.Hash, fallbackTag bool) v1.Hash {
	w.t.Helper()
	ref, err := sign.AttachReferrer(context.Background(), w.repo(repo), w.describe(repo, d), w.signature(repo, d), fallbackTag)
	if err != nil {
		w.t.Fatal(err)
	}
	return ref
}

// attestation signs an in-toto statement of predicateType about d; note
// makes statements of the same type differ.
func (w *world) attestation(repo string, d v1.Hash, predicateType, note string) sign.Attestation {
	w.t.Helper()
	st, err := sign.Statement(oci.StatementV01, w.repo(repo).Name(), d.String(), predicateType, map[string]string{"note": note})
	if err != nil {
		w.t.Fatal(err)
	}
	a, err := sign.Attest(w.key.Signer, predicateType, st)
	if err != nil {
		w.t.Fatal(err)
	}
	return a
}

// attestTag adds atts to the .att tag of d, as `cosign attest` does.
func (w *world) attestTag(repo string, d v1.Hash, atts ...sign.Attestation) {
	w.t.Helper()
	if err := sign.AttachAttestationTag(context.Background(), w.repo(repo), d.String(), atts); err != nil {
		w.t.Fatal(err)
	}
}

// attestReferrer stores a, in a Sigstore bundle, as a referrer of d, as
// `cosign attest --new-bundle-format` does, and returns the bundle.
func (w *world) attestReferrer(repo string, d v1.Hash, a sign.Attestation, fallbackTag bool) []byte {
	w.t.Helper()
	bundle, err := sign.Bundle(a.Envelope, w.key.Signer)
	if err != nil {
		w.t.Fatal(err)
	}
	if _, err := sign.AttachAttestationReferrer(context.Background(), w.repo(repo), w.describe(repo, d), a, w.key.Signer, fallbackTag); err != nil {
		w.t.Fatal(err)
	}
	return bundle
}

// sha256Of is the digest of b as a registry names it.
func sha256Of(b []byte) string {
	sum := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// fallbackTag is the tag of d's referrers on a registry without the API.
func fallbackTag(d v1.Hash) string { return "sha256-" + d.Hex }
