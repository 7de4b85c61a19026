package policy_test

import (
	"context"
	"fmt"
	"io"
	"log"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/sigstore/sigstore/pkg/signature"

	"github.com/authz-proxy/authz-proxy/internal/audit"
	"github.com/authz-proxy/authz-proxy/internal/oci"
	"github.com/authz-proxy/authz-proxy/internal/policy"
	"github.com/authz-proxy/authz-proxy/internal/sign"
	"github.com/authz-proxy/authz-proxy/internal/sign/virtual"
	"github.com/authz-proxy/authz-proxy/internal/testkit"
	"github.com/authz-proxy/authz-proxy/internal/upstream"
)

const (
	vulnType = "https://cosign.sigstore.dev/attestation/vuln/v1"
	vexType  = "https://openvex.dev/ns"
)

// scanLab is an in-process registry whose images the security team
// scans (key security), a vendor writes VEX for (key vendor), and someone
// else signs too (key rogue, no attestor's).
type scanLab struct {
	t                       testing.TB
	srv                     *httptest.Server
	dir                     string
	security, vendor, rogue signature.Signer
	// scanner signs keylessly for attestor scanner, with a certificate of
	// the private CA scanning (its workflow, scannerID); log enters
	// signatures in a transparency log, tsa stamps them (RFC 3161).
	scanner *virtual.Signer
	log     *virtual.Sigstore
	tsa     *virtual.TSA
	client  *upstream.Client
}

// scannerID and scannerIssuer are the identity attestor scanner trusts.
const (
	scannerID     = "https://github.com/acme/app/.github/workflows/scan.yml@refs/heads/main"
	scannerIssuer = "https://token.actions.githubusercontent.com"
)

