package testkit

import (
	"path/filepath"
	"testing"

	"github.com/authz-proxy/authz-proxy/internal/config"
)

// WriteConfig writes text as config.yaml in dir, with files (name to
// content, e.g. keys and trust roots the configuration names relative to
// itself) beside it, and returns the configuration's path.
func WriteConfig(t testing.TB, dir, text string, files map[string]string) string {
	t.Helper()
	for name, content := range files {
		WriteFile(t, filepath.Join(dir, name), content)
	}
	return WriteFile(t, filepath.Join(dir, "config.yaml"), text)
}

// LoadConfig writes text as config.yaml in dir, with files beside it, and
// loads it as `serve` does; a configuration that does not load fails the
// test.
func LoadConfig(t testing.TB, dir, text string, files map[string]string) *config.Config {
	t.Helper()
	c, err := config.Load(WriteConfig(t, dir, text, files))
	if err != nil {
		t.Fatalf("loading the test's configuration: %v", err)
	}
	return c
}
