package config_test

import (
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/authz-proxy/authz-proxy/internal/config"
	"github.com/authz-proxy/authz-proxy/internal/testkit"
)

const validYAML = `listen:
  addr: 127.0.0.1:5000
upstreams:
  - name: docker.io
    url: https://registry-1.docker.io
  - name: lab
    url: http://127.0.0.1:5001
    insecure: true
defaultUpstream: docker.io
attestors:
  - name: ci
    publicKeys:
      - file: ci.pub
  - name: release
    publicKeys:
      - pem: |
          -----BEGIN PUBLIC KEY-----
          AAAA
          -----END PUBLIC KEY-----
policy:
  allowlist: [docker.io/library/busybox]
  rules:
    - name: acme
      images: ["lab/acme/**"]
      require:
        - signature:
            attestors: [ci, release]
            threshold: 2
    - name: official
      images: ["docker.io/library/*"]
      action: allow
`

func TestLoadAppliesDefaults(t *testing.T) {
	dir := t.TempDir()
	testkit.WriteFile(t, filepath.Join(dir, "ci.pub"), "key bytes")
	c, err := config.Load(testkit.WriteFile(t, filepath.Join(dir, "config.yaml"), validYAML))
	if err != nil {
		t.Fatal(err)
	}
	if c.Cache.MaxEntries != 10000 || c.Cache.AllowTTL != 10*time.Minute || c.Cache.DenyTTL != 30*time.Second {
		t.Errorf("cache defaults = %+v", c.Cache)
	}
	if c.Policy.Enforcement != config.Enforce || c.Policy.Default.Action != config.ActionDeny {
		t.Errorf("policy defaults: enforcement %q, default action %q", c.Policy.Enforcement, c.Policy.Default.Action)
	}
	if got := c.Policy.Rules[0].Action; got != config.ActionVerify {
		t.Errorf("a rule with require has action %q, want verify", got)
	}
	if got := c.Path("ci.pub"); got != filepath.Join(dir, "ci.pub") {
		t.Errorf("Path is not relative to the config file: %s", got)
	}
	if len(c.Generation) != 16 {
		t.Errorf("Generation = %q", c.Generation)
	}
	if c.Revalidate != nil {
		t.Errorf("revalidate is on without a revalidate section: %+v", c.Revalidate)
	}
	c, err = config.Load(testkit.WriteFile(t, filepath.Join(dir, "config.yaml"), validYAML+"revalidate: {}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if r := c.Revalidate; r == nil || r.Interval != 4*time.Hour || r.Window != 24*time.Hour {
		t.Errorf("revalidate defaults = %+v, want every 4h over 24h", r)
	}
}

func TestGenerationChangesWithKeyFile(t *testing.T) {
	dir := t.TempDir()
	testkit.WriteFile(t, filepath.Join(dir, "ci.pub"), "key one")
	path := testkit.WriteFile(t, filepath.Join(dir, "config.yaml"), validYAML)
	a, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	testkit.WriteFile(t, filepath.Join(dir, "ci.pub"), "key two")
	b, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if a.Generation == b.Generation {
		t.Error("replacing a key file kept the policy generation: old verdicts would be reused")
	}
}

func TestLoadRejectsBrokenConfigs(t *testing.T) {
	tests := []struct {
		name    string
		edit    func(string) string
		wantErr string
	}{
		{"unknown field names its line", func(s string) string {
			return strings.Replace(s, "  addr: 127.0.0.1:5000", "  addr: 127.0.0.1:5000\n  adress: x", 1)
		}, `config.yaml:3: unknown field "adress"`},
		{"unknown attestor names rule, field and line", func(s string) string {
			return strings.Replace(s, "[ci, release]", "[ci, relase]", 1)
		}, `config.yaml:27: policy.rules[0].require[0].signature.attestors[1]: unknown attestor "relase"`},
		{"threshold above the attestor count", func(s string) string {
			return strings.Replace(s, "threshold: 2", "threshold: 3", 1)
		}, "config.yaml:28: policy.rules[0].require[0].signature.threshold: 3: want 1 to 2"},
		{"bad glob", func(s string) string {
			return strings.Replace(s, `"lab/acme/**"`, `"lab/acme/a**"`, 1)
		}, "config.yaml:24: policy.rules[0].images[0]: pattern \"lab/acme/a**\": ** must be a whole path segment"},
		{"plain http without insecure", func(s string) string {
			return strings.Replace(s, "    insecure: true\n", "", 1)
		}, "upstreams[1].url: \"http://127.0.0.1:5001\" is plain http: set insecure: true"},
		{"default upstream that does not exist", func(s string) string {
			return strings.Replace(s, "defaultUpstream: docker.io", "defaultUpstream: quay.io", 1)
		}, `config.yaml:9: defaultUpstream: "quay.io" names no upstream`},
		{"missing key file", func(s string) string {
			return strings.Replace(s, "file: ci.pub", "file: nope.pub", 1)
		}, "attestors[0].publicKeys[0].file: open"},
		{"bad enforcement", func(s string) string {
			return strings.Replace(s, "policy:\n", "policy:\n  enforcement: audit\n", 1)
		}, `policy.enforcement: "audit": want enforce or dryrun`},
		{"bad duration", func(s string) string {
			return s + "cache:\n  allowTTL: ten minutes\n"
		}, "config.yaml:33: cannot unmarshal !!str `ten min...` into time.Duration"},
		{"keyless without subject or trusted root", func(s string) string {
			return strings.Replace(s, "    publicKeys:\n      - file: ci.pub", "    keyless:\n      issuer: https://x", 1)
		}, "config.yaml:12: attestors[0].keyless: set subject, subjectRegexp or github"},
		{"keyless without issuer", func(s string) string {
			return strings.Replace(s, "    publicKeys:\n      - file: ci.pub", "    keyless:\n      subject: a@example.com\n      trustedRootFile: ci.pub", 1)
		}, "config.yaml:12: attestors[0].keyless: issuer is required"},
		{"keyless with both subject and regexp", func(s string) string {
			return strings.Replace(s, "    publicKeys:\n      - file: ci.pub", "    keyless:\n      issuer: https://x\n      subject: a\n      subjectRegexp: b\n      trustedRootFile: ci.pub", 1)
		}, "attestors[0].keyless: set at most one of subject and subjectRegexp"},
		{"keyless with a bad regexp", func(s string) string {
			return strings.Replace(s, "    publicKeys:\n      - file: ci.pub", "    keyless:\n      issuer: https://x\n      subjectRegexp: '^(a'\n      trustedRootFile: ci.pub", 1)
		}, "config.yaml:14: attestors[0].keyless.subjectRegexp: error parsing regexp"},
		{"keyless with a certificate field both exact and regexp", func(s string) string {
			return strings.Replace(s, "    publicKeys:\n      - file: ci.pub", "    keyless:\n      issuer: https://x\n      subject: a\n      trustedRootFile: ci.pub\n      certificate:\n        buildTrigger: push\n        buildTriggerRegexp: '^push$'", 1)
		}, "config.yaml:18: attestors[0].keyless.certificate.buildTriggerRegexp: set at most one of buildTrigger and buildTriggerRegexp"},
		{"keyless with a bad certificate regexp", func(s string) string {
			return strings.Replace(s, "    publicKeys:\n      - file: ci.pub", "    keyless:\n      issuer: https://x\n      subject: a\n      trustedRootFile: ci.pub\n      certificate: {sourceRepositoryRefRegexp: '^(refs'}", 1)
		}, "config.yaml:16: attestors[0].keyless.certificate.sourceRepositoryRefRegexp: error parsing regexp"},
		{"github without repository", func(s string) string {
			return strings.Replace(s, "    publicKeys:\n      - file: ci.pub", "    keyless:\n      github: {workflow: .github/workflows/release.yml}\n      trustedRootFile: ci.pub", 1)
		}, "config.yaml:13: attestors[0].keyless.github: repository is required"},
		{"github workflow with a ref", func(s string) string {
			return strings.Replace(s, "    publicKeys:\n      - file: ci.pub", "    keyless:\n      github:\n        repository: acme/app\n        workflow: .github/workflows/release.yml@refs/heads/main\n      trustedRootFile: ci.pub", 1)
		}, "config.yaml:15: attestors[0].keyless.github.workflow: \".github/workflows/release.yml@refs/heads/main\": want the workflow file's path"},
		{"github with an unknown runner", func(s string) string {
			return strings.Replace(s, "    publicKeys:\n      - file: ci.pub", "    keyless:\n      github: {repository: acme/app, runner: hosted}\n      trustedRootFile: ci.pub", 1)
		}, `attestors[0].keyless.github.runner: "hosted": want github-hosted or self-hosted`},
		{"github with a short ref", func(s string) string {
			return strings.Replace(s, "    publicKeys:\n      - file: ci.pub", "    keyless:\n      github: {repository: acme/app, ref: main}\n      trustedRootFile: ci.pub", 1)
		}, `attestors[0].keyless.github.ref: "main": want a full git ref`},
		{"keyless with a missing file among trustedRootFiles", func(s string) string {
			return strings.Replace(s, "    publicKeys:\n      - file: ci.pub", "    keyless:\n      issuer: https://x\n      subject: a\n      trustedRootFiles: [ci.pub, nope.json]", 1)
		}, "attestors[0].keyless.trustedRootFiles[1]: open"},
		{"keyless with a missing trusted root", func(s string) string {
			return strings.Replace(s, "    publicKeys:\n      - file: ci.pub", "    keyless:\n      issuer: https://x\n      subject: a\n      trustedRootFile: nope.json", 1)
		}, "config.yaml:15: attestors[0].keyless.trustedRootFile: open"},
		{"keyless and keys at once", func(s string) string {
			return strings.Replace(s, "      - file: ci.pub", "      - file: ci.pub\n    keyless: {issuer: https://x, subject: a, trustedRootFile: ci.pub}", 1)
		}, "config.yaml:11: attestors[0]: set exactly one of publicKeys, keyless and notation"},
		{"notation and keys at once", func(s string) string {
			return strings.Replace(s, "      - file: ci.pub", "      - file: ci.pub\n    notation: {trustStore: [ci.pub], trustedIdentities: ['*']}", 1)
		}, "config.yaml:11: attestors[0]: set exactly one of publicKeys, keyless and notation"},
		{"notation without a trust store", func(s string) string {
			return strings.Replace(s, "    publicKeys:\n      - file: ci.pub", "    notation: {trustedIdentities: ['*']}", 1)
		}, "config.yaml:12: attestors[0].notation: trustStore is required"},
		{"notation with a missing trust store file", func(s string) string {
			return strings.Replace(s, "    publicKeys:\n      - file: ci.pub", "    notation:\n      trustStore: [ci.pub, nope.crt]\n      trustedIdentities: ['*']", 1)
		}, "config.yaml:13: attestors[0].notation.trustStore[1]: open"},
		{"notation with a missing TSA root", func(s string) string {
			return strings.Replace(s, "    publicKeys:\n      - file: ci.pub", "    notation:\n      trustStore: [ci.pub]\n      tsaRoots: [nope.crt]\n      trustedIdentities: ['*']", 1)
		}, "config.yaml:14: attestors[0].notation.tsaRoots[0]: open"},
		{"notation without identities", func(s string) string {
			return strings.Replace(s, "    publicKeys:\n      - file: ci.pub", "    notation: {trustStore: [ci.pub]}", 1)
		}, "attestors[0].notation: trustedIdentities is required"},
		{"notation with * among identities", func(s string) string {
			return strings.Replace(s, "    publicKeys:\n      - file: ci.pub", "    notation: {trustStore: [ci.pub], trustedIdentities: ['*', 'x509.subject: O=Acme']}", 1)
		}, `attestors[0].notation.trustedIdentities: "*" trusts any signer of the trust store`},
		{"notation with an unknown level", func(s string) string {
			return strings.Replace(s, "    publicKeys:\n      - file: ci.pub", "    notation: {trustStore: [ci.pub], trustedIdentities: ['*'], level: skip}", 1)
		}, `attestors[0].notation.level: "skip": want strict, permissive or audit`},
		{"notation verifyTimestamp without tsaRoots", func(s string) string {
			return strings.Replace(s, "    publicKeys:\n      - file: ci.pub", "    notation: {trustStore: [ci.pub], trustedIdentities: ['*'], verifyTimestamp: afterCertExpiry}", 1)
		}, "attestors[0].notation.verifyTimestamp: needs tsaRoots"},
		{"notation audit under an enforcing rule", func(s string) string {
			return strings.Replace(s, "    publicKeys:\n      - file: ci.pub", "    notation: {trustStore: [ci.pub], trustedIdentities: ['*'], level: audit}", 1)
		}, `config.yaml:26: policy.rules[0].require[0].signature.attestors[0]: attestor "ci" has level audit, which logs failures without blocking: that is enforcement dryrun here; set policy.rules[0].enforcement: dryrun`},
		{"notation attestor asked for an attestation", func(s string) string {
			s = strings.Replace(s, "    publicKeys:\n      - file: ci.pub", "    notation: {trustStore: [ci.pub], trustedIdentities: ['*']}", 1)
			return strings.Replace(s, "        - signature:\n            attestors: [ci, release]\n            threshold: 2", "        - attestation:\n            predicateType: vuln\n            attestors: [ci]", 1)
		}, `policy.rules[0].require[0].attestation.attestors[0]: attestor "ci" is a Notary Project signer: notation signs images, not in-toto attestations`},
		{"keyless with the attestor's requireTlog", func(s string) string {
			return strings.Replace(s, "    publicKeys:\n      - file: ci.pub", "    requireTlog: true\n    keyless: {issuer: https://x, subject: a, trustedRootFile: ci.pub}", 1)
		}, "config.yaml:12: attestors[0].requireTlog: for a keyless attestor, set keyless.requireTlog instead"},
		{"requireTlog without a trusted root", func(s string) string {
			return strings.Replace(s, "      - file: ci.pub", "      - file: ci.pub\n    requireTlog: true", 1)
		}, "config.yaml:14: attestors[0].requireTlog: needs trustRoots or trustedRootFile"},
		{"a key's trust roots without requireTlog", func(s string) string {
			return strings.Replace(s, "      - file: ci.pub", "      - file: ci.pub\n    trustedRootFile: ci.pub", 1)
		}, "attestors[0]: trustRoots and trustedRootFile verify transparency-log proofs: set requireTlog: true, or remove them"},
		{"a key's requireTlog naming an unknown trust root", func(s string) string {
			return strings.Replace(s, "      - file: ci.pub", "      - file: ci.pub\n    requireTlog: true\n    trustRoots: [public-good]", 1)
		}, `attestors[0].trustRoots[0]: "public-good" is not a trust root: name one of trustRoots`},
		{"a keyless attestor's trust roots outside keyless", func(s string) string {
			return strings.Replace(s, "    publicKeys:\n      - file: ci.pub", "    trustRoots: [a]\n    keyless: {issuer: https://x, subject: a, trustedRootFile: ci.pub}", 1)
		}, "attestors[0].trustRoots: for a keyless attestor, set keyless.trustRoots instead"},
		{"key trusted root that is missing", func(s string) string {
			return strings.Replace(s, "      - file: ci.pub", "      - file: ci.pub\n    requireTlog: true\n    trustedRootFile: nope.json", 1)
		}, "config.yaml:15: attestors[0].trustedRootFile: open"},
		{"attestation predicate type that is neither a URI nor a cosign name", func(s string) string {
			return strings.Replace(s, "        - signature:\n            attestors: [ci, release]\n            threshold: 2", "        - attestation:\n            predicateType: slsa\n            attestors: [ci]", 1)
		}, `config.yaml:27: policy.rules[0].require[0].attestation.predicateType: "slsa": want a predicate type URI or one of cosign's --type names`},
		{"attestation without predicate type", func(s string) string {
			return strings.Replace(s, "        - signature:\n            attestors: [ci, release]\n            threshold: 2", "        - attestation:\n            attestors: [ci]", 1)
		}, "config.yaml:26: policy.rules[0].require[0].attestation: predicateType is required"},
		{"attestation threshold above the attestor count", func(s string) string {
			s = strings.Replace(s, "        - signature:\n", "        - attestation:\n            predicateType: vuln\n", 1)
			return strings.Replace(s, "threshold: 2", "threshold: 3", 1)
		}, "config.yaml:29: policy.rules[0].require[0].attestation.threshold: 3: want 1 to 2"},
		{"attestation from an unknown attestor", func(s string) string {
			return strings.Replace(s, "        - signature:\n            attestors: [ci, release]", "        - attestation:\n            predicateType: vuln\n            attestors: [ci, qa]", 1)
		}, `policy.rules[0].require[0].attestation.attestors[1]: unknown attestor "qa"`},
		{"allow with require", func(s string) string {
			return strings.Replace(s, "      require:", "      action: allow\n      require:", 1)
		}, "policy.rules[0].require: action allow takes no require"},
		{"rule without name", func(s string) string {
			return strings.Replace(s, "    - name: official\n", "    - name: \"\"\n", 1)
		}, "policy.rules[1]: name is required"},
		{"url with a path", func(s string) string {
			return strings.Replace(s, "https://registry-1.docker.io", "https://registry-1.docker.io/v2", 1)
		}, "give only scheme and host"},
		{"metrics without a port", func(s string) string {
			return s + "metrics: {addr: localhost}\n"
		}, "metrics.addr: want host:port"},
		{"metrics on the proxy's own address", func(s string) string {
			return s + "metrics: {addr: 127.0.0.1:5000}\n"
		}, "metrics.addr: 127.0.0.1:5000 is listen.addr too"},
		{"environment selector with both cn and cidr", func(s string) string {
			return s + "environments: [{name: prod, clients: [{cn: a, cidr: 10.0.0.0/8}]}]\n"
		}, "environments[0].clients[0]: set exactly one of cn, cidr and principal"},
		{"environment with a bad address range", func(s string) string {
			return s + "environments: [{name: prod, clients: [{cidr: 10.0.0.0/33}]}]\n"
		}, `environments[0].clients[0].cidr: "10.0.0.0/33": want an address range`},
		{"certificate selector without client certificates", func(s string) string {
			return s + "environments: [{name: prod, clients: [{cn: prod-cluster}]}]\n"
		}, `environments[0].clients[0].cn: "prod-cluster" selects clients by their certificate, but listen.tls.clientCAFile is not set`},
		{"environment named twice", func(s string) string {
			return s + "environments: [{name: prod, clients: [{cidr: 10.0.0.0/8}]}, {name: prod, clients: [{cidr: 10.1.0.0/16}]}]\n"
		}, `environments[1].name: "prod" is used twice`},
		{"rule for an undefined environment", func(s string) string {
			return strings.Replace(s, `      images: ["lab/acme/**"]`, `      images: ["lab/acme/**"]`+"\n      environments: [prod]", 1)
		}, `config.yaml:25: policy.rules[0].environments[0]: unknown environment "prod"`},
		{"default rule with environments", func(s string) string {
			return s + "  default: {action: deny, environments: [prod]}\nenvironments: [{name: prod, clients: [{cidr: 10.0.0.0/8}]}]\n"
		}, "policy.default.environments: the default rule applies to every client"},
		{"breakglass without expiry", func(s string) string {
			return strings.Replace(s, "policy:\n", "policy:\n  breakglass: [{image: lab/acme/app, reason: INC-1}]\n", 1)
		}, "policy.breakglass[0]: expires is required"},
		{"breakglass without reason", func(s string) string {
			return strings.Replace(s, "policy:\n", "policy:\n  breakglass: [{image: lab/acme/app, expires: 2030-01-01T00:00:00Z}]\n", 1)
		}, "policy.breakglass[0]: reason is required"},
		{"breakglass with a bad image", func(s string) string {
			return strings.Replace(s, "policy:\n", "policy:\n  breakglass: [{image: app@sha256:1, expires: 2030-01-01T00:00:00Z, reason: INC-1}]\n", 1)
		}, "policy.breakglass[0].image: pattern"},
		{"a log id with a space", func(s string) string {
			return s + "audit: {logId: \"prod eu\"}\n"
		}, `audit.logId: "prod eu": want up to 128 letters`},
		{"a re-validation interval under a second", func(s string) string {
			return s + "revalidate: {interval: 10ms}\n"
		}, "revalidate.interval: 10ms: want an interval of at least 1s"},
		{"trust root without a name", func(s string) string {
			return strings.Replace(s, "attestors:\n", "trustRoots:\n  - file: ci.pub\nattestors:\n", 1)
		}, "config.yaml:11: trustRoots[0]: name is required"},
		{"trust root named twice", func(s string) string {
			return strings.Replace(s, "attestors:\n", "trustRoots:\n  - {name: a, file: ci.pub}\n  - {name: a, file: ci.pub}\nattestors:\n", 1)
		}, `trustRoots[1].name: "a" is used twice`},
		{"trust root both tuf and file", func(s string) string {
			return strings.Replace(s, "attestors:\n", "trustRoots:\n  - {name: a, file: ci.pub, tuf: {}}\nattestors:\n", 1)
		}, "trustRoots[0]: set exactly one of tuf and file"},
		{"trust root file missing", func(s string) string {
			return strings.Replace(s, "attestors:\n", "trustRoots:\n  - {name: a, file: nope.json}\nattestors:\n", 1)
		}, "trustRoots[0].file: open"},
		{"tuf mirror of another scheme", func(s string) string {
			return strings.Replace(s, "attestors:\n", "trustRoots:\n  - {name: a, tuf: {mirror: ftp://x, root: ci.pub}}\nattestors:\n", 1)
		}, `trustRoots[0].tuf.mirror: "ftp://x": want https://host[/path], http://host[/path] or file:///folder`},
		{"tuf mirror of another instance without its root", func(s string) string {
			return strings.Replace(s, "attestors:\n", "trustRoots:\n  - {name: github, tuf: {mirror: https://tuf-repo.github.com}}\nattestors:\n", 1)
		}, "trustRoots[0].tuf.root: required for a mirror other than https://tuf-repo-cdn.sigstore.dev"},
		{"tuf root file missing", func(s string) string {
			return strings.Replace(s, "attestors:\n", "trustRoots:\n  - {name: github, tuf: {mirror: https://tuf-repo.github.com, root: nope.json}}\nattestors:\n", 1)
		}, "trustRoots[0].tuf.root: open"},
		{"tuf refresh under a second", func(s string) string {
			return strings.Replace(s, "attestors:\n", "trustRoots:\n  - {name: a, tuf: {refresh: 10ms}}\nattestors:\n", 1)
		}, "trustRoots[0].tuf.refresh: 10ms: want a duration of at least 1s"},
		{"keyless naming an unknown trust root", func(s string) string {
			return strings.Replace(s, "    publicKeys:\n      - file: ci.pub", "    keyless: {issuer: https://x, subject: a, trustRoots: [public-good]}", 1)
		}, `attestors[0].keyless.trustRoots[0]: "public-good" is not a trust root: name one of trustRoots`},
		{"keyless with no root at all", func(s string) string {
			return strings.Replace(s, "    publicKeys:\n      - file: ci.pub", "    keyless: {issuer: https://x, subject: a}", 1)
		}, "attestors[0].keyless: trustRoots, trustedRootFile or trustedRootFiles is required"},
		{"not yaml", func(string) string { return "listen: [" }, "config.yaml:1: did not find expected node content"},
		{"empty", func(string) string { return "" }, "config.yaml: the file is empty"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			testkit.WriteFile(t, filepath.Join(dir, "ci.pub"), "key")
			_, err := config.Load(testkit.WriteFile(t, filepath.Join(dir, "config.yaml"), tt.edit(validYAML)))
			if err == nil {
				t.Fatal("Load accepted a broken config")
			}
			if !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("error:\n%v\nwant it to contain:\n%s", err, tt.wantErr)
			}
		})
	}
}