func newScanLab(t testing.TB) *scanLab {
	t.Helper()
	srv := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	t.Cleanup(srv.Close)
	l := &scanLab{t: t, srv: srv, dir: t.TempDir()}
	l.security = testkit.NewSigner(t, filepath.Join(l.dir, "security.pub"))
	l.vendor = testkit.NewSigner(t, filepath.Join(l.dir, "vendor.pub"))
	l.rogue = testkit.NewSigner(t, filepath.Join(l.dir, "rogue.pub"))
	var err error
	now := time.Now()
	scanning, err := virtual.NewCA("acme scanning", now.Add(-365*24*time.Hour), now.Add(365*24*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if l.scanner, err = scanning.Issue(virtual.Leaf{Subject: scannerID, Issuer: scannerIssuer, NotBefore: now.Add(-24 * time.Hour), NotAfter: now.Add(24 * time.Hour)}); err != nil {
		t.Fatal(err)
	}
	if l.log, err = virtual.New(); err != nil {
		t.Fatal(err)
	}
	if l.tsa, err = virtual.NewTSA("acme timestamps", now.Add(-24*time.Hour), now.Add(24*time.Hour)); err != nil {
		t.Fatal(err)
	}
	root, err := virtual.TrustedRoot(virtual.Parts{Log: l.log, Authorities: []*virtual.CA{scanning}, TSAs: []*virtual.TSA{l.tsa}})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(l.dir, "root.json"), root, 0o600); err != nil {
		t.Fatal(err)
	}
	if l.client, err = upstream.New(upstream.Options{Name: "lab", URL: srv.URL, Insecure: true}); err != nil {
		t.Fatal(err)
	}
	return l
}

// policy compiles a rule for lab/** with the require entries given (YAML,
// indented for the list under require).
func (l *scanLab) policy(require string) *policy.Policy {
	l.t.Helper()
	p, err := policy.Compile(testkit.LoadConfig(l.t, l.dir, fmt.Sprintf(`upstreams: [{name: lab, url: '%s', insecure: true}]
attestors:
  - {name: security, publicKeys: [{file: security.pub}]}
  - {name: vendor, publicKeys: [{file: vendor.pub}]}
  - {name: rogue, publicKeys: [{file: rogue.pub}]}
  - {name: scanner, keyless: {issuer: %s, subject: %s, trustedRootFile: root.json}}
policy:
  rules:
    - name: scanned
      images: ["lab/**"]
      require:
%s`, l.srv.URL, scannerIssuer, scannerID, require), nil))
	if err != nil {
		l.t.Fatal(err)
	}
	return p
}

// image pushes a fresh image to repo and returns how the policy asks for it.
func (l *scanLab) image(repo string) policy.Subject {
	l.t.Helper()
	ref, _ := name.NewRepository(strings.TrimPrefix(l.srv.URL, "http://")+"/"+repo, name.Insecure)
	img, _ := random.Image(128, 1)
	if err := remote.Write(ref.Tag("v1"), img); err != nil {
		l.t.Fatal(err)
	}
	d, _ := img.Digest()
	return policy.Subject{Upstream: "lab", Repository: repo, Tag: "v1", Digest: d.String()}
}

// attest signs predicate as an attestation of predicateType about s with
// key, and appends it to the image's .att tag, as cosign attest does.
func (l *scanLab) attest(s policy.Subject, key signature.Signer, predicateType string, predicate any) {
	l.t.Helper()
	ref, st := l.statement(s, oci.StatementV01, predicateType, predicate)
	a, err := sign.Attest(key, predicateType, st)
	if err != nil {
		l.t.Fatal(err)
	}
	if err := sign.AttachAttestationTag(context.Background(), ref, s.Digest, []sign.Attestation{a}); err != nil {
		l.t.Fatal(err)
	}
}

// attestKeyless signs predicate as attestor scanner's workflow into a
// Sigstore bundle (cosign attest --new-bundle-format), stored as a
// referrer, with the proof of its signing time at: a log entry the log
// integrated then, or (timestamped) no log entry and an RFC 3161
// timestamp made then (--tlog-upload=false --timestamp-server-url).
func (l *scanLab) attestKeyless(s policy.Subject, predicateType string, predicate any, at time.Time, timestamped bool) {
	l.t.Helper()
	ref, st := l.statement(s, oci.StatementV1, predicateType, predicate)
	proof := virtual.BundleOptions{Log: l.log, LogAt: at}
	if timestamped {
		proof = virtual.BundleOptions{TSA: l.tsa.At(at)}
	}
	b, err := l.scanner.DSSEBundle(st, proof)
	if err != nil {
		l.t.Fatal(err)
	}
	desc, err := sign.Describe(context.Background(), ref.Digest(s.Digest))
	if err != nil {
		l.t.Fatal(err)
	}
	if _, err := sign.AttachBundle(context.Background(), ref, desc, b, "dsse-envelope", predicateType, true); err != nil {
		l.t.Fatal(err)
	}
}

// statement is the in-toto statement of predicate about s, and s's
// repository.
func (l *scanLab) statement(s policy.Subject, statementType, predicateType string, predicate any) (name.Repository, []byte) {
	l.t.Helper()
	ref, _ := name.NewRepository(strings.TrimPrefix(l.srv.URL, "http://")+"/"+s.Repository, name.Insecure)
	st, err := sign.Statement(statementType, ref.Name(), s.Digest, predicateType, predicate)
	if err != nil {
		l.t.Fatal(err)
	}
	return ref, st
}

func (l *scanLab) evaluate(p *policy.Policy, s policy.Subject) policy.Verdict {
	l.t.Helper()
	v, err := evaluate(context.Background(), p, l.client, s)
	if err != nil {
		l.t.Fatal(err)
	}
	return v
}

// vuln is one finding as the tests write it.
type vuln struct {
	id, severity, pkg, version, fixed string
}

var (
	openssl = vuln{"CVE-2026-0001", "CRITICAL", "openssl", "3.0.1", "3.0.2"}
	zlib    = vuln{"CVE-2026-0002", "HIGH", "zlib", "1.2.13", ""}
	log4j   = vuln{"CVE-2021-44228", "LOW", "log4j", "2.14.1", "2.17.1"}
)

// trivyScan is cosign's vuln predicate with a Trivy JSON report, as
// trivy image --format cosign-vuln writes it; a zero finished leaves the
// scan's time out.
func trivyScan(finished time.Time, vulns ...vuln) map[string]any {
	var vs []any
	for _, v := range vulns {
		vs = append(vs, map[string]any{"VulnerabilityID": v.id, "PkgName": v.pkg, "InstalledVersion": v.version, "FixedVersion": v.fixed,
			"Severity": v.severity, "PkgIdentifier": map[string]any{"PURL": "pkg:deb/debian/" + v.pkg + "@" + v.version}})
	}
	result := map[string]any{"Target": "app (debian 12)", "Class": "os-pkgs"}
	if len(vs) > 0 {
		result["Vulnerabilities"] = vs
	}
	return cosignVuln(finished, "pkg:github/aquasecurity/trivy@0.50.0", "0.50.0", map[string]any{"SchemaVersion": 2, "Results": []any{result}})
}

func cosignVuln(finished time.Time, uri, version string, result any) map[string]any {
	p := map[string]any{
		"invocation": map[string]any{"uri": "", "event_id": "", "builder.id": ""},
		"scanner":    map[string]any{"uri": uri, "version": version, "result": result},
	}
	if !finished.IsZero() {
		p["metadata"] = map[string]any{"scanStartedOn": finished.Add(-time.Minute).UTC().Format(time.RFC3339), "scanFinishedOn": finished.UTC().Format(time.RFC3339)}
	}
	return p
}

func grypeScan(finished time.Time, vulns ...vuln) map[string]any {
	matches := []any{}
	for _, v := range vulns {
		fix := map[string]any{"versions": []string{}, "state": "not-fixed"}
		if v.fixed != "" {
			fix = map[string]any{"versions": []string{v.fixed}, "state": "fixed"}
		}
		sev := strings.ToUpper(v.severity[:1]) + strings.ToLower(v.severity[1:])
		matches = append(matches, map[string]any{
			"vulnerability": map[string]any{"id": v.id, "severity": sev, "fix": fix},
			"artifact":      map[string]any{"name": v.pkg, "version": v.version, "type": "deb", "purl": "pkg:deb/debian/" + v.pkg + "@" + v.version},
		})
	}
	return cosignVuln(finished, "pkg:github/anchore/grype@0.79.0", "0.79.0", map[string]any{"matches": matches, "descriptor": map[string]any{"name": "grype"}})
}

func sarifScan(finished time.Time, vulns ...vuln) map[string]any {
	var rules, results []any
	for _, v := range vulns {
		rules = append(rules, map[string]any{"id": v.id, "help": map[string]any{"text": fmt.Sprintf("Vulnerability %s\nSeverity: %s\nPackage: %s\nFixed Version: %s", v.id, v.severity, v.pkg, v.fixed)},
			"properties": map[string]any{"tags": []string{"vulnerability", "security", v.severity}}})
		results = append(results, map[string]any{"ruleId": v.id, "message": map[string]any{"text": fmt.Sprintf("Package: %s\nInstalled Version: %s\nVulnerability %s", v.pkg, v.version, v.id)}})
	}
	return cosignVuln(finished, "pkg:github/aquasecurity/trivy@0.50.0", "0.50.0", map[string]any{"version": "2.1.0",
		"runs": []any{map[string]any{"tool": map[string]any{"driver": map[string]any{"name": "Trivy", "rules": rules}}, "results": results}}})
}

// vexStatement is one OpenVEX statement; product "" leaves products out
// (the attestation's subject is the product).
func vexStatement(id, status, product string, at time.Time) map[string]any {
	s := map[string]any{"vulnerability": map[string]any{"name": id}, "status": status, "timestamp": at.UTC().Format(time.RFC3339)}
	switch status {
	case "not_affected":
		s["justification"] = "vulnerable_code_not_in_execute_path"
	case "affected":
		s["action_statement"] = "upgrade"
	}
	if product != "" {
		s["products"] = []any{map[string]any{"@id": product}}
	}
	return s
}

func vexDocument(at time.Time, statements ...map[string]any) map[string]any {
	return map[string]any{"@context": "https://openvex.dev/ns/v0.2.0", "@id": "https://vendor.example/vex/" + at.Format("20060102150405"),
		"author": "Vendor", "timestamp": at.UTC().Format(time.RFC3339), "version": 1, "statements": statements}
}

// ociPURL names the image of digest as OpenVEX products do.
func ociPURL(digest string) string {
	return "pkg:oci/app@" + strings.Replace(digest, ":", "%3A", 1) + "?repository_url=lab/acme/app"
}

// readmePair is the README's old advice, word for word: no critical
// vulnerabilities, and scanned within a week, over the same predicate.
const readmePair = `        - attestation:
            predicateType: vuln
            attestors: [security]
            condition: '!predicate.scanner.result.Results.exists(r, r.?Vulnerabilities.orValue([]).exists(v, v.Severity == "CRITICAL"))'%[1]s
        - attestation:
            predicateType: vuln
            attestors: [security]
            condition: 'now - timestamp(predicate.metadata.scanFinishedOn) < duration("168h")'%[1]s
`

const vulnerabilities = `        - vulnerabilities:
            attestors: [security]
            maxAge: 168h
            maximumFixableSeverity: MEDIUM
            maximumUnfixableSeverity: HIGH
`

func TestAFreshCriticalFindingDeniesDespiteAnOlderCleanScan(t *testing.T) {
	l := newScanLab(t)
	s := l.image("acme/app")
	now := time.Now()
	l.attest(s, l.security, vulnType, trivyScan(now.Add(-10*24*time.Hour)))
	l.attest(s, l.security, vulnType, trivyScan(now.Add(-24*time.Hour), openssl))
	for _, tt := range []struct {
		name, require string
		allowed       bool
		want          string
	}{
		{"the README's pair: the newest scan decides both", fmt.Sprintf(readmePair, ""), false,
			"its attestation sha256:"},
		{"vulnerabilities", vulnerabilities, false,
			"1 finding(s) above the maximums or blocked: CVE-2026-0001 CRITICAL in openssl 3.0.1, fixed in 3.0.2, above maximumFixableSeverity MEDIUM"},
		{"the pair under select: any, as before: each picks the scan that suits it", fmt.Sprintf(readmePair, "\n            select: any"), true,
			"satisfies the condition"},
		{"the pair under select: all: every scan must satisfy both", fmt.Sprintf(readmePair, "\n            select: all"), false,
			"; select: all: each must satisfy) does not satisfy the condition"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			v := l.evaluate(l.policy(tt.require), s)
			reasons := strings.Join(v.Reasons, "\n")
			if v.Allowed != tt.allowed || !strings.Contains(reasons, tt.want) {
				t.Fatalf("allowed %v, reasons:\n%s\nwant allowed %v and %q", v.Allowed, reasons, tt.allowed, tt.want)
			}
			if !tt.allowed && !strings.Contains(reasons, now.Add(-24*time.Hour).UTC().Format("2006-01-02T15:04")) {
				t.Errorf("the denial does not give the newest scan's time:\n%s", reasons)
			}
		})
	}
}

