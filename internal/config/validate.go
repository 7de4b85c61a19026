package config

import (
	"errors"
	"maps"
	"net"
	"net/url"
	"os"
	"regexp"
	"slices"
	"strings"

	"github.com/authz-proxy/authz-proxy/internal/pattern"
)

var upstreamName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._:-]*$`)

// validator collects every problem of a configuration, each positioned.
type validator struct {
	c    *Config
	errs []error
}

func (v *validator) errorf(path []any, format string, args ...any) {
	v.errs = append(v.errs, v.c.Errorf(path, format, args...))
}

// notYet rejects a part of the schema that this version does not implement,
// rather than silently ignoring it.
func (v *validator) notYet(path []any, what string) {
	v.errorf(path, "%s is not supported yet by this version of authz-proxy; remove it", what)
}

func p(path ...any) []any { return path }

func (c *Config) validate() error {
	v := &validator{c: c}
	v.listen()
	if c.Metrics != nil {
		v.notYet(p("metrics"), "metrics")
	}
	v.upstreams()
	if len(c.Environments) > 0 {
		v.notYet(p("environments"), "environments")
	}
	if c.Cache.MaxEntries < 0 {
		v.errorf(p("cache", "maxEntries"), "must be positive")
	}
	if c.Cache.AllowTTL < 0 || c.Cache.DenyTTL < 0 {
		v.errorf(p("cache"), "TTLs must be positive durations such as 30s or 10m")
	}
	attestors := v.attestors()
	v.policy(attestors)
	return errors.Join(v.errs...)
}

func (v *validator) listen() {
	l := v.c.Listen
	if _, _, err := net.SplitHostPort(l.Addr); err != nil {
		v.errorf(p("listen", "addr"), "want host:port, e.g. 127.0.0.1:5000: %v", err)
	}
	if l.TLS == nil {
		return
	}
	if l.TLS.CertFile == "" || l.TLS.KeyFile == "" {
		v.errorf(p("listen", "tls"), "certFile and keyFile are both required")
	}
	for field, name := range map[string]string{"certFile": l.TLS.CertFile, "keyFile": l.TLS.KeyFile, "clientCAFile": l.TLS.ClientCAFile} {
		v.readable(p("listen", "tls", field), name)
	}
}

func (v *validator) readable(path []any, name string) {
	if name == "" {
		return
	}
	if _, err := os.ReadFile(v.c.Path(name)); err != nil {
		v.errorf(path, "%v", err)
	}
}

func (v *validator) upstreams() {
	c := v.c
	if len(c.Upstreams) == 0 {
		v.errorf(p("upstreams"), "at least one upstream is required")
	}
	seen := map[string]bool{}
	for i, u := range c.Upstreams {
		switch {
		case u.Name == "":
			v.errorf(p("upstreams", i), "name is required")
		case !upstreamName.MatchString(u.Name):
			v.errorf(p("upstreams", i, "name"), "%q: use a registry host name such as docker.io (letters, digits, . _ - :)", u.Name)
		case seen[u.Name]:
			v.errorf(p("upstreams", i, "name"), "%q is used twice", u.Name)
		}
		seen[u.Name] = true
		v.upstreamURL(i, u)
		if a := u.Auth; a != nil {
			switch {
			case a.Username == "":
				v.errorf(p("upstreams", i, "auth"), "username is required")
			case (a.PasswordFile == "") == (a.PasswordEnv == ""):
				v.errorf(p("upstreams", i, "auth"), "set exactly one of passwordFile and passwordEnv")
			case a.PasswordFile != "":
				v.readable(p("upstreams", i, "auth", "passwordFile"), a.PasswordFile)
			case os.Getenv(a.PasswordEnv) == "":
				v.errorf(p("upstreams", i, "auth", "passwordEnv"), "environment variable %s is not set", a.PasswordEnv)
			}
		}
	}
	if c.DefaultUpstream != "" && !seen[c.DefaultUpstream] {
		v.errorf(p("defaultUpstream"), "%q names no upstream", c.DefaultUpstream)
	}
}

func (v *validator) upstreamURL(i int, up Upstream) {
	path := p("upstreams", i, "url")
	if up.URL == "" {
		v.errorf(p("upstreams", i), "url is required")
		return
	}
	u, err := url.Parse(up.URL)
	switch {
	case err != nil:
		v.errorf(path, "%v", err)
	case u.Scheme != "https" && u.Scheme != "http":
		v.errorf(path, "%q: want https://host[:port]", up.URL)
	case u.Host == "":
		v.errorf(path, "%q has no host", up.URL)
	case u.Path != "" && u.Path != "/", u.RawQuery != "", u.User != nil:
		v.errorf(path, "%q: give only scheme and host (no path, query or credentials; use auth for credentials)", up.URL)
	case u.Scheme == "http" && !up.Insecure:
		v.errorf(path, "%q is plain http: set insecure: true to allow it (tests and labs only)", up.URL)
	}
}

func (v *validator) attestors() map[string]bool {
	names := map[string]bool{}
	for i, a := range v.c.Attestors {
		switch {
		case a.Name == "":
			v.errorf(p("attestors", i), "name is required")
		case names[a.Name]:
			v.errorf(p("attestors", i, "name"), "%q is used twice", a.Name)
		}
		names[a.Name] = true
		if a.Keyless != nil {
			v.notYet(p("attestors", i, "keyless"), "keyless")
		} else if len(a.PublicKeys) == 0 {
			v.errorf(p("attestors", i), "publicKeys is required")
		}
		if a.RequireTlog {
			v.notYet(p("attestors", i, "requireTlog"), "requireTlog")
		}
		for j, k := range a.PublicKeys {
			if (k.File == "") == (k.PEM == "") {
				v.errorf(p("attestors", i, "publicKeys", j), "set exactly one of file and pem")
			}
		}
	}
	return names
}

func (v *validator) policy(attestors map[string]bool) {
	pol := v.c.Policy
	v.enforcement(p("policy", "enforcement"), pol.Enforcement)
	for i, a := range pol.Allowlist {
		if _, err := pattern.Parse(a); err != nil {
			v.errorf(p("policy", "allowlist", i), "%v", err)
		}
	}
	if len(pol.Breakglass) > 0 {
		v.notYet(p("policy", "breakglass"), "breakglass")
	}
	names := map[string]bool{}
	for i, r := range pol.Rules {
		path := p("policy", "rules", i)
		switch {
		case r.Name == "":
			v.errorf(path, "name is required (it appears in every decision)")
		case names[r.Name]:
			v.errorf(append(path, "name"), "%q is used twice", r.Name)
		}
		names[r.Name] = true
		if len(r.Images) == 0 {
			v.errorf(path, "images is required")
		}
		for j, img := range r.Images {
			if _, err := pattern.Parse(img); err != nil {
				v.errorf(append(path, "images", j), "%v", err)
			}
		}
		v.rule(path, r, attestors)
	}
	if len(pol.Default.Images) > 0 {
		v.errorf(p("policy", "default", "images"), "the default rule applies to every image no rule matched; it takes no images")
	}
	v.rule(p("policy", "default"), pol.Default, attestors)
}

func (v *validator) enforcement(path []any, e string) {
	if e != "" && e != Enforce && e != DryRun {
		v.errorf(path, "%q: want enforce or dryrun", e)
	}
}

func (v *validator) rule(path []any, r Rule, attestors map[string]bool) {
	if len(r.Environments) > 0 {
		v.notYet(append(path, "environments"), "environments")
	}
	v.enforcement(append(path, "enforcement"), r.Enforcement)
	switch r.Action {
	case ActionAllow, ActionDeny:
		if len(r.Require) > 0 {
			v.errorf(append(path, "require"), "action %s takes no require (require implies action verify)", r.Action)
		}
	case ActionVerify:
		if len(r.Require) == 0 {
			v.errorf(path, "action verify needs at least one require entry")
		}
	case "":
		v.errorf(path, "action is required: allow, deny or verify (or give require)")
	default:
		v.errorf(append(path, "action"), "%q: want allow, deny or verify", r.Action)
	}
	for i, req := range r.Require {
		rp := append(append([]any{}, path...), "require", i)
		switch {
		case (req.Signature == nil) == (req.Attestation == nil):
			v.errorf(rp, "give exactly one of signature and attestation")
		case req.Attestation != nil:
			v.attestation(append(rp, "attestation"), req.Attestation, attestors)
		default:
			v.requirementAttestors(append(rp, "signature"), req.Signature.Attestors, req.Signature.Threshold, attestors)
		}
	}
}

func (v *validator) attestation(path []any, a *AttestationRequirement, attestors map[string]bool) {
	switch {
	case a.PredicateType == "":
		v.errorf(path, "predicateType is required, e.g. https://slsa.dev/provenance/v1 or a cosign --type name such as slsaprovenance1 or vuln")
	case !strings.Contains(a.PredicateType, ":"):
		v.errorf(append(path, "predicateType"), "%q: want a predicate type URI or one of cosign's --type names (%s)", a.PredicateType, strings.Join(slices.Sorted(maps.Keys(PredicateTypeAliases)), ", "))
	default:
		if _, err := url.ParseRequestURI(a.PredicateType); err != nil {
			v.errorf(append(path, "predicateType"), "%q is not a URI: %v", a.PredicateType, err)
		}
	}
	v.requirementAttestors(path, a.Attestors, a.Threshold, attestors)
}

// requirementAttestors checks the attestors and threshold of a requirement.
func (v *validator) requirementAttestors(path []any, names []string, threshold int, attestors map[string]bool) {
	if len(names) == 0 {
		v.errorf(path, "attestors is required")
	}
	seen := map[string]bool{}
	for i, a := range names {
		switch {
		case !attestors[a]:
			v.errorf(append(path, "attestors", i), "unknown attestor %q (define it under attestors)", a)
		case seen[a]:
			v.errorf(append(path, "attestors", i), "attestor %q is listed twice", a)
		}
		seen[a] = true
	}
	if threshold < 1 || threshold > len(names) {
		v.errorf(append(path, "threshold"), "%d: want 1 to %d (the number of attestors listed)", threshold, len(names))
	}
}