func TestOperationsSectionsLoad(t *testing.T) {
	dir := t.TempDir()
	testkit.WriteFile(t, filepath.Join(dir, "ci.pub"), "key")
	for _, f := range []string{"server.crt", "server.key", "clients.crt"} {
		testkit.WriteFile(t, filepath.Join(dir, f), "x")
	}
	text := strings.Replace(validYAML, "  addr: 127.0.0.1:5000\n", "  addr: 127.0.0.1:5000\n  tls: {certFile: server.crt, keyFile: server.key, clientCAFile: clients.crt}\n", 1) +
		"metrics: {addr: 127.0.0.1:9090}\n" +
		"environments:\n  - name: prod\n    clients: [{cn: prod-cluster}, {cidr: 10.1.0.0/16}]\n  - name: dev\n    clients: [{cidr: '2001:db8::/32'}]\n"
	text = strings.Replace(text, `      images: ["lab/acme/**"]`, `      images: ["lab/acme/**"]`+"\n      environments: [prod, dev]", 1)
	text = strings.Replace(text, "policy:\n", "policy:\n  breakglass:\n    - {image: \"lab/acme/app@sha256:"+strings.Repeat("a", 64)+"\", expires: \"2999-01-01T00:00:00Z\", reason: INC-1}\n", 1)
	c, err := config.Load(testkit.WriteFile(t, filepath.Join(dir, "config.yaml"), text))
	if err != nil {
		t.Fatal(err)
	}
	if c.Metrics.Addr != "127.0.0.1:9090" || len(c.Environments) != 2 || c.Policy.Rules[0].Environments[1] != "dev" {
		t.Errorf("loaded %+v %+v %+v", c.Metrics, c.Environments, c.Policy.Rules[0])
	}
	if b := c.Policy.Breakglass[0]; b.Reason != "INC-1" || b.Expires.Year() != 2999 {
		t.Errorf("breakglass %+v", b)
	}
	if len(c.Warnings) != 0 {
		t.Errorf("warnings for a sound configuration: %v", c.Warnings)
	}
	want := []string{"server.crt", "server.key", "clients.crt", "ci.pub"}
	for _, files := range [][]string{c.Files(), config.ReferencedFiles(c.File)} {
		if len(files) != len(want) {
			t.Fatalf("files %v, want %v", files, want)
		}
		for i, f := range files {
			if f != filepath.Join(dir, want[i]) {
				t.Errorf("file %d is %s, want %s in %s", i, f, want[i], dir)
			}
		}
	}
}

