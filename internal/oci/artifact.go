package oci

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"unicode"

	"github.com/veraison/go-cose"
)

// Signature artifacts are served without policy, so that cosign, notation
// and podman can read them through the proxy. What makes a manifest one is
// its content, never how it was asked for: every layer is of a media type
// of the closed list below, exactly, and every layer's bytes are a document
// of that kind (JSON, or for a COSE envelope a CBOR COSE_Sign1 message), not
// an archive a client could unpack. Anything else is judged.

// layerKind is what a layer of an artifact media type must hold.
type layerKind struct {
	name string
	// check inspects the top-level fields of the layer's JSON object.
	check func(fields map[string]json.RawMessage) error
	// binary, set for a kind that is not JSON, checks the layer's bytes
	// in place of check.
	binary func(data []byte) error
}

// artifactLayers is the closed list of layer media types of signature and
// attestation artifacts, the one place it is kept.
var artifactLayers = map[string]layerKind{
	SimpleSigning: {"cosign simple-signing payload", checkSimpleSigning, nil},
	DSSE:          {"DSSE envelope", checkDSSE, nil},
	InToto:        {"in-toto statement", checkStatement, nil},
	Bundle01:      {"Sigstore bundle", checkBundle, nil},
	Bundle02:      {"Sigstore bundle", checkBundle, nil},
	Bundle03:      {"Sigstore bundle", checkBundle, nil},
	BundleV03:     {"Sigstore bundle", checkBundle, nil},
	SPDXJSON:      {"SPDX SBOM", checkSPDX, nil},
	SPDXJSONIANA:  {"SPDX SBOM", checkSPDX, nil},
	CycloneDXJSON: {"CycloneDX SBOM", checkCycloneDX, nil},
	SyftJSON:      {"Syft SBOM", checkSyft, nil},
	JWS:           {"Notary Project JWS envelope", checkJWS, nil},
	COSE:          {"Notary Project COSE envelope", nil, checkCOSE},
}

// ErrNotArtifact is wrapped by every reason a manifest is not a signature
// or attestation artifact.
var ErrNotArtifact = errors.New("not a signature or attestation artifact")

func notArtifact(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrNotArtifact, fmt.Sprintf(format, args...))
}

// IsArtifactLayerType reports whether mediaType is, exactly, one of the
// layer media types of signature and attestation artifacts.
func IsArtifactLayerType(mediaType string) bool {
	_, ok := artifactLayers[mediaType]
	return ok
}

// CheckArtifactManifest is the half of the artifact check that needs no
// layer bytes: m is an image manifest (an index never is an artifact) with
// at least one layer, every layer of an artifact media type and taken from
// the registry (no urls, no embedded data), and its JSON has no key twice in
// one object, in any letter case (parsers that keep the first of two keys
// would see other layers). It returns nil when m may be an artifact; each
// layer's bytes must then pass CheckArtifactLayer. Otherwise the error wraps
// ErrNotArtifact and says why.
func CheckArtifactManifest(m *Manifest) error {
	if m.IsIndex() {
		return notArtifact("an index is never one")
	}
	if len(m.Layers) == 0 {
		return notArtifact("it has no layers")
	}
	for i, l := range m.Layers {
		if !IsArtifactLayerType(l.MediaType) {
			return notArtifact("layer %d has media type %q, not a signature, attestation or SBOM type", i, l.MediaType)
		}
		if len(l.URLs) > 0 || l.Data != nil {
			return notArtifact("layer %d names its content outside the registry (urls or data)", i)
		}
	}
	return uniqueKeys(m.Raw)
}

