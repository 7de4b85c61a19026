package vuln

import (
	"cmp"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
)

// sarifLog is what a SARIF 2.1.0 log of a vulnerability scanner says of
// its findings. SARIF has no fields for a package or its versions: Trivy
// and Grype write them into the rule's help text and the result's message
// ("Package: openssl", "Installed Version: 3.0.1", "Fixed Version:
// 3.0.2"; Grype: "Version:", "Fix Version:"), and their severity into it
// too ("Severity: HIGH"), into the rule's tags (Trivy), or as a CVSS score
// in the rule's security-severity property (GitHub's convention).
type sarifLog struct {
	Version string `json:"version"`
	Runs    *[]struct {
		Tool struct {
			Driver struct {
				Rules []sarifRule `json:"rules"`
			} `json:"driver"`
		} `json:"tool"`
		Results []struct {
			RuleID    string `json:"ruleId"`
			RuleIndex *int   `json:"ruleIndex"`
			Message   struct {
				Text string `json:"text"`
			} `json:"message"`
		} `json:"results"`
	} `json:"runs"`
}

type sarifRule struct {
	ID   string `json:"id"`
	Help struct {
		Text string `json:"text"`
	} `json:"help"`
	Properties struct {
		Tags             []string        `json:"tags"`
		SecuritySeverity json.RawMessage `json:"security-severity"`
	} `json:"properties"`
}

func (l *sarifLog) findings() ([]Finding, error) {
	if l.Version != "2.1.0" {
		return nil, fmt.Errorf("%w: SARIF version %q, want 2.1.0", ErrMalformed, l.Version)
	}
	var fs []Finding
	for i, run := range *l.Runs {
		rules := run.Tool.Driver.Rules
		byID := make(map[string]*sarifRule, len(rules))
		for k := range rules {
			byID[rules[k].ID] = &rules[k]
		}
		for j, res := range run.Results {
			rule := byID[res.RuleID]
			if res.RuleIndex != nil {
				if *res.RuleIndex < 0 || *res.RuleIndex >= len(rules) {
					return nil, fmt.Errorf("%w: SARIF: runs[%d].results[%d].ruleIndex %d names no rule", ErrMalformed, i, j, *res.RuleIndex)
				}
				rule = &rules[*res.RuleIndex]
			}
			if rule == nil {
				rule = &sarifRule{ID: res.RuleID}
			}
			f, ok, err := sarifFinding(rule, res.Message.Text)
			if err != nil {
				return nil, fmt.Errorf("%w: SARIF: runs[%d].results[%d]: %v", ErrMalformed, i, j, err)
			}
			if ok {
				fs = append(fs, f)
			}
		}
	}
	return fs, nil
}

// sarifFinding reads one result of rule: ok is false for a result that is
// no vulnerability (a misconfiguration, a secret, a license).
func sarifFinding(rule *sarifRule, message string) (f Finding, ok bool, err error) {
	// The rule's help names the vulnerability ("Vulnerability CVE-…");
	// Trivy's misconfigurations, secrets and licenses name none there.
	kv := map[string]string{}
	for i, text := range []string{rule.Help.Text, message} {
		for line := range strings.SplitSeq(text, "\n") {
			line = strings.TrimSpace(line)
			if id, found := strings.CutPrefix(line, "Vulnerability "); found {
				if i == 0 {
					kv["vulnerability"] = strings.TrimSpace(id)
				}
				continue
			}
			if k, v, found := strings.Cut(line, ":"); found {
				kv[strings.ToLower(strings.TrimSpace(k))] = strings.TrimSpace(v)
			}
		}
	}
	f.ID = kv["vulnerability"]
	if f.ID == "" {
		if !ValidID(rule.ID) {
			return f, false, nil
		}
		f.ID = rule.ID
	}
	f.Package = kv["package"]
	f.Version = cmp.Or(kv["installed version"], kv["version"])
	f.FixedVersion = cmp.Or(kv["fixed version"], kv["fix version"])
	f.Severity = scannerSeverity(kv["severity"])
	for _, t := range rule.Properties.Tags {
		if f.Severity == Unknown {
			if s := scannerSeverity(t); s != Unknown && strings.ToUpper(t) == s.String() {
				f.Severity = s
			}
		}
	}
	if f.Severity == Unknown && len(rule.Properties.SecuritySeverity) > 0 {
		score, err := securitySeverity(rule.Properties.SecuritySeverity)
		if err != nil {
			return f, false, err
		}
		f.Severity = cvssSeverity(score)
	}
	return f, true, nil
}

// securitySeverity reads GitHub's security-severity property: a CVSS
// score from 0 to 10, as a string ("7.5") or a number.
func securitySeverity(raw json.RawMessage) (float64, error) {
	var s string
	if json.Unmarshal(raw, &s) != nil {
		s = string(raw)
	}
	score, err := strconv.ParseFloat(strings.TrimSpace(s), 64)
	if err != nil || score < 0 || score > 10 {
		return 0, fmt.Errorf("security-severity %s is not a CVSS score from 0 to 10", raw)
	}
	return score, nil
}
