package virtual_test

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"testing"

	"github.com/authz-proxy/authz-proxy/internal/sign/virtual"
	"github.com/authz-proxy/authz-proxy/internal/verify"
)

var update = flag.Bool("update", false, "write a new examples/sigstore/trusted_root.json")

// exampleRoot is the trusted root that config.example.yaml names, so that
// the example validates. It is a virtual Sigstore's: it trusts nothing
// real. Regenerate it with go test ./internal/sign/virtual -update.
var exampleRoot = filepath.Join("..", "..", "..", "examples", "sigstore", "trusted_root.json")

func TestExampleTrustedRootParses(t *testing.T) {
	if *update {
		vs, err := virtual.New()
		if err != nil {
			t.Fatal(err)
		}
		raw, err := vs.TrustedRoot()
		if err != nil {
			t.Fatal(err)
		}
		var out bytes.Buffer
		if err := json.Indent(&out, raw, "", "    "); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(exampleRoot, append(out.Bytes(), '\n'), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	raw, err := os.ReadFile(exampleRoot)
	if err != nil {
		t.Fatalf("%v (write it with go test ./internal/sign/virtual -update)", err)
	}
	if _, err := verify.ParseTrustedRoot(raw); err != nil {
		t.Fatal(err)
	}
}