// CheckArtifactLayer checks that data, a layer of media type mediaType, is
// what that type says: a JSON object of that kind (a COSE_Sign1 message for
// a COSE envelope), not a compressed stream or a tar archive. The error
// wraps ErrNotArtifact and says why.
func CheckArtifactLayer(mediaType string, data []byte) error {
	kind, ok := artifactLayers[mediaType]
	if !ok {
		return notArtifact("media type %q is not a signature, attestation or SBOM type", mediaType)
	}
	if isTar(data) {
		return notArtifact("a %s layer holds a tar archive", kind.name)
	}
	if kind.binary != nil {
		if err := kind.binary(data); err != nil {
			return notArtifact("a %s layer %v", kind.name, err)
		}
		return nil
	}
	// A JSON object starts with '{' after optional white space: gzip, zstd,
	// bzip2 and xz streams cannot.
	if first := bytes.TrimLeft(data, " \t\r\n"); len(first) == 0 || first[0] != '{' || !json.Valid(data) {
		return notArtifact("a %s layer is not a JSON object", kind.name)
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(data, &fields); err != nil {
		return notArtifact("a %s layer is not a JSON object: %v", kind.name, err)
	}
	if err := kind.check(fields); err != nil {
		return notArtifact("a %s layer %v", kind.name, err)
	}
	return nil
}

// isTar reports whether data starts with a header that a tar reader
// accepts, even a header made of printable characters only.
func isTar(data []byte) bool {
	_, err := tar.NewReader(bytes.NewReader(data)).Next()
	return err == nil
}

// str reads a string field; "" when absent or not a string.
func str(fields map[string]json.RawMessage, name string) string {
	var s string
	if json.Unmarshal(fields[name], &s) != nil {
		return ""
	}
	return s
}

func checkSimpleSigning(f map[string]json.RawMessage) error {
	var critical struct {
		Type  string `json:"type"`
		Image struct {
			Digest string `json:"docker-manifest-digest"`
		} `json:"image"`
	}
	if err := json.Unmarshal(f["critical"], &critical); err != nil || critical.Image.Digest == "" {
		return errors.New("has no critical.image.docker-manifest-digest")
	}
	if critical.Type != "cosign container image signature" && critical.Type != "atomic container signature" {
		return fmt.Errorf("has critical.type %q", critical.Type)
	}
	return nil
}

func checkDSSE(f map[string]json.RawMessage) error {
	var sigs []json.RawMessage
	if str(f, "payloadType") == "" || str(f, "payload") == "" || json.Unmarshal(f["signatures"], &sigs) != nil || len(sigs) == 0 {
		return errors.New("lacks payloadType, payload or signatures")
	}
	return nil
}

func checkStatement(f map[string]json.RawMessage) error {
	if !strings.HasPrefix(str(f, "_type"), "https://in-toto.io/Statement/") || str(f, "predicateType") == "" {
		return errors.New("lacks an in-toto _type or predicateType")
	}
	return nil
}

func checkBundle(f map[string]json.RawMessage) error {
	if !strings.HasPrefix(str(f, "mediaType"), BundlePrefix) {
		return errors.New("lacks a Sigstore bundle mediaType")
	}
	return nil
}

func checkSPDX(f map[string]json.RawMessage) error {
	if !strings.HasPrefix(str(f, "spdxVersion"), "SPDX-") {
		return errors.New("lacks spdxVersion")
	}
	return nil
}

func checkCycloneDX(f map[string]json.RawMessage) error {
	if str(f, "bomFormat") != "CycloneDX" {
		return errors.New("lacks bomFormat CycloneDX")
	}
	return nil
}

func checkSyft(f map[string]json.RawMessage) error {
	var d struct {
		Name string `json:"name"`
	}
	if json.Unmarshal(f["descriptor"], &d) != nil || d.Name != "syft" {
		return errors.New("lacks descriptor.name syft")
	}
	return nil
}

// checkJWS checks a JWS in flattened JSON serialization, as notation
// writes its envelopes.
func checkJWS(f map[string]json.RawMessage) error {
	if str(f, "payload") == "" || str(f, "protected") == "" || str(f, "signature") == "" {
		return errors.New("lacks payload, protected or signature")
	}
	return nil
}

// checkCOSE checks that data is one COSE_Sign1 message, CBOR-tagged or not,
// and nothing after it. A gzip, zstd, bzip2 or xz stream cannot start like
// one (CBOR tag 18 or an array of four).
func checkCOSE(data []byte) error {
	var tagged cose.Sign1Message
	if tagged.UnmarshalCBOR(data) == nil {
		return nil
	}
	var untagged cose.UntaggedSign1Message
	if err := untagged.UnmarshalCBOR(data); err != nil {
		return fmt.Errorf("is not a COSE_Sign1 message: %v", err)
	}
	return nil
}

// uniqueKeys checks that no JSON object in raw has two keys that are equal
// ignoring case, the way encoding/json matches field names.
func uniqueKeys(raw []byte) error {
	dec := json.NewDecoder(bytes.NewReader(raw))
	type frame struct {
		keys    map[string]bool // nil for an array
		wantKey bool
	}
	var stack []*frame
	valueDone := func() {
		if n := len(stack); n > 0 && stack[n-1].keys != nil {
			stack[n-1].wantKey = true
		}
	}
	for {
		tok, err := dec.Token()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return notArtifact("its JSON does not parse: %v", err)
		}
		switch t := tok.(type) {
		case json.Delim:
			switch t {
			case '{':
				stack = append(stack, &frame{keys: map[string]bool{}, wantKey: true})
			case '[':
				stack = append(stack, &frame{})
			default:
				stack = stack[:len(stack)-1]
				valueDone()
			}
		case string:
			if top := len(stack) - 1; top >= 0 && stack[top].keys != nil && stack[top].wantKey {
				k := fold(t)
				if stack[top].keys[k] {
					return notArtifact("its JSON has the key %q twice in one object", t)
				}
				stack[top].keys[k], stack[top].wantKey = true, false
				continue
			}
			valueDone()
		default:
			valueDone()
		}
	}
}

// fold maps s to one representative of its case-insensitive class: each
// rune to the smallest rune of its Unicode simple-folding orbit.
func fold(s string) string {
	var b strings.Builder
	for _, r := range s {
		least := r
		for f := unicode.SimpleFold(r); f != r; f = unicode.SimpleFold(f) {
			least = min(least, f)
		}
		b.WriteRune(least)
	}
	return b.String()
}
