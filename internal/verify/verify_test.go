package verify_test

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"errors"
	"strings"
	"testing"

	"github.com/sigstore/sigstore/pkg/cryptoutils"
	"github.com/sigstore/sigstore/pkg/signature"

	"github.com/authz-proxy/authz-proxy/internal/sign"
	"github.com/authz-proxy/authz-proxy/internal/verify"
)

const digest = "sha256:4c1c5b9a5cbd48d1e3d0fbaa6e9a3e1f1a40e5dcbc20ff7a4f0e8e6c5f3a2b1c"

type keyPair struct {
	name   string
	priv   crypto.Signer
	hash   crypto.Hash
	signer func(crypto.Signer, crypto.Hash) (signature.Signer, error)
}

func keyPairs(t *testing.T) []keyPair {
	t.Helper()
	p256, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	p521, _ := ecdsa.GenerateKey(elliptic.P521(), rand.Reader)
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	_, edKey, _ := ed25519.GenerateKey(rand.Reader)
	load := func(k crypto.Signer, h crypto.Hash) (signature.Signer, error) { return signature.LoadSigner(k, h) }
	return []keyPair{
		{"ECDSA P-256", p256, crypto.SHA256, load},
		{"ECDSA P-384 with SHA-256 (cosign)", p384, crypto.SHA256, load},
		{"ECDSA P-384 with SHA-384", p384, crypto.SHA384, load},
		{"ECDSA P-521 with SHA-512", p521, crypto.SHA512, load},
		{"RSA-2048 PKCS#1 v1.5", rsaKey, crypto.SHA256, load},
		{"Ed25519", edKey, crypto.Hash(0), load},
	}
}

func parse(t testing.TB, priv crypto.Signer) *verify.PublicKey {
	t.Helper()
	pem, err := cryptoutils.MarshalPublicKeyToPEM(priv.Public())
	if err != nil {
		t.Fatal(err)
	}
	k, err := verify.ParsePublicKey(pem)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestSignaturesVerifyForEverySupportedKeyType(t *testing.T) {
	for _, kp := range keyPairs(t) {
		t.Run(kp.name, func(t *testing.T) {
			s, err := kp.signer(kp.priv, kp.hash)
			if err != nil {
				t.Fatal(err)
			}
			payload := sign.Payload("registry.example/app", digest)
			sig, err := s.SignMessage(strings.NewReader(string(payload)))
			if err != nil {
				t.Fatal(err)
			}
			key := parse(t, kp.priv)
			if err := verify.SimpleSigningSignature(key, payload, sig, digest); err != nil {
				t.Fatalf("valid signature rejected: %v", err)
			}
			if !strings.HasPrefix(key.ID, "sha256:") || len(key.ID) != 71 {
				t.Errorf("key ID %q", key.ID)
			}
		})
	}
}

func TestSimpleSigningSignatureRejects(t *testing.T) {
	priv, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	s, _ := signature.LoadSigner(priv, crypto.SHA256)
	signPayload := func(p []byte) []byte {
		sig, err := s.SignMessage(strings.NewReader(string(p)))
		if err != nil {
			t.Fatal(err)
		}
		return sig
	}
	good := sign.Payload("r/app", digest)
	otherDigest := sign.Payload("r/app", "sha256:"+strings.Repeat("b", 64))
	notCosign := []byte(`{"critical":{"identity":{"docker-reference":"r"},"image":{"docker-manifest-digest":"` + digest + `"},"type":"something else"}}`)
	tests := []struct {
		name    string
		key     *verify.PublicKey
		payload []byte
		sig     []byte
		check   func(error) bool
	}{
		{"signature by another key", parse(t, other), good, signPayload(good), func(err error) bool { return errors.Is(err, verify.ErrBadSignature) }},
		{"payload altered after signing", parse(t, priv), append([]byte(" "), good...), signPayload(good), func(err error) bool { return errors.Is(err, verify.ErrBadSignature) }},
		{"empty signature", parse(t, priv), good, nil, func(err error) bool { return errors.Is(err, verify.ErrBadSignature) }},
		{"genuine signature over another digest", parse(t, priv), otherDigest, signPayload(otherDigest), func(err error) bool {
			var m *verify.DigestMismatchError
			return errors.As(err, &m) && m.Signed == "sha256:"+strings.Repeat("b", 64)
		}},
		{"signed payload of another type", parse(t, priv), notCosign, signPayload(notCosign), func(err error) bool { return errors.Is(err, verify.ErrMalformedPayload) }},
		{"signed payload that is not JSON", parse(t, priv), []byte("hello"), signPayload([]byte("hello")), func(err error) bool { return errors.Is(err, verify.ErrMalformedPayload) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := verify.SimpleSigningSignature(tt.key, tt.payload, tt.sig, digest)
			if err == nil || !tt.check(err) {
				t.Fatalf("got %v", err)
			}
		})
	}
}

func TestParsePublicKeyRejects(t *testing.T) {
	small, _ := rsa.GenerateKey(rand.Reader, 1024)
	smallPEM, _ := cryptoutils.MarshalPublicKeyToPEM(small.Public())
	p224, _ := ecdsa.GenerateKey(elliptic.P224(), rand.Reader)
	p224PEM, _ := cryptoutils.MarshalPublicKeyToPEM(p224.Public())
	for name, pem := range map[string][]byte{
		"not PEM":             []byte("ssh-ed25519 AAAA"),
		"a private key":       []byte("-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEIB\n-----END EC PRIVATE KEY-----\n"),
		"RSA under 2048 bits": smallPEM,
		"curve P-224":         p224PEM,
		"empty":               nil,
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := verify.ParsePublicKey(pem); err == nil {
				t.Fatal("accepted")
			}
		})
	}
}

