package verify

import (
	"bytes"
	"crypto"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strings"
	"time"

	"github.com/authz-proxy/authz-proxy/internal/oci"
	protobundle "github.com/sigstore/protobuf-specs/gen/pb-go/bundle/v1"
	protocommon "github.com/sigstore/protobuf-specs/gen/pb-go/common/v1"
	protorekor "github.com/sigstore/protobuf-specs/gen/pb-go/rekor/v1"
	"github.com/sigstore/sigstore-go/pkg/bundle"
	"github.com/sigstore/sigstore-go/pkg/root"
	"github.com/sigstore/sigstore-go/pkg/tlog"
	sgverify "github.com/sigstore/sigstore-go/pkg/verify"
	"github.com/sigstore/sigstore/pkg/cryptoutils"
	"github.com/sigstore/sigstore/pkg/signature"
	"github.com/sigstore/sigstore/pkg/signature/options"
	"google.golang.org/protobuf/encoding/protojson"
)

// TrustedRoot is a parsed Sigstore trusted root (trusted_root.json): the
// Fulcio certificate authorities, Rekor transparency logs, certificate
// transparency logs and timestamp authorities, each with its validity
// period. It is the trusted material; nothing is fetched.
type TrustedRoot struct {
	root   *root.TrustedRoot
	origin RootOrigin
	// withdrawn, when set, says why this root verifies nothing now (its
	// TUF metadata expired): a verification that needs it cannot be
	// decided.
	withdrawn string
}

// RootOrigin says which trusted root judged a keyless signature, for the
// decision log.
type RootOrigin struct {
	// Name is the trust root's name (trustRoots), or the file name of a
	// trustedRootFile.
	Name string
	// Version is the TUF targets metadata version that delivered it; 0
	// for a file.
	Version int64
	// Digest is "sha256:<hex>" of the trusted_root.json bytes.
	Digest string
}

// ParseTrustedRoot parses trusted_root.json. A root that trusts nothing
// (no certificate authority, transparency log or timestamp authority) is
// an error: it would verify nothing. Its origin names no root yet and
// carries the digest of data.
func ParseTrustedRoot(data []byte) (*TrustedRoot, error) {
	tr, err := root.NewTrustedRootFromJSON(data)
	if err != nil {
		return nil, fmt.Errorf("not a Sigstore trusted root (trusted_root.json): %w", err)
	}
	if len(tr.FulcioCertificateAuthorities()) == 0 && len(tr.RekorLogs()) == 0 && len(tr.TimestampingAuthorities()) == 0 {
		return nil, errors.New("the trusted root lists no certificate authority, transparency log or timestamp authority")
	}
	sum := sha256.Sum256(data)
	return &TrustedRoot{root: tr, origin: RootOrigin{Digest: "sha256:" + hex.EncodeToString(sum[:])}}, nil
}

// Origin is where r came from, as WithOrigin named it.
func (r *TrustedRoot) Origin() RootOrigin { return r.origin }

// WithOrigin is r named name, delivered as TUF targets version (0 for a
// file); the digest stays that of its bytes.
func (r *TrustedRoot) WithOrigin(name string, version int64) *TrustedRoot {
	c := *r
	c.origin.Name, c.origin.Version = name, version
	return &c
}

// Withdraw is r verifying nothing, for the reason why (its TUF metadata
// expired): a signature that only it could judge is undecided
// (ErrTrustRootUnavailable), never a verdict.
func (r *TrustedRoot) Withdraw(why string) *TrustedRoot {
	c := *r
	c.withdrawn = why
	return &c
}

// Withdrawal says why r verifies nothing; "" when it verifies.
func (r *TrustedRoot) Withdrawal() string { return r.withdrawn }

// UnavailableRoot is a root not loaded, for the reason why: it verifies
// nothing, as a withdrawn one.
func UnavailableRoot(why string) *TrustedRoot { return &TrustedRoot{withdrawn: why} }

// ErrTrustRootUnavailable: a keyless signature could only be judged by a
// trusted root that is withdrawn now (its TUF metadata expired). The
// verification could not be decided, which is not a denial.
var ErrTrustRootUnavailable = errors.New("trusted root unavailable")

// RootSummary is what a trusted root trusts, and until when.
type RootSummary struct {
	// CertificateAuthorities, TransparencyLogs, CTLogs and
	// TimestampAuthorities count what the root lists.
	CertificateAuthorities, TransparencyLogs, CTLogs, TimestampAuthorities int
	// SigningUntil is when the last of the signing material ends: for
	// each kind the root lists (certificate authorities, transparency
	// logs, timestamp authorities), the latest end of validity among
	// them (a certificate's expiry counting), and of those the earliest.
	// Past it, something signed then no longer verifies. Zero: no end.
	SigningUntil time.Time
	// SigningUntilWhat names the material that ends at SigningUntil.
	SigningUntilWhat string
}

