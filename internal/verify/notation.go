package verify

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/go-ldap/ldap/v3"
	"github.com/notaryproject/notation-core-go/revocation"
	"github.com/notaryproject/notation-core-go/revocation/purpose"
	revocationresult "github.com/notaryproject/notation-core-go/revocation/result"
	"github.com/notaryproject/notation-core-go/signature"
	_ "github.com/notaryproject/notation-core-go/signature/cose" // registers the COSE envelope
	_ "github.com/notaryproject/notation-core-go/signature/jws"  // registers the JWS envelope
	"github.com/notaryproject/notation-go"
	"github.com/notaryproject/notation-go/verifier"
	"github.com/notaryproject/notation-go/verifier/trustpolicy"
	"github.com/notaryproject/notation-go/verifier/truststore"
	"github.com/notaryproject/tspclient-go"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// Notary Project (notation) signatures are verified by notation-go's own
// verifier, under a trust policy of one statement per attestor and an
// in-memory trust store; this file only builds those, reads the outcome,
// and checks the trusted identities so that a mismatch names both
// subjects.

// Notation verification levels, with notation's meanings (see NewNotation).
const (
	NotationStrict     = "strict"
	NotationPermissive = "permissive"
	NotationAudit      = "audit"
)

// Notation verifyTimestamp options.
const (
	TimestampAlways          = string(trustpolicy.OptionAlways)
	TimestampAfterCertExpiry = string(trustpolicy.OptionAfterCertExpiry)
)

// The Check of a Notary Project signature that failed, beyond those that
// Sigstore verification shares (CheckSignature, CheckChain, CheckIdentity,
// CheckTimestamp, CheckNoTimestamp, CheckExpired).
const (
	// CheckSignatureExpiry: the signature's own expiry (notation sign
	// --expiry) has passed.
	CheckSignatureExpiry Check = "signature expiry"
	// CheckRevocation: a certificate of the chain is revoked, or its
	// status unknown (OCSP/CRL, when revocation is checked).
	CheckRevocation Check = "revocation"
	// CheckTarget: the signature names this digest with another media
	// type or size.
	CheckTarget Check = "signed descriptor"
	// CheckPlugin: the signature requires a notation verification
	// plug-in, which authz-proxy does not run.
	CheckPlugin Check = "verification plug-in"
)

// ErrRevocationUnavailable: the revocation status of a certificate could
// not be learnt (OCSP responders and CRL distribution points unreachable
// or unhelpful) under a level that enforces it. It means "could not
// verify", not "denied".
var ErrRevocationUnavailable = errors.New("revocation status could not be checked")

// NotationIdentity is one trusted identity of notation's trust policy:
// "x509.subject: <distinguished name>" (the signing certificate's subject
// must carry every attribute named, RFC 4514), or "*" for any.
type NotationIdentity struct {
	raw   string
	attrs []dnAttribute // nil for "*"
}

type dnAttribute struct{ typ, value string }

// ParseNotationIdentity parses a trusted identity as notation's trust
// policy writes it: "*", or "x509.subject:" and an RFC 4514 distinguished
// name such as "C=US, ST=WA, O=Acme, CN=release" (notation itself demands
// C, ST and O; MissingNotationAttributes says which of those it lacks).
func ParseNotationIdentity(s string) (NotationIdentity, error) {
	if s == "*" {
		return NotationIdentity{raw: s}, nil
	}
	prefix, value, ok := strings.Cut(s, ":")
	if !ok || strings.TrimSpace(prefix) != "x509.subject" {
		return NotationIdentity{}, fmt.Errorf("%q: want \"x509.subject: <distinguished name>\", e.g. \"x509.subject: C=US, ST=WA, O=Acme, CN=release\", or \"*\"", s)
	}
	value = strings.TrimSpace(value)
	if value == "" {
		return NotationIdentity{}, fmt.Errorf("%q names no distinguished name", s)
	}
	if strings.Contains(value, "=#") {
		return NotationIdentity{}, fmt.Errorf("%q: attribute values in #hex form are not supported (notation's rule)", s)
	}
	attrs, err := parseDN(value)
	if err != nil {
		return NotationIdentity{}, fmt.Errorf("%q is not a distinguished name (RFC 4514): %v", s, err)
	}
	seen := map[string]bool{}
	for _, a := range attrs {
		if seen[a.typ] {
			return NotationIdentity{}, fmt.Errorf("%q names %s twice", s, a.typ)
		}
		seen[a.typ] = true
	}
	return NotationIdentity{raw: s, attrs: attrs}, nil
}

