//go:build e2e

package e2e_test

import (
	"context"
	"fmt"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/authz-proxy/authz-proxy/internal/oci"
	"github.com/authz-proxy/authz-proxy/internal/sign"
	"github.com/authz-proxy/authz-proxy/internal/sign/virtual"
	"github.com/authz-proxy/authz-proxy/internal/testkit"
)

const (
	privateIssuer   = "https://ci.acme.example"
	privateIdentity = "release@acme.example"
)

// ciPolicy trusts a private CA's long-lived certificates (with no proof of
// the signing time: checked at the current time, and with a timestamp
// from the test TSA), and GitHub Actions' release workflow of acme/app
// for provenance stored with push-to-registry.
func ciPolicy(privateRoot, stampedRoot, githubRoot string) string {
	return fmt.Sprintf(`listen:
  addr: {{ADDR}}
upstreams:
  - name: lab
    url: "http://%s"
    insecure: true
defaultUpstream: lab
audit:
  file: {{AUDIT}}
attestors:
  - name: private-ca
    keyless:
      issuer: %s
      subject: %s
      trustedRootFile: %q
  - name: private-ca-stamped
    keyless:
      issuer: %s
      subject: %s
      trustedRootFiles: [%q]
      requireTimestamp: true
  - name: github-release
    keyless:
      github: {repository: acme/app, workflow: .github/workflows/release.yml, ref: "refs/tags/v*", runner: github-hosted}
      trustedRootFiles: [%q]
      requireTimestamp: true
policy:
  rules:
    - name: private-ca
      images: ["lab/ci/private"]
      require:
        - signature: {attestors: [private-ca]}
    - name: stamped
      images: ["lab/ci/stamped"]
      require:
        - signature: {attestors: [private-ca-stamped]}
    - name: github
      images: ["lab/ci/github"]
      require:
        - attestation:
            predicateType: https://slsa.dev/provenance/v1
            attestors: [github-release]
            condition: 'certificate.sourceRepositoryRef == "refs/tags/" + image.tag'
  default:
    action: deny
`, lab.reg, privateIssuer, privateIdentity, privateRoot, privateIssuer, privateIdentity, stampedRoot, githubRoot)
}

