// Package clients says who pulls and what they may pull: it authenticates
// a request (an htpasswd user and bcrypt password, a bearer JWT of a
// configured issuer verified with go-oidc, a verified mTLS client
// certificate) into a principal, and grants a principal the images the
// access list gives it, and anyone the anonymous images. It caches a
// verified credential by its hash until it expires, so that a pull with a
// credential seen before costs no cryptography, and makes failed attempts
// cost their client. It renders no HTTP error: the edge does.
package clients

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	lru "github.com/hashicorp/golang-lru/v2"
	"golang.org/x/crypto/bcrypt"

	"github.com/authz-proxy/authz-proxy/internal/config"
	"github.com/authz-proxy/authz-proxy/internal/pattern"
)

// ErrUnauthenticated is wrapped by the error of a credential that does not
// authenticate: the edge answers 401.
var ErrUnauthenticated = errors.New("the credential does not authenticate")

// Principal is who a request authenticated as.
type Principal struct {
	// Name is "user:<name>" (htpasswd), "<issuer name>:<sub>" (a token),
	// or "cert:<first URI SAN, else CN>" (mTLS).
	Name string
	// Claims are a token's claims; nil for other credentials.
	Claims map[string]any
	// ClaimsDigest is the SHA-256 of Claims as JSON (keys sorted), "" for
	// other credentials: what an outcome that depends on the claims is
	// cached under.
	ClaimsDigest string
	// Expires is when the credential stops authenticating (a token's
	// exp); zero for a password or a certificate.
	Expires time.Time
}

// Clients authenticates and authorizes the clients of one configuration.
// Safe for concurrent use.
type Clients struct {
	users        map[string][]byte // bcrypt hashes by user name
	issuers      map[string]*issuer
	certificates bool
	anonymous    []pattern.Pattern
	access       []grant
	now          func() time.Time

	// verified caches principals by the hash of the credential that
	// proved them, until the credential expires (passwordTTL at most).
	verified *lru.Cache[[32]byte, *Principal]
	// failures count each client's failed attempts lately.
	mu       sync.Mutex
	failures *lru.Cache[string, failure]
}

// passwordTTL bounds how long a verified password is cached: a user
// removed from the htpasswd file (a reload) stops at once, a password
// changed in place within this.
const passwordTTL = 5 * time.Minute

type issuer struct {
	name      string
	audiences []string
	verifier  *oidc.IDTokenVerifier
}

type grant struct {
	principals []string
	images     []pattern.Pattern
}

type failure struct {
	n    int
	last time.Time
}

// Options are what Compile needs besides the configuration.
type Options struct {
	// HTTPClient fetches the key sets of jwksURL issuers; nil: a client
	// with a 10 s timeout.
	HTTPClient *http.Client
	// Now is the clock of token expiry; nil: time.Now.
	Now func() time.Time
}

