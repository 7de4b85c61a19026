//go:build e2e

package e2e_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/authz-proxy/authz-proxy/internal/testkit"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// ownRegistry runs a distribution registry of the test's own, which the
// test may stop; it returns its host:port.
func ownRegistry(t *testing.T) (string, *process) {
	t.Helper()
	dir := t.TempDir()
	addr := freeAddr(t)
	cfg := filepath.Join(dir, "registry.yml")
	text := fmt.Sprintf("version: 0.1\nlog: {level: warn, accesslog: {disabled: true}}\nstorage: {filesystem: {rootdirectory: %s}}\nhttp: {addr: %s}\n", filepath.Join(dir, "data"), addr)
	if err := os.WriteFile(cfg, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	p, err := startProcess(lab.env(), &testkit.Buffer{}, filepath.Join(lab.tools, "registry"), "serve", cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.stop() })
	if err := waitReady(t.Context(), "http://"+addr+"/v2/", p.exited); err != nil {
		t.Fatalf("registry: %v\n%s", err, p.output.String())
	}
	return addr, p
}

// pushTo writes a random image to reg/repoTag and, when sign is set, signs
// it by digest with cosign and the ci key.
func pushTo(t *testing.T, reg, repoTag string, sign bool) v1.Hash {
	t.Helper()
	img, err := random.Image(1<<20, 2)
	if err != nil {
		t.Fatal(err)
	}
	ref, err := name.ParseReference(reg+"/"+repoTag, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(ref, img, remote.WithContext(t.Context())); err != nil {
		t.Fatal(err)
	}
	d, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	if sign {
		target := reg + "/" + strings.SplitN(repoTag, ":", 2)[0] + "@" + d.String()
		out, err := lab.tool(t.Context(), nil, "cosign", "sign", "--key", lab.ciKey, "--tlog-upload=false", "-y", "--allow-http-registry", target)
		mustSucceed(t, "cosign sign "+target, out, err)
	}
	return d
}

// TestImagesPulledBeforeStillPullWithTheUpstreamStopped stops the real
// registry behind a proxy with a filesystem store: every image pulled
// before, by digest and by tag (within staleIfError; an immutable tag
// without asking), still pulls with crane and skopeo, judged as before;
// after a restart it is judged again from the evidence kept in the store;
// images never pulled get 503.
func TestImagesPulledBeforeStillPullWithTheUpstreamStopped(t *testing.T) {
	reg, registry := ownRegistry(t)
	signed := pushTo(t, reg, "e2e/app:latest", true)
	release := pushTo(t, reg, "e2e/app:v1.2.3", true)
	unsigned := pushTo(t, reg, "e2e/unsigned:v1", false)
	never := pushTo(t, reg, "e2e/never:v1", true)
	metricsAddr := freeAddr(t)
	cfg := strings.Replace(storeConfig("http://"+reg, metricsAddr, fmt.Sprintf("{driver: filesystem, rootdirectory: %q, maxSize: 1GiB}", t.TempDir())),
		"    insecure: true\n", "    insecure: true\n    immutableTags: [\"v*.*.*\"]\n    staleIfError: 1h\n", 1)
	p := startTestProxy(t, "outage", cfg)

	type image struct {
		ref    string // through the proxy, after lab/
		digest v1.Hash
	}
	pulled := []image{
		{"e2e/app:latest", signed}, {"e2e/app@" + signed.String(), signed},
		{"e2e/app:v1.2.3", release}, {"e2e/app@" + release.String(), release},
	}
	pullAll := func(when string) {
		t.Helper()
		for _, im := range pulled {
			out, err := crane(t, "pull", "--insecure", p.addr+"/lab/"+im.ref, filepath.Join(t.TempDir(), "image.tar"))
			mustSucceed(t, "crane pull "+im.ref+" "+when, out, err)
			out, err = skopeo(t, p, "copy", "docker://lab.example/"+im.ref, "oci:"+filepath.Join(t.TempDir(), "oci")+":image")
			mustSucceed(t, "skopeo copy "+im.ref+" "+when, out, err)
			out, err = crane(t, "digest", "--insecure", p.addr+"/lab/"+im.ref)
			mustSucceed(t, "crane digest "+im.ref+" "+when, out, err)
			if strings.TrimSpace(out) != im.digest.String() {
				t.Errorf("%s %s: digest %s, want %s", im.ref, when, strings.TrimSpace(out), im.digest)
			}
		}
	}
	pullAll("with the upstream up")
	out, err := crane(t, "manifest", "--insecure", p.addr+"/lab/e2e/unsigned:v1")
	wantContains(t, "the unsigned image", mustFail(t, "crane manifest of the unsigned image", out, err), "DENIED")
	waitNoFills(t, metricsAddr)
	waitNoWrites(t, metricsAddr)

	_ = registry.stop() // SIGTERM: its exit status says so
	mark := p.mark()
	pullAll("with the upstream stopped")
	// Every decision was an allow: tags by their last resolution (the
	// mutable one stale, the immutable one as always), digests from the
	// store.
	for _, tt := range []struct {
		digest v1.Hash
		ref    string
		source string
	}{{signed, "latest", "stale"}, {signed, signed.String(), "store"}, {release, "v1.2.3", "store"}, {release, release.String(), "store"}} {
		if d := p.decisionFor(t, mark, tt.digest.String(), tt.ref); d.Decision != "allow" || d.Source != tt.source {
			t.Errorf("%s with the upstream stopped: %s from %q, want allow from %s\n%s", tt.ref, d.Decision, d.Source, tt.source, d)
		}
	}
	out, err = crane(t, "manifest", "--insecure", p.addr+"/lab/e2e/unsigned:v1")
	wantContains(t, "the unsigned image, upstream stopped", mustFail(t, "crane manifest of the unsigned image, upstream stopped", out, err), "DENIED", "no cosign signature found")
	for _, ref := range []string{"e2e/never:v1", "e2e/never@" + never.String()} {
		r := getManifest(t, "GET", p.url()+"/v2/lab/e2e/never/manifests/"+strings.TrimLeft(strings.TrimPrefix(ref, "e2e/never"), ":@"))
		wantOCIError(t, "never pulled "+ref, r, 503, "UNAVAILABLE")
		out, err := crane(t, "pull", "--insecure", p.addr+"/lab/"+ref, filepath.Join(t.TempDir(), "image.tar"))
		wantContains(t, "crane pull of "+ref+" never pulled", mustFail(t, "crane pull "+ref, out, err), "UNAVAILABLE")
		out, err = skopeo(t, p, "copy", "docker://lab.example/"+ref, "oci:"+filepath.Join(t.TempDir(), "oci")+":image")
		mustFail(t, "skopeo copy "+ref, out, err)
	}
	if n := metric(t, metricsAddr, "authz_proxy_stale_tags_total", `upstream="lab"`); n == 0 {
		t.Error("authz_proxy_stale_tags_total is 0")
	}

	// Restarted, the upstream still stopped: nothing in memory, each digest
	// judged again from the signatures kept in the store.
	if err := p.stop(); err != nil {
		t.Fatalf("stopping the proxy: %v", err)
	}
	p2 := restartProxy(t, p)
	mark = p2.mark()
	pullAll("after a restart with the upstream stopped")
	d := p2.decisionFor(t, mark, signed.String(), "latest")
	if d.Decision != "allow" || d.Cached || len(d.VerifiedBy) == 0 || d.VerifiedBy[0].Attestor != "ci" {
		t.Errorf("after the restart: want allowed, verified again by ci:\n%s", d)
	}
	out, err = crane(t, "manifest", "--insecure", p.addr+"/lab/e2e/unsigned:v1")
	wantContains(t, "the unsigned image after the restart", mustFail(t, "crane manifest of the unsigned image after the restart", out, err), "DENIED", "no cosign signature found")
	if ud := p2.decisionFor(t, mark, unsigned.String(), "v1"); ud.Decision != "deny" || ud.Source != "stale" {
		t.Errorf("the unsigned image after the restart:\n%s", ud)
	}
	if n := metric(t, metricsAddr, "authz_proxy_evidence_from_store_total", `upstream="lab"`); n == 0 {
		t.Error("authz_proxy_evidence_from_store_total is 0 after the restart")
	}
}

// waitNoWrites waits until a proxy's store has written what it was given.
func waitNoWrites(t *testing.T, metricsAddr string) {
	t.Helper()
	for deadline := time.Now().Add(time.Minute); metric(t, metricsAddr, "authz_proxy_store_writes_in_flight") > 0; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("store writes still running after a minute")
		}
	}
}
