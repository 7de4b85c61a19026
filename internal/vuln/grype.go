package vuln

import (
	"fmt"
	"strings"
)

// grypeReport is what Grype's JSON report (grype -o json) says of
// vulnerabilities.
type grypeReport struct {
	Matches *[]struct {
		Vulnerability struct {
			ID       string `json:"id"`
			Severity string `json:"severity"`
			Fix      struct {
				Versions []string `json:"versions"`
				State    string   `json:"state"`
			} `json:"fix"`
		} `json:"vulnerability"`
		RelatedVulnerabilities []struct {
			ID string `json:"id"`
		} `json:"relatedVulnerabilities"`
		Artifact struct {
			Name    string `json:"name"`
			Version string `json:"version"`
			PURL    string `json:"purl"`
		} `json:"artifact"`
	} `json:"matches"`
}

func (r *grypeReport) findings() ([]Finding, error) {
	fs := make([]Finding, 0, len(*r.Matches))
	for i, m := range *r.Matches {
		v := m.Vulnerability
		if v.ID == "" {
			return nil, fmt.Errorf("%w: Grype JSON: matches[%d].vulnerability has no id", ErrMalformed, i)
		}
		f := Finding{ID: v.ID, Severity: scannerSeverity(v.Severity), Package: m.Artifact.Name, Version: m.Artifact.Version, PURL: m.Artifact.PURL}
		for _, rel := range m.RelatedVulnerabilities {
			f.Aliases = append(f.Aliases, rel.ID)
		}
		// Grype lists versions only for state "fixed"; "not-fixed",
		// "wont-fix" and "unknown" have none.
		if v.Fix.State == "fixed" || v.Fix.State == "" {
			f.FixedVersion = strings.Join(v.Fix.Versions, ", ")
		}
		fs = append(fs, f)
	}
	return fs, nil
}
