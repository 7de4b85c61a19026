package vuln_test

import (
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/authz-proxy/authz-proxy/internal/vuln"
)

// The same two vulnerabilities, as each scanner writes them: openssl
// 3.0.1 with CVE-2026-0001 (CRITICAL, fixed in 3.0.2) and zlib 1.2.13
// with CVE-2026-0002 (MEDIUM, no fix).
const (
	trivyReport = `{"SchemaVersion": 2, "ArtifactName": "ghcr.io/acme/app", "Results": [
	  {"Target": "ghcr.io/acme/app (debian 12)", "Class": "os-pkgs", "Vulnerabilities": [
	    {"VulnerabilityID": "CVE-2026-0002", "PkgName": "zlib", "PkgIdentifier": {"PURL": "pkg:deb/debian/zlib@1.2.13?distro=debian-12"},
	     "InstalledVersion": "1.2.13", "Status": "affected", "Severity": "MEDIUM"},
	    {"VulnerabilityID": "CVE-2026-0001", "PkgName": "openssl", "PkgIdentifier": {"PURL": "pkg:deb/debian/openssl@3.0.1?distro=debian-12"},
	     "InstalledVersion": "3.0.1", "FixedVersion": "3.0.2", "Status": "fixed", "Severity": "CRITICAL"}]},
	  {"Target": "usr/lib/libssl.so", "Class": "lang-pkgs", "Vulnerabilities": [
	    {"VulnerabilityID": "CVE-2026-0001", "PkgName": "openssl", "PkgIdentifier": {"PURL": "pkg:deb/debian/openssl@3.0.1?distro=debian-12"},
	     "InstalledVersion": "3.0.1", "FixedVersion": "3.0.2", "Severity": "CRITICAL"}]},
	  {"Target": "app", "Class": "lang-pkgs"}]}`
	grypeReport = `{"matches": [
	  {"vulnerability": {"id": "GHSA-2222-3333-4444", "severity": "Critical", "fix": {"versions": ["3.0.2"], "state": "fixed"}},
	   "relatedVulnerabilities": [{"id": "CVE-2026-0001"}],
	   "artifact": {"name": "openssl", "version": "3.0.1", "type": "deb", "purl": "pkg:deb/debian/openssl@3.0.1?distro=debian-12"}},
	  {"vulnerability": {"id": "CVE-2026-0002", "severity": "Medium", "fix": {"versions": [], "state": "not-fixed"}},
	   "relatedVulnerabilities": [],
	   "artifact": {"name": "zlib", "version": "1.2.13", "type": "deb", "purl": "pkg:deb/debian/zlib@1.2.13?distro=debian-12"}}],
	 "descriptor": {"name": "grype", "version": "0.79.0"}}`
	// trivy image --format sarif
	trivySARIF = `{"version": "2.1.0", "$schema": "https://json.schemastore.org/sarif-2.1.0.json", "runs": [{
	  "tool": {"driver": {"name": "Trivy", "rules": [
	    {"id": "CVE-2026-0001", "name": "OsPackageVulnerability", "help": {"text": "Vulnerability CVE-2026-0001\nSeverity: CRITICAL\nPackage: openssl\nFixed Version: 3.0.2\nLink: [CVE-2026-0001](https://avd.aquasec.com/nvd/cve-2026-0001)\nbad"},
	     "properties": {"precision": "very-high", "security-severity": "9.8", "tags": ["vulnerability", "security", "CRITICAL"]}},
	    {"id": "CVE-2026-0002", "name": "OsPackageVulnerability", "help": {"text": "Vulnerability CVE-2026-0002\nSeverity: MEDIUM\nPackage: zlib\nFixed Version: \nLink: [CVE-2026-0002](https://avd.aquasec.com/nvd/cve-2026-0002)"},
	     "properties": {"security-severity": "5.5", "tags": ["vulnerability", "security", "MEDIUM"]}},
	    {"id": "DS002", "name": "Misconfiguration", "help": {"text": "Misconfiguration DS002\nType: dockerfile\nSeverity: HIGH"}}]}},
	  "results": [
	    {"ruleId": "CVE-2026-0001", "ruleIndex": 0, "level": "error", "message": {"text": "Package: openssl\nInstalled Version: 3.0.1\nVulnerability CVE-2026-0001\nSeverity: CRITICAL\nFixed Version: 3.0.2\nLink: [CVE-2026-0001](https://avd.aquasec.com/nvd/cve-2026-0001)"}},
	    {"ruleId": "CVE-2026-0002", "ruleIndex": 1, "level": "warning", "message": {"text": "Package: zlib\nInstalled Version: 1.2.13\nVulnerability CVE-2026-0002\nSeverity: MEDIUM\nFixed Version: \nLink: [CVE-2026-0002](https://avd.aquasec.com/nvd/cve-2026-0002)"}},
	    {"ruleId": "DS002", "ruleIndex": 2, "level": "error", "message": {"text": "Artifact: Dockerfile\nType: dockerfile\nVulnerability DS002\nSeverity: HIGH"}}]}]}`
	// grype -o sarif
	grypeSARIF = `{"version": "2.1.0", "runs": [{
	  "tool": {"driver": {"name": "grype", "version": "0.79.0", "rules": [
	    {"id": "CVE-2026-0001-openssl", "name": "DpkgMatcherExactDirectMatch", "help": {"text": "Vulnerability CVE-2026-0001\nSeverity: critical\nPackage: openssl\nVersion: 3.0.1\nFix Version: 3.0.2\nType: deb\nLocation: /var/lib/dpkg/status\nData Namespace: debian:distro:debian:12\nLink: CVE-2026-0001"},
	     "properties": {"security-severity": "1.0"}},
	    {"id": "CVE-2026-0002-zlib", "name": "DpkgMatcherExactDirectMatch", "help": {"text": "Vulnerability CVE-2026-0002\nSeverity: medium\nPackage: zlib\nVersion: 1.2.13\nFix Version: \nType: deb"},
	     "properties": {"security-severity": "5.5"}}]}},
	  "results": [
	    {"ruleId": "CVE-2026-0001-openssl", "message": {"text": "The path /var/lib/dpkg/status reports openssl at version 3.0.1  which is a vulnerable (deb) package installed in the container"}},
	    {"ruleId": "CVE-2026-0002-zlib", "message": {"text": "The path /var/lib/dpkg/status reports zlib at version 1.2.13  which is a vulnerable (deb) package installed in the container"}}]}]}`
)

