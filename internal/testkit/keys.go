package testkit

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"os"
	"testing"

	"github.com/sigstore/sigstore/pkg/cryptoutils"
	"github.com/sigstore/sigstore/pkg/signature"
)

// Key is an ECDSA P-256 key that signs with SHA-256, as `cosign
// generate-key-pair` makes them.
type Key struct {
	Private *ecdsa.PrivateKey
	Signer  signature.Signer
	// PublicPEM is the public key as an attestor's publicKeys file holds it.
	PublicPEM []byte
}

// NewKey makes a fresh key.
func NewKey(t testing.TB) *Key {
	t.Helper()
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	pem, err := cryptoutils.MarshalPublicKeyToPEM(priv.Public())
	if err != nil {
		t.Fatal(err)
	}
	s, err := signature.LoadSigner(priv, crypto.SHA256)
	if err != nil {
		t.Fatal(err)
	}
	return &Key{Private: priv, Signer: s, PublicPEM: pem}
}

// WritePublic writes the public key's PEM to path and returns path.
func (k *Key) WritePublic(t testing.TB, path string) string {
	t.Helper()
	return WriteFile(t, path, string(k.PublicPEM))
}

// NewSigner makes a fresh key, writes its public PEM to pubPath (the file
// an attestor names) and returns its signer.
func NewSigner(t testing.TB, pubPath string) signature.Signer {
	t.Helper()
	k := NewKey(t)
	k.WritePublic(t, pubPath)
	return k.Signer
}

// WriteFile writes text to path, readable by its owner only, and returns
// path.
func WriteFile(t testing.TB, path, text string) string {
	t.Helper()
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}
