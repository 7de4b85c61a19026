package policy

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/authz-proxy/authz-proxy/internal/audit"
	"github.com/authz-proxy/authz-proxy/internal/config"
	"github.com/authz-proxy/authz-proxy/internal/oci"
	"github.com/authz-proxy/authz-proxy/internal/verify"
	"github.com/authz-proxy/authz-proxy/internal/vuln"
)

// attestationRequirement is met when at least threshold of its attestors
// each signed an attestation of predicateType about the digest whose
// condition holds.
type attestationRequirement struct {
	predicateType string
	attestors     []*attestor
	threshold     int
	condition     *condition // nil: any verified attestation will do
	// selection is config.SelectNewest, SelectAny or SelectAll.
	selection string
}

// attestations are the attestations of one Evaluate, each parsed once, with
// each signature check done once per key however many requirements ask.
type attestations struct {
	list []*parsedAttestation
	img  ImageVars
	// client is the condition's client variable.
	client map[string]any
	now    time.Time
}

type parsedAttestation struct {
	oci.Attestation
	signed *verify.Signed
	env    *verify.Envelope // signed.Envelope
	err    error            // why it cannot be used at all
	// checks caches attestor.verify by attestor name.
	checks map[string]checked
	// vars is the condition activation, built on first use.
	vars map[string]any
	// own is the time its predicate gives itself, read on first use.
	own *dated
	// scan and vex are its predicate read as a vulnerability scan or an
	// OpenVEX document, on first use.
	scan *parsed[vuln.Scan]
	vex  *parsed[vuln.VEX]
}

// parsed is a predicate read once, or why it could not be.
type parsed[T any] struct {
	v   *T
	err error
}

func newAttestations(ev *oci.Evidence, s Subject, now time.Time) *attestations {
	as := &attestations{
		img:    ImageVars{Upstream: s.Upstream, Repository: s.Repository, Digest: s.Digest, Tag: s.Tag},
		client: clientVars(s.Client),
		now:    now,
	}
	for _, a := range ev.Attestations {
		p := &parsedAttestation{Attestation: a, checks: map[string]checked{}}
		if strings.HasPrefix(a.MediaType, oci.BundlePrefix) {
			p.signed, p.err = verify.ParseBundle(a.Raw)
			if p.err == nil && p.signed.Envelope == nil {
				p.err = fmt.Errorf("%w: Sigstore bundle holds no DSSE envelope (a message signature is not an attestation)", verify.ErrMalformedAttestation)
			}
		} else {
			p.signed, p.err = verify.ParseCosignAttestation(a.Raw, a.Certificate, a.RekorBundle, a.Timestamp)
		}
		if p.err == nil {
			p.env = p.signed.Envelope
		}
		as.list = append(as.list, p)
	}
	return as
}

// checked is the outcome of one attestor's check of one attestation.
type checked struct {
	v   *audit.Verification
	err error
}

func (p *parsedAttestation) check(a *attestor, digest string) (*audit.Verification, error) {
	c, ok := p.checks[a.name]
	if !ok {
		c.v, c.err = a.verifySigned(p.signed, digest, p.Source)
		p.checks[a.name] = c
	}
	return c.v, c.err
}

// name is how decision logs name the attestation: its layer digest and
// where it was found.
func (p *parsedAttestation) name() string {
	return fmt.Sprintf("%s (%s)", short(p.Digest), p.Source)
}