// Summary is what r trusts; nothing for a root not loaded.
func (r *TrustedRoot) Summary() RootSummary {
	if r.root == nil {
		return RootSummary{}
	}
	s := RootSummary{
		CertificateAuthorities: len(r.root.FulcioCertificateAuthorities()), TransparencyLogs: len(r.root.RekorLogs()),
		CTLogs: len(r.root.CTLogs()), TimestampAuthorities: len(r.root.TimestampingAuthorities()),
	}
	// latest is the latest end among ends; zero when one has none.
	latest := func(ends []time.Time) (time.Time, bool) {
		if len(ends) == 0 {
			return time.Time{}, false
		}
		var last time.Time
		for _, e := range ends {
			if e.IsZero() {
				return time.Time{}, true
			}
			if e.After(last) {
				last = e
			}
		}
		return last, true
	}
	certEnd := func(end time.Time, certs ...*x509.Certificate) time.Time {
		for _, c := range certs {
			if c != nil && (end.IsZero() || c.NotAfter.Before(end)) {
				end = c.NotAfter
			}
		}
		return end
	}
	var cas, logs, tsas []time.Time
	for _, ca := range r.root.FulcioCertificateAuthorities() {
		if f, ok := ca.(*root.FulcioCertificateAuthority); ok {
			cas = append(cas, certEnd(f.ValidityPeriodEnd, append([]*x509.Certificate{f.Root}, f.Intermediates...)...))
		}
	}
	for _, l := range r.root.RekorLogs() {
		logs = append(logs, l.ValidityPeriodEnd)
	}
	for _, t := range r.root.TimestampingAuthorities() {
		if a, ok := t.(*root.SigstoreTimestampingAuthority); ok {
			tsas = append(tsas, certEnd(a.ValidityPeriodEnd, append([]*x509.Certificate{a.Root, a.Leaf}, a.Intermediates...)...))
		}
	}
	for _, kind := range []struct {
		what string
		ends []time.Time
	}{{"certificate authorities", cas}, {"transparency logs", logs}, {"timestamp authorities", tsas}} {
		end, ok := latest(kind.ends)
		if ok && !end.IsZero() && (s.SigningUntil.IsZero() || end.Before(s.SigningUntil)) {
			s.SigningUntil, s.SigningUntilWhat = end, kind.what
		}
	}
	return s
}

// Check names the step of a Sigstore verification that failed.
type Check string

// The checks a CheckError may name.
const (
	// CheckTlog: a transparency-log entry is there but does not verify
	// (signature, inclusion, or it is for another signature or key).
	CheckTlog Check = "transparency log"
	// CheckNoTlog: a transparency-log proof is required and there is none
	// from a log of the trusted root.
	CheckNoTlog Check = "no transparency-log proof"
	// CheckTimestamp: no verified time of signing (log entry or RFC 3161
	// timestamp) where one is needed, or a timestamp that does not verify.
	CheckTimestamp Check = "signing time"
	// CheckNoTimestamp: an RFC 3161 timestamp is required and there is
	// none.
	CheckNoTimestamp Check = "no RFC 3161 timestamp"
	// CheckExpired: the certificate was not valid at the signing time.
	CheckExpired Check = "certificate expired at signing time"
	// CheckChain: the certificate does not chain to a certificate
	// authority of the trusted root valid at the signing time.
	CheckChain Check = "certificate chain"
	// CheckSCT: the root lists CT logs, and the certificate carries no
	// valid signed certificate timestamp from one.
	CheckSCT Check = "certificate transparency"
	// CheckIdentity: the certificate names another issuer or subject.
	CheckIdentity Check = "identity"
	// CheckSignature: the signature does not verify, or the entity is
	// malformed.
	CheckSignature Check = "signature"
)

// CheckError is a Sigstore verification that failed at Check.
type CheckError struct {
	Check  Check
	Detail string
}

func (e *CheckError) Error() string { return string(e.Check) + ": " + e.Detail }

// Is makes errors.Is(err, ErrBadSignature) hold for a signature that does
// not verify, whichever path checked it.
func (e *CheckError) Is(target error) bool {
	return target == ErrBadSignature && e.Check == CheckSignature
}

func fail(c Check, format string, args ...any) error {
	return &CheckError{Check: c, Detail: fmt.Sprintf(format, args...)}
}

// Result is what a successful Sigstore verification established.
type Result struct {
	// Issuer and Subject are the certificate's OIDC issuer and subject
	// alternative name; empty for a key.
	Issuer, Subject string
	// LogIndex is the verified transparency-log entry's index, -1 without
	// one.
	LogIndex int64
	// SignedAt is the time the signature was checked at: its verified time
	// of signing, from the log entry or a timestamp authority, or the
	// current time where no proof was there or needed (TimeSource says
	// which: TimeTlog, TimeAuthority or TimeCurrent); zero for a key
	// without a log.
	SignedAt   time.Time
	TimeSource string
	// X509Subject is the subject distinguished name of the certificate
	// that made a Notary Project signature.
	X509Subject string
	// Logged are the checks that failed but that the verification level
	// only logs (notation's permissive level), each with why.
	Logged []string
	// Root is the trusted root that judged a keyless signature, or the
	// log of a key's; zero otherwise.
	Root RootOrigin
}

// Signed is one signed thing in Sigstore's terms, parsed but not
// verified: a Sigstore bundle, or a cosign signature or attestation of
// the tag scheme with its certificate and Rekor entry annotations.
type Signed struct {
	entity sgverify.SignedEntity
	// Envelope is the bundle's DSSE envelope, its statement parsed but
	// not verified; nil for a message signature.
	Envelope *Envelope
	// payload is the signed simple-signing payload of a cosign
	// signature in the tag scheme.
	payload []byte
	// messageDigest is the signed digest of a bundle's message
	// signature, "sha256:<hex>".
	messageDigest string
	cert          *x509.Certificate
	tlogEntries   int
	timestamps    int // RFC 3161 timestamps
	// message is the raw message signature with its digest algorithm, for
	// key checks without a log.
	message *bundle.MessageSignature
}

// HasCertificate reports whether s is signed with a certificate (keyless)
// rather than a key.
func (s *Signed) HasCertificate() bool { return s.cert != nil }

