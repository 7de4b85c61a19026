package verify_test

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/sigstore/sigstore/pkg/signature"

	"github.com/authz-proxy/authz-proxy/internal/oci"
	"github.com/authz-proxy/authz-proxy/internal/sign"
	"github.com/authz-proxy/authz-proxy/internal/verify"
)

const provenance = "https://slsa.dev/provenance/v1"

func attest(t *testing.T, s signature.Signer, statementType, subject string) sign.Attestation {
	t.Helper()
	st, err := sign.Statement(statementType, "registry.example/app", subject, provenance, map[string]any{"buildDefinition": map[string]any{"buildType": "https://example/build"}})
	if err != nil {
		t.Fatal(err)
	}
	a, err := sign.Attest(s, provenance, st)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func TestAttestationsVerifyForEverySupportedKeyType(t *testing.T) {
	for _, kp := range keyPairs(t) {
		t.Run(kp.name, func(t *testing.T) {
			s, err := kp.signer(kp.priv, kp.hash)
			if err != nil {
				t.Fatal(err)
			}
			a := attest(t, s, oci.StatementV01, digest)
			env, err := verify.ParseEnvelope(oci.DSSE, a.Envelope)
			if err != nil {
				t.Fatal(err)
			}
			if err := env.Check(parse(t, kp.priv), digest); err != nil {
				t.Fatalf("valid attestation rejected: %v", err)
			}
			if env.Statement.PredicateType != provenance || !strings.Contains(string(env.Statement.Predicate), "https://example/build") {
				t.Errorf("statement %+v", env.Statement)
			}
		})
	}
}

func TestAttestationInSigstoreBundleVerifies(t *testing.T) {
	priv, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	s, _ := signature.LoadSigner(priv, crypto.SHA256)
	a := attest(t, s, oci.StatementV1, digest)
	b, err := sign.Bundle(a.Envelope, s)
	if err != nil {
		t.Fatal(err)
	}
	env, err := verify.ParseEnvelope(oci.BundleV03, b)
	if err != nil {
		t.Fatal(err)
	}
	if err := env.Check(parse(t, priv), digest); err != nil {
		t.Fatalf("valid bundle rejected: %v", err)
	}
	if env.Statement.Type != oci.StatementV1 {
		t.Errorf("statement type %q", env.Statement.Type)
	}
}

// envelope re-encodes a DSSE envelope after edit.
func envelope(t *testing.T, raw []byte, edit func(map[string]any)) []byte {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatal(err)
	}
	edit(m)
	b, _ := json.Marshal(m)
	return b
}

func TestAttestationRejects(t *testing.T) {
	priv, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	s, _ := signature.LoadSigner(priv, crypto.SHA256)
	good := attest(t, s, oci.StatementV01, digest).Envelope
	otherDigest := "sha256:" + strings.Repeat("b", 64)
	forOther := attest(t, s, oci.StatementV1, otherDigest).Envelope
	signedRaw := func(payloadType string, payload []byte) []byte {
		sig, err := s.SignMessage(strings.NewReader(string(verifyPAE(payloadType, payload))))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := json.Marshal(map[string]any{"payloadType": payloadType, "payload": base64.StdEncoding.EncodeToString(payload),
			"signatures": []any{map[string]string{"sig": base64.StdEncoding.EncodeToString(sig)}}})
		return b
	}
	isMalformed := func(err error) bool { return errors.Is(err, verify.ErrMalformedAttestation) }
	isBadSig := func(err error) bool { return errors.Is(err, verify.ErrBadSignature) }
	tests := []struct {
		name      string
		mediaType string
		raw       []byte
		key       *verify.PublicKey
		check     func(error) bool
	}{
		{"attestation signed by another key", oci.DSSE, good, parse(t, other), isBadSig},
		{"genuine attestation whose statement is for another digest", oci.DSSE, forOther, parse(t, priv), func(err error) bool {
			var m *verify.DigestMismatchError
			return errors.As(err, &m) && m.Signed == otherDigest
		}},
		{"payload swapped after signing", oci.DSSE, envelope(t, good, func(m map[string]any) {
			var o map[string]any
			_ = json.Unmarshal(forOther, &o)
			m["payload"] = o["payload"]
		}), parse(t, priv), isBadSig},
		{"signature over the payload without PAE", oci.DSSE, func() []byte {
			p, _ := sign.Statement(oci.StatementV1, "r", digest, provenance, nil)
			sig, _ := s.SignMessage(strings.NewReader(string(p)))
			return envelope(t, good, func(m map[string]any) {
				m["payload"] = base64.StdEncoding.EncodeToString(p)
				m["signatures"] = []any{map[string]string{"sig": base64.StdEncoding.EncodeToString(sig)}}
			})
		}(), parse(t, priv), isBadSig},
		{"payload type is not in-toto", oci.DSSE, signedRaw("application/json", []byte(`{}`)), parse(t, priv), isMalformed},
		{"statement of an unknown _type", oci.DSSE, signedRaw(oci.InToto, []byte(`{"_type":"https://in-toto.io/Statement/v9","predicateType":"p","subject":[{"digest":{"sha256":"a"}}]}`)), parse(t, priv), isMalformed},
		{"statement without subject", oci.DSSE, signedRaw(oci.InToto, []byte(`{"_type":"https://in-toto.io/Statement/v1","predicateType":"p","subject":[]}`)), parse(t, priv), isMalformed},
		{"statement without predicateType", oci.DSSE, signedRaw(oci.InToto, []byte(`{"_type":"https://in-toto.io/Statement/v1","subject":[{"digest":{"sha256":"a"}}]}`)), parse(t, priv), isMalformed},
		{"envelope without signatures", oci.DSSE, envelope(t, good, func(m map[string]any) { m["signatures"] = []any{} }), parse(t, priv), isMalformed},
		{"too many signatures", oci.DSSE, envelope(t, good, func(m map[string]any) {
			sigs := m["signatures"].([]any)
			for range verify.MaxEnvelopeSignatures {
				sigs = append(sigs, sigs[0])
			}
			m["signatures"] = sigs
		}), parse(t, priv), isMalformed},
		{"signature that is not base64", oci.DSSE, envelope(t, good, func(m map[string]any) { m["signatures"] = []any{map[string]string{"sig": "%%%"}} }), parse(t, priv), isMalformed},
		{"not JSON", oci.DSSE, []byte("hello"), parse(t, priv), isMalformed},
		{"bundle with a message signature, not a DSSE envelope", oci.BundleV03, []byte(`{"mediaType":"application/vnd.dev.sigstore.bundle.v0.3+json","messageSignature":{}}`), parse(t, priv), isMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env, err := verify.ParseEnvelope(tt.mediaType, tt.raw)
			if err == nil {
				err = env.Check(tt.key, digest)
			}
			if err == nil || !tt.check(err) {
				t.Fatalf("got %v", err)
			}
		})
	}
}

