// Package policy compiles the configured policy once and judges one image
// digest at a time: the allowlist, then an unexpired breakglass entry, then
// the first rule that matches the image and applies to the client's
// environment (or the default), then that rule's requirements against
// verified evidence: cosign signatures, and in-toto attestations whose CEL
// conditions hold. A denial is a Verdict with reasons; an error means
// "could not decide".
package policy

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/authz-proxy/authz-proxy/internal/audit"
	"github.com/authz-proxy/authz-proxy/internal/config"
	"github.com/authz-proxy/authz-proxy/internal/pattern"
	"github.com/authz-proxy/authz-proxy/internal/upstream"
	"github.com/authz-proxy/authz-proxy/internal/verify"
)

// Source finds the signatures and attestations stored for a digest.
// *upstream.Client is one.
type Source interface {
	Evidence(ctx context.Context, repo, digest string, want upstream.Want) (*upstream.Evidence, error)
}

var _ Source = (*upstream.Client)(nil)

// Subject is the manifest being judged.
type Subject struct {
	Upstream   string
	Repository string
	// Tag is the tag asked for, "" when asked by digest.
	Tag       string
	Digest    string
	MediaType string
	// IsIndex is true for image indexes and manifest lists.
	IsIndex bool
	// Environment is the asking client's environment (see
	// Policy.Environment), "" for a client of none: it meets only rules
	// without environments.
	Environment string
}

// Client is what the policy knows of who asks.
type Client struct {
	// Names are the verified client certificate's subject common name and
	// its DNS, URI and e-mail subject alternative names; none without mTLS.
	Names []string
	// Addr is the client's source address.
	Addr netip.Addr
}

// Image is "<upstream>/<repository>".
func (s Subject) Image() string { return s.Upstream + "/" + s.Repository }

// Verdict is the policy's answer for one digest.
type Verdict struct {
	// Allowed is true when the policy is satisfied.
	Allowed bool
	// Rule names what decided: a rule's name, "allowlist", "breakglass" or
	// "default".
	Rule        string
	Enforcement string
	Reasons     []string
	VerifiedBy  []audit.Verification
	// Breakglass is true when a breakglass entry allowed the image.
	Breakglass bool
	// Expires, when not zero, is when the verdict stops holding (the end of
	// a breakglass entry): it must not be used, cached or not, after then.
	Expires time.Time
}

// Decision is the decision-log name of v: allow, breakglass, deny, or
// dryrun-deny for a denial under a dryrun rule (the image is let through).
func (v Verdict) Decision() string {
	switch {
	case v.Breakglass:
		return audit.Breakglass
	case v.Allowed:
		return audit.Allow
	case v.Enforcement == config.DryRun:
		return audit.DryRunDeny
	default:
		return audit.Deny
	}
}

// Serve reports whether the image may be served: allowed, or denied under a
// dryrun rule.
func (v Verdict) Serve() bool { return v.Allowed || v.Enforcement == config.DryRun }

// Policy is a compiled policy. It is immutable and safe for concurrent use.
type Policy struct {
	// Generation is the configuration generation this policy came from.
	Generation   string
	allowlist    []pattern.Pattern
	breakglass   []breakglass
	environments []environment
	rules        []*rule
	fallback     *rule
}

type breakglass struct {
	image   pattern.Pattern
	expires time.Time
	reason  string
}

type environment struct {
	name  string
	names map[string]bool // certificate names
	nets  []netip.Prefix
}

type rule struct {
	name         string
	images       []pattern.Pattern
	environments []string // none: every client
	enforcement  string
	action       string
	signatures   []signatureRequirement
	attests      []*attestationRequirement
	// want is the evidence the requirements need.
	want upstream.Want
}

type signatureRequirement struct {
	attestors []*attestor
	threshold int
}

