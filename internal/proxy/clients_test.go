package proxy_test

import (
	"bytes"
	"encoding/base64"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"golang.org/x/crypto/bcrypt"

	"github.com/authz-proxy/authz-proxy/internal/testkit"
)

// clientsEnv is an env whose proxy authenticates its clients: htpasswd
// users ci (may pull lab/signed/**) and dev (lab/dev/**), Kubernetes
// service-account tokens (prod's may pull lab/signed/**), lab/open/** for
// anyone; the environment prod is prod's service accounts.
type clientsEnv struct {
	*env
	k8s *testkit.Issuer
}

func newClientsEnv(t testing.TB, opts ...envOption) *clientsEnv {
	t.Helper()
	return newClientsEnvWith(t, policyYAML, opts...)
}

// newClientsEnvWith is newClientsEnv with policy in place of policyYAML.
func newClientsEnvWith(t testing.TB, policy string, opts ...envOption) *clientsEnv {
	t.Helper()
	dir := t.TempDir()
	k8s := testkit.NewIssuer(t, "https://kubernetes.default.svc", jose.ES256)
	var users strings.Builder
	for _, u := range []string{"ci", "dev"} {
		hash, err := bcrypt.GenerateFromPassword([]byte(u+"-password"), bcrypt.MinCost)
		if err != nil {
			t.Fatal(err)
		}
		users.WriteString(u + ":" + string(hash) + "\n")
	}
	htpasswd := testkit.WriteFile(t, filepath.Join(dir, "users.htpasswd"), users.String())
	jwks := testkit.WriteFile(t, filepath.Join(dir, "k8s.jwks"), k8s.JWKS(t))
	clientsYAML := `
clients:
  htpasswd: ` + htpasswd + `
  tokens: [{name: k8s, issuer: "https://kubernetes.default.svc", audiences: [authz-proxy], jwksFile: ` + jwks + `}]
  anonymous: ["lab/open/**"]
  access:
    - {principals: ["user:ci", "k8s:system:serviceaccount:prod:*"], images: ["lab/signed/**"]}
    - {principals: ["user:dev"], images: ["lab/dev/**"]}
environments:
  - {name: prod, clients: [{principal: "k8s:system:serviceaccount:prod:*"}]}
`
	e := newEnv(t, append([]envOption{withPolicy(policy + clientsYAML)}, opts...)...)
	return &clientsEnv{env: e, k8s: k8s}
}

// as sends method path with Authorization h ("" for none).
func (e *clientsEnv) as(h, method, path string) *http.Response {
	e.t.Helper()
	req, err := http.NewRequest(method, e.proxy.URL+path, nil)
	if err != nil {
		e.t.Fatal(err)
	}
	if h != "" {
		req.Header.Set("Authorization", h)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { resp.Body.Close() })
	return resp
}

func basicAuth(user, pass string) string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+pass))
}

func TestEveryRouteObeysWhoPullsWhenClientsAreSet(t *testing.T) {
	for _, stored := range []bool{false, true} {
		t.Run(map[bool]string{false: "streamed", true: "with a store"}[stored], func(t *testing.T) {
			var opts []envOption
			if stored {
				opts = append(opts, withStore(tempStore(t)))
			}
			e := newClientsEnv(t, opts...)
			d := e.signed("signed/app:v1")
			raw, err := e.manifest("signed/app", d)
			if err != nil {
				t.Fatal(err)
			}
			layer := layerOf(t, raw)
			open := e.push("open/app:v1")
			ci, dev := basicAuth("ci", "ci-password"), basicAuth("dev", "dev-password")
			sa := "Bearer " + e.k8s.Token(t, "system:serviceaccount:prod:api", "authz-proxy", time.Time{}, time.Now().Add(time.Hour), nil)
			for _, tt := range []struct {
				name, auth, method, path string
				status                   int
			}{
				{"the base route, anonymous", "", http.MethodGet, "/v2/", 401},
				{"the base route, a user", ci, http.MethodGet, "/v2/", 200},
				{"a manifest, anonymous", "", http.MethodGet, "/v2/lab/signed/app/manifests/v1", 401},
				{"a manifest, a wrong password", basicAuth("ci", "guess"), http.MethodGet, "/v2/lab/signed/app/manifests/v1", 401},
				{"a manifest, its user", ci, http.MethodGet, "/v2/lab/signed/app/manifests/v1", 200},
				{"a manifest, HEAD, its user", ci, http.MethodHead, "/v2/lab/signed/app/manifests/v1", 200},
				{"a manifest, a service account of prod", sa, http.MethodGet, "/v2/lab/signed/app/manifests/" + d.String(), 200},
				{"a manifest, another user", dev, http.MethodGet, "/v2/lab/signed/app/manifests/v1", 403},
				{"a blob, anonymous", "", http.MethodGet, "/v2/lab/signed/app/blobs/" + layer, 401},
				{"a blob, another user", dev, http.MethodGet, "/v2/lab/signed/app/blobs/" + layer, 403},
				{"a blob, its user", ci, http.MethodGet, "/v2/lab/signed/app/blobs/" + layer, 200},
				{"a blob again, another user (the store holds it)", dev, http.MethodGet, "/v2/lab/signed/app/blobs/" + layer, 403},
				{"tags/list, another user", dev, http.MethodGet, "/v2/lab/signed/app/tags/list", 403},
				{"tags/list, its user", ci, http.MethodGet, "/v2/lab/signed/app/tags/list", 200},
				{"referrers, another user", dev, http.MethodGet, "/v2/lab/signed/app/referrers/" + d.String(), 403},
				{"referrers, its user", ci, http.MethodGet, "/v2/lab/signed/app/referrers/" + d.String(), 200},
				{"an anonymous image, anonymous", "", http.MethodGet, "/v2/lab/open/app/manifests/" + open.String(), 200},
			} {
				t.Run(tt.name, func(t *testing.T) {
					resp := e.as(tt.auth, tt.method, tt.path)
					if resp.StatusCode != tt.status {
						body, _ := io.ReadAll(resp.Body)
						t.Fatalf("%d %s, want %d", resp.StatusCode, body, tt.status)
					}
					switch tt.status {
					case 401:
						if got := resp.Header.Get("WWW-Authenticate"); got != `Basic realm="authz-proxy"` {
							t.Errorf("WWW-Authenticate %q", got)
						}
						if tt.method == http.MethodGet {
							expectError(t, resp, 401, "UNAUTHORIZED")
						}
					case 403:
						if msg := expectError(t, resp, 403, "DENIED"); !strings.Contains(msg, "user:dev may not pull lab/signed/app") {
							t.Errorf("403 message %q: want the principal and the image", msg)
						}
					}
				})
			}
			// The decision log names who pulled, and the refusal.
			if rec := e.lastDecision(d.String()); rec.Principal != "k8s:system:serviceaccount:prod:api" || rec.Client.Environment != "prod" {
				t.Errorf("the service account's pull: %+v", rec)
			}
			var refused bool
			for _, rec := range testkit.Decisions(t, e.decisions.String()) {
				refused = refused || rec.Rule == "(access)" && rec.Principal == "user:dev" && rec.Decision == "deny"
			}
			if !refused {
				t.Errorf("no decision record of the refused manifest:\n%s", e.decisions.String())
			}
		})
	}
}

