package source_test

import (
	"context"
	"errors"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/authz-proxy/authz-proxy/internal/oci"
	"github.com/authz-proxy/authz-proxy/internal/sign"
	"github.com/authz-proxy/authz-proxy/internal/source"
	"github.com/authz-proxy/authz-proxy/internal/store"
	"github.com/authz-proxy/authz-proxy/internal/testkit"
	"github.com/authz-proxy/authz-proxy/internal/upstream"
)

const (
	slsa = "https://slsa.dev/provenance/v1"
	spdx = "https://spdx.dev/Document"
	vuln = "https://cosign.sigstore.dev/attestation/vuln/v1"
)

// lab is a registry in process (with a switch that makes it fail, and
// another that hides a path) holding acme/app:v1, signed in the .sig tag
// and attested in the .att tag (SLSA provenance and an SPDX SBOM), and a
// source of it with a store.
type lab struct {
	t       *testing.T
	srv     *httptest.Server
	down    atomic.Bool
	hide    atomic.Pointer[string]
	repo    name.Repository
	digest  v1.Hash
	payload []byte // the signature's payload
	st      *store.Store
	src     *source.Source
}

func newLab(t *testing.T) *lab {
	t.Helper()
	l := &lab{t: t}
	reg := registry.New(registry.Logger(log.New(io.Discard, "", 0)))
	l.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if l.down.Load() && r.URL.Path != "/v2/" {
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		if h := l.hide.Load(); h != nil && r.URL.Path == *h {
			http.Error(w, `{"errors":[{"code":"BLOB_UNKNOWN"}]}`, http.StatusNotFound)
			return
		}
		reg.ServeHTTP(w, r)
	}))
	t.Cleanup(l.srv.Close)
	var err error
	l.repo, err = name.NewRepository(strings.TrimPrefix(l.srv.URL, "http://")+"/acme/app", name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	img, err := random.Image(1024, 1)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(l.repo.Tag("v1"), img); err != nil {
		t.Fatal(err)
	}
	l.digest, _ = img.Digest()
	ci := testkit.NewSigner(t, filepath.Join(t.TempDir(), "ci.pub"))
	sig, err := sign.New(ci, l.repo, l.digest.String())
	if err != nil {
		t.Fatal(err)
	}
	l.payload = sig.Payload
	if err := sign.AttachTag(context.Background(), l.repo, l.digest.String(), []sign.Signature{sig}); err != nil {
		t.Fatal(err)
	}
	var atts []sign.Attestation
	for _, pt := range []string{slsa, spdx} {
		st, err := sign.Statement(oci.StatementV1, l.repo.Name(), l.digest.String(), pt, map[string]any{"of": pt})
		if err != nil {
			t.Fatal(err)
		}
		a, err := sign.Attest(ci, pt, st)
		if err != nil {
			t.Fatal(err)
		}
		atts = append(atts, a)
	}
	if err := sign.AttachAttestationTag(context.Background(), l.repo, l.digest.String(), atts); err != nil {
		t.Fatal(err)
	}
	d, err := store.NewDriver(context.Background(), store.InMemory, nil)
	if err != nil {
		t.Fatal(err)
	}
	l.st, err = store.New(context.Background(), store.Options{Driver: d, MaxSize: 1 << 30, Owner: "test", SweepInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.st.Close() })
	l.src = l.source(l.st)
	return l
}

// source is a new source of the lab (a new process: nothing in memory),
// with st.
func (l *lab) source(st *store.Store) *source.Source {
	l.t.Helper()
	c, err := upstream.New(upstream.Options{Name: "lab", URL: l.srv.URL, Insecure: true})
	if err != nil {
		l.t.Fatal(err)
	}
	src, err := source.New(source.Options{Upstream: c, Store: st, Tags: source.Tags{StaleIfError: time.Hour}})
	if err != nil {
		l.t.Fatal(err)
	}
	return src
}

// settle waits for the store's background writes.
func (l *lab) settle() {
	l.t.Helper()
	// A fill still writing links its blob when it ends: wait for both.
	busy := func() bool { st := l.st.Stats(); return st.FillsInFlight > 0 || st.WritesInFlight > 0 }
	for deadline := time.Now().Add(time.Minute); busy(); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			l.t.Fatal("the store still writes after a minute")
		}
	}
}

