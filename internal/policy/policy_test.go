package policy_test

import (
	"context"
	"crypto/x509/pkix"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sigstore/sigstore/pkg/cryptoutils"

	"github.com/authz-proxy/authz-proxy/internal/config"
	"github.com/authz-proxy/authz-proxy/internal/oci"
	"github.com/authz-proxy/authz-proxy/internal/pattern"
	"github.com/authz-proxy/authz-proxy/internal/policy"
	"github.com/authz-proxy/authz-proxy/internal/sign/virtual"
	"github.com/authz-proxy/authz-proxy/internal/testkit"
	"github.com/authz-proxy/authz-proxy/internal/verify"
)

func load(t testing.TB, yaml string, files map[string]string) (*config.Config, error) {
	t.Helper()
	return config.Load(testkit.WriteConfig(t, t.TempDir(), yaml, files))
}

const base = "upstreams: [{name: lab, url: 'http://127.0.0.1:1', insecure: true}]\n"

func TestCompileReportsBadKeysWithTheirPosition(t *testing.T) {
	c, err := load(t, base+`attestors:
  - name: ci
    publicKeys:
      - file: garbage.pub
policy:
  rules: [{name: r, images: ["lab/**"], require: [{signature: {attestors: [ci]}}]}]
`, map[string]string{"garbage.pub": "not a key"})
	if err != nil {
		t.Fatal(err)
	}
	_, err = policy.Compile(c)
	if err == nil || !strings.Contains(err.Error(), "config.yaml:5: attestors[0].publicKeys[0].file: not a PEM public key") {
		t.Fatalf("err = %v", err)
	}
}

// evaluate judges s under p with a fresh judge: nothing cached.
func evaluate(ctx context.Context, p *policy.Policy, src policy.Source, s policy.Subject) (policy.Verdict, error) {
	j, err := policy.NewJudge(100, nil)
	if err != nil {
		return policy.Verdict{}, err
	}
	d, err := j.Evaluate(ctx, p, src, s)
	return d.Verdict, err
}

// noSignatures is a Source for rules that must not read any.
type noSignatures struct{}

func (noSignatures) Evidence(context.Context, string, string, oci.Want) (*oci.Evidence, error) {
	return nil, fmt.Errorf("the policy read evidence for a rule that needs none")
}

func TestFirstMatchingRuleDecides(t *testing.T) {
	c, err := load(t, base+`policy:
  allowlist: [lab/tools/**, "lab/pinned@sha256:`+strings.Repeat("a", 64)+`"]
  rules:
    - {name: deny-legacy, images: ["lab/legacy/**"], action: deny}
    - {name: everything, images: ["lab/**"], action: allow}
    - {name: never-reached, images: ["lab/legacy/app"], action: allow}
`, nil)
	if err != nil {
		t.Fatal(err)
	}
	p, err := policy.Compile(c)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		repo, digest, wantRule string
		allowed                bool
	}{
		{"legacy/app", "sha256:" + strings.Repeat("b", 64), "deny-legacy", false},
		{"new/app", "sha256:" + strings.Repeat("b", 64), "everything", true},
		{"tools/debug", "sha256:" + strings.Repeat("b", 64), "allowlist", true},
		{"pinned", "sha256:" + strings.Repeat("a", 64), "allowlist", true},
		{"pinned", "sha256:" + strings.Repeat("b", 64), "everything", true},
	}
	for _, tt := range tests {
		v, err := evaluate(context.Background(), p, noSignatures{}, policy.Subject{Upstream: "lab", Repository: tt.repo, Digest: tt.digest})
		if err != nil {
			t.Fatal(err)
		}
		if v.Rule != tt.wantRule || v.Allowed != tt.allowed {
			t.Errorf("%s@%s: rule %q allowed %v, want %q %v", tt.repo, tt.digest[:12], v.Rule, v.Allowed, tt.wantRule, tt.allowed)
		}
	}
}

