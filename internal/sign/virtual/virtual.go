// Package virtual mints keyless signatures for tests with sigstore-go's
// virtual Sigstore (pkg/testing/ca): a Fulcio CA, a Rekor log and a
// timestamp authority with real keys, all in memory. It writes what
// cosign writes: Sigstore bundles (v0.3, with the log entry's inclusion
// proof and signed entry timestamp) and the annotations of a keyless
// signature in the `.sig` tag scheme, and the trusted_root.json that
// verifies them. It is for tests only: nothing here is trusted.
package virtual

import (
	"bytes"
	"context"
	"crypto"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"time"

	protobundle "github.com/sigstore/protobuf-specs/gen/pb-go/bundle/v1"
	protocommon "github.com/sigstore/protobuf-specs/gen/pb-go/common/v1"
	protodsse "github.com/sigstore/protobuf-specs/gen/pb-go/dsse"
	protorekor "github.com/sigstore/protobuf-specs/gen/pb-go/rekor/v1"
	"github.com/sigstore/rekor/pkg/generated/models"
	"github.com/sigstore/rekor/pkg/types"
	"github.com/sigstore/rekor/pkg/types/hashedrekord"
	"github.com/sigstore/sigstore-go/pkg/root"
	"github.com/sigstore/sigstore-go/pkg/testing/ca"
	"github.com/sigstore/sigstore-go/pkg/tlog"
	"github.com/sigstore/sigstore/pkg/cryptoutils"
	"github.com/sigstore/sigstore/pkg/signature"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/authz-proxy/authz-proxy/internal/oci"
	"github.com/authz-proxy/authz-proxy/internal/sign"
)

// Sigstore is one virtual Sigstore deployment.
type Sigstore struct {
	*ca.VirtualSigstore
}

// New starts a virtual Sigstore whose CA, log and timestamp authority are
// valid from five hours ago to an hour from now; certificates it issues
// are valid for ten minutes from their issue.
func New() (*Sigstore, error) {
	vs, err := ca.NewVirtualSigstore()
	if err != nil {
		return nil, err
	}
	return &Sigstore{vs}, nil
}

// Parts picks the pieces of a trusted root: each is taken from the
// Sigstore named, nil leaves it out.
type Parts struct {
	CA, Log, TSA, CTLog *Sigstore
	// Authorities are further certificate authorities (test CAs), TSAs
	// further timestamp authorities.
	Authorities []*CA
	TSAs        []*TSA
}

// TrustedRoot is the trusted_root.json of p.
func TrustedRoot(p Parts) ([]byte, error) {
	var cas []root.CertificateAuthority
	var tsas []root.TimestampingAuthority
	logs, ctlogs := map[string]*root.TransparencyLog{}, map[string]*root.TransparencyLog{}
	if p.CA != nil {
		cas = p.CA.FulcioCertificateAuthorities()
	}
	for _, a := range p.Authorities {
		cas = append(cas, a.Authority())
	}
	if p.TSA != nil {
		tsas = p.TSA.TimestampingAuthorities()
	}
	for _, t := range p.TSAs {
		tsas = append(tsas, t.Authority())
	}
	if p.Log != nil {
		logs = rawIDs(p.Log.RekorLogs())
	}
	if p.CTLog != nil {
		ctlogs = rawIDs(p.CTLog.CTLogs())
	}
	tr, err := root.NewTrustedRoot(root.TrustedRootMediaType01, cas, ctlogs, tsas, logs)
	if err != nil {
		return nil, err
	}
	return tr.MarshalJSON()
}

// rawIDs gives the logs the raw key IDs that trusted_root.json holds (the
// virtual Sigstore keeps them hex-encoded, which only its in-memory
// material understands).
func rawIDs(logs map[string]*root.TransparencyLog) map[string]*root.TransparencyLog {
	out := map[string]*root.TransparencyLog{}
	for id, l := range logs {
		c := *l
		if raw, err := hex.DecodeString(id); err == nil {
			c.ID = raw
		}
		out[id] = &c
	}
	return out
}

// TrustedRoot is the trusted_root.json of everything s runs, without CT
// logs (s issues certificates without SCTs).
func (s *Sigstore) TrustedRoot() ([]byte, error) {
	return TrustedRoot(Parts{CA: s, Log: s, TSA: s})
}

