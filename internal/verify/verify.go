// Package verify does the cryptography of authz-proxy and nothing else: it
// parses attestor public keys, checks cosign signatures over simple-signing
// payloads, DSSE envelopes of in-toto statements (attestations), Sigstore
// bundles and keyless certificates, and Notary Project (notation) signature
// envelopes with notation-go's verifier. Callers hand it the bytes they
// fetched; it never touches the network, except for the online revocation
// checks (OCSP, CRL) that a notation attestor may opt into.
package verify

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"

	lru "github.com/hashicorp/golang-lru/v2"
	"github.com/sigstore/sigstore/pkg/cryptoutils"
	"github.com/sigstore/sigstore/pkg/signature"
)

// Errors that say why a signature does not count. Each is wrapped with
// detail; classify with errors.Is.
var (
	// ErrBadSignature: the signature does not verify under the key.
	ErrBadSignature = errors.New("signature does not verify")
	// ErrMalformedPayload: the signed payload is not a cosign simple-signing
	// payload.
	ErrMalformedPayload = errors.New("malformed signed payload")
)

// DigestMismatchError is a genuine signature over another image's digest.
type DigestMismatchError struct {
	// Signed is the digest the payload names.
	Signed string
}

func (e *DigestMismatchError) Error() string {
	return "signed payload is for another digest: " + e.Signed
}

// PublicKey is one parsed attestor key, ready to verify.
type PublicKey struct {
	// ID is "sha256:" and the hex SHA-256 of the key's DER encoding, as
	// shown in decision logs.
	ID        string
	pub       crypto.PublicKey
	verifiers []signature.Verifier
	// verified holds, by the SHA-256 of a signature and the message it
	// signs, the signatures this key verified: one signature judged again
	// (an attestation naming several digests, an index's children, a
	// restart of the outcome cache's entry) costs a hash, not a
	// verification. Failures are not kept.
	verified *lru.Cache[[sha256.Size]byte, struct{}]
}

// verifiedPerKey bounds the signatures kept as verified, per key.
const verifiedPerKey = 4096

// ParsePublicKey parses one PEM public key: ECDSA P-256/384/521, RSA of at
// least 2048 bits, or Ed25519.
func ParsePublicKey(pemBytes []byte) (*PublicKey, error) {
	pub, err := cryptoutils.UnmarshalPEMToPublicKey(bytes.TrimSpace(pemBytes))
	if err != nil {
		return nil, fmt.Errorf("not a PEM public key: %w", err)
	}
	// cosign hashes with SHA-256 whatever the key; sigstore's default
	// for larger curves is stronger. Either is accepted.
	var hashes []crypto.Hash
	var candidates []signature.Verifier
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		switch k.Curve {
		case elliptic.P256():
			hashes = []crypto.Hash{crypto.SHA256}
		case elliptic.P384():
			hashes = []crypto.Hash{crypto.SHA256, crypto.SHA384}
		case elliptic.P521():
			hashes = []crypto.Hash{crypto.SHA256, crypto.SHA512}
		default:
			return nil, fmt.Errorf("unsupported ECDSA curve %s", k.Curve.Params().Name)
		}
	case *rsa.PublicKey:
		if k.N.BitLen() < 2048 {
			return nil, fmt.Errorf("unsupported key: an RSA key of %d bits, want at least 2048", k.N.BitLen())
		}
		hashes = []crypto.Hash{crypto.SHA256}
	case ed25519.PublicKey:
		pure, err := signature.LoadED25519Verifier(k)
		if err != nil {
			return nil, err
		}
		ph, err := signature.LoadED25519phVerifier(k)
		if err != nil {
			return nil, err
		}
		candidates = []signature.Verifier{pure, ph}
	default:
		return nil, fmt.Errorf("unsupported key type %T", pub)
	}
	for _, h := range hashes {
		v, err := signature.LoadVerifier(pub, h)
		if err != nil {
			return nil, err
		}
		candidates = append(candidates, v)
	}
	der, err := cryptoutils.MarshalPublicKeyToDER(pub)
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256(der)
	verified, err := lru.New[[sha256.Size]byte, struct{}](verifiedPerKey)
	if err != nil {
		return nil, err
	}
	return &PublicKey{ID: "sha256:" + hex.EncodeToString(sum[:]), pub: pub, verifiers: candidates, verified: verified}, nil
}

// Verify checks sig over message; a signature this key verified before
// is known by the hash of both.
func (k *PublicKey) Verify(sig, message []byte) error {
	h := sha256.New()
	var n [8]byte
	binary.BigEndian.PutUint64(n[:], uint64(len(sig)))
	h.Write(n[:])
	h.Write(sig)
	h.Write(message)
	var seen [sha256.Size]byte
	h.Sum(seen[:0])
	if k.verified.Contains(seen) {
		return nil
	}
	for _, v := range k.verifiers {
		if v.VerifySignature(bytes.NewReader(sig), bytes.NewReader(message)) == nil {
			k.verified.Add(seen, struct{}{})
			return nil
		}
	}
	return ErrBadSignature
}

// SimpleSigningType is the critical.type of every cosign image signature.
const SimpleSigningType = "cosign container image signature"

// SimpleSigning is the payload that cosign signs for an image ("simple
// signing" format, media type application/vnd.dev.cosign.simplesigning.v1+json).
type SimpleSigning struct {
	Critical struct {
		Identity struct {
			DockerReference string `json:"docker-reference"`
		} `json:"identity"`
		Image struct {
			DockerManifestDigest string `json:"docker-manifest-digest"`
		} `json:"image"`
		Type string `json:"type"`
	} `json:"critical"`
	Optional map[string]any `json:"optional"`
}

// ParseSimpleSigning decodes a simple-signing payload. The caller bounds its
// size (limits.maxArtifactSize).
func ParseSimpleSigning(payload []byte) (*SimpleSigning, error) {
	var s SimpleSigning
	if err := json.Unmarshal(payload, &s); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformedPayload, err)
	}
	if s.Critical.Type != SimpleSigningType {
		return nil, fmt.Errorf("%w: type %q, want %q", ErrMalformedPayload, s.Critical.Type, SimpleSigningType)
	}
	if s.Critical.Image.DockerManifestDigest == "" {
		return nil, fmt.Errorf("%w: no critical.image.docker-manifest-digest", ErrMalformedPayload)
	}
	return &s, nil
}

// SimpleSigningSignature checks that sig is key's signature over payload and
// that payload is a cosign image signature for digest. The signature is
// checked first, so a *DigestMismatchError means a genuine signature of key
// that was made for another image.
func SimpleSigningSignature(key *PublicKey, payload, sig []byte, digest string) error {
	if err := key.Verify(sig, payload); err != nil {
		return err
	}
	s, err := ParseSimpleSigning(payload)
	if err != nil {
		return err
	}
	if got := s.Critical.Image.DockerManifestDigest; got != digest {
		return &DigestMismatchError{Signed: got}
	}
	return nil
}
