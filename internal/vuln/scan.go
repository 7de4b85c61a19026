package vuln

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
)

// ErrMalformed is outside input that is not what it claims to be: a
// scan, a scanner report or a VEX document that cannot be read.
var ErrMalformed = errors.New("malformed")

// Formats of a scanner report (Scan.Format).
const (
	FormatTrivy = "Trivy JSON"
	FormatGrype = "Grype JSON"
	FormatSARIF = "SARIF"
)

// Scan is one vulnerability scan, as cosign's vuln predicate
// (https://cosign.sigstore.dev/attestation/vuln/v1) carries it: who
// scanned, when, and what was found.
type Scan struct {
	// ScannerURI and ScannerVersion are the predicate's scanner.uri and
	// scanner.version (pkg:github/aquasecurity/trivy@0.50.0, 0.50.0).
	ScannerURI, ScannerVersion string
	// Format is the report's format in scanner.result.
	Format string
	// StartedOn and FinishedOn are metadata.scanStartedOn and
	// scanFinishedOn; zero when absent (cosign writes the zero time,
	// 0001-01-01, for a predicate that gives none).
	StartedOn, FinishedOn time.Time
	// Findings are normalised: worst first, one per vulnerability and
	// package.
	Findings []Finding
}

// Scanner names the scanner for messages: "trivy 0.50.0".
func (s *Scan) Scanner() string {
	name := s.ScannerURI
	if rest, ok := strings.CutPrefix(name, "pkg:"); ok {
		name = rest
	}
	if i := strings.LastIndex(name, "/"); i >= 0 {
		name = name[i+1:]
	}
	name, _, _ = strings.Cut(name, "@")
	switch {
	case name == "" && s.ScannerVersion == "":
		return "unnamed scanner"
	case name == "":
		return s.ScannerVersion
	case s.ScannerVersion == "":
		return name
	}
	return name + " " + s.ScannerVersion
}

// ParseCosignVuln reads cosign's vuln predicate: scanner.result must be a
// Trivy JSON, Grype JSON or SARIF report. It reads the predicate in one
// pass, however large the report. Errors wrap ErrMalformed.
func ParseCosignVuln(predicate []byte) (*Scan, error) {
	var p struct {
		Scanner *struct {
			URI     string  `json:"uri"`
			Version string  `json:"version"`
			Result  *report `json:"result"`
		} `json:"scanner"`
		Metadata struct {
			ScanStartedOn  string `json:"scanStartedOn"`
			ScanFinishedOn string `json:"scanFinishedOn"`
		} `json:"metadata"`
	}
	if err := json.Unmarshal(predicate, &p); err != nil {
		return nil, fmt.Errorf("%w: vuln predicate: %v", ErrMalformed, err)
	}
	if p.Scanner == nil || p.Scanner.Result == nil {
		return nil, fmt.Errorf("%w: vuln predicate has no scanner.result", ErrMalformed)
	}
	s := &Scan{ScannerURI: p.Scanner.URI, ScannerVersion: p.Scanner.Version}
	var err error
	if s.StartedOn, err = predicateTime("metadata.scanStartedOn", p.Metadata.ScanStartedOn); err != nil {
		return nil, err
	}
	if s.FinishedOn, err = predicateTime("metadata.scanFinishedOn", p.Metadata.ScanFinishedOn); err != nil {
		return nil, err
	}
	if s.Format, s.Findings, err = p.Scanner.Result.findings(); err != nil {
		return nil, err
	}
	return s, nil
}

// predicateTime reads an RFC 3339 time; "" and the zero time are none.
func predicateTime(field, s string) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("%w: %s %q is not an RFC 3339 time", ErrMalformed, field, s)
	}
	if t.Year() <= 1 {
		return time.Time{}, nil
	}
	return t, nil
}

// report is a scanner's report in any of the formats read: which field is
// there (Trivy's Results or SchemaVersion, Grype's matches, SARIF's runs)
// says which it is.
type report struct {
	trivyReport
	grypeReport
	sarifLog
	SchemaVersion json.RawMessage `json:"SchemaVersion"`
}

// ParseReport reads a scanner's report and returns its format and its
// findings, normalised: Trivy JSON (Results), Grype JSON (matches) or a
// SARIF 2.1.0 log (runs). Errors wrap ErrMalformed.
func ParseReport(raw []byte) (format string, findings []Finding, err error) {
	var r report
	if err := json.Unmarshal(raw, &r); err != nil {
		return "", nil, fmt.Errorf("%w: scanner report: %v", ErrMalformed, err)
	}
	return r.findings()
}

func (r *report) findings() (format string, findings []Finding, err error) {
	var fs []Finding
	switch {
	case r.Runs != nil:
		format = FormatSARIF
		fs, err = r.sarifLog.findings()
	case r.Matches != nil:
		format = FormatGrype
		fs, err = r.grypeReport.findings()
	case r.Results != nil || r.SchemaVersion != nil:
		format = FormatTrivy
		fs, err = r.trivyReport.findings()
	default:
		return "", nil, fmt.Errorf("%w: scanner report is neither Trivy JSON (Results), Grype JSON (matches) nor SARIF (runs)", ErrMalformed)
	}
	if err != nil {
		return "", nil, err
	}
	return format, normalise(fs), nil
}
