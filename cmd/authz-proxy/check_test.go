package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/authz-proxy/authz-proxy/internal/oci"
	"github.com/authz-proxy/authz-proxy/internal/sign"
	"github.com/authz-proxy/authz-proxy/internal/testkit"
)

// TestCheckPrintsTheFindingsTableOfEachScan: an image scanned by Trivy
// (signed in the test) with one finding an exception allows and one that
// denies; check lists both, in text and in JSON.
func TestCheckPrintsTheFindingsTableOfEachScan(t *testing.T) {
	srv := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	defer srv.Close()
	dir := t.TempDir()
	security := testkit.NewSigner(t, filepath.Join(dir, "security.pub"))
	repo, _ := name.NewRepository(strings.TrimPrefix(srv.URL, "http://")+"/acme/app", name.Insecure)
	img, _ := random.Image(128, 1)
	if err := remote.Write(repo.Tag("v1"), img); err != nil {
		t.Fatal(err)
	}
	d, _ := img.Digest()
	finished := time.Now().Add(-time.Hour).UTC().Truncate(time.Second)
	predicate := map[string]any{
		"scanner": map[string]any{"uri": "pkg:github/aquasecurity/trivy@0.50.0", "version": "0.50.0", "result": map[string]any{"SchemaVersion": 2, "Results": []any{
			map[string]any{"Target": "app", "Vulnerabilities": []any{
				map[string]any{"VulnerabilityID": "CVE-2026-0001", "PkgName": "openssl", "InstalledVersion": "3.0.1", "FixedVersion": "3.0.2", "Severity": "CRITICAL"},
				map[string]any{"VulnerabilityID": "CVE-2026-0002", "PkgName": "zlib", "InstalledVersion": "1.2.13", "Severity": "CRITICAL"},
			}}}}},
		"metadata": map[string]any{"scanFinishedOn": finished.Format(time.RFC3339)},
	}
	st, _ := sign.Statement(oci.StatementV01, repo.Name(), d.String(), "https://cosign.sigstore.dev/attestation/vuln/v1", predicate)
	a, err := sign.Attest(security, "https://cosign.sigstore.dev/attestation/vuln/v1", st)
	if err != nil {
		t.Fatal(err)
	}
	if err := sign.AttachAttestationTag(context.Background(), repo, d.String(), []sign.Attestation{a}); err != nil {
		t.Fatal(err)
	}
	cfg := testkit.WriteConfig(t, dir, fmt.Sprintf(`upstreams: [{name: lab, url: '%s', insecure: true}]
attestors: [{name: security, publicKeys: [{file: security.pub}]}]
policy:
  rules:
    - name: scanned
      images: ["lab/**"]
      require:
        - vulnerabilities:
            attestors: [security]
            maximumFixableSeverity: HIGH
            maximumUnfixableSeverity: HIGH
            allowedCves: [{id: CVE-2026-0001, expires: 2099-01-01T00:00:00Z, reason: INC-77}]
`, srv.URL), nil)

	out, errOut, code := runCmd(t, "check", "--config", cfg, "lab/acme/app:v1")
	if code != 1 {
		t.Fatalf("exit %d, want 1 (denied)\n%s%s", code, out, errOut)
	}
	for _, want := range []string{
		"FINDINGS lab/acme/app:v1: scan sha256:", " by attestor security, trivy 0.50.0 (Trivy JSON), finished " + finished.Format(time.RFC3339),
		"ID             SEVERITY  PACKAGE  VERSION  FIXED IN  STATUS    NOTE",
		"CVE-2026-0001  CRITICAL  openssl  3.0.1    3.0.2     excepted  allowedCves CVE-2026-0001 until 2099-01-01T00:00:00Z: INC-77",
		"CVE-2026-0002  CRITICAL  zlib     1.2.13   -         denies    no fix, above maximumUnfixableSeverity HIGH",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("check's output lacks %q:\n%s", want, out)
		}
	}
	out, _, _ = runCmd(t, "check", "--config", cfg, "--output", "json", "lab/acme/app:v1")
	var results []checkResult
	if err := json.Unmarshal([]byte(out), &results); err != nil {
		t.Fatalf("--output json is not JSON: %v\n%s", err, out)
	}
	if len(results) != 1 || len(results[0].Scans) != 1 || len(results[0].Scans[0].Findings) != 2 {
		t.Fatalf("results: %s", out)
	}
	if f := results[0].Scans[0].Findings; f[0].Status != "excepted" || f[1].Status != "denies" || f[1].Package != "zlib" || results[0].Scans[0].Format != "Trivy JSON" {
		t.Errorf("findings: %+v", f)
	}
	// The decision log of the same decision carries what was suppressed.
	if s := results[0].VerifiedBy[0].Suppressed; len(s) != 1 || s[0].ID != "CVE-2026-0001" || s[0].By != "exception" {
		t.Errorf("verifiedBy: %+v", results[0].VerifiedBy)
	}
}
