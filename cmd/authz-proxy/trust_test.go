package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/authz-proxy/authz-proxy/internal/demo"
	"github.com/authz-proxy/authz-proxy/internal/oci"
	"github.com/authz-proxy/authz-proxy/internal/sign"
	"github.com/authz-proxy/authz-proxy/internal/sign/virtual"
	"github.com/authz-proxy/authz-proxy/internal/testkit"
)

const (
	labIssuer   = "https://ci.acme.example"
	labIdentity = "release@acme.example"
)

// keylessLab signs images in a lab registry with certificates of test CAs,
// as a private CA's long-lived certificates (no log, no timestamp:
// checked at the current time).
type keylessLab struct {
	t   *testing.T
	lab *demo.Lab
}

// newCA is a certificate authority valid for a year, named name, and the
// trusted_root.json that lists cas.
func newCA(t *testing.T, name string) *virtual.CA {
	t.Helper()
	now := time.Now()
	ca, err := virtual.NewCA(name, now.Add(-24*time.Hour), now.Add(365*24*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

func rootOf(t *testing.T, cas ...*virtual.CA) []byte {
	t.Helper()
	b, err := virtual.TrustedRoot(virtual.Parts{Authorities: cas})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// pushSigned pushes a new image as repo:tag signed by ca's certificate for
// labIdentity (a cosign v3 bundle referrer), and
// returns its digest.
func (k keylessLab) pushSigned(repo string, ca *virtual.CA) v1.Hash {
	k.t.Helper()
	img, err := random.Image(256, 1)
	if err != nil {
		k.t.Fatal(err)
	}
	r, err := name.NewRepository(k.lab.Upstream+"/"+repo, name.Insecure)
	if err != nil {
		k.t.Fatal(err)
	}
	if err := remote.Write(r.Tag("v1"), img); err != nil {
		k.t.Fatal(err)
	}
	d, err := img.Digest()
	if err != nil {
		k.t.Fatal(err)
	}
	now := time.Now()
	leaf, err := ca.Issue(virtual.Leaf{Subject: labIdentity, Issuer: labIssuer, NotBefore: now.Add(-time.Hour), NotAfter: now.Add(30 * 24 * time.Hour)})
	if err != nil {
		k.t.Fatal(err)
	}
	b, err := leaf.DSSEBundle(virtual.CosignStatement(d.String()), virtual.BundleOptions{})
	if err != nil {
		k.t.Fatal(err)
	}
	desc, err := sign.Describe(context.Background(), r.Digest(d.String()))
	if err != nil {
		k.t.Fatal(err)
	}
	if _, err := sign.AttachBundle(context.Background(), r, desc, b, "dsse-envelope", oci.CosignSignPredicateType, false); err != nil {
		k.t.Fatal(err)
	}
	return d
}

// keylessConfig trusts labIdentity under the trust roots roots (YAML),
// for lab/keyless/**.
func keylessConfig(lab *demo.Lab, roots string, attestorRoots ...string) string {
	return fmt.Sprintf(`listen: {addr: "127.0.0.1:0"}
metrics: {addr: "127.0.0.1:1"}
upstreams: [{name: lab, url: "http://%s", insecure: true}]
defaultUpstream: lab
`, lab.Upstream) + `trustRoots:
` + roots + `
attestors:
  - name: release
    keyless: {issuer: ` + labIssuer + `, subject: ` + labIdentity + `, trustRoots: [` + strings.Join(attestorRoots, ", ") + `]}
policy:
  rules:
    - name: keyless
      images: ["lab/keyless/**"]
      require: [{signature: {attestors: [release]}}]
`
}

// decisionFor is the last decision about digest d.
func (in *instance) decisionFor(d v1.Hash) testkit.Decision {
	in.t.Helper()
	// serve's decision log is written by a writer of its own, just after
	// the answer.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		var found *testkit.Decision
		for _, dec := range in.decisionLines() {
			if dec.Digest == d.String() {
				found = &dec
			}
		}
		if found != nil {
			return *found
		}
		if time.Now().After(deadline) {
			in.t.Fatalf("no decision about %s:\n%s", d, in.decisions.String())
		}
	}
}

func TestANewTrustedRootFromTUFIsInForceWithoutRestart(t *testing.T) {
	lab := startLab(t)
	k := keylessLab{t, lab}
	oldCA, newCA := newCA(t, "acme CA 2026"), newCA(t, "acme CA 2027")
	repo := testkit.NewTUFRepo(t, rootOf(t, oldCA))
	dir := t.TempDir()
	testkit.WriteFile(t, filepath.Join(dir, "lab-root.json"), string(repo.FirstRoot()))
	oldSigned, newSigned := k.pushSigned("keyless/old", oldCA), k.pushSigned("keyless/new", newCA)

	in := startServe(t, dir, keylessConfig(lab, `  - {name: lab, tuf: {mirror: "`+repo.URL()+`", root: lab-root.json, refresh: 24h, cache: tuf-cache}}`, "lab"), 0)
	pull := func(repoName string, want int) {
		t.Helper()
		if status, err := in.pull("/v2/lab/" + repoName + "/manifests/v1"); err != nil || status != want {
			t.Fatalf("pull %s: %d %v, want %d; decisions:\n%s", repoName, status, err, want, in.decisions.String())
		}
	}
	pull("keyless/old", http.StatusOK)
	pull("keyless/new", http.StatusForbidden)
	if d := in.decisionFor(newSigned); !strings.Contains(strings.Join(d.Reasons, "; "), "does not chain to a certificate authority of the trusted root") {
		t.Errorf("the denial before the refresh: %s", d)
	}
	in.waitMetric("authz_proxy_trust_root_version", map[string]string{"root": "lab"}, 1)

	// Sigstore rotates: a new root.json (every key new) and a
	// trusted_root.json with the new CA beside the old one.
	repo.RotateRoot()
	repo.SetTarget(rootOf(t, oldCA, newCA))
	_, _, _, targets := repo.Versions()
	in.hup <- os.Interrupt // SIGHUP: a reload, and the TUF roots asked for news
	in.waitLog("trust roots changed; the policy is in force with them")
	pull("keyless/new", http.StatusOK)
	pull("keyless/old", http.StatusOK)
	d := in.decisionFor(newSigned)
	if len(d.VerifiedBy) != 1 || d.VerifiedBy[0].TrustRoot != "lab" || d.VerifiedBy[0].TrustRootVersion != targets || !strings.HasPrefix(d.VerifiedBy[0].TrustRootDigest, "sha256:") {
		t.Errorf("the allow after the refresh does not name the root version %d that judged it: %s", targets, d)
	}
	if d := in.decisionFor(oldSigned); d.Cached {
		t.Errorf("a verdict cached under the old root was used under the new one: %s", d)
	}
	in.waitMetric("authz_proxy_trust_root_version", map[string]string{"root": "lab"}, float64(targets))
	in.waitMetric("authz_proxy_trust_root_usable", map[string]string{"root": "lab"}, 1)
	if _, err := os.Stat(filepath.Join(dir, "tuf-cache", "2.root.json")); err != nil {
		t.Errorf("the cache does not keep the rotated root: %v", err)
	}
}

func TestTwoTrustRootsForOneAttestorEitherVerifies(t *testing.T) {
	lab := startLab(t)
	k := keylessLab{t, lab}
	publicCA, githubCA, strangerCA := newCA(t, "public-good"), newCA(t, "GitHub"), newCA(t, "stranger")
	repo := testkit.NewTUFRepo(t, rootOf(t, githubCA))
	dir := t.TempDir()
	testkit.WriteFile(t, filepath.Join(dir, "github-root.json"), string(repo.FirstRoot()))
	testkit.WriteFile(t, filepath.Join(dir, "public.json"), string(rootOf(t, publicCA)))
	byPublic, byGitHub, byStranger := k.pushSigned("keyless/public", publicCA), k.pushSigned("keyless/github", githubCA), k.pushSigned("keyless/stranger", strangerCA)
	in := startServe(t, dir, keylessConfig(lab, `  - {name: public-good, file: public.json}
  - {name: github, tuf: {mirror: "`+repo.URL()+`", root: github-root.json}}`, "public-good", "github"), 0)
	for _, tt := range []struct {
		repo     string
		d        v1.Hash
		want     int
		wantRoot string
	}{
		{"keyless/public", byPublic, http.StatusOK, "public-good"},
		{"keyless/github", byGitHub, http.StatusOK, "github"},
		{"keyless/stranger", byStranger, http.StatusForbidden, ""},
	} {
		t.Run(tt.repo, func(t *testing.T) {
			if status, err := in.pull("/v2/lab/" + tt.repo + "/manifests/v1"); err != nil || status != tt.want {
				t.Fatalf("pull: %d %v, want %d", status, err, tt.want)
			}
			d := in.decisionFor(tt.d)
			if tt.wantRoot == "" {
				if !strings.Contains(strings.Join(d.Reasons, "; "), "any of the 2 trusted roots") {
					t.Errorf("the denial does not say no root issued it: %s", d)
				}
				return
			}
			if len(d.VerifiedBy) != 1 || d.VerifiedBy[0].TrustRoot != tt.wantRoot {
				t.Errorf("judged by %+v, want the root %s", d.VerifiedBy, tt.wantRoot)
			}
		})
	}
}

func TestTrustFetchStatusAndValidate(t *testing.T) {
	lab := startLab(t)
	ca := newCA(t, "acme CA")
	repo := testkit.NewTUFRepo(t, rootOf(t, ca))
	repo.RotateRoot()
	dir := t.TempDir()
	testkit.WriteFile(t, filepath.Join(dir, "lab-root.json"), string(repo.FirstRoot()))
	testkit.WriteFile(t, filepath.Join(dir, "file.json"), string(rootOf(t, ca)))
	cfg := testkit.WriteFile(t, filepath.Join(dir, "config.yaml"), keylessConfig(lab, `  - {name: lab, tuf: {mirror: "`+repo.URL()+`", root: lab-root.json, cache: cache}}
  - {name: file, file: file.json}`, "lab", "file"))
	cli := func(args ...string) (string, string, error) {
		var out, errOut bytes.Buffer
		err := run(context.Background(), args, &out, &errOut)
		return out.String(), errOut.String(), err
	}

	t.Run("validate reads no mirror, and says so", func(t *testing.T) {
		out, errOut, err := cli("validate", "--config", cfg)
		if err != nil || !strings.Contains(out, "2 trust root(s)") || !strings.Contains(errOut, "trustRoots[0] (lab): not fetched offline") || repo.Served("/timestamp.json") != 0 {
			t.Errorf("validate: %v\n%s%s(timestamp.json asked %d times)", err, out, errOut, repo.Served("/timestamp.json"))
		}
	})
	snapshot := filepath.Join(t.TempDir(), "snapshot")
	t.Run("trust fetch writes a verified snapshot", func(t *testing.T) {
		out, _, err := cli("trust", "fetch", "--config", cfg, "--root", "lab", "--out", snapshot)
		if err != nil || !strings.Contains(out, "lab: wrote "+snapshot+": TUF root version 2, targets version 2") {
			t.Fatalf("trust fetch: %v\n%s", err, out)
		}
		if _, err := os.Stat(filepath.Join(snapshot, "2.root.json")); err != nil {
			t.Error(err)
		}
	})
	t.Run("trust fetch of a file root or an unknown one is refused", func(t *testing.T) {
		for _, args := range [][]string{{"--config", cfg, "--root", "file"}, {"--config", cfg, "--root", "nope"}, {"--root", "github"}} {
			if _, _, err := cli(append([]string{"trust", "fetch", "--out", t.TempDir()}, args...)...); err == nil {
				t.Errorf("trust fetch %v succeeded", args)
			}
		}
	})
	t.Run("trust status prints each root", func(t *testing.T) {
		out, _, err := cli("trust", "status", "--config", cfg)
		for _, want := range []string{"lab: TUF repository " + repo.URL(), "version:   targets 2, root 2; trusted_root.json sha256:", "expires:",
			"trusts:    1 certificate authority, 0 transparency log(s)", "file: file " + filepath.Join(dir, "file.json")} {
			if err != nil || !strings.Contains(out, want) {
				t.Errorf("trust status (%v) lacks %q:\n%s", err, want, out)
			}
		}
		out, _, err = cli("trust", "status", "--config", cfg, "--output", "json")
		var got []map[string]any
		if err != nil || json.Unmarshal([]byte(out), &got) != nil || len(got) != 2 || got[0]["version"] != float64(2) || got[1]["kind"] != "file" {
			t.Errorf("trust status --output json (%v):\n%s", err, out)
		}
	})
	t.Run("a proxy without network starts from the snapshot", func(t *testing.T) {
		repo.Stop()
		offline := strings.Replace(string(mustRead(t, cfg)), repo.URL(), fmt.Sprintf("file://%s", snapshot), 1)
		in := startServe(t, dir, offline, 0)
		in.waitMetric("authz_proxy_trust_root_version", map[string]string{"root": "lab"}, 2)
	})
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
