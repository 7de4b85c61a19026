//go:build e2e

package e2e_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

const (
	reviewType  = "https://example.com/attestations/review/v1"
	goodBuilder = "https://ci.example/builder@v1"
)

// attestPolicy is the README's example policies, with the e2e keys: ci
// signs in CI, qa is a second reviewer (the rogue key).
func attestPolicy(ciPub, qaPub string) string {
	return fmt.Sprintf(`listen:
  addr: {{ADDR}}
upstreams:
  - name: lab
    url: "http://%s"
    insecure: true
defaultUpstream: lab
audit:
  file: {{AUDIT}}
attestors:
  - name: ci
    publicKeys: [{file: %q}]
  - name: qa
    publicKeys: [{file: %q}]
policy:
  rules:
    - name: trusted-builder
      images: ["lab/att/builder"]
      require:
        - attestation:
            predicateType: slsaprovenance1
            attestors: [ci]
            condition: 'predicate.runDetails.builder.id == "%s"'
    - name: legacy-builder
      images: ["lab/att/legacy"]
      require:
        - attestation:
            predicateType: slsaprovenance
            attestors: [ci]
            condition: 'predicate.builder.id == "%s"'
    - name: scanned
      images: ["lab/att/scanned"]
      require:
        - attestation:
            predicateType: vuln
            attestors: [ci]
            condition: >-
              now - timestamp(predicate.metadata.scanFinishedOn) < duration("168h") &&
              !predicate.scanner.result.Results.exists(r,
                r.?Vulnerabilities.orValue([]).exists(v, v.Severity == "CRITICAL"))
    - name: broken-condition
      images: ["lab/att/broken"]
      require:
        - attestation:
            predicateType: slsaprovenance1
            attestors: [ci]
            condition: 'predicate.runDetails.metadata.finishedOn != ""'
    - name: one-reviewer
      images: ["lab/att/reviewed-one"]
      require:
        - attestation:
            predicateType: %s
            attestors: [ci, qa]
            threshold: 1
            select: any
            condition: 'predicate.approved == true'
    - name: two-reviewers
      images: ["lab/att/reviewed-two"]
      require:
        - attestation:
            predicateType: %s
            attestors: [ci, qa]
            threshold: 2
            condition: 'predicate.approved == true'
  default:
    action: deny
`, lab.reg, ciPub, qaPub, goodBuilder, goodBuilder, reviewType, reviewType)
}