func (id NotationIdentity) String() string { return id.raw }

// MissingNotationAttributes lists which of C, ST and O, the attributes
// notation itself requires of a trusted identity, id does not name.
func (id NotationIdentity) MissingNotationAttributes() []string {
	if id.attrs == nil {
		return nil
	}
	var missing []string
	for _, want := range []string{"C", "ST", "O"} {
		if !slices.ContainsFunc(id.attrs, func(a dnAttribute) bool { return a.typ == want }) {
			missing = append(missing, want)
		}
	}
	return missing
}

// parseDN parses an RFC 4514 distinguished name into its attributes, types
// upper-cased (S, an alias, as ST), multi-valued RDNs refused.
func parseDN(s string) ([]dnAttribute, error) {
	dn, err := ldap.ParseDN(s)
	if err != nil {
		return nil, err
	}
	var out []dnAttribute
	for _, rdn := range dn.RDNs {
		if len(rdn.Attributes) > 1 {
			return nil, errors.New("multi-valued RDNs (joined with +) are not supported")
		}
		for _, a := range rdn.Attributes {
			t := strings.ToUpper(a.Type)
			if t == "S" {
				t = "ST"
			}
			out = append(out, dnAttribute{t, a.Value})
		}
	}
	if len(out) == 0 {
		return nil, errors.New("no attributes")
	}
	return out, nil
}

// matches reports whether the subject attributes of a certificate carry
// every attribute of id.
func (id NotationIdentity) matches(subject []dnAttribute) bool {
	for _, want := range id.attrs {
		if !slices.Contains(subject, want) {
			return false
		}
	}
	return true
}

// ParseCertificates parses PEM (or DER) certificates, as a trust store file
// of notation holds them.
func ParseCertificates(data []byte) ([]*x509.Certificate, error) {
	var certs []*x509.Certificate
	rest := bytes.TrimSpace(data)
	if len(rest) > 0 && !bytes.HasPrefix(rest, []byte("-----BEGIN")) {
		c, err := x509.ParseCertificates(rest)
		if err != nil {
			return nil, fmt.Errorf("neither PEM nor DER certificates: %v", err)
		}
		return c, nil
	}
	for len(rest) > 0 {
		block, after := pem.Decode(rest)
		if block == nil {
			return nil, errors.New("not PEM certificates")
		}
		if block.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("holds a PEM %s, not a CERTIFICATE", block.Type)
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, err
		}
		certs = append(certs, c)
		rest = bytes.TrimSpace(after)
	}
	if len(certs) == 0 {
		return nil, errors.New("holds no certificate")
	}
	return certs, nil
}

// NotationPolicy is what a Notary Project attestor trusts, in the terms of
// notation's trust policy and trust store.
type NotationPolicy struct {
	// TrustStore are the trusted certificates (notation's "ca" trust
	// store): CA certificates, or self-signed signing certificates. A
	// signature counts when its certificate chain contains one.
	TrustStore []*x509.Certificate
	// TSARoots are the root certificates of trusted timestamp authorities
	// (the "tsa" trust store). With them, a signature's RFC 3161
	// timestamp is verified and dates it, so that it stays valid after its
	// certificate expires; without them, the chain must be valid now.
	TSARoots []*x509.Certificate
	// Identities are the trusted identities; "*" trusts any signer of the
	// trust store. At least one is required.
	Identities []NotationIdentity
	// Level is NotationStrict, NotationPermissive or NotationAudit.
	Level string
	// VerifyTimestamp is TimestampAlways (default: with TSARoots, every
	// signature needs a timestamp) or TimestampAfterCertExpiry (only once
	// the certificate has expired).
	VerifyTimestamp string
	// Revocation checks each certificate's revocation status online (OCSP,
	// then CRL, at the URLs the certificates name). Off, it is not
	// checked.
	Revocation bool
}