// Options say what a signature carries besides the signature.
type Options struct {
	// SignedAt is the log entry's integrated time; zero: five minutes
	// from now, while the certificate is valid.
	SignedAt time.Time
	// NoTlog leaves the transparency-log entry out (as cosign
	// --tlog-upload=false does); NoTimestamp the RFC 3161 timestamp.
	NoTlog, NoTimestamp bool
	// RekorV2 logs a DSSE bundle's signature as a Rekor v2 log does: a
	// hashedrekord v0.0.2 entry with an inclusion proof and a signed
	// checkpoint, and neither a signed entry timestamp nor an integrated
	// time.
	RekorV2 bool
}

func (o Options) at() time.Time {
	if o.SignedAt.IsZero() {
		return time.Now().Add(5 * time.Minute)
	}
	return o.SignedAt
}

// DSSEBundle signs statement as identity (a certificate subject) of
// issuer, into a Sigstore bundle holding a DSSE envelope, as `cosign sign`
// (v3) and `cosign attest --new-bundle-format` write.
func (s *Sigstore) DSSEBundle(identity, issuer string, statement []byte, o Options) ([]byte, error) {
	attest := func() (*ca.TestEntity, error) { return s.AttestAtTime(identity, issuer, statement, o.at(), true) }
	if o.RekorV2 {
		attest = func() (*ca.TestEntity, error) {
			return s.AttestAtTimeHashedRekordV2(identity, issuer, statement, o.at())
		}
	}
	e, err := attest()
	if err != nil {
		return nil, err
	}
	return s.bundle(e, o)
}

// MessageBundle signs artifact as identity of issuer, into a Sigstore
// bundle holding a message signature over the artifact's SHA-256 digest
// (the bundle of `cosign sign-blob`).
func (s *Sigstore) MessageBundle(identity, issuer string, artifact []byte, o Options) ([]byte, error) {
	e, err := s.SignAtTime(identity, issuer, artifact, o.at())
	if err != nil {
		return nil, err
	}
	return s.bundle(e, o)
}

// bundle writes e as a v0.3 bundle, completing its log entry with what
// the virtual log leaves out: the kind, the signed entry timestamp, and an
// inclusion proof.
func (s *Sigstore) bundle(e *ca.TestEntity, o Options) ([]byte, error) {
	vc, err := e.VerificationContent()
	if err != nil {
		return nil, err
	}
	b := &protobundle.Bundle{
		MediaType: oci.BundleV03,
		VerificationMaterial: &protobundle.VerificationMaterial{
			Content: &protobundle.VerificationMaterial_Certificate{Certificate: &protocommon.X509Certificate{RawBytes: vc.Certificate().Raw}},
		},
	}
	sc, err := e.SignatureContent()
	if err != nil {
		return nil, err
	}
	if env := sc.EnvelopeContent(); env != nil {
		raw := env.RawEnvelope()
		payload, err := base64.StdEncoding.DecodeString(raw.Payload)
		if err != nil {
			return nil, err
		}
		pe := &protodsse.Envelope{Payload: payload, PayloadType: raw.PayloadType}
		for _, sig := range raw.Signatures {
			sb, err := base64.StdEncoding.DecodeString(sig.Sig)
			if err != nil {
				return nil, err
			}
			pe.Signatures = append(pe.Signatures, &protodsse.Signature{Sig: sb, Keyid: sig.KeyID})
		}
		b.Content = &protobundle.Bundle_DsseEnvelope{DsseEnvelope: pe}
	} else {
		m := sc.MessageSignatureContent()
		b.Content = &protobundle.Bundle_MessageSignature{MessageSignature: &protocommon.MessageSignature{
			MessageDigest: &protocommon.HashOutput{Algorithm: protocommon.HashAlgorithm_SHA2_256, Digest: m.Digest()},
			Signature:     m.Signature(),
		}}
	}
	if !o.NoTlog {
		entries, err := e.TlogEntries()
		if err != nil {
			return nil, err
		}
		for _, entry := range entries {
			if entry.IsRekorV2() {
				tle := entry.TransparencyLogEntry()
				tle.IntegratedTime = 0
				b.VerificationMaterial.TlogEntries = append(b.VerificationMaterial.TlogEntries, tle)
				continue
			}
			tle, err := s.complete(entry, true)
			if err != nil {
				return nil, err
			}
			b.VerificationMaterial.TlogEntries = append(b.VerificationMaterial.TlogEntries, tle)
		}
	}
	if !o.NoTimestamp {
		ts, err := e.Timestamps()
		if err != nil {
			return nil, err
		}
		tvd := &protobundle.TimestampVerificationData{}
		for _, t := range ts {
			tvd.Rfc3161Timestamps = append(tvd.Rfc3161Timestamps, &protocommon.RFC3161SignedTimestamp{SignedTimestamp: t})
		}
		b.VerificationMaterial.TimestampVerificationData = tvd
	}
	return protojson.Marshal(b)
}

