package main

import (
	"bytes"
	"encoding/json"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	kubelet "k8s.io/kubelet/pkg/apis/credentialprovider/v1"

	"github.com/authz-proxy/authz-proxy/internal/testkit"
)

// The kubelet execs the provider with the pod's service-account token; the
// credential it returns pulls through the proxy as that service account.
func TestThePodsTokenFromTheCredentialProviderPullsAsItsServiceAccount(t *testing.T) {
	lab := startLab(t)
	dir := t.TempDir()
	k8s := testkit.NewIssuer(t, "https://kubernetes.default.svc", jose.RS256)
	jwks := testkit.WriteFile(t, filepath.Join(dir, "k8s.jwks"), k8s.JWKS(t))
	in := startServe(t, dir, labConfig(lab, signedPolicy)+`
clients:
  tokens: [{name: k8s, issuer: "https://kubernetes.default.svc", audiences: [authz-proxy], jwksFile: `+jwks+`}]
  access: [{principals: ["k8s:system:serviceaccount:prod:*"], images: ["lab/**"]}]
`, 0)
	token := k8s.Token(t, "system:serviceaccount:prod:api", "authz-proxy", time.Time{}, time.Now().Add(time.Hour),
		map[string]any{"kubernetes.io": map[string]any{"namespace": "prod", "serviceaccount": map[string]any{"name": "api"}}})
	request, err := json.Marshal(kubelet.CredentialProviderRequest{
		TypeMeta:            metav1.TypeMeta{APIVersion: "credentialprovider.kubelet.k8s.io/v1", Kind: "CredentialProviderRequest"},
		Image:               in.addr + "/lab/demo/app:signed",
		ServiceAccountToken: token,
	})
	if err != nil {
		t.Fatal(err)
	}
	var stdout, stderr bytes.Buffer
	if err := credentialProviderCmd([]string{"--registry", in.addr}, bytes.NewReader(request), &stdout, &stderr, time.Now()); err != nil {
		t.Fatalf("credential-provider: %v (%s)", err, stderr.String())
	}
	var resp kubelet.CredentialProviderResponse
	if err := json.Unmarshal(stdout.Bytes(), &resp); err != nil {
		t.Fatal(err)
	}
	auth, ok := resp.Auth[in.addr]
	if !ok {
		t.Fatalf("no credential for %s in %s", in.addr, stdout.String())
	}
	pull := func(user, pass string) int {
		req, _ := http.NewRequest(http.MethodGet, "http://"+in.addr+"/v2/lab/demo/app/manifests/signed", nil)
		if user != "" {
			req.SetBasicAuth(user, pass)
		}
		r, err := plainClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		r.Body.Close()
		return r.StatusCode
	}
	if got := pull("", ""); got != http.StatusUnauthorized {
		t.Errorf("without the credential: %d, want 401", got)
	}
	if got := pull(auth.Username, auth.Password); got != http.StatusOK {
		t.Fatalf("with the provider's credential: %d, want 200", got)
	}
	var principal string
	// The decision line is written just after the answer.
	for deadline := time.Now().Add(10 * time.Second); principal == "" && time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		for _, rec := range testkit.Decisions(t, in.decisions.String()) {
			if rec.Decision == "allow" {
				principal = rec.Principal
			}
		}
	}
	if principal != "k8s:system:serviceaccount:prod:api" {
		t.Errorf("the decision log names %q as who pulled; want the pod's service account:\n%s", principal, in.decisions.String())
	}
	if !strings.Contains(stdout.String(), `"cacheKeyType":"Registry"`) {
		t.Errorf("response %s", stdout.String())
	}
}