// TestCISigningIdentities signs with the real cosign v3 CLI using a
// certificate of a private CA (no log; once without and once with an RFC
// 3161 timestamp from a test TSA), stores a GitHub artifact attestation
// as actions/attest-build-provenance's push-to-registry does, and pulls
// each through the proxy with crane.
func TestCISigningIdentities(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	dir := t.TempDir()
	write := func(name string, data []byte) string {
		t.Helper()
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	now := time.Now()
	private, err := virtual.NewCA("acme code signing", now.Add(-24*time.Hour), now.Add(365*24*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	tsa, err := virtual.NewTSA("acme timestamps", now.Add(-time.Hour), now.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	tsaServer := httptest.NewServer(tsa)
	defer tsaServer.Close()

	// A long-lived signing certificate, as a private CA issues them, and
	// its key imported into cosign's format.
	certFile, imported := privateSigner(ctx, t, dir, private)
	chainPEM, err := private.ChainPEM()
	if err != nil {
		t.Fatal(err)
	}
	chainFile := write("chain.pem", chainPEM)

	roots := map[string]virtual.Parts{
		"private.json": {Authorities: []*virtual.CA{private}},
		"stamped.json": {Authorities: []*virtual.CA{private}, TSAs: []*virtual.TSA{tsa}},
	}
	githubCA, err := virtual.NewCA("GitHub, Inc.", now.Add(-time.Hour), now.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	roots["github.json"] = virtual.Parts{Authorities: []*virtual.CA{githubCA}, TSAs: []*virtual.TSA{tsa}}
	paths := map[string]string{}
	for file, parts := range roots {
		raw, err := virtual.TrustedRoot(parts)
		if err != nil {
			t.Fatal(err)
		}
		paths[file] = write(file, raw)
	}

	push := func(ref string) v1.Hash {
		t.Helper()
		img, err := ociImage("linux", "amd64")
		if err != nil {
			t.Fatal(err)
		}
		d, err := lab.pushImage(ctx, img, ref)
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	signWithCert := func(repo string, d v1.Hash, extra ...string) {
		t.Helper()
		args := append([]string{"sign", "--key", imported + ".key", "--certificate", certFile}, extra...)
		if err := lab.cosign3(ctx, append(args, lab.reg+"/"+repo+"@"+d.String())...); err != nil {
			t.Fatal(err)
		}
	}
	plain := push("ci/private:v1")
	signWithCert("ci/private", plain)
	// With --certificate-chain, cosign v3 writes the whole chain into the
	// v0.3 bundle (which its own verify then does not read as a bundle);
	// the chain must still lead to a root of the trusted root.
	chained := push("ci/private:v2")
	signWithCert("ci/private", chained, "--certificate-chain", chainFile)
	stamped := push("ci/stamped:v1")
	signWithCert("ci/stamped", stamped, "--timestamp-server-url", tsaServer.URL)
	unstamped := push("ci/stamped:v2")
	signWithCert("ci/stamped", unstamped)

	// A GitHub artifact attestation of a private repository: GitHub's
	// Fulcio and timestamp authority, no log; stored beside the image as
	// push-to-registry stores it (here in the fallback tag: the registry
	// has no referrers API).
	attest := func(tag string, run virtual.GitHubRun) v1.Hash {
		t.Helper()
		d := push("ci/github:" + tag)
		signer, err := githubCA.Issue(run.Leaf())
		if err != nil {
			t.Fatal(err)
		}
		st, err := virtual.Statement(d.String(), "https://slsa.dev/provenance/v1", map[string]any{
			"buildDefinition": map[string]any{"buildType": "https://actions.github.io/buildtypes/workflow/v1"},
		})
		if err != nil {
			t.Fatal(err)
		}
		b, err := signer.DSSEBundle(st, virtual.BundleOptions{TSA: tsa})
		if err != nil {
			t.Fatal(err)
		}
		repo, err := name.NewRepository(lab.reg+"/ci/github", name.Insecure)
		if err != nil {
			t.Fatal(err)
		}
		desc, err := remote.Head(repo.Digest(d.String()), remote.WithContext(ctx))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := sign.AttachGitHubAttestation(ctx, repo, *desc, b, oci.BundleV03, "https://slsa.dev/provenance/v1", true); err != nil {
			t.Fatal(err)
		}
		return d
	}
	release := virtual.GitHubRun{Repository: "acme/app", Workflow: ".github/workflows/release.yml", Ref: "refs/tags/v1.2.3",
		SHA: "5f1e4c0b6a", Event: "push", Runner: "github-hosted", Visibility: "private"}
	released := attest("v1.2.3", release)
	fork := release
	fork.Repository, fork.Ref = "mallory/app", "refs/tags/v1.2.4"
	forked := attest("v1.2.4", fork)

	p := startTestProxy(t, "ci", ciPolicy(paths["private.json"], paths["stamped.json"], paths["github.json"]))
	t.Run("cosign verify agrees on the private-CA signature", func(t *testing.T) {
		out, err := lab.tool(ctx, nil, "cosign3", "verify", "--trusted-root", paths["private.json"], "--insecure-ignore-tlog", "--insecure-ignore-sct",
			"--certificate-identity", privateIdentity, "--certificate-oidc-issuer", privateIssuer, "--allow-http-registry", p.addr+"/lab/ci/private@"+plain.String())
		mustSucceed(t, "cosign3 verify", out, err)
	})

	for _, c := range []struct {
		name, ref string
		d         v1.Hash
		rule      string
		wantDeny  []string
		wantWhy   string // in the allow reasons
	}{
		{name: "private CA certificate, no log, no timestamp: checked at the current time", ref: "ci/private:v1", d: plain, rule: "private-ca",
			wantWhy: "certificate valid now (no proof of the signing time)"},
		{name: "private CA certificate and its chain in the bundle", ref: "ci/private:v2", d: chained, rule: "private-ca",
			wantWhy: "keyless: issuer " + privateIssuer + ", subject " + privateIdentity},
		{name: "private CA certificate with a timestamp under requireTimestamp", ref: "ci/stamped:v1", d: stamped, rule: "stamped",
			wantWhy: "by the timestamp authority"},
		{name: "private CA certificate without a timestamp under requireTimestamp", ref: "ci/stamped:v2", d: unstamped, rule: "stamped",
			wantDeny: []string{"does not count for attestor private-ca-stamped: no RFC 3161 timestamp", "(requireTimestamp)"}},
		{name: "GitHub attestation stored with push-to-registry", ref: "ci/github:v1.2.3", d: released, rule: "github",
			wantWhy: "attestation https://slsa.dev/provenance/v1 by attestor github-release"},
		{name: "GitHub attestation of a fork", ref: "ci/github:v1.2.4", d: forked, rule: "github",
			wantDeny: []string{`sourceRepositoryURI is "https://github.com/mallory/app", want "https://github.com/acme/app" in any case (github.repository)`}},
	} {
		t.Run(c.name, func(t *testing.T) {
			mark := p.mark()
			out, err := crane(t, "pull", "--insecure", p.addr+"/lab/"+c.ref, filepath.Join(t.TempDir(), "image.tar"))
			d := p.decisionFor(t, mark, c.d.String(), "")
			image := "lab/" + strings.Split(c.ref, ":")[0]
			if len(c.wantDeny) > 0 {
				out = mustFail(t, "crane pull "+c.ref, out, err)
				checkDecision(t, d, "deny", image, c.rule)
				wantContains(t, "crane pull "+c.ref, out, append([]string{"DENIED"}, c.wantDeny...)...)
				if strings.Contains(out, "%!") {
					t.Errorf("the reason carries a formatting artefact:\n%s", out)
				}
				return
			}
			mustSucceed(t, "crane pull "+c.ref, out, err)
			checkDecision(t, d, "allow", image, c.rule)
			wantContains(t, "decision", d.String(), c.wantWhy)
		})
	}
}

// privateSigner issues a long-lived certificate of ca to privateIdentity,
// as a private CA issues them, writes it under dir and imports its key into
// cosign's format: the certificate's file and the imported key's prefix
// (cosign sign --key PREFIX.key --certificate FILE).
func privateSigner(ctx context.Context, t *testing.T, dir string, ca *virtual.CA) (certFile, imported string) {
	t.Helper()
	now := time.Now()
	leaf, err := ca.Issue(virtual.Leaf{Subject: privateIdentity, Issuer: privateIssuer, NotBefore: now.Add(-time.Hour), NotAfter: now.Add(90 * 24 * time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	certPEM, err := leaf.CertPEM()
	if err != nil {
		t.Fatal(err)
	}
	keyPEM, err := leaf.KeyPEM()
	if err != nil {
		t.Fatal(err)
	}
	certFile = testkit.WriteFile(t, filepath.Join(dir, "leaf.pem"), string(certPEM))
	keyFile := testkit.WriteFile(t, filepath.Join(dir, "leaf.key"), string(keyPEM))
	imported = filepath.Join(dir, "imported")
	if out, err := lab.tool(ctx, nil, "cosign3", "import-key-pair", "--key", keyFile, "--output-key-prefix", imported); err != nil {
		t.Fatalf("cosign3 import-key-pair: %v\n%s", err, out)
	}
	return certFile, imported
}
