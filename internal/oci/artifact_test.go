package oci_test

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/authz-proxy/authz-proxy/internal/oci"
	"github.com/klauspost/compress/zstd"
)

// Layer contents, real and disguised.
var (
	simpleSigning = []byte(`{"critical":{"identity":{"docker-reference":"r"},"image":{"docker-manifest-digest":"sha256:aa"},"type":"cosign container image signature"},"optional":null}`)
	dsse          = []byte(`{"payloadType":"application/vnd.in-toto+json","payload":"e30=","signatures":[{"keyid":"","sig":"MEUC"}]}`)
	bundle        = []byte(`{"mediaType":"application/vnd.dev.sigstore.bundle.v0.3+json","verificationMaterial":{}}`)
	statement     = []byte(`{"_type":"https://in-toto.io/Statement/v1","predicateType":"https://slsa.dev/provenance/v1","subject":[]}`)
	spdx          = []byte(`{"spdxVersion":"SPDX-2.3","name":"x"}`)
	cyclonedx     = []byte(`{"bomFormat":"CycloneDX","specVersion":"1.5"}`)
)

func tarball(t testing.TB, name string, content []byte) []byte {
	t.Helper()
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o755, Size: int64(len(content)), Typeflag: tar.TypeReg}); err != nil {
		t.Fatal(err)
	}
	tw.Write(content)
	tw.Close()
	return b.Bytes()
}

func gzipped(t testing.TB, data []byte) []byte {
	var b bytes.Buffer
	zw := gzip.NewWriter(&b)
	zw.Write(data)
	zw.Close()
	return b.Bytes()
}