func TestOfflineEvidenceAnswersFromTheNotesOfEachKindAskedFor(t *testing.T) {
	l := newLab(t)
	ctx := context.Background()
	digest := l.digest.String()
	// Online: the signatures and both attestation types at the tag
	// schemes, in one question.
	if _, err := l.src.Evidence(ctx, "acme/app", digest, oci.Want{Signatures: true, PredicateTypes: []string{slsa, spdx}, From: oci.TagSchemes}); err != nil {
		t.Fatal(err)
	}
	l.settle()
	l.down.Store(true)
	offline := l.source(l.st)
	tests := []struct {
		name    string
		want    oci.Want
		wantErr bool
		sigs    int
		attsOf  []string
	}{
		{name: "one kind of several noted together", want: oci.Want{PredicateTypes: []string{spdx}, From: oci.TagSchemes}, attsOf: []string{spdx}},
		{name: "the signatures alone", want: oci.Want{Signatures: true, From: oci.TagSchemes}, sigs: 1},
		{name: "everything noted, asked everywhere", want: oci.Want{Signatures: true, PredicateTypes: []string{slsa, spdx}}, sigs: 1, attsOf: []string{slsa, spdx}},
		{name: "a kind noted at another place than asked: absent here", want: oci.Want{Signatures: true, From: oci.Referrers}},
		{name: "a kind never noted anywhere cannot be answered", want: oci.Want{PredicateTypes: []string{slsa, vuln}, From: oci.TagSchemes}, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ev, err := offline.Evidence(ctx, "acme/app", digest, tt.want)
			if tt.wantErr {
				var ue *upstream.Error
				if !errors.As(err, &ue) || ue.Status != http.StatusServiceUnavailable {
					t.Fatalf("Evidence: %+v, %v; want the upstream's failure", ev, err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var types []string
			for _, a := range ev.Attestations {
				types = append(types, a.PredicateType)
			}
			if len(ev.Signatures) != tt.sigs || strings.Join(types, " ") != strings.Join(tt.attsOf, " ") {
				t.Errorf("%d signatures, attestations of %q; want %d and %q", len(ev.Signatures), types, tt.sigs, tt.attsOf)
			}
			if tt.sigs > 0 && string(ev.Signatures[0].Payload) != string(l.payload) {
				t.Errorf("the signature's payload is not what the upstream sent")
			}
		})
	}
	// Another repository's notes are not this one's.
	if _, err := offline.Evidence(ctx, "acme/other", digest, oci.Want{Signatures: true, From: oci.TagSchemes}); err == nil {
		t.Error("another repository was answered from acme/app's notes")
	}
}

func TestARecognitionThatDependsOnWhereALayerIsReadIsNotKept(t *testing.T) {
	l := newLab(t)
	ctx := context.Background()
	m, err := l.src.Manifest(ctx, "acme/app", oci.FallbackTag(l.digest.String())+".sig")
	if err != nil {
		t.Fatal(err)
	}
	sum, _, _ := v1.SHA256(strings.NewReader(string(l.payload)))
	hidden := "/v2/acme/app/blobs/" + sum.String()
	l.hide.Store(&hidden)
	if r, err := l.src.Recognize(ctx, "acme/app", m); err != nil || r.Artifact || !strings.Contains(r.Why, "is missing upstream") {
		t.Fatalf("with its layer missing: %+v, %v; want not an artifact, saying why", r, err)
	}
	l.hide.Store(nil)
	if r, err := l.src.Recognize(ctx, "acme/app", m); err != nil || !r.Artifact {
		t.Fatalf("once the layer is back: %+v, %v; want an artifact", r, err)
	}

	// Offline, a new process recognises it from the layer the store holds
	// for the repository (a client pulled the signature through the
	// proxy), not from another repository's.
	if b, err := l.src.Blob(ctx, "acme/app", sum.String(), false, ""); err != nil {
		t.Fatal(err)
	} else {
		_, _ = io.Copy(io.Discard, b.Body)
		b.Body.Close()
	}
	l.settle()
	l.down.Store(true)
	offline := l.source(l.st)
	if r, err := offline.Recognize(ctx, "acme/app", m); err != nil || !r.Artifact {
		t.Errorf("offline, from the store: %+v, %v; want an artifact", r, err)
	}
	if _, err := l.source(l.st).Recognize(ctx, "acme/other", m); err == nil {
		t.Error("offline, another repository was answered from acme/app's layers")
	}
}

func TestResolveWithoutAStoreAsksTheUpstreamWithAHeadForATagResolvedBefore(t *testing.T) {
	l := newLab(t)
	src := l.source(nil)
	ctx := context.Background()
	resolve := func(text string) string {
		t.Helper()
		ref, err := oci.ParseReference(text)
		if err != nil {
			t.Fatal(err)
		}
		d, stale, err := src.Resolve(ctx, "acme/app", ref)
		if err != nil || stale {
			t.Fatalf("Resolve(%s) = %q, stale %v, %v", text, d, stale, err)
		}
		return d
	}
	if d := resolve(l.digest.String()); d != l.digest.String() {
		t.Errorf("a digest resolves to %q, want itself", d)
	}
	if d := resolve("sha512:" + strings.Repeat("0", 128)); d != "" {
		t.Errorf("a sha512 digest resolves to %q, want \"\" (fetched to be hashed)", d)
	}
	if d := resolve("v1"); d != "" {
		t.Errorf("a tag never resolved resolves to %q, want \"\" (fetched by the tag)", d)
	}
	ref, _ := oci.ParseReference("v1")
	if _, err := src.Fetch(ctx, "acme/app", ref, ""); err != nil {
		t.Fatal(err)
	}
	if d := resolve("v1"); d != l.digest.String() {
		t.Errorf("a tag fetched before resolves to %q, want the upstream's HEAD answer %s", d, l.digest)
	}
}
