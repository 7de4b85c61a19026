package pattern_test

import (
	"strings"
	"testing"

	"github.com/authz-proxy/authz-proxy/internal/pattern"
)

const (
	dA = "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
	dB = "sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
)

func TestMatch(t *testing.T) {
	tests := []struct {
		name    string
		pattern string
		img     pattern.Image
		want    bool
	}{
		{"exact name matches", "docker.io/library/busybox", pattern.Image{Name: "docker.io/library/busybox", Tag: "1.36", Digest: dA}, true},
		{"exact name does not match a longer name", "docker.io/library/busybox", pattern.Image{Name: "docker.io/library/busybox2", Digest: dA}, false},
		{"star stays within one segment", "docker.io/library/*", pattern.Image{Name: "docker.io/library/nginx", Digest: dA}, true},
		{"star does not cross segments", "docker.io/library/*", pattern.Image{Name: "docker.io/library/a/b", Digest: dA}, false},
		{"double star crosses segments", "ghcr.io/acme/**", pattern.Image{Name: "ghcr.io/acme/team/app", Digest: dA}, true},
		{"double star in the middle matches zero segments", "ghcr.io/**/app", pattern.Image{Name: "ghcr.io/app", Digest: dA}, true},
		{"double star does not leak to another upstream", "ghcr.io/acme/**", pattern.Image{Name: "ghcr.io.evil.com/acme/app", Digest: dA}, false},
		{"upstream with a port", "localhost:5000/app", pattern.Image{Name: "localhost:5000/app", Digest: dA}, true},
		{"digest entry matches that digest", "ghcr.io/acme/app@" + dA, pattern.Image{Name: "ghcr.io/acme/app", Digest: dA}, true},
		{"digest entry does not match another digest", "ghcr.io/acme/app@" + dA, pattern.Image{Name: "ghcr.io/acme/app", Digest: dB}, false},
		{"tag entry matches that tag", "ghcr.io/acme/app:v1.*", pattern.Image{Name: "ghcr.io/acme/app", Tag: "v1.2", Digest: dA}, true},
		{"tag entry does not match a pull by digest", "ghcr.io/acme/app:v1", pattern.Image{Name: "ghcr.io/acme/app", Digest: dA}, false},
		{"match-all", "**", pattern.Image{Name: "x/y", Digest: dA}, true},
		{"dots are literal", "docker.io/a.b", pattern.Image{Name: "docker.io/aXb", Digest: dA}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := pattern.Parse(tt.pattern)
			if err != nil {
				t.Fatalf("Parse(%q): %v", tt.pattern, err)
			}
			if got := p.Match(tt.img); got != tt.want {
				t.Errorf("%q.Match(%+v) = %v, want %v", tt.pattern, tt.img, got, tt.want)
			}
		})
	}
}

func TestParseRejectsBadPatterns(t *testing.T) {
	tests := []struct{ pattern, wantErr string }{
		{"nginx", "want <upstream>/<repository>"},
		{"docker.io//nginx", "empty path segment"},
		{"docker.io/a**b", "** must be a whole path segment"},
		{"docker.io/***", "use * within a segment"},
		{"docker.io/app@sha256:123", "is not a digest"},
		{"docker.io/app:b@d tag", "is not a digest"},
		{"docker.io/ap p", "only letters"},
		{"docker.io/app:", "bad tag"},
	}
	for _, tt := range tests {
		t.Run(tt.pattern, func(t *testing.T) {
			_, err := pattern.Parse(tt.pattern)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Parse(%q) error = %v, want it to say %q", tt.pattern, err, tt.wantErr)
			}
		})
	}
}

func TestWildcardsStandForAnyCharacters(t *testing.T) {
	for _, tt := range []struct {
		glob, name string
		want       bool
	}{
		{"user:ci", "user:ci", true},
		{"user:ci", "user:cii", false},
		{"k8s:system:serviceaccount:prod:*", "k8s:system:serviceaccount:prod:api", true},
		{"k8s:system:serviceaccount:prod:*", "k8s:system:serviceaccount:production:api", false},
		{"*:admin", "user:admin", true},
		{"a*b*c", "axxbyyc", true},
		{"a*b*c", "axxcyyb", false},
		{"*", "", true},
	} {
		if got := pattern.Wildcard(tt.glob, tt.name); got != tt.want {
			t.Errorf("Wildcard(%q, %q) = %v", tt.glob, tt.name, got)
		}
	}
}
