package virtual

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"net/url"
	"strings"
	"time"

	"github.com/authz-proxy/authz-proxy/internal/oci"
	"github.com/secure-systems-lab/go-securesystemslib/dsse"
	protobundle "github.com/sigstore/protobuf-specs/gen/pb-go/bundle/v1"
	protocommon "github.com/sigstore/protobuf-specs/gen/pb-go/common/v1"
	protodsse "github.com/sigstore/protobuf-specs/gen/pb-go/dsse"
	"github.com/sigstore/sigstore-go/pkg/root"
	"github.com/sigstore/sigstore/pkg/cryptoutils"
	"github.com/sigstore/sigstore/pkg/signature"
	sigdsse "github.com/sigstore/sigstore/pkg/signature/dsse"
	"google.golang.org/protobuf/encoding/protojson"
)

// CA is a certificate authority for tests, a root and an intermediate as
// Fulcio has, that issues leaf certificates of any shape: a URI or e-mail
// subject, any Fulcio extension, any validity. It stands for GitHub's or
// Sigstore's Fulcio, or for a private CA.
type CA struct {
	Root, Intermediate *x509.Certificate
	key                *ecdsa.PrivateKey // the intermediate's
	start, end         time.Time
}

// NewCA makes a CA named name whose certificates, and validity period in a
// trusted root, run from start to end.
func NewCA(name string, start, end time.Time) (*CA, error) {
	rootKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	rootTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name + " root", Organization: []string{name}},
		NotBefore: start, NotAfter: end, IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	rootCert, err := create(rootTmpl, rootTmpl, &rootKey.PublicKey, rootKey)
	if err != nil {
		return nil, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	interTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: name + " intermediate", Organization: []string{name}},
		NotBefore: start, NotAfter: end, IsCA: true, BasicConstraintsValid: true,
		KeyUsage:    x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageCodeSigning},
	}
	inter, err := create(interTmpl, rootCert, &key.PublicKey, rootKey)
	if err != nil {
		return nil, err
	}
	return &CA{Root: rootCert, Intermediate: inter, key: key, start: start, end: end}, nil
}

func create(tmpl, parent *x509.Certificate, pub crypto.PublicKey, priv crypto.Signer) (*x509.Certificate, error) {
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, priv)
	if err != nil {
		return nil, err
	}
	return x509.ParseCertificate(der)
}

// Authority is c as a trusted root lists it.
func (c *CA) Authority() root.CertificateAuthority {
	return &root.FulcioCertificateAuthority{
		Root: c.Root, Intermediates: []*x509.Certificate{c.Intermediate},
		ValidityPeriodStart: c.start, ValidityPeriodEnd: c.end,
	}
}

// ChainPEM is the intermediate and the root, PEM, as cosign's
// --certificate-chain takes them.
func (c *CA) ChainPEM() ([]byte, error) {
	return cryptoutils.MarshalCertificatesToPEM([]*x509.Certificate{c.Intermediate, c.Root})
}

// Leaf describes a certificate for c to issue.
type Leaf struct {
	// Subject is the subject alternative name: a URI when it has a
	// scheme, else an e-mail address.
	Subject string
	// Issuer is the OIDC issuer, written in both Fulcio issuer
	// extensions (.1.1 and .1.8); empty leaves them out.
	Issuer string
	// Extensions are further Fulcio extensions, by their number n in
	// 1.3.6.1.4.1.57264.1.n; 2 to 6 are written raw, the others as DER
	// UTF8Strings, as Fulcio writes them.
	Extensions map[int]string
	// NotBefore and NotAfter: zero is a minute ago and ten minutes from
	// NotBefore, a Fulcio certificate's life.
	NotBefore, NotAfter time.Time
	// Name is the certificate's subject distinguished name, which Fulcio
	// leaves empty and a private CA's code-signing certificates carry
	// (what a Notary Project trusted identity names).
	Name pkix.Name
	// CRLDistributionPoints are the URLs where the CA publishes whether
	// the certificate is revoked (see CA.CRL).
	CRLDistributionPoints []string
}

// Signer is an issued certificate and its private key.
type Signer struct {
	Cert *x509.Certificate
	Key  *ecdsa.PrivateKey
	ca   *CA
}