// complete returns entry as a bundle's log entry, with its kind, signed
// entry timestamp and (withProof) an inclusion proof.
func (s *Sigstore) complete(entry *tlog.Entry, withProof bool) (*protorekor.TransparencyLogEntry, error) {
	tle := entry.TransparencyLogEntry()
	var body struct {
		Kind       string `json:"kind"`
		APIVersion string `json:"apiVersion"`
	}
	if err := json.Unmarshal(tle.CanonicalizedBody, &body); err != nil {
		return nil, err
	}
	tle.KindVersion = &protorekor.KindVersion{Kind: body.Kind, Version: body.APIVersion}
	set, err := s.RekorSignPayload(s.payload(tle))
	if err != nil {
		return nil, err
	}
	tle.InclusionPromise = &protorekor.InclusionPromise{SignedEntryTimestamp: set}
	if withProof && tle.InclusionProof == nil {
		p, err := s.GetInclusionProof(tle.CanonicalizedBody)
		if err != nil {
			return nil, err
		}
		if tle.InclusionProof, err = proof(p, tle.LogIndex); err != nil {
			return nil, err
		}
	}
	return tle, nil
}

func (s *Sigstore) payload(tle *protorekor.TransparencyLogEntry) tlog.RekorPayload {
	return tlog.RekorPayload{
		Body:           base64.StdEncoding.EncodeToString(tle.CanonicalizedBody),
		IntegratedTime: tle.IntegratedTime,
		LogIndex:       tle.LogIndex,
		LogID:          hex.EncodeToString(tle.LogId.KeyId),
	}
}

func proof(p *models.InclusionProof, logIndex int64) (*protorekor.InclusionProof, error) {
	root, err := hex.DecodeString(*p.RootHash)
	if err != nil {
		return nil, err
	}
	out := &protorekor.InclusionProof{LogIndex: *p.LogIndex, RootHash: root, TreeSize: *p.TreeSize, Checkpoint: &protorekor.Checkpoint{Envelope: *p.Checkpoint}}
	for _, h := range p.Hashes {
		b, err := hex.DecodeString(h)
		if err != nil {
			return nil, err
		}
		out.Hashes = append(out.Hashes, b)
	}
	return out, nil
}

// rekorBundle is cosign's dev.sigstore.cosign/bundle annotation.
type rekorBundle struct {
	SignedEntryTimestamp []byte            `json:"SignedEntryTimestamp"`
	Payload              tlog.RekorPayload `json:"Payload"`
}

// CosignSignature signs the simple-signing payload as identity of issuer
// and returns the `.sig` layer that keyless `cosign sign` (v2) writes: the
// signature, the certificate and chain annotations and, unless o.NoTlog,
// the Rekor entry with its signed entry timestamp.
func (s *Sigstore) CosignSignature(identity, issuer string, payload []byte, o Options) (sign.Signature, error) {
	e, err := s.SignAtTime(identity, issuer, payload, o.at())
	if err != nil {
		return sign.Signature{}, err
	}
	sc, err := e.SignatureContent()
	if err != nil {
		return sign.Signature{}, err
	}
	out := sign.Signature{Payload: payload, Sig: sc.Signature()}
	if out.Certificate, out.Chain, err = s.certificates(e); err != nil {
		return sign.Signature{}, err
	}
	if !o.NoTlog {
		entries, err := e.TlogEntries()
		if err != nil {
			return sign.Signature{}, err
		}
		if out.RekorBundle, err = s.rekorBundle(entries[0].TransparencyLogEntry()); err != nil {
			return sign.Signature{}, err
		}
	}
	return out, nil
}

