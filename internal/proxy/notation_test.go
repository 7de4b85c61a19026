package proxy_test

import (
	"context"
	"crypto/x509"
	"crypto/x509/pkix"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/sigstore/sigstore/pkg/cryptoutils"

	"github.com/authz-proxy/authz-proxy/internal/sign"
	"github.com/authz-proxy/authz-proxy/internal/sign/virtual"
)

// notationPolicy has one rule per Notary Project behaviour under test.
const notationPolicy = `
attestors:
  - name: ci
    publicKeys: [{file: ci.pub}]
  - name: leaf-key
    publicKeys: [{file: leaf.pub}]
  - name: release-notation
    notation:
      trustStore: [ca.crt]
      tsaRoots: [tsa.crt]
      trustedIdentities: ["x509.subject: C=US, ST=WA, O=Acme, CN=release"]
      verifyTimestamp: afterCertExpiry
  - name: no-tsa
    notation:
      trustStore: [ca.crt]
      trustedIdentities: ["x509.subject: C=US, ST=WA, O=Acme, CN=release"]
  - name: lenient
    notation:
      trustStore: [ca.crt]
      trustedIdentities: ["x509.subject: C=US, ST=WA, O=Acme, CN=release"]
      level: permissive
  - name: watching
    notation:
      trustStore: [ca.crt]
      trustedIdentities: ["*"]
      level: audit
policy:
  rules:
    - name: notation
      images: ["lab/notation/**"]
      require:
        - signature: {attestors: [release-notation]}
    - name: no-tsa
      images: ["lab/plain/**"]
      require:
        - signature: {attestors: [no-tsa]}
    - name: either
      images: ["lab/either/**"]
      require:
        - signature: {attestors: [ci, release-notation]}
    - name: both
      images: ["lab/both/**"]
      require:
        - signature: {attestors: [ci, release-notation], threshold: 2}
    - name: same-key
      images: ["lab/samekey/**"]
      require:
        - signature: {attestors: [leaf-key, release-notation], threshold: 2}
    - name: permissive
      images: ["lab/permissive/**"]
      require:
        - signature: {attestors: [lenient]}
    - name: audit
      images: ["lab/audit/**"]
      enforcement: dryrun
      require:
        - signature: {attestors: [watching]}
`

// notationWorld is a release CA with its signers, a CA nobody trusts, and
// a timestamp authority.
type notationWorld struct {
	ca, other                   *virtual.CA
	tsa                         *virtual.TSA
	release, ci, expired, alien *virtual.Signer
}

var (
	releaseDN = pkix.Name{Country: []string{"US"}, Province: []string{"WA"}, Organization: []string{"Acme"}, CommonName: "release"}
	ciDN      = pkix.Name{Country: []string{"US"}, Province: []string{"WA"}, Organization: []string{"Acme"}, CommonName: "ci"}
)