// bigPolicy is a policy of n rules as a large organisation writes them,
// each for one team's repositories (some also for a service by its last
// segment, some for one environment only), with the target rule last, and
// the rules' image patterns in order, with each one's rule and whether it
// is for prod only.
func bigPolicy(t testing.TB, n int) (*policy.Policy, []ruleImage) {
	t.Helper()
	var sb strings.Builder
	var images []ruleImage
	sb.WriteString(base + "environments: [{name: prod, clients: [{cidr: 10.1.0.0/16}]}]\npolicy:\n  rules:\n")
	add := func(name string, prod bool, action string, pats ...string) {
		quoted := make([]string, len(pats))
		for i, p := range pats {
			quoted[i] = fmt.Sprintf("%q", p)
			pat, err := pattern.Parse(p)
			if err != nil {
				t.Fatal(err)
			}
			images = append(images, ruleImage{rule: name, prod: prod, pat: pat})
		}
		env := ""
		if prod {
			env = ", environments: [prod]"
		}
		fmt.Fprintf(&sb, "    - {name: %s, images: [%s]%s, action: %s}\n", name, strings.Join(quoted, ", "), env, action)
	}
	for i := range n - 1 {
		switch i % 10 {
		case 0:
			add(fmt.Sprintf("r%d", i), true, "allow", fmt.Sprintf("lab/team%d/**", i))
		case 1:
			add(fmt.Sprintf("r%d", i), false, "deny", fmt.Sprintf("lab/team%d/*", i), fmt.Sprintf("lab/**/svc-%d", i))
		case 2:
			add(fmt.Sprintf("r%d", i), false, "deny", fmt.Sprintf("lab/team%d*/app:v*", i/10))
		default:
			add(fmt.Sprintf("r%d", i), false, "deny", fmt.Sprintf("lab/team%d/**", i))
		}
	}
	add("last", false, "allow", "lab/target/**")
	c, err := load(t, sb.String(), nil)
	if err != nil {
		t.Fatal(err)
	}
	p, err := policy.Compile(c)
	if err != nil {
		t.Fatal(err)
	}
	return p, images
}

type ruleImage struct {
	rule string
	prod bool
	pat  pattern.Pattern
}

func TestTenThousandRulesPickTheRuleALinearScanPicks(t *testing.T) {
	const n = 10000
	p, images := bigPolicy(t, n)
	r := rand.New(rand.NewPCG(5, 6))
	for range 300 {
		s := policy.Subject{Upstream: "lab", Digest: "sha256:" + strings.Repeat("c", 64)}
		switch r.IntN(4) {
		case 0:
			s.Repository = fmt.Sprintf("team%d/app", r.IntN(n+100))
		case 1:
			s.Repository = fmt.Sprintf("team%d/x/svc-%d", r.IntN(n), r.IntN(n))
		case 2:
			s.Repository = fmt.Sprintf("team%d/deep/app", r.IntN(n))
		default:
			s.Repository = "target/app"
		}
		if r.IntN(2) == 0 {
			s.Tag = fmt.Sprintf("v%d", r.IntN(3))
		}
		if r.IntN(2) == 0 {
			s.Environment = "prod"
		}
		want := "default"
		img := pattern.Image{Name: s.Image(), Tag: s.Tag, Digest: s.Digest}
		for _, ri := range images {
			if (!ri.prod || s.Environment == "prod") && ri.pat.Match(img) {
				want = ri.rule
				break
			}
		}
		v, err := evaluate(context.Background(), p, noSignatures{}, s)
		if err != nil {
			t.Fatal(err)
		}
		if v.Rule != want {
			t.Fatalf("%+v: rule %q, a linear scan of the rules picks %q", s, v.Rule, want)
		}
	}
}

// BenchmarkMatch judges an image that only the last of 10 and of 10,000
// glob rules matches: the rules are indexed, so the cost stays flat.
func BenchmarkMatch(b *testing.B) {
	for _, n := range []int{10, 10000} {
		p, _ := bigPolicy(b, n)
		s := policy.Subject{Upstream: "lab", Repository: "target/app", Digest: "sha256:" + strings.Repeat("c", 64)}
		b.Run(fmt.Sprintf("rules=%d", n), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				v, err := evaluate(context.Background(), p, noSignatures{}, s)
				if err != nil || v.Rule != "last" {
					b.Fatal(v, err)
				}
			}
		})
	}
}