// Compile turns a loaded configuration into a Policy: it parses every key and
// pattern once. Errors carry the configuration's file, line and field.
func Compile(c *config.Config) (*Policy, error) {
	var errs []error
	attestors := map[string]*attestor{}
	roots := map[string]*verify.TrustedRoot{}
	for i, a := range c.Attestors {
		at, aerrs := compileAttestor(c, i, a, roots)
		errs = append(errs, aerrs...)
		attestors[a.Name] = at
	}
	p := &Policy{Generation: c.Generation}
	for _, a := range c.Policy.Allowlist {
		pat, err := pattern.Parse(a)
		if err != nil {
			return nil, err // config validation has already reported it
		}
		p.allowlist = append(p.allowlist, pat)
	}
	for _, b := range c.Policy.Breakglass {
		pat, err := pattern.Parse(b.Image)
		if err != nil {
			return nil, err // config validation has already reported it
		}
		p.breakglass = append(p.breakglass, breakglass{image: pat, expires: b.Expires, reason: b.Reason})
	}
	for _, e := range c.Environments {
		env := environment{name: e.Name, names: map[string]bool{}}
		for _, sel := range e.Clients {
			if sel.CN != "" {
				env.names[sel.CN] = true
				continue
			}
			prefix, err := netip.ParsePrefix(sel.CIDR)
			if err != nil {
				return nil, err // config validation has already reported it
			}
			env.nets = append(env.nets, prefix.Masked())
		}
		p.environments = append(p.environments, env)
	}
	compileRule := func(path []any, r config.Rule) *rule {
		cr := &rule{name: r.Name, action: r.Action, enforcement: r.Enforcement, environments: r.Environments}
		if cr.enforcement == "" {
			cr.enforcement = c.Policy.Enforcement
		}
		for _, img := range r.Images {
			pat, err := pattern.Parse(img)
			if err != nil {
				errs = append(errs, err)
			}
			cr.images = append(cr.images, pat)
		}
		for j, req := range r.Require {
			if s := req.Signature; s != nil {
				sr := signatureRequirement{threshold: s.Threshold}
				for _, name := range s.Attestors {
					sr.attestors = append(sr.attestors, attestors[name])
				}
				cr.signatures = append(cr.signatures, sr)
				cr.want.Signatures = true
			}
			if a := req.Attestation; a != nil {
				ar := &attestationRequirement{predicateType: a.PredicateType, threshold: a.Threshold}
				for _, name := range a.Attestors {
					ar.attestors = append(ar.attestors, attestors[name])
				}
				if strings.TrimSpace(a.Condition) != "" {
					cond, err := compileCondition(a.Condition)
					if err != nil {
						errs = append(errs, c.Errorf(append(slices.Clone(path), "require", j, "attestation", "condition"), "%v", err))
					}
					ar.condition = cond
				}
				cr.attests = append(cr.attests, ar)
				if !slices.Contains(cr.want.PredicateTypes, a.PredicateType) {
					cr.want.PredicateTypes = append(cr.want.PredicateTypes, a.PredicateType)
				}
			}
		}
		return cr
	}
	for i, r := range c.Policy.Rules {
		p.rules = append(p.rules, compileRule([]any{"policy", "rules", i}, r))
	}
	p.fallback = compileRule([]any{"policy", "default"}, c.Policy.Default)
	p.fallback.name = "default"
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return p, nil
}

// Environment returns the name of the first environment that c belongs to,
// by a certificate name or by its address, or "" when it belongs to none.
func (p *Policy) Environment(c Client) string {
	addr := c.Addr.Unmap()
	for _, e := range p.environments {
		for _, n := range c.Names {
			if e.names[n] {
				return e.name
			}
		}
		for _, n := range e.nets {
			if addr.IsValid() && n.Contains(addr) {
				return e.name
			}
		}
	}
	return ""
}

