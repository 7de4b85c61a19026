package verify_test

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/authz-proxy/authz-proxy/internal/sign"
	"github.com/authz-proxy/authz-proxy/internal/sign/virtual"
	"github.com/authz-proxy/authz-proxy/internal/verify"
)

const (
	ghIssuer  = "https://token.actions.githubusercontent.com"
	ghSubject = "https://github.com/acme/app/.github/workflows/release.yml@refs/heads/main"
)

func digestOf(s string) string {
	sum := sha256.Sum256([]byte(s))
	return "sha256:" + hex.EncodeToString(sum[:])
}

func mustRoot(t *testing.T, p virtual.Parts) *verify.TrustedRoot {
	t.Helper()
	raw, err := virtual.TrustedRoot(p)
	if err != nil {
		t.Fatal(err)
	}
	r, err := verify.ParseTrustedRoot(raw)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func newSigstore(t *testing.T) *virtual.Sigstore {
	t.Helper()
	vs, err := virtual.New()
	if err != nil {
		t.Fatal(err)
	}
	return vs
}

func TestKeylessVerification(t *testing.T) {
	vs, other := newSigstore(t), newSigstore(t)
	image, elsewhere := digestOf("image"), digestOf("another image")
	exact := verify.Identity{Issuer: ghIssuer, Subject: ghSubject}
	dsse := func(subject, issuer, digest string, o virtual.Options) func() ([]byte, error) {
		return func() ([]byte, error) {
			return vs.DSSEBundle(subject, issuer, virtual.CosignStatement(digest), o)
		}
	}
	tests := []struct {
		name        string
		root        virtual.Parts
		identity    verify.Identity
		requireTlog bool
		time        verify.SigningTime // when requireTlog is not enough
		bundle      func() ([]byte, error)
		// legacy, when set, is a cosign .sig layer instead of a bundle.
		legacy    func() (sign.Signature, error)
		wantCheck verify.Check
		wantErr   string // for a digest mismatch
		wantLog   bool
	}{
		{name: "IdentityMatches", root: virtual.Parts{CA: vs, Log: vs, TSA: vs}, identity: exact, requireTlog: true,
			bundle: dsse(ghSubject, ghIssuer, image, virtual.Options{}), wantLog: true},
		{name: "SubjectRegexpMatches", root: virtual.Parts{CA: vs, Log: vs, TSA: vs},
			identity: verify.Identity{Issuer: ghIssuer, SubjectRegexp: `^https://github\.com/acme/`},
			bundle:   dsse(ghSubject, ghIssuer, image, virtual.Options{}), wantLog: true},
		{name: "MessageSignatureOverTheDigest", root: virtual.Parts{CA: vs, Log: vs, TSA: vs}, identity: exact, requireTlog: true,
			bundle: func() ([]byte, error) {
				return vs.MessageBundle(ghSubject, ghIssuer, []byte("image"), virtual.Options{})
			}, wantLog: true},
		{name: "TimestampAuthorityAloneWhenNoLogIsRequired", root: virtual.Parts{CA: vs, Log: vs, TSA: vs}, identity: exact,
			bundle: dsse(ghSubject, ghIssuer, image, virtual.Options{NoTlog: true})},
		{name: "LegacyCosignSignatureWithRekorSET", root: virtual.Parts{CA: vs, Log: vs, TSA: vs}, identity: exact, requireTlog: true,
			legacy: func() (sign.Signature, error) {
				return vs.CosignSignature(ghSubject, ghIssuer, sign.Payload("lab/app", image), virtual.Options{})
			}, wantLog: true},
		{name: "SubjectMismatch", root: virtual.Parts{CA: vs, Log: vs, TSA: vs}, identity: exact,
			bundle: dsse("https://github.com/evil/app/.github/workflows/release.yml@refs/heads/main", ghIssuer, image, virtual.Options{}), wantCheck: verify.CheckIdentity},
		{name: "IssuerMismatch", root: virtual.Parts{CA: vs, Log: vs, TSA: vs}, identity: exact,
			bundle: dsse(ghSubject, "https://accounts.google.com", image, virtual.Options{}), wantCheck: verify.CheckIdentity},
		{name: "UntrustedCA", root: virtual.Parts{CA: other, Log: vs, TSA: vs}, identity: exact,
			bundle: dsse(ghSubject, ghIssuer, image, virtual.Options{}), wantCheck: verify.CheckChain},
		{name: "CertificateExpiredAtSigningTime", root: virtual.Parts{CA: vs, Log: vs, TSA: vs}, identity: exact,
			bundle: dsse(ghSubject, ghIssuer, image, virtual.Options{SignedAt: time.Now().Add(30 * time.Minute)}), wantCheck: verify.CheckExpired},
		{name: "MissingTlogEntryWhenRequired", root: virtual.Parts{CA: vs, Log: vs, TSA: vs}, identity: exact, requireTlog: true,
			bundle: dsse(ghSubject, ghIssuer, image, virtual.Options{NoTlog: true}), wantCheck: verify.CheckNoTlog},
		{name: "LogOfAnotherSigstore", root: virtual.Parts{CA: vs, Log: other, TSA: vs}, identity: exact, requireTlog: true,
			bundle: dsse(ghSubject, ghIssuer, image, virtual.Options{}), wantCheck: verify.CheckNoTlog},
		{name: "NoProofChecksTheCertificateAtTheCurrentTime", root: virtual.Parts{CA: vs, Log: vs, TSA: vs}, identity: exact,
			bundle: dsse(ghSubject, ghIssuer, image, virtual.Options{NoTlog: true, NoTimestamp: true})},
		{name: "NoTimestampWhenRequired", root: virtual.Parts{CA: vs, Log: vs, TSA: vs}, identity: exact, time: verify.SigningTime{RequireTimestamp: true},
			bundle: dsse(ghSubject, ghIssuer, image, virtual.Options{NoTimestamp: true}), wantCheck: verify.CheckNoTimestamp},
		{name: "TimestampWhenRequired", root: virtual.Parts{CA: vs, Log: vs, TSA: vs}, identity: exact, time: verify.SigningTime{RequireTimestamp: true},
			bundle: dsse(ghSubject, ghIssuer, image, virtual.Options{NoTlog: true})},
		{name: "TimestampOfAnAuthorityTheRootDoesNotList", root: virtual.Parts{CA: vs, Log: vs, TSA: other}, identity: exact, time: verify.SigningTime{RequireTimestamp: true},
			bundle: dsse(ghSubject, ghIssuer, image, virtual.Options{NoTlog: true}), wantCheck: verify.CheckTimestamp},
		{name: "RekorV2EntryDatedByTheTimestampAuthority", root: virtual.Parts{CA: vs, Log: vs, TSA: vs}, identity: exact, requireTlog: true,
			bundle: dsse(ghSubject, ghIssuer, image, virtual.Options{RekorV2: true}), wantLog: true},
		{name: "RekorV2EntryWithoutATimestampHasNoSigningTime", root: virtual.Parts{CA: vs, Log: vs, TSA: vs}, identity: exact, requireTlog: true,
			bundle: dsse(ghSubject, ghIssuer, image, virtual.Options{RekorV2: true, NoTimestamp: true}), wantCheck: verify.CheckTimestamp},
		{name: "RekorV2EntryOfAnotherLog", root: virtual.Parts{CA: vs, Log: other, TSA: vs}, identity: exact, requireTlog: true,
			bundle: dsse(ghSubject, ghIssuer, image, virtual.Options{RekorV2: true}), wantCheck: verify.CheckNoTlog},
		{name: "SCTRequiredWhenTheRootListsCTLogs", root: virtual.Parts{CA: vs, Log: vs, TSA: vs, CTLog: vs}, identity: exact,
			bundle: dsse(ghSubject, ghIssuer, image, virtual.Options{}), wantCheck: verify.CheckSCT},
		{name: "BundleForAnotherDigest", root: virtual.Parts{CA: vs, Log: vs, TSA: vs}, identity: exact,
			bundle: dsse(ghSubject, ghIssuer, elsewhere, virtual.Options{}), wantErr: "signed payload is for another digest: " + elsewhere},
		{name: "MessageSignatureForAnotherDigest", root: virtual.Parts{CA: vs, Log: vs, TSA: vs}, identity: exact,
			bundle: func() ([]byte, error) {
				return vs.MessageBundle(ghSubject, ghIssuer, []byte("another image"), virtual.Options{})
			}, wantErr: "signed payload is for another digest: " + elsewhere},
		{name: "LegacySignatureForAnotherDigest", root: virtual.Parts{CA: vs, Log: vs, TSA: vs}, identity: exact,
			legacy: func() (sign.Signature, error) {
				return vs.CosignSignature(ghSubject, ghIssuer, sign.Payload("lab/app", elsewhere), virtual.Options{})
			}, wantErr: "signed payload is for another digest: " + elsewhere},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st := tt.time
			st.RequireTlog = st.RequireTlog || tt.requireTlog
			k, err := verify.NewKeyless([]*verify.TrustedRoot{mustRoot(t, tt.root)}, tt.identity, st)
			if err != nil {
				t.Fatal(err)
			}
			var s *verify.Signed
			if tt.legacy != nil {
				sig, err := tt.legacy()
				if err != nil {
					t.Fatal(err)
				}
				s, err = verify.ParseCosignSignature(sig.Payload, sig.Sig, sig.Certificate, sig.RekorBundle, nil)
				if err != nil {
					t.Fatal(err)
				}
			} else {
				raw, err := tt.bundle()
				if err != nil {
					t.Fatal(err)
				}
				if s, err = verify.ParseBundle(raw); err != nil {
					t.Fatal(err)
				}
			}
			res, err := k.Verify(s, image)
			var ce *verify.CheckError
			switch {
			case tt.wantCheck != "":
				if !errors.As(err, &ce) || ce.Check != tt.wantCheck {
					t.Fatalf("err = %v, want check %q", err, tt.wantCheck)
				}
				t.Log(err)
			case tt.wantErr != "":
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
			case err != nil:
				t.Fatalf("verification failed: %v", err)
			default:
				if res.Issuer != ghIssuer || res.Subject == "" {
					t.Errorf("result names issuer %q subject %q", res.Issuer, res.Subject)
				}
				if tt.wantLog != (res.LogIndex >= 0) || res.SignedAt.IsZero() {
					t.Errorf("result: log index %d, signed at %s (%s)", res.LogIndex, res.SignedAt, res.TimeSource)
				}
			}
		})
	}
}

