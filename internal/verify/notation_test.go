package verify_test

import (
	"context"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/authz-proxy/authz-proxy/internal/sign"
	"github.com/authz-proxy/authz-proxy/internal/sign/virtual"
	"github.com/authz-proxy/authz-proxy/internal/verify"
)

var (
	releaseName = pkix.Name{Country: []string{"US"}, Province: []string{"WA"}, Organization: []string{"Acme"}, CommonName: "release"}
	ciName      = pkix.Name{Country: []string{"US"}, Province: []string{"WA"}, Organization: []string{"Acme"}, CommonName: "ci"}
)

// notationWorld is a release CA, another CA, two timestamp authorities and
// an image manifest's descriptor.
type notationWorld struct {
	ca, other  *virtual.CA
	tsa, rogue *virtual.TSA
	target     v1.Descriptor
}

func newNotationWorld(t testing.TB) *notationWorld {
	t.Helper()
	now := time.Now()
	tsa, err := virtual.NewTSA("Acme TSA", now.Add(-48*time.Hour), now.Add(48*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	rogue, err := virtual.NewTSA("Rogue TSA", now.Add(-48*time.Hour), now.Add(48*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	h, err := v1.NewHash("sha256:" + strings.Repeat("ab", 32))
	if err != nil {
		t.Fatal(err)
	}
	return &notationWorld{
		ca:     newCA(t, "Acme release CA", now.Add(-24*time.Hour), now.Add(24*time.Hour)),
		other:  newCA(t, "Other CA", now.Add(-24*time.Hour), now.Add(24*time.Hour)),
		tsa:    tsa,
		rogue:  rogue,
		target: v1.Descriptor{MediaType: "application/vnd.oci.image.manifest.v1+json", Digest: h, Size: 1234},
	}
}

func (w *notationWorld) targetOf() verify.Target {
	return verify.Target{MediaType: string(w.target.MediaType), Digest: w.target.Digest.String(), Size: w.target.Size}
}

func pool(certs ...*x509.Certificate) *x509.CertPool {
	p := x509.NewCertPool()
	for _, c := range certs {
		p.AddCert(c)
	}
	return p
}

func notationSign(t *testing.T, s *virtual.Signer, target v1.Descriptor, o sign.NotationOptions) *verify.NotationSignature {
	t.Helper()
	env, err := sign.Notation(s.Key, s.Chain(), target, o)
	if err != nil {
		t.Fatal(err)
	}
	mt := o.MediaType
	if mt == "" {
		mt = sign.NotationJWS
	}
	sig, err := verify.ParseNotation(mt, env)
	if err != nil {
		t.Fatal(err)
	}
	return sig
}

func identities(t *testing.T, ids ...string) []verify.NotationIdentity {
	t.Helper()
	var out []verify.NotationIdentity
	for _, s := range ids {
		id, err := verify.ParseNotationIdentity(s)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, id)
	}
	return out
}

func TestNotationSignatures(t *testing.T) {
	w := newNotationWorld(t)
	now := time.Now()
	valid := issue(t, w.ca, virtual.Leaf{Name: releaseName, NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour)})
	ci := issue(t, w.ca, virtual.Leaf{Name: ciName, NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour)})
	foreign := issue(t, w.other, virtual.Leaf{Name: releaseName, NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour)})
	expired := issue(t, w.ca, virtual.Leaf{Name: releaseName, NotBefore: now.Add(-3 * time.Hour), NotAfter: now.Add(-time.Hour)})
	twoHoursAgo := now.Add(-2 * time.Hour)
	otherDigest := w.target
	otherDigest.Digest.Hex = strings.Repeat("cd", 32)
	otherSize := w.target
	otherSize.Size = 99

	release := identities(t, "x509.subject: C=US, ST=WA, O=Acme, CN=release")
	strict := verify.NotationPolicy{TrustStore: []*x509.Certificate{w.ca.Root}, Identities: release, Level: verify.NotationStrict}
	withTSA := strict
	withTSA.TSARoots = []*x509.Certificate{w.tsa.Root()}
	afterExpiry := withTSA
	afterExpiry.VerifyTimestamp = verify.TimestampAfterCertExpiry
	permissive := strict
	permissive.Level = verify.NotationPermissive
	audit := strict
	audit.Level = verify.NotationAudit
	anyone := strict
	anyone.Identities = identities(t, "*")
	either := strict
	either.Identities = identities(t, "x509.subject: C=US, ST=WA, O=Acme, CN=release", "x509.subject: C=US, ST=WA, O=Acme, CN=nightly")

	tests := []struct {
		name   string
		policy verify.NotationPolicy
		sig    *verify.NotationSignature
		// wantTime is the time source of a signature that counts; empty
		// when it must not count.
		wantTime  string
		wantCheck verify.Check
		wantWhy   []string
		mismatch  string
		logged    string
	}{
		{name: "JWS envelope by the trusted identity", policy: strict, sig: notationSign(t, valid, w.target, sign.NotationOptions{}), wantTime: verify.TimeCurrent},
		{name: "COSE envelope by the trusted identity", policy: strict, sig: notationSign(t, valid, w.target, sign.NotationOptions{MediaType: sign.NotationCOSE}), wantTime: verify.TimeCurrent},
		{name: "any identity of the trust store with *", policy: anyone, sig: notationSign(t, ci, w.target, sign.NotationOptions{}), wantTime: verify.TimeCurrent},
		{name: "one of two trusted identities", policy: either, sig: notationSign(t, valid, w.target, sign.NotationOptions{}), wantTime: verify.TimeCurrent},
		{name: "signed under another CA", policy: strict, sig: notationSign(t, foreign, w.target, sign.NotationOptions{}),
			wantCheck: verify.CheckChain, wantWhy: []string{`signing certificate "CN=release,O=Acme,ST=WA,C=US", issued by "CN=Other CA intermediate,O=Other CA"`, "includes no certificate of trustStore"}},
		{name: "another identity of the trusted CA names both subjects", policy: strict, sig: notationSign(t, ci, w.target, sign.NotationOptions{}),
			wantCheck: verify.CheckIdentity, wantWhy: []string{`x509.subject is "CN=ci,O=Acme,ST=WA,C=US"`, `want a subject with "C=US, ST=WA, O=Acme, CN=release"`}},
		{name: "another identity than either of two", policy: either, sig: notationSign(t, ci, w.target, sign.NotationOptions{}),
			wantCheck: verify.CheckIdentity, wantWhy: []string{`want a subject with one of "C=US, ST=WA, O=Acme, CN=release", "C=US, ST=WA, O=Acme, CN=nightly"`}},
		{name: "audit checks as strict does", policy: audit, sig: notationSign(t, foreign, w.target, sign.NotationOptions{}), wantCheck: verify.CheckChain},
		{name: "genuine signature for another digest", policy: strict, sig: notationSign(t, valid, otherDigest, sign.NotationOptions{}), mismatch: otherDigest.Digest.String()},
		{name: "this digest with another size", policy: strict, sig: notationSign(t, valid, otherSize, sign.NotationOptions{}),
			wantCheck: verify.CheckTarget, wantWhy: []string{"size 99", "size 1234"}},
		{name: "expired certificate without a timestamp, no tsaRoots", policy: strict,
			sig:       notationSign(t, expired, w.target, sign.NotationOptions{SigningTime: twoHoursAgo}),
			wantCheck: verify.CheckExpired, wantWhy: []string{`certificate "CN=release,O=Acme,ST=WA,C=US" is valid from`, "tsaRoots is not set"}},
		{name: "expired certificate timestamped while it was valid", policy: withTSA,
			sig:      notationSign(t, expired, w.target, sign.NotationOptions{SigningTime: twoHoursAgo, Timestamper: w.tsa.Timestamper(twoHoursAgo), TSARoots: pool(w.tsa.Root())}),
			wantTime: verify.TimeAuthority},
		{name: "COSE: expired certificate timestamped while it was valid", policy: withTSA,
			sig:      notationSign(t, expired, w.target, sign.NotationOptions{MediaType: sign.NotationCOSE, SigningTime: twoHoursAgo, Timestamper: w.tsa.Timestamper(twoHoursAgo), TSARoots: pool(w.tsa.Root())}),
			wantTime: verify.TimeAuthority},
		{name: "expired certificate without a timestamp, with tsaRoots", policy: withTSA,
			sig:       notationSign(t, expired, w.target, sign.NotationOptions{SigningTime: twoHoursAgo}),
			wantCheck: verify.CheckNoTimestamp, wantWhy: []string{"carries none, and one is required"}},
		{name: "timestamp by a TSA not in tsaRoots", policy: withTSA,
			sig:       notationSign(t, valid, w.target, sign.NotationOptions{Timestamper: w.rogue.Timestamper(time.Time{}), TSARoots: pool(w.rogue.Root())}),
			wantCheck: verify.CheckTimestamp, wantWhy: []string{"tsaRoots"}},
		{name: "timestamp after the certificate expired", policy: withTSA,
			sig:       notationSign(t, expired, w.target, sign.NotationOptions{SigningTime: twoHoursAgo, Timestamper: w.tsa.Timestamper(time.Time{}), TSARoots: pool(w.tsa.Root())}),
			wantCheck: verify.CheckTimestamp, wantWhy: []string{"expired"}},
		{name: "valid certificate without a timestamp, tsaRoots and verifyTimestamp always", policy: withTSA,
			sig: notationSign(t, valid, w.target, sign.NotationOptions{}), wantCheck: verify.CheckNoTimestamp},
		{name: "valid certificate without a timestamp, verifyTimestamp afterCertExpiry", policy: afterExpiry,
			sig: notationSign(t, valid, w.target, sign.NotationOptions{}), wantTime: verify.TimeCurrent},
		{name: "permissive: an expired certificate counts, and the log says so", policy: permissive,
			sig:      notationSign(t, expired, w.target, sign.NotationOptions{SigningTime: twoHoursAgo}),
			wantTime: verify.TimeCurrent, logged: "certificate expired at signing time"},
		{name: "signature past its own expiry", policy: strict,
			sig:       notationSign(t, valid, w.target, sign.NotationOptions{SigningTime: now.Add(-30 * time.Minute), Expiry: now.Add(-time.Minute)}),
			wantCheck: verify.CheckSignatureExpiry},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n, err := verify.NewNotation(tt.policy)
			if err != nil {
				t.Fatal(err)
			}
			res, err := n.Verify(context.Background(), tt.sig, w.targetOf())
			if tt.wantTime != "" {
				if err != nil {
					t.Fatalf("does not count: %v", err)
				}
				if res.TimeSource != tt.wantTime {
					t.Errorf("time source %q, want %q", res.TimeSource, tt.wantTime)
				}
				if res.X509Subject == "" {
					t.Error("no x509 subject in the result")
				}
				if tt.wantTime == verify.TimeAuthority && res.SignedAt.Sub(twoHoursAgo).Abs() > time.Minute {
					t.Errorf("signed at %s, want the timestamp's time %s", res.SignedAt, twoHoursAgo)
				}
				if got := strings.Join(res.Logged, "; "); tt.logged != "" && !strings.Contains(got, tt.logged) || tt.logged == "" && got != "" {
					t.Errorf("logged %q, want %q", got, tt.logged)
				}
				return
			}
			if tt.mismatch != "" {
				var dm *verify.DigestMismatchError
				if !errors.As(err, &dm) || dm.Signed != tt.mismatch {
					t.Fatalf("err = %v, want a digest mismatch naming %s", err, tt.mismatch)
				}
				return
			}
			var ce *verify.CheckError
			if !errors.As(err, &ce) || ce.Check != tt.wantCheck {
				t.Fatalf("err = %v, want a %q check error", err, tt.wantCheck)
			}
			for _, why := range tt.wantWhy {
				if !strings.Contains(err.Error(), why) {
					t.Errorf("err = %v, want it to say %q", err, why)
				}
			}
		})
	}
}