// CertificateKeyID names the key of s's signing certificate as PublicKey.ID
// names a key ("sha256:" and the hex SHA-256 of its DER encoding); "" when
// s has no certificate. One key signs, however many identities match it.
func (s *Signed) CertificateKeyID() string {
	if s.cert == nil {
		return ""
	}
	sum := sha256.Sum256(s.cert.RawSubjectPublicKeyInfo)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// IsImageSignature reports whether s signs an image as such: a cosign
// simple-signing payload, a message signature over a digest, or a DSSE
// statement of oci.CosignSignPredicateType. Other DSSE statements are
// attestations.
func (s *Signed) IsImageSignature() bool {
	return s.Envelope == nil || s.Envelope.Statement.PredicateType == oci.CosignSignPredicateType
}

// ParseBundle parses a Sigstore bundle, v0.1 to v0.3, holding a message
// signature or a DSSE envelope of an in-toto statement. Errors wrap
// ErrMalformedAttestation. The caller bounds its size (the upstream
// limit maxEnvelopeSize).
func ParseBundle(raw []byte) (*Signed, error) {
	pb := new(protobundle.Bundle)
	if err := (protojson.UnmarshalOptions{DiscardUnknown: true}).Unmarshal(raw, pb); err != nil {
		return nil, fmt.Errorf("%w: not a Sigstore bundle: %v", ErrMalformedAttestation, err)
	}
	opts := []bundle.Option{}
	if strings.HasSuffix(pb.MediaType, ".v0.3+json") {
		// cosign v2 wrote v0.3 bundles with the whole chain; the
		// intermediates must still lead to a root of the trusted root.
		opts = append(opts, bundle.AllowCertificateChain())
	}
	b, err := bundle.NewBundle(pb, opts...)
	if err != nil {
		return nil, fmt.Errorf("%w: Sigstore bundle: %v", ErrMalformedAttestation, err)
	}
	s := &Signed{entity: b}
	vc, err := b.VerificationContent()
	if err != nil {
		return nil, fmt.Errorf("%w: Sigstore bundle: %v", ErrMalformedAttestation, err)
	}
	s.cert = vc.Certificate()
	entries, err := b.TlogEntries()
	if err != nil {
		return nil, fmt.Errorf("%w: Sigstore bundle: %v", ErrMalformedAttestation, err)
	}
	s.tlogEntries = len(entries)
	ts, err := b.Timestamps()
	if err != nil {
		return nil, fmt.Errorf("%w: Sigstore bundle: %v", ErrMalformedAttestation, err)
	}
	s.timestamps = len(ts)
	switch c := pb.Content.(type) {
	case *protobundle.Bundle_DsseEnvelope:
		// protojson writes the envelope in DSSE's own JSON form.
		env, err := protojson.Marshal(c.DsseEnvelope)
		if err != nil {
			return nil, fmt.Errorf("%w: Sigstore bundle: %v", ErrMalformedAttestation, err)
		}
		if s.Envelope, err = ParseEnvelope(oci.DSSE, env); err != nil {
			return nil, err
		}
	case *protobundle.Bundle_MessageSignature:
		md := c.MessageSignature.GetMessageDigest()
		if md.GetAlgorithm() != protocommon.HashAlgorithm_SHA2_256 || len(md.GetDigest()) != sha256.Size {
			return nil, fmt.Errorf("%w: Sigstore bundle: message digest is not SHA-256", ErrMalformedAttestation)
		}
		s.messageDigest = "sha256:" + hex.EncodeToString(md.Digest)
		s.message = bundle.NewMessageSignature(md.Digest, "SHA2_256", c.MessageSignature.Signature)
	}
	return s, nil
}

// ParseCosignSignature parses a cosign signature of the tag scheme: the
// simple-signing payload, its signature, and the layer's annotations
// dev.sigstore.cosign/certificate (PEM), dev.sigstore.cosign/bundle (the
// Rekor entry with its signed entry timestamp) and
// dev.sigstore.cosign/rfc3161timestamp, each possibly empty. The chain
// annotation is not needed: certificates are verified against the
// trusted root's certificate authorities, intermediates included.
func ParseCosignSignature(payload, sig []byte, certPEM, rekorBundle, rfc3161 []byte) (*Signed, error) {
	sum := sha256.Sum256(payload)
	e := &tagEntity{version: "v0.1", content: bundle.NewMessageSignature(sum[:], "SHA2_256", sig)}
	s := &Signed{payload: payload, message: e.content.(*bundle.MessageSignature)}
	if err := e.annotations(s, certPEM, rekorBundle, rfc3161); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformedPayload, err)
	}
	s.entity = e
	return s, nil
}

// ParseCosignAttestation parses a DSSE envelope of the cosign `.att` tag
// with its layer's certificate, Rekor bundle and timestamp annotations, as
// ParseCosignSignature does for signatures.
func ParseCosignAttestation(envelope, certPEM, rekorBundle, rfc3161 []byte) (*Signed, error) {
	env, err := ParseEnvelope(oci.DSSE, envelope)
	if err != nil {
		return nil, err
	}
	var raw bundle.Envelope
	if err := json.Unmarshal(envelope, &raw.Envelope); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformedAttestation, err)
	}
	e := &tagEntity{version: "v0.1", content: &raw}
	s := &Signed{Envelope: env}
	if err := e.annotations(s, certPEM, rekorBundle, rfc3161); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformedAttestation, err)
	}
	s.entity = e
	return s, nil
}

// tagEntity is a cosign signature or attestation of the tag scheme in the
// shape sigstore-go verifies.
type tagEntity struct {
	version    string
	content    sgverify.SignatureContent
	cert       *x509.Certificate
	entries    []*tlog.Entry
	timestamps [][]byte
}

