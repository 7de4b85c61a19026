package sign

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"slices"
	"strings"
	"time"

	"github.com/authz-proxy/authz-proxy/internal/oci"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/sigstore/sigstore/pkg/cryptoutils"
	"github.com/sigstore/sigstore/pkg/signature"
	"github.com/sigstore/sigstore/pkg/signature/dsse"
)

// Statement returns an in-toto statement of type statementType
// (oci.StatementV01, as cosign v2 writes, or oci.StatementV1) about digest
// ("sha256:<hex>") of the image named dockerRef.
func Statement(statementType, dockerRef, digest, predicateType string, predicate any) ([]byte, error) {
	alg, hex, _ := strings.Cut(digest, ":")
	return json.Marshal(map[string]any{
		"_type":         statementType,
		"predicateType": predicateType,
		"subject":       []any{map[string]any{"name": dockerRef, "digest": map[string]string{alg: hex}}},
		"predicate":     predicate,
	})
}

// Attestation is one signed DSSE envelope, as stored in a registry.
type Attestation struct {
	// PredicateType goes into the annotations, as cosign puts it there.
	PredicateType string
	// Envelope is the DSSE envelope's JSON.
	Envelope []byte
	// Certificate, Chain and RekorBundle are, for a keyless attestation
	// of the .att tag, its layer annotations, as for a Signature.
	Certificate, Chain, RekorBundle []byte
}

// Attest signs statement with s into a DSSE envelope, exactly as
// `cosign attest --key` does (sigstore's DSSE signer over the PAE
// encoding, payload type application/vnd.in-toto+json).
func Attest(s signature.Signer, predicateType string, statement []byte) (Attestation, error) {
	env, err := dsse.WrapSigner(s, oci.InToto).SignMessage(bytes.NewReader(statement))
	if err != nil {
		return Attestation{}, err
	}
	return Attestation{PredicateType: predicateType, Envelope: env}, nil
}

// AttachAttestationTag stores atts at <repo>:sha256-<hex>.att, adding them
// as layers to the attestations already there, as `cosign attest` does.
func AttachAttestationTag(ctx context.Context, repo name.Repository, digest string, atts []Attestation, opts ...remote.Option) error {
	layers := make([]mutate.Addendum, len(atts))
	for i, a := range atts {
		layers[i] = mutate.Addendum{Layer: static.NewLayer(a.Envelope, oci.DSSE), Annotations: a.annotations()}
	}
	return appendToTag(ctx, repo, digest, ".att", layers, opts)
}

// annotations are the .att layer annotations of a, as cosign writes them.
func (a Attestation) annotations() map[string]string {
	m := Signature{Certificate: a.Certificate, Chain: a.Chain, RekorBundle: a.RekorBundle}.annotations()
	m[oci.SignatureAnnotation] = ""
	m[oci.PredicateTypeAnnotation] = a.PredicateType
	return m
}

// Bundle wraps a DSSE envelope into the Sigstore bundle (v0.3) that
// `cosign attest --key ... --new-bundle-format --tlog-upload=false` writes:
// no transparency-log entry, the key named only by a hint.
func Bundle(envelope []byte, s signature.Signer) ([]byte, error) {
	pub, err := s.PublicKey()
	if err != nil {
		return nil, err
	}
	der, err := cryptoutils.MarshalPublicKeyToDER(pub)
	if err != nil {
		return nil, err
	}
	hint := sha256.Sum256(der)
	return json.Marshal(map[string]any{
		"mediaType": oci.BundleV03,
		"verificationMaterial": map[string]any{
			"publicKey": map[string]string{"hint": base64.StdEncoding.EncodeToString(hint[:])},
		},
		"dsseEnvelope": json.RawMessage(envelope),
	})
}

// AttachAttestationReferrer stores a's envelope, wrapped in a Sigstore
// bundle, as an OCI 1.1 referrer of subject, the manifest that
// `cosign attest --new-bundle-format` writes (cosign v2's referrers mode for
// attestations). With fallbackTag it also records the referrer in the
// `sha256-<hex>` index, as cosign does on registries without the referrers
// API.
func AttachAttestationReferrer(ctx context.Context, repo name.Repository, subject v1.Descriptor, a Attestation, s signature.Signer, fallbackTag bool, opts ...remote.Option) (v1.Hash, error) {
	bundle, err := Bundle(a.Envelope, s)
	if err != nil {
		return v1.Hash{}, err
	}
	// cosign's fallback index names the artifact type of the config.
	return putReferrer(ctx, repo, subject, bundleReferrer(bundle, "dsse-envelope", a.PredicateType, types.OCIEmptyJSON), fallbackTag, opts...)
}

// AttachBundle stores a Sigstore bundle as an OCI 1.1 referrer of subject
// exactly as cosign v3 does (`cosign sign`, and `cosign attest` with the
// bundle format): a manifest with the empty config, one layer of
// oci.BundleV03, artifactType oci.BundleV03, and the annotations
// dev.sigstore.bundle.content (content: "dsse-envelope", or
// "message-signature") and dev.sigstore.bundle.predicateType (omitted when
// predicateType is empty). With fallbackTag it also records the referrer
// in the `sha256-<hex>` index, whose entry cosign v3 types as the bundle.
func AttachBundle(ctx context.Context, repo name.Repository, subject v1.Descriptor, bundle []byte, content, predicateType string, fallbackTag bool, opts ...remote.Option) (v1.Hash, error) {
	return putReferrer(ctx, repo, subject, bundleReferrer(bundle, content, predicateType, oci.BundleV03), fallbackTag, opts...)
}

