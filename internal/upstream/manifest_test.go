package upstream_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/authz-proxy/authz-proxy/internal/limits"
	"github.com/authz-proxy/authz-proxy/internal/upstream"
)

func mustRead(t testing.TB, resp *http.Response) []byte {
	t.Helper()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestManifestIsReadOnceAndNamedByTheDigestOfItsBytes(t *testing.T) {
	w := newWorld(t, true)
	d := w.push("acme/app", "v1")
	raw, err := remote.Get(w.repo("acme/app").Tag("v1"))
	if err != nil {
		t.Fatal(err)
	}
	c := w.client(bounds{})
	for _, ref := range []string{"v1", d.String()} {
		m, err := c.Manifest(context.Background(), "acme/app", ref)
		if err != nil {
			t.Fatal(err)
		}
		if m.Digest != d.String() || !bytes.Equal(m.Raw, raw.Manifest) {
			t.Errorf("%s: digest %s, want %s, and the bytes the registry holds", ref, m.Digest, d)
		}
	}
}

func TestManifestRefusesWhatItWillNotServe(t *testing.T) {
	tests := []struct {
		name string
		// bend, when set, answers the manifest request.
		bend    func(rw http.ResponseWriter, r *http.Request) bool
		byTag   bool
		wantErr error
	}{
		{name: "bytes that do not hash to the digest asked for", bend: func(rw http.ResponseWriter, r *http.Request) bool {
			rw.Header().Set("Content-Type", "application/vnd.oci.image.manifest.v1+json")
			_, _ = rw.Write([]byte(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":2},"layers":[]}`))
			return true
		}, wantErr: upstream.ErrDigestMismatch},
		{name: "a manifest over the 4 MiB limit", bend: func(rw http.ResponseWriter, r *http.Request) bool {
			rw.Header().Set("Content-Type", "application/vnd.oci.image.manifest.v1+json")
			rw.Header().Set("Content-Length", strconv.FormatInt(limits.MaxManifestSize+1, 10))
			_, _ = rw.Write(bytes.Repeat([]byte(" "), int(limits.MaxManifestSize)+1))
			return true
		}, byTag: true, wantErr: upstream.ErrManifestTooLarge},
		{name: "a manifest over the 4 MiB limit, sent without a length", bend: func(rw http.ResponseWriter, r *http.Request) bool {
			rw.Header().Set("Content-Type", "application/vnd.oci.image.manifest.v1+json")
			for range 5 {
				_, _ = rw.Write(bytes.Repeat([]byte(" "), 1<<20))
				rw.(http.Flusher).Flush() // chunked: no Content-Length
			}
			return true
		}, byTag: true, wantErr: upstream.ErrManifestTooLarge},
		{name: "a manifest the upstream does not have", bend: func(rw http.ResponseWriter, r *http.Request) bool {
			http.Error(rw, `{"errors":[{"code":"MANIFEST_UNKNOWN"}]}`, http.StatusNotFound)
			return true
		}, wantErr: upstream.ErrNotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := newWorld(t, true)
			d := w.push("acme/app", "v1")
			if tt.bend != nil {
				w.intercept(func(rw http.ResponseWriter, r *http.Request) bool {
					return r.Method == http.MethodGet && r.URL.Path != "/v2/" && tt.bend(rw, r)
				})
			}
			ref := d.String()
			if tt.byTag {
				ref = "v1"
			}
			m, err := w.client(bounds{}).Manifest(context.Background(), "acme/app", ref)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("manifest %v, err %v; want %v", m, err, tt.wantErr)
			}
		})
	}
}

func TestLayersAreReadForTheRecognizerCheckedAgainstTheirDigests(t *testing.T) {
	w := newWorld(t, true)
	d := w.push("acme/app", "v1")
	sig := w.signTag("acme/app", d, 1)[0]
	w.attestTag("acme/app", d, w.attestation("acme/app", d, slsa, "1"))
	c := w.client(bounds{})
	recognize := func(t *testing.T, m *manifest) (recognition, bool) {
		t.Helper()
		r, final, err := recognize(c, "acme/app", m)
		if err != nil {
			t.Fatal(err)
		}
		return r, final
	}
	tests := []struct {
		name, ref    string
		wantArtifact bool
	}{
		{"cosign's .sig manifest", fallbackTag(d) + ".sig", true},
		{"cosign's .att manifest", fallbackTag(d) + ".att", true},
		{"an image", "v1", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := c.Manifest(context.Background(), "acme/app", tt.ref)
			if err != nil {
				t.Fatal(err)
			}
			if r, final := recognize(t, m); r.Artifact != tt.wantArtifact || !final || !r.Artifact && r.Why == "" {
				t.Errorf("recognised as %+v (final %v), want artifact %v, final (and a reason when not)", r, final, tt.wantArtifact)
			}
		})
	}
	t.Run("a layer missing upstream is not a property of the bytes", func(t *testing.T) {
		m, err := c.Manifest(context.Background(), "acme/app", fallbackTag(d)+".sig")
		if err != nil {
			t.Fatal(err)
		}
		w.intercept(func(rw http.ResponseWriter, r *http.Request) bool {
			if r.URL.Path != "/v2/acme/app/blobs/"+sha256Of(sig.Payload) {
				return false
			}
			http.Error(rw, "", http.StatusNotFound)
			return true
		})
		defer w.intercept(func(http.ResponseWriter, *http.Request) bool { return false })
		if r, final := recognize(t, m); r.Artifact || final || !strings.Contains(r.Why, "is missing upstream") {
			t.Errorf("with its layer missing: %+v, final %v; want not an artifact, not final, saying so", r, final)
		}
	})
}