func (p *parsedAttestation) conditionVars(as *attestations) (map[string]any, error) {
	if p.vars != nil {
		return p.vars, nil
	}
	var predicate any
	if err := json.Unmarshal(p.env.Statement.Predicate, &predicate); err != nil {
		return nil, fmt.Errorf("predicate: %v", err)
	}
	var subject []map[string]any
	for _, s := range p.env.Statement.Subject {
		subject = append(subject, map[string]any{"name": s.Name, "digest": s.Digest})
	}
	fields, err := p.signed.CertificateFields()
	if err != nil {
		return nil, fmt.Errorf("certificate: %v", err)
	}
	p.vars = conditionVars(predicate, p.env.Statement.PredicateType, subject, as.img, certificateVars(fields), as.client, as.now)
	if p.env.Statement.PredicateType == VulnPredicateType {
		// What the scan found, whatever the scanner; nothing is
		// suppressed here (a vulnerabilities requirement applies VEX).
		if scan, err := p.vulnScan(); err == nil {
			findings := make([]FindingVars, len(scan.Findings))
			for i := range scan.Findings {
				findings[i] = findingVars(&scan.Findings[i], FindingRow{})
			}
			p.vars["findings"] = findings
		}
	}
	return p.vars, nil
}

// vulnScan reads the predicate as cosign's vuln predicate, once.
func (p *parsedAttestation) vulnScan() (*vuln.Scan, error) {
	if p.scan == nil {
		s, err := vuln.ParseCosignVuln(p.env.Statement.Predicate)
		p.scan = &parsed[vuln.Scan]{s, err}
	}
	return p.scan.v, p.scan.err
}

// openVEX reads the predicate as an OpenVEX document, once.
func (p *parsedAttestation) openVEX() (*vuln.VEX, error) {
	if p.vex == nil {
		v, err := vuln.ParseOpenVEX(p.env.Statement.Predicate)
		p.vex = &parsed[vuln.VEX]{v, err}
	}
	return p.vex.v, p.vex.err
}

// Kinds of near miss, from farthest to closest.
const (
	missNone      = iota // no attestation of the type at all
	missUnusable         // only attestations that could not be parsed
	missBadSig           // none signed by the attestor's keys
	missCheck            // signed by the identity or key, a keyless or log check failed
	missSubject          // signed, but about another digest
	missCondition        // signed, about this digest, condition false or failing
)

type miss struct {
	kind   int
	reason string
}

// closer is the closer miss of m and n, m when they are as close.
func (m miss) closer(n miss) miss {
	if n.kind > m.kind {
		return n
	}
	return m
}

// check judges the requirement: at least threshold attestors, each by a
// key no other counted attestor's attestation was made with, signed an
// attestation of the type about the digest whose condition holds. Which of
// an attestor's attestations decide is the selection: the newest (with a
// threshold of 1, the newest of all the attestors'), any one, or all.
// When fewer are satisfied, the reason names the closest miss of each
// other attestor.
//
// An error means the outcome rests on an attestation that could not be
// decided (its trusted root is withdrawn): with select: any, when the
// requirement is not met without it; otherwise always, since it might be
// the newest or the one that fails.
func (req *attestationRequirement) check(ctx context.Context, as *attestations) (outcome, error) {
	cands, misses, undecided := as.candidates(req.predicateType, req.attestors)
	if undecided != nil && req.selection != config.SelectAny {
		return outcome{}, undecided
	}
	if req.selection == config.SelectNewest && req.threshold == 1 {
		return req.checkNewest(ctx, as, cands, misses), nil
	}
	hits := make([][]hit, len(req.attestors))
	for i := range req.attestors {
		pick, unordered := cands[i], ""
		if req.selection == config.SelectNewest {
			pick, unordered = newest(cands[i])
		}
		for _, c := range pick {
			if ok, m := req.satisfies(ctx, as, c, unordered); !ok {
				misses[i] = misses[i].closer(m)
				if req.selection != config.SelectAny {
					hits[i] = nil // one that fails spoils the attestor's vote
					break
				}
				continue
			}
			hits[i] = append(hits[i], hit{c.v, c.signer})
			if req.selection == config.SelectAny && req.threshold == 1 {
				break // one will do
			}
		}
	}
	by, spare := count(req.attestors, hits)
	if len(by) >= req.threshold {
		return req.satisfied(by), nil
	}
	if undecided != nil {
		return outcome{}, undecided
	}
	var unsatisfied []string
	for i, a := range req.attestors {
		if len(hits[i]) == 0 {
			unsatisfied = append(unsatisfied, a.name+": "+misses[i].reason)
		}
	}
	return req.unsatisfied(len(by), append(unsatisfied, spare...)), nil
}