// Evaluate judges s. Signatures and attestations are read from src only
// when the deciding rule requires them, and only those of the kinds and
// predicate types it requires.
func (p *Policy) Evaluate(ctx context.Context, src Source, s Subject) (Verdict, error) {
	img := pattern.Image{Name: s.Image(), Tag: s.Tag, Digest: s.Digest}
	for _, a := range p.allowlist {
		if a.Match(img) {
			return Verdict{Allowed: true, Rule: "allowlist", Enforcement: config.Enforce,
				Reasons: []string{"allowlisted by " + a.String()}}, nil
		}
	}
	now := time.Now()
	for _, b := range p.breakglass {
		if now.Before(b.expires) && b.image.Match(img) {
			return Verdict{Allowed: true, Breakglass: true, Expires: b.expires, Rule: "breakglass", Enforcement: config.Enforce,
				Reasons: []string{fmt.Sprintf("breakglass %s until %s: %s", b.image, b.expires.UTC().Format(time.RFC3339), b.reason)}}, nil
		}
	}
	r := p.match(img, s.Environment)
	v := Verdict{Rule: r.name, Enforcement: r.enforcement}
	switch r.action {
	case config.ActionAllow:
		v.Allowed = true
		v.Reasons = []string{fmt.Sprintf("rule %q allows every image it matches", r.name)}
		return v, nil
	case config.ActionDeny:
		v.Reasons = []string{fmt.Sprintf("rule %q denies every image it matches", r.name)}
		return v, nil
	}
	// When the tag schemes already satisfy the rule, their verdict is the
	// answer: the evidence is not judged a second time.
	var early *Verdict
	want := r.want
	want.Enough = func(ev *upstream.Evidence) bool {
		jv, err := r.judge(ctx, s, ev, v)
		if err != nil || !jv.Allowed {
			return false
		}
		early = &jv
		return true
	}
	ev, err := src.Evidence(ctx, s.Repository, s.Digest, want)
	if err != nil {
		return Verdict{}, fmt.Errorf("reading signatures and attestations of %s@%s: %w", s.Image(), s.Digest, err)
	}
	if early != nil {
		return *early, nil
	}
	return r.judge(ctx, s, ev, v)
}

// judge applies r's requirements to the evidence found for s, completing v.
func (r *rule) judge(ctx context.Context, s Subject, ev *upstream.Evidence, v Verdict) (Verdict, error) {
	var allow, deny []string
	sigFailed, attFailed := false, false
	sigs := parseSignatures(ev)
	for _, req := range r.signatures {
		by, reasons := req.check(sigs, s)
		v.VerifiedBy = append(v.VerifiedBy, by...)
		for _, b := range by {
			allow = append(allow, fmt.Sprintf("signed by attestor %s (%s)", b.Attestor, describe(&b)))
		}
		if reasons != nil {
			sigFailed = true
			deny = append(deny, reasons...)
		}
	}
	if len(r.attests) > 0 {
		as := newAttestations(ev, s, time.Now())
		for _, req := range r.attests {
			by, ok, reasons := req.check(ctx, as)
			v.VerifiedBy = append(v.VerifiedBy, by...)
			allow = append(allow, ok...)
			if reasons != nil {
				attFailed = true
				deny = append(deny, reasons...)
			}
		}
		// A condition interrupted because time ran out failed for want
		// of time, not on its merits: that is no verdict to cache.
		if err := ctx.Err(); err != nil {
			return Verdict{}, fmt.Errorf("judging the attestations of %s@%s: %w", s.Image(), s.Digest, err)
		}
	}
	v.Allowed = !sigFailed && !attFailed
	if v.Allowed {
		v.Reasons = allow
		return v, nil
	}
	v.Reasons = deny
	if sigFailed {
		v.Reasons = append(v.Reasons, ev.Problems...)
	}
	if attFailed {
		v.Reasons = append(v.Reasons, ev.AttestationProblems...)
	}
	return v, nil
}

// match returns the first rule that matches img and applies to clients of
// env, or the default.
func (p *Policy) match(img pattern.Image, env string) *rule {
	for _, r := range p.rules {
		if len(r.environments) > 0 && !slices.Contains(r.environments, env) {
			continue
		}
		for _, pat := range r.images {
			if pat.Match(img) {
				return r
			}
		}
	}
	return p.fallback
}

// signature is one signature found, parsed once for every requirement.
type signature struct {
	source string
	signed *verify.Signed
	err    error // why it cannot be used at all
}

