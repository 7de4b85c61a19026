package policy_test

import (
	"strings"
	"testing"
	"time"
)

// verdictIsGood is the condition of the tests of which attestation
// decides: the predicate says good or bad.
const verdictIsGood = `predicate.verdict == "good"`

func TestEachKnownPredicateTypeIsOrderedByTheTimeItGivesItself(t *testing.T) {
	l := newScanLab(t)
	now := time.Now()
	rfc := func(at time.Time) string { return at.UTC().Format(time.RFC3339) }
	for _, tt := range []struct {
		predicateType, field string
		predicate            func(at time.Time, verdict string) map[string]any
	}{
		{vulnType, "metadata.scanFinishedOn", func(at time.Time, v string) map[string]any {
			p := trivyScan(at)
			p["verdict"] = v
			return p
		}},
		{"https://slsa.dev/provenance/v1", "runDetails.metadata.finishedOn", func(at time.Time, v string) map[string]any {
			return map[string]any{"verdict": v, "runDetails": map[string]any{"metadata": map[string]any{"startedOn": rfc(at.Add(-time.Minute)), "finishedOn": rfc(at)}}}
		}},
		{"https://slsa.dev/provenance/v0.2", "metadata.buildFinishedOn", func(at time.Time, v string) map[string]any {
			return map[string]any{"verdict": v, "metadata": map[string]any{"buildStartedOn": rfc(at.Add(-time.Minute)), "buildFinishedOn": rfc(at)}}
		}},
		{vexType, "timestamp", func(at time.Time, v string) map[string]any {
			p := vexDocument(at, vexStatement("CVE-2026-0001", "not_affected", "", at))
			p["verdict"] = v
			return p
		}},
		{"https://spdx.dev/Document", "creationInfo.created", func(at time.Time, v string) map[string]any {
			return map[string]any{"verdict": v, "spdxVersion": "SPDX-2.3", "creationInfo": map[string]any{"created": rfc(at)}}
		}},
		{"https://cyclonedx.org/bom", "metadata.timestamp", func(at time.Time, v string) map[string]any {
			return map[string]any{"verdict": v, "bomFormat": "CycloneDX", "metadata": map[string]any{"timestamp": rfc(at)}}
		}},
	} {
		require := "        - attestation:\n            predicateType: " + tt.predicateType + "\n            attestors: [security]\n            condition: '" + verdictIsGood + "'\n"
		newer, older := now.Add(-time.Hour), now.Add(-48*time.Hour)
		for _, c := range []struct {
			newer, older string
			allowed      bool
			want         string
		}{
			{"bad", "good", false, "the newest (" + rfc(newer) + " by its " + tt.field + "), does not satisfy the condition"},
			{"good", "bad", true, "the newest of 2 (" + rfc(newer) + " by its " + tt.field + ")"},
		} {
			t.Run(tt.field+": a newer "+c.newer+" one decides", func(t *testing.T) {
				s := l.image("own/" + strings.ToLower(strings.ReplaceAll(tt.field, ".", "-")) + "/" + c.newer)
				// The newer first: the order found in is no order of time.
				l.attest(s, l.security, tt.predicateType, tt.predicate(newer, c.newer))
				l.attest(s, l.security, tt.predicateType, tt.predicate(older, c.older))
				v := l.evaluate(l.policy(require), s)
				if reasons := strings.Join(v.Reasons, "\n"); v.Allowed != c.allowed || !strings.Contains(reasons, c.want) {
					t.Fatalf("allowed %v, reasons:\n%s\nwant allowed %v, %q", v.Allowed, reasons, c.allowed, c.want)
				}
			})
		}
	}
	t.Run("two equally new: each must satisfy", func(t *testing.T) {
		s := l.image("own/equal")
		l.attest(s, l.security, vulnType, map[string]any{"verdict": "good", "scanner": map[string]any{}, "metadata": map[string]any{"scanFinishedOn": rfc(now)}})
		l.attest(s, l.security, vulnType, map[string]any{"verdict": "bad", "scanner": map[string]any{}, "metadata": map[string]any{"scanFinishedOn": rfc(now)}})
		v := l.evaluate(l.policy("        - attestation: {predicateType: vuln, attestors: [security], condition: '"+verdictIsGood+"'}\n"), s)
		if reasons := strings.Join(v.Reasons, "\n"); v.Allowed || !strings.Contains(reasons, "2 of its attestations are equally new ("+rfc(now)+"): each must satisfy") {
			t.Fatalf("allowed %v, reasons:\n%s", v.Allowed, reasons)
		}
	})
	t.Run("a type with no time of its own: each must satisfy", func(t *testing.T) {
		s := l.image("own/untimed")
		const review = "https://acme.example/attestations/code-review/v1"
		l.attest(s, l.security, review, map[string]any{"verdict": "good", "reviewedAt": rfc(now)})
		l.attest(s, l.security, review, map[string]any{"verdict": "bad", "reviewedAt": rfc(now.Add(-24 * time.Hour))})
		v := l.evaluate(l.policy("        - attestation: {predicateType: '"+review+"', attestors: [security], condition: '"+verdictIsGood+"'}\n"), s)
		if reasons := strings.Join(v.Reasons, "\n"); v.Allowed || !strings.Contains(reasons, "no order is known between 2 of its attestations (2 carry no log entry, timestamp or, for this predicate type, a time of their own): each must satisfy") {
			t.Fatalf("allowed %v, reasons:\n%s", v.Allowed, reasons)
		}
	})
}

