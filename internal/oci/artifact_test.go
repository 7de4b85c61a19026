package oci_test

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/x509/pkix"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/klauspost/compress/zstd"
	"github.com/veraison/go-cose"

	"github.com/authz-proxy/authz-proxy/internal/oci"
	"github.com/authz-proxy/authz-proxy/internal/sign"
	"github.com/authz-proxy/authz-proxy/internal/sign/virtual"
	"github.com/authz-proxy/authz-proxy/internal/testkit"
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

// notation returns a Notary Project signature envelope of mediaType (JWS
// or COSE), as `notation sign` writes it, made once.
var notation = sync.OnceValues(func() (map[string][]byte, error) {
	ca, err := virtual.NewCA("Acme", time.Now().Add(-time.Hour), time.Now().Add(time.Hour))
	if err != nil {
		return nil, err
	}
	s, err := ca.Issue(virtual.Leaf{Name: pkix.Name{Country: []string{"US"}, Province: []string{"WA"}, Organization: []string{"Acme"}, CommonName: "release"}})
	if err != nil {
		return nil, err
	}
	target := v1.Descriptor{MediaType: "application/vnd.oci.image.manifest.v1+json", Digest: v1.Hash{Algorithm: "sha256", Hex: strings.Repeat("a", 64)}, Size: 1}
	out := map[string][]byte{}
	for _, mt := range []string{oci.JWS, oci.COSE} {
		if out[mt], err = sign.Notation(s.Key, s.Chain(), target, sign.NotationOptions{MediaType: mt}); err != nil {
			return nil, err
		}
	}
	return out, nil
})

func envelope(t testing.TB, mediaType string) []byte {
	t.Helper()
	envs, err := notation()
	if err != nil {
		t.Fatal(err)
	}
	return envs[mediaType]
}

// coseTarPolyglot is a COSE_Sign1 message (empty protected header, empty
// unprotected header, a 496-byte payload, an 8-byte signature) that Go's
// tar reader also accepts as an archive header: tar's name field holds the
// CBOR heads, the rest of the header sits in the payload.
func coseTarPolyglot() []byte {
	hdr := make([]byte, 512)
	copy(hdr, []byte{0xd2, 0x84, 0x40, 0xa0, 0x59, 0x01, 0xf0})
	for i := 7; i < 100; i++ {
		hdr[i] = 'a'
	}
	copy(hdr[100:], "0000755 ")
	copy(hdr[108:], "0000000 ")
	copy(hdr[116:], "0000000 ")
	copy(hdr[124:], "00000000000 ")
	copy(hdr[136:], "00000000000 ")
	hdr[156] = '0'
	hdr[503] = 0x48 // the signature: a bstr of 8 bytes
	sum := 0
	for i, c := range hdr {
		if i >= 148 && i < 156 {
			c = ' '
		}
		sum += int(c)
	}
	copy(hdr[148:], fmt.Sprintf("%06o\x00 ", sum))
	return hdr
}

