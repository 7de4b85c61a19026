package proxy_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/authz-proxy/authz-proxy/internal/audit"
	"github.com/authz-proxy/authz-proxy/internal/sign"
	"github.com/authz-proxy/authz-proxy/internal/sign/virtual"
	"github.com/authz-proxy/authz-proxy/internal/source"
)

// Isolation, tried as a tenant with push rights to one repository (or one
// upstream) would: whatever it pushes, the proxy never serves it another
// repository's or another upstream's stored content. The upstream of
// these tests is go-containerregistry's registry, which checks nothing a
// manifest names and serves any blob from any repository; each test puts a
// front on it that answers as distribution does for the tenant's
// repository (404 for what was never pushed there), so that only the
// proxy's own rules stand between the tenant and the secret.

// secret is an image of another tenant, pulled through the proxy (so its
// manifest, config and layer are in the store) and never pushed to the
// attacker's repository.
type secret struct {
	manifest      v1.Hash
	raw           []byte
	config, layer v1.Descriptor
	layerBytes    []byte
}

// pullSecret pushes a random image to repo:v1 upstream and pulls it whole
// through the proxy.
func (e *storeEnv) pullSecret(repo string) secret {
	e.t.Helper()
	img, err := random.Image(4096, 1)
	if err != nil {
		e.t.Fatal(err)
	}
	d := e.write(repo+":v1", img)
	e.signTag(repo, "ci", d, d)
	m, err := img.Manifest()
	if err != nil {
		e.t.Fatal(err)
	}
	raw, _ := img.RawManifest()
	s := secret{manifest: d, raw: raw, config: m.Config, layer: m.Layers[0]}
	e.manifestOK("/v2/lab/"+repo+"/manifests/v1", d)
	for _, b := range []v1.Descriptor{m.Config, m.Layers[0]} {
		resp, body, err := e.pull(http.MethodGet, blobPath(repo, b))
		if err != nil || resp.StatusCode != 200 {
			e.t.Fatalf("pulling the secret's %s: %v", b.Digest, err)
		}
		if b.Digest == s.layer.Digest {
			s.layerBytes = body
		}
	}
	e.flush()
	return s
}

// unlinkedIn answers 404, as distribution does, for requests of repo for
// digests never pushed there.
func (e *env) unlinkedIn(repo string, digests ...v1.Hash) {
	e.fault(func(r *http.Request) bool {
		if !strings.HasPrefix(r.URL.Path, "/v2/"+repo+"/") {
			return false
		}
		for _, d := range digests {
			if strings.HasSuffix(r.URL.Path, "/"+d.String()) {
				return true
			}
		}
		return false
	}, status(http.StatusNotFound))
}

// rawManifest is a manifest pushed as these bytes, whatever they say.
type rawManifest struct {
	raw []byte
	mt  types.MediaType
}

func (m rawManifest) RawManifest() ([]byte, error)        { return m.raw, nil }
func (m rawManifest) MediaType() (types.MediaType, error) { return m.mt, nil }

// putRaw pushes raw as repo:tag upstream and returns its digest.
func (e *env) putRaw(repo, tag string, mt types.MediaType, raw []byte) v1.Hash {
	e.t.Helper()
	if err := remote.Put(e.repo(repo).Tag(tag), rawManifest{raw, mt}); err != nil {
		e.t.Fatal(err)
	}
	d, _, _ := v1.SHA256(bytes.NewReader(raw))
	return d
}

func descriptor(mt types.MediaType, d v1.Hash, size int64) map[string]any {
	return map[string]any{"mediaType": mt, "digest": d.String(), "size": size}
}

// mustNotServe asserts that path answers 404 through the proxy, and never
// with body.
func (e *storeEnv) mustNotServe(t *testing.T, path string, body []byte) {
	t.Helper()
	resp, got, _ := e.pull(http.MethodGet, path)
	if resp == nil {
		return // cut: nothing served
	}
	if bytes.Equal(got, body) || resp.StatusCode != http.StatusNotFound {
		t.Errorf("GET %s: %d, %d bytes (the other tenant's: %v); want 404", path, resp.StatusCode, len(got), bytes.Equal(got, body))
	}
}