// parseSignatures parses the signatures of ev: cosign simple-signing
// layers (with their keyless and log annotations) and Sigstore bundles.
// Bundles of attestations other than cosign's signature statement are not
// signatures and are left out.
func parseSignatures(ev *upstream.Evidence) []signature {
	var out []signature
	for _, sig := range ev.Signatures {
		var s signature
		s.source = sig.Source
		if sig.Bundle != nil {
			s.signed, s.err = verify.ParseBundle(sig.Bundle)
			if s.err == nil && !s.signed.IsImageSignature() {
				continue
			}
		} else {
			s.signed, s.err = verify.ParseCosignSignature(sig.Payload, sig.Signature, sig.Certificate, sig.RekorBundle, sig.Timestamp)
		}
		out = append(out, s)
	}
	return out
}

// check verifies every signature as every listed attestor. It returns the
// attestors that verified and, when fewer than the threshold did, the
// reasons, the closest miss first.
func (req signatureRequirement) check(sigs []signature, s Subject) ([]audit.Verification, []string) {
	var by []audit.Verification
	var unusable []string // genuine signatures that still do not count
	var mismatch *verify.DigestMismatchError
	var failed *verify.CheckError
	for _, a := range req.attestors {
		for _, sig := range sigs {
			if sig.err != nil {
				continue
			}
			v, err := a.verify(sig.signed, s.Digest, sig.source)
			switch {
			case err == nil:
				by = append(by, *v)
			case errors.Is(err, errNotMine), errors.Is(err, verify.ErrBadSignature):
				continue
			case errors.As(err, &mismatch):
				unusable = append(unusable, fmt.Sprintf("a signature by attestor %s was made for %s, not for this digest: a signature does not carry over to another image", a.name, mismatch.Signed))
			case errors.As(err, &failed):
				unusable = append(unusable, fmt.Sprintf("a signature (%s) does not count for attestor %s: %v", sig.source, a.name, err))
			default:
				unusable = append(unusable, fmt.Sprintf("a signature by attestor %s (%s) has an unusable payload: %v", a.name, sig.source, err))
			}
			if err == nil {
				break
			}
		}
	}
	if len(by) >= req.threshold {
		return by, nil
	}
	names := make([]string, len(req.attestors))
	for i, a := range req.attestors {
		names[i] = a.name
	}
	var reasons []string
	switch {
	case len(sigs) == 0:
		r := fmt.Sprintf("no cosign signature found (.sig tag or referrers); need one from attestor %s", orList(names))
		if !s.IsIndex {
			r += " (a platform image passes when its signed index is pulled through the proxy first, or when signed with cosign sign --recursive)"
		}
		reasons = append(reasons, r)
	case len(by) == 0 && len(unusable) > 0:
		reasons = append(reasons, unusable...)
	case len(by) == 0:
		what := "with a key of"
		if slices.ContainsFunc(req.attestors, func(a *attestor) bool { return a.keyless != nil }) {
			what = "as"
		}
		reasons = append(reasons, fmt.Sprintf("%d signature(s) found, none verifies %s attestor %s", len(sigs), what, orList(names)))
		for _, sig := range sigs {
			if sig.err != nil {
				reasons = append(reasons, fmt.Sprintf("signature %s is unusable: %v", sig.source, sig.err))
			}
		}
	default:
		var missing []string
		for _, n := range names {
			if !slices.ContainsFunc(by, func(b audit.Verification) bool { return b.Attestor == n }) {
				missing = append(missing, n)
			}
		}
		reasons = append(reasons, fmt.Sprintf("signed by %d of the %d attestors required; missing: %s", len(by), req.threshold, strings.Join(missing, ", ")))
	}
	return by, reasons
}

func orList(names []string) string {
	if len(names) == 1 {
		return names[0]
	}
	return strings.Join(names[:len(names)-1], ", ") + " or " + names[len(names)-1]
}

func short(id string) string {
	if len(id) > 19 {
		return id[:19]
	}
	return id
}
