package vuln_test

import (
	"errors"
	"testing"

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
