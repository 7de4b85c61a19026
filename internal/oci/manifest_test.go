package oci_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/authz-proxy/authz-proxy/internal/oci"
)

func TestParseManifest(t *testing.T) {
	tests := []struct {
		name, raw, contentType string
		wantType               string
		wantErr                bool
	}{
		{"OCI image", `{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"sha256:x","size":1}]}`, "", oci.OCIManifest, false},
		{"media type from Content-Type when the body has none", `{"schemaVersion":2,"layers":[]}`, "application/vnd.docker.distribution.manifest.v2+json; charset=utf-8", oci.DockerManifest, false},
		{"body's media type wins over Content-Type", `{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}`, "application/json", oci.OCIIndex, false},
		{"index without any media type", `{"schemaVersion":2,"manifests":[]}`, "", oci.OCIIndex, false},
		{"cosign signature manifest", `{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","layers":[{"mediaType":"application/vnd.dev.cosign.simplesigning.v1+json","digest":"sha256:x","size":1}]}`, "", oci.OCIManifest, false},
		{"docker image", `{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json","layers":[{"mediaType":"application/vnd.docker.image.rootfs.diff.tar.gzip","digest":"sha256:x","size":1}]}`, "", oci.DockerManifest, false},
		{"schema 1", `{"schemaVersion":1}`, "", "", true},
		{"unknown media type", `{"schemaVersion":2,"mediaType":"text/html"}`, "", "", true},
		{"index with layers", `{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","layers":[{}]}`, "", "", true},
		{"not JSON", `<html>`, "", "", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := oci.ParseManifest([]byte(tt.raw), tt.contentType)
			if tt.wantErr {
				if !errors.Is(err, oci.ErrInvalidManifest) {
					t.Fatalf("err = %v, want ErrInvalidManifest", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if m.MediaType != tt.wantType || !strings.HasPrefix(m.Digest, "sha256:") {
				t.Errorf("got type %s digest %s", m.MediaType, m.Digest)
			}
		})
	}
}

func FuzzParseManifest(f *testing.F) {
	f.Add([]byte(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip"}],"subject":{"digest":"sha256:a"}}`), "")
	f.Add([]byte(`{"schemaVersion":2,"manifests":[{"digest":"sha256:a"}]}`), "application/vnd.oci.image.index.v1+json")
	f.Fuzz(func(t *testing.T, raw []byte, contentType string) {
		m, err := oci.ParseManifest(raw, contentType)
		if err != nil {
			if !errors.Is(err, oci.ErrInvalidManifest) {
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