// rekorBundle is the dev.sigstore.cosign/bundle annotation: a Rekor v1
// entry and the log's signed entry timestamp over it.
type rekorBundle struct {
	SignedEntryTimestamp []byte `json:"SignedEntryTimestamp"`
	Payload              struct {
		Body           []byte `json:"body"`
		IntegratedTime int64  `json:"integratedTime"`
		LogIndex       int64  `json:"logIndex"`
		LogID          string `json:"logID"`
	} `json:"Payload"`
}

func (e *tagEntity) annotations(s *Signed, certPEM, rekor, rfc3161 []byte) error {
	if len(certPEM) > 0 {
		certs, err := cryptoutils.UnmarshalCertificatesFromPEM(certPEM)
		if err != nil || len(certs) == 0 {
			return fmt.Errorf("certificate annotation is not a PEM certificate")
		}
		e.cert, s.cert = certs[0], certs[0]
	}
	if len(rekor) > 0 {
		var rb rekorBundle
		if err := json.Unmarshal(rekor, &rb); err != nil {
			return fmt.Errorf("the Rekor bundle annotation: %v", err)
		}
		logID, err := hex.DecodeString(rb.Payload.LogID)
		if err != nil {
			return fmt.Errorf("the Rekor bundle annotation: log ID: %v", err)
		}
		var body struct {
			Kind       string `json:"kind"`
			APIVersion string `json:"apiVersion"`
		}
		if err := json.Unmarshal(rb.Payload.Body, &body); err != nil {
			return fmt.Errorf("the Rekor bundle annotation: entry body: %v", err)
		}
		entry, err := tlog.ParseTransparencyLogEntry(&protorekor.TransparencyLogEntry{
			LogIndex:          rb.Payload.LogIndex,
			LogId:             &protocommon.LogId{KeyId: logID},
			KindVersion:       &protorekor.KindVersion{Kind: body.Kind, Version: body.APIVersion},
			IntegratedTime:    rb.Payload.IntegratedTime,
			InclusionPromise:  &protorekor.InclusionPromise{SignedEntryTimestamp: rb.SignedEntryTimestamp},
			CanonicalizedBody: rb.Payload.Body,
		})
		if err != nil {
			return fmt.Errorf("the Rekor bundle annotation: %v", err)
		}
		e.entries = []*tlog.Entry{entry}
		s.tlogEntries = 1
	}
	if len(rfc3161) > 0 {
		var ts struct {
			SignedRFC3161Timestamp []byte `json:"SignedRFC3161Timestamp"`
		}
		if err := json.Unmarshal(rfc3161, &ts); err != nil || len(ts.SignedRFC3161Timestamp) == 0 {
			return fmt.Errorf("RFC 3161 timestamp annotation is not cosign's JSON")
		}
		e.timestamps = [][]byte{ts.SignedRFC3161Timestamp}
		s.timestamps = 1
	}
	return nil
}

func (e *tagEntity) HasInclusionPromise() bool { return len(e.entries) > 0 }
func (e *tagEntity) HasInclusionProof() bool   { return false }
func (e *tagEntity) SignatureContent() (sgverify.SignatureContent, error) {
	return e.content, nil
}
func (e *tagEntity) Timestamps() ([][]byte, error)       { return e.timestamps, nil }
func (e *tagEntity) TlogEntries() ([]*tlog.Entry, error) { return e.entries, nil }
func (e *tagEntity) Version() (string, error)            { return e.version, nil }
func (e *tagEntity) VerificationContent() (sgverify.VerificationContent, error) {
	if e.cert != nil {
		return bundle.NewCertificate(e.cert), nil
	}
	return anyKey{}, nil
}

var _ sgverify.SignedEntity = (*tagEntity)(nil)

// anyKey is the verification content of a signature made with a key that
// the entity does not name: the trusted material holds the one key it is
// checked against.
type anyKey struct{}

func (anyKey) CompareKey(key any, tm root.TrustedMaterial) bool {
	v, err := tm.PublicKeyVerifier("")
	if err != nil {
		return false
	}
	pub, err := v.PublicKey()
	if err != nil {
		return false
	}
	eq, ok := key.(interface{ Equal(crypto.PublicKey) bool })
	return ok && eq.Equal(pub)
}
func (anyKey) ValidAtTime(t time.Time, tm root.TrustedMaterial) bool {
	v, err := tm.PublicKeyVerifier("")
	return err == nil && v.ValidAtTime(t)
}
func (anyKey) Certificate() *x509.Certificate        { return nil }
func (anyKey) Intermediates() []*x509.Certificate    { return nil }
func (anyKey) PublicKey() sgverify.PublicKeyProvider { return anyKey{} }
func (anyKey) Hint() string                          { return "" }

// Identity is the signer a keyless attestor accepts.
type Identity struct {
	// Issuer is the OIDC issuer, exactly.
	Issuer string
	// Subject is the subject alternative name, exactly; or SubjectRegexp
	// a regular expression it must match. Without either, a FieldMatch of
	// the subject made by Matching is required.
	Subject, SubjectRegexp string
	// Fields are further conditions on the certificate (its Fulcio
	// extensions, or the subject again), all of which must hold.
	Fields []FieldMatch
}

func (id Identity) String() string {
	var parts []string
	for _, m := range id.matches() {
		parts = append(parts, m.Field+" "+m.Want)
	}
	return strings.Join(parts, ", ")
}