func TestFindingsMeetTheMaximumOfTheirKindFixableOrNot(t *testing.T) {
	l := newScanLab(t)
	now := time.Now()
	for _, tt := range []struct {
		name    string
		finding vuln
		extra   string // more fields of the requirement
		allowed bool
		want    string
	}{
		{"fixable HIGH, above MEDIUM", vuln{"CVE-2026-1001", "HIGH", "curl", "8.0", "8.1"}, "", false, "CVE-2026-1001 HIGH in curl 8.0, fixed in 8.1, above maximumFixableSeverity MEDIUM"},
		{"fixable MEDIUM, at the maximum", vuln{"CVE-2026-1002", "MEDIUM", "curl", "8.0", "8.1"}, "", true, "1 finding(s), none above the maximums (fixable MEDIUM, unfixable HIGH)"},
		{"unfixable HIGH, at the maximum", vuln{"CVE-2026-1003", "HIGH", "zlib", "1.2", ""}, "", true, "none above the maximums"},
		{"unfixable CRITICAL, above HIGH", vuln{"CVE-2026-1004", "CRITICAL", "zlib", "1.2", ""}, "", false, "CVE-2026-1004 CRITICAL in zlib 1.2, no fix, above maximumUnfixableSeverity HIGH"},
		{"no severity counts as HIGH", vuln{"CVE-2026-1005", "UNKNOWN", "curl", "8.0", "8.1"}, "", false, "above maximumFixableSeverity MEDIUM; no severity given: counts as HIGH"},
		{"no severity counts as configured", vuln{"CVE-2026-1006", "UNKNOWN", "curl", "8.0", "8.1"}, "            unknownSeverity: LOW\n", true, "none above the maximums"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s := l.image("fix/" + strings.ToLower(tt.finding.id))
			l.attest(s, l.security, vulnType, trivyScan(now.Add(-time.Hour), tt.finding))
			v := l.evaluate(l.policy(vulnerabilities+tt.extra), s)
			if reasons := strings.Join(v.Reasons, "\n"); v.Allowed != tt.allowed || !strings.Contains(reasons, tt.want) {
				t.Fatalf("allowed %v, reasons:\n%s\nwant allowed %v and %q", v.Allowed, reasons, tt.allowed, tt.want)
			}
		})
	}
}