func TestNotationTamperedEnvelopeDoesNotVerify(t *testing.T) {
	w := newNotationWorld(t)
	s := issue(t, w.ca, virtual.Leaf{Name: releaseName})
	env, err := sign.Notation(s.Key, s.Chain(), w.target, sign.NotationOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// Change one character of the JWS signature, to another of base64url.
	i := strings.LastIndex(string(env), `"signature":"`) + len(`"signature":"`) + 5
	tampered := []byte(string(env))
	tampered[i] = map[bool]byte{true: 'B', false: 'A'}[tampered[i] == 'A']
	sig, err := verify.ParseNotation(sign.NotationJWS, tampered)
	if err != nil {
		t.Fatal(err)
	}
	n, err := verify.NewNotation(verify.NotationPolicy{TrustStore: []*x509.Certificate{w.ca.Root}, Identities: identities(t, "*")})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := n.Verify(context.Background(), sig, w.targetOf()); !errors.Is(err, verify.ErrBadSignature) {
		t.Fatalf("err = %v, want ErrBadSignature", err)
	}
}

func TestNotationSignerKeyIsTheCertificateKey(t *testing.T) {
	w := newNotationWorld(t)
	s := issue(t, w.ca, virtual.Leaf{Name: releaseName})
	sig := notationSign(t, s, w.target, sign.NotationOptions{})
	pem, err := s.CertPEM()
	if err != nil {
		t.Fatal(err)
	}
	signed, err := verify.ParseCosignSignature(sign.Payload("r", w.target.Digest.String()), []byte("sig"), pem, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if sig.KeyID() != signed.CertificateKeyID() {
		t.Fatalf("notation signer %s, cosign certificate key %s: one key must count once", sig.KeyID(), signed.CertificateKeyID())
	}
}

func TestParseNotationIdentity(t *testing.T) {
	tests := []struct {
		in      string
		wantErr string
		missing string
	}{
		{in: "*"},
		{in: "x509.subject: C=US, ST=WA, O=Acme, CN=release"},
		{in: "x509.subject:C=US,S=WA,O=Acme"},
		{in: "x509.subject: O=Acme, CN=release", missing: "C,ST"},
		{in: "x509.subject: O=Acme\\, Inc., C=US", missing: "ST"},
		{in: "O=Acme", wantErr: `want "x509.subject: <distinguished name>"`},
		{in: "x509.subject:", wantErr: "names no distinguished name"},
		{in: "x509.subject: not a dn", wantErr: "is not a distinguished name"},
		{in: "x509.subject: O=Acme, O=Other", wantErr: "names O twice"},
		{in: "x509.subject: O=Acme+CN=x", wantErr: "multi-valued"},
		{in: "x509.subject: O=#04024869", wantErr: "#hex"},
		{in: "x509.issuer: O=Acme", wantErr: "want"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			id, err := verify.ParseNotationIdentity(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want it to say %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := strings.Join(id.MissingNotationAttributes(), ","); got != tt.missing {
				t.Errorf("missing %q, want %q", got, tt.missing)
			}
		})
	}
}

func TestNewNotationRefusesUnusableTrust(t *testing.T) {
	w := newNotationWorld(t)
	leaf := issue(t, w.ca, virtual.Leaf{Name: releaseName})
	any := identities(t, "*")
	tests := []struct {
		name    string
		p       verify.NotationPolicy
		wantErr string
	}{
		{"empty trust store", verify.NotationPolicy{Identities: any}, "no certificate"},
		{"a leaf issued by a CA in the trust store", verify.NotationPolicy{TrustStore: []*x509.Certificate{leaf.Cert}, Identities: any}, "not a CA certificate or self-signed"},
		{"an intermediate as a TSA root", verify.NotationPolicy{TrustStore: []*x509.Certificate{w.ca.Root}, TSARoots: []*x509.Certificate{w.ca.Intermediate}, Identities: any}, "not a self-signed root"},
		{"no identity", verify.NotationPolicy{TrustStore: []*x509.Certificate{w.ca.Root}}, "no trusted identity"},
		{"unknown level", verify.NotationPolicy{TrustStore: []*x509.Certificate{w.ca.Root}, Identities: any, Level: "skip"}, `level "skip"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := verify.NewNotation(tt.p); err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("err = %v, want it to say %q", err, tt.wantErr)
			}
		})
	}
}

// TestNotationRevocation checks revocation against a CRL that the test
// serves on loopback, as the certificate's distribution point names it.
func TestNotationRevocation(t *testing.T) {
	w := newNotationWorld(t)
	var crl atomic.Pointer[[]byte]
	srv := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, _ *http.Request) {
		if b := crl.Load(); b != nil {
			_, _ = rw.Write(*b) // the client sees a CRL cut short
			return
		}
		http.Error(rw, "no CRL", http.StatusServiceUnavailable)
	}))
	defer srv.Close()
	revoked := issue(t, w.ca, virtual.Leaf{Name: releaseName, CRLDistributionPoints: []string{srv.URL + "/intermediate.crl"}})
	kept := issue(t, w.ca, virtual.Leaf{Name: releaseName, CRLDistributionPoints: []string{srv.URL + "/intermediate.crl"}})
	list, err := w.ca.CRL(revoked.Cert)
	if err != nil {
		t.Fatal(err)
	}
	release := identities(t, "x509.subject: C=US, ST=WA, O=Acme, CN=release")
	policy := func(level string, online bool) verify.NotationPolicy {
		return verify.NotationPolicy{TrustStore: []*x509.Certificate{w.ca.Root}, Identities: release, Level: level, Revocation: online}
	}
	tests := []struct {
		name        string
		policy      verify.NotationPolicy
		signer      *virtual.Signer
		crlServed   bool
		wantErr     error
		wantCheck   verify.Check
		wantLogged  string
		wantCounted bool
	}{
		{name: "a revoked certificate is denied", policy: policy(verify.NotationStrict, true), signer: revoked, crlServed: true, wantCheck: verify.CheckRevocation},
		{name: "a certificate the CRL does not list counts", policy: policy(verify.NotationStrict, true), signer: kept, crlServed: true, wantCounted: true},
		{name: "revocation is not checked by default", policy: policy(verify.NotationStrict, false), signer: revoked, crlServed: true, wantCounted: true},
		{name: "an unknown status under strict is undecided, not denied", policy: policy(verify.NotationStrict, true), signer: kept, wantErr: verify.ErrRevocationUnavailable},
		{name: "an unknown status under permissive is logged", policy: policy(verify.NotationPermissive, true), signer: kept, wantCounted: true, wantLogged: "revocation"},
		{name: "a revoked certificate under permissive counts, logged", policy: policy(verify.NotationPermissive, true), signer: revoked, crlServed: true, wantCounted: true, wantLogged: "is revoked"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.crlServed {
				crl.Store(&list)
			} else {
				crl.Store(nil)
			}
			n, err := verify.NewNotation(tt.policy)
			if err != nil {
				t.Fatal(err)
			}
			res, err := n.Verify(context.Background(), notationSign(t, tt.signer, w.target, sign.NotationOptions{}), w.targetOf())
			switch {
			case tt.wantCounted:
				if err != nil {
					t.Fatalf("does not count: %v", err)
				}
				if got := strings.Join(res.Logged, "; "); !strings.Contains(got, tt.wantLogged) || tt.wantLogged == "" && got != "" {
					t.Errorf("logged %q, want %q", got, tt.wantLogged)
				}
			case tt.wantErr != nil:
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("err = %v, want %v", err, tt.wantErr)
				}
			default:
				var ce *verify.CheckError
				if !errors.As(err, &ce) || ce.Check != tt.wantCheck {
					t.Fatalf("err = %v, want a %q check error", err, tt.wantCheck)
				}
			}
		})
	}
}

// BenchmarkNotationVerify measures one notation signature, parsed and
// verified as a cold verification does, per envelope format, with and
// without an RFC 3161 timestamp to verify.
func BenchmarkNotationVerify(b *testing.B) {
	w := &notationWorld{}
	now := time.Now()
	ca, err := virtual.NewCA("Acme release CA", now.Add(-time.Hour), now.Add(time.Hour))
	if err != nil {
		b.Fatal(err)
	}
	tsa, err := virtual.NewTSA("Acme TSA", now.Add(-time.Hour), now.Add(time.Hour))
	if err != nil {
		b.Fatal(err)
	}
	w.ca, w.tsa = ca, tsa
	h, _ := v1.NewHash("sha256:" + strings.Repeat("ab", 32))
	w.target = v1.Descriptor{MediaType: "application/vnd.oci.image.manifest.v1+json", Digest: h, Size: 1234}
	s, err := ca.Issue(virtual.Leaf{Name: releaseName})
	if err != nil {
		b.Fatal(err)
	}
	id, err := verify.ParseNotationIdentity("x509.subject: C=US, ST=WA, O=Acme, CN=release")
	if err != nil {
		b.Fatal(err)
	}
	for _, c := range []struct {
		name string
		o    sign.NotationOptions
	}{
		{"jws", sign.NotationOptions{MediaType: sign.NotationJWS}},
		{"cose", sign.NotationOptions{MediaType: sign.NotationCOSE}},
		{"jws+timestamp", sign.NotationOptions{MediaType: sign.NotationJWS, Timestamper: tsa.Timestamper(time.Time{}), TSARoots: pool(tsa.Root())}},
	} {
		b.Run(c.name, func(b *testing.B) {
			env, err := sign.Notation(s.Key, s.Chain(), w.target, c.o)
			if err != nil {
				b.Fatal(err)
			}
			p := verify.NotationPolicy{TrustStore: []*x509.Certificate{ca.Root}, Identities: []verify.NotationIdentity{id}}
			if c.o.Timestamper != nil {
				p.TSARoots = []*x509.Certificate{tsa.Root()}
			}
			n, err := verify.NewNotation(p)
			if err != nil {
				b.Fatal(err)
			}
			for b.Loop() {
				sig, err := verify.ParseNotation(c.o.MediaType, env)
				if err != nil {
					b.Fatal(err)
				}
				if _, err := n.Verify(context.Background(), sig, w.targetOf()); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