// verifyPAE is the DSSE pre-authentication encoding, written out from the
// specification to check the library's against.
func verifyPAE(payloadType string, payload []byte) []byte {
	return []byte("DSSEv1 " + itoa(len(payloadType)) + " " + payloadType + " " + itoa(len(payload)) + " " + string(payload))
}

func itoa(n int) string {
	b, _ := json.Marshal(n)
	return string(b)
}

func TestStatementCoversOnlyItsSubjects(t *testing.T) {
	st, err := verify.ParseStatement([]byte(`{"_type":"https://in-toto.io/Statement/v1","predicateType":"p","subject":[{"name":"a","digest":{"sha512":"ff"}},{"name":"b","digest":{"sha256":"AB"}}]}`))
	if err != nil {
		t.Fatal(err)
	}
	for d, want := range map[string]bool{"sha256:ab": true, "sha512:ff": true, "sha256:ff": false, "ab": false, "": false} {
		if got := st.Covers(d); got != want {
			t.Errorf("Covers(%q) = %v, want %v", d, got, want)
		}
	}
	if string(st.Predicate) != "null" {
		t.Errorf("missing predicate is %s, want null", st.Predicate)
	}
}

func FuzzParseEnvelope(f *testing.F) {
	priv, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	s, _ := signature.LoadSigner(priv, crypto.SHA256)
	st, _ := sign.Statement(oci.StatementV01, "r/app", digest, provenance, map[string]any{"a": []any{1, "b", nil}})
	a, _ := sign.Attest(s, provenance, st)
	b, _ := sign.Bundle(a.Envelope, s)
	f.Add(oci.DSSE, a.Envelope)
	f.Add(oci.BundleV03, b)
	f.Add(oci.DSSE, []byte(`{"payloadType":"application/vnd.in-toto+json","payload":"e30=","signatures":[{"sig":"AA=="}]}`))
	f.Add(oci.BundleV03, []byte(`{"dsseEnvelope":null}`))
	key := parse(f, priv)
	f.Fuzz(func(t *testing.T, mediaType string, raw []byte) {
		env, err := verify.ParseEnvelope(mediaType, raw)
		if err != nil {
			if !errors.Is(err, verify.ErrMalformedAttestation) {
				t.Fatalf("error is not ErrMalformedAttestation: %v", err)
			}
			return
		}
		st := env.Statement
		if st.PredicateType == "" || len(st.Subject) == 0 || len(st.Predicate) == 0 {
			t.Fatalf("accepted a statement without predicate type, subject or predicate: %q", raw)
		}
		// The fuzzer cannot forge a signature: whatever verifies under
		// key carries the statement that was signed.
		if env.Check(key, digest) == nil && (st.PredicateType != provenance || !st.Covers(digest)) {
			t.Fatalf("a statement that was never signed verified: %q", raw)
		}
	})
}

func TestEnvelopeSignedOverThePAEOfTheSpecificationVerifies(t *testing.T) {
	priv, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	s, _ := signature.LoadSigner(priv, crypto.SHA256)
	payload, _ := sign.Statement(oci.StatementV1, "r/app", digest, provenance, nil)
	sig, err := s.SignMessage(strings.NewReader(string(verifyPAE(oci.InToto, payload))))
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := json.Marshal(map[string]any{"payloadType": oci.InToto, "payload": base64.URLEncoding.EncodeToString(payload),
		"signatures": []any{map[string]string{"keyid": "", "sig": base64.StdEncoding.EncodeToString(sig)}}})
	env, err := verify.ParseEnvelope(oci.DSSE, raw)
	if err != nil {
		t.Fatal(err)
	}
	if err := env.Check(parse(t, priv), digest); err != nil {
		t.Fatalf("envelope over the specified PAE (URL-safe base64 payload) rejected: %v", err)
	}
}