func TestExpiredBreakglassIsAWarningNotAnError(t *testing.T) {
	dir := t.TempDir()
	testkit.WriteFile(t, filepath.Join(dir, "ci.pub"), "key")
	text := strings.Replace(validYAML, "policy:\n", "policy:\n  breakglass:\n    - image: lab/acme/app\n      expires: 2020-01-01T00:00:00Z\n      reason: INC-1\n", 1)
	c, err := config.Load(testkit.WriteFile(t, filepath.Join(dir, "config.yaml"), text))
	if err != nil {
		t.Fatal(err)
	}
	want := "config.yaml:23: policy.breakglass[0].expires: 2020-01-01T00:00:00Z has passed: this entry is ignored"
	if len(c.Warnings) != 1 || !strings.Contains(c.Warnings[0], want) {
		t.Errorf("warnings %q, want one containing %q", c.Warnings, want)
	}
}

func TestReferencedFilesListsWhatABrokenConfigurationNames(t *testing.T) {
	dir := t.TempDir()
	path := testkit.WriteFile(t, filepath.Join(dir, "config.yaml"), "attestors: [{name: ci, publicKeys: [{file: missing.pub}]}]\nbogus: true\n")
	files := config.ReferencedFiles(path)
	if len(files) != 1 || files[0] != filepath.Join(dir, "missing.pub") {
		t.Errorf("ReferencedFiles = %v", files)
	}
}

