package clients_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"golang.org/x/crypto/bcrypt"

	"github.com/authz-proxy/authz-proxy/internal/clients"
	"github.com/authz-proxy/authz-proxy/internal/testkit"
)

const (
	k8sIssuer = "https://kubernetes.default.svc.cluster.local"
	ghIssuer  = "https://token.actions.githubusercontent.com"
)

// world is a configuration with an htpasswd user ci (password "s3cret"),
// a Kubernetes issuer (RS256, keys in a file), a GitHub Actions issuer
// (ES256, keys served at a URL), certificates, an anonymous pattern and
// an access list.
type world struct {
	t       testing.TB
	k8s, gh *testkit.Issuer
	jwks    *httptest.Server
	c       *clients.Clients
	clock   *testkit.Clock
}

func newWorld(t testing.TB) *world {
	t.Helper()
	w := &world{t: t, k8s: testkit.NewIssuer(t, k8sIssuer, jose.RS256), gh: testkit.NewIssuer(t, ghIssuer, jose.ES256), clock: testkit.NewClock(time.Now())}
	w.jwks = httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, _ *http.Request) {
		rw.Header().Set("Content-Type", "application/json")
		_, _ = rw.Write([]byte(w.gh.JWKS(t)))
	}))
	t.Cleanup(w.jwks.Close)
	hash, err := bcrypt.GenerateFromPassword([]byte("s3cret"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	text := `
listen: {addr: 127.0.0.1:0, tls: {certFile: s.crt, keyFile: s.key, clientCAFile: ca.crt}}
upstreams: [{name: lab, url: "http://127.0.0.1:1", insecure: true}]
clients:
  htpasswd: users.htpasswd
  tokens:
    - {name: k8s, issuer: ` + k8sIssuer + `, audiences: [authz-proxy], jwksFile: k8s.jwks}
    - {name: gha, issuer: ` + ghIssuer + `, audiences: [authz-proxy, other], jwksURL: "` + w.jwks.URL + `"}
  certificates: true
  anonymous: ["lab/library/**"]
  access:
    - principals: ["user:ci", "k8s:system:serviceaccount:prod:*"]
      images: ["lab/prod/**"]
    - principals: ["gha:repo:acme/app:*", "cert:spiffe://lab/ns/dev/*"]
      images: ["lab/dev/**"]
policy: {default: {action: allow}}
`
	files := map[string]string{"users.htpasswd": "# made with htpasswd -B\nci:" + string(hash) + "\n", "k8s.jwks": w.k8s.JWKS(t), "s.crt": "", "s.key": "", "ca.crt": ""}
	cfg := testkit.LoadConfig(t, t.TempDir(), text, files)
	w.c, err = clients.Compile(context.Background(), cfg, clients.Options{Now: w.clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	return w
}

func basic(user, pass string) string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+pass))
}

// as is a request with Authorization h ("" for none).
func as(h string) *http.Request {
	r := httptest.NewRequest(http.MethodGet, "/v2/lab/prod/app/manifests/v1", nil)
	if h != "" {
		r.Header.Set("Authorization", h)
	}
	return r
}

