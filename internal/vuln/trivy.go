package vuln

import "fmt"

// trivyReport is what Trivy's JSON report (trivy image --format json,
// and scanner.result of --format cosign-vuln) says of vulnerabilities.
type trivyReport struct {
	Results *[]struct {
		Target          string `json:"Target"`
		Vulnerabilities []struct {
			VulnerabilityID string   `json:"VulnerabilityID"`
			VendorIDs       []string `json:"VendorIDs"`
			PkgName         string   `json:"PkgName"`
			PkgIdentifier   struct {
				PURL string `json:"PURL"`
			} `json:"PkgIdentifier"`
			InstalledVersion string `json:"InstalledVersion"`
			FixedVersion     string `json:"FixedVersion"`
			Severity         string `json:"Severity"`
		} `json:"Vulnerabilities"`
	} `json:"Results"`
}

func (r *trivyReport) findings() ([]Finding, error) {
	var fs []Finding
	if r.Results == nil {
		return nil, nil
	}
	for i, res := range *r.Results {
		for j, v := range res.Vulnerabilities {
			if v.VulnerabilityID == "" {
				return nil, fmt.Errorf("%w: Trivy JSON: Results[%d].Vulnerabilities[%d] has no VulnerabilityID", ErrMalformed, i, j)
			}
			fs = append(fs, Finding{
				ID: v.VulnerabilityID, Aliases: v.VendorIDs, Severity: scannerSeverity(v.Severity),
				Package: v.PkgName, Version: v.InstalledVersion, PURL: v.PkgIdentifier.PURL, FixedVersion: v.FixedVersion,
			})
		}
	}
	return fs, nil
}
