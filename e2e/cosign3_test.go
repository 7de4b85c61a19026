//go:build e2e

package e2e_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/authz-proxy/authz-proxy/internal/sign/virtual"
)

// cosign3Policy trusts the ci key for cosign v3's bundles, once as is and
// once demanding a transparency-log proof verified against trustedRoot.
func cosign3Policy(ciPub, trustedRoot string) string {
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
  - name: ci
    publicKeys: [{file: %q}]
  - name: ci-logged
    publicKeys: [{file: %q}]
    requireTlog: true
    trustedRootFile: %q
policy:
  rules:
    - name: v3-signed
      images: ["lab/v3/app"]
      require:
        - signature: {attestors: [ci]}
    - name: v3-logged
      images: ["lab/v3/logged"]
      require:
        - signature: {attestors: [ci-logged]}
    - name: v3-built
      images: ["lab/v3/built"]
      require:
        - signature: {attestors: [ci]}
        - attestation:
            predicateType: slsaprovenance1
            attestors: [ci]
            condition: 'predicate.runDetails.builder.id == "%s"'
  default:
    action: deny
`, lab.reg, ciPub, ciPub, trustedRoot, goodBuilder)
}

// cosign3 runs the cosign v3 CLI offline: no signing config (no Fulcio,
// Rekor or TSA to find), no transparency-log upload.
func (w *world) cosign3(ctx context.Context, args ...string) error {
	args = append(args, "--use-signing-config=false", "--tlog-upload=false", "-y", "--allow-http-registry")
	if out, err := w.tool(ctx, nil, "cosign3", args...); err != nil {
		return fmt.Errorf("cosign3 %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return nil
}

// TestCosignV3BundlesArePulledOrDenied signs and attests with the real
// cosign v3 CLI, which stores Sigstore bundles as referrers (in the
// sha256-<hex> fallback index here: distribution has no referrers API),
// and pulls through the proxy with crane.
func TestCosignV3BundlesArePulledOrDenied(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	push := func(ref string) v1.Hash { return lab.pushNew(ctx, t, ref) }
	signV3 := func(key, repo string, d v1.Hash) {
		t.Helper()
		if err := lab.cosign3(ctx, "sign", "--key", key, lab.reg+"/"+repo+"@"+d.String()); err != nil {
			t.Fatal(err)
		}
	}
	signed := push("v3/app:signed")
	signV3(lab.ciKey, "v3/app", signed)
	rogue := push("v3/app:rogue")
	signV3(lab.rogueKey, "v3/app", rogue)
	unsigned := push("v3/app:unsigned")
	logged := push("v3/logged:v1")
	signV3(lab.ciKey, "v3/logged", logged)
	built := push("v3/built:v1")
	signV3(lab.ciKey, "v3/built", built)
	pred := filepath.Join(t.TempDir(), "provenance.json")
	if err := os.WriteFile(pred, []byte(`{"buildDefinition":{"buildType":"https://ci.example/build/v1"},"runDetails":{"builder":{"id":"`+goodBuilder+`"}}}`), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := lab.cosign3(ctx, "attest", "--key", lab.ciKey, "--type", "slsaprovenance1", "--predicate", pred, lab.reg+"/v3/built@"+built.String()); err != nil {
		t.Fatal(err)
	}

	// A trusted root with a Rekor log (a virtual one): the signatures
	// above were never logged in it, or anywhere.
	vs, err := virtual.New()
	if err != nil {
		t.Fatal(err)
	}
	root, err := vs.TrustedRoot()
	if err != nil {
		t.Fatal(err)
	}
	rootFile := filepath.Join(t.TempDir(), "trusted_root.json")
	if err := os.WriteFile(rootFile, root, 0o644); err != nil {
		t.Fatal(err)
	}

	t.Run("cosign v3 writes a bundle referrer in the fallback index", func(t *testing.T) {
		out, err := crane(t, "manifest", "--insecure", lab.reg+"/v3/app:sha256-"+signed.Hex)
		mustSucceed(t, "crane manifest of the fallback tag", out, err)
		wantContains(t, "fallback index", out, `"artifactType":"application/vnd.dev.sigstore.bundle.v0.3+json"`)
	})

	p := startTestProxy(t, "cosign3", cosign3Policy(lab.ciPub, rootFile))
	for _, c := range []struct {
		name, ref string
		d         v1.Hash
		rule      string
		wantBy    []string
		wantDeny  string
	}{
		{"signed by ci with cosign v3", "v3/app:signed", signed, "v3-signed", []string{"ci"}, ""},
		{"signed by another key with cosign v3", "v3/app:rogue", rogue, "v3-signed", nil, "none verifies with a key of attestor ci"},
		{"not signed", "v3/app:unsigned", unsigned, "v3-signed", nil, "no cosign signature found"},
		{"requireTlog: signed without the transparency log", "v3/logged:v1", logged, "v3-logged", nil, "does not count for attestor ci-logged: no transparency-log proof"},
		{"signed and attested (SLSA v1 bundle) with cosign v3", "v3/built:v1", built, "v3-built", []string{"ci", "ci"}, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			d, allowed := pullJudged(t, p, c.ref, c.d.String(), c.rule, c.wantDeny)
			if !allowed {
				return
			}
			if got := strings.Join(d.Attestors(), ","); got != strings.Join(c.wantBy, ",") {
				t.Errorf("verified by %s, want %v:\n%s", got, c.wantBy, d)
			}
			for _, v := range d.VerifiedBy {
				if !strings.HasPrefix(v.Source, "referrer sha256:") {
					t.Errorf("verified from %q, want a referrer:\n%s", v.Source, d)
				}
			}
		})
	}

	t.Run("cosign v3 verify reads the bundle through the proxy", func(t *testing.T) {
		ref := p.addr + "/lab/v3/app@" + signed.String()
		out, err := lab.tool(ctx, nil, "cosign3", "verify", "--key", lab.ciPub, "--insecure-ignore-tlog",
			"--allow-http-registry", "--trusted-root", lab.trustedRoot, ref)
		mustSucceed(t, "cosign3 verify "+ref, out, err)
		// The output names cosign v3's predicate type, a sigstore.dev URI:
		// wantOffline's check does not fit; TUF is the network fetch.
		if strings.Contains(out, "TUF") {
			t.Errorf("cosign tried to reach the network:\n%s", out)
		}
		wantContains(t, "cosign3 verify", out, `"docker-manifest-digest":"`+signed.String()+`"`)
	})
}