func TestAnExceptionHoldsUntilItExpiresAndIsIgnoredAfter(t *testing.T) {
	l := newScanLab(t)
	s := l.image("acme/app")
	now := time.Now()
	l.attest(s, l.security, vulnType, trivyScan(now.Add(-time.Hour), openssl))
	exception := func(expires time.Time) string {
		return vulnerabilities + fmt.Sprintf("            allowedCves:\n              - {id: CVE-2026-0001, expires: %s, reason: \"not reachable, INC-77\"}\n", expires.UTC().Format(time.RFC3339))
	}
	t.Run("before it expires: allowed, the exception named, its expiry near", func(t *testing.T) {
		expires := now.Add(72 * time.Hour)
		v := l.evaluate(l.policy(exception(expires)), s)
		reasons := strings.Join(v.Reasons, "\n")
		if !v.Allowed || !strings.Contains(reasons, "suppressed: CVE-2026-0001 CRITICAL in openssl 3.0.1 by allowedCves CVE-2026-0001 until") ||
			!strings.Contains(reasons, "not reachable, INC-77 (expires in 71h)") && !strings.Contains(reasons, "not reachable, INC-77 (expires in 2 days)") {
			t.Fatalf("allowed %v, reasons:\n%s", v.Allowed, reasons)
		}
		sup := suppressions(v)
		if len(sup) != 1 || sup[0].ID != "CVE-2026-0001" || sup[0].By != audit.SuppressedByException || sup[0].Detail != "not reachable, INC-77" || sup[0].Expires == nil {
			t.Errorf("the decision log's suppressed findings: %+v", sup)
		}
	})
	t.Run("after it expired: denied, saying it expired", func(t *testing.T) {
		v := l.evaluate(l.policy(exception(now.Add(-time.Hour))), s)
		reasons := strings.Join(v.Reasons, "\n")
		if v.Allowed || !strings.Contains(reasons, "above maximumFixableSeverity MEDIUM; its exception in allowedCves expired on") {
			t.Fatalf("allowed %v, reasons:\n%s", v.Allowed, reasons)
		}
	})
}

