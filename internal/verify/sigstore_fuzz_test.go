package verify_test

import (
	"errors"
	"testing"

	"github.com/authz-proxy/authz-proxy/internal/sign"
	"github.com/authz-proxy/authz-proxy/internal/sign/virtual"
	"github.com/authz-proxy/authz-proxy/internal/verify"
)

// fuzzSigstore is a virtual Sigstore, a keyless verifier trusting it, and
// seeds it signed.
func fuzzSigstore(f *testing.F) (*verify.Keyless, [][]byte, sign.Signature) {
	vs, err := virtual.New()
	if err != nil {
		f.Fatal(err)
	}
	raw, err := vs.TrustedRoot()
	if err != nil {
		f.Fatal(err)
	}
	r, err := verify.ParseTrustedRoot(raw)
	if err != nil {
		f.Fatal(err)
	}
	k, err := verify.NewKeyless([]*verify.TrustedRoot{r}, verify.Identity{Issuer: ghIssuer, Subject: ghSubject}, verify.SigningTime{})
	if err != nil {
		f.Fatal(err)
	}
	image := digestOf("image")
	dsse, err := vs.DSSEBundle(ghSubject, ghIssuer, virtual.CosignStatement(image), virtual.Options{})
	if err != nil {
		f.Fatal(err)
	}
	msg, err := vs.MessageBundle(ghSubject, ghIssuer, []byte("image"), virtual.Options{NoTimestamp: true})
	if err != nil {
		f.Fatal(err)
	}
	legacy, err := vs.CosignSignature(ghSubject, ghIssuer, sign.Payload("lab/app", image), virtual.Options{})
	if err != nil {
		f.Fatal(err)
	}
	return k, [][]byte{dsse, msg}, legacy
}

func FuzzParseBundle(f *testing.F) {
	k, seeds, _ := fuzzSigstore(f)
	for _, s := range seeds {
		f.Add(s)
	}
	f.Add([]byte(`{"mediaType":"application/vnd.dev.sigstore.bundle+json;version=0.1","verificationMaterial":{"publicKey":{"hint":"x"}},"messageSignature":{"messageDigest":{"algorithm":"SHA2_256","digest":"AA=="},"signature":"AA=="}}`))
	image, other := digestOf("image"), digestOf("another image")
	f.Fuzz(func(t *testing.T, raw []byte) {
		s, err := verify.ParseBundle(raw)
		if err != nil {
			if !errors.Is(err, verify.ErrMalformedAttestation) {
				t.Fatalf("error is not ErrMalformedAttestation: %v", err)
			}
			return
		}
		// The fuzzer cannot forge a signature: nothing verifies for a
		// digest that no seed signed.
		if _, err := k.Verify(s, other); err == nil {
			t.Fatalf("a bundle verified for a digest nobody signed: %q", raw)
		}
		_, _ = k.Verify(s, image)
	})
}

func FuzzParseCosignSignature(f *testing.F) {
	k, _, legacy := fuzzSigstore(f)
	f.Add(legacy.Payload, legacy.Sig, legacy.Certificate, legacy.RekorBundle, []byte(nil))
	f.Add(legacy.Payload, legacy.Sig, []byte("-----BEGIN CERTIFICATE-----\nAA==\n-----END CERTIFICATE-----\n"), []byte(`{"Payload":{"body":"e30="}}`), []byte(`{"SignedRFC3161Timestamp":"AA=="}`))
	other := digestOf("another image")
	f.Fuzz(func(t *testing.T, payload, sig, cert, rekor, ts []byte) {
		s, err := verify.ParseCosignSignature(payload, sig, cert, rekor, ts)
		if err != nil {
			if !errors.Is(err, verify.ErrMalformedPayload) {
				t.Fatalf("error is not ErrMalformedPayload: %v", err)
			}
			return
		}
		if _, err := k.Verify(s, other); err == nil {
			t.Fatalf("a signature verified for a digest nobody signed")
		}
	})
}

// FuzzParseTrustedRoot feeds the parser of trusted_root.json, which a TUF
// mirror serves (verified against targets, but written by whoever signs
// them) or a file holds, and what `trust status` reads of it: it must
// never panic.
func FuzzParseTrustedRoot(f *testing.F) {
	vs, err := virtual.New()
	if err != nil {
		f.Fatal(err)
	}
	raw, err := vs.TrustedRoot()
	if err != nil {
		f.Fatal(err)
	}
	f.Add(raw)
	f.Add([]byte(`{"mediaType":"application/vnd.dev.sigstore.trustedroot+json;version=0.1"}`))
	f.Add([]byte(`{"certificateAuthorities":[{"certChain":{"certificates":[]},"validFor":{"start":"2021-01-01T00:00:00Z"}}]}`))
	f.Fuzz(func(t *testing.T, raw []byte) {
		r, err := verify.ParseTrustedRoot(raw)
		if err != nil {
			return
		}
		s := r.Summary()
		if s.CertificateAuthorities+s.TransparencyLogs+s.TimestampAuthorities == 0 {
			t.Errorf("a root that trusts nothing parsed: %+v", s)
		}
	})
}
