package policy

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/authz-proxy/authz-proxy/internal/audit"
	"github.com/authz-proxy/authz-proxy/internal/config"
	"github.com/authz-proxy/authz-proxy/internal/vuln"
)

// vulnerabilitiesRequirement is Binary Authorization's vulnerability check
// over signed scans: the newest scan from its attestors holds no finding
// above the maximum severities that neither VEX from the VEX attestors nor
// an unexpired exception takes off, and no blocked one.
type vulnerabilitiesRequirement struct {
	attestors                           []*attestor
	maxAge                              time.Duration
	maxFixable, maxUnfixable, unknownAs vuln.Severity
	allowed                             []config.AllowedCVE
	blocked                             []string
	vexAttestors                        []*attestor
	condition                           *condition
}

// Finding statuses (FindingRow.Status).
const (
	StatusDenies     = "denies"
	StatusAllowed    = "allowed"
	StatusBlocked    = "blocked"
	StatusSuppressed = "suppressed"
	StatusExcepted   = "excepted"
)

// ScanReport is one scan that a vulnerabilities requirement judged, with
// what it made of each finding: what `check` shows.
type ScanReport struct {
	Attestation string     `json:"attestation"`
	Source      string     `json:"source"`
	Attestor    string     `json:"attestor"`
	Scanner     string     `json:"scanner"`
	Format      string     `json:"format"`
	FinishedOn  *time.Time `json:"finishedOn,omitempty"`
	// Problem is why the scan could not be judged, if it could not.
	Problem  string       `json:"problem,omitempty"`
	Findings []FindingRow `json:"findings"`
}

// FindingRow is one finding of a scan and what the policy made of it.
type FindingRow struct {
	ID           string   `json:"id"`
	Aliases      []string `json:"aliases,omitempty"`
	Severity     string   `json:"severity"`
	Package      string   `json:"package"`
	Version      string   `json:"version"`
	FixedVersion string   `json:"fixedVersion,omitempty"`
	// Status is StatusDenies, StatusAllowed, StatusBlocked,
	// StatusSuppressed (by VEX) or StatusExcepted (by allowedCves); Note
	// says why.
	Status string `json:"status"`
	Note   string `json:"note,omitempty"`
}

func compileVulnerabilities(v *config.VulnerabilitiesRequirement, attestors map[string]*attestor) (*vulnerabilitiesRequirement, error) {
	q := &vulnerabilitiesRequirement{maxAge: v.MaxAge, allowed: v.AllowedCves, blocked: v.BlockedCves}
	for _, name := range v.Attestors {
		q.attestors = append(q.attestors, attestors[name])
	}
	if v.VEX != nil {
		for _, name := range v.VEX.Attestors {
			q.vexAttestors = append(q.vexAttestors, attestors[name])
		}
	}
	var err error
	for _, s := range []struct {
		to   *vuln.Severity
		from string
	}{{&q.maxFixable, v.MaximumFixableSeverity}, {&q.maxUnfixable, v.MaximumUnfixableSeverity}, {&q.unknownAs, v.UnknownSeverity}} {
		if *s.to, err = vuln.ParseSeverity(s.from); err != nil {
			return nil, err // config validation has already reported it
		}
	}
	if strings.TrimSpace(v.Condition) != "" {
		if q.condition, err = compileCondition(v.Condition); err != nil {
			return nil, err
		}
	}
	return q, nil
}

// key names what q demands, for the requirement's key.
func (q *vulnerabilitiesRequirement) key(v *config.VulnerabilitiesRequirement) string {
	var allowed []string
	for _, a := range v.AllowedCves {
		allowed = append(allowed, a.ID+"@"+a.Expires.UTC().Format(time.RFC3339))
	}
	var vex []string
	if v.VEX != nil {
		vex = v.VEX.Attestors
	}
	return fmt.Sprintf("vulnerabilities attestors=%s maxAge=%s fixable=%s unfixable=%s unknown=%s allowed=%s blocked=%s vex=%s condition=%s",
		strings.Join(v.Attestors, ","), v.MaxAge, q.maxFixable, q.maxUnfixable, q.unknownAs, strings.Join(allowed, ","),
		strings.Join(v.BlockedCves, ","), strings.Join(vex, ","), strings.TrimSpace(v.Condition))
}

// vexStatement is one OpenVEX statement from an attestation that a VEX
// attestor verified about the digest.
type vexStatement struct {
	s *vuln.Statement
	c *candidate
}