func TestAttestationRequirementDefaultsAndCosignTypeNames(t *testing.T) {
	dir := t.TempDir()
	testkit.WriteFile(t, filepath.Join(dir, "ci.pub"), "key")
	text := strings.Replace(validYAML, "        - signature:\n            attestors: [ci, release]\n            threshold: 2",
		"        - attestation:\n            predicateType: slsaprovenance1\n            attestors: [ci]\n        - attestation:\n            predicateType: https://example.com/review/v1\n            attestors: [ci]", 1)
	c, err := config.Load(testkit.WriteFile(t, filepath.Join(dir, "config.yaml"), text))
	if err != nil {
		t.Fatal(err)
	}
	reqs := c.Policy.Rules[0].Require
	if a := reqs[0].Attestation; a.PredicateType != "https://slsa.dev/provenance/v1" || a.Threshold != 1 {
		t.Errorf("cosign's slsaprovenance1 became %q, threshold %d; want https://slsa.dev/provenance/v1, 1", a.PredicateType, a.Threshold)
	}
	if a := reqs[1].Attestation; a.PredicateType != "https://example.com/review/v1" {
		t.Errorf("a predicate type URI was changed to %q", a.PredicateType)
	}
}

func TestNotationAuditLevelLoadsUnderADryrunRule(t *testing.T) {
	dir := t.TempDir()
	testkit.WriteFile(t, filepath.Join(dir, "ci.pub"), "key")
	testkit.WriteFile(t, filepath.Join(dir, "ca.crt"), "ca")
	text := strings.Replace(validYAML, "    publicKeys:\n      - file: ci.pub", "    notation: {trustStore: [ca.crt], trustedIdentities: ['*'], level: audit}", 1)
	text = strings.Replace(text, `      images: ["lab/acme/**"]`, `      images: ["lab/acme/**"]`+"\n      enforcement: dryrun", 1)
	c, err := config.Load(testkit.WriteFile(t, filepath.Join(dir, "config.yaml"), text))
	if err != nil {
		t.Fatal(err)
	}
	if files := c.Files(); !slices.Contains(files, filepath.Join(dir, "ca.crt")) {
		t.Errorf("the trust store is not among the watched files %v", files)
	}
	gen := c.Generation
	testkit.WriteFile(t, filepath.Join(dir, "ca.crt"), "another ca")
	c, err = config.Load(filepath.Join(dir, "config.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if c.Generation == gen {
		t.Error("a new trust store left the generation unchanged: verdicts under the old one would be reused")
	}
}

func TestTrustedRootFilesCountInGenerationAndWatchedFiles(t *testing.T) {
	dir := t.TempDir()
	testkit.WriteFile(t, filepath.Join(dir, "ci.pub"), "key")
	testkit.WriteFile(t, filepath.Join(dir, "root.json"), "root one")
	testkit.WriteFile(t, filepath.Join(dir, "logs.json"), "logs one")
	text := strings.Replace(validYAML, "  - name: release\n", "  - name: keyless\n    keyless:\n      issuer: https://token.actions.githubusercontent.com\n      subjectRegexp: ^https://github\\.com/acme/\n      trustedRootFile: root.json\n      requireTlog: true\n  - name: release\n    requireTlog: true\n    trustedRootFile: logs.json\n", 1)
	path := testkit.WriteFile(t, filepath.Join(dir, "config.yaml"), text)
	a, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if k := a.Attestors[1].Keyless; k == nil || !k.RequireTlog || k.SubjectRegexp != `^https://github\.com/acme/` {
		t.Fatalf("keyless attestor loaded as %+v", a.Attestors[1])
	}
	for _, files := range [][]string{a.Files(), config.ReferencedFiles(path)} {
		for _, want := range []string{"root.json", "logs.json"} {
			if !slices.Contains(files, filepath.Join(dir, want)) {
				t.Errorf("files %v do not include %s", files, want)
			}
		}
	}
	for _, f := range []string{"root.json", "logs.json"} {
		testkit.WriteFile(t, filepath.Join(dir, f), "changed")
		b, err := config.Load(path)
		if err != nil {
			t.Fatal(err)
		}
		if a.Generation == b.Generation {
			t.Errorf("replacing %s kept the policy generation: old verdicts would be reused", f)
		}
		a = b
	}
}

func TestStoreSection(t *testing.T) {
	tests := []struct {
		name    string
		store   string
		wantErr string // "" when it loads
	}{
		{"filesystem", "{driver: filesystem, rootdirectory: cache, maxSize: 100GiB}", ""},
		{"s3 with credential files", "{driver: s3, bucket: b, regionendpoint: 'http://127.0.0.1:7070', forcepathstyle: true, accesskeyFile: ak, secretkeyFile: sk, maxSize: 1TB}", ""},
		{"s3 with the credential from the environment", "{driver: s3, bucket: b, region: eu-west-1, rootdirectory: /proxy, maxSize: 1073741824}", ""},
		{"no driver", "{rootdirectory: cache, maxSize: 1GiB}", "config.yaml:32: store: driver is required: filesystem, s3 or inmemory"},
		{"unknown driver", "{driver: azure, maxSize: 1GiB}", `config.yaml:32: store.driver: "azure": want filesystem, s3 or inmemory`},
		{"filesystem without a folder", "{driver: filesystem, maxSize: 1GiB}", "store: rootdirectory is required with driver filesystem"},
		{"no maxSize", "{driver: filesystem, rootdirectory: cache}", "store: maxSize is required"},
		{"maxSize in a unit nobody knows", "{driver: filesystem, rootdirectory: cache, maxSize: 10 bananas}", `store.maxSize: "10 bananas": want a size such as 100GiB`},
		{"an s3 field with the filesystem driver", "{driver: filesystem, rootdirectory: cache, bucket: b, maxSize: 1GiB}", "store.bucket: driver filesystem takes no bucket"},
		{"s3 without a bucket", "{driver: s3, region: eu-west-1, maxSize: 1GiB}", "store: bucket is required with driver s3"},
		{"s3 with nowhere to go", "{driver: s3, bucket: b, maxSize: 1GiB}", "store: region is required with driver s3"},
		{"s3 endpoint that is no URL", "{driver: s3, bucket: b, regionendpoint: 'minio:9000', maxSize: 1GiB}", `store.regionendpoint: "minio:9000": want http(s)://host[:port]`},
		{"s3 credential half given", "{driver: s3, bucket: b, region: eu-west-1, accesskeyFile: ak, maxSize: 1GiB}", "set both accesskeyFile and secretkeyFile, or neither"},
		{"s3 credential file missing", "{driver: s3, bucket: b, region: eu-west-1, accesskeyFile: ak, secretkeyFile: missing, maxSize: 1GiB}", "store.secretkeyFile: open"},
		{"unknown store field", "{driver: filesystem, rootdirectory: cache, maxsize: 1GiB}", `config.yaml:32: unknown field "maxsize"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			testkit.WriteFile(t, filepath.Join(dir, "ci.pub"), "key")
			testkit.WriteFile(t, filepath.Join(dir, "ak"), "AKID\n")
			testkit.WriteFile(t, filepath.Join(dir, "sk"), "secret\n")
			c, err := config.Load(testkit.WriteFile(t, filepath.Join(dir, "config.yaml"), validYAML+"store: "+tt.store+"\n"))
			if tt.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				if c.Store.MaxBytes <= 0 {
					t.Errorf("MaxBytes %d", c.Store.MaxBytes)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("error:\n%v\nwant it to contain:\n%s", err, tt.wantErr)
			}
		})
	}
}

func TestStoreCredentialFilesAreWatchedAndInMemoryIsAWarning(t *testing.T) {
	dir := t.TempDir()
	testkit.WriteFile(t, filepath.Join(dir, "ci.pub"), "key")
	testkit.WriteFile(t, filepath.Join(dir, "ak"), "a")
	testkit.WriteFile(t, filepath.Join(dir, "sk"), "s")
	c, err := config.Load(testkit.WriteFile(t, filepath.Join(dir, "config.yaml"), validYAML+"store: {driver: s3, bucket: b, region: us-east-1, accesskeyFile: ak, secretkeyFile: sk, maxSize: 1GiB}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if files := c.Files(); !slices.Contains(files, filepath.Join(dir, "sk")) || !slices.Contains(files, filepath.Join(dir, "ak")) {
		t.Errorf("Files() = %v: the credential files are not watched", files)
	}
	c, err = config.Load(testkit.WriteFile(t, filepath.Join(dir, "config.yaml"), validYAML+"store: {driver: inmemory, maxSize: 64MiB}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Warnings) != 1 || !strings.Contains(c.Warnings[0], "store.driver: inmemory keeps nothing past the process") {
		t.Errorf("warnings %q", c.Warnings)
	}
}

func TestParseSize(t *testing.T) {
	for in, want := range map[string]int64{
		"100GiB": 100 << 30, "1.5GiB": 3 << 29, "500MB": 500e6, "1TB": 1e12, "64KiB": 64 << 10,
		"1073741824": 1 << 30, "2 TiB": 2 << 40, "10B": 10,
	} {
		if got, err := config.ParseSize(in); err != nil || got != want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "GiB", "-1GiB", "1 GB extra", "1gib", "0", "0.1B", "9999999TiB", "1e3"} {
		if got, err := config.ParseSize(in); err == nil {
			t.Errorf("ParseSize(%q) = %d, want an error", in, got)
		}
	}
}

func FuzzParseSize(f *testing.F) {
	for _, s := range []string{"100GiB", "1.5 MB", "1", "9223372036854775807", "4.0TiB"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, err := config.ParseSize(s)
		if err == nil && (n < 1 || n > 1<<62) {
			t.Fatalf("ParseSize(%q) = %d: out of range", s, n)
		}
	})
}

func TestUpstreamTagSettings(t *testing.T) {
	lab := "  - name: lab\n    url: http://127.0.0.1:5001\n    insecure: true\n"
	tests := []struct {
		name     string
		settings string // appended to the upstream lab
		wantErr  string // "" when it loads
		stale    time.Duration
		warning  string
		store    bool
	}{
		{"defaults", "", "", 24 * time.Hour, "", false},
		{"immutable tags and a longer staleIfError", "    immutableTags: [\"v*.*.*\", \"sha-*\"]\n    staleIfError: 72h\n", "", 72 * time.Hour, "", true},
		{"staleIfError 0s turns it off", "    staleIfError: 0s\n", "", 0, "", false},
		{"immutable tags without a store are a warning", "    immutableTags: [\"v*\"]\n", "", 24 * time.Hour, "config.yaml:9: upstreams[1].immutableTags: takes effect only with a store section", false},
		{"a glob with a slash", "    immutableTags: [\"v1/*\"]\n", "config.yaml:9: upstreams[1].immutableTags[0]: \"v1/*\": want a tag glob such as v*.*.*", 0, "", false},
		{"every tag immutable", "    immutableTags: [\"v*\", \"**\"]\n", "config.yaml:9: upstreams[1].immutableTags[1]: \"**\" makes every tag immutable, latest included", 0, "", false},
		{"a glob listed twice", "    immutableTags: [\"v*\", \"v*\"]\n", "upstreams[1].immutableTags[1]: \"v*\" is listed twice", 0, "", false},
		{"negative staleIfError", "    staleIfError: -1h\n", "config.yaml:9: upstreams[1].staleIfError: -1h0m0s: want a duration of 0s (off) or more", 0, "", false},
		{"staleIfError that is no duration", "    staleIfError: a day\n", "config.yaml:9: cannot unmarshal !!str `a day` into time.Duration", 0, "", false},
		{"a tagTTL, with or without a store", "    tagTTL: 30s\n", "", 24 * time.Hour, "", false},
		{"negative tagTTL", "    tagTTL: -1s\n", "config.yaml:9: upstreams[1].tagTTL: -1s: want a duration of 0s (ask the upstream on every pull) or more", 0, "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			testkit.WriteFile(t, filepath.Join(dir, "ci.pub"), "key")
			text := strings.Replace(validYAML, lab, lab+tt.settings, 1)
			if tt.store {
				text += "store: {driver: filesystem, rootdirectory: cache, maxSize: 1GiB}\n"
			}
			c, err := config.Load(testkit.WriteFile(t, filepath.Join(dir, "config.yaml"), text))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error:\n%v\nwant it to contain:\n%s", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := *c.Upstreams[1].StaleIfError; got != tt.stale {
				t.Errorf("staleIfError %s, want %s", got, tt.stale)
			}
			if *c.Upstreams[0].StaleIfError != config.DefaultStaleIfError {
				t.Errorf("the other upstream's staleIfError is %s, want the default", *c.Upstreams[0].StaleIfError)
			}
			if tt.warning == "" && len(c.Warnings) > 0 || tt.warning != "" && (len(c.Warnings) != 1 || !strings.Contains(c.Warnings[0], tt.warning)) {
				t.Errorf("warnings %q, want %q", c.Warnings, tt.warning)
			}
		})
	}
}

const vulnYAML = `upstreams: [{name: lab, url: "http://127.0.0.1:5001", insecure: true}]
attestors:
  - {name: security, publicKeys: [{file: ci.pub}]}
  - {name: vendor, publicKeys: [{file: ci.pub}]}
policy:
  rules:
    - name: scanned
      images: ["lab/**"]
      require:
        - vulnerabilities:
            attestors: [security]
            maxAge: 168h
            maximumFixableSeverity: MEDIUM
            maximumUnfixableSeverity: HIGH
            allowedCves:
              - {id: CVE-2024-1234, expires: 2099-01-31T00:00:00Z, reason: "not reachable, INC-77"}
            blockedCves: [CVE-2021-44228]
            vex:
              attestors: [security, vendor]
`

func TestVulnerabilitiesRequirementLoadsWithItsDefaults(t *testing.T) {
	dir := t.TempDir()
	testkit.WriteFile(t, filepath.Join(dir, "ci.pub"), "key")
	c, err := config.Load(testkit.WriteFile(t, filepath.Join(dir, "config.yaml"), vulnYAML))
	if err != nil {
		t.Fatal(err)
	}
	v := c.Policy.Rules[0].Require[0].Vulnerabilities
	if v.UnknownSeverity != "HIGH" || v.MaxAge != 168*time.Hour || len(v.AllowedCves) != 1 || v.AllowedCves[0].Reason != "not reachable, INC-77" || len(v.VEX.Attestors) != 2 {
		t.Errorf("loaded %+v", v)
	}
	text := strings.Replace(vulnYAML, "        - vulnerabilities:", "        - attestation: {predicateType: vuln, attestors: [security]}\n        - vulnerabilities:", 1)
	if c, err = config.Load(testkit.WriteFile(t, filepath.Join(dir, "config.yaml"), text)); err != nil {
		t.Fatal(err)
	}
	if got := c.Policy.Rules[0].Require[0].Attestation.Select; got != config.SelectNewest {
		t.Errorf("an attestation requirement's select defaults to %q, want newest", got)
	}
}

func TestVulnerabilitiesRequirementRejectsWhatWouldNotMeanWhatItSays(t *testing.T) {
	for _, tt := range []struct {
		name      string
		old, new_ string
		wantErr   string
	}{
		{"a bad severity", "maximumFixableSeverity: MEDIUM", "maximumFixableSeverity: SEVERE",
			`config.yaml:13: policy.rules[0].require[0].vulnerabilities.maximumFixableSeverity: "SEVERE": want one of NONE, LOW, MEDIUM, HIGH, CRITICAL`},
		{"UNKNOWN as a maximum", "maximumUnfixableSeverity: HIGH", "maximumUnfixableSeverity: UNKNOWN",
			`config.yaml:14: policy.rules[0].require[0].vulnerabilities.maximumUnfixableSeverity: "UNKNOWN": want one of`},
		{"a missing maximum", "            maximumUnfixableSeverity: HIGH\n", "",
			"config.yaml:10: policy.rules[0].require[0].vulnerabilities: maximumUnfixableSeverity is required"},
		{"a bad unknownSeverity", "maxAge: 168h", "maxAge: 168h\n            unknownSeverity: bad",
			`policy.rules[0].require[0].vulnerabilities.unknownSeverity: "bad": want one of`},
		{"a negative maxAge", "maxAge: 168h", "maxAge: -1h",
			"config.yaml:12: policy.rules[0].require[0].vulnerabilities.maxAge: -1h0m0s: want a positive duration"},
		{"a bad CVE id", "id: CVE-2024-1234", "id: CVE-24-1",
			`config.yaml:16: policy.rules[0].require[0].vulnerabilities.allowedCves[0].id: "CVE-24-1": want a CVE id such as CVE-2024-1234`},
		{"an exception without expiry", ", expires: 2099-01-31T00:00:00Z", "",
			"config.yaml:16: policy.rules[0].require[0].vulnerabilities.allowedCves[0]: expires is required"},
		{"an exception without reason", `, reason: "not reachable, INC-77"`, "",
			"policy.rules[0].require[0].vulnerabilities.allowedCves[0]: reason is required"},
		{"an exception without id", "id: CVE-2024-1234, ", "",
			"policy.rules[0].require[0].vulnerabilities.allowedCves[0]: id is required"},
		{"a bad blocked id", "[CVE-2021-44228]", "[log4shell]",
			`config.yaml:17: policy.rules[0].require[0].vulnerabilities.blockedCves[0]: "log4shell": want a CVE id`},
		{"an id both allowed and blocked", "[CVE-2021-44228]", "[cve-2024-1234]",
			`policy.rules[0].require[0].vulnerabilities.blockedCves[0]: "cve-2024-1234" is also in allowedCves`},
		{"an unknown scan attestor", "attestors: [security]", "attestors: [scanner]",
			`config.yaml:11: policy.rules[0].require[0].vulnerabilities.attestors[0]: unknown attestor "scanner"`},
		{"an unknown VEX attestor", "attestors: [security, vendor]", "attestors: [security, vender]",
			`config.yaml:19: policy.rules[0].require[0].vulnerabilities.vex.attestors[1]: unknown attestor "vender"`},
		{"VEX without attestors", "            vex:\n              attestors: [security, vendor]\n", "            vex: {}\n",
			"policy.rules[0].require[0].vulnerabilities.vex: attestors is required"},
		{"no scan attestors", "attestors: [security]\n", "attestors: []\n",
			"policy.rules[0].require[0].vulnerabilities: attestors is required"},
		{"an unknown field", "maxAge: 168h", "maxAge: 168h\n            maximumSeverity: HIGH",
			`config.yaml:13: unknown field "maximumSeverity"`},
		{"two kinds in one requirement", "        - vulnerabilities:", "        - attestation: {predicateType: vuln, attestors: [security]}\n          vulnerabilities:",
			"policy.rules[0].require[0]: give exactly one of signature, attestation and vulnerabilities"},
		{"a bad select", "        - vulnerabilities:", "        - attestation: {predicateType: vuln, attestors: [security], select: latest}\n        - vulnerabilities:",
			`config.yaml:10: policy.rules[0].require[0].attestation.select: "latest": want newest`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if !strings.Contains(vulnYAML, tt.old) {
				t.Fatalf("%q is not in the configuration", tt.old)
			}
			dir := t.TempDir()
			testkit.WriteFile(t, filepath.Join(dir, "ci.pub"), "key")
			_, err := config.Load(testkit.WriteFile(t, filepath.Join(dir, "config.yaml"), strings.Replace(vulnYAML, tt.old, tt.new_, 1)))
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("error:\n%v\nwant it to contain:\n%s", err, tt.wantErr)
			}
		})
	}
}

func TestAnExceptionNearOrPastItsExpiryIsAWarning(t *testing.T) {
	dir := t.TempDir()
	testkit.WriteFile(t, filepath.Join(dir, "ci.pub"), "key")
	soon := time.Now().Add(5 * 24 * time.Hour).UTC().Format(time.RFC3339)
	text := strings.Replace(vulnYAML, "              - {id: CVE-2024-1234, expires: 2099-01-31T00:00:00Z, reason: \"not reachable, INC-77\"}\n",
		"              - {id: CVE-2024-1234, expires: 2020-01-31T00:00:00Z, reason: old}\n              - {id: CVE-2024-5678, expires: "+soon+", reason: soon}\n", 1)
	c, err := config.Load(testkit.WriteFile(t, filepath.Join(dir, "config.yaml"), text))
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"config.yaml:16: policy.rules[0].require[0].vulnerabilities.allowedCves[0].expires: 2020-01-31T00:00:00Z has passed: the exception for CVE-2024-1234 is ignored (remove it)",
		"config.yaml:17: policy.rules[0].require[0].vulnerabilities.allowedCves[1].expires: the exception for CVE-2024-5678 expires in ",
	}
	if len(c.Warnings) != 2 || !strings.HasPrefix(c.Warnings[0], filepath.Join(dir, want[0])) || !strings.HasPrefix(c.Warnings[1], filepath.Join(dir, want[1])) {
		t.Errorf("warnings:\n%s\nwant:\n%s", strings.Join(c.Warnings, "\n"), strings.Join(want, "\n"))
	}
}

func TestTrustRootsLoadWithDefaultsAndCountInGenerationAndWatchedFiles(t *testing.T) {
	dir := t.TempDir()
	testkit.WriteFile(t, filepath.Join(dir, "ci.pub"), "key")
	testkit.WriteFile(t, filepath.Join(dir, "github-root.json"), "tuf root one")
	testkit.WriteFile(t, filepath.Join(dir, "lab.json"), "trusted root one")
	text := strings.Replace(validYAML, "attestors:\n", `trustRoots:
  - {name: public-good, tuf: {cache: tuf}}
  - {name: github, tuf: {mirror: https://tuf-repo.github.com, root: github-root.json, refresh: 1h}}
  - {name: lab, file: lab.json}
attestors:
  - name: keyless
    keyless: {issuer: https://x, subject: a, trustRoots: [public-good, github, lab]}
`, 1)
	path := testkit.WriteFile(t, filepath.Join(dir, "config.yaml"), text)
	a, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	pg := a.TrustRoots[0].TUF
	if pg.Mirror != config.DefaultTUFMirror || pg.Root != config.EmbeddedRoot || *pg.Refresh != 24*time.Hour || a.Path(pg.Cache) != filepath.Join(dir, "tuf") {
		t.Errorf("public-good's defaults: %+v (refresh %s)", pg, *pg.Refresh)
	}
	if gh := a.TrustRoots[1].TUF; gh.Root != "github-root.json" || *gh.Refresh != time.Hour {
		t.Errorf("github: %+v", gh)
	}
	for _, files := range [][]string{a.Files(), config.ReferencedFiles(path)} {
		for _, want := range []string{"github-root.json", "lab.json"} {
			if !slices.Contains(files, filepath.Join(dir, want)) {
				t.Errorf("files %v do not include %s", files, want)
			}
		}
	}
	for _, f := range []string{"github-root.json", "lab.json"} {
		testkit.WriteFile(t, filepath.Join(dir, f), "changed "+f)
		b, err := config.Load(path)
		if err != nil {
			t.Fatal(err)
		}
		if b.Generation == a.Generation {
			t.Errorf("changing %s kept the generation", f)
		}
		a = b
	}
}