// Notation verifies Notary Project signatures (JWS and COSE envelopes, the
// notary.x509 signing scheme) for one attestor.
type Notation struct {
	p        NotationPolicy
	v        notation.Verifier
	revokeOn bool // revocation is checked and enforced
}

// NewNotation builds notation-go's verifier for p. The levels mean what
// they mean to notation: strict enforces every check; permissive only logs
// a failed authentic timestamp, an expired signature or certificate and a
// revocation failure (the signature counts, and the log says what failed);
// audit is checked here as strict is, because logging without blocking is
// what a dryrun rule does (the policy requires one).
func NewNotation(p NotationPolicy) (*Notation, error) {
	if len(p.TrustStore) == 0 {
		return nil, errors.New("the trust store holds no certificate")
	}
	if err := truststore.ValidateCertificates(p.TrustStore); err != nil {
		return nil, fmt.Errorf("trust store: %v", err)
	}
	for _, c := range p.TSARoots {
		if err := c.CheckSignatureFrom(c); err != nil || !bytes.Equal(c.RawSubject, c.RawIssuer) {
			return nil, fmt.Errorf("tsaRoots: certificate %q is not a self-signed root certificate", c.Subject)
		}
	}
	if len(p.Identities) == 0 {
		return nil, errors.New("no trusted identity")
	}
	if p.Level == "" {
		p.Level = NotationStrict
	}
	level := p.Level
	switch level {
	case NotationStrict, NotationAudit:
		level = NotationStrict
	case NotationPermissive:
	default:
		return nil, fmt.Errorf("level %q: want strict, permissive or audit", p.Level)
	}
	sv := trustpolicy.SignatureVerification{VerificationLevel: level, VerifyTimestamp: trustpolicy.TimestampOption(p.VerifyTimestamp)}
	if !p.Revocation {
		sv.Override = map[trustpolicy.ValidationType]trustpolicy.ValidationAction{trustpolicy.TypeRevocation: trustpolicy.ActionSkip}
	}
	stores := []string{"ca:" + storeName}
	if len(p.TSARoots) > 0 {
		stores = append(stores, "tsa:"+storeName)
	}
	doc := &trustpolicy.Document{Version: "1.0", TrustPolicies: []trustpolicy.TrustPolicy{{
		Name: "authz-proxy", RegistryScopes: []string{"*"}, SignatureVerification: sv,
		// The identities are checked after notation's verification, so
		// that a mismatch can name both subjects.
		TrustStores: stores, TrustedIdentities: []string{"*"},
	}}}
	opts := verifier.VerifierOptions{RevocationCodeSigningValidator: noRevocation{}, RevocationTimestampingValidator: noRevocation{}}
	if p.Revocation {
		for _, pair := range []struct {
			into    *revocation.Validator
			purpose purpose.Purpose
		}{{&opts.RevocationCodeSigningValidator, purpose.CodeSigning}, {&opts.RevocationTimestampingValidator, purpose.Timestamping}} {
			v, err := revocation.NewWithOptions(revocation.Options{CertChainPurpose: pair.purpose})
			if err != nil {
				return nil, err
			}
			*pair.into = probed{v}
		}
	}
	v, err := verifier.NewWithOptions(doc, memoryStore{ca: p.TrustStore, tsa: p.TSARoots}, nil, opts)
	if err != nil {
		return nil, err
	}
	lv, err := sv.GetVerificationLevel()
	if err != nil {
		return nil, err
	}
	return &Notation{p: p, v: v, revokeOn: p.Revocation && lv.Enforcement[trustpolicy.TypeRevocation] == trustpolicy.ActionEnforce}, nil
}

// storeName names the one trust store of each type in an attestor's trust
// policy.
const storeName = "attestor"

// memoryStore is an attestor's trust stores, read at load.
type memoryStore struct{ ca, tsa []*x509.Certificate }

func (m memoryStore) GetCertificates(_ context.Context, t truststore.Type, name string) ([]*x509.Certificate, error) {
	switch {
	case name != storeName:
	case t == truststore.TypeCA:
		return m.ca, nil
	case t == truststore.TypeTSA:
		return m.tsa, nil
	}
	return nil, truststore.TrustStoreError{Msg: fmt.Sprintf("no trust store %s:%s", t, name)}
}