// CosignAttestation signs statement (of predicateType) as identity of
// issuer into a DSSE envelope and returns the `.att` layer that keyless
// `cosign attest` (v2) writes, with the certificate, chain and (unless
// o.NoTlog) Rekor bundle annotations.
func (s *Sigstore) CosignAttestation(identity, issuer, predicateType string, statement []byte, o Options) (sign.Attestation, error) {
	e, err := s.AttestAtTime(identity, issuer, statement, o.at(), false)
	if err != nil {
		return sign.Attestation{}, err
	}
	sc, err := e.SignatureContent()
	if err != nil {
		return sign.Attestation{}, err
	}
	env, err := json.Marshal(sc.EnvelopeContent().RawEnvelope())
	if err != nil {
		return sign.Attestation{}, err
	}
	out := sign.Attestation{PredicateType: predicateType, Envelope: env}
	if out.Certificate, out.Chain, err = s.certificates(e); err != nil {
		return sign.Attestation{}, err
	}
	if !o.NoTlog {
		entries, err := e.TlogEntries()
		if err != nil {
			return sign.Attestation{}, err
		}
		if out.RekorBundle, err = s.rekorBundle(entries[0].TransparencyLogEntry()); err != nil {
			return sign.Attestation{}, err
		}
	}
	return out, nil
}

// certificates are the PEM leaf certificate of e and the chain above it.
func (s *Sigstore) certificates(e *ca.TestEntity) (leaf, chain []byte, err error) {
	vc, err := e.VerificationContent()
	if err != nil {
		return nil, nil, err
	}
	if leaf, err = cryptoutils.MarshalCertificateToPEM(vc.Certificate()); err != nil {
		return nil, nil, err
	}
	fca := s.FulcioCertificateAuthorities()[0].(*root.FulcioCertificateAuthority)
	chain, err = cryptoutils.MarshalCertificatesToPEM(append(fca.Intermediates, fca.Root))
	return leaf, chain, err
}

func (s *Sigstore) rekorBundle(tle *protorekor.TransparencyLogEntry) ([]byte, error) {
	p := s.payload(tle)
	set, err := s.RekorSignPayload(p)
	if err != nil {
		return nil, err
	}
	return json.Marshal(rekorBundle{SignedEntryTimestamp: set, Payload: p})
}

// LogKeySignature enters the signature sig, made by the key of signer over
// payload, in the virtual Rekor log as cosign v2 does when it signs with a
// key and the transparency log on, and returns the layer's
// dev.sigstore.cosign/bundle annotation.
func (s *Sigstore) LogKeySignature(signer signature.Signer, payload, sig []byte) ([]byte, error) {
	pub, err := signer.PublicKey()
	if err != nil {
		return nil, err
	}
	pem, err := cryptoutils.MarshalPublicKeyToPEM(pub)
	if err != nil {
		return nil, err
	}
	sum := crypto.SHA256.New()
	sum.Write(payload)
	ctx := context.Background()
	pe, err := types.NewProposedEntry(ctx, hashedrekord.KIND, "0.0.1", types.ArtifactProperties{
		PublicKeyBytes: [][]byte{pem},
		PKIFormat:      "x509",
		ArtifactHash:   hex.EncodeToString(sum.Sum(nil)),
		SignatureBytes: sig,
	})
	if err != nil {
		return nil, err
	}
	impl, err := types.CreateVersionedEntry(pe)
	if err != nil {
		return nil, err
	}
	body, err := types.CanonicalizeEntry(ctx, impl)
	if err != nil {
		return nil, err
	}
	logID, err := s.RekorLogID()
	if err != nil {
		return nil, err
	}
	id, err := hex.DecodeString(logID)
	if err != nil {
		return nil, err
	}
	return s.rekorBundle(&protorekor.TransparencyLogEntry{
		LogIndex: 7, LogId: &protocommon.LogId{KeyId: id},
		IntegratedTime: time.Now().Unix(), CanonicalizedBody: bytes.TrimSpace(body),
	})
}

// CosignStatement is the in-toto statement `cosign sign` (v3) signs for an
// image digest ("sha256:<hex>").
func CosignStatement(digest string) []byte {
	alg, h, _ := bytes.Cut([]byte(digest), []byte(":"))
	b, _ := json.Marshal(map[string]any{
		"_type":         "https://in-toto.io/Statement/v1",
		"subject":       []any{map[string]any{"digest": map[string]string{string(alg): string(h)}}},
		"predicateType": "https://sigstore.dev/cosign/sign/v1",
		"predicate":     map[string]any{},
	})
	return b
}
