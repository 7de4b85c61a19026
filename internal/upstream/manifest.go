package upstream

import (
	"context"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"mime"
	"net/http"
	"strings"
)

// Manifest media types authz-proxy serves.
const (
	OCIManifest    = "application/vnd.oci.image.manifest.v1+json"
	OCIIndex       = "application/vnd.oci.image.index.v1+json"
	DockerManifest = "application/vnd.docker.distribution.manifest.v2+json"
	DockerList     = "application/vnd.docker.distribution.manifest.list.v2+json"
)

// accept is what the proxy asks upstreams for: every manifest type it can
// judge, so that the upstream never converts a manifest (a converted
// manifest has another digest).
var accept = strings.Join([]string{OCIIndex, OCIManifest, DockerList, DockerManifest}, ", ")

// Errors that mean the upstream sent something the proxy will not serve.
var (
	ErrManifestTooLarge = errors.New("manifest too large")
	ErrDigestMismatch   = errors.New("manifest bytes do not match the digest asked for")
	ErrInvalidManifest  = errors.New("invalid manifest")
)

// Descriptor is the part of an OCI descriptor the proxy reads.
type Descriptor struct {
	MediaType    string            `json:"mediaType"`
	Digest       string            `json:"digest"`
	Size         int64             `json:"size"`
	ArtifactType string            `json:"artifactType,omitempty"`
	Annotations  map[string]string `json:"annotations,omitempty"`
}

// Manifest is a manifest as fetched: the exact bytes, and the digest and
// media type derived from them. These bytes are what the proxy judges and
// serves.
type Manifest struct {
	Raw       []byte
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
func (m *Manifest) IsIndex() bool { return m.MediaType == OCIIndex || m.MediaType == DockerList }

// Runnable reports whether any layer is a filesystem layer a runtime would
// unpack and run.
func (m *Manifest) Runnable() bool {
	for _, l := range m.Layers {
		if strings.HasPrefix(l.MediaType, "application/vnd.oci.image.layer.") ||
			strings.HasPrefix(l.MediaType, "application/vnd.docker.image.rootfs.") {
			return true
		}
	}
	return false
}

// ParseManifest derives a Manifest from raw bytes. contentType is the
// upstream's Content-Type, used only where the bytes do not say their type.
func ParseManifest(raw []byte, contentType, algorithm string) (*Manifest, error) {
	h, err := hasher(algorithm)
	if err != nil {
		return nil, err
	}
	h.Write(raw)
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
	m := &Manifest{
		Raw:          raw,
		Digest:       algorithm + ":" + hex.EncodeToString(h.Sum(nil)),
		MediaType:    mt,
		ArtifactType: body.ArtifactType,
		Config:       body.Config,
		Layers:       body.Layers,
		Manifests:    body.Manifests,
		Subject:      body.Subject,
		Annotations:  body.Annotations,
	}
	if m.IsIndex() && len(body.Layers) > 0 || !m.IsIndex() && len(body.Manifests) > 0 {
		return nil, fmt.Errorf("%w: %s with the fields of another type", ErrInvalidManifest, mt)
	}
	return m, nil
}

func hasher(algorithm string) (hash.Hash, error) {
	switch algorithm {
	case "sha256":
		return sha256.New(), nil
	case "sha512":
		return sha512.New(), nil
	}
	return nil, fmt.Errorf("unsupported digest algorithm %q", algorithm)
}

// Manifest fetches the manifest at repo:ref (a tag or a digest) once, reading
// at most the manifest size limit, and derives its digest from the bytes.
// When ref is a digest the bytes must hash to it.
func (c *Client) Manifest(ctx context.Context, repo, ref string) (*Manifest, error) {
	op := "manifest " + repo + ":" + ref
	algorithm, wantDigest := "sha256", ""
	if a, _, ok := strings.Cut(ref, ":"); ok {
		algorithm, wantDigest = a, ref
	}
	resp, err := c.Do(ctx, http.MethodGet, repo, "manifests/"+ref, "", http.Header{"Accept": {accept}})
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, c.StatusError(op, resp)
	}
	limit := c.limits.MaxManifestSize
	if resp.ContentLength > limit {
		return nil, &Error{Upstream: c.name, Op: op, Status: resp.StatusCode, Err: fmt.Errorf("%w: %d bytes, over the %d-byte limit", ErrManifestTooLarge, resp.ContentLength, limit)}
	}
	raw, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err != nil {
		return nil, &Error{Upstream: c.name, Op: op, Err: err}
	}
	if int64(len(raw)) > limit {
		return nil, &Error{Upstream: c.name, Op: op, Status: resp.StatusCode, Err: fmt.Errorf("%w: over the %d-byte limit", ErrManifestTooLarge, limit)}
	}
	m, err := ParseManifest(raw, resp.Header.Get("Content-Type"), algorithm)
	if err != nil {
		return nil, &Error{Upstream: c.name, Op: op, Status: resp.StatusCode, Err: err}
	}
	if wantDigest != "" && m.Digest != wantDigest {
		return nil, &Error{Upstream: c.name, Op: op, Status: resp.StatusCode, Err: fmt.Errorf("%w: got %s", ErrDigestMismatch, m.Digest)}
	}
	return m, nil
}
