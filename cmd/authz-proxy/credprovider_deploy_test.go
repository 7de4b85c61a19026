package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"slices"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
	kubeletconfig "k8s.io/kubelet/config/v1"
)

// strictJSON decodes a YAML document into out through JSON, refusing
// fields out does not have, as the kubelet's strict decoding does.
func strictJSON(t *testing.T, name string, doc any, out any) {
	t.Helper()
	raw, err := json.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(out); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
}

func TestTheShippedKubeletConfigurationRunsTheCredentialProviderForTheProxysHost(t *testing.T) {
	const name = "deploy/kubernetes/kubelet-credential-provider.yaml"
	var doc map[string]any
	if err := yaml.Unmarshal(readRepoFile(t, name), &doc); err != nil {
		t.Fatal(err)
	}
	var cfg kubeletconfig.CredentialProviderConfig
	strictJSON(t, name, doc, &cfg)
	if cfg.APIVersion != "kubelet.config.k8s.io/v1" || cfg.Kind != "CredentialProviderConfig" || len(cfg.Providers) != 1 {
		t.Fatalf("%s: %+v", name, cfg)
	}
	p := cfg.Providers[0]
	if p.APIVersion != "credentialprovider.kubelet.k8s.io/v1" || p.Name != "authz-proxy" {
		t.Errorf("provider %q speaks %q; want the authz-proxy binary on the v1 protocol", p.Name, p.APIVersion)
	}
	// The arguments are the command's, and name the host matchImages does.
	if len(p.Args) == 0 || p.Args[0] != "credential-provider" {
		t.Fatalf("args %q do not run credential-provider", p.Args)
	}
	var out, errOut bytes.Buffer
	err := credentialProviderCmd(p.Args[1:], bytes.NewReader(nil), &out, &errOut, time.Now())
	var ee *exitError
	if !errors.As(err, &ee) || ee.code != 1 {
		t.Fatalf("args %q: %v (%s); want the flags taken and the empty request refused", p.Args, err, errOut.String())
	}
	if i := slices.Index(p.Args, "--registry"); i < 0 || i+1 >= len(p.Args) || !slices.Contains(p.MatchImages, p.Args[i+1]) {
		t.Errorf("--registry in %q is not among matchImages %q", p.Args, p.MatchImages)
	}
	ta := p.TokenAttributes
	if ta == nil || ta.ServiceAccountTokenAudience != "authz-proxy" || ta.CacheType != kubeletconfig.TokenServiceAccountTokenCacheType || ta.RequireServiceAccount == nil || !*ta.RequireServiceAccount {
		t.Errorf("tokenAttributes %+v; want the audience authz-proxy, cached per token, a service account required", ta)
	}
	if p.DefaultCacheDuration == nil || p.DefaultCacheDuration.Duration != 0 {
		t.Errorf("defaultCacheDuration %v; want 0s (the provider says how long)", p.DefaultCacheDuration)
	}
}

func TestTheShippedRBACLetsNodesRequestTokensForTheProvidersAudience(t *testing.T) {
	const name = "deploy/kubernetes/credential-provider-rbac.yaml"
	dec := yaml.NewDecoder(bytes.NewReader(readRepoFile(t, name)))
	var role, binding bool
	for {
		var o struct {
			Kind  string `yaml:"kind"`
			Rules []struct {
				Resources []string `yaml:"resources"`
				Verbs     []string `yaml:"verbs"`
			} `yaml:"rules"`
			Subjects []struct {
				Kind, Name string
			} `yaml:"subjects"`
		}
		err := dec.Decode(&o)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		switch o.Kind {
		case "ClusterRole":
			role = len(o.Rules) == 1 && slices.Equal(o.Rules[0].Resources, []string{"authz-proxy"}) && slices.Equal(o.Rules[0].Verbs, []string{"request-serviceaccounts-token-audience"})
		case "ClusterRoleBinding":
			binding = len(o.Subjects) == 1 && o.Subjects[0].Kind == "Group" && o.Subjects[0].Name == "system:nodes"
		}
	}
	if !role || !binding {
		t.Errorf("%s: role %v, binding %v; want the audience authz-proxy requestable by system:nodes", name, role, binding)
	}
}
