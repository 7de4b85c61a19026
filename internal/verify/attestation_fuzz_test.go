package verify_test

import (
	"errors"
	"testing"
	"time"

	"github.com/authz-proxy/authz-proxy/internal/oci"
	"github.com/authz-proxy/authz-proxy/internal/sign"
	"github.com/authz-proxy/authz-proxy/internal/sign/virtual"
	"github.com/authz-proxy/authz-proxy/internal/verify"
)

// FuzzParseCosignAttestation feeds the parser of the cosign `.att` tag's
// layers (a DSSE envelope with its certificate, Rekor bundle and timestamp
// annotations, all from the registry) what a hostile registry could store.
// Every refusal is ErrMalformedAttestation, what parses carries an in-toto
// statement with a predicate type and a subject, and nothing the fuzzer
// makes verifies for a digest that nobody attested.
func FuzzParseCosignAttestation(f *testing.F) {
	k, _, _ := fuzzSigstore(f)
	vs, err := virtual.New()
	if err != nil {
		f.Fatal(err)
	}
	image := digestOf("image")
	keyless, err := vs.CosignAttestation(ghSubject, ghIssuer, "https://slsa.dev/provenance/v1", virtual.CosignStatement(image), virtual.Options{})
	if err != nil {
		f.Fatal(err)
	}
	f.Add(keyless.Envelope, keyless.Certificate, keyless.RekorBundle, []byte(nil))
	f.Add(keyless.Envelope, []byte(nil), []byte(nil), []byte(nil))
	f.Add([]byte(`{"payloadType":"application/vnd.in-toto+json","payload":"e30=","signatures":[{"sig":"AA=="}]}`), []byte("-----BEGIN CERTIFICATE-----\nAA==\n-----END CERTIFICATE-----\n"), []byte(`{"Payload":{"body":"e30="}}`), []byte(`{"SignedRFC3161Timestamp":"AA=="}`))
	other := digestOf("another image")
	f.Fuzz(func(t *testing.T, envelope, cert, rekor, ts []byte) {
		s, err := verify.ParseCosignAttestation(envelope, cert, rekor, ts)
		if err != nil {
			if !errors.Is(err, verify.ErrMalformedAttestation) {
				t.Fatalf("error is not ErrMalformedAttestation: %v", err)
			}
			return
		}
		if s.Envelope == nil || s.Envelope.Statement.PredicateType == "" || len(s.Envelope.Statement.Subject) == 0 {
			t.Fatalf("accepted an attestation without a statement, predicate type or subject: %q", envelope)
		}
		if _, err := k.Verify(s, other); err == nil {
			t.Fatalf("an attestation verified for a digest nobody attested")
		}
	})
}

// FuzzParseNotation feeds the parser of Notary Project signature envelopes
// (JWS and COSE layers of a referrer, from the registry) what a hostile
// registry could store. Every refusal is ErrMalformedPayload; what parses
// names the key that signed it.
func FuzzParseNotation(f *testing.F) {
	w := newNotationWorld(f)
	now := time.Now()
	leaf, err := w.ca.Issue(virtual.Leaf{NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour)})
	if err != nil {
		f.Fatal(err)
	}
	for _, mt := range []string{oci.JWS, oci.COSE} {
		env, err := sign.Notation(leaf.Key, leaf.Chain(), w.target, sign.NotationOptions{MediaType: mt})
		if err != nil {
			f.Fatal(err)
		}
		f.Add(mt, env)
	}
	f.Add(oci.JWS, []byte(`{"payload":"e30","protected":"e30","header":{"x5c":[]},"signature":"AA"}`))
	f.Fuzz(func(t *testing.T, mediaType string, raw []byte) {
		s, err := verify.ParseNotation(mediaType, raw)
		if err != nil {
			if !errors.Is(err, verify.ErrMalformedPayload) {
				t.Fatalf("error is not ErrMalformedPayload: %v", err)
			}
			return
		}
		if id := s.KeyID(); len(id) != len("sha256:")+64 {
			t.Fatalf("a parsed signature names its key %q", id)
		}
	})
}
