package verify_test

import (
	"errors"
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/authz-proxy/authz-proxy/internal/sign/virtual"
	"github.com/authz-proxy/authz-proxy/internal/verify"
)

func newCA(t testing.TB, name string, start, end time.Time) *virtual.CA {
	t.Helper()
	ca, err := virtual.NewCA(name, start, end)
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

func issue(t *testing.T, ca *virtual.CA, l virtual.Leaf) *virtual.Signer {
	t.Helper()
	s, err := ca.Issue(l)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// signedBundle is s's cosign v3 signature of digest with proofs p, parsed.
func signedBundle(t *testing.T, s *virtual.Signer, digest string, p virtual.BundleOptions) *verify.Signed {
	t.Helper()
	raw, err := s.DSSEBundle(virtual.CosignStatement(digest), p)
	if err != nil {
		t.Fatal(err)
	}
	signed, err := verify.ParseBundle(raw)
	if err != nil {
		t.Fatal(err)
	}
	return signed
}

func keyless(t *testing.T, roots []virtual.Parts, id verify.Identity, st verify.SigningTime) *verify.Keyless {
	t.Helper()
	var rs []*verify.TrustedRoot
	for _, p := range roots {
		rs = append(rs, mustRoot(t, p))
	}
	k, err := verify.NewKeyless(rs, id, st)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// wantCheck fails unless err is a CheckError of check whose text has each
// of wantIn and no formatting artefact of a wrapped library error.
func wantCheck(t *testing.T, err error, check verify.Check, wantIn ...string) {
	t.Helper()
	var ce *verify.CheckError
	if !errors.As(err, &ce) || ce.Check != check {
		t.Fatalf("err = %v, want check %q", err, check)
	}
	for _, w := range wantIn {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("err = %v\nwant it to contain %q", err, w)
		}
	}
	if strings.Contains(err.Error(), "%!") {
		t.Errorf("reason carries a formatting artefact: %v", err)
	}
}

// everyExtension is a value for each Fulcio extension, by number.
var everyExtension = map[int]string{
	2: "push", 3: "5f1e4c", 4: "Release", 5: "acme/app", 6: "refs/tags/v1.2.3",
	9: "https://github.com/acme/app/.github/workflows/release.yml@refs/tags/v1.2.3", 10: "5f1e4c",
	11: "github-hosted", 12: "https://github.com/acme/app", 13: "5f1e4c", 14: "refs/tags/v1.2.3",
	15: "101", 16: "https://github.com/acme", 17: "202",
	18: "https://github.com/acme/app/.github/workflows/release.yml@refs/tags/v1.2.3", 19: "5f1e4c",
	20: "push", 21: "https://github.com/acme/app/actions/runs/303/attempts/1", 22: "public", 23: "production",
}

func TestEveryFulcioExtensionIsReadAndMatchedByName(t *testing.T) {
	vs := newSigstore(t)
	ca := newCA(t, "fulcio", time.Now().Add(-time.Hour), time.Now().Add(time.Hour))
	leaf := virtual.Leaf{Subject: ghSubject, Issuer: ghIssuer, Extensions: everyExtension}
	s := signedBundle(t, issue(t, ca, leaf), digestOf("image"), virtual.BundleOptions{Log: vs})
	root := []virtual.Parts{{Log: vs, Authorities: []*virtual.CA{ca}}}

	fields, err := s.CertificateFields()
	if err != nil {
		t.Fatal(err)
	}
	if fields["issuer"] != ghIssuer || fields["subject"] != ghSubject {
		t.Errorf("issuer %q, subject %q", fields["issuer"], fields["subject"])
	}
	if len(verify.Extensions) != len(everyExtension) {
		t.Fatalf("%d extensions known, %d minted", len(verify.Extensions), len(everyExtension))
	}
	for _, e := range verify.Extensions {
		value := everyExtension[e.OID[len(e.OID)-1]]
		t.Run(e.Name, func(t *testing.T) {
			if fields[e.Name] != value {
				t.Fatalf("read %q, minted %q", fields[e.Name], value)
			}
			id := func(m verify.FieldMatch) verify.Identity {
				return verify.Identity{Issuer: ghIssuer, Subject: ghSubject, Fields: []verify.FieldMatch{m}}
			}
			for _, m := range []verify.FieldMatch{
				verify.Exact(e.Name, "", value),
				verify.Matching(e.Name, "", regexp.MustCompile("^"+regexp.QuoteMeta(value)+"$"), ""),
			} {
				if _, err := keyless(t, root, id(m), verify.SigningTime{RequireTlog: true}).Verify(s, digestOf("image")); err != nil {
					t.Errorf("%s %s: %v", e.Name, m.Want, err)
				}
			}
			_, err := keyless(t, root, id(verify.Exact(e.Name, "certificate."+e.Name, "other")), verify.SigningTime{}).Verify(s, digestOf("image"))
			wantCheck(t, err, verify.CheckIdentity, e.Name+` is "`+value+`", want "other" (certificate.`+e.Name+`)`)
		})
	}
	t.Run("AbsentExtensionMatchesNothing", func(t *testing.T) {
		bare := signedBundle(t, issue(t, ca, virtual.Leaf{Subject: ghSubject, Issuer: ghIssuer}), digestOf("image"), virtual.BundleOptions{Log: vs})
		k := keyless(t, root, verify.Identity{Issuer: ghIssuer, Subject: ghSubject, Fields: []verify.FieldMatch{
			verify.Matching("deploymentEnvironment", "", regexp.MustCompile(".*"), ""),
		}}, verify.SigningTime{})
		_, err := k.Verify(bare, digestOf("image"))
		wantCheck(t, err, verify.CheckIdentity, "deploymentEnvironment is absent, want matching .*")
	})
}

func TestSigningTimeOfPrivateCASignatures(t *testing.T) {
	vs, otherTSA := newSigstore(t), newSigstore(t)
	image := digestOf("image")
	now := time.Now()
	private := newCA(t, "acme code signing", now.Add(-365*24*time.Hour), now.Add(365*24*time.Hour))
	id := verify.Identity{Issuer: "https://ci.acme.example", Subject: "release@acme.example"}
	longLived := issue(t, private, virtual.Leaf{Subject: id.Subject, Issuer: id.Issuer, NotBefore: now.Add(-24 * time.Hour), NotAfter: now.Add(30 * 24 * time.Hour)})
	lapsed := issue(t, private, virtual.Leaf{Subject: id.Subject, Issuer: id.Issuer, NotBefore: now.Add(-48 * time.Hour), NotAfter: now.Add(-24 * time.Hour)})
	tsa, err := virtual.NewTSA("acme timestamps", now.Add(-time.Hour), now.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	root := virtual.Parts{Authorities: []*virtual.CA{private}, TSA: vs, TSAs: []*virtual.TSA{tsa}}
	tests := []struct {
		name       string
		signer     *virtual.Signer
		proofs     virtual.BundleOptions
		time       verify.SigningTime
		wantSource string
		wantCheck  verify.Check
		wantIn     []string
	}{
		{name: "NoProofIsCheckedAtTheCurrentTime", signer: longLived, wantSource: verify.TimeCurrent},
		{name: "NoProofAndALapsedCertificate", signer: lapsed, wantCheck: verify.CheckExpired,
			wantIn: []string{"and it is now", "no transparency-log entry or RFC 3161 timestamp shows that it was valid when it signed"}},
		{name: "ATimestampDatesTheSignature", signer: longLived, proofs: virtual.BundleOptions{TSA: vs}, wantSource: verify.TimeAuthority},
		{name: "RequireTimestampWithATimestamp", signer: longLived, proofs: virtual.BundleOptions{TSA: vs}, time: verify.SigningTime{RequireTimestamp: true}, wantSource: verify.TimeAuthority},
		{name: "ATimestampOfAnRFC3161TSA", signer: longLived, proofs: virtual.BundleOptions{TSA: tsa}, time: verify.SigningTime{RequireTimestamp: true}, wantSource: verify.TimeAuthority},
		{name: "RequireTimestampWithoutOne", signer: longLived, time: verify.SigningTime{RequireTimestamp: true}, wantCheck: verify.CheckNoTimestamp,
			wantIn: []string{"requireTimestamp"}},
		{name: "ATimestampThatDoesNotVerifyIsNotIgnored", signer: longLived, proofs: virtual.BundleOptions{TSA: otherTSA}, wantCheck: verify.CheckTimestamp,
			wantIn: []string{"does not verify against a timestamp authority of the trusted root"}},
		{name: "RequireTlogWithoutALog", signer: longLived, proofs: virtual.BundleOptions{TSA: vs}, time: verify.SigningTime{RequireTlog: true}, wantCheck: verify.CheckNoTlog},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res, err := keyless(t, []virtual.Parts{root}, id, tt.time).Verify(signedBundle(t, tt.signer, image, tt.proofs), image)
			if tt.wantCheck != "" {
				wantCheck(t, err, tt.wantCheck, tt.wantIn...)
				return
			}
			if err != nil {
				t.Fatalf("verification failed: %v", err)
			}
			if res.TimeSource != tt.wantSource || res.SignedAt.IsZero() {
				t.Errorf("checked at %s by the %q, want the %q", res.SignedAt, res.TimeSource, tt.wantSource)
			}
		})
	}
}

func TestSeveralTrustedRoots(t *testing.T) {
	vs := newSigstore(t)
	image := digestOf("image")
	now := time.Now()
	publicGood := newCA(t, "sigstore", now.Add(-time.Hour), now.Add(time.Hour))
	github := newCA(t, "GitHub, Inc.", now.Add(-time.Hour), now.Add(time.Hour))
	retired := newCA(t, "retired", now.Add(-3*time.Hour), now.Add(-2*time.Hour))
	stranger := newCA(t, "stranger", now.Add(-time.Hour), now.Add(time.Hour))
	id := verify.Identity{Issuer: ghIssuer, Subject: ghSubject}
	leaf := virtual.Leaf{Subject: ghSubject, Issuer: ghIssuer}
	// Public repositories: public-good Fulcio and Rekor. Private ones:
	// GitHub's Fulcio and timestamp authority, no log.
	roots := []virtual.Parts{
		{Log: vs, Authorities: []*virtual.CA{publicGood}},
		{TSA: vs, Authorities: []*virtual.CA{retired, github}},
	}
	k := keyless(t, roots, id, verify.SigningTime{})
	t.Run("PublicRepositoryUnderThePublicGoodRoot", func(t *testing.T) {
		res, err := k.Verify(signedBundle(t, issue(t, publicGood, leaf), image, virtual.BundleOptions{Log: vs}), image)
		if err != nil || res.LogIndex < 0 || res.TimeSource != verify.TimeTlog {
			t.Fatalf("res %+v, err %v", res, err)
		}
	})
	t.Run("PrivateRepositoryUnderGitHubsRoot", func(t *testing.T) {
		res, err := k.Verify(signedBundle(t, issue(t, github, leaf), image, virtual.BundleOptions{TSA: vs}), image)
		if err != nil || res.TimeSource != verify.TimeAuthority {
			t.Fatalf("res %+v, err %v", res, err)
		}
	})
	t.Run("CertificateOfACAOutsideItsValidityWindow", func(t *testing.T) {
		_, err := k.Verify(signedBundle(t, issue(t, retired, virtual.Leaf{Subject: ghSubject, Issuer: ghIssuer}), image, virtual.BundleOptions{TSA: vs}), image)
		wantCheck(t, err, verify.CheckChain, `issued by "CN=retired intermediate,O=retired"`, "any of the 2 trusted roots")
	})
	t.Run("CertificateOfNoListedCA", func(t *testing.T) {
		_, err := k.Verify(signedBundle(t, issue(t, stranger, leaf), image, virtual.BundleOptions{TSA: vs}), image)
		wantCheck(t, err, verify.CheckChain, "does not chain to a certificate authority of any of the 2 trusted roots")
	})
	t.Run("TheIssuingCAsRootJudgesTheProofs", func(t *testing.T) {
		// GitHub's root lists no log: a log entry is no proof there,
		// and its timestamp is missing.
		strict := keyless(t, roots, id, verify.SigningTime{RequireTimestamp: true})
		_, err := strict.Verify(signedBundle(t, issue(t, github, leaf), image, virtual.BundleOptions{Log: vs}), image)
		wantCheck(t, err, verify.CheckNoTimestamp)
	})
}

// BenchmarkKeylessVerifyUnderSeveralRoots compares one keyless check
// under the one root that issued the certificate with the same check when
// the root is the last of three (each other root costs a chain check).
func BenchmarkKeylessVerifyUnderSeveralRoots(b *testing.B) {
	vs, err := virtual.New()
	if err != nil {
		b.Fatal(err)
	}
	var cas []*virtual.CA
	for _, n := range []string{"a", "b", "issuer"} {
		ca, err := virtual.NewCA(n, time.Now().Add(-time.Hour), time.Now().Add(time.Hour))
		if err != nil {
			b.Fatal(err)
		}
		cas = append(cas, ca)
	}
	signer, err := cas[2].Issue(virtual.Leaf{Subject: ghSubject, Issuer: ghIssuer, Extensions: everyExtension})
	if err != nil {
		b.Fatal(err)
	}
	raw, err := signer.DSSEBundle(virtual.CosignStatement(digestOf("image")), virtual.BundleOptions{Log: vs})
	if err != nil {
		b.Fatal(err)
	}
	id := verify.Identity{Issuer: ghIssuer, Subject: ghSubject, Fields: []verify.FieldMatch{verify.Exact("runnerEnvironment", "", "github-hosted")}}
	for _, n := range []int{1, 3} {
		b.Run(fmt.Sprintf("roots=%d", n), func(b *testing.B) {
			var roots []*verify.TrustedRoot
			for _, ca := range cas[3-n:] {
				raw, err := virtual.TrustedRoot(virtual.Parts{Log: vs, Authorities: []*virtual.CA{ca}})
				if err != nil {
					b.Fatal(err)
				}
				r, err := verify.ParseTrustedRoot(raw)
				if err != nil {
					b.Fatal(err)
				}
				roots = append(roots, r)
			}
			k, err := verify.NewKeyless(roots, id, verify.SigningTime{RequireTlog: true})
			if err != nil {
				b.Fatal(err)
			}
			for b.Loop() {
				s, err := verify.ParseBundle(raw)
				if err != nil {
					b.Fatal(err)
				}
				if _, err := k.Verify(s, digestOf("image")); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
