package audit

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"hash"
)

// checkpointDomain prefixes what a checkpoint signature covers, so that a
// signature made for the decision log can never pass for one of anything
// else the same key might sign.
const checkpointDomain = "authz-proxy decision-log checkpoint v1\n"

// ParsePrivateKey reads the PEM private key that signs checkpoints:
// Ed25519 or ECDSA P-256, P-384 or P-521, as PKCS #8 ("PRIVATE KEY", what
// `openssl genpkey` writes) or SEC 1 ("EC PRIVATE KEY"), unencrypted.
func ParsePrivateKey(pemBytes []byte) (crypto.Signer, error) {
	block, _ := pem.Decode(pemBytes)
	if block == nil {
		return nil, errors.New("no PEM block found: want a PEM private key (Ed25519 or ECDSA)")
	}
	var key any
	var err error
	switch block.Type {
	case "PRIVATE KEY":
		key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
	case "EC PRIVATE KEY":
		key, err = x509.ParseECPrivateKey(block.Bytes)
	default:
		return nil, fmt.Errorf("PEM block %q: want an unencrypted PRIVATE KEY or EC PRIVATE KEY (Ed25519 or ECDSA)", block.Type)
	}
	if err != nil {
		return nil, err
	}
	switch k := key.(type) {
	case ed25519.PrivateKey:
		return k, nil
	case *ecdsa.PrivateKey:
		if _, err := curveHash(k.Curve); err != nil {
			return nil, err
		}
		return k, nil
	default:
		return nil, fmt.Errorf("a %T key: checkpoints are signed with Ed25519 or ECDSA", key)
	}
}

// ParsePublicKey reads a PEM public key ("PUBLIC KEY", PKIX) that verifies
// checkpoints: Ed25519 or ECDSA P-256, P-384 or P-521.
func ParsePublicKey(pemBytes []byte) (crypto.PublicKey, error) {
	block, _ := pem.Decode(pemBytes)
	if block == nil || block.Type != "PUBLIC KEY" {
		return nil, errors.New("no PEM PUBLIC KEY block found")
	}
	key, err := x509.ParsePKIXPublicKey(block.Bytes)
	if err != nil {
		return nil, err
	}
	switch k := key.(type) {
	case ed25519.PublicKey:
		return k, nil
	case *ecdsa.PublicKey:
		if _, err := curveHash(k.Curve); err != nil {
			return nil, err
		}
		return k, nil
	default:
		return nil, fmt.Errorf("a %T key: checkpoints are signed with Ed25519 or ECDSA", key)
	}
}

// KeyID names a public key as "sha256:<hex>" of its PKIX encoding, as the
// decision log names attestor keys.
func KeyID(pub crypto.PublicKey) (string, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256(der)
	return "sha256:" + hex.EncodeToString(sum[:]), nil
}

// curveHash is the hash an ECDSA signature over the curve uses: SHA-256,
// SHA-384 or SHA-512 for P-256, P-384 or P-521.
func curveHash(c elliptic.Curve) (func() hash.Hash, error) {
	switch c {
	case elliptic.P256():
		return sha256.New, nil
	case elliptic.P384():
		return sha512.New384, nil
	case elliptic.P521():
		return sha512.New, nil
	}
	return nil, fmt.Errorf("unsupported ECDSA curve %s: want P-256, P-384 or P-521", c.Params().Name)
}

// signCheckpoint signs body, a checkpoint line without its signature.
func signCheckpoint(key crypto.Signer, body []byte) ([]byte, error) {
	msg := append([]byte(checkpointDomain), body...)
	switch k := key.(type) {
	case ed25519.PrivateKey:
		return ed25519.Sign(k, msg), nil
	case *ecdsa.PrivateKey:
		newHash, err := curveHash(k.Curve)
		if err != nil {
			return nil, err
		}
		h := newHash()
		h.Write(msg)
		return ecdsa.SignASN1(rand.Reader, k, h.Sum(nil))
	}
	return nil, fmt.Errorf("a %T key cannot sign checkpoints", key)
}

// verifyCheckpoint reports whether sig is pub's signature over body.
func verifyCheckpoint(pub crypto.PublicKey, body, sig []byte) bool {
	msg := append([]byte(checkpointDomain), body...)
	switch k := pub.(type) {
	case ed25519.PublicKey:
		return ed25519.Verify(k, msg, sig)
	case *ecdsa.PublicKey:
		newHash, err := curveHash(k.Curve)
		if err != nil {
			return false
		}
		h := newHash()
		h.Write(msg)
		return ecdsa.VerifyASN1(k, h.Sum(nil), sig)
	}
	return false
}