// matches are all the conditions of id, the issuer and subject first.
func (id Identity) matches() []FieldMatch {
	ms := []FieldMatch{Exact(FieldIssuer, "", id.Issuer)}
	if id.Subject != "" {
		ms = append(ms, Exact(FieldSubject, "", id.Subject))
	}
	if id.SubjectRegexp != "" {
		ms = append(ms, Matching(FieldSubject, "", regexp.MustCompile(id.SubjectRegexp), ""))
	}
	return append(ms, id.Fields...)
}

// SigningTime says what proves when a keyless signature was made, which is
// when its certificate must have been valid.
type SigningTime struct {
	// RequireTlog: a transparency-log entry verified against a log of the
	// trusted root; its signed entry timestamp (Rekor v1) or an RFC 3161
	// timestamp (needed with a Rekor v2 entry, which carries no time)
	// dates the signature.
	RequireTlog bool
	// RequireTimestamp: an RFC 3161 timestamp from a timestamp authority
	// of the trusted root, which dates the signature.
	RequireTimestamp bool
}

// Keyless verifies signatures made with Fulcio certificates: trusted
// material (the roots), verifier strictness (the proofs of signing time
// required) and per-call policy (identity and artifact digest), as
// sigstore-go separates them.
type Keyless struct {
	identity sgverify.CertificateIdentity
	want     Identity
	matches  []FieldMatch
	roots    []*TrustedRoot
	time     SigningTime
}

// NewKeyless makes the verifier of one keyless identity under roots: a
// signature counts when it verifies under one of them, the one whose
// certificate authority issued its certificate. Signed certificate
// timestamps are required when that root lists CT logs.
//
// Without RequireTlog or RequireTimestamp, the proofs a signature carries
// from the root's logs and timestamp authorities must still verify, and
// date it; a signature without any is checked at the current time, as
// `cosign verify --insecure-ignore-tlog` does for the long-lived
// certificates of a private CA (a Fulcio certificate, valid ten minutes,
// will have expired).
func NewKeyless(roots []*TrustedRoot, id Identity, t SigningTime) (*Keyless, error) {
	if len(roots) == 0 {
		return nil, errors.New("no trusted root")
	}
	// sigstore-go checks the issuer and one condition on the subject;
	// Verify then checks them all.
	san := id.SubjectRegexp
	if id.Subject == "" && san == "" {
		for _, f := range id.Fields {
			if f.Field == FieldSubject && f.re != nil {
				san = f.re.String()
				break
			}
		}
		if san == "" {
			return nil, errors.New("a subject or subject regexp is required")
		}
	}
	ci, err := sgverify.NewShortCertificateIdentity(id.Issuer, "", id.Subject, san)
	if err != nil {
		return nil, err
	}
	for _, f := range id.Fields {
		if !IsCertificateField(f.Field) {
			return nil, fmt.Errorf("%q is not a certificate field", f.Field)
		}
	}
	return &Keyless{identity: ci, want: id, matches: id.matches(), roots: roots, time: t}, nil
}

// Verify checks that s was signed by k's identity for digest
// ("sha256:<hex>"). A *CheckError says which check failed; a
// *DigestMismatchError means a genuine signature of k's identity that
// was made for another artifact.
func (k *Keyless) Verify(s *Signed, digest string) (*Result, error) {
	if s.cert == nil {
		return nil, fail(CheckSignature, "signed with a key, not a Fulcio certificate")
	}
	var first error
	var withdrawn []string
	for _, r := range k.roots {
		if r.withdrawn != "" {
			withdrawn = append(withdrawn, r.withdrawn)
			continue
		}
		// The root whose certificate authority issued the certificate
		// judges it; another root's opinion says nothing.
		if _, err := sgverify.VerifyLeafCertificate(s.cert.NotBefore, s.cert, r.root); err != nil {
			continue
		}
		v, err := k.verifier(r, s)
		if err != nil {
			return nil, err
		}
		res, err := verifyEntity(v, r.root, s, digest, sgverify.WithCertificateIdentity(k.identity), k)
		if err == nil {
			res.Root = r.origin
			return res, nil
		}
		if first == nil {
			first = err
		}
	}
	if first != nil {
		return nil, first
	}
	if len(withdrawn) > 0 {
		// A withdrawn root might have issued it: undecided.
		return nil, fmt.Errorf("%w: the certificate (issued by %q) chains to no usable trusted root, and %s", ErrTrustRootUnavailable, s.cert.Issuer.String(), strings.Join(withdrawn, "; "))
	}
	roots := "the trusted root"
	if len(k.roots) > 1 {
		roots = fmt.Sprintf("any of the %d trusted roots", len(k.roots))
	}
	return nil, fail(CheckChain, "the certificate (issued by %q) does not chain to a certificate authority of %s", s.cert.Issuer.String(), roots)
}

// verifier is the sigstore-go verifier for s under r: it demands what k
// requires and, beyond that, checks the proofs s carries that r can check.
func (k *Keyless) verifier(r *TrustedRoot, s *Signed) (*sgverify.Verifier, error) {
	var opts []sgverify.VerifierOption
	if len(r.root.CTLogs()) > 0 {
		opts = append(opts, sgverify.WithSignedCertificateTimestamps(1))
	}
	entries, dated := s.knownEntries(r.root)
	if k.time.RequireTlog || entries > 0 {
		opts = append(opts, sgverify.WithTransparencyLog(1))
	}
	hasTSA := s.timestamps > 0 && len(r.root.TimestampingAuthorities()) > 0
	switch {
	case k.time.RequireTimestamp:
		opts = append(opts, sgverify.WithSignedTimestamps(1))
	case k.time.RequireTlog || hasTSA || dated > 0:
		opts = append(opts, sgverify.WithObserverTimestamps(1))
	default:
		opts = append(opts, sgverify.WithCurrentTime())
	}
	return sgverify.NewVerifier(r.root, opts...)
}