func TestCredentialsAuthenticateAsTheirPrincipal(t *testing.T) {
	w := newWorld(t)
	now := w.clock.Now()
	hour := now.Add(time.Hour)
	sa := "system:serviceaccount:prod:api"
	tests := []struct {
		name string
		auth string
		want string // the principal; "" when none is offered
		bad  string // a part of the error, when it does not authenticate
	}{
		{"no credential", "", "", ""},
		{"an htpasswd user", basic("ci", "s3cret"), "user:ci", ""},
		{"a wrong password", basic("ci", "wrong"), "", "wrong user name or password"},
		{"an unknown user", basic("nobody", "s3cret"), "", "wrong user name or password"},
		{"a Kubernetes token, RS256, as Bearer", "Bearer " + w.k8s.Token(t, sa, "authz-proxy", time.Time{}, hour, nil), "k8s:" + sa, ""},
		{"a Kubernetes token as a Basic password (credential providers, docker login)", basic("k8s", w.k8s.Token(t, sa, "authz-proxy", time.Time{}, hour, nil)), "k8s:" + sa, ""},
		{"a GitHub Actions token, ES256, keys at a URL", "Bearer " + w.gh.Token(t, "repo:acme/app:ref:refs/heads/main", "other", time.Time{}, hour, nil), "gha:repo:acme/app:ref:refs/heads/main", ""},
		{"a token of another issuer", "Bearer " + testkit.NewIssuer(t, "https://evil.example", jose.RS256).Token(t, sa, "authz-proxy", time.Time{}, hour, nil), "", "not one of clients.tokens"},
		{"a token for another audience", "Bearer " + w.k8s.Token(t, sa, "vault", time.Time{}, hour, nil), "", "audience"},
		{"an expired token", "Bearer " + w.k8s.Token(t, sa, "authz-proxy", time.Time{}, now.Add(-time.Minute), nil), "", "expired"},
		{"a token not yet valid", "Bearer " + w.k8s.Token(t, sa, "authz-proxy", now.Add(time.Hour), hour.Add(time.Hour), nil), "", "before"},
		{"a token signed by an unknown key", "Bearer " + w.k8s.TokenWithUnknownKey(t, sa, "authz-proxy", hour), "", "a token of k8s"},
		{"a token without sub", "Bearer " + w.k8s.Token(t, "", "authz-proxy", time.Time{}, hour, nil), "", "without sub"},
		{"not a JWT", "Bearer hello", "", "not a JWT"},
		{"another scheme", "Digest x", "", "authorization scheme"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := w.c.Authenticate(context.Background(), as(tt.auth))
			switch {
			case tt.bad != "":
				if !errors.Is(err, clients.ErrUnauthenticated) || !strings.Contains(err.Error(), tt.bad) {
					t.Fatalf("got %+v, %v; want it refused, saying %q", p, err, tt.bad)
				}
			case err != nil:
				t.Fatal(err)
			case tt.want == "" && p != nil, tt.want != "" && (p == nil || p.Name != tt.want):
				t.Fatalf("principal %+v, want %q", p, tt.want)
			}
		})
	}
}

func TestAVerifiedTokenIsCachedOnlyUntilItExpires(t *testing.T) {
	w := newWorld(t)
	tok := "Bearer " + w.k8s.Token(t, "system:serviceaccount:prod:api", "authz-proxy", time.Time{}, w.clock.Now().Add(time.Minute), nil)
	if p, err := w.c.Authenticate(context.Background(), as(tok)); err != nil || p.Claims["sub"] != "system:serviceaccount:prod:api" {
		t.Fatalf("the token: %+v, %v", p, err)
	}
	w.clock.Advance(2 * time.Minute)
	if _, err := w.c.Authenticate(context.Background(), as(tok)); !errors.Is(err, clients.ErrUnauthenticated) {
		t.Fatalf("the same token past its exp: %v; want refused, cached or not", err)
	}
}

func TestARotatedKeySetIsFetchedForAKeyNotSeenYet(t *testing.T) {
	w := newWorld(t)
	sub := "repo:acme/app:ref:refs/heads/main"
	hour := w.clock.Now().Add(time.Hour)
	if _, err := w.c.Authenticate(context.Background(), as("Bearer "+w.gh.Token(t, sub, "authz-proxy", time.Time{}, hour, nil))); err != nil {
		t.Fatal(err)
	}
	// go-oidc keeps the keys it fetched just after it answers the fetch's
	// waiters; a verification in between waits on that finished fetch and
	// sees the keys of before the rotation.
	time.Sleep(100 * time.Millisecond)
	w.gh.Rotate(t)
	w.gh.DropOldKeys()
	if p, err := w.c.Authenticate(context.Background(), as("Bearer "+w.gh.Token(t, sub, "authz-proxy", time.Time{}, hour, map[string]any{"n": 2}))); err != nil || p.Name != "gha:"+sub {
		t.Fatalf("a token of the new key: %+v, %v", p, err)
	}
}

