package internal_test

import (
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// TestPackageEdges keeps the dependencies flowing downward, as
// ARCHITECTURE.md lays them out: the cryptography never touches the
// network, the policy never reaches up into the HTTP edge, and so on.
func TestPackageEdges(t *testing.T) {
	const mod = "github.com/authz-proxy/authz-proxy/internal/"
	forbidden := map[string][]string{
		"verify":   {"net/http", mod + "upstream", mod + "policy", mod + "proxy", mod + "config"},
		"pattern":  {mod},
		"audit":    {mod},
		"report":   {mod + "proxy", mod + "policy", mod + "upstream", mod + "config", "net/http"},
		"cache":    {mod},
		"config":   {mod + "policy", mod + "proxy", mod + "upstream", mod + "verify"},
		"upstream": {mod + "policy", mod + "proxy", mod + "verify"},
		"policy":   {mod + "proxy", "net/http"},
		"store":    {mod, "net/http"},
	}
	for pkg, banned := range forbidden {
		files, err := filepath.Glob(filepath.Join(pkg, "*.go"))
		if err != nil || len(files) == 0 {
			t.Fatalf("package %s: no files (%v)", pkg, err)
		}
		for _, f := range files {
			if strings.HasSuffix(f, "_test.go") {
				continue
			}
			src, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			parsed, err := parser.ParseFile(token.NewFileSet(), f, src, parser.ImportsOnly)
			if err != nil {
				t.Fatal(err)
			}
			for _, imp := range parsed.Imports {
				path, _ := strconv.Unquote(imp.Path.Value)
				if slices.ContainsFunc(banned, func(b string) bool { return path == b || strings.HasSuffix(b, "/") && strings.HasPrefix(path, b) }) {
					t.Errorf("%s imports %s, against the package layering", f, path)
				}
			}
		}
	}
}