// check judges the newest scan (each of the newest, when no order between
// them can be known). An error means a scan or VEX attestation could not
// be decided (its trusted root is withdrawn): it might be the newest word.
func (q *vulnerabilitiesRequirement) check(ctx context.Context, as *attestations) (outcome, error) {
	cands, misses, undecided := as.candidates(VulnPredicateType, q.attestors)
	if undecided != nil {
		return outcome{}, undecided
	}
	pool := pooled(cands)
	if len(pool) == 0 {
		var why []string
		for i, a := range q.attestors {
			why = append(why, a.name+": "+misses[i].reason)
		}
		return outcome{reasons: []string{"vulnerabilities: no scan (cosign attest --type vuln) found: " + strings.Join(why, "; ")}}, nil
	}
	decisive, unordered := newest(pool)
	vex, vexProblems, err := as.vexStatements(q.vexAttestors)
	if err != nil {
		return outcome{}, err
	}
	var outs []outcome
	ok := true
	for i := range decisive {
		j := q.judge(ctx, as, &decisive[i], vex, vexProblems)
		if unordered != "" {
			for k := range j.reasons {
				j.reasons[k] += " (" + unordered + ")"
			}
		}
		ok = ok && j.ok
		outs = append(outs, j)
	}
	o := outcome{ok: ok}
	for _, j := range outs {
		o.by = append(o.by, j.by...)
		o.scans = append(o.scans, j.scans...)
		if j.ok == ok { // a denial gives only what denies
			o.reasons = append(o.reasons, j.reasons...)
		}
		if !j.until.IsZero() && (o.until.IsZero() || j.until.Before(o.until)) {
			o.until = j.until
		}
	}
	return o, nil
}

// vexStatements gathers the OpenVEX statements of the attestations that
// attestors verified about the digest, once per check. An attestation of
// theirs that cannot be read might hold the latest word on any finding:
// while there is one, VEX suppresses nothing (problems says why). One that
// cannot be decided (its trusted root is withdrawn) is an error.
func (as *attestations) vexStatements(attestors []*attestor) (map[string][]vexStatement, []string, error) {
	if len(attestors) == 0 {
		return nil, nil, nil
	}
	byID := map[string][]vexStatement{}
	var problems []string
	seen := map[*parsedAttestation]bool{}
	for _, pt := range vuln.OpenVEXPredicateTypes {
		cands, _, undecided := as.candidates(pt, attestors)
		if undecided != nil {
			return nil, nil, undecided
		}
		for _, cs := range cands {
			for k := range cs {
				c := &cs[k]
				if seen[c.p] {
					continue
				}
				seen[c.p] = true
				doc, err := c.p.openVEX()
				if err != nil {
					problems = append(problems, fmt.Sprintf("VEX attestation %s by attestor %s is unusable, so VEX suppresses nothing: %v", c.p.name(), c.attestor.name, err))
					continue
				}
				for i := range doc.Statements {
					s := &doc.Statements[i]
					for _, id := range append([]string{s.Vulnerability}, s.Aliases...) {
						id = strings.ToUpper(id)
						if !slices.ContainsFunc(byID[id], func(v vexStatement) bool { return v.s == s }) {
							byID[id] = append(byID[id], vexStatement{s, c})
						}
					}
				}
			}
		}
	}
	if len(problems) > 0 {
		return nil, problems, nil
	}
	return byID, nil, nil
}

// vexVerdict is what the latest VEX statements say of f in the image of
// digest: the statement that suppresses it, or nil, with a note on the
// latest statements that do not.
func vexVerdict(byID map[string][]vexStatement, digest string, f *vuln.Finding) (*vexStatement, string) {
	var applicable []vexStatement
	for _, id := range append([]string{f.ID}, f.Aliases...) {
		for _, v := range byID[strings.ToUpper(id)] {
			if !slices.ContainsFunc(applicable, func(w vexStatement) bool { return w.s == v.s }) && v.s.Names(f) && v.s.Covers(digest, f) {
				applicable = append(applicable, v)
			}
		}
	}
	if len(applicable) == 0 {
		return nil, ""
	}
	var latest time.Time
	for _, v := range applicable {
		if v.s.Timestamp.After(latest) {
			latest = v.s.Timestamp
		}
	}
	var decisive []vexStatement
	for _, v := range applicable {
		if v.s.Timestamp.Equal(latest) {
			decisive = append(decisive, v)
		}
	}
	for _, v := range decisive {
		if !v.s.Status.Suppresses() {
			return nil, fmt.Sprintf("the latest VEX statement (%s, from attestor %s) says %s", latest.UTC().Format(time.RFC3339), v.c.attestor.name, v.s.Status)
		}
	}
	return &decisive[0], ""
}