// row is what every format must agree on about a finding.
type row struct {
	ID, Severity, Package, Version, Fixed string
	Fixable                               bool
}

func rows(fs []vuln.Finding) []row {
	out := make([]row, len(fs))
	for i, f := range fs {
		out[i] = row{f.ID, f.Severity.String(), f.Package, f.Version, f.FixedVersion, f.Fixable}
	}
	return out
}

func TestTrivyGrypeAndSARIFReportsGiveTheSameFindings(t *testing.T) {
	want := []row{
		{"CVE-2026-0001", "CRITICAL", "openssl", "3.0.1", "3.0.2", true},
		{"CVE-2026-0002", "MEDIUM", "zlib", "1.2.13", "", false},
	}
	for _, tt := range []struct {
		name, report, format string
	}{
		{"Trivy JSON (one package found in two targets counts once)", trivyReport, vuln.FormatTrivy},
		{"Grype JSON (its GHSA id gives way to the CVE it relates to)", grypeReport, vuln.FormatGrype},
		{"Trivy's SARIF (its misconfiguration is no finding)", trivySARIF, vuln.FormatSARIF},
		{"Grype's SARIF (severity from the help text, not its security-severity)", grypeSARIF, vuln.FormatSARIF},
	} {
		t.Run(tt.name, func(t *testing.T) {
			format, fs, err := vuln.ParseReport([]byte(tt.report))
			if err != nil {
				t.Fatal(err)
			}
			if format != tt.format {
				t.Errorf("format %q, want %q", format, tt.format)
			}
			if got := rows(fs); !reflect.DeepEqual(got, want) {
				t.Errorf("findings\n%+v\nwant\n%+v", got, want)
			}
		})
	}
}

func TestGrypeKeepsTheAdvisoryItReportedAsAnAlias(t *testing.T) {
	_, fs, err := vuln.ParseReport([]byte(grypeReport))
	if err != nil {
		t.Fatal(err)
	}
	if !fs[0].Names("ghsa-2222-3333-4444") || !fs[0].Names("CVE-2026-0001") || fs[0].PURL == "" {
		t.Errorf("finding %+v", fs[0])
	}
}