func newNotationWorld(t *testing.T) *notationWorld {
	t.Helper()
	now := time.Now()
	w := &notationWorld{}
	var err error
	if w.ca, err = virtual.NewCA("Acme release CA", now.Add(-24*time.Hour), now.Add(24*time.Hour)); err != nil {
		t.Fatal(err)
	}
	if w.other, err = virtual.NewCA("Other CA", now.Add(-24*time.Hour), now.Add(24*time.Hour)); err != nil {
		t.Fatal(err)
	}
	if w.tsa, err = virtual.NewTSA("Acme TSA", now.Add(-48*time.Hour), now.Add(48*time.Hour)); err != nil {
		t.Fatal(err)
	}
	issue := func(ca *virtual.CA, dn pkix.Name, from, to time.Time) *virtual.Signer {
		s, err := ca.Issue(virtual.Leaf{Name: dn, NotBefore: from, NotAfter: to})
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	w.release = issue(w.ca, releaseDN, now.Add(-time.Hour), now.Add(time.Hour))
	w.ci = issue(w.ca, ciDN, now.Add(-time.Hour), now.Add(time.Hour))
	w.expired = issue(w.ca, releaseDN, now.Add(-3*time.Hour), now.Add(-time.Hour))
	w.alien = issue(w.other, releaseDN, now.Add(-time.Hour), now.Add(time.Hour))
	return w
}

// env starts a proxy under notationPolicy whose files hold w's CA and TSA
// roots, and leaf.pub the public key of w.release.
func (w *notationWorld) env(t *testing.T, opts ...envOption) *env {
	t.Helper()
	return w.envWith(t, notationPolicy, opts...)
}

// envWith is env under another policy naming the same files.
func (w *notationWorld) envWith(t *testing.T, pol string, opts ...envOption) *env {
	t.Helper()
	dir := t.TempDir()
	pub, err := cryptoutils.MarshalPublicKeyToPEM(w.release.Key.Public())
	if err != nil {
		t.Fatal(err)
	}
	files := map[string][]byte{"leaf.pub": pub}
	for name, c := range map[string]*x509.Certificate{"ca.crt": w.ca.Root, "tsa.crt": w.tsa.Root()} {
		if files[name], err = cryptoutils.MarshalCertificateToPEM(c); err != nil {
			t.Fatal(err)
		}
	}
	for name, data := range files {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		if name != "leaf.pub" {
			pol = strings.ReplaceAll(pol, "["+name+"]", "["+path+"]")
		}
	}
	pol = strings.ReplaceAll(pol, "{file: leaf.pub}", "{file: "+filepath.Join(dir, "leaf.pub")+"}")
	return newEnv(t, append([]envOption{withPolicy(pol)}, opts...)...)
}

// notationSign signs the manifest signed (its descriptor read from the
// registry) as s and stores the envelope as a referrer of digest, as
// `notation sign` does.
func (e *env) notationSign(s *virtual.Signer, repo string, digest, signed v1.Hash, o sign.NotationOptions, fallbackTag bool) v1.Hash {
	e.t.Helper()
	r := e.repo(repo)
	subject, err := sign.Describe(context.Background(), r.Digest(digest.String()))
	if err != nil {
		e.t.Fatal(err)
	}
	target, err := sign.Describe(context.Background(), r.Digest(signed.String()))
	if err != nil {
		e.t.Fatal(err)
	}
	env, err := sign.Notation(s.Key, s.Chain(), target, o)
	if err != nil {
		e.t.Fatal(err)
	}
	mt := o.MediaType
	if mt == "" {
		mt = sign.NotationJWS
	}
	d, err := sign.AttachNotation(context.Background(), r, subject, env, mt, s.Chain(), fallbackTag)
	if err != nil {
		e.t.Fatal(err)
	}
	return d
}

func TestNotationDecisions(t *testing.T) {
	w := newNotationWorld(t)
	twoHoursAgo := time.Now().Add(-2 * time.Hour)
	stamped := sign.NotationOptions{SigningTime: twoHoursAgo, Timestamper: w.tsa.Timestamper(twoHoursAgo), TSARoots: x509Pool(w.tsa.Root())}
	tests := []struct {
		name           string
		noReferrersAPI bool
		setup          func(e *env) (repo string, digest v1.Hash)
		wantStatus     int
		wantDecision   string
		wantInMsg      []string
		// wantBy are the attestors the decision log names, for an allow.
		wantBy []string
	}{
		{name: "JWSSignatureOfTheTrustedIdentity", setup: func(e *env) (string, v1.Hash) {
			d := e.push("notation/app:v1")
			e.notationSign(w.release, "notation/app", d, d, sign.NotationOptions{}, false)
			return "notation/app", d
		}, wantStatus: 200, wantDecision: "allow", wantBy: []string{"release-notation"},
			wantInMsg: []string{`signed by attestor release-notation (Notary Project signature: x509.subject "CN=release,O=Acme,ST=WA,C=US", certificate valid now`}},
		{name: "COSESignatureThroughTheFallbackTag", noReferrersAPI: true, setup: func(e *env) (string, v1.Hash) {
			d := e.push("notation/app:v1")
			e.notationSign(w.release, "notation/app", d, d, sign.NotationOptions{MediaType: sign.NotationCOSE}, true)
			return "notation/app", d
		}, wantStatus: 200, wantDecision: "allow", wantBy: []string{"release-notation"}},
		{name: "SignedUnderAnotherCA", setup: func(e *env) (string, v1.Hash) {
			d := e.push("notation/app:v1")
			e.notationSign(w.alien, "notation/app", d, d, sign.NotationOptions{}, false)
			return "notation/app", d
		}, wantStatus: 403, wantDecision: "deny", wantInMsg: []string{"does not count for attestor release-notation: certificate chain:", `issued by "CN=Other CA intermediate,O=Other CA") includes no certificate of trustStore`}},
		{name: "AnotherIdentityNamesBothSubjects", setup: func(e *env) (string, v1.Hash) {
			d := e.push("notation/app:v1")
			e.notationSign(w.ci, "notation/app", d, d, sign.NotationOptions{}, false)
			return "notation/app", d
		}, wantStatus: 403, wantDecision: "deny", wantInMsg: []string{`identity: x509.subject is "CN=ci,O=Acme,ST=WA,C=US", want a subject with "C=US, ST=WA, O=Acme, CN=release" (trustedIdentities)`}},
		{name: "SignatureForAnotherDigest", setup: func(e *env) (string, v1.Hash) {
			a := e.push("notation/app:a")
			b := e.push("notation/app:b")
			e.notationSign(w.release, "notation/app", b, a, sign.NotationOptions{}, false)
			return "notation/app", b
		}, wantStatus: 403, wantDecision: "deny", wantInMsg: []string{"a signature by attestor release-notation was made for sha256:", "not for this digest"}},
		{name: "ExpiredCertificateWithoutATimestamp", setup: func(e *env) (string, v1.Hash) {
			d := e.push("plain/app:v1")
			e.notationSign(w.expired, "plain/app", d, d, sign.NotationOptions{SigningTime: twoHoursAgo}, false)
			return "plain/app", d
		}, wantStatus: 403, wantDecision: "deny", wantInMsg: []string{"certificate expired at signing time", "tsaRoots is not set"}},
		{name: "ExpiredCertificateWithATimestampFromWhenItWasValid", setup: func(e *env) (string, v1.Hash) {
			d := e.push("notation/app:v1")
			e.notationSign(w.expired, "notation/app", d, d, stamped, false)
			return "notation/app", d
		}, wantStatus: 200, wantDecision: "allow", wantBy: []string{"release-notation"},
			wantInMsg: []string{"by the timestamp authority"}},
		{name: "ExpiredCertificateAndNoTimestampUnderTSARoots", setup: func(e *env) (string, v1.Hash) {
			d := e.push("notation/app:v1")
			e.notationSign(w.expired, "notation/app", d, d, sign.NotationOptions{SigningTime: twoHoursAgo}, false)
			return "notation/app", d
		}, wantStatus: 403, wantDecision: "deny", wantInMsg: []string{"no RFC 3161 timestamp: the signature carries none, and one is required (tsaRoots is set, verifyTimestamp: afterCertExpiry)"}},
		{name: "EitherKindSatisfiesOneOfTwoAttestors", setup: func(e *env) (string, v1.Hash) {
			d := e.push("either/app:v1")
			e.notationSign(w.release, "either/app", d, d, sign.NotationOptions{}, false)
			return "either/app", d
		}, wantStatus: 200, wantDecision: "allow", wantBy: []string{"release-notation"}},
		{name: "CosignAndNotationCountTowardOneThreshold", setup: func(e *env) (string, v1.Hash) {
			d := e.push("both/app:v1")
			e.signTag("both/app", "ci", d, d)
			e.notationSign(w.release, "both/app", d, d, sign.NotationOptions{}, false)
			return "both/app", d
		}, wantStatus: 200, wantDecision: "allow", wantBy: []string{"ci", "release-notation"}},
		{name: "NotationAloneIsOneOfTwo", setup: func(e *env) (string, v1.Hash) {
			d := e.push("both/app:v1")
			e.notationSign(w.release, "both/app", d, d, sign.NotationOptions{}, false)
			return "both/app", d
		}, wantStatus: 403, wantDecision: "deny", wantInMsg: []string{"signed by 1 of the 2 attestors required; missing: ci"}},
		{name: "OneKeyCountsOnceAcrossKinds", setup: func(e *env) (string, v1.Hash) {
			d := e.push("samekey/app:v1")
			signer, err := sign.NewSigner(w.release.Key)
			if err != nil {
				e.t.Fatal(err)
			}
			sig, err := sign.New(signer, e.repo("samekey/app"), d.String())
			if err != nil {
				e.t.Fatal(err)
			}
			if err := sign.AttachTag(context.Background(), e.repo("samekey/app"), d.String(), []sign.Signature{sig}); err != nil {
				e.t.Fatal(err)
			}
			e.notationSign(w.release, "samekey/app", d, d, sign.NotationOptions{}, false)
			return "samekey/app", d
		}, wantStatus: 403, wantDecision: "deny", wantInMsg: []string{"signed by 1 of the 2 attestors required", "which already counts for attestor leaf-key: a key counts once toward the threshold"}},
		{name: "PermissiveCountsAnExpiredCertificateAndSaysSo", setup: func(e *env) (string, v1.Hash) {
			d := e.push("permissive/app:v1")
			e.notationSign(w.expired, "permissive/app", d, d, sign.NotationOptions{SigningTime: twoHoursAgo}, false)
			return "permissive/app", d
		}, wantStatus: 200, wantDecision: "allow", wantBy: []string{"lenient"}, wantInMsg: []string{"(logged, level permissive)"}},
		{name: "AuditLogsAFailureAndServes", setup: func(e *env) (string, v1.Hash) {
			d := e.push("audit/app:v1")
			e.notationSign(w.alien, "audit/app", d, d, sign.NotationOptions{}, false)
			return "audit/app", d
		}, wantStatus: 200, wantDecision: "dryrun-deny", wantInMsg: []string{"does not count for attestor watching: certificate chain:"}},
		{name: "NoSignatureAtAll", setup: func(e *env) (string, v1.Hash) {
			return "notation/app", e.push("notation/app:v1")
		}, wantStatus: 403, wantDecision: "deny", wantInMsg: []string{"no signature found (cosign's .sig tag, or referrers: cosign, Sigstore bundle or Notary Project); need one from attestor release-notation"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var opts []envOption
			if tt.noReferrersAPI {
				opts = append(opts, withoutReferrersAPI())
			}
			e := w.env(t, opts...)
			repo, d := tt.setup(e)
			resp := e.get(http.MethodGet, "/v2/lab/"+repo+"/manifests/"+d.String())
			rec := e.lastDecision(d.String())
			if rec.Decision != tt.wantDecision {
				t.Errorf("decision %q, want %q: %+v", rec.Decision, tt.wantDecision, rec)
			}
			reasons := strings.Join(rec.Reasons, "\n")
			if tt.wantStatus != http.StatusOK {
				reasons = expectError(t, resp, tt.wantStatus, "DENIED")
			} else if resp.StatusCode != http.StatusOK {
				t.Fatalf("status %d; decision %+v", resp.StatusCode, rec)
			}
			for _, want := range tt.wantInMsg {
				if !strings.Contains(reasons, want) {
					t.Errorf("reasons %q\ndo not contain %q", reasons, want)
				}
			}
			var by []string
			for _, v := range rec.VerifiedBy {
				by = append(by, v.Attestor)
				if strings.Contains(v.Attestor, "notation") && v.X509Subject != releaseDN.String() {
					t.Errorf("decision log names x509 subject %q, want %q", v.X509Subject, releaseDN.String())
				}
			}
			if got, want := strings.Join(by, ","), strings.Join(tt.wantBy, ","); tt.wantStatus == 200 && tt.wantDecision == "allow" && got != want {
				t.Errorf("verified by %q, want %q", got, want)
			}
		})
	}
}

// TestNotationSignatureIsServedWithoutPolicy pulls a notation signature
// manifest and its envelope through the proxy, as `notation verify` does.
func TestNotationSignatureIsServedWithoutPolicy(t *testing.T) {
	w := newNotationWorld(t)
	for _, mt := range []string{sign.NotationJWS, sign.NotationCOSE} {
		t.Run(mt, func(t *testing.T) {
			e := w.env(t)
			d := e.push("notation/app:v1")
			ref := e.notationSign(w.release, "notation/app", d, d, sign.NotationOptions{MediaType: mt}, false)
			resp := e.get(http.MethodGet, "/v2/lab/notation/app/manifests/"+ref.String())
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("signature manifest: status %d", resp.StatusCode)
			}
			if rec := e.lastDecision(ref.String()); rec.Rule != "(signature artifact)" {
				t.Errorf("decided by %q, want the signature artifact rule: %+v", rec.Rule, rec)
			}
		})
	}
}