func FuzzParseSimpleSigning(f *testing.F) {
	f.Add(sign.Payload("r/app", digest))
	f.Add([]byte(`{"critical":{"image":{"docker-manifest-digest":1}}}`))
	f.Add([]byte(`{"critical":null,"optional":{"a":[[[[[]]]]]}}`))
	f.Fuzz(func(t *testing.T, payload []byte) {
		s, err := verify.ParseSimpleSigning(payload)
		if err == nil && (s.Critical.Type != verify.SimpleSigningType || s.Critical.Image.DockerManifestDigest == "") {
			t.Fatalf("accepted a payload without type or digest: %q", payload)
		}
		if err != nil && !errors.Is(err, verify.ErrMalformedPayload) {
			t.Fatalf("error is not ErrMalformedPayload: %v", err)
		}
	})
}

func BenchmarkSimpleSigningSignatureP256(b *testing.B) {
	priv, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	s, _ := signature.LoadSigner(priv, crypto.SHA256)
	payload := sign.Payload("ghcr.io/acme/app", digest)
	sig, _ := s.SignMessage(strings.NewReader(string(payload)))
	pem, _ := cryptoutils.MarshalPublicKeyToPEM(priv.Public())
	key, _ := verify.ParsePublicKey(pem)
	b.ReportAllocs()
	for b.Loop() {
		if err := verify.SimpleSigningSignature(key, payload, sig, digest); err != nil {
			b.Fatal(err)
		}
	}
}

func TestASignatureVerifiedBeforeIsKnownAndNothingElseIs(t *testing.T) {
	priv, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	s, _ := signature.LoadSigner(priv, crypto.SHA256)
	good := sign.Payload("r/app", digest)
	sig, err := s.SignMessage(strings.NewReader(string(good)))
	if err != nil {
		t.Fatal(err)
	}
	otherSig, err := s.SignMessage(strings.NewReader(string(sign.Payload("r/other", digest))))
	if err != nil {
		t.Fatal(err)
	}
	key := parse(t, priv)
	for i := range 2 {
		if err := key.Verify(sig, good); err != nil {
			t.Fatalf("verification %d of a valid signature: %v", i+1, err)
		}
	}
	// Once the key has verified sig over good, the same bytes rearranged
	// are still checked in full.
	for _, tt := range []struct {
		name         string
		key          *verify.PublicKey
		sig, message []byte
	}{
		{"the message altered", key, sig, append(bytes.Clone(good), ' ')},
		{"the signature of another message", key, otherSig, good},
		{"a byte moved from the signature to the message", key, sig[:len(sig)-1], append([]byte{sig[len(sig)-1]}, good...)},
		{"another key", parse(t, other), sig, good},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.key.Verify(tt.sig, tt.message); !errors.Is(err, verify.ErrBadSignature) {
				t.Errorf("got %v, want ErrBadSignature", err)
			}
		})
	}
}

// BenchmarkKeySignature measures an ECDSA P-256 cosign signature verified
// for the first time, and again (one signature over several digests, an
// index's children): then it costs a hash.
func BenchmarkKeySignature(b *testing.B) {
	priv, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	s, _ := signature.LoadSigner(priv, crypto.SHA256)
	payload := sign.Payload("r/app", digest)
	sig, _ := s.SignMessage(strings.NewReader(string(payload)))
	b.Run("first time", func(b *testing.B) {
		for b.Loop() {
			b.StopTimer()
			key := parse(b, priv)
			b.StartTimer()
			if err := key.Verify(sig, payload); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("verified before", func(b *testing.B) {
		key := parse(b, priv)
		if err := key.Verify(sig, payload); err != nil {
			b.Fatal(err)
		}
		for b.Loop() {
			if err := key.Verify(sig, payload); err != nil {
				b.Fatal(err)
			}
		}
	})
}
