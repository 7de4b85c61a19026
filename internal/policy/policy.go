// Package policy compiles the configured policy once and judges one image
// digest at a time: the allowlist, then an unexpired breakglass entry, then
// the first rule that matches the image as it was asked for (name, tag,
// digest) and applies to the client's environment (or the default), then
// that rule's requirements against verified evidence: cosign, Sigstore and
// Notary Project signatures, and in-toto attestations whose CEL conditions
// hold. A Judge, the one judging path of serve, check and replay, first
// serves signature artifacts recognised by their content, keeps the
// verified outcome of each requirement per digest (matching stays per
// request, only verification is cached), and passes to the children of an
// allowed index what the index proved. A denial is a Verdict with reasons;
// an error means "could not decide".
package policy

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/authz-proxy/authz-proxy/internal/audit"
	"github.com/authz-proxy/authz-proxy/internal/config"
	"github.com/authz-proxy/authz-proxy/internal/oci"
	"github.com/authz-proxy/authz-proxy/internal/pattern"
	"github.com/authz-proxy/authz-proxy/internal/verify"
)

// Source finds the signatures and attestations stored for a digest.
// *upstream.Client is one.
type Source interface {
	Evidence(ctx context.Context, repo, digest string, want oci.Want) (*oci.Evidence, error)
}

// Registry is a Source that also fetches manifests (their digest computed
// from their bytes) and tells signature artifacts from images, by reading
// their layers. *upstream.Client is one.
type Registry interface {
	Source
	Manifest(ctx context.Context, repo, ref string) (*oci.Manifest, error)
	Recognize(ctx context.Context, repo string, m *oci.Manifest) (oci.Recognition, error)
}

// Subject is the manifest being judged.
type Subject struct {
	Upstream   string
	Repository string
	// Tag is the tag asked for, "" when asked by digest.
	Tag       string
	Digest    string
	MediaType string
	// Size is the manifest's length in bytes, which a Notary Project
	// signature names along with its digest and media type.
	Size int64
	// IsIndex is true for image indexes and manifest lists.
	IsIndex bool
	// Environment is the asking client's environment (see
	// Policy.Environment), "" for a client of none: it meets only rules
	// without environments.
	Environment string
	// Client is who asks: conditions that read `client` see it.
	Client Client
}

// Client is what the policy knows of who asks.
type Client struct {
	// Names are the verified client certificate's subject common name and
	// its DNS, URI and e-mail subject alternative names; none without mTLS.
	Names []string
	// Addr is the client's source address.
	Addr netip.Addr
	// Principal is who the client authenticated as (clients section), ""
	// for nobody.
	Principal string
	// Claims are the claims of the token it authenticated with, nil for
	// other credentials; ClaimsDigest is their hash, which outcomes that
	// read them are cached under.
	Claims       map[string]any
	ClaimsDigest string
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
	// EvidenceStoredAt, when set, says the verdict rests on signatures or
	// attestations that the store kept because the upstream failed: the
	// oldest time the upstream confirmed them.
	EvidenceStoredAt time.Time
	// Scans are the vulnerability scans judged, finding by finding, when
	// the judge keeps findings (Judge.KeepFindings); decision logs carry
	// only what denied and what was suppressed.
	Scans []ScanReport
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
	Generation string
	// Warnings are problems that do not stop the policy from working, as
	// "file:line: field: what" (attestors of one requirement that share a
	// key, for example).
	Warnings     []string
	allowlist    []pattern.Pattern
	breakglass   []breakglass
	environments []environment
	rules        []*rule
	fallback     *rule
	// allowed, glass and images index the allowlist, the breakglass
	// entries' images and every rule's images (in rule order; ruleOf says
	// whose each one is), so that matching one image against thousands of
	// rules tests only those whose literal start and end it has.
	allowed, glass, images *pattern.Index
	ruleOf                 []int32
	// allowTTL and denyTTL are how long a satisfied and an unsatisfied
	// requirement outcome hold; timeout bounds one verification.
	allowTTL, denyTTL, timeout time.Duration
}

type breakglass struct {
	image   pattern.Pattern
	expires time.Time
	reason  string
}

type environment struct {
	name       string
	names      map[string]bool // certificate names
	nets       []netip.Prefix
	principals []string // globs
}

type rule struct {
	name         string
	images       []pattern.Pattern
	environments []string // none: every client
	enforcement  string
	action       string
	reqs         []*requirement
}

// Option is an option of Compile.
type Option func(*options) error

type options struct {
	trustRoots map[string]*verify.TrustedRoot
}

// WithTrustRoots gives the trust roots that keyless attestors name
// (trustRoots), by name, as they are in force now. A policy compiled with
// them has a generation of its own: when a root changes, the policy
// compiled anew caches nothing judged under the old one.
func WithTrustRoots(roots map[string]*verify.TrustedRoot) Option {
	return func(o *options) error {
		o.trustRoots = roots
		return nil
	}
}

