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
	digest, err := digestOf(raw, algorithm)
	if err != nil {
		return nil, err
	}
	return parseManifest(raw, contentType, digest)
}

func parseManifest(raw []byte, contentType, digest string) (*Manifest, error) {
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
		Digest:       digest,
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

// digestOf is "<algorithm>:<hex>" of raw.
func digestOf(raw []byte, algorithm string) (string, error) {
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
	digest, err := digestOf(raw, algorithm)
	if err != nil {
		return nil, &Error{Upstream: c.name, Op: op, Status: resp.StatusCode, Err: err}
	}
	if wantDigest != "" && digest != wantDigest {
		return nil, &Error{Upstream: c.name, Op: op, Status: resp.StatusCode, Err: fmt.Errorf("%w: got %s", ErrDigestMismatch, digest)}
	}
	// The same digest is the same bytes: parsed once.
	if m, ok := c.Cached(repo, digest); ok {
		return m, nil
	}
	m, err := parseManifest(raw, resp.Header.Get("Content-Type"), digest)
	if err != nil {
		return nil, &Error{Upstream: c.name, Op: op, Status: resp.StatusCode, Err: err}
	}
	c.manifests.Add(repo+"@"+digest, m)
	return m, nil
}

// Cached returns the manifest with digest in repo if it was fetched recently:
// bytes that hash to digest, as fetched from this upstream.
func (c *Client) Cached(repo, digest string) (*Manifest, bool) {
	return c.manifests.Get(repo + "@" + digest)
}

// Head asks the upstream which digest repo:ref points at, without reading
// the manifest. The answer is a lookup key for verified bytes the caller
// already holds, never something served on its own.
func (c *Client) Head(ctx context.Context, repo, ref string) (string, error) {
	resp, err := c.Do(ctx, http.MethodHead, repo, "manifests/"+ref, "", http.Header{"Accept": {accept}})
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return "", c.StatusError("manifest "+repo+":"+ref, resp)
	}
	return resp.Header.Get("Docker-Content-Digest"), nil
}