func TestAManifestNeverLinksWhatTheRegistryDidNotValidate(t *testing.T) {
	// Each way in is a manifest the tenant pushes to its repository,
	// naming the secret through a field no registry checks at push; the
	// proxy serves it (the tenant's rule allows anything), and must not
	// take it as leave to serve the secret in the tenant's repository.
	ways := []struct {
		name string
		mt   types.MediaType
		// manifest is the tenant's manifest, given the secret and an
		// image of the tenant's own.
		manifest func(s secret, own v1.Descriptor) map[string]any
		// status is what the proxy answers for the tenant's manifest.
		status int
	}{
		{"a manifest list whose config names the secret's layer", types.DockerManifestList, func(s secret, own v1.Descriptor) map[string]any {
			return map[string]any{"schemaVersion": 2, "mediaType": types.DockerManifestList,
				"config": descriptor(types.DockerConfigJSON, s.layer.Digest, s.layer.Size), "manifests": []any{own}}
		}, 200},
		{"a manifest list whose config names the secret's manifest", types.DockerManifestList, func(s secret, own v1.Descriptor) map[string]any {
			return map[string]any{"schemaVersion": 2, "mediaType": types.DockerManifestList,
				"config": descriptor(types.OCIManifestSchema1, s.manifest, int64(len(s.raw))), "manifests": []any{own}}
		}, 200},
		{"an index whose layers name the secret's layer", types.OCIImageIndex, func(s secret, own v1.Descriptor) map[string]any {
			return map[string]any{"schemaVersion": 2, "mediaType": types.OCIImageIndex,
				"layers": []any{descriptor(types.OCILayer, s.layer.Digest, s.layer.Size)}, "manifests": []any{own}}
		}, 502},
		{"an image whose subject names the secret's manifest", types.OCIManifestSchema1, func(s secret, own v1.Descriptor) map[string]any {
			return map[string]any{"schemaVersion": 2, "mediaType": types.OCIManifestSchema1,
				"config":  descriptor(types.OCIConfigJSON, own.Digest, own.Size),
				"layers":  []any{descriptor(types.OCILayer, own.Digest, own.Size)},
				"subject": descriptor(types.OCIManifestSchema1, s.manifest, int64(len(s.raw)))}
		}, 200},
		{"an image whose annotations name the secret's layer", types.OCIManifestSchema1, func(s secret, own v1.Descriptor) map[string]any {
			return map[string]any{"schemaVersion": 2, "mediaType": types.OCIManifestSchema1,
				"config":      descriptor(types.OCIConfigJSON, own.Digest, own.Size),
				"layers":      []any{descriptor(types.OCILayer, own.Digest, own.Size)},
				"annotations": map[string]string{"org.opencontainers.image.base.digest": s.layer.Digest.String()}}
		}, 200},
	}
	for _, w := range ways {
		t.Run(w.name, func(t *testing.T) {
			e := newStoreEnv(t, t.TempDir())
			s := e.pullSecret("open/prod/secret")
			const tenant = "open/dev/x"
			e.unlinkedIn(tenant, s.manifest, s.config.Digest, s.layer.Digest)
			own := e.push(tenant + ":own")
			ownRaw, err := e.manifest(tenant, own)
			if err != nil {
				t.Fatal(err)
			}
			ownDesc := v1.Descriptor{MediaType: types.OCIManifestSchema1, Digest: own, Size: int64(len(ownRaw)), Platform: &v1.Platform{OS: "linux", Architecture: "amd64"}}
			raw, err := json.Marshal(w.manifest(s, ownDesc))
			if err != nil {
				t.Fatal(err)
			}
			e.putRaw(tenant, "evil", w.mt, raw)
			if resp := e.get(http.MethodGet, "/v2/lab/"+tenant+"/manifests/evil"); resp.StatusCode != w.status {
				t.Fatalf("the tenant's manifest: %d, want %d", resp.StatusCode, w.status)
			}
			e.flush()
			e.mustNotServe(t, "/v2/lab/"+tenant+"/blobs/"+s.layer.Digest.String(), s.layerBytes)
			e.mustNotServe(t, "/v2/lab/"+tenant+"/blobs/"+s.config.Digest.String(), nil)
			e.mustNotServe(t, "/v2/lab/"+tenant+"/blobs/"+s.manifest.String(), s.raw)
			e.mustNotServe(t, "/v2/lab/"+tenant+"/manifests/"+s.manifest.String(), s.raw)
			// The secret's own repository still reads it from the store.
			e.manifestOK("/v2/lab/open/prod/secret/manifests/"+s.manifest.String(), s.manifest)
		})
	}
}