func TestCompileReportsBadTrustedRootsWithTheirPosition(t *testing.T) {
	tests := []struct {
		name, attestor, root, want string
	}{
		{"KeylessRootNotJSON", "    keyless: {issuer: https://x, subject: a, trustedRootFile: root.json}\n", "garbage",
			"config.yaml:4: attestors[0].keyless.trustedRootFile: root.json: not a Sigstore trusted root"},
		{"KeylessRootTrustingNothing", "    keyless: {issuer: https://x, subject: a, trustedRootFile: root.json}\n", `{"mediaType": "application/vnd.dev.sigstore.trustedroot+json;version=0.1"}`,
			"config.yaml:4: attestors[0].keyless.trustedRootFile: root.json: the trusted root lists no certificate authority"},
		{"OneOfTrustedRootFilesNotJSON", "    keyless: {issuer: https://x, subject: a, trustedRootFiles: [root.json]}\n", "garbage",
			"config.yaml:4: attestors[0].keyless.trustedRootFiles[0]: root.json: not a Sigstore trusted root"},
		{"KeyLogRootNotARoot", "    publicKeys: [{pem: \"" + strings.ReplaceAll(testKeyPEM, "\n", `\n`) + "\"}]\n    requireTlog: true\n    trustedRootFile: root.json\n", `{"mediaType": "something else"}`,
			"config.yaml:6: attestors[0].trustedRootFile: root.json: not a Sigstore trusted root"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := load(t, base+"attestors:\n  - name: ci\n"+tt.attestor+"policy:\n  rules: [{name: r, images: [\"lab/**\"], require: [{signature: {attestors: [ci]}}]}]\n",
				map[string]string{"root.json": tt.root})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := policy.Compile(c); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want %q", err, tt.want)
			}
		})
	}
}

const testKeyPEM = `-----BEGIN PUBLIC KEY-----
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE8tRzrOxS4fmNNnDV3ugf9OiRMU0B
Hr8d3k1i3qc8kkuOXyU6hxX/0sK7fG1Th1RF2bTAXtk+1r7dB1gMbPZdSw==
-----END PUBLIC KEY-----
`

func TestCompileWarnsWhenAttestorsOfOneRequirementShareAKey(t *testing.T) {
	dir := t.TempDir()
	testkit.NewSigner(t, filepath.Join(dir, "ci.pub"))
	testkit.NewSigner(t, filepath.Join(dir, "new.pub"))
	text := base + `attestors:
  - {name: ci-2025, publicKeys: [{file: ci.pub}]}
  - {name: ci-2026, publicKeys: [{file: ci.pub}, {file: new.pub}]}
policy:
  rules:
    - name: r
      images: ["lab/**"]
      require:
        - signature: {attestors: [ci-2025, ci-2026], threshold: 2}
`
	p, err := policy.Compile(testkit.LoadConfig(t, dir, text, nil))
	if err != nil {
		t.Fatal(err)
	}
	want := "config.yaml:10: policy.rules[0].require[0]: attestors ci-2025 and ci-2026 share the key sha256:"
	if len(p.Warnings) != 1 || !strings.Contains(p.Warnings[0], want) || !strings.Contains(p.Warnings[0], "counts once toward the threshold") {
		t.Fatalf("warnings %q, want one containing %q", p.Warnings, want)
	}
}

func TestCompileRejectsUnknownCertificateExtensions(t *testing.T) {
	vs, err := virtual.New()
	if err != nil {
		t.Fatal(err)
	}
	root, err := vs.TrustedRoot()
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct{ name, certificate, want string }{
		{"Misspelled", "sourceRepositoryUri: https://github.com/acme/app",
			`config.yaml:8: attestors[0].keyless.certificate.sourceRepositoryUri: unknown certificate extension "sourceRepositoryUri" (did you mean sourceRepositoryURI?): want one of githubWorkflowTrigger, `},
		{"Incomplete", "sourceRepository: https://github.com/acme/app",
			`attestors[0].keyless.certificate.sourceRepository: unknown certificate extension "sourceRepository": want one of`},
		{"MisspelledRegexp", "buildTriggerRegex: push",
			`attestors[0].keyless.certificate.buildTriggerRegex: unknown certificate extension "buildTriggerRegex"`},
		{"TheIssuerHasItsOwnField", "issuer: https://x",
			"attestors[0].keyless.certificate.issuer: set the issuer with keyless.issuer, not under certificate"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := load(t, base+`attestors:
  - name: ci
    keyless:
      issuer: https://x
      subject: a
      certificate:
        `+tt.certificate+`
      trustedRootFile: root.json
policy:
  rules: [{name: r, images: ["lab/**"], require: [{signature: {attestors: [ci]}}]}]
`, map[string]string{"root.json": string(root)})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := policy.Compile(c); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want %q", err, tt.want)
			}
		})
	}
	t.Run("EveryKnownNameCompiles", func(t *testing.T) {
		var fields strings.Builder
		for i, e := range verify.Extensions {
			suffix := ""
			if i%2 == 1 {
				suffix = "Regexp"
			}
			fmt.Fprintf(&fields, "        %s%s: x\n", e.Name, suffix)
		}
		c, err := load(t, base+"attestors:\n  - name: ci\n    keyless:\n      github: {repository: acme/app}\n      certificate:\n"+fields.String()+
			"      trustedRootFile: root.json\npolicy:\n  rules: [{name: r, images: [\"lab/**\"], require: [{signature: {attestors: [ci]}}]}]\n",
			map[string]string{"root.json": string(root)})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := policy.Compile(c); err != nil {
			t.Fatal(err)
		}
	})
}