// knownEntries counts the log entries of s from logs of tm, and among them
// those that carry a signed entry timestamp (Rekor v1), which dates them.
func (s *Signed) knownEntries(tm root.TrustedMaterial) (entries, dated int) {
	all, _ := s.entity.TlogEntries()
	for _, e := range all {
		if _, ok := tm.RekorLogs()[hex.EncodeToString([]byte(e.LogKeyID()))]; !ok {
			continue
		}
		entries++
		if e.HasInclusionPromise() {
			dated++
		}
	}
	return entries, dated
}

// CertificateFields are the fields of the certificate s was signed with
// (see the package function), nil for a signature made with a key. Only
// a verified signature's fields mean anything.
func (s *Signed) CertificateFields() (map[string]string, error) {
	if s.cert == nil {
		return nil, nil
	}
	return CertificateFields(s.cert)
}

// LogVerifier verifies signatures of a key together with their
// transparency-log proof, for attestors that require one.
type LogVerifier struct {
	under []logUnder // one per trusted root
}

// logUnder checks a key's logged signatures against the logs of one root
// (a withdrawn one has no verifier).
type logUnder struct {
	root     *TrustedRoot
	material root.TrustedMaterial
	v        *sgverify.Verifier
}

// NewLogVerifier checks key's signatures and their transparency-log
// proof against the Rekor logs of roots: a proof counts when one of them
// verifies it.
func NewLogVerifier(key *PublicKey, roots ...*TrustedRoot) (*LogVerifier, error) {
	if len(roots) == 0 {
		return nil, errors.New("no trusted root")
	}
	l := &LogVerifier{}
	for _, r := range roots {
		if r.withdrawn != "" {
			l.under = append(l.under, logUnder{root: r})
			continue
		}
		material := root.TrustedMaterialCollection{r.root, root.NewTrustedPublicKeyMaterial(func(string) (root.TimeConstrainedVerifier, error) {
			return root.NewExpiringKey(keyVerifier{key}, time.Time{}, time.Time{}), nil
		})}
		v, err := sgverify.NewVerifier(material, sgverify.WithTransparencyLog(1), sgverify.WithObserverTimestamps(1))
		if err != nil {
			return nil, err
		}
		l.under = append(l.under, logUnder{root: r, material: material, v: v})
	}
	return l, nil
}

// Verify checks that s was signed by the key, for digest, and logged in a
// log of one of the roots. When no usable root verifies the proof and one
// is withdrawn, that one might have: the error is ErrTrustRootUnavailable.
func (l *LogVerifier) Verify(s *Signed, digest string) (*Result, error) {
	if s.cert != nil {
		return nil, fail(CheckSignature, "signed with a certificate, not a key")
	}
	var first error
	var withdrawn []string
	for _, u := range l.under {
		if u.root.withdrawn != "" {
			withdrawn = append(withdrawn, u.root.withdrawn)
			continue
		}
		res, err := verifyEntity(u.v, u.material, s, digest, sgverify.WithKey(), nil)
		if err == nil {
			res.Root = u.root.origin
			return res, nil
		}
		// A signature for another digest is that under every root.
		if first == nil || errors.As(err, new(*DigestMismatchError)) {
			first = err
		}
	}
	if len(withdrawn) > 0 && !errors.As(first, new(*DigestMismatchError)) {
		why := "the key's signature has no log proof that a usable trusted root verifies"
		if first != nil {
			why += " (" + first.Error() + ")"
		}
		return nil, fmt.Errorf("%w: %s, and %s", ErrTrustRootUnavailable, why, strings.Join(withdrawn, "; "))
	}
	return nil, first
}

// verifyEntity runs sigstore-go's verification of s for digest and, when
// it fails, finds the check that failed.
func verifyEntity(v *sgverify.Verifier, tm root.TrustedMaterial, s *Signed, digest string, who sgverify.PolicyOption, k *Keyless) (*Result, error) {
	alg, hexDigest, _ := strings.Cut(digest, ":")
	d, err := hex.DecodeString(hexDigest)
	if err != nil || alg != "sha256" {
		return nil, fmt.Errorf("digest %q is not sha256:<hex>", digest)
	}
	artifact := s.artifactPolicy(d)
	res, err := v.Verify(s.entity, sgverify.NewPolicy(artifact, who))
	if err != nil {
		return nil, diagnose(v, tm, s, digest, who, k, err)
	}
	if s.payload != nil {
		if err := payloadDigest(s.payload, digest); err != nil {
			return nil, err
		}
	}
	if k != nil {
		// sigstore-go checked the issuer and subject; the extensions are
		// checked here, on the certificate it verified.
		if err := k.checkFields(s); err != nil {
			return nil, err
		}
	}
	out := &Result{LogIndex: -1}
	if c := res.Signature.Certificate; c != nil {
		out.Issuer, out.Subject = c.Issuer, c.SubjectAlternativeName
	}
	if entries, _ := s.entity.TlogEntries(); len(entries) > 0 {
		out.LogIndex = entries[0].LogIndex()
	}
	// The time the certificate was checked at: a timestamp authority's
	// or the log's when there is one, else the current time.
	for _, ts := range res.VerifiedTimestamps {
		src := timeSource(ts)
		if out.TimeSource == "" || out.TimeSource == TimeCurrent {
			out.SignedAt, out.TimeSource = ts.Timestamp, src
		}
	}
	return out, nil
}

// Where the time a certificate was checked at came from (Result.TimeSource).
const (
	TimeTlog      = "tlog"
	TimeAuthority = "timestamp authority"
	// TimeCurrent: no proof of the signing time was there, or needed; the
	// certificate was valid when the signature was verified.
	TimeCurrent = "current time"
)

