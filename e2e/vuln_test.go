//go:build e2e

package e2e_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// vulnPolicy has the README's vulnerabilities requirement (scans signed by
// security, the ci key; VEX by vendor, the rogue key) and, for one
// repository, the README's old advice (word for word) over the same scans.
func vulnPolicy(securityPub, vendorPub string) string {
	return fmt.Sprintf(`listen:
  addr: {{ADDR}}
upstreams:
  - name: lab
    url: "http://%s"
    insecure: true
audit:
  file: {{AUDIT}}
attestors:
  - name: security
    publicKeys: [{file: %q}]
  - name: vendor
    publicKeys: [{file: %q}]
policy:
  rules:
    - name: readme-pair
      images: ["lab/vuln/pair"]
      require:
        - attestation:
            predicateType: vuln
            attestors: [security]
            condition: '!predicate.scanner.result.Results.exists(r, r.?Vulnerabilities.orValue([]).exists(v, v.Severity == "CRITICAL"))'
        - attestation:
            predicateType: vuln
            attestors: [security]
            condition: 'now - timestamp(predicate.metadata.scanFinishedOn) < duration("168h")'
    - name: scanned
      images: ["lab/vuln/**"]
      require:
        - vulnerabilities:
            attestors: [security]
            maxAge: 168h
            maximumFixableSeverity: MEDIUM
            maximumUnfixableSeverity: HIGH
            blockedCves: [CVE-2021-44228]
            vex:
              attestors: [vendor]
  default:
    action: deny
`, lab.reg, securityPub, vendorPub)
}

// trivyVuln is the predicate `trivy image --format cosign-vuln` writes:
// cosign's vuln predicate with Trivy's JSON report in scanner.result.
func trivyVuln(finished time.Time, findings ...[3]string) map[string]any {
	var vulns []any
	for _, f := range findings { // id, severity, fixed version
		vulns = append(vulns, map[string]any{"VulnerabilityID": f[0], "PkgName": "openssl", "PkgIdentifier": map[string]any{"PURL": "pkg:deb/debian/openssl@3.0.1"},
			"InstalledVersion": "3.0.1", "FixedVersion": f[2], "Severity": f[1]})
	}
	result := map[string]any{"Target": "app (debian 12.5)", "Class": "os-pkgs", "Type": "debian"}
	if len(vulns) > 0 {
		result["Vulnerabilities"] = vulns
	}
	p := vulnScan(finished, "")
	p["scanner"].(map[string]any)["result"] = map[string]any{"SchemaVersion": 2, "ArtifactName": "app", "ArtifactType": "container_image", "Results": []any{result}}
	return p
}

// openVEX is an OpenVEX v0.2.0 document, as vexctl create writes it, with
// one statement about CVE-2026-0001 in product (none: the attestation's
// subject).
func openVEX(at time.Time, status, product string) map[string]any {
	st := map[string]any{"vulnerability": map[string]any{"name": "CVE-2026-0001"}, "status": status, "timestamp": at.UTC().Format(time.RFC3339)}
	if status == "not_affected" {
		st["justification"] = "vulnerable_code_not_in_execute_path"
	} else {
		st["action_statement"] = "upgrade openssl"
	}
	if product != "" {
		st["products"] = []any{map[string]any{"@id": product}}
	}
	return map[string]any{"@context": "https://openvex.dev/ns/v0.2.0", "@id": "https://vendor.example/vex/" + at.Format("150405.000"), "author": "Vendor",
		"timestamp": at.UTC().Format(time.RFC3339), "version": 1, "statements": []any{st}}
}

