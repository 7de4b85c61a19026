package proxy_test

import (
	"context"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/authz-proxy/authz-proxy/internal/oci"
	"github.com/authz-proxy/authz-proxy/internal/sign"
	"github.com/authz-proxy/authz-proxy/internal/sign/virtual"
	"github.com/authz-proxy/authz-proxy/internal/verify"
)

const (
	ghIssuer   = "https://token.actions.githubusercontent.com"
	ghRelease  = "https://github.com/acme/app/.github/workflows/release.yml@refs/heads/main"
	ghNightly  = "https://github.com/acme/app/.github/workflows/nightly.yml@refs/heads/main"
	ghStranger = "https://github.com/evil/app/.github/workflows/release.yml@refs/heads/main"
)

// keylessPolicy has one rule per keyless behaviour under test. Its trusted
// roots are absolute paths, written before the proxy starts.
const keylessPolicy = `
attestors:
  - name: release
    keyless:
      issuer: ` + ghIssuer + `
      subject: ` + ghRelease + `
      trustedRootFile: {{root}}
      requireTlog: true
  - name: acme-any
    keyless:
      issuer: ` + ghIssuer + `
      subjectRegexp: '^https://github\.com/acme/'
      trustedRootFile: {{root}}
  - name: foreign-ca
    keyless:
      issuer: ` + ghIssuer + `
      subject: ` + ghRelease + `
      trustedRootFile: {{foreign}}
  - name: ci
    publicKeys: [{file: ci.pub}]
  - name: ci-logged
    publicKeys: [{file: ci.pub}]
    requireTlog: true
    trustedRootFile: {{root}}
policy:
  rules:
    - name: release
      images: ["lab/release/**"]
      require:
        - signature: {attestors: [release]}
    - name: acme
      images: ["lab/acme/**"]
      require:
        - signature: {attestors: [acme-any]}
    - name: foreign
      images: ["lab/foreign/**"]
      require:
        - signature: {attestors: [foreign-ca]}
    - name: key
      images: ["lab/key/**"]
      require:
        - signature: {attestors: [ci]}
    - name: key-logged
      images: ["lab/logged/**"]
      require:
        - signature: {attestors: [ci-logged]}
    - name: overlap
      images: ["lab/overlap/**"]
      require:
        - signature: {attestors: [release, acme-any], threshold: 2}
    - name: provenance
      images: ["lab/built/**"]
      require:
        - signature: {attestors: [release]}
        - attestation:
            predicateType: slsaprovenance1
            attestors: [release]
            condition: 'predicate.runDetails.builder.id == "https://github.com/actions/runner"'
`

// keylessEnv is a proxy whose keyless attestors trust vs; foreign-ca
// trusts the log and timestamp authority of vs but the CA of another.
func keylessEnv(t *testing.T, vs *virtual.Sigstore, opts ...envOption) *env {
	t.Helper()
	dir := t.TempDir()
	other, err := virtual.New()
	if err != nil {
		t.Fatal(err)
	}
	files := map[string]virtual.Parts{
		"root.json":    {CA: vs, Log: vs, TSA: vs},
		"foreign.json": {CA: other, Log: vs, TSA: vs},
	}
	pol := keylessPolicy
	for name, parts := range files {
		raw, err := virtual.TrustedRoot(parts)
		if err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, raw, 0o600); err != nil {
			t.Fatal(err)
		}
		pol = strings.ReplaceAll(pol, "{{"+strings.TrimSuffix(name, ".json")+"}}", path)
	}
	return newEnv(t, append([]envOption{withPolicy(pol)}, opts...)...)
}

// attachBundle stores bundle as a referrer of digest in cosign v3's
// layout, with the fallback tag when the registry has no referrers API.
func (e *env) attachBundle(repo string, digest v1.Hash, bundle []byte, content, predicateType string, fallbackTag bool) {
	e.t.Helper()
	r := e.repo(repo)
	desc, err := sign.Describe(context.Background(), r.Digest(digest.String()))
	if err != nil {
		e.t.Fatal(err)
	}
	if _, err := sign.AttachBundle(context.Background(), r, desc, bundle, content, predicateType, fallbackTag); err != nil {
		e.t.Fatal(err)
	}
}