// Issue makes the certificate that l describes.
func (c *CA) Issue(l Leaf) (*Signer, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	if l.NotBefore.IsZero() {
		l.NotBefore = time.Now().Add(-time.Minute)
	}
	if l.NotAfter.IsZero() {
		l.NotAfter = l.NotBefore.Add(10 * time.Minute)
	}
	serial, err := rand.Int(rand.Reader, big.NewInt(1<<62))
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial, NotBefore: l.NotBefore, NotAfter: l.NotAfter, Subject: l.Name,
		CRLDistributionPoints: l.CRLDistributionPoints,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageCodeSigning},
	}
	if u, err := url.Parse(l.Subject); err == nil && u.Scheme != "" {
		tmpl.URIs = []*url.URL{u}
	} else if l.Subject != "" {
		tmpl.EmailAddresses = []string{l.Subject}
	}
	exts := map[int]string{}
	for n, v := range l.Extensions {
		exts[n] = v
	}
	if l.Issuer != "" {
		exts[1], exts[8] = l.Issuer, l.Issuer
	}
	for n, v := range exts {
		value := []byte(v)
		if n > 6 {
			if value, err = asn1.MarshalWithParams(v, "utf8"); err != nil {
				return nil, err
			}
		}
		tmpl.ExtraExtensions = append(tmpl.ExtraExtensions, pkix.Extension{Id: asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 57264, 1, n}, Value: value})
	}
	cert, err := create(tmpl, c.Intermediate, &key.PublicKey, c.key)
	if err != nil {
		return nil, err
	}
	return &Signer{Cert: cert, Key: key, ca: c}, nil
}

// CRL is the certificate revocation list of the CA's intermediate, the
// issuer of its leaves, revoking the certificates given, valid for an hour.
func (c *CA) CRL(revoked ...*x509.Certificate) ([]byte, error) {
	now := time.Now()
	var entries []x509.RevocationListEntry
	for _, r := range revoked {
		entries = append(entries, x509.RevocationListEntry{SerialNumber: r.SerialNumber, RevocationTime: now.Add(-time.Minute)})
	}
	return x509.CreateRevocationList(rand.Reader, &x509.RevocationList{
		Number: big.NewInt(now.Unix()), ThisUpdate: now.Add(-time.Minute), NextUpdate: now.Add(time.Hour),
		RevokedCertificateEntries: entries,
	}, c.Intermediate, c.key)
}

// Chain is the certificate, the CA's intermediate and its root: the chain a
// Notary Project signature carries.
func (s *Signer) Chain() []*x509.Certificate {
	return []*x509.Certificate{s.Cert, s.ca.Intermediate, s.ca.Root}
}

// CertPEM and KeyPEM are the certificate and its PKCS #8 private key, PEM.
func (s *Signer) CertPEM() ([]byte, error) { return cryptoutils.MarshalCertificateToPEM(s.Cert) }

// KeyPEM is the private key, PKCS #8 PEM.
func (s *Signer) KeyPEM() ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(s.Key)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// BundleOptions say which proofs of the signing time a bundle carries,
// each from the named virtual Sigstore (nil leaves it out), and its
// format.
type BundleOptions struct {
	// Log enters the signature in a Rekor v1 log: the entry has a signed
	// entry timestamp and an inclusion proof.
	Log *Sigstore
	// TSA adds an RFC 3161 timestamp of the signature: a virtual
	// Sigstore's timestamp authority, or a TSA.
	TSA Timestamper
	// LogAt is the log entry's integrated time; zero: now.
	LogAt time.Time
	// V02 writes a v0.2 bundle (oci.Bundle02, the certificate as a
	// one-element chain), as GitHub's attestations were until 2024.
	V02 bool
}

// A Timestamper stamps a signature with an RFC 3161 timestamp: *Sigstore
// and *TSA.
type Timestamper interface {
	TimestampResponse(sig []byte) ([]byte, error)
}