// noRevocation is revocation left unchecked: notation-go checks the
// timestamping chain's revocation whenever it verifies a timestamp, and
// would otherwise ask the TSA's OCSP responders.
type noRevocation struct{}

func (noRevocation) ValidateContext(_ context.Context, o revocation.ValidateContextOptions) ([]*revocationresult.CertRevocationResult, error) {
	out := make([]*revocationresult.CertRevocationResult, len(o.CertChain))
	for i := range out {
		out[i] = &revocationresult.CertRevocationResult{Result: revocationresult.ResultNonRevokable}
	}
	return out, nil
}

// probed is an online revocation validator that tells the verification
// that asked (through its context) when a status stayed unknown.
type probed struct{ v revocation.Validator }

type probeKey struct{}

// probe collects, for one verification, why revocation stayed unknown.
type probe struct {
	mu      sync.Mutex
	unknown []string
}

func (p probed) ValidateContext(ctx context.Context, o revocation.ValidateContextOptions) ([]*revocationresult.CertRevocationResult, error) {
	res, err := p.v.ValidateContext(ctx, o)
	pr, _ := ctx.Value(probeKey{}).(*probe)
	if pr == nil {
		return res, err
	}
	pr.mu.Lock()
	defer pr.mu.Unlock()
	for i, r := range res {
		if r == nil || r.Result != revocationresult.ResultUnknown || i >= len(o.CertChain) {
			continue
		}
		why := "no answer"
		for _, s := range r.ServerResults {
			if s.Error != nil {
				why = fmt.Sprintf("%s: %v", s.Server, s.Error)
			}
		}
		pr.unknown = append(pr.unknown, fmt.Sprintf("certificate %q: %s", o.CertChain[i].Subject, why))
	}
	return res, err
}

// NotationSignature is a Notary Project signature envelope, parsed but not
// verified.
type NotationSignature struct {
	// MediaType is the envelope's: application/jose+json or
	// application/cose.
	MediaType string
	raw       []byte
	content   *signature.EnvelopeContent
}

// ParseNotation parses a JWS or COSE envelope of notation. Errors wrap
// ErrMalformedPayload. The caller bounds its size.
func ParseNotation(mediaType string, raw []byte) (*NotationSignature, error) {
	env, err := signature.ParseEnvelope(mediaType, raw)
	if err != nil {
		return nil, fmt.Errorf("%w: not a Notary Project signature envelope: %v", ErrMalformedPayload, err)
	}
	content, err := env.Content()
	if err != nil {
		return nil, fmt.Errorf("%w: Notary Project signature envelope: %v", ErrMalformedPayload, err)
	}
	return &NotationSignature{MediaType: mediaType, raw: raw, content: content}, nil
}