// AttachGitHubAttestation stores an attestation bundle as a referrer of
// subject the way `actions/attest-build-provenance` does with
// push-to-registry: true: a manifest whose artifactType and only layer
// have the bundle's own media type (mediaType: v0.3, or v0.2 for older
// runs), the empty config, and the annotations dev.sigstore.bundle.content
// ("dsse-envelope") and dev.sigstore.bundle.predicateType. With
// fallbackTag it also records the referrer in the `sha256-<hex>` index.
func AttachGitHubAttestation(ctx context.Context, repo name.Repository, subject v1.Descriptor, bundle []byte, mediaType, predicateType string, fallbackTag bool, opts ...remote.Option) (v1.Hash, error) {
	r := referrer{
		layer: bundle, layerMediaType: mediaType,
		annotations: map[string]string{
			oci.BundleContentAnnotation:        "dsse-envelope",
			oci.BundlePredicateTypeAnnotation:  predicateType,
			"org.opencontainers.image.created": time.Now().UTC().Format(time.RFC3339),
		},
		artifactType: mediaType, indexArtifactType: types.MediaType(mediaType),
	}
	return putReferrer(ctx, repo, subject, r, fallbackTag, opts...)
}

// bundleReferrer is the referrer in which cosign stores a Sigstore bundle;
// indexArtifactType is how its entry in the fallback index is typed.
func bundleReferrer(bundle []byte, content, predicateType string, indexArtifactType types.MediaType) referrer {
	annotations := map[string]string{
		oci.BundleContentAnnotation:        content,
		"org.opencontainers.image.created": time.Now().UTC().Format(time.RFC3339),
	}
	if predicateType != "" {
		annotations[oci.BundlePredicateTypeAnnotation] = predicateType
	}
	return referrer{
		layer: bundle, layerMediaType: oci.BundleV03, annotations: annotations,
		configArtifactType: oci.BundleV03, artifactType: oci.BundleV03, indexArtifactType: indexArtifactType,
	}
}

// referrer is a one-layer artifact manifest with the empty config, as cosign
// writes its referrers.
type referrer struct {
	layer              []byte
	layerMediaType     string
	layerAnnotations   map[string]string
	annotations        map[string]string
	configArtifactType string
	// configMediaType is the empty config's media type; "" is
	// application/vnd.oci.empty.v1+json.
	configMediaType types.MediaType
	// artifactType is left out of the manifest when empty.
	artifactType      string
	indexArtifactType types.MediaType
}

// putReferrer uploads r's layer and the empty config, pushes r's manifest
// as a referrer of subject and, with fallbackTag, adds it to the
// `sha256-<hex>` index.
func putReferrer(ctx context.Context, repo name.Repository, subject v1.Descriptor, r referrer, fallbackTag bool, opts ...remote.Option) (v1.Hash, error) {
	opts = append(opts, remote.WithContext(ctx))
	layer := static.NewLayer(r.layer, types.MediaType(r.layerMediaType))
	configType := r.configMediaType
	if configType == "" {
		configType = types.OCIEmptyJSON
	}
	emptyConfig := static.NewLayer([]byte("{}"), configType)
	for _, l := range []v1.Layer{layer, emptyConfig} {
		if err := remote.WriteLayer(repo, l, opts...); err != nil {
			return v1.Hash{}, err
		}
	}
	layerDigest, _ := layer.Digest()
	configDigest, _ := emptyConfig.Digest()
	manifest := v1.Manifest{
		SchemaVersion: 2,
		MediaType:     types.OCIManifestSchema1,
		Config:        v1.Descriptor{MediaType: configType, Digest: configDigest, Size: 2, ArtifactType: r.configArtifactType},
		Layers: []v1.Descriptor{{
			MediaType: types.MediaType(r.layerMediaType), Digest: layerDigest, Size: int64(len(r.layer)), Annotations: r.layerAnnotations,
		}},
		Annotations: r.annotations,
		Subject:     &subject,
	}
	artifactType, indexArtifactType := r.artifactType, r.indexArtifactType
	raw, err := json.Marshal(struct {
		v1.Manifest
		ArtifactType string `json:"artifactType,omitempty"`
	}{manifest, artifactType})
	if err != nil {
		return v1.Hash{}, err
	}
	d, size, err := v1.SHA256(bytes.NewReader(raw))
	if err != nil {
		return v1.Hash{}, err
	}
	if err := remote.Put(repo.Digest(d.String()), RawManifest{Raw: raw, Type: types.OCIManifestSchema1}, opts...); err != nil {
		return v1.Hash{}, err
	}
	if !fallbackTag {
		return d, nil
	}
	tag := repo.Tag(strings.Replace(subject.Digest.String(), ":", "-", 1))
	idx := mutate.IndexMediaType(empty.Index, types.OCIImageIndex)
	if existing, err := remote.Index(tag, opts...); err == nil {
		idx = existing
	} else if !isNotFound(err) {
		return v1.Hash{}, err
	}
	// On a registry without the referrers API, go-containerregistry's
	// remote.Put has already listed the referrer there, as cosign does:
	// list it once.
	if m, err := idx.IndexManifest(); err != nil {
		return v1.Hash{}, err
	} else if slices.ContainsFunc(m.Manifests, func(l v1.Descriptor) bool { return l.Digest == d }) {
		return d, nil
	}
	idx = mutate.AppendManifests(idx, mutate.IndexAddendum{
		Add: RawManifest{Raw: raw, Type: types.OCIManifestSchema1},
		Descriptor: v1.Descriptor{
			MediaType: types.OCIManifestSchema1, Digest: d, Size: size, ArtifactType: string(indexArtifactType),
		},
	})
	return d, remote.WriteIndex(tag, idx, opts...)
}
