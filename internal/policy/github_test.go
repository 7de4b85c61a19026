package policy

import (
	"testing"

	"github.com/authz-proxy/authz-proxy/internal/config"
	"github.com/authz-proxy/authz-proxy/internal/verify"
)

func TestRefGlobs(t *testing.T) {
	tests := []struct {
		glob, ref string
		want      bool
	}{
		{"refs/tags/v*", "refs/tags/v1.2.3", true},
		{"refs/tags/v*", "refs/tags/release/v1", false},
		{"refs/tags/**", "refs/tags/release/v1", true},
		{"refs/tags/v?", "refs/tags/v1", true},
		{"refs/tags/v?", "refs/tags/v10", false},
		{"refs/heads/release-*", "refs/heads/release-1.x", true},
		{"refs/heads/main", "refs/heads/main2", false},
		{"refs/tags/v1.*", "refs/tags/v1x2", false}, // the dot is a dot
	}
	for _, tt := range tests {
		if got := globRegexp(tt.glob).MatchString(tt.ref); got != tt.want {
			t.Errorf("%s matches %s: %v, want %v", tt.glob, tt.ref, got, tt.want)
		}
	}
}

func TestGitHubShorthandIssuer(t *testing.T) {
	for host, want := range map[string]string{
		"":                 "https://token.actions.githubusercontent.com",
		"github.com":       "https://token.actions.githubusercontent.com",
		"acme.ghe.com":     "https://token.actions.acme.ghe.com",
		"github.acme.corp": "https://github.acme.corp/_services/token",
	} {
		id := verify.Identity{}
		github(&id, &config.GitHub{Repository: "acme/app", Host: host})
		if id.Issuer != want {
			t.Errorf("host %q: issuer %q, want %q", host, id.Issuer, want)
		}
	}
	id := verify.Identity{Issuer: "https://token.actions.githubusercontent.com/acme"}
	github(&id, &config.GitHub{Repository: "acme/app"})
	if id.Issuer != "https://token.actions.githubusercontent.com/acme" {
		t.Errorf("an explicit issuer (an enterprise's custom one) was replaced by %q", id.Issuer)
	}
}
