package policy

import (
	"maps"
	"regexp"
	"slices"
	"strings"

	"github.com/authz-proxy/authz-proxy/internal/config"
	"github.com/authz-proxy/authz-proxy/internal/verify"
)

// keylessIdentity compiles a keyless attestor's issuer, subject,
// certificate extensions and GitHub shorthand into the identity a
// certificate must have. path is the attestor's keyless field.
func keylessIdentity(c *config.Config, path []any, k *config.Keyless) (verify.Identity, []error) {
	id := verify.Identity{Issuer: k.Issuer, Subject: k.Subject, SubjectRegexp: k.SubjectRegexp}
	var errs []error
	for _, name := range slices.Sorted(maps.Keys(k.Certificate)) {
		value := k.Certificate[name]
		field, isRegexp := strings.CutSuffix(name, "Regexp")
		from := "certificate." + name
		switch {
		case field == verify.FieldIssuer || field == verify.FieldSubject:
			errs = append(errs, c.Errorf(slices.Concat(path, []any{"certificate", name}), "set the %s with keyless.%s, not under certificate", field, name))
			continue
		case !verify.IsCertificateField(field):
			errs = append(errs, c.Errorf(slices.Concat(path, []any{"certificate", name}), "unknown certificate extension %q%s: want one of %s, or one of them with Regexp", field, didYouMean(field), extensionNames()))
			continue
		}
		if !isRegexp {
			id.Fields = append(id.Fields, verify.Exact(field, from, value))
			continue
		}
		re, err := regexp.Compile(value)
		if err != nil { // config rejected it already; kept for Compile's own callers
			errs = append(errs, c.Errorf(slices.Concat(path, []any{"certificate", name}), "%v", err))
			continue
		}
		id.Fields = append(id.Fields, verify.Matching(field, from, re, ""))
	}
	if g := k.GitHub; g != nil {
		github(&id, g)
	}
	return id, errs
}

// didYouMean names the extension that name misspells: the same in
// another case, or the only one that name starts.
func didYouMean(name string) string {
	var hits []string
	for _, e := range verify.Extensions {
		if strings.EqualFold(e.Name, name) {
			return " (did you mean " + e.Name + "?)"
		}
		if strings.HasPrefix(strings.ToLower(e.Name), strings.ToLower(name)) {
			hits = append(hits, e.Name)
		}
	}
	if len(hits) != 1 {
		return ""
	}
	return " (did you mean " + hits[0] + "?)"
}

func extensionNames() string {
	var names []string
	for _, e := range verify.Extensions {
		names = append(names, e.Name)
	}
	return strings.Join(names, ", ")
}

// GitHubIssuer is GitHub Actions' OIDC issuer on github.com.
const GitHubIssuer = "https://token.actions.githubusercontent.com"

// github adds to id what the GitHub shorthand g means, as `gh attestation
// verify` means it:
//
//   - repository (--repo): sourceRepositoryURI and sourceRepositoryOwnerURI
//     are the repository's and its owner's URLs, in any case, and the
//     subject (the signer workflow) is a workflow of the repository;
//   - workflow (--signer-workflow): the subject is that workflow file, at
//     any ref; unlike gh, the path is not a regular expression, and the
//     file name must be whole (release.yml does not match release.yml2);
//   - ref: sourceRepositoryRef, exactly or as a glob;
//   - runner: github-hosted (--deny-self-hosted-runners) or self-hosted,
//     in runnerEnvironment;
//   - the issuer, unless set: GitHub Actions' for the host.
func github(id *verify.Identity, g *config.GitHub) {
	host := g.Host
	if host == "" {
		host = "github.com"
	}
	base := "https://" + host
	if id.Issuer == "" {
		id.Issuer = githubIssuer(host)
	}
	owner, _, _ := strings.Cut(g.Repository, "/")
	id.Fields = append(id.Fields,
		verify.ExactFold("sourceRepositoryURI", "github.repository", base+"/"+g.Repository),
		verify.ExactFold("sourceRepositoryOwnerURI", "github.repository", base+"/"+owner))
	// GitHub's owner and repository names are case-insensitive; the
	// workflow's path is not.
	if g.Workflow == "" {
		prefix := base + "/" + g.Repository + "/"
		id.Fields = append(id.Fields, verify.Matching(verify.FieldSubject, "github.repository",
			regexp.MustCompile(`^(?i:`+regexp.QuoteMeta(prefix)+`)`), "a workflow of "+base+"/"+g.Repository))
	} else {
		signerRepo, path := g.Repository, g.Workflow
		if !strings.HasPrefix(path, ".github/") {
			// owner/name/.github/workflows/x.yml: a reusable workflow
			// of another repository.
			parts := strings.SplitN(path, "/", 3)
			signerRepo, path = parts[0]+"/"+parts[1], parts[2]
		}
		re := regexp.MustCompile(`^(?i:` + regexp.QuoteMeta(base+"/"+signerRepo+"/") + `)` + regexp.QuoteMeta(path) + `@`)
		id.Fields = append(id.Fields, verify.Matching(verify.FieldSubject, "github.workflow", re,
			"the workflow "+base+"/"+signerRepo+"/"+path+" at any ref"))
	}
	if g.Ref != "" {
		if strings.ContainsAny(g.Ref, "*?") {
			id.Fields = append(id.Fields, verify.Matching("sourceRepositoryRef", "github.ref", globRegexp(g.Ref), "a ref matching "+g.Ref))
		} else {
			id.Fields = append(id.Fields, verify.Exact("sourceRepositoryRef", "github.ref", g.Ref))
		}
	}
	if g.Runner != "" {
		id.Fields = append(id.Fields, verify.Exact("runnerEnvironment", "github.runner", g.Runner))
	}
}

// githubIssuer is the OIDC issuer of GitHub Actions on host: github.com's,
// a GHE.com tenant's, or a GitHub Enterprise Server's.
func githubIssuer(host string) string {
	switch {
	case host == "github.com":
		return GitHubIssuer
	case strings.HasSuffix(host, ".ghe.com"):
		return "https://token.actions." + host
	}
	return "https://" + host + "/_services/token"
}

// globRegexp is the regular expression of a ref glob: * matches within one
// path segment, ** across segments, ? one character other than /.
func globRegexp(glob string) *regexp.Regexp {
	var b strings.Builder
	b.WriteString("^")
	for i := 0; i < len(glob); i++ {
		switch {
		case strings.HasPrefix(glob[i:], "**"):
			b.WriteString(".*")
			i++
		case glob[i] == '*':
			b.WriteString("[^/]*")
		case glob[i] == '?':
			b.WriteString("[^/]")
		default:
			b.WriteString(regexp.QuoteMeta(glob[i : i+1]))
		}
	}
	b.WriteString("$")
	return regexp.MustCompile(b.String())
}