// judge judges the scan c against the maximums, the exceptions, the
// blocked ids, VEX and the condition.
func (q *vulnerabilitiesRequirement) judge(ctx context.Context, as *attestations, c *candidate, vex map[string][]vexStatement, vexProblems []string) outcome {
	scan, err := c.p.vulnScan()
	head := fmt.Sprintf("vulnerabilities: scan %s by attestor %s (%s)", short(c.p.Digest), c.attestor.name, describe(&c.v))
	report := ScanReport{Attestation: c.p.Digest, Source: c.p.Source, Attestor: c.attestor.name, Findings: []FindingRow{}}
	if err != nil {
		report.Problem = err.Error()
		return outcome{reasons: []string{fmt.Sprintf("%s is unusable: %v", head, err)}, scans: []ScanReport{report}}
	}
	report.Scanner, report.Format = scan.Scanner(), scan.Format
	finished, from := scan.FinishedOn, "metadata.scanFinishedOn"
	if finished.IsZero() {
		finished, from = c.made()
	}
	head += ", " + scan.Scanner()
	if !finished.IsZero() {
		t := finished.UTC()
		report.FinishedOn = &t
		head += ", finished " + t.Format(time.RFC3339)
	}
	o := outcome{ok: true}
	if q.maxAge > 0 {
		switch age := as.now.Sub(finished); {
		case finished.IsZero():
			o.ok = false
			o.reasons = append(o.reasons, fmt.Sprintf("%s carries no time (no metadata.scanFinishedOn, no verified signing time): its age is unknown, and maxAge is %s", head, q.maxAge))
		case age > q.maxAge:
			o.ok = false
			o.reasons = append(o.reasons, fmt.Sprintf("%s is %s old (by %s), older than maxAge %s: scan the image again", head, age.Round(time.Minute), from, q.maxAge))
		default:
			o.until = finished.Add(q.maxAge)
		}
	}
	var denying, suppressed []string
	scanV := c.v
	vexUsed := map[string]audit.Verification{}
	var findings, offList []FindingVars
	for i := range scan.Findings {
		f := &scan.Findings[i]
		row := FindingRow{ID: f.ID, Aliases: f.Aliases, Severity: f.Severity.String(), Package: f.Package, Version: f.Version, FixedVersion: f.FixedVersion}
		what := fmt.Sprintf("%s %s in %s", f.ID, f.Severity, packageName(f))
		sev := f.Severity
		if sev == vuln.Unknown {
			sev = q.unknownAs
		}
		exception, expired := q.exception(f, as.now)
		by, vexNote := vexVerdict(vex, as.img.Digest, f)
		var notes []string
		switch {
		case slices.ContainsFunc(q.blocked, f.Names):
			row.Status, notes = StatusBlocked, []string{"blocked (blockedCves)"}
		case by != nil:
			row.Status = StatusSuppressed
			row.Note = fmt.Sprintf("VEX %s from attestor %s (%s, attestation %s)", by.s.Status, by.c.attestor.name, vexWhy(by.s), short(by.c.p.Digest))
			suppressed = append(suppressed, what+" by "+row.Note)
			vexUsed[by.c.p.Digest] = by.c.v
			scanV.Suppressed = append(scanV.Suppressed, audit.Suppression{ID: f.ID, Severity: f.Severity.String(), Package: f.Package, Version: f.Version,
				By: audit.SuppressedByVEX, Detail: fmt.Sprintf("%s (%s), attestor %s, attestation %s", by.s.Status, vexWhy(by.s), by.c.attestor.name, by.c.p.Digest)})
		case exception != nil:
			row.Status = StatusExcepted
			row.Note = fmt.Sprintf("allowedCves %s until %s: %s", exception.ID, exception.Expires.UTC().Format(time.RFC3339), exception.Reason)
			if left := exception.Expires.Sub(as.now); left <= config.AllowedCVEWarning {
				row.Note += fmt.Sprintf(" (expires in %s)", config.Days(left))
			}
			suppressed = append(suppressed, what+" by "+row.Note)
			expires := exception.Expires.UTC()
			scanV.Suppressed = append(scanV.Suppressed, audit.Suppression{ID: f.ID, Severity: f.Severity.String(), Package: f.Package, Version: f.Version,
				By: audit.SuppressedByException, Detail: exception.Reason, Expires: &expires})
			if o.until.IsZero() || exception.Expires.Before(o.until) {
				o.until = exception.Expires
			}
		default:
			limit, kind, fix := q.maxUnfixable, "maximumUnfixableSeverity", "no fix"
			if f.Fixable {
				limit, kind, fix = q.maxFixable, "maximumFixableSeverity", "fixed in "+f.FixedVersion
			}
			row.Status = StatusAllowed
			if sev > limit {
				row.Status = StatusDenies
				notes = append(notes, fmt.Sprintf("%s, above %s %s", fix, kind, limit))
				if f.Severity == vuln.Unknown {
					notes = append(notes, fmt.Sprintf("no severity given: counts as %s", q.unknownAs))
				}
			}
		}
		if row.Status != StatusSuppressed && row.Status != StatusExcepted {
			if expired != nil {
				notes = append(notes, fmt.Sprintf("its exception in allowedCves expired on %s", expired.Expires.UTC().Format(time.RFC3339)))
			}
			if vexNote != "" {
				notes = append(notes, vexNote)
			}
			row.Note = strings.Join(notes, "; ")
			if row.Status != StatusAllowed {
				denying = append(denying, what+", "+row.Note)
			}
		}
		report.Findings = append(report.Findings, row)
		fv := findingVars(f, row)
		if row.Status == StatusSuppressed || row.Status == StatusExcepted {
			offList = append(offList, fv)
		} else {
			findings = append(findings, fv)
		}
	}
	o.scans = []ScanReport{report}
	o.by = append(o.by, scanV)
	for _, d := range slices.Sorted(maps.Keys(vexUsed)) {
		o.by = append(o.by, vexUsed[d])
	}
	if len(denying) > 0 {
		o.ok = false
		r := fmt.Sprintf("%s: %d finding(s) above the maximums or blocked: %s", head, len(denying), list(denying))
		if len(vexProblems) > 0 {
			r += "; " + strings.Join(vexProblems, "; ")
		}
		o.reasons = append(o.reasons, r)
	}
	if q.condition != nil {
		vars, err := c.p.conditionVars(as)
		if err == nil {
			vars = withFindings(vars, findings, offList)
			var ok bool
			if ok, err = q.condition.eval(ctx, vars); err == nil && !ok {
				o.ok = false
				o.reasons = append(o.reasons, fmt.Sprintf("%s does not satisfy the condition %s", head, quote(q.condition.text)))
			}
		}
		if err != nil {
			o.ok = false
			o.reasons = append(o.reasons, fmt.Sprintf("the condition %s failed on %s: %v", quote(q.condition.text), head, err))
		}
	}
	if o.ok {
		r := fmt.Sprintf("%s: %d finding(s), none above the maximums (fixable %s, unfixable %s)", head, len(scan.Findings), q.maxFixable, q.maxUnfixable)
		if len(suppressed) > 0 {
			r += "; suppressed: " + list(suppressed)
		}
		o.reasons = append(o.reasons, r)
	}
	return o
}