// layerOf is the first layer's digest of an image manifest.
func layerOf(t *testing.T, raw []byte) string {
	t.Helper()
	m, err := v1.ParseManifest(bytes.NewReader(raw))
	if err != nil || len(m.Layers) == 0 {
		t.Fatalf("no layer in %s: %v", raw, err)
	}
	return m.Layers[0].Digest.String()
}

// deployPolicy lets a service account pull lab/signed/deploy/** only when
// a release attestation names its namespace, and a user only when it names
// the user: a condition over who pulls.
const deployPolicy = `
attestors:
  - name: ci
    publicKeys: [{file: ci.pub}]
policy:
  rules:
    - name: approved-for
      images: ["lab/signed/deploy/**"]
      require:
        - attestation:
            predicateType: https://example.com/attestations/release/v1
            attestors: [ci]
            condition: >-
              client.principal.startsWith("k8s:")
                ? client.claims["kubernetes.io"]["namespace"] in predicate.namespaces
                : client.principal in predicate.users
`

func TestAConditionOnWhoPullsIsJudgedForEachOfThem(t *testing.T) {
	e := newClientsEnvWith(t, deployPolicy)
	d := e.push("signed/deploy/api:v1")
	e.attestTag("signed/deploy/api", d, e.attestation("signed/deploy/api", "ci", d, "https://example.com/attestations/release/v1",
		map[string]any{"namespaces": []string{"prod"}, "users": []string{"user:ci"}}))
	inNamespace := func(ns string) string {
		return "Bearer " + e.k8s.Token(t, "system:serviceaccount:prod:api", "authz-proxy", time.Time{}, time.Now().Add(time.Hour),
			map[string]any{"kubernetes.io": map[string]any{"namespace": ns}})
	}
	path := "/v2/lab/signed/deploy/api/manifests/" + d.String()
	// Each asks twice: an outcome judged for one is never another's.
	for _, tt := range []struct {
		name, auth string
		status     int
	}{
		{"a user the attestation names", basicAuth("ci", "ci-password"), 200},
		{"a service account whose token's namespace it names", inNamespace("prod"), 200},
		{"a service account of prod whose token says another namespace", inNamespace("staging"), 403},
		{"the user again", basicAuth("ci", "ci-password"), 200},
		{"the other namespace again", inNamespace("staging"), 403},
		{"the named namespace again", inNamespace("prod"), 200},
	} {
		t.Run(tt.name, func(t *testing.T) {
			resp := e.as(tt.auth, http.MethodGet, path)
			if resp.StatusCode != tt.status {
				body, _ := io.ReadAll(resp.Body)
				t.Fatalf("%d %s, want %d", resp.StatusCode, body, tt.status)
			}
			if tt.status == 403 {
				if msg := expectError(t, resp, 403, "DENIED"); !strings.Contains(msg, "condition") {
					t.Errorf("403 message %q: want the condition named", msg)
				}
			}
		})
	}
}