// keylessSign stores a cosign v3 signature (a DSSE bundle of cosign's
// signature statement about signedDigest) by subject as a referrer of
// digest.
func (e *env) keylessSign(vs *virtual.Sigstore, repo, subject, issuer string, digest, signedDigest v1.Hash, o virtual.Options, fallbackTag bool) {
	e.t.Helper()
	b, err := vs.DSSEBundle(subject, issuer, virtual.CosignStatement(signedDigest.String()), o)
	if err != nil {
		e.t.Fatal(err)
	}
	e.attachBundle(repo, digest, b, "dsse-envelope", oci.CosignSignPredicateType, fallbackTag)
}

func TestKeylessDecisions(t *testing.T) {
	vs, err := virtual.New()
	if err != nil {
		t.Fatal(err)
	}
	stranger, err := virtual.New()
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		// noReferrersAPI runs the upstream without the referrers API:
		// bundles are found through the sha256-<hex> fallback tag.
		noReferrersAPI bool
		setup          func(e *env) (repo string, digest v1.Hash)
		wantStatus     int
		wantInMsg      []string
		// wantBy is the subject the decision log records, for an allow.
		wantBy string
	}{
		{name: "IdentityMatchesCosignV3Bundle", setup: func(e *env) (string, v1.Hash) {
			d := e.push("release/app:v1")
			e.keylessSign(vs, "release/app", ghRelease, ghIssuer, d, d, virtual.Options{}, false)
			return "release/app", d
		}, wantStatus: 200, wantBy: ghRelease},
		{name: "IdentityMatchesThroughTheFallbackTag", noReferrersAPI: true, setup: func(e *env) (string, v1.Hash) {
			d := e.push("release/app:v1")
			e.keylessSign(vs, "release/app", ghRelease, ghIssuer, d, d, virtual.Options{}, true)
			return "release/app", d
		}, wantStatus: 200, wantBy: ghRelease},
		{name: "LegacyKeylessSigTagWithRekorSET", setup: func(e *env) (string, v1.Hash) {
			d := e.push("release/app:v1")
			sig, err := vs.CosignSignature(ghRelease, ghIssuer, sign.Payload(e.repo("release/app").Name(), d.String()), virtual.Options{})
			if err != nil {
				e.t.Fatal(err)
			}
			if err := sign.AttachTag(context.Background(), e.repo("release/app"), d.String(), []sign.Signature{sig}); err != nil {
				e.t.Fatal(err)
			}
			return "release/app", d
		}, wantStatus: 200, wantBy: ghRelease},
		{name: "MessageSignatureBundleOverTheDigest", setup: func(e *env) (string, v1.Hash) {
			d := e.push("release/app:v1")
			raw, err := e.manifest("release/app", d)
			if err != nil {
				e.t.Fatal(err)
			}
			b, err := vs.MessageBundle(ghRelease, ghIssuer, raw, virtual.Options{})
			if err != nil {
				e.t.Fatal(err)
			}
			e.attachBundle("release/app", d, b, "message-signature", "", false)
			return "release/app", d
		}, wantStatus: 200, wantBy: ghRelease},
		{name: "OneSignatureCountsOnceForOverlappingIdentities", setup: func(e *env) (string, v1.Hash) {
			d := e.push("overlap/app:v1")
			e.keylessSign(vs, "overlap/app", ghRelease, ghIssuer, d, d, virtual.Options{}, false)
			return "overlap/app", d
		}, wantStatus: 403, wantInMsg: []string{"signed by 1 of the 2 attestors required", "which already counts for attestor release: a key counts once"}},
		{name: "SubjectRegexpMatches", setup: func(e *env) (string, v1.Hash) {
			d := e.push("acme/app:v1")
			e.keylessSign(vs, "acme/app", ghNightly, ghIssuer, d, d, virtual.Options{}, false)
			return "acme/app", d
		}, wantStatus: 200, wantBy: ghNightly},
		{name: "SubjectMismatchShowsBothValues", setup: func(e *env) (string, v1.Hash) {
			d := e.push("release/app:v1")
			e.keylessSign(vs, "release/app", ghNightly, ghIssuer, d, d, virtual.Options{}, false)
			return "release/app", d
		}, wantStatus: 403, wantInMsg: []string{`identity: subject is "` + ghNightly + `", want "` + ghRelease + `"`}},
		{name: "IssuerMismatchShowsBothValues", setup: func(e *env) (string, v1.Hash) {
			d := e.push("release/app:v1")
			e.keylessSign(vs, "release/app", ghRelease, "https://accounts.google.com", d, d, virtual.Options{}, false)
			return "release/app", d
		}, wantStatus: 403, wantInMsg: []string{`identity: issuer is "https://accounts.google.com", want "` + ghIssuer + `"`}},
		{name: "RegexpDoesNotMatchAStranger", setup: func(e *env) (string, v1.Hash) {
			d := e.push("acme/app:v1")
			e.keylessSign(vs, "acme/app", ghStranger, ghIssuer, d, d, virtual.Options{}, false)
			return "acme/app", d
		}, wantStatus: 403, wantInMsg: []string{`subject is "` + ghStranger + `", want matching ^https://github\.com/acme/`}},
		{name: "UntrustedCA", setup: func(e *env) (string, v1.Hash) {
			d := e.push("foreign/app:v1")
			e.keylessSign(vs, "foreign/app", ghRelease, ghIssuer, d, d, virtual.Options{}, false)
			return "foreign/app", d
		}, wantStatus: 403, wantInMsg: []string{"certificate chain: the certificate", "does not chain to a certificate authority of the trusted root"}},
		{name: "CertificateExpiredAtSigningTime", setup: func(e *env) (string, v1.Hash) {
			d := e.push("release/app:v1")
			e.keylessSign(vs, "release/app", ghRelease, ghIssuer, d, d, virtual.Options{SignedAt: time.Now().Add(30 * time.Minute)}, false)
			return "release/app", d
		}, wantStatus: 403, wantInMsg: []string{"certificate expired at signing time: signed at"}},
		{name: "MissingTlogEntryWithRequireTlog", setup: func(e *env) (string, v1.Hash) {
			d := e.push("release/app:v1")
			e.keylessSign(vs, "release/app", ghRelease, ghIssuer, d, d, virtual.Options{NoTlog: true}, false)
			return "release/app", d
		}, wantStatus: 403, wantInMsg: []string{"no transparency-log proof"}},
		{name: "TimestampAuthorityServesWhenNoTlogIsRequired", setup: func(e *env) (string, v1.Hash) {
			d := e.push("acme/app:v1")
			e.keylessSign(vs, "acme/app", ghRelease, ghIssuer, d, d, virtual.Options{NoTlog: true}, false)
			return "acme/app", d
		}, wantStatus: 200, wantBy: ghRelease},
		{name: "SignedByAnotherSigstore", setup: func(e *env) (string, v1.Hash) {
			d := e.push("release/app:v1")
			e.keylessSign(stranger, "release/app", ghRelease, ghIssuer, d, d, virtual.Options{}, false)
			return "release/app", d
		}, wantStatus: 403, wantInMsg: []string{"certificate chain: the certificate", "does not chain to a certificate authority of the trusted root"}},
		{name: "BundleAttachedToAnotherDigest", setup: func(e *env) (string, v1.Hash) {
			a := e.push("release/app:a")
			b := e.push("release/app:b")
			e.keylessSign(vs, "release/app", ghRelease, ghIssuer, b, a, virtual.Options{}, false)
			return "release/app", b
		}, wantStatus: 403, wantInMsg: []string{"was made for sha256:", "not for this digest"}},
		{name: "KeyBasedCosignV3Bundle", setup: func(e *env) (string, v1.Hash) {
			d := e.push("key/app:v1")
			e.keyBundle("key/app", d)
			return "key/app", d
		}, wantStatus: 200},
		{name: "KeyBasedRequireTlogDeniesASignatureWithoutTheLog", setup: func(e *env) (string, v1.Hash) {
			d := e.push("logged/app:v1")
			e.keyBundle("logged/app", d)
			return "logged/app", d
		}, wantStatus: 403, wantInMsg: []string{"does not count for attestor ci-logged: no transparency-log proof"}},
		{name: "KeyBasedRequireTlogAllowsALoggedSignature", setup: func(e *env) (string, v1.Hash) {
			d := e.push("logged/app:v1")
			sig, err := sign.New(e.keys["ci"], e.repo("logged/app"), d.String())
			if err != nil {
				e.t.Fatal(err)
			}
			if sig.RekorBundle, err = vs.LogKeySignature(e.keys["ci"], sig.Payload, sig.Sig); err != nil {
				e.t.Fatal(err)
			}
			if err := sign.AttachTag(context.Background(), e.repo("logged/app"), d.String(), []sign.Signature{sig}); err != nil {
				e.t.Fatal(err)
			}
			return "logged/app", d
		}, wantStatus: 200},
		{name: "KeylessProvenanceSatisfiesACondition", setup: func(e *env) (string, v1.Hash) {
			d := e.push("built/app:v1")
			e.keylessSign(vs, "built/app", ghRelease, ghIssuer, d, d, virtual.Options{}, false)
			e.keylessAttest(vs, "built/app", d, "https://github.com/actions/runner")
			return "built/app", d
		}, wantStatus: 200, wantBy: ghRelease},
		{name: "LegacyKeylessAttTagWithRekorSET", setup: func(e *env) (string, v1.Hash) {
			d := e.push("built/app:v1")
			e.keylessSign(vs, "built/app", ghRelease, ghIssuer, d, d, virtual.Options{}, false)
			st, err := sign.Statement(oci.StatementV01, e.repo("built/app").Name(), d.String(), slsaV1, provenance("https://github.com/actions/runner"))
			if err != nil {
				e.t.Fatal(err)
			}
			a, err := vs.CosignAttestation(ghRelease, ghIssuer, slsaV1, st, virtual.Options{})
			if err != nil {
				e.t.Fatal(err)
			}
			e.attestTag("built/app", d, a)
			return "built/app", d
		}, wantStatus: 200, wantBy: ghRelease},
		{name: "LegacyKeylessAttTagOfAStranger", setup: func(e *env) (string, v1.Hash) {
			d := e.push("built/app:v1")
			e.keylessSign(vs, "built/app", ghRelease, ghIssuer, d, d, virtual.Options{}, false)
			st, err := sign.Statement(oci.StatementV01, e.repo("built/app").Name(), d.String(), slsaV1, provenance("https://github.com/actions/runner"))
			if err != nil {
				e.t.Fatal(err)
			}
			a, err := vs.CosignAttestation(ghStranger, ghIssuer, slsaV1, st, virtual.Options{})
			if err != nil {
				e.t.Fatal(err)
			}
			e.attestTag("built/app", d, a)
			return "built/app", d
		}, wantStatus: 403, wantInMsg: []string{"release: its attestation", `does not count: identity: subject is "` + ghStranger + `"`}},
		{name: "KeylessProvenanceFailingTheCondition", setup: func(e *env) (string, v1.Hash) {
			d := e.push("built/app:v1")
			e.keylessSign(vs, "built/app", ghRelease, ghIssuer, d, d, virtual.Options{}, false)
			e.keylessAttest(vs, "built/app", d, "https://evil.example/runner")
			return "built/app", d
		}, wantStatus: 403, wantInMsg: []string{"does not satisfy the condition"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var opts []envOption
			if tt.noReferrersAPI {
				opts = append(opts, withoutReferrersAPI())
			}
			e := keylessEnv(t, vs, opts...)
			repo, d := tt.setup(e)
			resp := e.get(http.MethodGet, "/v2/lab/"+repo+"/manifests/"+d.String())
			rec := e.lastDecision(d.String())
			if tt.wantStatus != http.StatusOK {
				msg := expectError(t, resp, tt.wantStatus, "DENIED")
				for _, want := range tt.wantInMsg {
					if !strings.Contains(msg, want) {
						t.Errorf("message %q\ndoes not contain %q", msg, want)
					}
				}
				return
			}
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("status %d; decision %+v", resp.StatusCode, rec)
			}
			if tt.wantBy == "" {
				return
			}
			for _, v := range rec.VerifiedBy {
				if v.Subject != tt.wantBy || v.Issuer != ghIssuer {
					t.Errorf("decision log names issuer %q subject %q, want %q", v.Issuer, v.Subject, tt.wantBy)
				}
				if v.LogIndex == nil && v.SignedAt == nil {
					t.Errorf("decision log names neither a log index nor a signing time: %+v", v)
				}
			}
			if len(rec.VerifiedBy) == 0 || !strings.Contains(strings.Join(rec.Reasons, "\n"), "keyless: issuer "+ghIssuer) {
				t.Errorf("allow reasons %q do not name the keyless identity", rec.Reasons)
			}
		})
	}
}