func timeSource(ts sgverify.TimestampVerificationResult) string {
	switch ts.Type {
	case "TimestampAuthority":
		return TimeAuthority
	case "CurrentTime":
		return TimeCurrent
	}
	return TimeTlog
}

// checkFields checks the certificate of s against every condition of k.
func (k *Keyless) checkFields(s *Signed) error {
	fields, err := CertificateFields(s.cert)
	if err != nil {
		return fail(CheckIdentity, "%v", err)
	}
	if diff := mismatches(k.matches, fields); len(diff) > 0 {
		return fail(CheckIdentity, "%s", strings.Join(diff, "; "))
	}
	return nil
}

// artifactPolicy binds the verification to the image digest d: a DSSE
// statement must have it as a subject, a message signature must sign it,
// and a simple-signing payload is the artifact itself (its digest field is
// compared after the signature verified).
func (s *Signed) artifactPolicy(d []byte) sgverify.ArtifactPolicyOption {
	if s.payload != nil {
		return sgverify.WithArtifact(bytes.NewReader(s.payload))
	}
	return sgverify.WithArtifactDigest("sha256", d)
}

func payloadDigest(payload []byte, digest string) error {
	ss, err := ParseSimpleSigning(payload)
	if err != nil {
		return err
	}
	if got := ss.Critical.Image.DockerManifestDigest; got != digest {
		return &DigestMismatchError{Signed: got}
	}
	return nil
}

// signedFor is the digest s claims to be for: the statement's subjects or
// the message digest.
func (s *Signed) signedFor() string {
	if s.Envelope != nil {
		return strings.Join(s.Envelope.Statement.Digests(), ", ")
	}
	return s.messageDigest
}

// diagnose replays the steps of a failed verification one at a time to
// say which failed, in sigstore-go's order: the log, the signing time, the
// certificate at that time, its SCT, the signature, then the identity.
func diagnose(v *sgverify.Verifier, tm root.TrustedMaterial, s *Signed, digest string, who sgverify.PolicyOption, k *Keyless, verr error) error {
	logTimes, err := v.VerifyTransparencyLogInclusion(s.entity)
	if err != nil {
		if s.tlogEntries == 0 {
			return fail(CheckNoTlog, "the signature carries no transparency-log entry, and one is required (requireTlog)")
		}
		// Entries of the root's logs: an entry of a log the root does
		// not list proves nothing, not even its time.
		entries, _ := s.entity.TlogEntries()
		known := 0
		for _, e := range entries {
			if _, ok := tm.RekorLogs()[hex.EncodeToString([]byte(e.LogKeyID()))]; !ok {
				continue
			}
			known++
			if t := e.IntegratedTime(); s.cert != nil && !t.IsZero() && (t.Before(s.cert.NotBefore) || t.After(s.cert.NotAfter)) {
				return expired(s.cert, t, "transparency log")
			}
		}
		if known == 0 {
			return fail(CheckNoTlog, "its transparency-log entries are from no log of the trusted root")
		}
		return fail(CheckTlog, "%s", libraryError(err))
	}
	times, err := v.VerifyObserverTimestamps(s.entity, logTimes)
	if err != nil {
		return signingTimeError(s, tm, k, logTimes)
	}
	if c := s.cert; c != nil {
		var chains [][]*x509.Certificate
		for _, ts := range times {
			if ts.Timestamp.Before(c.NotBefore) || ts.Timestamp.After(c.NotAfter) {
				return expired(c, ts.Timestamp, timeSource(ts))
			}
			if chains, err = sgverify.VerifyLeafCertificate(ts.Timestamp, c, tm); err != nil {
				return fail(CheckChain, "the certificate (issued by %q) does not chain to a certificate authority of the trusted root valid at %s", c.Issuer.String(), ts.Timestamp.UTC().Format(time.RFC3339))
			}
		}
		if len(tm.CTLogs()) > 0 && len(chains) > 0 {
			if err := sgverify.VerifySignedCertificateTimestamp(chains, 1, tm); err != nil {
				return fail(CheckSCT, "the trusted root lists CT logs, and the certificate carries no valid signed certificate timestamp from one: %s", libraryError(err))
			}
		}
	}
	// Genuine, but for another artifact? Verify again for what it claims.
	if claimed := s.signedFor(); claimed != "" && !strings.Contains(claimed, digest) && s.payload == nil {
		if other, err := claimedDigest(s); err == nil {
			if _, err := v.Verify(s.entity, sgverify.NewPolicy(sgverify.WithArtifactDigest("sha256", other), who)); err == nil {
				return &DigestMismatchError{Signed: claimed}
			} else if id := identityError(err, s, k); id != nil {
				return id
			}
		}
	}
	if id := identityError(verr, s, k); id != nil {
		return id
	}
	return fail(CheckSignature, "%s", libraryError(verr))
}

