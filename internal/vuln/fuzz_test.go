package vuln_test

import (
	"errors"
	"testing"
	"time"

	"github.com/authz-proxy/authz-proxy/internal/vuln"
)

// FuzzParseReport: any scanner report either parses into findings that
// each have an id and a severity in range, or is an ErrMalformed error;
// it never panics.
func FuzzParseReport(f *testing.F) {
	for _, s := range []string{trivyReport, grypeReport, trivySARIF, grypeSARIF, `{}`, `[]`, `{"runs": null}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		_, fs, err := vuln.ParseReport(data)
		if err != nil {
			if !errors.Is(err, vuln.ErrMalformed) {
				t.Fatalf("error %v does not wrap ErrMalformed", err)
			}
			return
		}
		for _, finding := range fs {
			if finding.ID == "" || finding.Severity < vuln.Unknown || finding.Severity > vuln.Critical || finding.Fixable != (finding.FixedVersion != "") {
				t.Fatalf("finding %+v", finding)
			}
		}
	})
}

// FuzzParseCosignVuln: any predicate either parses into a scan of a known
// format whose times are real ones (or none) and whose findings are
// ParseReport's, or is an ErrMalformed error; it never panics.
func FuzzParseCosignVuln(f *testing.F) {
	for _, report := range []string{trivyReport, grypeReport, trivySARIF, `{}`} {
		f.Add([]byte(`{"scanner": {"uri": "pkg:github/aquasecurity/trivy@0.50.0", "version": "0.50.0", "result": ` + report + `},
		  "metadata": {"scanStartedOn": "2026-05-01T10:00:00Z", "scanFinishedOn": "0001-01-01T00:00:00Z"}}`))
	}
	f.Add([]byte(`{"scanner": {"result": null}, "metadata": {"scanFinishedOn": "yesterday"}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := vuln.ParseCosignVuln(data)
		if err != nil {
			if !errors.Is(err, vuln.ErrMalformed) {
				t.Fatalf("error %v does not wrap ErrMalformed", err)
			}
			return
		}
		switch s.Format {
		case vuln.FormatTrivy, vuln.FormatGrype, vuln.FormatSARIF:
		default:
			t.Fatalf("format %q", s.Format)
		}
		for _, at := range []time.Time{s.StartedOn, s.FinishedOn} {
			if !at.IsZero() && at.Year() <= 1 {
				t.Fatalf("time %s: cosign's zero time is no time", at)
			}
		}
		if s.Scanner() == "" {
			t.Fatal("a scan names no scanner, not even an unnamed one")
		}
		for _, finding := range s.Findings {
			if finding.ID == "" || finding.Severity < vuln.Unknown || finding.Severity > vuln.Critical {
				t.Fatalf("finding %+v", finding)
			}
		}
	})
}

// FuzzParseOpenVEX: any OpenVEX document either parses into statements
// that each name a vulnerability, carry a valid status and a time, or is
// an ErrMalformed error; matching them never panics.
func FuzzParseOpenVEX(f *testing.F) {
	for _, s := range []string{vexDoc(""), vexDoc(`"products": [{"@id": "pkg:oci/app@` + digest + `", "subcomponents": [{"@id": "pkg:deb/debian/openssl"}]}],`), `{}`} {
		f.Add([]byte(s))
	}
	finding := &vuln.Finding{ID: "CVE-2026-0001", Package: "openssl", Version: "3.0.1", PURL: "pkg:deb/debian/openssl@3.0.1"}
	f.Fuzz(func(t *testing.T, data []byte) {
		v, err := vuln.ParseOpenVEX(data)
		if err != nil {
			if !errors.Is(err, vuln.ErrMalformed) {
				t.Fatalf("error %v does not wrap ErrMalformed", err)
			}
			return
		}
		for i := range v.Statements {
			s := &v.Statements[i]
			if s.Vulnerability == "" || s.Timestamp.IsZero() {
				t.Fatalf("statement %+v", s)
			}
			switch s.Status {
			case vuln.NotAffected, vuln.Affected, vuln.Fixed, vuln.UnderInvestigation:
			default:
				t.Fatalf("status %q", s.Status)
			}
			_ = s.Names(finding)
			_ = s.Covers(digest, finding)
		}
	})
}