func TestCOSETarPolyglotIsBoth(t *testing.T) {
	var m cose.Sign1Message
	if err := m.UnmarshalCBOR(coseTarPolyglot()); err != nil {
		t.Fatalf("not a COSE_Sign1 message: %v", err)
	}
	if _, err := tar.NewReader(bytes.NewReader(coseTarPolyglot())).Next(); err != nil {
		t.Fatalf("not a tar header: %v", err)
	}
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
	runnable := testkit.Tar(t, "bin/sh", []byte("\x7fELF payload"))
	jws, cose := envelope(t, oci.JWS), envelope(t, oci.COSE)
	tests := []struct {
		name      string
		mediaType string
		content   []byte
		extra     string
		wantWhy   string // "" when it is an artifact
	}{
		{"notation JWS envelope", oci.JWS, jws, "", ""},
		{"notation COSE envelope", oci.COSE, cose, "", ""},
		{"untagged COSE_Sign1", oci.COSE, cose[1:], "", ""},
		{"COSE type holding a tar", oci.COSE, runnable, "", "holds a tar archive"},
		{"COSE type holding a COSE/tar polyglot", oci.COSE, coseTarPolyglot(), "", "holds a tar archive"},
		{"COSE type holding gzip", oci.COSE, testkit.Gzip(t, runnable), "", "not a COSE_Sign1 message"},
		{"COSE type holding JSON", oci.COSE, jws, "", "not a COSE_Sign1 message"},
		{"COSE with bytes after the message", oci.COSE, append(append([]byte{}, cose...), 0), "", "not a COSE_Sign1 message"},
		{"empty COSE layer", oci.COSE, nil, "", "not a COSE_Sign1 message"},
		{"JWS type holding COSE", oci.JWS, cose, "", "not a JSON object"},
		{"JWS type holding other JSON", oci.JWS, dsse, "", "lacks payload, protected or signature"},
		{"cosign signature", oci.SimpleSigning, simpleSigning, "", ""},
		{"DSSE attestation", oci.DSSE, dsse, "", ""},
		{"Sigstore bundle v0.3", oci.BundleV03, bundle, "", ""},
		{"Sigstore bundle v0.1", oci.Bundle01, bundle, "", ""},
		{"in-toto statement", oci.InToto, statement, "", ""},
		{"SPDX SBOM", oci.SPDXJSON, spdx, "", ""},
		{"CycloneDX SBOM", oci.CycloneDXJSON, cyclonedx, "", ""},
		{"signature with a subject", oci.SimpleSigning, simpleSigning, `,"subject":{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:` + strings.Repeat("b", 64) + `","size":1}`, ""},
		{"layer of an image type", "application/vnd.oci.image.layer.v1.tar+gzip", testkit.Gzip(t, runnable), "", "not a signature, attestation or SBOM type"},
		{"octet-stream layer", "application/octet-stream", runnable, "", "not a signature"},
		{"layer without a media type", "", runnable, "", "not a signature"},
		{"upper-case media type", strings.ToUpper(oci.SimpleSigning), simpleSigning, "", "not a signature"},
		{"media type with leading white space", " " + oci.SimpleSigning, simpleSigning, "", "not a signature"},
		{"plain JSON type", "application/json", simpleSigning, "", "not a signature"},
		{"config type", "application/vnd.oci.image.config.v1+json", simpleSigning, "", "not a signature"},
		{"signature type holding a tar", oci.SimpleSigning, runnable, "", "holds a tar archive"},
		{"DSSE type holding gzip", oci.DSSE, testkit.Gzip(t, runnable), "", "not a JSON object"},
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
	runnable := testkit.Tar(t, "bin/app", []byte("#!/bin/sh\necho pwned\n"))
	cose := envelope(t, oci.COSE)
	contents := [][]byte{
		simpleSigning, dsse, bundle, statement, spdx, cyclonedx, polyglot(),
		runnable, testkit.Gzip(t, runnable), zstded(t, runnable), testkit.Gzip(t, simpleSigning),
		append([]byte("  \n"), simpleSigning...), []byte(`{}`), []byte("not json"),
		envelope(t, oci.JWS), cose, cose[1:], coseTarPolyglot(), testkit.Gzip(t, cose),
	}
	mediaTypes := []string{
		oci.SimpleSigning, oci.DSSE, oci.InToto, oci.BundleV03, oci.Bundle02, oci.SPDXJSON, oci.CycloneDXJSON, oci.JWS, oci.COSE,
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
	f.Add([]byte(`{"schemaVersion":2,"config":{"mediaType":"application/vnd.cncf.notary.signature","digest":"sha256:aa","size":2},"layers":[{"mediaType":"application/cose","digest":"sha256:aa","size":1}]}`), envelope(f, oci.COSE))
	f.Add([]byte(`{"schemaVersion":2,"layers":[{"mediaType":"application/cose","digest":"sha256:aa","size":1}]}`), coseTarPolyglot())
	f.Add([]byte(`{"schemaVersion":2,"layers":[{"mediaType":"application/jose+json","digest":"sha256:aa","size":1}]}`), envelope(f, oci.JWS))
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
		for _, l := range m.Layers {
			if l.MediaType == oci.COSE {
				var tagged cose.Sign1Message
				var untagged cose.UntaggedSign1Message
				if tagged.UnmarshalCBOR(layer) != nil && untagged.UnmarshalCBOR(layer) != nil {
					t.Fatalf("recognised a COSE layer that is not a COSE_Sign1 message: %q", layer)
				}
				continue
			}
			var probe map[string]any
			if json.Unmarshal(layer, &probe) != nil {
				t.Fatalf("recognised a layer of type %q that is not a JSON object: %q", l.MediaType, layer)
			}
		}
	})
}