func TestABlobIsNeverServedAsAManifest(t *testing.T) {
	for _, withStore := range []bool{true, false} {
		t.Run(fmt.Sprintf("store %v", withStore), func(t *testing.T) {
			e := &storeEnv{env: newEnv(t)}
			if withStore {
				e = newStoreEnv(t, t.TempDir())
			}
			// Under a rule that needs a signature: served without one,
			// only as a signature artifact.
			const tenant = "signed/dev/x"
			s := e.pullSecret("signed/prod/secret")
			e.unlinkedIn(tenant, s.manifest, s.layer.Digest)
			payload := sign.Payload(e.repo(tenant).Name(), "sha256:"+strings.Repeat("0", 64))
			payloadLayer := static.NewLayer(payload, types.MediaType("application/vnd.dev.cosign.simplesigning.v1+json"))
			pd, _ := payloadLayer.Digest()
			fake, err := json.Marshal(map[string]any{"schemaVersion": 2, "mediaType": types.OCIManifestSchema1,
				"config": descriptor(types.OCIConfigJSON, s.layer.Digest, s.layer.Size),
				"layers": []any{map[string]any{"mediaType": "application/vnd.dev.cosign.simplesigning.v1+json", "digest": pd.String(), "size": len(payload),
					"annotations": map[string]string{"dev.cosignproject.cosign/signature": "MEUCIQ=="}}}})
			if err != nil {
				t.Fatal(err)
			}
			// Uploaded as plain blobs, never as a manifest.
			for _, l := range []v1.Layer{payloadLayer, static.NewLayer(fake, types.OCILayer)} {
				if err := remote.WriteLayer(e.repo(tenant), l); err != nil {
					t.Fatal(err)
				}
			}
			fd, _, _ := v1.SHA256(bytes.NewReader(fake))
			if resp, body, err := e.pull(http.MethodGet, "/v2/lab/"+tenant+"/blobs/"+fd.String()); err != nil || resp.StatusCode != 200 || !bytes.Equal(body, fake) {
				t.Fatalf("the blob: %v", err)
			}
			e.flush()
			expectError(t, e.get(http.MethodGet, "/v2/lab/"+tenant+"/manifests/"+fd.String()), http.StatusNotFound, "MANIFEST_UNKNOWN")
			if resp := e.get(http.MethodHead, "/v2/lab/"+tenant+"/manifests/"+fd.String()); resp.StatusCode != http.StatusNotFound {
				t.Errorf("HEAD of the blob as a manifest: %d, want 404", resp.StatusCode)
			}
			e.mustNotServe(t, "/v2/lab/"+tenant+"/blobs/"+s.layer.Digest.String(), s.layerBytes)
		})
	}
}

// hostile is an upstream that claims to hold every blob (its HEAD answers
// 200) and has none; it counts the GETs it is asked.
type hostile struct{ gets atomic.Int64 }

func (h *hostile) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == "/v2/" {
		return
	}
	if r.Method == http.MethodHead {
		w.Header().Set("Docker-Content-Digest", r.URL.Path[strings.LastIndex(r.URL.Path, "/")+1:])
		w.Header().Set("Content-Length", "4096")
		return
	}
	h.gets.Add(1)
	http.Error(w, `{"errors":[{"code":"BLOB_UNKNOWN"}]}`, http.StatusNotFound)
}

func TestAnotherUpstreamsWordNeverServesWhatOneUpstreamSupplied(t *testing.T) {
	hub := &hostile{}
	e := newStoreEnv(t, t.TempDir(), withUpstreams("lab", "hub", hub))
	s := e.pullSecret("open/private/app")
	for _, d := range []v1.Hash{s.layer.Digest, s.config.Digest, s.manifest} {
		before := hub.gets.Load()
		e.mustNotServe(t, "/v2/hub/anything/blobs/"+d.String(), s.layerBytes)
		if hub.gets.Load() == before {
			t.Errorf("blob %s: the hostile upstream was not asked for its own bytes", d)
		}
	}
	e.mustNotServe(t, "/v2/hub/open/private/app/manifests/"+s.manifest.String(), s.raw)
	// What the hostile upstream says of itself is only its own word: its
	// HEAD is relayed, with no byte of the other upstream.
	if resp, body, _ := e.pull(http.MethodHead, "/v2/hub/anything/blobs/"+s.layer.Digest.String()); resp.StatusCode != 200 || len(body) != 0 {
		t.Errorf("HEAD: %d, %d bytes", resp.StatusCode, len(body))
	}
}