// Compile reads the clients section of c and the files it names; nil and
// no error when c has none (anyone may pull).
func Compile(ctx context.Context, c *config.Config, o Options) (*Clients, error) {
	cl := c.Clients
	if cl == nil {
		return nil, nil
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.HTTPClient == nil {
		o.HTTPClient = &http.Client{Timeout: 10 * time.Second}
	}
	verified, _ := lru.New[[32]byte, *Principal](1 << 14)
	failures, _ := lru.New[string, failure](1 << 14)
	out := &Clients{users: map[string][]byte{}, issuers: map[string]*issuer{}, certificates: cl.Certificates, now: o.Now, verified: verified, failures: failures}
	if cl.Htpasswd != "" {
		users, err := readHtpasswd(c.Path(cl.Htpasswd))
		if err != nil {
			return nil, c.Errorf([]any{"clients", "htpasswd"}, "%v", err)
		}
		out.users = users
	}
	for i, t := range cl.Tokens {
		var keys oidc.KeySet
		if t.JWKSFile != "" {
			set, err := readJWKS(c.Path(t.JWKSFile))
			if err != nil {
				return nil, c.Errorf([]any{"clients", "tokens", i, "jwksFile"}, "%v", err)
			}
			keys = set
		} else {
			keys = oidc.NewRemoteKeySet(oidc.ClientContext(context.WithoutCancel(ctx), o.HTTPClient), t.JWKSURL)
		}
		v := oidc.NewVerifier(t.Issuer, keys, &oidc.Config{SkipClientIDCheck: true, Now: o.Now,
			SupportedSigningAlgs: []string{oidc.RS256, oidc.RS384, oidc.RS512, oidc.ES256, oidc.ES384, oidc.ES512, oidc.PS256, oidc.EdDSA}})
		out.issuers[t.Issuer] = &issuer{name: t.Name, audiences: t.Audiences, verifier: v}
	}
	for _, a := range cl.Anonymous {
		p, err := pattern.Parse(a)
		if err != nil {
			return nil, err // validated
		}
		out.anonymous = append(out.anonymous, p)
	}
	for _, a := range cl.Access {
		g := grant{principals: a.Principals}
		for _, img := range a.Images {
			p, err := pattern.Parse(img)
			if err != nil {
				return nil, err
			}
			g.images = append(g.images, p)
		}
		out.access = append(out.access, g)
	}
	return out, nil
}

// Authenticate returns who r authenticated as: nil and no error when it
// offers no credential; an error wrapping ErrUnauthenticated when it
// offers one that does not authenticate. An Authorization header decides
// when there is one (Basic: an htpasswd user and password, or any user
// and a token as the password, as credential helpers hand it over;
// Bearer: a token); else a verified client certificate, when
// certificates are accepted.
func (c *Clients) Authenticate(ctx context.Context, r *http.Request) (*Principal, error) {
	h := r.Header.Get("Authorization")
	if h == "" {
		if c.certificates && r.TLS != nil && len(r.TLS.VerifiedChains) > 0 {
			if name := CertificateName(r.TLS.VerifiedChains[0][0]); name != "" {
				return &Principal{Name: "cert:" + name}, nil
			}
		}
		return nil, nil
	}
	key := sha256.Sum256([]byte(h))
	if p, ok := c.verified.Get(key); ok {
		if p.Expires.IsZero() || c.now().Before(p.Expires) {
			return p, nil
		}
		c.verified.Remove(key)
	}
	p, err := c.authenticate(ctx, h)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrUnauthenticated, err)
	}
	cached := *p
	if cached.Expires.IsZero() {
		cached.Expires = c.now().Add(passwordTTL)
	}
	c.verified.Add(key, &cached)
	return p, nil
}

func (c *Clients) authenticate(ctx context.Context, h string) (*Principal, error) {
	scheme, cred, _ := strings.Cut(h, " ")
	cred = strings.TrimSpace(cred)
	switch {
	case strings.EqualFold(scheme, "Bearer"):
		return c.token(ctx, cred)
	case strings.EqualFold(scheme, "Basic"):
		raw, err := base64.StdEncoding.DecodeString(cred)
		if err != nil {
			return nil, errors.New("a Basic credential that is not base64")
		}
		user, pass, ok := strings.Cut(string(raw), ":")
		if !ok {
			return nil, errors.New("a Basic credential without user:password")
		}
		if looksLikeJWT(pass) {
			return c.token(ctx, pass)
		}
		return c.password(user, pass)
	}
	return nil, fmt.Errorf("the %q authorization scheme (want Basic or Bearer)", scheme)
}

// dummyHash is what an unknown user's password is compared with, so that
// a wrong user name costs what a wrong password does.
var dummyHash, _ = bcrypt.GenerateFromPassword([]byte("authz-proxy: no such user"), bcrypt.DefaultCost)

func (c *Clients) password(user, pass string) (*Principal, error) {
	hash, known := c.users[user]
	if !known {
		hash = dummyHash
	}
	if err := bcrypt.CompareHashAndPassword(hash, []byte(pass)); err != nil || !known {
		return nil, errors.New("wrong user name or password")
	}
	return &Principal{Name: "user:" + user}, nil
}