// suppressions are the suppressed findings the decision log records.
func suppressions(v policy.Verdict) []audit.Suppression {
	var out []audit.Suppression
	for _, b := range v.VerifiedBy {
		out = append(out, b.Suppressed...)
	}
	return out
}

func TestABlockedCVEDeniesWhateverItsSeverityAndVEX(t *testing.T) {
	l := newScanLab(t)
	s := l.image("acme/app")
	now := time.Now()
	l.attest(s, l.security, vulnType, trivyScan(now.Add(-time.Hour), log4j))
	l.attest(s, l.vendor, vexType, vexDocument(now, vexStatement(log4j.id, "not_affected", "", now)))
	v := l.evaluate(l.policy(vulnerabilities+"            blockedCves: [CVE-2021-44228]\n            vex: {attestors: [vendor]}\n"), s)
	if reasons := strings.Join(v.Reasons, "\n"); v.Allowed || !strings.Contains(reasons, "CVE-2021-44228 LOW in log4j 2.14.1, blocked (blockedCves)") {
		t.Fatalf("allowed %v, reasons:\n%s", v.Allowed, reasons)
	}
}

func TestVEXSuppressesAFindingOnlyForThisDigestFromAVEXAttestorUntilALaterStatement(t *testing.T) {
	l := newScanLab(t)
	now := time.Now()
	const require = vulnerabilities + "            vex: {attestors: [vendor]}\n"
	for _, tt := range []struct {
		name    string
		vex     func(s policy.Subject)
		allowed bool
		want    string
	}{
		{"not_affected for this digest", func(s policy.Subject) {
			l.attest(s, l.vendor, vexType, vexDocument(now, vexStatement(openssl.id, "not_affected", ociPURL(s.Digest), now)))
		}, true, "suppressed: CVE-2026-0001 CRITICAL in openssl 3.0.1 by VEX not_affected from attestor vendor (vulnerable_code_not_in_execute_path"},
		{"not_affected with no product: the attestation's subject", func(s policy.Subject) {
			l.attest(s, l.vendor, vexType, vexDocument(now, vexStatement(openssl.id, "not_affected", "", now)))
		}, true, "by VEX not_affected from attestor vendor"},
		{"fixed, as vexctl attest writes it", func(s policy.Subject) {
			l.attest(s, l.vendor, "https://openvex.dev/ns/v0.2.0", vexDocument(now, vexStatement(openssl.id, "fixed", ociPURL(s.Digest), now)))
		}, true, "by VEX fixed from attestor vendor"},
		{"not_affected for another digest", func(s policy.Subject) {
			l.attest(s, l.vendor, vexType, vexDocument(now, vexStatement(openssl.id, "not_affected", ociPURL("sha256:"+strings.Repeat("0", 64)), now)))
		}, false, "CVE-2026-0001 CRITICAL in openssl 3.0.1, fixed in 3.0.2, above maximumFixableSeverity MEDIUM"},
		{"not_affected for the image without a digest", func(s policy.Subject) {
			l.attest(s, l.vendor, vexType, vexDocument(now, vexStatement(openssl.id, "not_affected", "pkg:oci/app?repository_url=lab/acme/app", now)))
		}, false, "above maximumFixableSeverity MEDIUM"},
		{"not_affected signed by someone not among the VEX attestors", func(s policy.Subject) {
			l.attest(s, l.rogue, vexType, vexDocument(now, vexStatement(openssl.id, "not_affected", "", now)))
		}, false, "above maximumFixableSeverity MEDIUM"},
		{"not_affected signed by the scanner, not a VEX attestor", func(s policy.Subject) {
			l.attest(s, l.security, vexType, vexDocument(now, vexStatement(openssl.id, "not_affected", "", now)))
		}, false, "above maximumFixableSeverity MEDIUM"},
		{"not_affected superseded by a later affected", func(s policy.Subject) {
			l.attest(s, l.vendor, vexType, vexDocument(now.Add(-time.Hour), vexStatement(openssl.id, "not_affected", ociPURL(s.Digest), now.Add(-time.Hour))))
			l.attest(s, l.vendor, vexType, vexDocument(now, vexStatement(openssl.id, "affected", ociPURL(s.Digest), now)))
		}, false, "says affected"},
		{"affected superseded by a later not_affected", func(s policy.Subject) {
			l.attest(s, l.vendor, vexType, vexDocument(now, vexStatement(openssl.id, "not_affected", ociPURL(s.Digest), now)))
			l.attest(s, l.vendor, vexType, vexDocument(now.Add(-time.Hour), vexStatement(openssl.id, "affected", ociPURL(s.Digest), now.Add(-time.Hour))))
		}, true, "by VEX not_affected from attestor vendor"},
		{"a VEX document of a VEX attestor that cannot be read: VEX suppresses nothing", func(s policy.Subject) {
			l.attest(s, l.vendor, vexType, vexDocument(now, vexStatement(openssl.id, "not_affected", "", now)))
			l.attest(s, l.vendor, vexType, vexDocument(now, vexStatement(openssl.id, "fine", "", now)))
		}, false, `is unusable, so VEX suppresses nothing: malformed: OpenVEX statements[0]: status "fine"`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s := l.image("vex/" + strings.ToLower(strings.NewReplacer(" ", "-", ":", "", ",", "", "'", "").Replace(tt.name)))
			l.attest(s, l.security, vulnType, trivyScan(now.Add(-time.Hour), openssl))
			tt.vex(s)
			v := l.evaluate(l.policy(require), s)
			reasons := strings.Join(v.Reasons, "\n")
			if v.Allowed != tt.allowed || !strings.Contains(reasons, tt.want) {
				t.Fatalf("allowed %v, reasons:\n%s\nwant allowed %v and %q", v.Allowed, reasons, tt.allowed, tt.want)
			}
			if tt.allowed {
				sup := suppressions(v)
				if len(sup) != 1 || sup[0].By != audit.SuppressedByVEX || !strings.Contains(sup[0].Detail, "attestor vendor") {
					t.Errorf("the decision log's suppressed findings: %+v", sup)
				}
				if !hasVerification(v, "vendor") {
					t.Errorf("verifiedBy does not name the VEX attestation: %+v", v.VerifiedBy)
				}
			}
		})
	}
}

