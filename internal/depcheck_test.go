package internal_test

import (
	"bufio"
	"bytes"
	"os/exec"
	"slices"
	"strings"
	"testing"
)

const mod = "github.com/authz-proxy/authz-proxy/"

// TestPackageLayering keeps the dependencies flowing downward at any
// depth, as docs/ARCHITECTURE.md ("Rules that keep the layers apart") lays
// them out: the cryptography and the policy never reach the network or the
// HTTP edge, the leaves import nothing of this module, and so on. Like
// go-containerregistry's pkg/registry/depcheck_test.go, it reads the
// transitive imports from `go list -deps`, so an edge through any number
// of packages in between is caught.
func TestPackageLayering(t *testing.T) {
	g := loadImports(t)
	const in = mod + "internal/"
	// Packages of this module that each package must not reach at any
	// depth; "internal/" is all of them.
	mustNotReach := map[string][]string{
		"verify":   {in},
		"oci":      {in},
		"limits":   {in},
		"pattern":  {in},
		"cache":    {in},
		"budget":   {in},
		"audit":    {in},
		"store":    {in},
		"vuln":     {in},
		"report":   {in + "proxy", in + "policy", in + "upstream", in + "config", in + "verify", in + "store"},
		"config":   {in + "policy", in + "proxy", in + "upstream", in + "verify", in + "store"},
		"upstream": {in + "policy", in + "proxy", in + "verify", in + "config", in + "audit", in + "source"},
		// source is what the judge and the edge read of an upstream: it
		// decides nothing and renders nothing.
		"source": {in + "proxy", in + "policy", in + "config", in + "verify", in + "replay", in + "report"},
		"policy": {in + "proxy", in + "upstream", in + "store", in + "source", in + "metrics", in + "replay", in + "report", in + "trust"},
		// Re-validation and replay read registries through policy.Registry
		// only (cmd hands them the sources).
		"revalidate": {in + "proxy", in + "upstream", in + "store", in + "metrics", in + "source"},
		"replay":     {in + "proxy", in + "upstream", in + "store", in + "metrics", in + "source"},
		// trust fetches and keeps roots; verify holds them, the
		// command wires them into the policy.
		"trust": {in + "proxy", in + "policy", in + "upstream", in + "store", in + "source", in + "metrics", in + "config", in + "cache", in + "audit", in + "replay", in + "report", in + "revalidate"},
	}
	// verify and store may use oci, the registry vocabulary (media types,
	// annotations, evidence types, the grammar of tags and digests) below
	// every package; it reaches nothing of this module itself.
	mayUseOCI := []string{"verify", "store"}
	for pkg, banned := range mustNotReach {
		for _, dep := range g.deps(in + pkg) {
			if dep == in+"oci" && slices.Contains(mayUseOCI, pkg) {
				continue
			}
			if slices.ContainsFunc(banned, func(b string) bool { return dep == b || strings.HasSuffix(b, "/") && strings.HasPrefix(dep, b) }) {
				t.Errorf("internal/%s reaches %s (%s), against the package layering", pkg, dep, g.path(in+pkg, dep))
			}
		}
	}
	// No HTTP below the edge: these packages, and every package of this
	// module they reach, import no net/http.
	for _, pkg := range []string{"verify", "policy", "oci", "store", "cache", "audit", "report", "pattern", "limits", "config", "vuln"} {
		for _, p := range append(g.deps(in+pkg), in+pkg) {
			if strings.HasPrefix(p, mod) && slices.Contains(g.imports[p], "net/http") {
				t.Errorf("%s imports net/http, and internal/%s reaches it (%s)", p, pkg, g.path(in+pkg, p))
			}
		}
	}
}

// TestVerifyAndPolicyReachNoNetwork: the cryptography and the policy work
// on bytes that upstream fetched. Their libraries link net/http for what
// authz-proxy never asks of them (TUF updates, Rekor and CT clients), and
// notation-go for the online revocation checks a notation attestor may
// opt into; anything else that reaches net/http is a new way to the
// network and fails here (docs/ARCHITECTURE.md).
func TestVerifyAndPolicyReachNoNetwork(t *testing.T) {
	g := loadImports(t)
	// The libraries through which verify (and policy, through verify)
	// may reach net/http: notation's and Sigstore's, and go-ldap, whose
	// DN parser verify uses as notation-go does to read trusted
	// identities exactly as notation reads them (its LDAP client, linked
	// with it, is never started).
	verification := []string{
		"github.com/notaryproject/",
		"github.com/sigstore/sigstore-go/",
		"github.com/go-ldap/ldap/v3",
	}
	for _, root := range []string{"internal/verify", "internal/policy"} {
		for _, p := range append(g.deps(mod+root), mod+root) {
			if !strings.HasPrefix(p, mod) {
				continue
			}
			for _, imp := range g.imports[p] {
				if strings.HasPrefix(imp, mod) || imp != "net/http" && !slices.Contains(g.deps(imp), "net/http") {
					continue
				}
				if p != mod+"internal/verify" || !slices.ContainsFunc(verification, func(v string) bool { return strings.HasPrefix(imp, v) }) {
					t.Errorf("%s reaches net/http through %s (%s)", root, imp, g.path(imp, "net/http"))
				}
			}
		}
	}
}

// imports is the import graph of this module's packages and everything
// they reach, as `go list -deps` reports it (test files left out).
type imports struct {
	imports map[string][]string
	closure map[string][]string
}

func loadImports(t *testing.T) *imports {
	t.Helper()
	out, err := exec.Command("go", "list", "-e", "-deps", "-f", "{{.ImportPath}} {{join .Imports \" \"}}", mod+"...").Output()
	if err != nil {
		t.Fatalf("go list -deps: %v", err)
	}
	g := &imports{imports: map[string][]string{}, closure: map[string][]string{}}
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) > 0 {
			g.imports[f[0]] = f[1:]
		}
	}
	if len(g.imports[mod+"internal/policy"]) == 0 {
		t.Fatalf("go list -deps gave no imports of internal/policy:\n%s", out)
	}
	return g
}

// deps are the packages p reaches at any depth, p excluded.
func (g *imports) deps(p string) []string {
	if d, ok := g.closure[p]; ok {
		return d
	}
	seen := map[string]bool{}
	var walk func(string)
	walk = func(q string) {
		for _, i := range g.imports[q] {
			if !seen[i] {
				seen[i] = true
				walk(i)
			}
		}
	}
	walk(p)
	d := make([]string, 0, len(seen))
	for q := range seen {
		d = append(d, q)
	}
	slices.Sort(d)
	g.closure[p] = d
	return d
}

// path is one chain of imports from p to q, for messages.
func (g *imports) path(p, q string) string {
	prev := map[string]string{p: ""}
	queue := []string{p}
	for len(queue) > 0 {
		cur := queue[0]
		queue = queue[1:]
		if cur == q {
			var chain []string
			for c := q; c != ""; c = prev[c] {
				chain = append(chain, strings.TrimPrefix(c, mod))
			}
			slices.Reverse(chain)
			return strings.Join(chain, " -> ")
		}
		for _, i := range g.imports[cur] {
			if _, ok := prev[i]; !ok {
				prev[i] = cur
				queue = append(queue, i)
			}
		}
	}
	return "no path"
}