func TestTheVerifiedTimeOfSigningOrdersBeforeThePredicatesOwnTime(t *testing.T) {
	l := newScanLab(t)
	now := time.Now()
	// The scan that claims to be the newer was signed first: the log and
	// the timestamp authority, not the signed claim, tell which is newer.
	claimsNewer, claimsOlder := now.Add(-10*time.Minute), now.Add(-3*time.Hour)
	// (The virtual log is an hour old.)
	signedFirst, signedLast := now.Add(-50*time.Minute), now.Add(-20*time.Minute)
	noCritical := `        - attestation:
            predicateType: vuln
            attestors: [scanner]
            condition: '!findings.exists(f, f.severity == "CRITICAL")'
        - vulnerabilities:
            attestors: [scanner]
            maxAge: 168h
            maximumFixableSeverity: HIGH
            maximumUnfixableSeverity: HIGH
`
	for _, tt := range []struct {
		name, repo, by string
		timestamped    bool
	}{
		{"the log entry", "verified/logged", "the log entry", false},
		{"an RFC 3161 timestamp, no log entry", "verified/timestamped", "its RFC 3161 timestamp", true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s := l.image(tt.repo)
			l.attestKeyless(s, vulnType, trivyScan(claimsNewer, openssl), signedFirst, tt.timestamped)
			l.attestKeyless(s, vulnType, trivyScan(claimsOlder), signedLast, tt.timestamped)
			v := l.evaluate(l.policy(noCritical), s)
			reasons := strings.Join(v.Reasons, "\n")
			if !v.Allowed || !strings.Contains(reasons, "the newest of 2 ("+signedLast.UTC().Format(time.RFC3339)+" by "+tt.by+")") ||
				!strings.Contains(reasons, "0 finding(s), none above the maximums") {
				t.Fatalf("allowed %v, reasons:\n%s", v.Allowed, reasons)
			}
		})
	}
}

func TestWithAThresholdEachAttestorsNewestIsItsVote(t *testing.T) {
	l := newScanLab(t)
	s := l.image("acme/app")
	now := time.Now()
	// security's newest scan is clean and the newest of all; vendor's
	// newest found a CRITICAL, after an older clean one.
	l.attest(s, l.security, vulnType, trivyScan(now.Add(-time.Hour)))
	l.attest(s, l.vendor, vulnType, trivyScan(now.Add(-3*time.Hour)))
	l.attest(s, l.vendor, vulnType, trivyScan(now.Add(-2*time.Hour), openssl))
	require := func(threshold, selection string) string {
		return `        - attestation:
            predicateType: vuln
            attestors: [security, vendor]
            threshold: ` + threshold + selection + `
            condition: '!findings.exists(f, f.severity == "CRITICAL")'
`
	}
	for _, tt := range []struct {
		name, require string
		allowed       bool
		want          string
	}{
		{"threshold 1: the newest of all the attestors' decides", require("1", ""), true, "by attestor security"},
		{"threshold 2: vendor's newest votes no", require("2", ""), false,
			"(1 of the 2 attestors required): vendor: its attestation sha256:"},
		{"threshold 2, select: any: vendor's older clean scan will do", require("2", "\n            select: any"), true, "by attestor vendor"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			v := l.evaluate(l.policy(tt.require), s)
			if reasons := strings.Join(v.Reasons, "\n"); v.Allowed != tt.allowed || !strings.Contains(reasons, tt.want) {
				t.Fatalf("allowed %v, reasons:\n%s\nwant allowed %v and %q", v.Allowed, reasons, tt.allowed, tt.want)
			}
		})
	}
}