func TestCertificatesAuthenticateByURISANElseCN(t *testing.T) {
	w := newWorld(t)
	spiffe, _ := url.Parse("spiffe://lab/ns/dev/sa/builder")
	for _, tt := range []struct {
		cert *x509.Certificate
		want string
	}{
		{&x509.Certificate{Subject: pkix.Name{CommonName: "node-1"}, URIs: []*url.URL{spiffe}}, "cert:spiffe://lab/ns/dev/sa/builder"},
		{&x509.Certificate{Subject: pkix.Name{CommonName: "node-1"}}, "cert:node-1"},
	} {
		r := as("")
		r.TLS = &tls.ConnectionState{VerifiedChains: [][]*x509.Certificate{{tt.cert}}}
		if p, err := w.c.Authenticate(context.Background(), r); err != nil || p == nil || p.Name != tt.want {
			t.Errorf("principal %+v, %v; want %q", p, err, tt.want)
		}
	}
}

func TestEachPrincipalPullsWhatTheAccessListGivesIt(t *testing.T) {
	w := newWorld(t)
	p := func(name string) *clients.Principal { return &clients.Principal{Name: name} }
	for _, tt := range []struct {
		who   *clients.Principal
		image string
		may   bool
	}{
		{nil, "lab/library/busybox", true},
		{nil, "lab/prod/app", false},
		{p("user:ci"), "lab/prod/app", true},
		{p("user:ci"), "lab/dev/app", false},
		{p("user:ci"), "lab/library/busybox", true},
		{p("k8s:system:serviceaccount:prod:api"), "lab/prod/team/app", true},
		{p("k8s:system:serviceaccount:dev:api"), "lab/prod/app", false},
		{p("gha:repo:acme/app:ref:refs/heads/main"), "lab/dev/x", true},
		{p("gha:repo:acme/application:ref:refs/heads/main"), "lab/dev/x", false},
		{p("cert:spiffe://lab/ns/dev/sa/builder"), "lab/dev/x", true},
		{p("cert:spiffe://lab/ns/prod/sa/builder"), "lab/dev/x", false},
	} {
		name := "anonymous"
		if tt.who != nil {
			name = tt.who.Name
		}
		if got := w.c.MayPull(tt.who, tt.image); got != tt.may {
			t.Errorf("%s may pull %s: %v, want %v", name, tt.image, got, tt.may)
		}
	}
}

func TestFailedAttemptsCostTheirClientMore(t *testing.T) {
	w := newWorld(t)
	var delays []time.Duration
	for range 7 {
		delays = append(delays, w.c.FailureDelay("10.0.0.9"))
	}
	if delays[0] != 100*time.Millisecond || delays[1] != 200*time.Millisecond || delays[6] != 2*time.Second {
		t.Errorf("delays %v: want 100ms doubling up to 2s", delays)
	}
	if d := w.c.FailureDelay("10.0.0.10"); d != 100*time.Millisecond {
		t.Errorf("another client's first failure costs %s", d)
	}
	w.clock.Advance(2 * time.Minute)
	if d := w.c.FailureDelay("10.0.0.9"); d != 100*time.Millisecond {
		t.Errorf("a minute later: %s, want the count started anew", d)
	}
}

// FuzzAuthenticate feeds Authenticate whatever a client sends as its
// Authorization header: it authenticates as a principal of a known kind,
// or refuses with ErrUnauthenticated; it never panics.
func FuzzAuthenticate(f *testing.F) {
	for _, s := range []string{basic("ci", "s3cret"), basic("k8s", "a.b.c"), "Bearer a.b.c", "Bearer eyJhbGciOiJub25lIn0.eyJpc3MiOiJodHRwczovL2t1YmVybmV0ZXMuZGVmYXVsdC5zdmMuY2x1c3Rlci5sb2NhbCJ9.", "Basic !!", "basic", " "} {
		f.Add(s)
	}
	w := newWorld(f)
	f.Fuzz(func(t *testing.T, h string) {
		r := as("")
		r.Header["Authorization"] = []string{h}
		p, err := w.c.Authenticate(context.Background(), r)
		switch {
		case err != nil:
			if !errors.Is(err, clients.ErrUnauthenticated) {
				t.Fatalf("%q: %v, want ErrUnauthenticated", h, err)
			}
		case h == "":
		case p == nil || !strings.HasPrefix(p.Name, "user:") && !strings.HasPrefix(p.Name, "k8s:") && !strings.HasPrefix(p.Name, "gha:"):
			t.Fatalf("%q authenticated as %+v", h, p)
		}
	})
}
