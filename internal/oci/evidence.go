package oci

// The evidence types: what internal/upstream finds stored for a digest and
// internal/policy judges. Nothing in them is verified yet.

// Signature is one signature found for a digest, checked against its layer
// digest: a cosign simple-signing layer (the payload, the signature from
// its annotation, and the keyless and log annotations), a Sigstore bundle,
// or a Notary Project signature envelope. Nothing about it is verified yet.
type Signature struct {
	// Source says where it was found, for decision logs:
	// "tag sha256-<hex>.sig" or "referrer sha256:<digest>".
	Source    string
	Payload   []byte
	Signature []byte
	// Certificate, RekorBundle and Timestamp are the layer's annotations
	// of those names (see CertificateAnnotation), empty when absent.
	Certificate, RekorBundle, Timestamp []byte
	// Bundle is a Sigstore bundle (as `cosign sign` v3 writes), in place
	// of Payload and Signature.
	Bundle []byte
	// Notation is a Notary Project signature envelope (as `notation sign`
	// writes) of media type NotationMediaType (JWS or COSE), in
	// place of Payload and Signature.
	Notation          []byte
	NotationMediaType string
}

// Attestation is one attestation layer found for a digest: a DSSE envelope,
// or a Sigstore bundle holding one, checked against its layer digest.
// Nothing about it is verified yet.
type Attestation struct {
	// Source says where it was found: "tag sha256-<hex>.att" or
	// "referrer sha256:<digest>".
	Source string
	// Digest is the layer's digest: the digest of the envelope (or bundle)
	// bytes, which names this attestation in decision logs.
	Digest    string
	MediaType string
	// PredicateType is the predicate type its descriptor announces (an
	// annotation), "" when it announces none; only the verified
	// statement's own type counts.
	PredicateType string
	Raw           []byte
	// Certificate, RekorBundle and Timestamp are the annotations of a
	// keyless or logged DSSE layer of the .att tag, empty when absent.
	Certificate, RekorBundle, Timestamp []byte
}

// Want says which evidence a caller needs, so that nothing else is read.
type Want struct {
	Signatures bool
	// PredicateTypes are the predicate types of the attestations wanted;
	// none means no attestations.
	PredicateTypes []string
	// From says where to look; zero means Everywhere.
	From Places
	// After, when set, is what an earlier look for the same digest found:
	// the layers it read count against the per-digest limits.
	After *Evidence
}

// Places are where evidence is stored.
type Places int

// The places of evidence: cosign's tag schemes (`sha256-<hex>.sig` and
// `.att`), and the OCI 1.1 referrers (or their fallback tag).
const (
	TagSchemes Places = 1 << iota
	Referrers
	Everywhere = TagSchemes | Referrers
)

// Evidence is everything found stored for one digest.
type Evidence struct {
	Signatures []Signature
	// Problems are signature artifacts that could not be used, each with
	// the reason; they are not infrastructure errors.
	Problems     []string
	Attestations []Attestation
	// AttestationProblems are attestations that could not be used, or were
	// not read because a limit was reached.
	AttestationProblems []string
	// SignatureLayers and AttestationLayers count the layers read for this
	// digest, unusable ones included: what the per-digest limits count.
	SignatureLayers, AttestationLayers int
}

// Recognition is the outcome of the artifact check of one manifest.
type Recognition struct {
	// Artifact is true when the manifest is a signature or attestation
	// artifact, served without policy.
	Artifact bool
	// Why says, when Artifact is false, why not.
	Why string
}

// Add appends what more found, a look at other places for the same digest,
// to ev; ev then counts the layers both looks read.
func (ev *Evidence) Add(more *Evidence) {
	ev.Signatures = append(ev.Signatures, more.Signatures...)
	ev.Problems = append(ev.Problems, more.Problems...)
	ev.Attestations = append(ev.Attestations, more.Attestations...)
	ev.AttestationProblems = append(ev.AttestationProblems, more.AttestationProblems...)
	ev.SignatureLayers, ev.AttestationLayers = more.SignatureLayers, more.AttestationLayers
}