// cosignAttest runs the real `cosign attest` on repo@digest upstream; with
// bundle, in cosign v2's referrers mode (--new-bundle-format).
func (w *world) cosignAttest(ctx context.Context, key, repo string, digest v1.Hash, predicateType string, predicate any, bundle bool) error {
	b, err := json.Marshal(predicate)
	if err != nil {
		return err
	}
	f, err := os.CreateTemp(w.dir, "predicate-*.json")
	if err != nil {
		return err
	}
	if _, err := f.Write(b); err != nil {
		return err
	}
	f.Close()
	args := []string{"attest", "--key", key, "--type", predicateType, "--predicate", f.Name(), "--tlog-upload=false", "-y", "--allow-http-registry"}
	if bundle {
		args = append(args, "--new-bundle-format")
	}
	args = append(args, w.reg+"/"+repo+"@"+digest.String())
	if out, err := w.tool(ctx, nil, "cosign", args...); err != nil {
		return fmt.Errorf("cosign %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return nil
}

// pushNew writes a new linux/amd64 image at repo:tag on the upstream and
// returns its digest; a failure ends the test.
func (w *world) pushNew(ctx context.Context, t testing.TB, ref string) v1.Hash {
	t.Helper()
	img, err := ociImage("linux", "amd64")
	if err != nil {
		t.Fatal(err)
	}
	d, err := w.pushImage(ctx, img, ref)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// mustAttest is cosignAttest, a failure ending the test.
func (w *world) mustAttest(ctx context.Context, t testing.TB, key, repo string, digest v1.Hash, predicateType string, predicate any, bundle bool) {
	t.Helper()
	if err := w.cosignAttest(ctx, key, repo, digest, predicateType, predicate, bundle); err != nil {
		t.Fatal(err)
	}
}

func slsa1(builder string) map[string]any {
	return map[string]any{
		"buildDefinition": map[string]any{"buildType": "https://ci.example/build/v1", "externalParameters": map[string]any{"ref": "refs/heads/main"}},
		"runDetails":      map[string]any{"builder": map[string]any{"id": builder}},
	}
}

func vulnScan(finished time.Time, severity string) map[string]any {
	result := map[string]any{"Target": "app"}
	if severity != "" {
		result["Vulnerabilities"] = []any{map[string]any{"VulnerabilityID": "CVE-2026-0001", "Severity": severity}}
	}
	return map[string]any{
		"invocation": map[string]any{"uri": "", "event_id": "", "builder.id": ""},
		"scanner":    map[string]any{"uri": "pkg:github/aquasecurity/trivy@0.50.0", "version": "0.50.0", "result": map[string]any{"Results": []any{result}}},
		"metadata":   map[string]any{"scanStartedOn": finished.Add(-time.Minute).UTC().Format(time.RFC3339), "scanFinishedOn": finished.UTC().Format(time.RFC3339)},
	}
}

// TestAttestationsMadeByCosignArePulledOrDenied attests images with the real
// `cosign attest` (--type slsaprovenance, slsaprovenance1, vuln and a custom
// URI; the .att tag and the referrers mode) and pulls them with crane
// through a proxy whose policy has the README's example rules.
func TestAttestationsMadeByCosignArePulledOrDenied(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	push := func(ref string) v1.Hash { return lab.pushNew(ctx, t, ref) }
	attest := func(key, repo string, d v1.Hash, typ string, predicate any, bundle bool) {
		t.Helper()
		lab.mustAttest(ctx, t, key, repo, d, typ, predicate, bundle)
	}
	ci, qa := lab.ciKey, lab.rogueKey
	now := time.Now()

	builder := push("att/builder:v1")
	attest(ci, "att/builder", builder, "slsaprovenance1", slsa1(goodBuilder), false)
	legacy := push("att/legacy:v1")
	attest(ci, "att/legacy", legacy, "slsaprovenance", map[string]any{"builder": map[string]any{"id": goodBuilder}, "buildType": "https://ci.example/build/v1"}, false)
	laptop := push("att/builder:laptop")
	attest(ci, "att/builder", laptop, "slsaprovenance1", slsa1("https://laptop.example/me"), false)
	missing := push("att/builder:missing")
	attest(ci, "att/builder", missing, "vuln", vulnScan(now, ""), false) // another type only
	rogue := push("att/builder:rogue")
	attest(qa, "att/builder", rogue, "slsaprovenance1", slsa1(goodBuilder), false)
	copied := push("att/builder:copied")
	src, dst := lab.reg+"/att/builder:sha256-"+builder.Hex+".att", lab.reg+"/att/builder:sha256-"+copied.Hex+".att"
	if out, err := crane(t, "copy", "--insecure", src, dst); err != nil {
		t.Fatalf("crane copy %s %s: %v\n%s", src, dst, err, out)
	}
	clean := push("att/scanned:clean")
	attest(ci, "att/scanned", clean, "vuln", vulnScan(now.Add(-time.Hour), "HIGH"), false)
	critical := push("att/scanned:critical")
	attest(ci, "att/scanned", critical, "vuln", vulnScan(now.Add(-time.Hour), "CRITICAL"), false)
	stale := push("att/scanned:stale")
	attest(ci, "att/scanned", stale, "vuln", vulnScan(now.Add(-30*24*time.Hour), ""), false)
	broken := push("att/broken:v1")
	attest(ci, "att/broken", broken, "slsaprovenance1", slsa1(goodBuilder), true)
	one := push("att/reviewed-one:v1")
	two := push("att/reviewed-two:v1")
	for _, r := range []struct {
		repo string
		d    v1.Hash
	}{{"att/reviewed-one", one}, {"att/reviewed-two", two}} {
		attest(ci, r.repo, r.d, reviewType, map[string]any{"approved": true, "reviewers": []string{"alice"}}, true)
		attest(qa, r.repo, r.d, reviewType, map[string]any{"approved": false}, true)
	}

	p := startTestProxy(t, "attestations", attestPolicy(lab.ciPub, lab.roguePub))
	pull := func(t *testing.T, ref string, d v1.Hash) (string, decision, error) {
		t.Helper()
		mark := p.mark()
		full := p.addr + "/lab/" + ref
		out, err := crane(t, "pull", "--insecure", full, filepath.Join(t.TempDir(), "image.tar"))
		return out, p.decisionFor(t, mark, d.String(), ""), err
	}
	for _, c := range []struct {
		name, ref string
		d         v1.Hash
		rule      string
		wantBy    []string // allowed, verified by these attestors
		wantDeny  string   // denied, with this in the reason
	}{
		{"SLSA v1 provenance from the trusted builder (.att tag)", "att/builder:v1", builder, "trusted-builder", []string{"ci"}, ""},
		{"SLSA v0.2 provenance from the trusted builder", "att/legacy:v1", legacy, "legacy-builder", []string{"ci"}, ""},
		{"provenance from another builder: condition false", "att/builder:laptop", laptop, "trusted-builder",
			nil, "does not satisfy the condition `predicate.runDetails.builder.id == \"" + goodBuilder + "\"`"},
		{"no provenance at all", "att/builder:missing", missing, "trusted-builder", nil, "ci: no attestation of this type found"},
		{"provenance signed by another key", "att/builder:rogue", rogue, "trusted-builder", nil, "ci: 1 attestation(s) of this type found, none signed by its keys"},
		{"provenance of another image copied onto this one", "att/builder:copied", copied, "trusted-builder", nil, "is about sha256:" + builder.Hex + ", not this digest"},
		{"fresh scan without critical vulnerabilities", "att/scanned:clean", clean, "scanned", []string{"ci"}, ""},
		{"scan with a critical vulnerability", "att/scanned:critical", critical, "scanned", nil, "does not satisfy the condition"},
		{"scan older than a week", "att/scanned:stale", stale, "scanned", nil, "does not satisfy the condition"},
		{"condition that fails at run time (referrers mode)", "att/broken:v1", broken, "broken-condition", nil, "failed on its attestation"},
		{"one of two reviewers approved, threshold 1 (referrers mode)", "att/reviewed-one:v1", one, "one-reviewer", []string{"ci"}, ""},
		{"one of two reviewers approved, threshold 2 (referrers mode)", "att/reviewed-two:v1", two, "two-reviewers", nil, "(1 of the 2 attestors required): qa: its attestation"},
	} {
		t.Run(c.name, func(t *testing.T) {
			out, d, err := pull(t, c.ref, c.d)
			if c.wantDeny == "" {
				mustSucceed(t, "crane pull "+c.ref, out, err)
				checkDecision(t, d, "allow", "lab/"+strings.Split(c.ref, ":")[0], c.rule)
				if got := strings.Join(d.Attestors(), ","); got != strings.Join(c.wantBy, ",") {
					t.Errorf("verified by %s, want %v:\n%s", got, c.wantBy, d)
				}
				for _, v := range d.VerifiedBy {
					if v.PredicateType == "" || !strings.HasPrefix(v.Attestation, "sha256:") {
						t.Errorf("verifiedBy does not name the attestation and its type:\n%s", d)
					}
				}
				return
			}
			out = mustFail(t, "crane pull "+c.ref, out, err)
			checkDecision(t, d, "deny", "lab/"+strings.Split(c.ref, ":")[0], c.rule)
			wantContains(t, "crane pull "+c.ref, out, "DENIED", c.wantDeny)
			wantContains(t, "decision log reasons", strings.Join(d.Reasons, "\n"), c.wantDeny)
		})
	}

	t.Run("validate and check with the same configuration", func(t *testing.T) {
		run := func(args ...string) (string, error) {
			cmd := exec.CommandContext(ctx, lab.proxyBin, args...)
			cmd.Env = lab.env()
			out, err := cmd.Output()
			return string(out), err
		}
		out, err := run("validate", "--config", p.config)
		mustSucceed(t, "authz-proxy validate", out, err)
		out, err = run("check", "--config", p.config, "--output", "json", "lab/att/builder:v1", "lab/att/builder:laptop")
		mustFail(t, "authz-proxy check (one image is denied)", out, err)
		var results []struct {
			Decision string   `json:"decision"`
			Reasons  []string `json:"reasons"`
		}
		if err := json.Unmarshal([]byte(out), &results); err != nil || len(results) != 2 {
			t.Fatalf("check --output json: %v\n%s", err, out)
		}
		if results[0].Decision != "allow" || results[1].Decision != "deny" || !strings.Contains(strings.Join(results[1].Reasons, ";"), "does not satisfy the condition") {
			t.Errorf("check results: %+v", results)
		}
	})

	t.Run("cosign verify-attestation reads the .att tag through the proxy", func(t *testing.T) {
		ref := p.addr + "/lab/att/builder@" + builder.String()
		out, err := lab.tool(ctx, nil, "cosign", "verify-attestation", "--key", lab.ciPub, "--type", "slsaprovenance1", "--insecure-ignore-tlog",
			"--allow-http-registry", "--trusted-root", lab.trustedRoot, ref)
		mustSucceed(t, "cosign verify-attestation "+ref, out, err)
		wantOffline(t, out)
	})
}