// Compile turns a loaded configuration into a Policy: it parses every key and
// pattern once. Errors carry the configuration's file, line and field.
func Compile(c *config.Config, opts ...Option) (*Policy, error) {
	var o options
	for _, opt := range opts {
		if err := opt(&o); err != nil {
			return nil, err
		}
	}
	var errs []error
	attestors := map[string]*attestor{}
	roots := map[string]*verify.TrustedRoot{}
	for i, a := range c.Attestors {
		at, aerrs := compileAttestor(c, i, a, roots, o.trustRoots)
		errs = append(errs, aerrs...)
		attestors[a.Name] = at
	}
	p := &Policy{Generation: generation(c, o.trustRoots), allowTTL: c.Cache.AllowTTL, denyTTL: c.Cache.DenyTTL, timeout: c.Limits.VerifyTimeout}
	for _, a := range c.Attestors {
		p.Warnings = append(p.Warnings, attestors[a.Name].warnings...)
	}
	reqs := map[string]*requirement{} // one per distinct demand, shared by rules
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
			switch {
			case sel.CN != "":
				env.names[sel.CN] = true
				continue
			case sel.Principal != "":
				env.principals = append(env.principals, sel.Principal)
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
			q, err := compileRequirement(req, attestors)
			if err != nil {
				errs = append(errs, c.Errorf(slices.Concat(path, []any{"require", j}, conditionField(req)), "%v", err))
				continue
			}
			if seen := reqs[q.key]; seen != nil {
				q = seen
			} else {
				reqs[q.key] = q
				p.Warnings = append(p.Warnings, sharedKeyWarnings(c, append(slices.Clone(path), "require", j), q)...)
			}
			cr.reqs = append(cr.reqs, q)
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
	p.index()
	return p, nil
}

// index builds p's pattern indexes.
func (p *Policy) index() {
	p.allowed = pattern.NewIndex(p.allowlist)
	glass := make([]pattern.Pattern, len(p.breakglass))
	for i, b := range p.breakglass {
		glass[i] = b.image
	}
	p.glass = pattern.NewIndex(glass)
	var images []pattern.Pattern
	for i, r := range p.rules {
		for _, pat := range r.images {
			images = append(images, pat)
			p.ruleOf = append(p.ruleOf, int32(i))
		}
	}
	p.images = pattern.NewIndex(images)
}

// generation is c's generation, followed, when attestors name trust
// roots, by a hash of what those roots trust now: each one's
// trusted_root.json and whether it is withdrawn.
func generation(c *config.Config, roots map[string]*verify.TrustedRoot) string {
	var used []string
	for _, a := range c.Attestors {
		used = append(used, a.TrustRoots...)
		if a.Keyless != nil {
			used = append(used, a.Keyless.TrustRoots...)
		}
	}
	if len(used) == 0 {
		return c.Generation
	}
	slices.Sort(used)
	h := sha256.New()
	for _, name := range slices.Compact(used) {
		if r := roots[name]; r != nil {
			fmt.Fprintf(h, "%s %s %q\n", name, r.Origin().Digest, r.Withdrawal())
		}
	}
	return c.Generation + "+" + hex.EncodeToString(h.Sum(nil))[:8]
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
		for _, g := range e.principals {
			if c.Principal != "" && pattern.Wildcard(g, c.Principal) {
				return e.name
			}
		}
	}
	return ""
}

// match returns what decides s without evidence: the allowlist, an
// unexpired breakglass entry, or a rule that allows or denies everything
// it matches (then the verdict is final); otherwise the rule whose
// requirements decide, with the verdict to complete.
func (p *Policy) match(s Subject, now time.Time) (Verdict, *rule) {
	img := pattern.Image{Name: s.Image(), Tag: s.Tag, Digest: s.Digest}
	if i := p.allowed.First(img, nil); i >= 0 {
		return Verdict{Allowed: true, Rule: "allowlist", Enforcement: config.Enforce,
			Reasons: []string{"allowlisted by " + p.allowlist[i].String()}}, nil
	}
	if i := p.glass.First(img, func(i int) bool { return now.Before(p.breakglass[i].expires) }); i >= 0 {
		b := p.breakglass[i]
		return Verdict{Allowed: true, Breakglass: true, Rule: "breakglass", Enforcement: config.Enforce,
			Reasons: []string{fmt.Sprintf("breakglass %s until %s: %s", b.image, b.expires.UTC().Format(time.RFC3339), b.reason)}}, nil
	}
	r := p.rule(img, s.Environment)
	v := Verdict{Rule: r.name, Enforcement: r.enforcement}
	switch {
	case r.action == config.ActionAllow:
		v.Allowed = true
		v.Reasons = []string{fmt.Sprintf("rule %q allows every image it matches", r.name)}
		return v, nil
	case r.action == config.ActionDeny:
		v.Reasons = []string{fmt.Sprintf("rule %q denies every image it matches", r.name)}
		return v, nil
	case len(r.reqs) == 0:
		v.Allowed = true
		v.Reasons = []string{fmt.Sprintf("rule %q requires nothing", r.name)}
		return v, nil
	}
	return v, r
}

// rule returns the first rule that matches img and applies to clients of
// env, or the default.
func (p *Policy) rule(img pattern.Image, env string) *rule {
	i := p.images.First(img, func(i int) bool {
		r := p.rules[p.ruleOf[i]]
		return len(r.environments) == 0 || slices.Contains(r.environments, env)
	})
	if i < 0 {
		return p.fallback
	}
	return p.rules[p.ruleOf[i]]
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