// looksLikeJWT reports whether s has a JWT's three dot-separated parts.
func looksLikeJWT(s string) bool {
	return strings.Count(s, ".") == 2 && !strings.ContainsAny(s, " :")
}

func (c *Clients) token(ctx context.Context, raw string) (*Principal, error) {
	iss, err := unverifiedIssuer(raw)
	if err != nil {
		return nil, err
	}
	is := c.issuers[iss]
	if is == nil {
		return nil, fmt.Errorf("a token of issuer %q, which is not one of clients.tokens", iss)
	}
	t, err := is.verifier.Verify(ctx, raw)
	if err != nil {
		return nil, fmt.Errorf("a token of %s: %v", is.name, err)
	}
	if !audienceMatches(t.Audience, is.audiences) {
		return nil, fmt.Errorf("a token of %s for audience %q, not %q", is.name, t.Audience, is.audiences)
	}
	if t.Subject == "" {
		return nil, fmt.Errorf("a token of %s without sub", is.name)
	}
	var claims map[string]any
	if err := t.Claims(&claims); err != nil {
		return nil, fmt.Errorf("a token of %s: %v", is.name, err)
	}
	canonical, err := json.Marshal(claims)
	if err != nil {
		return nil, fmt.Errorf("a token of %s: %v", is.name, err)
	}
	sum := sha256.Sum256(canonical)
	return &Principal{Name: is.name + ":" + t.Subject, Claims: claims, ClaimsDigest: hex.EncodeToString(sum[:]), Expires: t.Expiry}, nil
}

func audienceMatches(got, want []string) bool {
	for _, g := range got {
		for _, w := range want {
			if subtle.ConstantTimeCompare([]byte(g), []byte(w)) == 1 {
				return true
			}
		}
	}
	return false
}

// unverifiedIssuer reads the iss claim of a JWT, to pick the issuer that
// verifies it; nothing else is read before the signature is.
func unverifiedIssuer(raw string) (string, error) {
	parts := strings.Split(raw, ".")
	if len(parts) != 3 {
		return "", errors.New("a token that is not a JWT")
	}
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return "", errors.New("a token whose payload is not base64url")
	}
	var claims struct {
		Issuer string `json:"iss"`
	}
	if err := json.Unmarshal(payload, &claims); err != nil || claims.Issuer == "" {
		return "", errors.New("a token without an iss claim")
	}
	return claims.Issuer, nil
}

// CertificateName names a client certificate's holder: its first URI
// subject alternative name (a SPIFFE ID), else its common name.
func CertificateName(cert *x509.Certificate) string {
	if len(cert.URIs) > 0 {
		return cert.URIs[0].String()
	}
	return cert.Subject.CommonName
}

// MayPull reports whether p (nil: anonymous) may pull from image, the
// repository "<upstream>/<repository>": an anonymous image anyone may,
// another one a principal an access entry grants it to.
func (c *Clients) MayPull(p *Principal, image string) bool {
	img := pattern.Image{Name: image}
	for _, a := range c.anonymous {
		if a.Match(img) {
			return true
		}
	}
	if p == nil {
		return false
	}
	for _, g := range c.access {
		if !matchesAny(g.principals, p.Name) {
			continue
		}
		for _, pat := range g.images {
			if pat.Match(img) {
				return true
			}
		}
	}
	return false
}

func matchesAny(globs []string, name string) bool {
	for _, g := range globs {
		if pattern.Wildcard(g, name) {
			return true
		}
	}
	return false
}

// FailureDelay counts a failed attempt of client (its address) and
// returns how long to wait before answering it: 100 ms doubling with each
// failure within a minute, up to 2 s.
func (c *Clients) FailureDelay(client string) time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.now()
	f, _ := c.failures.Get(client)
	if now.Sub(f.last) > time.Minute {
		f.n = 0
	}
	f.n++
	f.last = now
	c.failures.Add(client, f)
	return min(100*time.Millisecond<<min(f.n-1, 5), 2*time.Second)
}
