//go:build e2e

package e2e_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"path/filepath"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/authz-proxy/authz-proxy/internal/sign"
)

// isolationConfig fronts two registries, lab (the suite's) and
// hub.example, with a filesystem store at root; every image is allowed,
// so that only the store's rules stand between the tenants.
func isolationConfig(hub, root string) string {
	return fmt.Sprintf(`listen:
  addr: {{ADDR}}
upstreams:
  - name: lab
    url: http://%s
    insecure: true
  - name: hub.example
    url: http://%s
    insecure: true
audit:
  file: {{AUDIT}}
store: {driver: filesystem, rootdirectory: %q, maxSize: 1GiB}
policy:
  rules:
    - name: tenants
      images: ["**"]
      action: allow
`, lab.reg, hub, root)
}

func TestTwoTenantsOnTwoUpstreamsNeverReadEachOthersStoredContent(t *testing.T) {
	hub, proc, err := lab.runRegistry(t.Context(), filepath.Join(t.TempDir(), "hub-data"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = proc.stop() })
	p := startTestProxy(t, "isolation", isolationConfig(hub, t.TempDir()))

	// Tenant prod's image, pulled through the proxy by crane: its
	// manifest and blobs are in the store now.
	secret, err := random.Image(64<<10, 2)
	if err != nil {
		t.Fatal(err)
	}
	secretDigest, err := lab.pushImage(t.Context(), secret, "tenants/prod/secret:v1")
	if err != nil {
		t.Fatal(err)
	}
	out, err := crane(t, "pull", "--insecure", p.addr+"/lab/tenants/prod/secret:v1", filepath.Join(t.TempDir(), "secret.tar"))
	mustSucceed(t, "crane pull of prod's image", out, err)
	m, _ := secret.Manifest()
	layer := m.Layers[0].Digest

	// Tenant dev pushes, to its own repository, an image of its own and a
	// manifest list whose config names prod's layer and another naming
	// prod's manifest: the registry takes both, as it checks no list's
	// config.
	own, err := random.Image(1024, 1)
	if err != nil {
		t.Fatal(err)
	}
	ownDigest, err := lab.pushImage(t.Context(), own, "tenants/dev/x:own")
	if err != nil {
		t.Fatal(err)
	}
	ownRaw, _ := own.RawManifest()
	ownMT, _ := own.MediaType()
	secretRaw, _ := secret.RawManifest()
	for tag, config := range map[string]v1.Descriptor{
		"evil-layer":    {MediaType: types.DockerConfigJSON, Digest: layer, Size: m.Layers[0].Size},
		"evil-manifest": {MediaType: types.DockerManifestSchema2, Digest: secretDigest, Size: int64(len(secretRaw))},
	} {
		list, err := json.Marshal(map[string]any{"schemaVersion": 2, "mediaType": types.DockerManifestList, "config": config,
			"manifests": []v1.Descriptor{{MediaType: ownMT, Digest: ownDigest, Size: int64(len(ownRaw)), Platform: &v1.Platform{OS: "linux", Architecture: "amd64"}}}})
		if err != nil {
			t.Fatal(err)
		}
		ref, err := name.NewTag(lab.reg+"/tenants/dev/x:"+tag, name.Insecure)
		if err != nil {
			t.Fatal(err)
		}
		if err := remote.Put(ref, sign.RawManifest{Raw: list, Type: types.DockerManifestList}); err != nil {
			t.Fatalf("the registry refused the tenant's list (it used to take it): %v", err)
		}
		// The tenant fetches its list through the proxy (skopeo refuses
		// such a list; crane reads it).
		out, err = crane(t, "manifest", "--insecure", p.addr+"/lab/tenants/dev/x:"+tag)
		mustSucceed(t, "crane manifest of the tenant's list "+tag, out, err)
	}

	// Neither the tenant's repository nor the other upstream reads prod's
	// content from the store: crane and skopeo get nothing.
	for _, ref := range []string{
		p.addr + "/lab/tenants/dev/x@" + layer.String(),
		p.addr + "/hub.example/tenants/prod/secret@" + layer.String(),
	} {
		out, err := crane(t, "blob", "--insecure", ref)
		mustFail(t, "crane blob "+ref, out, err)
		if bytes.Contains([]byte(out), mustBlob(t, secret, layer)) {
			t.Errorf("crane blob %s printed the secret layer", ref)
		}
	}
	for _, ref := range []string{
		p.addr + "/lab/tenants/dev/x@" + secretDigest.String(),
		p.addr + "/hub.example/tenants/prod/secret@" + secretDigest.String(),
		p.addr + "/hub.example/tenants/prod/secret:v1",
	} {
		out, err := crane(t, "export", "--insecure", ref, filepath.Join(t.TempDir(), "fs.tar"))
		mustFail(t, "crane export "+ref, out, err)
	}
	out, err = skopeoVia(t, p, "hub.example", "hub.example", "copy", "docker://hub.example/tenants/prod/secret:v1", "oci:"+filepath.Join(t.TempDir(), "oci")+":x")
	wantContains(t, "skopeo copy of prod's image from the other upstream", mustFail(t, "skopeo copy from hub.example", out, err), "manifest unknown")
	for _, path := range []string{"/v2/lab/tenants/dev/x/blobs/" + layer.String(), "/v2/lab/tenants/dev/x/manifests/" + secretDigest.String()} {
		if r := request(t, http.MethodGet, p.url()+path, nil, nil); r.status != http.StatusNotFound {
			t.Errorf("GET %s: %d, want 404", path, r.status)
		}
	}

	// Prod's own repository still pulls, from the store.
	out, err = skopeo(t, p, "copy", "docker://lab.example/tenants/prod/secret:v1", "oci:"+filepath.Join(t.TempDir(), "oci")+":x")
	mustSucceed(t, "skopeo copy of prod's image by prod", out, err)
}

// mustBlob is the first bytes of the layer of img with digest d.
func mustBlob(t *testing.T, img v1.Image, d v1.Hash) []byte {
	t.Helper()
	l, err := img.LayerByDigest(d)
	if err != nil {
		t.Fatal(err)
	}
	rc, err := l.Compressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	b := make([]byte, 64)
	if _, err := rc.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}