func hasVerification(v policy.Verdict, attestor string) bool {
	for _, b := range v.VerifiedBy {
		if b.Attestor == attestor && strings.HasPrefix(b.PredicateType, "https://openvex.dev/ns") {
			return true
		}
	}
	return false
}

func TestAScanOlderThanMaxAgeDeniesNamingItsAge(t *testing.T) {
	l := newScanLab(t)
	for _, tt := range []struct {
		name    string
		scan    map[string]any
		allowed bool
		want    string
	}{
		{"six days old", trivyScan(time.Now().Add(-6 * 24 * time.Hour)), true, "0 finding(s), none above the maximums"},
		{"ten days old", trivyScan(time.Now().Add(-10 * 24 * time.Hour)), false, "is 240h0m0s old (by metadata.scanFinishedOn), older than maxAge 168h0m0s"},
		{"of no known time", trivyScan(time.Time{}), false, "carries no time (no metadata.scanFinishedOn, no verified signing time): its age is unknown"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s := l.image("age/" + strings.ReplaceAll(tt.name, " ", "-"))
			l.attest(s, l.security, vulnType, tt.scan)
			v := l.evaluate(l.policy(vulnerabilities), s)
			if reasons := strings.Join(v.Reasons, "\n"); v.Allowed != tt.allowed || !strings.Contains(reasons, tt.want) {
				t.Fatalf("allowed %v, reasons:\n%s\nwant allowed %v and %q", v.Allowed, reasons, tt.allowed, tt.want)
			}
		})
	}
}

func TestTrivyGrypeAndSARIFScansAreJudgedAlike(t *testing.T) {
	l := newScanLab(t)
	now := time.Now()
	const want = ": 2 finding(s) above the maximums or blocked: CVE-2026-0001 CRITICAL in openssl 3.0.1, fixed in 3.0.2, above maximumFixableSeverity MEDIUM; " +
		"CVE-2026-0003 CRITICAL in zlib 1.2.13, no fix, above maximumUnfixableSeverity HIGH"
	zlibCritical := vuln{"CVE-2026-0003", "CRITICAL", "zlib", "1.2.13", ""}
	for _, tt := range []struct {
		name, format string
		scan         map[string]any
	}{
		{"Trivy JSON", "Trivy JSON", trivyScan(now.Add(-time.Hour), openssl, zlib, zlibCritical)},
		{"Grype JSON", "Grype JSON", grypeScan(now.Add(-time.Hour), openssl, zlib, zlibCritical)},
		{"SARIF", "SARIF", sarifScan(now.Add(-time.Hour), openssl, zlib, zlibCritical)},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s := l.image("formats/" + strings.ToLower(strings.ReplaceAll(tt.name, " ", "-")))
			l.attest(s, l.security, vulnType, tt.scan)
			j, err := policy.NewJudge(100, nil)
			if err != nil {
				t.Fatal(err)
			}
			j.KeepFindings()
			d, err := j.Evaluate(context.Background(), l.policy(vulnerabilities), l.client, s)
			if err != nil {
				t.Fatal(err)
			}
			if reasons := strings.Join(d.Reasons, "\n"); d.Allowed || !strings.Contains(reasons, want) {
				t.Fatalf("allowed %v, reasons:\n%s", d.Allowed, reasons)
			}
			if len(d.Scans) != 1 || d.Scans[0].Format != tt.format || len(d.Scans[0].Findings) != 3 {
				t.Fatalf("scans %+v", d.Scans)
			}
			var statuses []string
			for _, f := range d.Scans[0].Findings {
				statuses = append(statuses, f.ID+" "+f.Status)
			}
			if got := strings.Join(statuses, ", "); got != "CVE-2026-0001 denies, CVE-2026-0003 denies, CVE-2026-0002 allowed" {
				t.Errorf("findings table: %s", got)
			}
		})
	}
}