func x509Pool(certs ...*x509.Certificate) *x509.CertPool {
	p := x509.NewCertPool()
	for _, c := range certs {
		p.AddCert(c)
	}
	return p
}

// TestNotationRevocationUnknownFailsClosedUncached: with checkRevocation,
// a status that cannot be learnt (the CRL server is down) answers 503, and
// the next pull asks again rather than meeting a cached deny, unless other
// signatures meet the requirement.
func TestNotationRevocationUnknownFailsClosedUncached(t *testing.T) {
	w := newNotationWorld(t)
	down := httptest.NewServer(http.NotFoundHandler())
	down.Close()
	leaf, err := w.ca.Issue(virtual.Leaf{Name: releaseDN, CRLDistributionPoints: []string{down.URL + "/ca.crl"}})
	if err != nil {
		t.Fatal(err)
	}
	e := w.envWith(t, strings.Replace(notationPolicy, "      verifyTimestamp: afterCertExpiry\n", "      verifyTimestamp: afterCertExpiry\n      checkRevocation: true\n", 1))
	d := e.push("notation/app:v1")
	e.notationSign(leaf, "notation/app", d, d, sign.NotationOptions{}, false)
	for i := range 2 {
		resp := e.get(http.MethodGet, "/v2/lab/notation/app/manifests/"+d.String())
		msg := expectError(t, resp, http.StatusServiceUnavailable, "UNAVAILABLE")
		if !strings.Contains(msg, "revocation status could not be checked") {
			t.Errorf("pull %d: message %q does not say why", i+1, msg)
		}
	}
	// Where another signature meets the requirement, the undecided one
	// does not matter.
	either := e.push("either/app:v1")
	e.signTag("either/app", "ci", either, either)
	e.notationSign(leaf, "either/app", either, either, sign.NotationOptions{}, false)
	if resp := e.get(http.MethodGet, "/v2/lab/either/app/manifests/"+either.String()); resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d, want 200: ci's signature suffices; decision %+v", resp.StatusCode, e.lastDecision(either.String()))
	}
}
