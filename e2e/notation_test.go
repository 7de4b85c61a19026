//go:build e2e

package e2e_test

import (
	"context"
	"crypto/x509/pkix"
	"fmt"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/sigstore/sigstore/pkg/cryptoutils"

	"github.com/authz-proxy/authz-proxy/internal/sign/virtual"
)

const (
	releaseIdentity = "x509.subject: C=US, ST=WA, O=Acme, CN=release"
	nightlyIdentity = "x509.subject: C=US, ST=WA, O=Acme, CN=nightly"
)

// notationPolicy trusts the release CA, under three names of the one
// registry: lab, the release identity; nightly, only the nightly identity;
// stamped, the release identity with a timestamp from the TSA on every
// signature.
func notationPolicy(caFile, tsaFile string) string {
	return fmt.Sprintf(`listen:
  addr: {{ADDR}}
upstreams:
  - name: lab
    url: "http://%[1]s"
    insecure: true
  - name: nightly
    url: "http://%[1]s"
    insecure: true
  - name: stamped
    url: "http://%[1]s"
    insecure: true
defaultUpstream: lab
audit:
  file: {{AUDIT}}
attestors:
  - name: release
    notation:
      trustStore: [%[2]q]
      trustedIdentities: [%[4]q]
  - name: release-stamped
    notation:
      trustStore: [%[2]q]
      tsaRoots: [%[3]q]
      trustedIdentities: [%[4]q]
  - name: nightly
    notation:
      trustStore: [%[2]q]
      trustedIdentities: [%[5]q]
policy:
  rules:
    - name: release
      images: ["lab/notation/**"]
      require:
        - signature: {attestors: [release]}
    - name: nightly
      images: ["nightly/notation/**"]
      require:
        - signature: {attestors: [nightly]}
    - name: stamped
      images: ["stamped/notation/**"]
      require:
        - signature: {attestors: [release-stamped]}
  default:
    action: deny
`, lab.reg, caFile, tsaFile, releaseIdentity, nightlyIdentity)
}