// DSSEBundle signs statement with s into a Sigstore bundle holding a DSSE
// envelope and the leaf certificate, with the proofs p names: what
// `cosign sign` (v3) and `actions/attest-build-provenance` write.
func (s *Signer) DSSEBundle(statement []byte, p BundleOptions) ([]byte, error) {
	signer, err := signature.LoadECDSASignerVerifier(s.Key, crypto.SHA256)
	if err != nil {
		return nil, err
	}
	es, err := dsse.NewEnvelopeSigner(&sigdsse.SignerAdapter{SignatureSigner: signer, Pub: &s.Key.PublicKey})
	if err != nil {
		return nil, err
	}
	env, err := es.SignPayload(context.Background(), "application/vnd.in-toto+json", statement)
	if err != nil {
		return nil, err
	}
	sig, err := base64.StdEncoding.DecodeString(env.Signatures[0].Sig)
	if err != nil {
		return nil, err
	}
	b := &protobundle.Bundle{
		MediaType: oci.BundleV03,
		VerificationMaterial: &protobundle.VerificationMaterial{
			Content: &protobundle.VerificationMaterial_Certificate{Certificate: &protocommon.X509Certificate{RawBytes: s.Cert.Raw}},
		},
		Content: &protobundle.Bundle_DsseEnvelope{DsseEnvelope: &protodsse.Envelope{
			Payload: statement, PayloadType: env.PayloadType,
			Signatures: []*protodsse.Signature{{Sig: sig}},
		}},
	}
	if p.V02 {
		b.MediaType = oci.Bundle02
		b.VerificationMaterial.Content = &protobundle.VerificationMaterial_X509CertificateChain{
			X509CertificateChain: &protocommon.X509CertificateChain{Certificates: []*protocommon.X509Certificate{{RawBytes: s.Cert.Raw}}},
		}
	}
	if p.Log != nil {
		at := p.LogAt
		if at.IsZero() {
			at = time.Now()
		}
		entry, err := p.Log.GenerateTlogEntry(s.Cert, env, sig, at.Unix(), true)
		if err != nil {
			return nil, err
		}
		tle, err := p.Log.complete(entry, true)
		if err != nil {
			return nil, err
		}
		b.VerificationMaterial.TlogEntries = append(b.VerificationMaterial.TlogEntries, tle)
	}
	if p.TSA != nil {
		ts, err := p.TSA.TimestampResponse(sig)
		if err != nil {
			return nil, err
		}
		b.VerificationMaterial.TimestampVerificationData = &protobundle.TimestampVerificationData{
			Rfc3161Timestamps: []*protocommon.RFC3161SignedTimestamp{{SignedTimestamp: ts}},
		}
	}
	return protojson.Marshal(b)
}

// GitHubRun is one run of a GitHub Actions workflow, as the OIDC token
// that Fulcio turns into a certificate describes it.
type GitHubRun struct {
	// Repository is the repository built, owner/name; SignerRepository
	// the one whose Workflow signed (a reusable workflow's), default
	// Repository.
	Repository, SignerRepository string
	// Workflow is the workflow file's path, .github/workflows/release.yml.
	Workflow string
	// Ref is the git ref built, refs/tags/v1.2.3 or refs/heads/main;
	// SignerRef the ref of the signer workflow, default Ref.
	Ref, SignerRef string
	// SHA is the commit built.
	SHA string
	// Event is the trigger: push, workflow_dispatch, pull_request...
	Event string
	// Runner is github-hosted or self-hosted.
	Runner string
	// Visibility is public, private or internal.
	Visibility string
	// Environment is the job's deployment environment, if any.
	Environment string
}

// GitHubIssuer is GitHub Actions' OIDC issuer.
const GitHubIssuer = "https://token.actions.githubusercontent.com"

// Leaf is the certificate Fulcio issues to the run: the signer workflow's
// URI as subject, and each extension with the value GitHub's token gives
// it (Fulcio's docs/oid-info.md).
func (r GitHubRun) Leaf() Leaf {
	signerRepo, signerRef := r.SignerRepository, r.SignerRef
	if signerRepo == "" {
		signerRepo = r.Repository
	}
	if signerRef == "" {
		signerRef = r.Ref
	}
	owner, _, _ := strings.Cut(r.Repository, "/")
	signer := "https://github.com/" + signerRepo + "/" + r.Workflow + "@" + signerRef
	build := "https://github.com/" + r.Repository + "/" + r.Workflow + "@" + r.Ref
	ext := map[int]string{
		2: r.Event, 3: r.SHA, 4: "Release", 5: r.Repository, 6: r.Ref,
		9: signer, 10: r.SHA, 11: r.Runner,
		12: "https://github.com/" + r.Repository, 13: r.SHA, 14: r.Ref, 15: "101",
		16: "https://github.com/" + owner, 17: "202",
		18: build, 19: r.SHA, 20: r.Event,
		21: "https://github.com/" + r.Repository + "/actions/runs/303/attempts/1",
		22: r.Visibility,
	}
	if r.Environment != "" {
		ext[23] = r.Environment
	}
	return Leaf{Subject: signer, Issuer: GitHubIssuer, Extensions: ext}
}

// Statement is an in-toto statement of predicateType about digest
// ("sha256:<hex>").
func Statement(digest, predicateType string, predicate any) ([]byte, error) {
	alg, h, _ := strings.Cut(digest, ":")
	return json.Marshal(map[string]any{
		"_type":         "https://in-toto.io/Statement/v1",
		"subject":       []any{map[string]any{"name": "image", "digest": map[string]string{alg: h}}},
		"predicateType": predicateType,
		"predicate":     predicate,
	})
}
