package policy

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/authz-proxy/authz-proxy/internal/audit"
	"github.com/authz-proxy/authz-proxy/internal/oci"
	"github.com/authz-proxy/authz-proxy/internal/verify"
)

// attestationRequirement is met when at least threshold of its attestors
// each signed an attestation of predicateType about the digest whose
// condition holds.
type attestationRequirement struct {
	predicateType string
	attestors     []*attestor
	threshold     int
	condition     *condition // nil: any verified attestation will do
}

// attestations are the attestations of one Evaluate, each parsed once, with
// each signature check done once per key however many requirements ask.
type attestations struct {
	list []*parsedAttestation
	img  ImageVars
	now  time.Time
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
}

func newAttestations(ev *oci.Evidence, s Subject, now time.Time) *attestations {
	as := &attestations{
		img: ImageVars{Upstream: s.Upstream, Repository: s.Repository, Digest: s.Digest, Tag: s.Tag},
		now: now,
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
	p.vars = conditionVars(predicate, p.env.Statement.PredicateType, subject, as.img, certificateVars(fields), as.now)
	return p.vars, nil
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

// check judges the requirement: at least threshold attestors, each by a key
// no other counted attestor's attestation was made with, signed an
// attestation of the type about the digest whose condition holds. When
// fewer are satisfied, the reason names the closest miss of each other
// attestor.
//
// An error means that the requirement is not met without an attestation
// whose outcome could not be decided (its trusted root is withdrawn).
func (req *attestationRequirement) check(ctx context.Context, as *attestations) (outcome, error) {
	ofType := 0
	for _, p := range as.list {
		if p.err == nil && p.env.Statement.PredicateType == req.predicateType {
			ofType++
		}
	}
	hits := make([][]hit, len(req.attestors))
	misses := make([]miss, len(req.attestors))
	var undecided error
	for i, a := range req.attestors {
		best := miss{kind: missNone}
		closer := func(m miss) {
			if m.kind > best.kind {
				best = m
			}
		}
		for _, p := range as.list {
			if p.err != nil {
				closer(miss{missUnusable, fmt.Sprintf("attestation %s is unusable: %v", p.name(), p.err)})
				continue
			}
			if p.env.Statement.PredicateType != req.predicateType {
				continue
			}
			v, err := p.check(a, as.img.Digest)
			var mismatch *verify.DigestMismatchError
			var failed *verify.CheckError
			switch {
			case errors.Is(err, verify.ErrTrustRootUnavailable):
				undecided = cmp.Or(undecided, err)
				continue
			case errors.As(err, &mismatch):
				closer(miss{missSubject, fmt.Sprintf("its attestation %s is about %s, not this digest: an attestation does not carry over to another image", p.name(), mismatch.Signed)})
				continue
			case errors.As(err, &failed) && !errors.Is(err, verify.ErrBadSignature):
				closer(miss{missCheck, fmt.Sprintf("its attestation %s does not count: %v", p.name(), err)})
				continue
			case err != nil:
				closer(miss{missBadSig, fmt.Sprintf("%d attestation(s) of this type found, none signed by %s", ofType, a.kind())})
				continue
			}
			if req.condition != nil {
				ok, err := req.evalCondition(ctx, p, as)
				switch {
				case err != nil:
					closer(miss{missCondition, fmt.Sprintf("the condition %s failed on its attestation %s: %v", quote(req.condition.text), p.name(), err)})
					continue
				case !ok:
					closer(miss{missCondition, fmt.Sprintf("its attestation %s does not satisfy the condition %s", p.name(), quote(req.condition.text))})
					continue
				}
			}
			h := *v
			h.PredicateType, h.Attestation = req.predicateType, p.Digest
			hits[i] = append(hits[i], hit{h, signerOf(v, signature{signed: p.signed})})
			if req.threshold == 1 {
				break // one will do
			}
		}
		if best.kind == missNone {
			best.reason = "no attestation of this type found (.att tag or referrers)"
		}
		misses[i] = best
	}
	by, spare := count(req.attestors, hits)
	o := outcome{by: by}
	if len(by) >= req.threshold {
		o.ok = true
		what := "(no condition)"
		if req.condition != nil {
			what = "satisfies the condition " + quote(req.condition.text)
		}
		for _, b := range by {
			o.reasons = append(o.reasons, fmt.Sprintf("attestation %s by attestor %s (%s, %s) %s", req.predicateType, b.Attestor, describe(&b), short(b.Attestation), what))
		}
		return o, nil
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
	unsatisfied = append(unsatisfied, spare...)
	head := fmt.Sprintf("attestation %s not satisfied", req.predicateType)
	if req.threshold > 1 || len(req.attestors) > 1 {
		head += fmt.Sprintf(" (%d of the %d attestors required)", len(by), req.threshold)
	}
	o.reasons = []string{head + ": " + strings.Join(unsatisfied, "; ")}
	return o, nil
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