// keyBundle signs digest with ci's key as cosign v3 does without a
// transparency log: a DSSE bundle of cosign's signature statement naming
// the key by a hint.
func (e *env) keyBundle(repo string, digest v1.Hash) {
	e.t.Helper()
	a, err := sign.Attest(e.keys["ci"], oci.CosignSignPredicateType, virtual.CosignStatement(digest.String()))
	if err != nil {
		e.t.Fatal(err)
	}
	b, err := sign.Bundle(a.Envelope, e.keys["ci"])
	if err != nil {
		e.t.Fatal(err)
	}
	e.attachBundle(repo, digest, b, "dsse-envelope", oci.CosignSignPredicateType, false)
}

// keylessAttest stores a SLSA v1 provenance about digest, built by
// builder and signed keylessly by the release workflow, as a bundle
// referrer.
func (e *env) keylessAttest(vs *virtual.Sigstore, repo string, digest v1.Hash, builder string) {
	e.t.Helper()
	e.keylessAttestation(vs, repo, digest, slsaV1, provenance(builder))
}

// keylessAttestation stores an attestation of predicateType about digest,
// signed keylessly by the release workflow, as a bundle referrer.
func (e *env) keylessAttestation(vs *virtual.Sigstore, repo string, digest v1.Hash, predicateType string, predicate any) {
	e.t.Helper()
	st, err := sign.Statement(oci.StatementV1, e.repo(repo).Name(), digest.String(), predicateType, predicate)
	if err != nil {
		e.t.Fatal(err)
	}
	b, err := vs.DSSEBundle(ghRelease, ghIssuer, st, virtual.Options{})
	if err != nil {
		e.t.Fatal(err)
	}
	e.attachBundle(repo, digest, b, "dsse-envelope", predicateType, false)
}