// signingTimeError says why s has no verified time of signing: the proof
// the attestor requires is missing, or a proof that is there does not
// verify.
func signingTimeError(s *Signed, tm root.TrustedMaterial, k *Keyless, logTimes []sgverify.TimestampVerificationResult) error {
	var verified int
	var errs []string
	if s.timestamps > 0 {
		ok, verrs, err := sgverify.VerifySignedTimestamp(s.entity, tm)
		if err != nil {
			verrs = append(verrs, err)
		}
		verified = len(ok)
		for _, e := range verrs {
			errs = append(errs, libraryError(e))
		}
	}
	requireTimestamp := k != nil && k.time.RequireTimestamp
	switch {
	case s.timestamps == 0 && requireTimestamp:
		return fail(CheckNoTimestamp, "the signature carries no RFC 3161 timestamp, and one is required (requireTimestamp)")
	case s.timestamps > 0 && verified == 0 && len(tm.TimestampingAuthorities()) == 0:
		return fail(CheckTimestamp, "its RFC 3161 timestamp cannot be verified: the trusted root lists no timestamp authority")
	case s.timestamps > 0 && verified == 0:
		return fail(CheckTimestamp, "its RFC 3161 timestamp does not verify against a timestamp authority of the trusted root: %s", strings.Join(errs, "; "))
	case len(logTimes) == 0 && s.tlogEntries > 0 && s.timestamps == 0:
		return fail(CheckTimestamp, "its transparency-log entry carries no signed time (a Rekor v2 entry has only an inclusion proof), and it has no RFC 3161 timestamp to date it")
	}
	return fail(CheckTimestamp, "no verified time of signing: neither a transparency-log entry with a signed timestamp nor an RFC 3161 timestamp from the trusted root")
}

// artefacts are the marks fmt leaves where a library formatted a nil or
// mismatched argument, such as "%!w(<nil>)".
var artefacts = regexp.MustCompile(`(;\s*)?(error:\s*)?%!\w\((<nil>|[^)]*)\)`)

// libraryError is err's text for a reason: a library's wrapping without
// formatting artefacts.
func libraryError(err error) string {
	s := artefacts.ReplaceAllString(err.Error(), "")
	return strings.TrimRight(strings.TrimSpace(s), ":;")
}

func expired(c *x509.Certificate, at time.Time, source string) error {
	if source == TimeCurrent {
		return fail(CheckExpired, "the certificate is valid from %s to %s, and it is now %s: no transparency-log entry or RFC 3161 timestamp shows that it was valid when it signed",
			c.NotBefore.UTC().Format(time.RFC3339), c.NotAfter.UTC().Format(time.RFC3339), at.UTC().Format(time.RFC3339))
	}
	return fail(CheckExpired, "signed at %s (time from the %s), the certificate is valid from %s to %s",
		at.UTC().Format(time.RFC3339), source, c.NotBefore.UTC().Format(time.RFC3339), c.NotAfter.UTC().Format(time.RFC3339))
}

// claimedDigest is the first SHA-256 digest s claims to be for.
func claimedDigest(s *Signed) ([]byte, error) {
	claimed := s.messageDigest
	if s.Envelope != nil {
		claimed = ""
		for _, d := range s.Envelope.Statement.Digests() {
			if strings.HasPrefix(d, "sha256:") {
				claimed = d
				break
			}
		}
	}
	return hex.DecodeString(strings.TrimPrefix(claimed, "sha256:"))
}

// identityError turns sigstore-go's identity mismatch into a CheckError
// naming each certificate field that differs, with what it is and what
// was wanted.
func identityError(err error, s *Signed, k *Keyless) error {
	var vm *sgverify.ErrValueMismatch
	var rm *sgverify.ErrValueRegexMismatch
	if !errors.As(err, &vm) && !errors.As(err, &rm) {
		return nil
	}
	if k == nil {
		return fail(CheckIdentity, "%s", libraryError(err))
	}
	if err := k.checkFields(s); err != nil {
		return err
	}
	return fail(CheckIdentity, "want %s; %s", k.want, libraryError(err))
}

// VerifySigned checks, without any log, that s is k's signature for
// digest: the DSSE envelope over its statement, or the message signature
// over the digest it names, or the simple-signing payload. As in Check, a
// *DigestMismatchError means a genuine signature for another artifact.
func (k *PublicKey) VerifySigned(s *Signed, digest string) error {
	if s.cert != nil {
		return fail(CheckSignature, "signed with a certificate, not a key")
	}
	switch {
	case s.Envelope != nil:
		return s.Envelope.Check(k, digest)
	case s.payload != nil:
		return SimpleSigningSignature(k, s.payload, s.message.Signature(), digest)
	}
	d := s.message.Digest()
	if err := k.VerifyDigest(s.message.Signature(), d); err != nil {
		return err
	}
	if s.messageDigest != digest {
		return &DigestMismatchError{Signed: s.messageDigest}
	}
	return nil
}

// VerifyDigest checks sig over a SHA-256 digest already computed (a
// message signature of a Sigstore bundle). Ed25519 keys sign messages,
// not digests, and never verify here.
func (k *PublicKey) VerifyDigest(sig, digest []byte) error {
	for _, v := range k.verifiers {
		if _, ok := v.(*signature.ED25519Verifier); ok {
			continue
		}
		if v.VerifySignature(bytes.NewReader(sig), bytes.NewReader(nil), options.WithDigest(digest)) == nil {
			return nil
		}
	}
	return ErrBadSignature
}

// keyVerifier is a PublicKey as the signature.Verifier that sigstore-go
// asks of trusted key material.
type keyVerifier struct{ k *PublicKey }

func (v keyVerifier) PublicKey(...signature.PublicKeyOption) (crypto.PublicKey, error) {
	return v.k.pub, nil
}

func (v keyVerifier) VerifySignature(sig, message io.Reader, opts ...signature.VerifyOption) error {
	s, err := io.ReadAll(sig)
	if err != nil {
		return err
	}
	m, err := io.ReadAll(message)
	if err != nil {
		return err
	}
	for _, cand := range v.k.verifiers {
		if cand.VerifySignature(bytes.NewReader(s), bytes.NewReader(m), opts...) == nil {
			return nil
		}
	}
	return ErrBadSignature
}
