// Package oci is the registry vocabulary the other packages share: the media
// types and annotation names of images, indexes and signature formats, a
// manifest as fetched (its exact bytes, the digest computed from them, its
// parsed descriptors), and the closed list of signature and attestation
// layer types with the check that a manifest positively is such an artifact.
// It does no I/O: callers hand it the bytes they read.
package oci

import "strings"

// Manifest media types authz-proxy judges and serves.
const (
	OCIManifest    = "application/vnd.oci.image.manifest.v1+json"
	OCIIndex       = "application/vnd.oci.image.index.v1+json"
	DockerManifest = "application/vnd.docker.distribution.manifest.v2+json"
	DockerList     = "application/vnd.docker.distribution.manifest.list.v2+json"
	// EmptyJSON is the media type of the empty config (`{}`) of artifacts.
	EmptyJSON = "application/vnd.oci.empty.v1+json"
)

// Accept is what the proxy asks upstreams for: every manifest type it can
// judge, so that an upstream never converts a manifest (a converted
// manifest has another digest).
var Accept = strings.Join([]string{OCIIndex, OCIManifest, DockerList, DockerManifest}, ", ")

// Layer media types of signatures and attestations, and the artifact types
// of the manifests that carry them.
const (
	// SimpleSigning is a cosign signature payload (`.sig` tag or referrer).
	SimpleSigning = "application/vnd.dev.cosign.simplesigning.v1+json"
	// SignatureArtifactType is the artifact type of a cosign signature
	// stored as a referrer.
	SignatureArtifactType = "application/vnd.dev.cosign.artifact.sig.v1+json"
	// DSSE is one DSSE envelope of an in-toto statement (`.att` tag).
	DSSE = "application/vnd.dsse.envelope.v1+json"
	// InToto is a bare in-toto statement.
	InToto = "application/vnd.in-toto+json"
	// BundlePrefix starts the media types of every Sigstore bundle version.
	BundlePrefix = "application/vnd.dev.sigstore.bundle"
	// BundleV03 is the media type of a v0.3 Sigstore bundle, as cosign v3
	// writes it; older versions are Bundle01 and Bundle02.
	BundleV03 = "application/vnd.dev.sigstore.bundle.v0.3+json"
	Bundle01  = "application/vnd.dev.sigstore.bundle+json;version=0.1"
	Bundle02  = "application/vnd.dev.sigstore.bundle+json;version=0.2"
	Bundle03  = "application/vnd.dev.sigstore.bundle+json;version=0.3"
	// SBOM media types that `cosign attach sbom` uses for JSON documents.
	SPDXJSON      = "text/spdx+json"
	SPDXJSONIANA  = "application/spdx+json"
	CycloneDXJSON = "application/vnd.cyclonedx+json"
	SyftJSON      = "application/vnd.syft+json"
	// NotationSignature is the artifact type of a Notary Project
	// (notation) signature manifest: its artifactType, or the media type
	// of its empty config as notation writes it.
	NotationSignature = "application/vnd.cncf.notary.signature"
	// JWS and COSE are the media types of the layer of a Notary Project
	// signature: its envelope, a JWS in JSON serialization or a CBOR
	// COSE_Sign1 message.
	JWS  = "application/jose+json"
	COSE = "application/cose"
)

// Annotations of signature and attestation manifests and layers.
const (
	// SignatureAnnotation holds the base64 signature of a simple-signing
	// layer.
	SignatureAnnotation = "dev.cosignproject.cosign/signature"
	// CertificateAnnotation, RekorBundleAnnotation and TimestampAnnotation
	// are the PEM signing certificate, the Rekor entry with its signed
	// entry timestamp, and an RFC 3161 timestamp of a keyless or logged
	// cosign layer (.sig or .att).
	CertificateAnnotation = "dev.sigstore.cosign/certificate"
	// ChainAnnotation is the PEM chain of the signing certificate; the
	// proxy ignores it (the trusted root's CAs decide).
	ChainAnnotation       = "dev.sigstore.cosign/chain"
	RekorBundleAnnotation = "dev.sigstore.cosign/bundle"
	TimestampAnnotation   = "dev.sigstore.cosign/rfc3161timestamp"
	// PredicateTypeAnnotation names the predicate type of a .att layer;
	// BundlePredicateTypeAnnotation that of a bundle referrer manifest.
	// Neither is signed: they only spare reading attestations of other
	// types, the signed statement decides.
	PredicateTypeAnnotation       = "predicateType"
	BundlePredicateTypeAnnotation = "dev.sigstore.bundle.predicateType"
	// BundleContentAnnotation says what a bundle referrer holds:
	// "dsse-envelope" or "message-signature".
	BundleContentAnnotation = "dev.sigstore.bundle.content"
)

// The in-toto Statement `_type`s accepted; cosign v2 writes v0.1 whatever
// the predicate.
const (
	StatementV01 = "https://in-toto.io/Statement/v0.1"
	StatementV1  = "https://in-toto.io/Statement/v1"
)

// CosignSignPredicateType is the predicate type of the DSSE bundle that
// `cosign sign` (v3) stores as a referrer: an image signature.
const CosignSignPredicateType = "https://sigstore.dev/cosign/sign/v1"

// IsNotationSignature reports whether m says it is a Notary Project
// signature: by its artifact type, or by its config's media type, which is
// where notation puts it. Its envelope is then its one JWS or COSE layer.
func IsNotationSignature(m *Manifest) bool {
	return m.ArtifactType == NotationSignature || m.ArtifactType == "" && m.Config.MediaType == NotationSignature
}

// IsDigest reports whether a manifest reference is a digest rather than a
// tag (a tag cannot hold a colon).
func IsDigest(ref string) bool { return strings.Contains(ref, ":") }

// FallbackTag is the tag of the referrers fallback index of digest
// (`sha256-<hex>`); cosign's tag schemes add `.sig` and `.att` to it.
func FallbackTag(digest string) string { return strings.Replace(digest, ":", "-", 1) }