func TestAttestationsOfNoKnownOrderMustEachSatisfy(t *testing.T) {
	l := newScanLab(t)
	s := l.image("acme/app")
	// Signed with a key and no log, and without a scan time: nothing
	// tells which is newer.
	l.attest(s, l.security, vulnType, trivyScan(time.Time{}))
	l.attest(s, l.security, vulnType, trivyScan(time.Time{}, openssl))
	v := l.evaluate(l.policy(`        - attestation:
            predicateType: vuln
            attestors: [security]
            condition: '!findings.exists(f, f.severity == "CRITICAL")'
`), s)
	if reasons := strings.Join(v.Reasons, "\n"); v.Allowed || !strings.Contains(reasons, "no order is known between 2 of its attestations") || !strings.Contains(reasons, "each must satisfy") {
		t.Fatalf("allowed %v, reasons:\n%s", v.Allowed, reasons)
	}
}

func TestAConditionOnAVulnerabilitiesRequirementSeesWhatVEXAndExceptionsLeft(t *testing.T) {
	l := newScanLab(t)
	s := l.image("acme/app")
	now := time.Now()
	l.attest(s, l.security, vulnType, grypeScan(now.Add(-time.Hour), openssl, zlib))
	l.attest(s, l.vendor, vexType, vexDocument(now, vexStatement(openssl.id, "not_affected", ociPURL(s.Digest), now)))
	require := `        - vulnerabilities:
            attestors: [security]
            maximumFixableSeverity: CRITICAL
            maximumUnfixableSeverity: CRITICAL
            vex: {attestors: [vendor]}
            condition: 'findings.all(f, f.severity != "CRITICAL") && suppressed.exists(f, f.id == "CVE-2026-0001" && f.suppressedBy == "vex" && f.fixable)'
`
	if v := l.evaluate(l.policy(require), s); !v.Allowed {
		t.Fatalf("denied: %q", v.Reasons)
	}
	if v := l.evaluate(l.policy(strings.Replace(require, `f.severity != "CRITICAL"`, `f.severity != "HIGH"`, 1)), s); v.Allowed || !strings.Contains(strings.Join(v.Reasons, "\n"), "does not satisfy the condition `findings.all(") {
		t.Fatalf("allowed %v, reasons %q", v.Allowed, v.Reasons)
	}
}

func TestRequirementsOverOneScanAreJudgedAgainTogether(t *testing.T) {
	// No critical finding (holds, cached for allowTTL) and scanned within a
	// week (fails, cached for denyTTL) on an old clean scan; a new scan
	// with a critical finding comes. Once the freshness outcome expires,
	// both are judged again on the new scan, which denies: the cached
	// "no critical" of the old scan does not stand beside it.
	l := newScanLab(t)
	s := l.image("acme/app")
	now := time.Now()
	l.attest(s, l.security, vulnType, trivyScan(now.Add(-10*24*time.Hour)))
	p := l.policy(fmt.Sprintf(readmePair, ""))
	clk := testkit.NewClock(now)
	j, err := policy.NewJudge(100, clk.Now)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if d, err := j.Evaluate(ctx, p, l.client, s); err != nil || d.Allowed {
		t.Fatalf("the old scan alone: %+v, %v", d, err)
	}
	l.attest(s, l.security, vulnType, trivyScan(now, openssl))
	clk.Advance(time.Minute) // past denyTTL, within allowTTL
	d, err := j.Evaluate(ctx, p, l.client, s)
	if err != nil {
		t.Fatal(err)
	}
	if d.Allowed || d.Cached || !strings.Contains(strings.Join(d.Reasons, "\n"), "does not satisfy the condition `!predicate.scanner.result.Results.exists(") {
		t.Fatalf("after the new scan: %+v", d)
	}
}

