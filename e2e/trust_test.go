//go:build e2e

package e2e_test

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/authz-proxy/authz-proxy/internal/sign/virtual"
	"github.com/authz-proxy/authz-proxy/internal/testkit"
)

// trustPolicy trusts privateIdentity under the trust root lab, served by
// the TUF repository at mirror and refreshed every second.
func trustPolicy(mirror, root, cache string) string {
	return fmt.Sprintf(`listen:
  addr: {{ADDR}}
upstreams:
  - name: lab
    url: "http://%s"
    insecure: true
defaultUpstream: lab
audit:
  file: {{AUDIT}}
trustRoots:
  - name: lab
    tuf: {mirror: %q, root: %q, refresh: 1s, cache: %q}
attestors:
  - name: private-ca
    keyless:
      issuer: %s
      subject: %s
      trustRoots: [lab]
policy:
  rules:
    - name: private-ca
      images: ["lab/trust/**"]
      require:
        - signature: {attestors: [private-ca]}
  default:
    action: deny
`, lab.reg, mirror, root, cache, privateIssuer, privateIdentity)
}

// TestCosignV3SignatureUnderANewCAPassesOnceTheTUFMirrorServesIt signs with
// the real cosign v3 CLI under a certificate of a CA that the trusted root
// served by a local TUF mirror does not list yet: the pull is denied; the
// repository then rotates its root.json and publishes a trusted_root.json
// with the new CA, and the running proxy allows the pull once its refresh
// has verified it. `authz-proxy trust status` and `trust fetch` run as the
// binary.
func TestCosignV3SignatureUnderANewCAPassesOnceTheTUFMirrorServesIt(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	dir := t.TempDir()
	now := time.Now()
	ca := func(name string) *virtual.CA {
		c, err := virtual.NewCA(name, now.Add(-24*time.Hour), now.Add(365*24*time.Hour))
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	oldCA, newCA := ca("acme code signing 2026"), ca("acme code signing 2027")
	trustedRoot := func(cas ...*virtual.CA) []byte {
		b, err := virtual.TrustedRoot(virtual.Parts{Authorities: cas})
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	repo := testkit.NewTUFRepo(t, trustedRoot(oldCA))
	rootFile := testkit.WriteFile(t, filepath.Join(dir, "lab-root.json"), string(repo.FirstRoot()))

	// A long-lived certificate of the new CA, its key imported into
	// cosign's format, and an image signed with both by cosign v3.
	certFile, imported := privateSigner(ctx, t, dir, newCA)
	img, err := ociImage("linux", "amd64")
	if err != nil {
		t.Fatal(err)
	}
	d, err := lab.pushImage(ctx, img, "trust/app:v1")
	if err != nil {
		t.Fatal(err)
	}
	if err := lab.cosign3(ctx, "sign", "--key", imported+".key", "--certificate", certFile, lab.reg+"/trust/app@"+d.String()); err != nil {
		t.Fatal(err)
	}

	p := startTestProxy(t, "trust", trustPolicy(repo.URL(), rootFile, filepath.Join(dir, "tuf-cache")))
	pull := func() (decision, string, error) {
		t.Helper()
		mark := p.mark()
		out, err := crane(t, "pull", "--insecure", p.addr+"/lab/trust/app:v1", filepath.Join(t.TempDir(), "image.tar"))
		return p.decisionFor(t, mark, d.String(), ""), out, err
	}
	t.Run("before the mirror serves the new CA: denied", func(t *testing.T) {
		dec, out, err := pull()
		out = mustFail(t, "crane pull", out, err)
		checkDecision(t, dec, "deny", "lab/trust/app", "private-ca")
		wantContains(t, "crane pull", out, "DENIED", "does not chain to a certificate authority of the trusted root")
	})

	repo.RotateRoot()
	repo.SetTarget(trustedRoot(oldCA, newCA))
	_, _, _, targets := repo.Versions()
	t.Run("after the refresh: allowed, without a restart, the decision naming the root version", func(t *testing.T) {
		deadline := time.Now().Add(30 * time.Second)
		for !strings.Contains(p.stderr.String(), "trust roots changed; the policy is in force with them") {
			if time.Now().After(deadline) {
				t.Fatalf("the proxy did not take up the new trusted root; stderr:\n%s", p.stderr.String())
			}
			time.Sleep(100 * time.Millisecond)
		}
		dec, out, err := pull()
		mustSucceed(t, "crane pull", out, err)
		checkDecision(t, dec, "allow", "lab/trust/app", "private-ca")
		if len(dec.VerifiedBy) != 1 || dec.VerifiedBy[0].TrustRoot != "lab" || dec.VerifiedBy[0].TrustRootVersion != targets {
			t.Errorf("verified by %+v, want the trust root lab at targets version %d:\n%s", dec.VerifiedBy, targets, dec)
		}
	})

	t.Run("trust status and trust fetch, as the binary", func(t *testing.T) {
		binary := func(args ...string) (string, error) {
			out, err := exec.CommandContext(ctx, lab.proxyBin, args...).CombinedOutput()
			return string(out), err
		}
		out, err := binary("trust", "status", "--config", p.config)
		mustSucceed(t, "trust status", out, err)
		wantContains(t, "trust status", out, "lab: TUF repository "+repo.URL(), fmt.Sprintf("version:   targets %d, root 2", targets), "2 certificate authorities")
		snapshot := filepath.Join(dir, "snapshot")
		out, err = binary("trust", "fetch", "--config", p.config, "--root", "lab", "--out", snapshot)
		mustSucceed(t, "trust fetch", out, err)
		wantContains(t, "trust fetch", out, fmt.Sprintf("TUF root version 2, targets version %d", targets))
	})

	t.Run("the mirror down: a restart starts from the cache", func(t *testing.T) {
		repo.Stop()
		restarted := startTestProxy(t, "trust-offline", trustPolicy(repo.URL(), rootFile, filepath.Join(dir, "tuf-cache")))
		if !strings.Contains(restarted.stderr.String(), "starting from the cache") {
			t.Errorf("the restart does not say it started from the cache:\n%s", restarted.stderr.String())
		}
		mark := restarted.mark()
		out, err := crane(t, "pull", "--insecure", restarted.addr+"/lab/trust/app:v1", filepath.Join(t.TempDir(), "image.tar"))
		mustSucceed(t, "crane pull", out, err)
		checkDecision(t, restarted.decisionFor(t, mark, d.String(), ""), "allow", "lab/trust/app", "private-ca")
	})
}
