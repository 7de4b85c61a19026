// Package sign writes cosign key-based image signatures, in-toto
// attestations (DSSE envelopes) and Notary Project (notation) signatures
// into a registry, in the layouts cosign and notation write: the
// `sha256-<hex>.sig` and `.att` tag schemes and OCI 1.1 referrers (with the
// `sha256-<hex>` referrers-tag fallback). The demo uses it to make its
// sample images; tests use it to make real signatures and attestations.
package sign

import (
	"bytes"
	"context"
	"crypto"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/authz-proxy/authz-proxy/internal/oci"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/sigstore/sigstore/pkg/signature"
)

// Payload returns the simple-signing payload cosign signs for the image
// digest in repository dockerRef.
func Payload(dockerRef, digest string) []byte {
	b, _ := json.Marshal(map[string]any{
		"critical": map[string]any{
			"identity": map[string]string{"docker-reference": dockerRef},
			"image":    map[string]string{"docker-manifest-digest": digest},
			"type":     "cosign container image signature",
		},
		"optional": nil,
	})
	return b
}

// Signature is one signed payload, as it is stored in a signature layer.
type Signature struct {
	Payload []byte
	// Sig is the raw signature (the annotation holds it base64-encoded).
	Sig []byte
	// Certificate and Chain are the PEM signing certificate and its
	// chain of a keyless signature; RekorBundle is the Rekor entry with
	// its signed entry timestamp (cosign's JSON). Each is stored as its
	// layer annotation when set.
	Certificate, Chain, RekorBundle []byte
}

// annotations are the layer annotations of s, as cosign writes them.
func (s Signature) annotations() map[string]string {
	a := map[string]string{oci.SignatureAnnotation: base64.StdEncoding.EncodeToString(s.Sig)}
	for k, v := range map[string][]byte{oci.CertificateAnnotation: s.Certificate, oci.ChainAnnotation: s.Chain, oci.RekorBundleAnnotation: s.RekorBundle} {
		if len(v) > 0 {
			a[k] = string(v)
		}
	}
	return a
}

// New signs the simple-signing payload for digest in repo with s.
func New(s signature.Signer, repo name.Repository, digest string) (Signature, error) {
	payload := Payload(repo.Name(), digest)
	sig, err := s.SignMessage(bytes.NewReader(payload))
	if err != nil {
		return Signature{}, err
	}
	return Signature{Payload: payload, Sig: sig}, nil
}

// NewSigner loads a signer for priv with the hash cosign uses (SHA-256;
// Ed25519 signs the message itself).
func NewSigner(priv crypto.PrivateKey) (signature.Signer, error) {
	return signature.LoadSigner(priv, crypto.SHA256)
}

// AttachTag stores sigs at <repo>:sha256-<hex>.sig, adding them as layers to
// the signatures already there, as `cosign sign` does.
func AttachTag(ctx context.Context, repo name.Repository, digest string, sigs []Signature, opts ...remote.Option) error {
	layers := make([]mutate.Addendum, len(sigs))
	for i, s := range sigs {
		layers[i] = mutate.Addendum{Layer: static.NewLayer(s.Payload, oci.SimpleSigning), Annotations: s.annotations()}
	}
	return appendToTag(ctx, repo, digest, ".sig", layers, opts)
}

// appendToTag adds layers to the manifest at <repo>:sha256-<hex><suffix>,
// creating it empty (OCI manifest, OCI config) when it is not there yet:
// how cosign keeps every signature, or every attestation, of an image in one
// manifest.
func appendToTag(ctx context.Context, repo name.Repository, digest, suffix string, layers []mutate.Addendum, opts []remote.Option) error {
	opts = append(opts, remote.WithContext(ctx))
	tag := repo.Tag(strings.Replace(digest, ":", "-", 1) + suffix)
	img := mutate.MediaType(mutate.ConfigMediaType(empty.Image, types.OCIConfigJSON), types.OCIManifestSchema1)
	if existing, err := remote.Image(tag, opts...); err == nil {
		img = existing
	} else if !isNotFound(err) {
		return err
	}
	img, err := mutate.Append(img, layers...)
	if err != nil {
		return err
	}
	return remote.Write(tag, img, opts...)
}

// AttachReferrer stores s as an OCI 1.1 referrer of subject, the way
// `cosign sign --registry-referrers-mode=oci-1-1` does. With fallbackTag it
// also records the referrer in the `sha256-<hex>` index, for registries
// without the referrers API.
func AttachReferrer(ctx context.Context, repo name.Repository, subject v1.Descriptor, s Signature, fallbackTag bool, opts ...remote.Option) (v1.Hash, error) {
	return putReferrer(ctx, repo, subject, referrer{
		layer: s.Payload, layerMediaType: oci.SimpleSigning, layerAnnotations: s.annotations(),
		artifactType: oci.SignatureArtifactType, indexArtifactType: oci.SignatureArtifactType,
	}, fallbackTag, opts...)
}

// RawManifest is a manifest pushed exactly as given.
type RawManifest struct {
	Raw  []byte
	Type types.MediaType
}

// RawManifest implements remote.Taggable.
func (r RawManifest) RawManifest() ([]byte, error) { return r.Raw, nil }

// MediaType implements remote's media type lookup.
func (r RawManifest) MediaType() (types.MediaType, error) { return r.Type, nil }

// Digest is the SHA-256 of the raw bytes.
func (r RawManifest) Digest() (v1.Hash, error) {
	h, _, err := v1.SHA256(bytes.NewReader(r.Raw))
	return h, err
}

// Size is the length of the raw bytes.
func (r RawManifest) Size() (int64, error) { return int64(len(r.Raw)), nil }

func isNotFound(err error) bool {
	var te *transport.Error
	return errors.As(err, &te) && te.StatusCode == http.StatusNotFound
}

// Describe returns the descriptor of the manifest at ref, for use as a
// referrer's subject.
func Describe(ctx context.Context, ref name.Reference, opts ...remote.Option) (v1.Descriptor, error) {
	d, err := remote.Head(ref, append(opts, remote.WithContext(ctx))...)
	if err != nil {
		return v1.Descriptor{}, fmt.Errorf("describe %s: %w", ref, err)
	}
	return *d, nil
}
