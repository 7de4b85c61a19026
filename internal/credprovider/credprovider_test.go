package credprovider_test

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	kubelet "k8s.io/kubelet/pkg/apis/credentialprovider/v1"

	"github.com/authz-proxy/authz-proxy/internal/credprovider"
	"github.com/authz-proxy/authz-proxy/internal/testkit"
)

// kubeletRequest is the request the kubelet writes to the provider's
// stdin, made with the kubelet's own types.
func kubeletRequest(t *testing.T, image, token string) []byte {
	t.Helper()
	b, err := json.Marshal(kubelet.CredentialProviderRequest{
		TypeMeta:                  metav1.TypeMeta{APIVersion: "credentialprovider.kubelet.k8s.io/v1", Kind: "CredentialProviderRequest"},
		Image:                     image,
		ServiceAccountToken:       token,
		ServiceAccountAnnotations: map[string]string{"authz-proxy.dev/team": "payments"},
	})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestTheKubeletGetsThePodsTokenForTheProxysHostUntilShortlyBeforeItExpires(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	k8s := testkit.NewIssuer(t, "https://kubernetes.default.svc", jose.RS256)
	token := k8s.Token(t, "system:serviceaccount:prod:api", "authz-proxy", time.Time{}, now.Add(time.Hour), nil)
	for _, tt := range []struct {
		name, image string
		registries  []string
		cache       time.Duration
	}{
		{"an image of the proxy's host", "authz-proxy.example:5000/registry.internal/prod/api:v1", nil, time.Hour - 30*time.Second},
		{"a host the provider is told of", "proxy.svc.cluster.local/ghcr.io/acme/app@sha256:" + strings.Repeat("a", 64), []string{"proxy.svc.cluster.local"}, time.Hour - 30*time.Second},
	} {
		t.Run(tt.name, func(t *testing.T) {
			out, err := credprovider.Respond(kubeletRequest(t, tt.image, token), now, credprovider.Options{Registries: tt.registries})
			if err != nil {
				t.Fatal(err)
			}
			var resp kubelet.CredentialProviderResponse
			dec := json.NewDecoder(strings.NewReader(string(out)))
			dec.DisallowUnknownFields()
			if err := dec.Decode(&resp); err != nil {
				t.Fatalf("the kubelet cannot read %s: %v", out, err)
			}
			host, _, _ := strings.Cut(tt.image, "/")
			if resp.APIVersion != "credentialprovider.kubelet.k8s.io/v1" || resp.Kind != "CredentialProviderResponse" || resp.CacheKeyType != kubelet.RegistryPluginCacheKeyType {
				t.Errorf("response %s", out)
			}
			if auth := resp.Auth[host]; auth.Password != token || auth.Username == "" || len(resp.Auth) != 1 {
				t.Errorf("auth %+v; want the token as the password for %s", resp.Auth, host)
			}
			if resp.CacheDuration == nil || resp.CacheDuration.Duration != tt.cache {
				t.Errorf("cacheDuration %v; want %v (never past the token's exp)", resp.CacheDuration, tt.cache)
			}
		})
	}
}

func TestTheKubeletIsToldNotToCacheATokenAboutToExpireOrWithoutExpiry(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	k8s := testkit.NewIssuer(t, "https://kubernetes.default.svc", jose.ES256)
	for name, token := range map[string]string{
		"expiring in 20 s": k8s.Token(t, "system:serviceaccount:prod:api", "authz-proxy", time.Time{}, now.Add(20*time.Second), nil),
		"without exp":      k8s.Token(t, "system:serviceaccount:prod:api", "authz-proxy", time.Time{}, time.Time{}, nil),
	} {
		t.Run(name, func(t *testing.T) {
			out, err := credprovider.Respond(kubeletRequest(t, "proxy.example/lab/app:v1", token), now, credprovider.Options{})
			if err != nil {
				t.Fatal(err)
			}
			var resp kubelet.CredentialProviderResponse
			if err := json.Unmarshal(out, &resp); err != nil {
				t.Fatal(err)
			}
			if resp.CacheDuration == nil || resp.CacheDuration.Duration != 0 {
				t.Errorf("cacheDuration %v; want 0s (not cached)", resp.CacheDuration)
			}
		})
	}
}

func TestRequestsTheProviderCannotAnswerSayWhatToFix(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	k8s := testkit.NewIssuer(t, "https://kubernetes.default.svc", jose.ES256)
	token := k8s.Token(t, "system:serviceaccount:prod:api", "authz-proxy", time.Time{}, now.Add(time.Hour), nil)
	old, err := json.Marshal(map[string]string{"apiVersion": "credentialprovider.kubelet.k8s.io/v1beta1", "kind": "CredentialProviderRequest", "image": "proxy.example/a:b"})
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name    string
		request []byte
		opts    credprovider.Options
		want    string
	}{
		{"no token (tokenAttributes not set)", kubeletRequest(t, "proxy.example/lab/app:v1", ""), credprovider.Options{}, "tokenAttributes"},
		{"an expired token", kubeletRequest(t, "proxy.example/lab/app:v1", k8s.Token(t, "s", "authz-proxy", time.Time{}, now.Add(-time.Minute), nil)), credprovider.Options{}, "expired"},
		{"not a JWT", kubeletRequest(t, "proxy.example/lab/app:v1", "opaque"), credprovider.Options{}, "not a JWT"},
		{"another registry", kubeletRequest(t, "ghcr.io/acme/app:v1", token), credprovider.Options{Registries: []string{"proxy.example"}}, "matchImages"},
		{"a Docker Hub short name", kubeletRequest(t, "library/nginx:1", token), credprovider.Options{}, "names no registry"},
		{"an older protocol version", old, credprovider.Options{}, "apiVersion"},
		{"not JSON", []byte("{"), credprovider.Options{}, "not a CredentialProviderRequest"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := credprovider.Respond(tt.request, now, tt.opts)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %v; want it to say %q", err, tt.want)
			}
		})
	}
}

func FuzzRespond(f *testing.F) {
	f.Add([]byte(`{"apiVersion":"credentialprovider.kubelet.k8s.io/v1","kind":"CredentialProviderRequest","image":"p.example/a:b","serviceAccountToken":"a.eyJleHAiOjE4MDAwMDAwMDB9.c"}`))
	f.Add([]byte(`{"apiVersion":"credentialprovider.kubelet.k8s.io/v1","kind":"CredentialProviderRequest","image":"p:1/a","serviceAccountToken":"a.e30.c"}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		out, err := credprovider.Respond(body, time.Unix(1_700_000_000, 0), credprovider.Options{})
		if err != nil {
			return
		}
		var resp kubelet.CredentialProviderResponse
		if err := json.Unmarshal(out, &resp); err != nil || resp.CacheDuration == nil || resp.CacheDuration.Duration < 0 || len(resp.Auth) != 1 {
			t.Fatalf("the kubelet cannot use %s: %v", out, err)
		}
	})
}