func TestAnOutcomeIsKeptNoLongerThanItsExceptionHolds(t *testing.T) {
	l := newScanLab(t)
	s := l.image("acme/app")
	now := time.Now()
	l.attest(s, l.security, vulnType, trivyScan(now.Add(-time.Hour), openssl))
	p := l.policy(vulnerabilities + fmt.Sprintf("            allowedCves: [{id: CVE-2026-0001, expires: %s, reason: INC-77}]\n", now.Add(5*time.Minute).UTC().Format(time.RFC3339)))
	clk := testkit.NewClock(now)
	j, err := policy.NewJudge(100, clk.Now)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for i, want := range []bool{false, true} { // judged, then cached
		if d, err := j.Evaluate(ctx, p, l.client, s); err != nil || !d.Allowed || d.Cached != want {
			t.Fatalf("evaluation %d: %+v, %v", i, d, err)
		}
	}
	clk.Advance(6 * time.Minute) // the exception has expired; allowTTL (10m) has not
	if d, err := j.Evaluate(ctx, p, l.client, s); err != nil || d.Cached {
		t.Fatalf("after the exception expired the outcome was still cached: %+v, %v", d, err)
	}
}

// countingSource counts the evidence reads of a Source.
type countingSource struct {
	policy.Source
	reads int
}

func (c *countingSource) Evidence(ctx context.Context, repo, digest string, want oci.Want) (*oci.Evidence, error) {
	c.reads++
	return c.Source.Evidence(ctx, repo, digest, want)
}

// manyFindings is a scan of n findings, every tenth CRITICAL with a fix.
func manyFindings(finished time.Time, n int) map[string]any {
	vs := make([]vuln, n)
	for i := range vs {
		vs[i] = vuln{fmt.Sprintf("CVE-2026-%04d", 1000+i), []string{"LOW", "MEDIUM", "HIGH"}[i%3], fmt.Sprintf("pkg%d", i), "1.0", ""}
		if i%10 == 0 {
			vs[i].severity, vs[i].fixed = "CRITICAL", "1.1"
		}
	}
	return trivyScan(finished, vs...)
}

// scanRequirements are three requirements over one scan: the README's
// pair and a vulnerabilities requirement with VEX.
const scanRequirements = `        - attestation:
            predicateType: vuln
            attestors: [security]
            condition: 'findings.filter(f, f.severity == "CRITICAL").size() < 100'
        - attestation:
            predicateType: vuln
            attestors: [security]
            condition: 'now - timestamp(predicate.metadata.scanFinishedOn) < duration("168h")'
        - vulnerabilities:
            attestors: [security]
            maxAge: 168h
            maximumFixableSeverity: CRITICAL
            maximumUnfixableSeverity: HIGH
            vex: {attestors: [vendor]}
`

// scannedTwice is an image with two scans of n findings each, the newer
// an hour old, and the vendor's VEX for one of the findings.
func (l *scanLab) scannedTwice(n int) policy.Subject {
	s := l.image("acme/app")
	now := time.Now()
	l.attest(s, l.security, vulnType, manyFindings(now.Add(-24*time.Hour), n))
	l.attest(s, l.security, vulnType, manyFindings(now.Add(-time.Hour), n))
	l.attest(s, l.vendor, vexType, vexDocument(now, vexStatement("CVE-2026-1000", "not_affected", ociPURL(s.Digest), now)))
	return s
}

func TestRequirementsOverOneScanReadTheAttestationsOnce(t *testing.T) {
	l := newScanLab(t)
	s := l.scannedTwice(50)
	src := &countingSource{Source: l.client}
	v := l.evaluate(l.policy(scanRequirements), s)
	if !v.Allowed {
		t.Fatalf("denied: %q", v.Reasons)
	}
	if v, err := evaluate(context.Background(), l.policy(scanRequirements), src, s); err != nil || !v.Allowed || src.reads != 1 {
		t.Fatalf("%d evidence reads for three requirements over one scan (want 1): %+v, %v", src.reads, v, err)
	}
	if sup := suppressions(v); len(sup) != 1 || sup[0].ID != "CVE-2026-1000" {
		t.Errorf("suppressed %+v", sup)
	}
}

// BenchmarkScanRequirements measures the three requirements over one scan
// of 500 findings (the newest of two) with one VEX document, judged from
// evidence already fetched: each attestation parsed and verified once,
// the scan read once for all three.
func BenchmarkScanRequirements(b *testing.B) {
	l := newScanLab(b)
	s := l.scannedTwice(500)
	ctx := context.Background()
	ev, err := l.client.Evidence(ctx, s.Repository, s.Digest, oci.Want{PredicateTypes: []string{vulnType, vexType, "https://openvex.dev/ns/v0.2.0"}})
	if err != nil {
		b.Fatal(err)
	}
	for _, bb := range []struct {
		name, require string
	}{
		{"vulnerabilities alone", scanRequirements[strings.Index(scanRequirements, "        - vulnerabilities:"):]},
		{"the README's pair and vulnerabilities", scanRequirements},
	} {
		p := l.policy(bb.require)
		b.Run(bb.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if v, err := evaluate(ctx, p, fetched{ev}, s); err != nil || !v.Allowed {
					b.Fatalf("%+v, %v", v, err)
				}
			}
		})
	}
}