// checkNewest judges the requirement with a threshold of 1 and the
// newest selection: the newest attestation of the type that any of the
// attestors verified decides, whoever made the older ones.
func (req *attestationRequirement) checkNewest(ctx context.Context, as *attestations, cands [][]candidate, misses []miss) outcome {
	pool := pooled(cands)
	if len(pool) == 0 {
		var unsatisfied []string
		for i, a := range req.attestors {
			unsatisfied = append(unsatisfied, a.name+": "+misses[i].reason)
		}
		return req.unsatisfied(0, unsatisfied)
	}
	decisive, unordered := newest(pool)
	var by []audit.Verification
	for _, c := range decisive {
		if ok, m := req.satisfies(ctx, as, c, unordered); !ok {
			reason := c.attestor.name + ": " + m.reason
			if older := len(pool) - len(decisive); older > 0 {
				reason += fmt.Sprintf("; %d older attestation(s) of the type do not count: the newest decides (select: any accepts any one that satisfies)", older)
			}
			return req.unsatisfied(-1, []string{reason})
		}
		by = append(by, c.v)
	}
	o := req.satisfied(by)
	if len(pool) > 1 {
		for i := range o.reasons {
			o.reasons[i] += fmt.Sprintf(", the newest of %d (%s)", len(pool), decisive[0].when())
		}
	}
	return o
}

// satisfies evaluates the condition on c, one of the attestations that
// decide; when it does not hold, the miss says why, with how c was
// chosen.
func (req *attestationRequirement) satisfies(ctx context.Context, as *attestations, c candidate, unordered string) (bool, miss) {
	if req.condition == nil {
		return true, miss{}
	}
	ok, err := req.evalCondition(ctx, c.p, as)
	if ok && err == nil {
		return true, miss{}
	}
	which := c.p.name()
	switch {
	case unordered != "":
		which += " (" + unordered + ")"
	case req.selection == config.SelectNewest:
		which += ", the newest (" + c.when() + "),"
	case req.selection == config.SelectAll:
		which += " (" + c.when() + "; select: all: each must satisfy)"
	}
	if err != nil {
		return false, miss{missCondition, fmt.Sprintf("the condition %s failed on its attestation %s: %v", quote(req.condition.text), which, err)}
	}
	return false, miss{missCondition, fmt.Sprintf("its attestation %s does not satisfy the condition %s", which, quote(req.condition.text))}
}

// satisfied is the outcome of the requirement met by the attestations by.
func (req *attestationRequirement) satisfied(by []audit.Verification) outcome {
	o := outcome{ok: true, by: by}
	what := "(no condition)"
	if req.condition != nil {
		what = "satisfies the condition " + quote(req.condition.text)
	}
	for _, b := range by {
		o.reasons = append(o.reasons, fmt.Sprintf("attestation %s by attestor %s (%s, %s) %s", req.predicateType, b.Attestor, describe(&b), short(b.Attestation), what))
	}
	return o
}

// unsatisfied is the outcome of the requirement met by only counted
// attestors (-1: the newest of all the attestors' decided, none counts
// alone), for the reasons given.
func (req *attestationRequirement) unsatisfied(counted int, reasons []string) outcome {
	head := fmt.Sprintf("attestation %s not satisfied", req.predicateType)
	if counted >= 0 && (req.threshold > 1 || len(req.attestors) > 1) {
		head += fmt.Sprintf(" (%d of the %d attestors required)", counted, req.threshold)
	}
	return outcome{reasons: []string{head + ": " + strings.Join(reasons, "; ")}}
}

func (req *attestationRequirement) evalCondition(ctx context.Context, p *parsedAttestation, as *attestations) (bool, error) {
	vars, err := p.conditionVars(as)
	if err != nil {
		return false, err
	}
	return req.condition.eval(ctx, vars)
}

// quote shows a condition in a reason, on one line.
func quote(text string) string {
	return "`" + strings.Join(strings.Fields(text), " ") + "`"
}
