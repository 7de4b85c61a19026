// Package credprovider answers the kubelet's image credential provider
// requests (credentialprovider.kubelet.k8s.io/v1, the exec protocol): the
// pod's service-account token, which the kubelet hands over since
// KEP-4412, becomes the password for the proxy's host, so that the proxy
// knows which workload pulls. It reads no key and makes no network call:
// the proxy verifies the token.
package credprovider

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
)

// APIVersion is the only version of the protocol spoken.
const APIVersion = "credentialprovider.kubelet.k8s.io/v1"

// Username is the user name returned with the token: the proxy takes any
// user name whose password is a JWT to be a token.
const Username = "authz-proxy"

// margin is taken off a token's remaining life for the cache duration,
// so that the kubelet never hands over a token in its last seconds.
const margin = 30 * time.Second

// maxRequest bounds what is read from stdin: a request is an image name
// and a token.
const maxRequest = 1 << 20

// request and response are the protocol's messages (the kubelet's
// k8s.io/kubelet/pkg/apis/credentialprovider/v1 types, which the tests
// use): the fields read and written here. Fields a newer kubelet adds are
// ignored.
type request struct {
	APIVersion          string `json:"apiVersion"`
	Kind                string `json:"kind"`
	Image               string `json:"image"`
	ServiceAccountToken string `json:"serviceAccountToken"`
}

type response struct {
	APIVersion    string                `json:"apiVersion"`
	Kind          string                `json:"kind"`
	CacheKeyType  string                `json:"cacheKeyType"`
	CacheDuration string                `json:"cacheDuration"`
	Auth          map[string]authConfig `json:"auth"`
}

type authConfig struct {
	Username string `json:"username"`
	Password string `json:"password"`
}

// Options choose what is answered.
type Options struct {
	// Registries are the hosts (host[:port]) the credential is for; an
	// image of another host is refused. None: the image's own host.
	Registries []string
}

// Respond reads a CredentialProviderRequest and returns the
// CredentialProviderResponse: the request's token as the password for the
// image's registry, cached by the kubelet per registry for the token's
// remaining life less a margin (not at all when that is under a second,
// or when the token says nothing of its expiry). An error says what is
// wrong with the request; the kubelet then pulls without these
// credentials, and the proxy answers 401.
func Respond(body []byte, now time.Time, o Options) ([]byte, error) {
	if len(body) > maxRequest {
		return nil, fmt.Errorf("the request is over %d bytes", maxRequest)
	}
	var req request
	if err := json.Unmarshal(body, &req); err != nil {
		return nil, fmt.Errorf("not a CredentialProviderRequest: %v", err)
	}
	if req.APIVersion != APIVersion || req.Kind != "CredentialProviderRequest" {
		return nil, fmt.Errorf("a request of apiVersion %q kind %q; this provider speaks %s CredentialProviderRequest (set apiVersion: %s in the CredentialProviderConfig)", req.APIVersion, req.Kind, APIVersion, APIVersion)
	}
	host := registryOf(req.Image)
	if host == "" {
		return nil, fmt.Errorf("image %q names no registry", req.Image)
	}
	if len(o.Registries) > 0 && !slices.ContainsFunc(o.Registries, func(r string) bool { return strings.EqualFold(r, host) }) {
		return nil, fmt.Errorf("image %q is not on %s: its matchImages in the CredentialProviderConfig match more than the proxy", req.Image, strings.Join(o.Registries, ", "))
	}
	if req.ServiceAccountToken == "" {
		return nil, errors.New("the request carries no service-account token: give the provider tokenAttributes (serviceAccountTokenAudience) in the CredentialProviderConfig, on a kubelet of Kubernetes 1.33 or later")
	}
	exp, err := expiry(req.ServiceAccountToken)
	if err != nil {
		return nil, err
	}
	cache := time.Duration(0)
	if !exp.IsZero() {
		left := exp.Sub(now)
		if left <= 0 {
			return nil, fmt.Errorf("the service-account token expired at %s", exp.UTC().Format(time.RFC3339))
		}
		cache = (left - margin).Truncate(time.Second)
		if cache < time.Second {
			cache = 0
		}
	}
	resp := response{
		APIVersion: APIVersion, Kind: "CredentialProviderResponse",
		// Registry: one credential for every image of the proxy's host.
		// The kubelet keys its cache by the token too when the provider's
		// tokenAttributes say cacheType: Token.
		CacheKeyType:  "Registry",
		CacheDuration: cache.String(),
		Auth:          map[string]authConfig{host: {Username: Username, Password: req.ServiceAccountToken}},
	}
	return json.Marshal(resp)
}

// registryOf is the registry host of an image reference, as the kubelet
// names it: the part before the first slash when it has a dot or a colon
// or is localhost; "" for a Docker Hub short name.
func registryOf(image string) string {
	host, _, ok := strings.Cut(image, "/")
	if !ok || !(strings.ContainsAny(host, ".:") || host == "localhost") {
		return ""
	}
	return host
}

// expiry reads a JWT's exp claim without verifying it (the proxy does),
// zero when there is none.
func expiry(token string) (time.Time, error) {
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return time.Time{}, errors.New("the service-account token is not a JWT")
	}
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return time.Time{}, fmt.Errorf("the service-account token's payload is not base64url: %v", err)
	}
	var claims struct {
		Exp *json.Number `json:"exp"`
	}
	if err := json.Unmarshal(payload, &claims); err != nil {
		return time.Time{}, fmt.Errorf("the service-account token's payload is not JSON: %v", err)
	}
	if claims.Exp == nil {
		return time.Time{}, nil
	}
	secs, err := claims.Exp.Float64()
	if err != nil || secs <= 0 || secs > 1<<40 {
		return time.Time{}, fmt.Errorf("the service-account token's exp %q is not a time", claims.Exp.String())
	}
	return time.Unix(int64(secs), 0), nil
}