// TestVulnerabilityScansAndVEXMadeByCosignArePulledOrDenied attests
// images with the real `cosign attest --type vuln` (Trivy JSON) and
// `--type openvex`, and pulls them with crane through the proxy.
func TestVulnerabilityScansAndVEXMadeByCosignArePulledOrDenied(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	push := func(ref string) v1.Hash { return lab.pushNew(ctx, t, ref) }
	attest := func(key, repo string, d v1.Hash, typ string, predicate any) {
		t.Helper()
		lab.mustAttest(ctx, t, key, repo, d, typ, predicate, false)
	}
	security, vendor := lab.ciKey, lab.rogueKey
	now := time.Now()
	critical := [3]string{"CVE-2026-0001", "CRITICAL", "3.0.2"}
	purl := func(d v1.Hash) string {
		return "pkg:oci/app@sha256%3A" + d.Hex + "?repository_url=" + lab.reg + "/vuln/app"
	}

	clean := push("vuln/app:clean")
	attest(security, "vuln/app", clean, "vuln", trivyVuln(now.Add(-time.Hour), [3]string{"CVE-2026-0009", "MEDIUM", "3.0.2"}))
	rescanned := push("vuln/app:rescanned") // clean 10 days ago, a CRITICAL found yesterday
	attest(security, "vuln/app", rescanned, "vuln", trivyVuln(now.Add(-10*24*time.Hour)))
	attest(security, "vuln/app", rescanned, "vuln", trivyVuln(now.Add(-24*time.Hour), critical))
	pair := push("vuln/pair:rescanned")
	attest(security, "vuln/pair", pair, "vuln", trivyVuln(now.Add(-10*24*time.Hour)))
	attest(security, "vuln/pair", pair, "vuln", trivyVuln(now.Add(-24*time.Hour), critical))
	vexed := push("vuln/app:vexed")
	attest(security, "vuln/app", vexed, "vuln", trivyVuln(now.Add(-time.Hour), critical))
	attest(vendor, "vuln/app", vexed, "openvex", openVEX(now, "not_affected", purl(vexed)))
	otherDigest := push("vuln/app:vex-for-another")
	attest(security, "vuln/app", otherDigest, "vuln", trivyVuln(now.Add(-time.Hour), critical))
	attest(vendor, "vuln/app", otherDigest, "openvex", openVEX(now, "not_affected", purl(vexed)))
	untrusted := push("vuln/app:vex-by-security")
	attest(security, "vuln/app", untrusted, "vuln", trivyVuln(now.Add(-time.Hour), critical))
	attest(security, "vuln/app", untrusted, "openvex", openVEX(now, "not_affected", ""))
	superseded := push("vuln/app:vex-superseded")
	attest(security, "vuln/app", superseded, "vuln", trivyVuln(now.Add(-time.Hour), critical))
	attest(vendor, "vuln/app", superseded, "openvex", openVEX(now.Add(-time.Hour), "not_affected", purl(superseded)))
	attest(vendor, "vuln/app", superseded, "openvex", openVEX(now, "affected", purl(superseded)))
	blocked := push("vuln/app:log4shell")
	attest(security, "vuln/app", blocked, "vuln", trivyVuln(now.Add(-time.Hour), [3]string{"CVE-2021-44228", "LOW", ""}))
	stale := push("vuln/app:stale")
	attest(security, "vuln/app", stale, "vuln", trivyVuln(now.Add(-10*24*time.Hour)))

	p := startTestProxy(t, "vulnerabilities", vulnPolicy(lab.ciPub, lab.roguePub))
	const fixable = "CVE-2026-0001 CRITICAL in openssl 3.0.1, fixed in 3.0.2, above maximumFixableSeverity MEDIUM"
	for _, c := range []struct {
		name, ref string
		d         v1.Hash
		rule      string
		wantDeny  string // "": allowed
		wantVEX   bool   // allowed with a finding VEX suppressed
	}{
		{"a fresh scan with a MEDIUM fixable finding", "vuln/app:clean", clean, "scanned", "", false},
		{"an old clean scan and a fresh CRITICAL", "vuln/app:rescanned", rescanned, "scanned", fixable, false},
		{"the README's pair over an old clean scan and a fresh CRITICAL", "vuln/pair:rescanned", pair, "readme-pair", "does not satisfy the condition `!predicate.scanner.result.Results.exists(", false},
		{"a CRITICAL that the vendor's VEX says does not affect this digest", "vuln/app:vexed", vexed, "scanned", "", true},
		{"VEX for another digest", "vuln/app:vex-for-another", otherDigest, "scanned", fixable, false},
		{"VEX from an attestor that is not a VEX attestor", "vuln/app:vex-by-security", untrusted, "scanned", fixable, false},
		{"not_affected superseded by a later affected", "vuln/app:vex-superseded", superseded, "scanned", "the latest VEX statement", false},
		{"a blocked CVE of LOW severity", "vuln/app:log4shell", blocked, "scanned", "CVE-2021-44228 LOW in openssl 3.0.1, blocked (blockedCves)", false},
		{"a scan older than maxAge", "vuln/app:stale", stale, "scanned", "older than maxAge 168h0m0s", false},
	} {
		t.Run(c.name, func(t *testing.T) {
			d, allowed := pullJudged(t, p, c.ref, c.d.String(), c.rule, c.wantDeny)
			if !allowed {
				wantContains(t, "decision log reasons", strings.Join(d.Reasons, "\n"), c.wantDeny)
				return
			}
			var suppressed []string
			for _, v := range d.VerifiedBy {
				for _, s := range v.Suppressed {
					suppressed = append(suppressed, s.ID+" "+s.By)
				}
			}
			if got, want := strings.Join(suppressed, ","), map[bool]string{true: "CVE-2026-0001 vex", false: ""}[c.wantVEX]; got != want {
				t.Errorf("suppressed %q, want %q:\n%s", got, want, d)
			}
		})
	}
}