func zstded(t testing.TB, data []byte) []byte {
	enc, err := zstd.NewWriter(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer enc.Close()
	return enc.EncodeAll(data, nil)
}

// polyglot is a JSON object that Go's tar reader also accepts as an
// archive holding a shell script: every byte printable.
func polyglot() []byte {
	hdr := make([]byte, 512)
	for i := range hdr {
		hdr[i] = ' '
	}
	copy(hdr, `{"x":"`)
	copy(hdr[345:], `","critical":{"image":{"docker-manifest-digest":"sha256:aa"},"type":"cosign container image signature"},"y":"`)
	copy(hdr[100:], "0000755 ")     // mode
	copy(hdr[108:], "0000000 ")     // uid
	copy(hdr[116:], "0000000 ")     // gid
	copy(hdr[124:], "00000000000 ") // size 0
	copy(hdr[136:], "00000000000 ") // mtime
	hdr[156] = '0'
	copy(hdr[510:], `"}`)
	sum := 0
	for i, c := range hdr {
		if i >= 148 && i < 156 {
			c = ' '
		}
		sum += int(c)
	}
	copy(hdr[148:], fmt.Sprintf("%06o  ", sum))
	return hdr
}

func manifest(t testing.TB, layers map[string][]byte, order []string, extra string) *oci.Manifest {
	t.Helper()
	var ls []string
	for _, mt := range order {
		ls = append(ls, fmt.Sprintf(`{"mediaType":%q,"digest":"sha256:%064x","size":%d}`, mt, len(layers[mt]), len(layers[mt])))
	}
	raw := fmt.Sprintf(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%064x","size":2},"layers":[%s]%s}`, 1, strings.Join(ls, ","), extra)
	m, err := oci.ParseManifest([]byte(raw), "")
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// recognise is the whole artifact check on a manifest whose layers hold
// contents (by media type).
func recognise(m *oci.Manifest, contents func(i int) []byte) error {
	if err := oci.CheckArtifactManifest(m); err != nil {
		return err
	}
	for i, l := range m.Layers {
		if err := oci.CheckArtifactLayer(l.MediaType, contents(i)); err != nil {
			return err
		}
	}
	return nil
}

func TestArtifactRecognisedByContent(t *testing.T) {
	runnable := tarball(t, "bin/sh", []byte("\x7fELF payload"))
	tests := []struct {
		name      string
		mediaType string
		content   []byte
		extra     string
		wantWhy   string // "" when it is an artifact
	}{
		{"cosign signature", oci.SimpleSigning, simpleSigning, "", ""},
		{"DSSE attestation", oci.DSSE, dsse, "", ""},
		{"Sigstore bundle v0.3", oci.BundleV03, bundle, "", ""},
		{"Sigstore bundle v0.1", oci.Bundle01, bundle, "", ""},
		{"in-toto statement", oci.InToto, statement, "", ""},
		{"SPDX SBOM", oci.SPDXJSON, spdx, "", ""},
		{"CycloneDX SBOM", oci.CycloneDXJSON, cyclonedx, "", ""},
		{"signature with a subject", oci.SimpleSigning, simpleSigning, `,"subject":{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:` + strings.Repeat("b", 64) + `","size":1}`, ""},
		{"layer of an image type", "application/vnd.oci.image.layer.v1.tar+gzip", gzipped(t, runnable), "", "not a signature, attestation or SBOM type"},
		{"octet-stream layer", "application/octet-stream", runnable, "", "not a signature"},
		{"layer without a media type", "", runnable, "", "not a signature"},
		{"upper-case media type", strings.ToUpper(oci.SimpleSigning), simpleSigning, "", "not a signature"},
		{"media type with leading white space", " " + oci.SimpleSigning, simpleSigning, "", "not a signature"},
		{"plain JSON type", "application/json", simpleSigning, "", "not a signature"},
		{"config type", "application/vnd.oci.image.config.v1+json", simpleSigning, "", "not a signature"},
		{"signature type holding a tar", oci.SimpleSigning, runnable, "", "holds a tar archive"},
		{"DSSE type holding gzip", oci.DSSE, gzipped(t, runnable), "", "not a JSON object"},
		{"bundle type holding zstd", oci.BundleV03, zstded(t, runnable), "", "not a JSON object"},
		{"signature type holding a JSON/tar polyglot", oci.SimpleSigning, polyglot(), "", "holds a tar archive"},
		{"signature type holding other JSON", oci.SimpleSigning, dsse, "", "docker-manifest-digest"},
		{"DSSE type holding a bundle", oci.DSSE, bundle, "", "lacks payloadType"},
		{"JSON array", oci.DSSE, []byte(`[1]`), "", "not a JSON object"},
		{"empty layer", oci.SimpleSigning, nil, "", "not a JSON object"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := manifest(t, map[string][]byte{tt.mediaType: tt.content}, []string{tt.mediaType}, tt.extra)
			err := recognise(m, func(int) []byte { return tt.content })
			if tt.wantWhy == "" {
				if err != nil {
					t.Fatalf("not recognised: %v", err)
				}
				return
			}
			if !errors.Is(err, oci.ErrNotArtifact) || !strings.Contains(err.Error(), tt.wantWhy) {
				t.Fatalf("err = %v, want ErrNotArtifact saying %q", err, tt.wantWhy)
			}
		})
	}
}

func TestManifestShapesThatAreNeverArtifacts(t *testing.T) {
	layer := func(mt string) string {
		return fmt.Sprintf(`{"mediaType":%q,"digest":"sha256:%s","size":1}`, mt, strings.Repeat("a", 64))
	}
	tests := []struct{ name, raw, wantWhy string }{
		{"an index", `{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}`, "an index is never one"},
		{"no layers", `{"schemaVersion":2,"layers":[]}`, "no layers"},
		{"one runnable layer among signatures", `{"schemaVersion":2,"layers":[` + layer(oci.SimpleSigning) + `,` + layer("application/vnd.oci.image.layer.v1.tar") + `]}`, "layer 1"},
		{"layers key twice", `{"schemaVersion":2,"layers":[` + layer("application/vnd.oci.image.layer.v1.tar") + `],"layers":[` + layer(oci.SimpleSigning) + `]}`, `key "layers" twice`},
		{"layers key in another case", `{"schemaVersion":2,"Layers":[` + layer("application/vnd.oci.image.layer.v1.tar") + `],"layers":[` + layer(oci.SimpleSigning) + `]}`, `twice`},
		{"mediaType key twice in a descriptor", `{"schemaVersion":2,"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","mediaType":` + fmt.Sprintf("%q", oci.SimpleSigning) + `,"digest":"sha256:` + strings.Repeat("a", 64) + `","size":1}]}`, `key "mediaType" twice`},
		{"layer with urls", `{"schemaVersion":2,"layers":[{"mediaType":"` + oci.SimpleSigning + `","digest":"sha256:` + strings.Repeat("a", 64) + `","size":1,"urls":["https://example.com/x"]}]}`, "outside the registry"},
		{"layer with embedded data", `{"schemaVersion":2,"layers":[{"mediaType":"` + oci.SimpleSigning + `","digest":"sha256:` + strings.Repeat("a", 64) + `","size":1,"data":"e30="}]}`, "outside the registry"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := oci.ParseManifest([]byte(tt.raw), "")
			if err != nil {
				t.Fatal(err)
			}
			err = oci.CheckArtifactManifest(m)
			if !errors.Is(err, oci.ErrNotArtifact) || !strings.Contains(err.Error(), tt.wantWhy) {
				t.Fatalf("err = %v, want ErrNotArtifact saying %q", err, tt.wantWhy)
			}
		})
	}
}

// unpacksToTar reports whether data, decompressed the ways clients try
// (none, gzip, zstd), yields a tar header: what a runtime would unpack.
func unpacksToTar(data []byte) bool {
	readers := []func() (io.Reader, error){
		func() (io.Reader, error) { return bytes.NewReader(data), nil },
		func() (io.Reader, error) { return gzip.NewReader(bytes.NewReader(data)) },
		func() (io.Reader, error) {
			d, err := zstd.NewReader(bytes.NewReader(data))
			if err != nil {
				return nil, err
			}
			return d.IOReadCloser(), nil
		},
	}
	for _, open := range readers {
		r, err := open()
		if err != nil {
			continue
		}
		if _, err := tar.NewReader(r).Next(); err == nil {
			return true
		}
	}
	return false
}

// TestServedWithoutPolicyImpliesNothingToUnpack is the artifact check's
// property: for generated manifests, disguised and genuine, whatever is
// recognised as an artifact has no layer that decompresses to a tar stream.
func TestServedWithoutPolicyImpliesNothingToUnpack(t *testing.T) {
	runnable := tarball(t, "bin/app", []byte("#!/bin/sh\necho pwned\n"))
	contents := [][]byte{
		simpleSigning, dsse, bundle, statement, spdx, cyclonedx, polyglot(),
		runnable, gzipped(t, runnable), zstded(t, runnable), gzipped(t, simpleSigning),
		append([]byte("  \n"), simpleSigning...), []byte(`{}`), []byte("not json"),
	}
	mediaTypes := []string{
		oci.SimpleSigning, oci.DSSE, oci.InToto, oci.BundleV03, oci.Bundle02, oci.SPDXJSON, oci.CycloneDXJSON,
		"", "application/octet-stream", "application/json", strings.ToUpper(oci.DSSE), " " + oci.SimpleSigning,
		"application/vnd.oci.image.layer.v1.tar", "application/vnd.oci.image.layer.v1.tar+gzip",
		"application/vnd.docker.image.rootfs.diff.tar.gzip", "application/vnd.oci.image.config.v1+json",
	}
	rng := rand.New(rand.NewPCG(1, 2))
	recognised := 0
	for n := 0; n < 5000; n++ {
		k := 1 + rng.IntN(3)
		types := make([]string, k)
		picked := make([][]byte, k)
		var ls []string
		for i := range k {
			types[i] = mediaTypes[rng.IntN(len(mediaTypes))]
			picked[i] = contents[rng.IntN(len(contents))]
			ls = append(ls, fmt.Sprintf(`{"mediaType":%q,"digest":"sha256:%064x","size":%d}`, types[i], i, len(picked[i])))
		}
		body := map[bool]string{true: `,"subject":{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:` + strings.Repeat("c", 64) + `","size":1}`, false: ""}[rng.IntN(2) == 0]
		raw := `{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","layers":[` + strings.Join(ls, ",") + `]` + body + `}`
		m, err := oci.ParseManifest([]byte(raw), "")
		if err != nil {
			t.Fatal(err)
		}
		if recognise(m, func(i int) []byte { return picked[i] }) != nil {
			continue
		}
		recognised++
		for i := range k {
			if unpacksToTar(picked[i]) {
				t.Fatalf("served without policy, yet layer %d (%q) unpacks to a tar stream: %s", i, types[i], raw)
			}
		}
	}
	if recognised == 0 {
		t.Fatal("the generator made no genuine artifact: the property was not exercised")
	}
}

func FuzzArtifactRecognition(f *testing.F) {
	f.Add([]byte(`{"schemaVersion":2,"layers":[{"mediaType":"application/vnd.dev.cosign.simplesigning.v1+json","digest":"sha256:aa","size":1}]}`), simpleSigning)
	f.Add([]byte(`{"schemaVersion":2,"layers":[{"mediaType":"application/vnd.dsse.envelope.v1+json","digest":"sha256:aa","size":1}]}`), polyglot())
	f.Add([]byte(`{"schemaVersion":2,"layers":[{"mediaType":"application/vnd.dev.sigstore.bundle.v0.3+json"}],"Layers":[]}`), bundle)
	f.Fuzz(func(t *testing.T, raw, layer []byte) {
		m, err := oci.ParseManifest(raw, "")
		if err != nil {
			return
		}
		if recognise(m, func(int) []byte { return layer }) != nil {
			return
		}
		if m.IsIndex() || len(m.Layers) == 0 {
			t.Fatalf("recognised an index or a manifest without layers: %s", raw)
		}
		for _, l := range m.Layers {
			if !oci.IsArtifactLayerType(l.MediaType) {
				t.Fatalf("recognised a layer of type %q", l.MediaType)
			}
		}
		if unpacksToTar(layer) {
			t.Fatalf("recognised a layer that unpacks to a tar stream: %q", layer)
		}
		var probe map[string]any
		if json.Unmarshal(layer, &probe) != nil {
			t.Fatalf("recognised a layer that is not a JSON object: %q", layer)
		}
	})
}