func TestACosignVulnPredicateGivesItsScannerTimesAndFindings(t *testing.T) {
	pred := `{"invocation": {"uri": "", "event_id": "", "builder.id": ""},
	  "scanner": {"uri": "pkg:github/aquasecurity/trivy@0.50.0", "version": "0.50.0", "db": {"uri": "", "version": ""}, "result": ` + trivyReport + `},
	  "metadata": {"scanStartedOn": "2026-05-01T10:00:00Z", "scanFinishedOn": "2026-05-01T10:01:00Z"}}`
	s, err := vuln.ParseCosignVuln([]byte(pred))
	if err != nil {
		t.Fatal(err)
	}
	if s.Scanner() != "trivy 0.50.0" || s.Format != vuln.FormatTrivy || !s.FinishedOn.Equal(time.Date(2026, 5, 1, 10, 1, 0, 0, time.UTC)) || len(s.Findings) != 2 {
		t.Errorf("scan %+v (scanner %q)", s, s.Scanner())
	}
	zero := strings.Replace(pred, "2026-05-01T10:01:00Z", "0001-01-01T00:00:00Z", 1)
	if s, err := vuln.ParseCosignVuln([]byte(zero)); err != nil || !s.FinishedOn.IsZero() {
		t.Errorf("cosign's zero time: %v, %v", s.FinishedOn, err)
	}
}

func TestABadReportIsAnErrorThatSaysWhatIsWrong(t *testing.T) {
	for _, tt := range []struct{ name, input, want string }{
		{"not JSON", `{"Results": [`, "scanner report: unexpected end of JSON input"},
		{"not an object", `[]`, "cannot unmarshal array"},
		{"no known format", `{"vulnerabilities": []}`, "neither Trivy JSON (Results), Grype JSON (matches) nor SARIF (runs)"},
		{"Trivy finding without an id", `{"SchemaVersion": 2, "Results": [{"Vulnerabilities": [{"PkgName": "x"}]}]}`, "Results[0].Vulnerabilities[0] has no VulnerabilityID"},
		{"Trivy field of the wrong type", `{"Results": [{"Vulnerabilities": [{"VulnerabilityID": 7}]}]}`, "Results.Vulnerabilities.VulnerabilityID of type string"},
		{"Grype match without an id", `{"matches": [{"vulnerability": {"severity": "High"}}]}`, "matches[0].vulnerability has no id"},
		{"SARIF of another version", `{"version": "1.0.0", "runs": []}`, `SARIF version "1.0.0"`},
		{"SARIF rule index out of range", `{"version": "2.1.0", "runs": [{"results": [{"ruleId": "CVE-2026-0001", "ruleIndex": 3}]}]}`, "ruleIndex 3 names no rule"},
		{"SARIF security-severity that is no score", `{"version": "2.1.0", "runs": [{"tool": {"driver": {"rules": [{"id": "CVE-2026-0001", "properties": {"security-severity": "high"}}]}}, "results": [{"ruleId": "CVE-2026-0001"}]}]}`, "is not a CVSS score"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := vuln.ParseReport([]byte(tt.input))
			if !errors.Is(err, vuln.ErrMalformed) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("err = %v, want %q", err, tt.want)
			}
		})
	}
	if _, err := vuln.ParseCosignVuln([]byte(`{"scanner": {"uri": "x"}}`)); err == nil || !strings.Contains(err.Error(), "no scanner.result") {
		t.Errorf("predicate without a result: %v", err)
	}
}

func TestSeveritiesAPolicyMayName(t *testing.T) {
	for _, s := range []string{"NONE", "low", "Medium", "HIGH", "CRITICAL"} {
		if _, err := vuln.ParseSeverity(s); err != nil {
			t.Errorf("%s: %v", s, err)
		}
	}
	for _, s := range []string{"UNKNOWN", "SEVERE", ""} {
		if _, err := vuln.ParseSeverity(s); err == nil || !strings.Contains(err.Error(), "want one of NONE, LOW, MEDIUM, HIGH, CRITICAL") {
			t.Errorf("%q: %v", s, err)
		}
	}
	for id, ok := range map[string]bool{"CVE-2024-1234": true, "cve-2021-44228": true, "CVE-2024-12345678": true, "GHSA-jfh8-c2jp-5v3q": true,
		"CVE-2024-12": false, "CVE 2024 1234": false, "GHSA-1234-5678-9abc": false, "": false} {
		if vuln.ValidID(id) != ok {
			t.Errorf("ValidID(%q) = %v", id, !ok)
		}
	}
}
