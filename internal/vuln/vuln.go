// Package vuln reads vulnerability scans and VEX documents into one
// normalised form: the findings of a scan (Trivy JSON, Grype JSON or
// SARIF, as cosign's vuln predicate carries them in scanner.result), and
// the statements of an OpenVEX v0.2.0 document. It parses outside input
// strictly and says what is wrong; it judges nothing (package policy
// does) and verifies nothing (package verify does).
package vuln

import (
	"cmp"
	"fmt"
	"regexp"
	"slices"
	"strings"
)

// Severity is a finding's severity, NONE < LOW < MEDIUM < HIGH < CRITICAL;
// Unknown is a finding whose scanner gave none (policy says how it counts).
type Severity int

// The severities, in order; Unknown sorts first but is no rank of its own.
const (
	Unknown Severity = iota
	None
	Low
	Medium
	High
	Critical
)

var severityNames = [...]string{"UNKNOWN", "NONE", "LOW", "MEDIUM", "HIGH", "CRITICAL"}

func (s Severity) String() string {
	if s < Unknown || s > Critical {
		return fmt.Sprintf("Severity(%d)", int(s))
	}
	return severityNames[s]
}

// Levels are the severities a policy may name, lowest first.
func Levels() []string { return slices.Clone(severityNames[None:]) }

// ParseSeverity reads a severity a policy names: NONE, LOW, MEDIUM, HIGH
// or CRITICAL, in any case. UNKNOWN is no level to compare with.
func ParseSeverity(s string) (Severity, error) {
	for i := None; i <= Critical; i++ {
		if strings.EqualFold(s, severityNames[i]) {
			return i, nil
		}
	}
	return Unknown, fmt.Errorf("%q: want one of %s", s, strings.Join(Levels(), ", "))
}

// scannerSeverity reads a severity as scanners write it: Trivy's upper
// case names, Grype's capitalised ones (its Negligible counts as LOW, the
// least that is still a finding), SARIF's names in help texts. Anything
// else is Unknown.
func scannerSeverity(s string) Severity {
	switch strings.ToUpper(strings.TrimSpace(s)) {
	case "NONE", "INFO", "INFORMATIONAL":
		return None
	case "NEGLIGIBLE", "MINIMAL", "LOW":
		return Low
	case "MEDIUM", "MODERATE":
		return Medium
	case "HIGH", "IMPORTANT":
		return High
	case "CRITICAL":
		return Critical
	}
	return Unknown
}

// cvssSeverity is the CVSS v3 qualitative rating of a base score, as
// GitHub reads SARIF's security-severity: 9.0 and up CRITICAL, 7.0 HIGH,
// 4.0 MEDIUM, above 0 LOW, 0 NONE.
func cvssSeverity(score float64) Severity {
	switch {
	case score >= 9:
		return Critical
	case score >= 7:
		return High
	case score >= 4:
		return Medium
	case score > 0:
		return Low
	case score == 0:
		return None
	}
	return Unknown
}

// Finding is one vulnerability found in one package.
type Finding struct {
	// ID is the vulnerability's identifier, a CVE id when the scanner
	// gives one (a GitHub advisory id is then among the Aliases).
	ID      string
	Aliases []string
	// Severity is what the scanner rated it.
	Severity Severity
	// Package, Version and PURL name the vulnerable package as installed;
	// PURL is empty when the scanner gives none.
	Package, Version, PURL string
	// FixedVersion is the version that fixes it, empty when none is
	// known; Fixable is true when there is one.
	FixedVersion string
	Fixable      bool
}

// Names reports whether id (any case) is f's ID or one of its aliases.
func (f *Finding) Names(id string) bool {
	return strings.EqualFold(f.ID, id) || slices.ContainsFunc(f.Aliases, func(a string) bool { return strings.EqualFold(a, id) })
}

// normalise puts findings in one order, worst first, merges the same
// vulnerability of the same package reported twice (once per location or
// target), and prefers a CVE id as the ID.
func normalise(fs []Finding) []Finding {
	for i := range fs {
		f := &fs[i]
		f.ID = strings.TrimSpace(f.ID)
		if !isCVE(f.ID) {
			if j := slices.IndexFunc(f.Aliases, isCVE); j >= 0 {
				f.ID, f.Aliases[j] = f.Aliases[j], f.ID
			}
		}
		f.Aliases = slices.DeleteFunc(f.Aliases, func(a string) bool { return a == "" || strings.EqualFold(a, f.ID) })
		slices.Sort(f.Aliases)
		f.Aliases = slices.Compact(f.Aliases)
		f.Fixable = f.FixedVersion != ""
	}
	slices.SortStableFunc(fs, func(a, b Finding) int {
		return cmp.Or(cmp.Compare(b.Severity, a.Severity), cmp.Compare(a.ID, b.ID), cmp.Compare(a.Package, b.Package), cmp.Compare(a.Version, b.Version))
	})
	return slices.CompactFunc(fs, func(a, b Finding) bool {
		return a.ID == b.ID && a.Package == b.Package && a.Version == b.Version
	})
}

var (
	cveID  = regexp.MustCompile(`(?i)^CVE-[0-9]{4}-[0-9]{4,}$`)
	ghsaID = regexp.MustCompile(`(?i)^GHSA(-[23456789cfghjmpqrvwx]{4}){3}$`)
)

func isCVE(id string) bool { return cveID.MatchString(id) }

// ValidID reports whether id is a vulnerability id a policy may name: a
// CVE id (CVE-2024-1234) or a GitHub security advisory id
// (GHSA-xxxx-xxxx-xxxx).
func ValidID(id string) bool { return cveID.MatchString(id) || ghsaID.MatchString(id) }