// KeyID names the key of the signing certificate as PublicKey.ID names a
// key, so that one key counts once whichever format it signed in.
func (s *NotationSignature) KeyID() string {
	sum := sha256.Sum256(s.content.SignerInfo.CertificateChain[0].RawSubjectPublicKeyInfo)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// Target is the manifest a signature must name.
type Target struct {
	MediaType, Digest string
	Size              int64
}

// Verify checks s for target with notation-go's verifier and then the
// trusted identities. A *CheckError says which check failed; a
// *DigestMismatchError means a genuine signature of this attestor's signer
// for another digest; an error wrapping ErrRevocationUnavailable means the
// outcome could not be decided.
func (n *Notation) Verify(ctx context.Context, s *NotationSignature, target Target) (*Result, error) {
	pr := &probe{}
	ctx = context.WithValue(ctx, probeKey{}, pr)
	desc := ocispec.Descriptor{MediaType: target.MediaType, Digest: digest.Digest(target.Digest), Size: target.Size}
	outcome, err := n.v.Verify(ctx, desc, s.raw, notation.VerifierVerifyOptions{
		// Only for choosing the trust policy statement, which applies to
		// every scope.
		ArtifactReference:  "authz-proxy/judged@" + target.Digest,
		SignatureMediaType: s.MediaType,
	})
	if n.revokeOn && len(pr.unknown) > 0 {
		return nil, fmt.Errorf("%w: %s", ErrRevocationUnavailable, strings.Join(pr.unknown, "; "))
	}
	if outcome == nil || outcome.EnvelopeContent == nil {
		if err == nil {
			err = errors.New("no outcome")
		}
		return nil, fail(CheckSignature, "the envelope does not verify: %s", libraryError(err))
	}
	// From here, the envelope verified: its content is genuine.
	content := outcome.EnvelopeContent
	leaf := content.SignerInfo.CertificateChain[0]
	failed := map[trustpolicy.ValidationType]error{}
	var logged []string
	stampFailed := false
	for _, r := range outcome.VerificationResults {
		stampFailed = stampFailed || r.Type == trustpolicy.TypeAuthenticTimestamp && r.Error != nil
		switch {
		case r.Error == nil:
		case r.Action == trustpolicy.ActionEnforce:
			failed[r.Type] = r.Error
		case r.Action == trustpolicy.ActionLog:
			logged = append(logged, fmt.Sprintf("%s (logged, level %s)", n.explain(content, r.Type, r.Error), n.p.Level))
		}
	}
	if e := failed[trustpolicy.TypeIntegrity]; e != nil {
		return nil, fail(CheckSignature, "the envelope does not verify: %s", libraryError(e))
	}
	if e := failed[trustpolicy.TypeAuthenticity]; e != nil {
		return nil, n.explain(content, trustpolicy.TypeAuthenticity, e)
	}
	if err := n.checkIdentity(leaf); err != nil {
		return nil, err
	}
	for _, t := range []trustpolicy.ValidationType{trustpolicy.TypeExpiry, trustpolicy.TypeAuthenticTimestamp, trustpolicy.TypeRevocation} {
		if e := failed[t]; e != nil {
			return nil, n.explain(content, t, e)
		}
	}
	if err != nil {
		return nil, n.otherFailure(content, target, err)
	}
	res := &Result{LogIndex: -1, X509Subject: leaf.Subject.String(), Logged: logged, SignedAt: time.Now(), TimeSource: TimeCurrent}
	if at, ok := n.timestamped(content); ok && !stampFailed {
		res.SignedAt, res.TimeSource = at, TimeAuthority
	}
	return res, nil
}

// checkIdentity checks the signing certificate against the trusted
// identities.
func (n *Notation) checkIdentity(leaf *x509.Certificate) error {
	subject, err := parseDN(leaf.Subject.String())
	if err != nil {
		subject = nil // matches only "*"
	}
	wants := make([]string, len(n.p.Identities))
	for i, id := range n.p.Identities {
		if id.attrs == nil || subject != nil && id.matches(subject) {
			return nil
		}
		wants[i] = strings.TrimSpace(strings.TrimPrefix(id.raw, "x509.subject:"))
	}
	want := fmt.Sprintf("%q", wants[0])
	if len(wants) > 1 {
		want = "one of " + strings.Join(quoteAll(wants), ", ")
	}
	return fail(CheckIdentity, "x509.subject is %q, want a subject with %s (trustedIdentities)", leaf.Subject.String(), want)
}

func quoteAll(ss []string) []string {
	out := make([]string, len(ss))
	for i, s := range ss {
		out[i] = fmt.Sprintf("%q", s)
	}
	return out
}

// explain turns notation's failure of check t into a CheckError that says
// what was found and what was wanted.
func (n *Notation) explain(content *signature.EnvelopeContent, t trustpolicy.ValidationType, e error) *CheckError {
	chain := content.SignerInfo.CertificateChain
	leaf := chain[0]
	switch t {
	case trustpolicy.TypeAuthenticity:
		return fail(CheckChain, "the signature's chain (signing certificate %q, issued by %q) includes no certificate of trustStore", leaf.Subject.String(), leaf.Issuer.String()).(*CheckError)
	case trustpolicy.TypeExpiry:
		return fail(CheckSignatureExpiry, "the signature expired at %s (its signer set an expiry)", content.SignerInfo.SignedAttributes.Expiry.UTC().Format(time.RFC3339)).(*CheckError)
	case trustpolicy.TypeRevocation:
		return fail(CheckRevocation, "%s", libraryError(e)).(*CheckError)
	case trustpolicy.TypeAuthenticTimestamp:
		hasTimestamp := len(content.SignerInfo.UnsignedAttributes.TimestampSignature) > 0
		switch {
		case !n.verifiesTimestamp(chain):
			now := time.Now()
			for _, c := range chain {
				if now.Before(c.NotBefore) || now.After(c.NotAfter) {
					why := "tsaRoots is not set, so no RFC 3161 timestamp can show that it was valid when it signed"
					if len(n.p.TSARoots) > 0 {
						why = "verifyTimestamp is afterCertExpiry and the chain has not expired"
					}
					return fail(CheckExpired, "certificate %q is valid from %s to %s, and it is now %s: %s", c.Subject.String(),
						c.NotBefore.UTC().Format(time.RFC3339), c.NotAfter.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339), why).(*CheckError)
				}
			}
		case !hasTimestamp:
			return fail(CheckNoTimestamp, "the signature carries none, and one is required (tsaRoots is set, verifyTimestamp: %s)", n.timestampOption()).(*CheckError)
		}
		return fail(CheckTimestamp, "its RFC 3161 timestamp does not show a valid signing time under tsaRoots: %s", libraryError(e)).(*CheckError)
	}
	return fail(CheckSignature, "%s", libraryError(e)).(*CheckError)
}