// manifest reads the manifest of digest upstream, the artifact a message
// signature signs.
func (e *env) manifest(repo string, digest v1.Hash) ([]byte, error) {
	resp, err := http.Get(e.upstream.URL + "/v2/" + repo + "/manifests/" + digest.String())
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	buf := new(strings.Builder)
	_, err = io.Copy(buf, resp.Body)
	return []byte(buf.String()), err
}

func TestAPullJudgedUnderAnExpiredTrustRootFailsClosed(t *testing.T) {
	vs, err := virtual.New()
	if err != nil {
		t.Fatal(err)
	}
	raw, err := virtual.TrustedRoot(virtual.Parts{CA: vs, Log: vs, TSA: vs})
	if err != nil {
		t.Fatal(err)
	}
	root, err := verify.ParseTrustedRoot(raw)
	if err != nil {
		t.Fatal(err)
	}
	root = root.WithOrigin("public-good", 142)
	const why = "trust root public-good: its TUF metadata (timestamp.json, version 142) expired at 2026-12-08T00:00:00Z and verifies nothing"
	policyRequiring := func(requirement string) string {
		return `trustRoots: [{name: public-good, tuf: {}}]
attestors:
  - name: release
    keyless: {issuer: ` + ghIssuer + `, subject: ` + ghRelease + `, trustRoots: [public-good], requireTlog: true}
  - name: ci-logged
    publicKeys: [{file: ci.pub}]
    requireTlog: true
    trustRoots: [public-good]
policy:
  rules:
    - name: release
      images: ["lab/release/**"]
      require:
        - ` + requirement + "\n"
	}
	// Each evidence under a withdrawn root is neither counted nor ruled
	// out: whichever requirement reads it, the pull is undecided.
	for _, req := range []struct {
		name, requirement string
		evidence          func(e *env, d v1.Hash)
	}{
		{"signature", "signature: {attestors: [release]}", func(e *env, d v1.Hash) {
			e.keylessSign(vs, "release/app", ghRelease, ghIssuer, d, d, virtual.Options{}, false)
		}},
		{"signature by a key, its log proof under the root", "signature: {attestors: [ci-logged]}", func(e *env, d v1.Hash) {
			sig, err := sign.New(e.keys["ci"], e.repo("release/app"), d.String())
			if err != nil {
				t.Fatal(err)
			}
			if sig.RekorBundle, err = vs.LogKeySignature(e.keys["ci"], sig.Payload, sig.Sig); err != nil {
				t.Fatal(err)
			}
			if err := sign.AttachTag(context.Background(), e.repo("release/app"), d.String(), []sign.Signature{sig}); err != nil {
				t.Fatal(err)
			}
		}},
		{"attestation, the newest deciding", "attestation: {predicateType: " + slsaV1 + ", attestors: [release]}", func(e *env, d v1.Hash) {
			e.keylessAttest(vs, "release/app", d, "https://github.com/actions/runner")
		}},
		{"attestation, any one", "attestation: {predicateType: " + slsaV1 + ", attestors: [release], select: any}", func(e *env, d v1.Hash) {
			e.keylessAttest(vs, "release/app", d, "https://github.com/actions/runner")
		}},
		{"vulnerabilities, the newest scan deciding", "vulnerabilities: {attestors: [release], maximumFixableSeverity: HIGH, maximumUnfixableSeverity: HIGH}", func(e *env, d v1.Hash) {
			e.keylessAttestation(vs, "release/app", d, vuln, scan(time.Now().Add(-time.Hour), "LOW"))
		}},
	} {
		for _, tt := range []struct {
			name       string
			root       *verify.TrustedRoot
			wantStatus int
			wantCode   string
			wantIn     string
		}{
			{"the root in force verifies, and the decision names it", root, http.StatusOK, "", ""},
			{"the root withdrawn: 503, the reason says which root and why", root.Withdraw(why), http.StatusServiceUnavailable, "UNAVAILABLE", why},
		} {
			t.Run(req.name+"/"+tt.name, func(t *testing.T) {
				e := newEnv(t, withPolicy(policyRequiring(req.requirement)), withTrustRoots(map[string]*verify.TrustedRoot{"public-good": tt.root}))
				d := e.push("release/app:v1")
				req.evidence(e, d)
				resp := e.get(http.MethodGet, "/v2/lab/release/app/manifests/"+d.String())
				rec := e.lastDecision(d.String())
				if tt.wantStatus != http.StatusOK {
					if msg := expectError(t, resp, tt.wantStatus, tt.wantCode); !strings.Contains(msg, tt.wantIn) {
						t.Errorf("message %q does not say %q", msg, tt.wantIn)
					}
					if rec.Decision != "error" {
						t.Errorf("decision %q, want error (not a denial)", rec.Decision)
					}
					// Not cached: asked again, it is judged again.
					e.get(http.MethodGet, "/v2/lab/release/app/manifests/"+d.String())
					if again := e.lastDecision(d.String()); again.Cached {
						t.Errorf("the undecided outcome was cached: %s", again)
					}
					return
				}
				if resp.StatusCode != http.StatusOK || len(rec.VerifiedBy) != 1 || rec.VerifiedBy[0].TrustRoot != "public-good" || rec.VerifiedBy[0].TrustRootVersion != 142 {
					t.Errorf("status %d, decision %s", resp.StatusCode, rec)
				}
			})
		}
	}
}
