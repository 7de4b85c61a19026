package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/authz-proxy/authz-proxy/internal/demo"
)

// runCmd runs a command line and returns its output and exit code.
func runCmd(t *testing.T, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	var out, errOut bytes.Buffer
	err := run(context.Background(), args, &out, &errOut)
	if err != nil {
		code = 2
		var ee *exitError
		if errors.As(err, &ee) {
			code = ee.code
		}
		if ee == nil || ee.err != nil {
			errOut.WriteString(err.Error())
		}
	}
	return out.String(), errOut.String(), code
}

func TestExampleConfigIsValid(t *testing.T) {
	out, errOut, code := runCmd(t, "validate", "--config", "../../config.example.yaml")
	if code != 0 || !strings.Contains(out, "OK") {
		t.Fatalf("validate config.example.yaml: exit %d\n%s%s", code, out, errOut)
	}
}

func TestBadCommandLinesExit2WithAClearError(t *testing.T) {
	dir := t.TempDir()
	broken := filepath.Join(dir, "broken.yaml")
	if err := os.WriteFile(broken, []byte("upstreams:\n  - name: lab\n    url: http://127.0.0.1:1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		args []string
		want string
	}{
		{nil, "no command given"},
		{[]string{"frobnicate"}, `unknown command "frobnicate"`},
		{[]string{"validate"}, "--config FILE is required"},
		{[]string{"validate", "--config", filepath.Join(dir, "missing.yaml")}, "no such file"},
		{[]string{"validate", "--config", broken}, "broken.yaml:3: upstreams[0].url: \"http://127.0.0.1:1\" is plain http"},
		{[]string{"check", "--config", "../../config.example.yaml"}, "name at least one IMAGE"},
		{[]string{"check", "--config", "../../config.example.yaml", "--output", "yaml", "x/y"}, "want text or json"},
		{[]string{"serve", "--bogus"}, "flag provided but not defined"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			_, errOut, code := runCmd(t, tt.args...)
			if code != 2 || !strings.Contains(errOut, tt.want) {
				t.Fatalf("exit %d, stderr %q; want exit 2 and %q", code, errOut, tt.want)
			}
		})
	}
}

func TestDemoShowsAllowedAndDeniedPullsAndTheDecisionLog(t *testing.T) {
	out, errOut, code := runCmd(t, "demo")
	if code != 0 {
		t.Fatalf("demo: exit %d\n%s\n%s", code, out, errOut)
	}
	for _, want := range []string{
		"/lab/demo/app:signed", "403 DENIED: no cosign signature found",
		"pulled: the index and its 2 platform images",
		"does not satisfy the condition `predicate.runDetails.builder.id == \"https://ci.example/builder@v1\"`",
		"/lab/notary/app:forged", "does not count for attestor release: certificate chain:",
		`"x509Subject":"CN=release,O=Acme,ST=WA,C=US"`,
		`"decision":"allow"`, `"decision":"deny"`,
		// The store: a second pull, and pulls with the upstream stopped.
		"up, second pull  pulled: 2 manifests from the store, 3 blobs from the store, 0 bytes of blobs from the upstream",
		"stopped          pulled: 2 manifests from the store, the tag by its last known digest (stale), 3 blobs from the store, 0 bytes of blobs from the upstream",
		`"source":"stale"`, `"source":"store"`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("demo output lacks %q:\n%s", want, out)
		}
	}
	for _, line := range strings.Split(out, "\n") {
		if strings.Contains(line, "/lab/demo/app:unsigned ") && strings.Contains(line, "stopped") && !strings.Contains(line, "403 DENIED: no cosign signature found") {
			t.Errorf("with the upstream stopped, the unsigned image is not denied as before: %s", line)
		}
		if strings.Contains(line, "/lab/demo/app:never ") && !strings.Contains(line, "stopped          503 UNAVAILABLE") {
			t.Errorf("with the upstream stopped, an image never pulled is not 503: %s", line)
		}
		if (strings.Contains(line, "/lab/demo/app:signed ") || strings.Contains(line, "/lab/vetted/app:ci-built ") || strings.Contains(line, "/lab/notary/app:signed ")) && !strings.HasSuffix(strings.TrimSpace(line), "pulled") && !strings.Contains(line, "  pulled: ") {
			t.Errorf("signed image not pulled: %s", line)
		}
	}
}

func TestCheckJudgesImagesAndSetsTheExitCode(t *testing.T) {
	lab, err := demo.Start(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer lab.Close()
	cfg := lab.ConfigPath

	out, errOut, code := runCmd(t, "check", "--config", cfg, "lab/demo/app:signed", "lab/tools/debug")
	if code != 0 || !strings.Contains(out, "allow") {
		t.Fatalf("all allowed: exit %d\n%s%s", code, out, errOut)
	}
	out, _, code = runCmd(t, "check", "--config", cfg, "--output", "json", "lab/demo/app:signed", "demo/app:unsigned")
	if code != 1 {
		t.Fatalf("one denied: exit %d, want 1\n%s", code, out)
	}
	var results []checkResult
	if err := json.Unmarshal([]byte(out), &results); err != nil {
		t.Fatalf("--output json is not JSON: %v\n%s", err, out)
	}
	if len(results) != 2 || results[0].Decision != "allow" || results[1].Decision != "deny" || results[1].Image != "lab/demo/app" || len(results[1].Reasons) == 0 {
		t.Errorf("results: %+v", results)
	}
	out, _, code = runCmd(t, "check", "--config", cfg, "lab/demo/nothing:here")
	if code != 2 || !strings.Contains(out, "error") {
		t.Errorf("missing image: exit %d, want 2\n%s", code, out)
	}
}
