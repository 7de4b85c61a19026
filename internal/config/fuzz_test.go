package config_test

import (
	"path/filepath"
	"testing"

	"github.com/authz-proxy/authz-proxy/internal/config"
)

func FuzzParse(f *testing.F) {
	f.Add([]byte(validYAML))
	f.Add([]byte("upstreams: [{name: a, url: 'http://x', insecure: true}]\npolicy: {default: {action: allow}}\n"))
	f.Add([]byte("policy:\n  rules:\n    - {name: r, images: ['**'], require: [{signature: {attestors: [a], threshold: -1}}]}\n"))
	f.Add([]byte("&a [*a, *a]"))
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := config.Parse(filepath.Join(dir, "config.yaml"), data)
		if err == nil && (len(c.Upstreams) == 0 || c.Policy.Default.Action == "") {
			t.Fatalf("accepted a config without upstreams or default action: %q", data)
		}
	})
}
