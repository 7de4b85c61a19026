package oci

import (
	"crypto/sha256"
	"crypto/sha512"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"mime"
	"strings"
)

// ErrInvalidManifest is wrapped by the errors of manifests the proxy will not
// serve: not JSON, not schema 2, an unknown media type, the fields of another
// type.
var ErrInvalidManifest = errors.New("invalid manifest")

// Descriptor is the part of an OCI descriptor the proxy reads.
type Descriptor struct {
	MediaType    string            `json:"mediaType"`
	Digest       string            `json:"digest"`
	Size         int64             `json:"size"`
	ArtifactType string            `json:"artifactType,omitempty"`
	Annotations  map[string]string `json:"annotations,omitempty"`
	// URLs and Data, when present, tell a client to take the content from
	// elsewhere than the registry's blob store.
	URLs []string `json:"urls,omitempty"`
	Data []byte   `json:"data,omitempty"`
}

// Manifest is a manifest as fetched: the exact bytes, and the digest and
// media type derived from them. These bytes are what the proxy judges and
// serves.
type Manifest struct {
	Raw []byte
	// Digest is the sha256 digest of Raw, whatever digest a client asked
	// for: policies, signatures and caches all name a manifest by it.
	Digest    string
	MediaType string

	ArtifactType string
	Config       Descriptor
	Layers       []Descriptor
	Manifests    []Descriptor
	Subject      *Descriptor
	Annotations  map[string]string
}

// IsIndex reports whether m is an image index or manifest list.
func (m *Manifest) IsIndex() bool { return IsIndexType(m.MediaType) }

// IsIndexType reports whether mediaType is an image index or manifest list.
func IsIndexType(mediaType string) bool { return mediaType == OCIIndex || mediaType == DockerList }

// ParseManifest derives a Manifest from raw bytes. contentType is the
// upstream's Content-Type, used only where the bytes do not say their type.
func ParseManifest(raw []byte, contentType string) (*Manifest, error) {
	var body struct {
		SchemaVersion int               `json:"schemaVersion"`
		MediaType     string            `json:"mediaType"`
		ArtifactType  string            `json:"artifactType"`
		Config        Descriptor        `json:"config"`
		Layers        []Descriptor      `json:"layers"`
		Manifests     []Descriptor      `json:"manifests"`
		Subject       *Descriptor       `json:"subject"`
		Annotations   map[string]string `json:"annotations"`
	}
	if err := json.Unmarshal(raw, &body); err != nil {
		return nil, fmt.Errorf("%w: not JSON: %v", ErrInvalidManifest, err)
	}
	if body.SchemaVersion != 2 {
		return nil, fmt.Errorf("%w: schemaVersion %d (only schema 2 manifests are supported)", ErrInvalidManifest, body.SchemaVersion)
	}
	mt := body.MediaType
	if mt == "" {
		mt, _, _ = mime.ParseMediaType(contentType)
	}
	switch mt {
	case OCIManifest, DockerManifest, OCIIndex, DockerList:
	case "":
		mt = OCIManifest
		if body.Manifests != nil {
			mt = OCIIndex
		}
	default:
		return nil, fmt.Errorf("%w: media type %q is not an image manifest or index", ErrInvalidManifest, mt)
	}
	if IsIndexType(mt) && len(body.Layers) > 0 || !IsIndexType(mt) && len(body.Manifests) > 0 {
		return nil, fmt.Errorf("%w: %s with the fields of another type", ErrInvalidManifest, mt)
	}
	sum := sha256.Sum256(raw)
	return &Manifest{
		Raw:          raw,
		Digest:       "sha256:" + hex.EncodeToString(sum[:]),
		MediaType:    mt,
		ArtifactType: body.ArtifactType,
		Config:       body.Config,
		Layers:       body.Layers,
		Manifests:    body.Manifests,
		Subject:      body.Subject,
		Annotations:  body.Annotations,
	}, nil
}

// DigestOf is the digest of raw with the algorithm of like ("sha256:…" or
// "sha512:…"), so that bytes can be checked against a digest a client asked
// for.
func DigestOf(raw []byte, like string) (string, error) {
	algorithm, _, _ := strings.Cut(like, ":")
	var h hash.Hash
	switch algorithm {
	case "sha256":
		h = sha256.New()
	case "sha512":
		h = sha512.New()
	default:
		return "", fmt.Errorf("%w: unsupported digest algorithm %q", ErrInvalidManifest, algorithm)
	}
	h.Write(raw)
	return algorithm + ":" + hex.EncodeToString(h.Sum(nil)), nil
}