// otherFailure explains a verification that failed after every check
// passed: the signed descriptor is not the target's, or a verification
// plug-in is needed.
func (n *Notation) otherFailure(content *signature.EnvelopeContent, target Target, err error) error {
	if attr, aerr := content.SignerInfo.ExtendedAttribute(verifier.HeaderVerificationPlugin); aerr == nil {
		return fail(CheckPlugin, "the signature requires the notation verification plug-in %v, which authz-proxy does not run", attr.Value)
	}
	var payload struct {
		TargetArtifact struct {
			MediaType string `json:"mediaType"`
			Digest    string `json:"digest"`
			Size      int64  `json:"size"`
		} `json:"targetArtifact"`
	}
	if json.Unmarshal(content.Payload.Content, &payload) == nil && payload.TargetArtifact.Digest != "" {
		signed := payload.TargetArtifact
		if signed.Digest != target.Digest {
			return &DigestMismatchError{Signed: signed.Digest}
		}
		if signed.MediaType != target.MediaType || signed.Size != target.Size {
			return fail(CheckTarget, "the signature names this digest with media type %q and size %d; the manifest has media type %q and size %d",
				signed.MediaType, signed.Size, target.MediaType, target.Size)
		}
	}
	return fail(CheckSignature, "%s", libraryError(err))
}

func (n *Notation) timestampOption() string {
	if n.p.VerifyTimestamp == "" {
		return TimestampAlways
	}
	return n.p.VerifyTimestamp
}

// verifiesTimestamp reports whether notation verifies the timestamp of a
// signature by chain (as of now) rather than checking the chain at the
// current time.
func (n *Notation) verifiesTimestamp(chain []*x509.Certificate) bool {
	if len(n.p.TSARoots) == 0 {
		return false
	}
	if n.timestampOption() == TimestampAlways {
		return true
	}
	now := time.Now()
	return slices.ContainsFunc(chain, func(c *x509.Certificate) bool { return now.After(c.NotAfter) })
}

// timestamped returns the time of the verified timestamp of a signature
// that verified, if notation verified one.
func (n *Notation) timestamped(content *signature.EnvelopeContent) (time.Time, bool) {
	ts := content.SignerInfo.UnsignedAttributes.TimestampSignature
	if len(ts) == 0 || !n.verifiesTimestamp(content.SignerInfo.CertificateChain) {
		return time.Time{}, false
	}
	token, err := tspclient.ParseSignedToken(ts)
	if err != nil {
		return time.Time{}, false
	}
	info, err := token.Info()
	if err != nil {
		return time.Time{}, false
	}
	t, err := info.Validate(content.SignerInfo.Signature)
	if err != nil {
		return time.Time{}, false
	}
	return t.Value, true
}