// exception returns the unexpired exception for f, else the expired one
// that names it (for the reason), else neither.
func (q *vulnerabilitiesRequirement) exception(f *vuln.Finding, now time.Time) (valid, expired *config.AllowedCVE) {
	for i := range q.allowed {
		a := &q.allowed[i]
		if !f.Names(a.ID) {
			continue
		}
		if now.Before(a.Expires) {
			return a, nil
		}
		expired = a
	}
	return nil, expired
}

// vexWhy is what a suppressing statement gives as its reason.
func vexWhy(s *vuln.Statement) string {
	switch {
	case s.Justification != "":
		return s.Justification
	case s.ImpactStatement != "":
		return s.ImpactStatement
	}
	return "no justification"
}

func packageName(f *vuln.Finding) string {
	switch {
	case f.Package == "":
		return "an unnamed package"
	case f.Version == "":
		return f.Package
	}
	return f.Package + " " + f.Version
}

// maxListed bounds the findings one reason names: a decision log is read
// by people.
const maxListed = 10

func list(items []string) string {
	if len(items) <= maxListed {
		return strings.Join(items, "; ")
	}
	return strings.Join(items[:maxListed], "; ") + fmt.Sprintf("; and %d more (authz-proxy check lists them all)", len(items)-maxListed)
}
