package upstream_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/authz-proxy/authz-proxy/internal/upstream"
)

func TestParseManifest(t *testing.T) {
	tests := []struct {
		name, raw, contentType string
		wantType               string
		wantRunnable, wantErr  bool
	}{
		{"OCI image", `{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"sha256:x","size":1}]}`, "", upstream.OCIManifest, true, false},
		{"media type from Content-Type when the body has none", `{"schemaVersion":2,"layers":[]}`, "application/vnd.docker.distribution.manifest.v2+json; charset=utf-8", upstream.DockerManifest, false, false},
		{"body's media type wins over Content-Type", `{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}`, "application/json", upstream.OCIIndex, false, false},
		{"index without any media type", `{"schemaVersion":2,"manifests":[]}`, "", upstream.OCIIndex, false, false},
		{"cosign signature manifest is not runnable", `{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","layers":[{"mediaType":"application/vnd.dev.cosign.simplesigning.v1+json","digest":"sha256:x","size":1}]}`, "", upstream.OCIManifest, false, false},
		{"docker rootfs layer is runnable", `{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json","layers":[{"mediaType":"application/vnd.docker.image.rootfs.diff.tar.gzip","digest":"sha256:x","size":1}]}`, "", upstream.DockerManifest, true, false},
		{"schema 1", `{"schemaVersion":1}`, "", "", false, true},
		{"unknown media type", `{"schemaVersion":2,"mediaType":"text/html"}`, "", "", false, true},
		{"index with layers", `{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","layers":[{}]}`, "", "", false, true},
		{"not JSON", `<html>`, "", "", false, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := upstream.ParseManifest([]byte(tt.raw), tt.contentType, "sha256")
			if tt.wantErr {
				if !errors.Is(err, upstream.ErrInvalidManifest) {
					t.Fatalf("err = %v, want ErrInvalidManifest", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if m.MediaType != tt.wantType || m.Runnable() != tt.wantRunnable || !strings.HasPrefix(m.Digest, "sha256:") {
				t.Errorf("got type %s runnable %v digest %s", m.MediaType, m.Runnable(), m.Digest)
			}
		})
	}
}

func FuzzParseManifest(f *testing.F) {
	f.Add([]byte(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip"}],"subject":{"digest":"sha256:a"}}`), "")
	f.Add([]byte(`{"schemaVersion":2,"manifests":[{"digest":"sha256:a"}]}`), "application/vnd.oci.image.index.v1+json")
	f.Fuzz(func(t *testing.T, raw []byte, contentType string) {
		m, err := upstream.ParseManifest(raw, contentType, "sha256")
		if err != nil {
			if !errors.Is(err, upstream.ErrInvalidManifest) {
				t.Fatalf("unclassified error: %v", err)
			}
			return
		}
		if string(m.Raw) != string(raw) || len(m.Digest) != 71 {
			t.Fatalf("manifest does not keep its bytes or digest: %q %s", m.Raw, m.Digest)
		}
		if m.IsIndex() && len(m.Layers) > 0 {
			t.Fatal("an index with layers was accepted")
		}
	})
}