// TestNotationSignaturesArePulledOrDenied signs with the real notation CLI
// (a local key and its certificate chain from a test CA, no plug-in),
// pushes to the distribution registry (no referrers API: notation writes
// the sha256-<hex> index), pulls through the proxy with crane, and runs
// notation verify through the proxy.
func TestNotationSignaturesArePulledOrDenied(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	dir := t.TempDir()
	write := func(name string, data []byte) string {
		t.Helper()
		path := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	now := time.Now()
	ca, err := virtual.NewCA("Acme release CA", now.Add(-24*time.Hour), now.Add(365*24*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := ca.Issue(virtual.Leaf{
		Name:      pkix.Name{Country: []string{"US"}, Province: []string{"WA"}, Organization: []string{"Acme"}, CommonName: "release"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(30 * 24 * time.Hour),
	})
	if err != nil {
		t.Fatal(err)
	}
	tsa, err := virtual.NewTSA("Acme timestamps", now.Add(-time.Hour), now.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	tsaServer := httptest.NewServer(tsa)
	defer tsaServer.Close()
	chainPEM, err := cryptoutils.MarshalCertificatesToPEM(leaf.Chain())
	if err != nil {
		t.Fatal(err)
	}
	keyPEM, err := leaf.KeyPEM()
	if err != nil {
		t.Fatal(err)
	}
	rootPEM, err := cryptoutils.MarshalCertificateToPEM(ca.Root)
	if err != nil {
		t.Fatal(err)
	}
	tsaPEM, err := cryptoutils.MarshalCertificateToPEM(tsa.Root())
	if err != nil {
		t.Fatal(err)
	}
	caFile, tsaFile := write("ca.crt", rootPEM), write("tsa.crt", tsaPEM)

	// notation's own configuration: the local signing key (no plug-in),
	// and, for notation verify, a trust store and trust policy.
	home := filepath.Join(dir, "xdg")
	keyFile, chainFile := write("release.key", keyPEM), write("release.crt", chainPEM)
	write("xdg/notation/signingkeys.json", fmt.Appendf(nil, `{"default":"release","keys":[{"name":"release","keyPath":%q,"certPath":%q}]}`, keyFile, chainFile))
	write("xdg/notation/truststore/x509/ca/acme/root.crt", rootPEM)
	write("xdg/notation/trustpolicy.json", fmt.Appendf(nil, `{"version":"1.0","trustPolicies":[{"name":"acme","registryScopes":["*"],"signatureVerification":{"level":"strict"},"trustStores":["ca:acme"],"trustedIdentities":[%q]}]}`, releaseIdentity))
	notation := func(args ...string) (string, error) {
		return lab.tool(ctx, []string{"XDG_CONFIG_HOME=" + home}, "notation", args...)
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
	jws := push("notation/app:jws")
	cose := push("notation/app:cose")
	stamped := push("notation/app:stamped")
	unsigned := push("notation/app:unsigned")
	for _, s := range []struct {
		d    v1.Hash
		args []string
	}{
		{jws, nil},
		{cose, []string{"--signature-format", "cose"}},
		{stamped, []string{"--timestamp-url", tsaServer.URL, "--timestamp-root-cert", tsaFile}},
	} {
		ref := lab.reg + "/notation/app@" + s.d.String()
		args := append([]string{"sign", "--insecure-registry", "--key", "release"}, s.args...)
		out, err := notation(append(args, ref)...)
		mustSucceed(t, "notation sign "+ref, out, err)
	}

	t.Run("notation writes its signature in the fallback index", func(t *testing.T) {
		out, err := crane(t, "manifest", "--insecure", lab.reg+"/notation/app:sha256-"+jws.Hex)
		mustSucceed(t, "crane manifest of the fallback tag", out, err)
		wantContains(t, "fallback index", out, `"artifactType":"application/vnd.cncf.notary.signature"`)
	})

	p := startTestProxy(t, "notation", notationPolicy(caFile, tsaFile))
	for _, c := range []struct {
		name, ref string
		d         v1.Hash
		rule      string
		wantBy    string
		wantDeny  []string
	}{
		{"JWS signature of the trusted identity", "lab/notation/app:jws", jws, "release", "release", nil},
		{"COSE signature of the trusted identity", "lab/notation/app:cose", cose, "release", "release", nil},
		{"not signed", "lab/notation/app:unsigned", unsigned, "release", "", []string{"no signature found", "need one from attestor release"}},
		{"signed, under a policy trusting another identity", "nightly/notation/app:jws", jws, "nightly", "",
			[]string{`x509.subject is "CN=release,O=Acme,ST=WA,C=US", want a subject with "C=US, ST=WA, O=Acme, CN=nightly"`}},
		{"timestamped by a TSA of tsaRoots", "stamped/notation/app:stamped", stamped, "stamped", "release-stamped", nil},
		{"no timestamp where tsaRoots demand one", "stamped/notation/app:jws", jws, "stamped", "",
			[]string{"no RFC 3161 timestamp: the signature carries none, and one is required"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			mark := p.mark()
			out, err := crane(t, "pull", "--insecure", p.addr+"/"+c.ref, filepath.Join(t.TempDir(), "image.tar"))
			d := p.decisionFor(t, mark, c.d.String(), "")
			image := strings.Split(c.ref, ":")[0]
			want := "allow"
			if c.wantDeny != nil {
				want = "deny"
				out = mustFail(t, "crane pull "+c.ref, out, err)
				wantContains(t, "crane pull "+c.ref, out, append([]string{"DENIED"}, c.wantDeny...)...)
			} else {
				mustSucceed(t, "crane pull "+c.ref, out, err)
			}
			if d.Decision != want || d.Image != image || d.Rule != c.rule {
				t.Errorf("decision %s of %s by rule %s, want %s of %s by %s:\n%s", d.Decision, d.Image, d.Rule, want, image, c.rule, d)
			}
			if c.wantDeny != nil {
				return
			}
			if got := strings.Join(d.Attestors(), ","); got != c.wantBy {
				t.Errorf("verified by %q, want %s:\n%s", got, c.wantBy, d)
			}
			for _, v := range d.VerifiedBy {
				if !strings.HasPrefix(v.Source, "referrer sha256:") {
					t.Errorf("verified from %q, want a referrer:\n%s", v.Source, d)
				}
			}
			if c.d == stamped && !strings.Contains(d.Line, "by the timestamp authority") {
				t.Errorf("the decision does not name the timestamp:\n%s", d)
			}
		})
	}

	t.Run("notation verify reads the signature through the proxy", func(t *testing.T) {
		for _, d := range []v1.Hash{jws, cose} {
			ref := p.addr + "/lab/notation/app@" + d.String()
			out, err := notation("verify", "--insecure-registry", ref)
			mustSucceed(t, "notation verify "+ref, out, err)
			wantContains(t, "notation verify", out, "Successfully verified signature for "+ref)
		}
	})
}