func TestUpstreamNamesThatCouldCollideKeepTheirContentApart(t *testing.T) {
	second := registry.New(registry.Logger(log.New(io.Discard, "", 0)))
	names := []string{"registry.internal:5000", "registry.internal_5000"}
	tags := map[string]source.Tags{names[0]: {Immutable: []string{"v*"}}, names[1]: {Immutable: []string{"v*"}}}
	e := newStoreEnv(t, t.TempDir(), withUpstreams(names[0], names[1], second),
		withTags(tags), withPolicy("policy:\n  rules: [{name: all, images: [\"**\"], action: allow}]\n"))
	img, err := random.Image(4096, 1)
	if err != nil {
		t.Fatal(err)
	}
	first := e.write("team/app:v1.0.0", img)
	m, _ := img.Manifest()
	e.manifestOK("/v2/"+names[0]+"/team/app/manifests/v1.0.0", first)
	layer := m.Layers[0].Digest.String()
	if resp, _, err := e.pull(http.MethodGet, "/v2/"+names[0]+"/team/app/blobs/"+layer); err != nil || resp.StatusCode != 200 {
		t.Fatalf("the layer: %v", err)
	}
	e.flush()

	// The other registry has another image under the same immutable tag,
	// and not the layer.
	other, err := random.Image(4096, 1)
	if err != nil {
		t.Fatal(err)
	}
	tag, err := name.NewTag(strings.TrimPrefix(e.otherURL, "http://")+"/team/app:v1.0.0", name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(tag, other); err != nil {
		t.Fatal(err)
	}
	od, _ := other.Digest()
	if rec := e.manifestOK("/v2/"+names[1]+"/team/app/manifests/v1.0.0", od); rec.Upstream != names[1] {
		t.Errorf("decision: %+v", rec)
	}
	expectError(t, e.get(http.MethodGet, "/v2/"+names[1]+"/team/app/blobs/"+layer), http.StatusNotFound, "BLOB_UNKNOWN")
	expectError(t, e.get(http.MethodGet, "/v2/"+names[1]+"/team/app/manifests/"+first.String()), http.StatusNotFound, "MANIFEST_UNKNOWN")
}

func TestAfterARestartReferrerEvidenceIsFoundWhateverOrderDigestsAreAskedIn(t *testing.T) {
	vs, err := virtual.New()
	if err != nil {
		t.Fatal(err)
	}
	nw := newNotationWorld(t)
	formats := []struct {
		name string
		repo string
		env  func(t *testing.T, opts ...envOption) *env
		sign func(e *env, repo string, d v1.Hash)
	}{
		{"cosign signatures among the referrers", "signed/app", func(t *testing.T, opts ...envOption) *env { return newEnv(t, opts...) },
			func(e *env, repo string, d v1.Hash) { e.signReferrer(repo, "ci", d, false) }},
		{"cosign v3 bundles", "release/app", func(t *testing.T, opts ...envOption) *env { return keylessEnv(t, vs, opts...) },
			func(e *env, repo string, d v1.Hash) {
				e.keylessSign(vs, repo, ghRelease, ghIssuer, d, d, virtual.Options{}, false)
			}},
		{"notation signatures", "notation/app", nw.env, func(e *env, repo string, d v1.Hash) {
			e.notationSign(nw.release, repo, d, d, sign.NotationOptions{}, false)
		}},
	}
	for _, f := range formats {
		for _, secondFirst := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s, the second digest first %v", f.name, secondFirst), func(t *testing.T) {
				e := withRestartableStore(t, t.TempDir(), func(opts ...envOption) *env { return f.env(t, opts...) })
				var digests []v1.Hash
				for _, tag := range []string{"one", "two"} {
					d := e.push(f.repo + ":" + tag)
					f.sign(e.env, f.repo, d)
					digests = append(digests, d)
				}
				// Online, the first pull finds the signature among the
				// referrers after the tag schemes; the second looks
				// there first.
				for _, d := range digests {
					e.manifestOK("/v2/lab/"+f.repo+"/manifests/"+d.String(), d)
				}
				e.upstream.Close()
				e.restart(e.policyText)
				if secondFirst {
					digests[0], digests[1] = digests[1], digests[0]
				}
				for _, d := range digests {
					rec := e.manifestOK("/v2/lab/"+f.repo+"/manifests/"+d.String(), d)
					if rec.Decision != "allow" || rec.Source != audit.SourceStore || rec.Cached {
						t.Errorf("%s after the restart: %+v; want allowed from the store, verified again", d, rec)
					}
				}
			})
		}
	}
}