func TestCompileReportsBadNotationTrustWithItsPosition(t *testing.T) {
	ca, err := virtual.NewCA("Acme", time.Now().Add(-time.Hour), time.Now().Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := ca.Issue(virtual.Leaf{Name: pkix.Name{CommonName: "release"}})
	if err != nil {
		t.Fatal(err)
	}
	rootPEM, _ := cryptoutils.MarshalCertificateToPEM(ca.Root)
	leafPEM, _ := cryptoutils.MarshalCertificateToPEM(leaf.Cert)
	tests := []struct {
		name, store, identity, want string
	}{
		{"TrustStoreNotCertificates", "garbage", "*", "config.yaml:4: attestors[0].notation.trustStore[0]: ca.crt: neither PEM nor DER certificates"},
		{"TrustStoreHoldingAKey", testKeyPEM, "*", "config.yaml:4: attestors[0].notation.trustStore[0]: ca.crt: holds a PEM PUBLIC KEY, not a CERTIFICATE"},
		{"TrustStoreHoldingALeaf", string(leafPEM), "*", `config.yaml:4: attestors[0].notation: trust store: certificate with subject "CN=release" is not a CA certificate or self-signed signing certificate`},
		{"IdentityThatDoesNotParse", string(rootPEM), "x509.subject: not a dn", `config.yaml:4: attestors[0].notation.trustedIdentities[0]: "x509.subject: not a dn" is not a distinguished name (RFC 4514)`},
		{"IdentityOfAnotherKind", string(rootPEM), "x509.issuer: O=Acme", `config.yaml:4: attestors[0].notation.trustedIdentities[0]: "x509.issuer: O=Acme": want "x509.subject: <distinguished name>"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := load(t, base+"attestors:\n  - name: release\n    notation: {trustStore: [ca.crt], trustedIdentities: ["+fmt.Sprintf("%q", tt.identity)+"]}\n"+
				"policy:\n  rules: [{name: r, images: [\"lab/**\"], require: [{signature: {attestors: [release]}}]}]\n",
				map[string]string{"ca.crt": tt.store})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := policy.Compile(c); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want %q", err, tt.want)
			}
		})
	}
	t.Run("IdentityWithoutCountryStateAndOrganizationWarns", func(t *testing.T) {
		c, err := load(t, base+"attestors:\n  - name: release\n    notation: {trustStore: [ca.crt], trustedIdentities: [\"x509.subject: O=Acme, CN=release\"]}\n"+
			"policy:\n  rules: [{name: r, images: [\"lab/**\"], require: [{signature: {attestors: [release]}}]}]\n",
			map[string]string{"ca.crt": string(rootPEM)})
		if err != nil {
			t.Fatal(err)
		}
		p, err := policy.Compile(c)
		if err != nil {
			t.Fatal(err)
		}
		want := `config.yaml:4: attestors[0].notation.trustedIdentities[0]: "x509.subject: O=Acme, CN=release" names no C, ST: notation itself requires C, ST and O`
		if w := strings.Join(p.Warnings, "\n"); !strings.Contains(w, want) {
			t.Fatalf("warnings %q, want %q", w, want)
		}
	})
}