func TestParseTrustedRootRejects(t *testing.T) {
	for name, raw := range map[string]string{
		"NotJSON":       "not json",
		"EmptyRoot":     `{"mediaType": "application/vnd.dev.sigstore.trustedroot+json;version=0.1"}`,
		"WrongKindJSON": `{"mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json"}`,
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := verify.ParseTrustedRoot([]byte(raw)); err == nil {
				t.Fatal("accepted")
			}
		})
	}
}

func TestWithdrawnTrustRootsJudgeNothing(t *testing.T) {
	vs, other := newSigstore(t), newSigstore(t)
	image := digestOf("image")
	raw, err := vs.DSSEBundle(ghSubject, ghIssuer, virtual.CosignStatement(image), virtual.Options{})
	if err != nil {
		t.Fatal(err)
	}
	s, err := verify.ParseBundle(raw)
	if err != nil {
		t.Fatal(err)
	}
	issuing := mustRoot(t, virtual.Parts{CA: vs, Log: vs, TSA: vs}).WithOrigin("public-good", 142)
	foreign := mustRoot(t, virtual.Parts{CA: other, Log: other, TSA: other}).WithOrigin("github", 7)
	expired := "trust root public-good: its TUF metadata (timestamp.json, version 142) expired at 2026-12-08T00:00:00Z and verifies nothing"
	for _, tt := range []struct {
		name  string
		roots []*verify.TrustedRoot
		// wantRoot is the root that judged it; wantErr, else, the error.
		wantRoot    string
		wantErr     string
		undecidable bool
	}{
		{"the issuing root judges, and the result names it", []*verify.TrustedRoot{foreign, issuing}, "public-good", "", false},
		{"the issuing root withdrawn: undecided, naming why", []*verify.TrustedRoot{issuing.Withdraw(expired)}, "", expired, true},
		{"the issuing root withdrawn beside another: still undecided", []*verify.TrustedRoot{foreign, issuing.Withdraw(expired)}, "", "chains to no usable trusted root", true},
		{"a root not loaded verifies nothing", []*verify.TrustedRoot{verify.UnavailableRoot("trust root lab is not loaded (no cache)")}, "", "not loaded", true},
		{"another root withdrawn, the issuing one usable: verified", []*verify.TrustedRoot{foreign.Withdraw("expired"), issuing}, "public-good", "", false},
		{"only a foreign root: a denial, not undecided", []*verify.TrustedRoot{foreign}, "", "does not chain", false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			k, err := verify.NewKeyless(tt.roots, verify.Identity{Issuer: ghIssuer, Subject: ghSubject}, verify.SigningTime{RequireTlog: true})
			if err != nil {
				t.Fatal(err)
			}
			res, err := k.Verify(s, image)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				if res.Root.Name != tt.wantRoot || res.Root.Version != 142 || !strings.HasPrefix(res.Root.Digest, "sha256:") {
					t.Errorf("judged by %+v, want %s version 142", res.Root, tt.wantRoot)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) || errors.Is(err, verify.ErrTrustRootUnavailable) != tt.undecidable {
				t.Errorf("error %v (undecided: %v), want %q (undecided: %v)", err, errors.Is(err, verify.ErrTrustRootUnavailable), tt.wantErr, tt.undecidable)
			}
		})
	}
}
