package testkit

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
)

// Issuer issues JWTs as an OIDC issuer does (a Kubernetes API server,
// GitHub Actions), with keys it can rotate. Safe for concurrent use.
type Issuer struct {
	// URL is the iss claim of its tokens.
	URL string
	alg jose.SignatureAlgorithm

	mu   sync.Mutex
	keys []issuerKey // the newest signs; all are published
	n    int
}

type issuerKey struct {
	kid  string
	priv crypto.Signer
}

// NewIssuer returns an issuer of tokens signed with alg (RS256 or ES256).
func NewIssuer(t testing.TB, url string, alg jose.SignatureAlgorithm) *Issuer {
	t.Helper()
	is := &Issuer{URL: url, alg: alg}
	is.Rotate(t)
	return is
}

// Rotate makes a new key the signing key; the old ones stay published
// unless drop.
func (is *Issuer) Rotate(t testing.TB) {
	t.Helper()
	var priv crypto.Signer
	var err error
	switch is.alg {
	case jose.ES256:
		priv, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	default:
		priv, err = rsa.GenerateKey(rand.Reader, 2048)
	}
	if err != nil {
		t.Fatal(err)
	}
	is.mu.Lock()
	defer is.mu.Unlock()
	is.n++
	is.keys = append(is.keys, issuerKey{kid: fmt.Sprintf("key-%d", is.n), priv: priv})
}

// DropOldKeys stops publishing every key but the newest.
func (is *Issuer) DropOldKeys() {
	is.mu.Lock()
	defer is.mu.Unlock()
	is.keys = is.keys[len(is.keys)-1:]
}

// JWKS is the JSON Web Key Set of the published keys.
func (is *Issuer) JWKS(t testing.TB) string {
	t.Helper()
	is.mu.Lock()
	defer is.mu.Unlock()
	var set jose.JSONWebKeySet
	for _, k := range is.keys {
		set.Keys = append(set.Keys, jose.JSONWebKey{Key: k.priv.Public(), KeyID: k.kid, Algorithm: string(is.alg), Use: "sig"})
	}
	b, err := json.Marshal(set)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// Token signs a token for sub and aud, valid from nbf to exp, with more
// claims; zero times are left out.
func (is *Issuer) Token(t testing.TB, sub, aud string, nbf, exp time.Time, more map[string]any) string {
	t.Helper()
	claims := map[string]any{"iss": is.URL, "sub": sub, "aud": aud, "iat": time.Now().Unix()}
	if !nbf.IsZero() {
		claims["nbf"] = nbf.Unix()
	}
	if !exp.IsZero() {
		claims["exp"] = exp.Unix()
	}
	for k, v := range more {
		claims[k] = v
	}
	return is.sign(t, claims)
}

// TokenWithUnknownKey is Token signed by a key the issuer never published.
func (is *Issuer) TokenWithUnknownKey(t testing.TB, sub, aud string, exp time.Time) string {
	t.Helper()
	stranger := &Issuer{URL: is.URL, alg: is.alg}
	stranger.Rotate(t)
	stranger.keys[0].kid = "never-published"
	return stranger.Token(t, sub, aud, time.Time{}, exp, nil)
}

func (is *Issuer) sign(t testing.TB, claims map[string]any) string {
	t.Helper()
	is.mu.Lock()
	k := is.keys[len(is.keys)-1]
	is.mu.Unlock()
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: is.alg, Key: k.priv}, (&jose.SignerOptions{}).WithType("JWT").WithHeader("kid", k.kid))
	if err != nil {
		t.Fatal(err)
	}
	payload, err := json.Marshal(claims)
	if err != nil {
		t.Fatal(err)
	}
	jws, err := signer.Sign(payload)
	if err != nil {
		t.Fatal(err)
	}
	out, err := jws.CompactSerialize()
	if err != nil {
		t.Fatal(err)
	}
	return out
}
