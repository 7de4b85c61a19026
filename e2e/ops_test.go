//go:build e2e

package e2e_test

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/authz-proxy/authz-proxy/internal/testkit"
)

// withMetrics adds a metrics listener on a free loopback port to a
// configuration, and returns it with the metrics base URL.
func withMetrics(t *testing.T, configText string) (string, string) {
	t.Helper()
	port, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	return strings.Replace(configText, "upstreams:\n", "metrics:\n  addr: "+addr+"\nupstreams:\n", 1), "http://" + addr
}

// waitMetricLine polls /metrics until it has the line, for at most 20s.
func waitMetricLine(t *testing.T, p *proxyProc, metricsURL, line string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := httpClient.Get(metricsURL + "/metrics")
		if err == nil {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if strings.Contains(string(body), line+"\n") {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("/metrics has no line %q:\n%s\nproxy stderr:\n%s", line, body, p.stderr.String())
			}
		} else if time.Now().After(deadline) {
			t.Fatalf("/metrics: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestSIGHUPReloadsThePolicyAndReopensTheAuditFile(t *testing.T) {
	dryrun, metricsURL := withMetrics(t, lab.config("dryrun", "http://"+lab.reg))
	p := startTestProxy(t, "sighup", dryrun)
	for _, path := range []string{"/healthz", "/readyz"} {
		if r := request(t, "GET", metricsURL+path, nil, nil); r.status != 200 {
			t.Errorf("%s: %d while serving", path, r.status)
		}
	}
	unsigned := p.url() + "/v2/lab/e2e/app/manifests/unsigned"
	if r := getManifest(t, "GET", unsigned); r.status != 200 {
		t.Fatalf("under dryrun: %d %s", r.status, r.body)
	}

	// logrotate renames the file (once the dry-run line is in it), the
	// policy changes to enforce, and the process gets SIGHUP.
	testkit.WaitForLine(t, p.auditFile, `"decision":"dryrun-deny"`)
	if err := os.Rename(p.auditFile, p.auditFile+".1"); err != nil {
		t.Fatal(err)
	}
	enforce := strings.Replace(dryrun, "enforcement: dryrun", "enforcement: enforce", 1)
	text := strings.NewReplacer("{{ADDR}}", p.addr, "{{AUDIT}}", p.auditFile).Replace(enforce)
	if err := os.WriteFile(p.config, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitMetricLine(t, p, metricsURL, `authz_proxy_config_reloads_total{result="success"} 1`)
	wantOCIError(t, "GET "+unsigned+" after the reload", getManifest(t, "GET", unsigned), 403, "DENIED")

	if err := p.stop(); err != nil {
		t.Fatalf("stopping: %v\n%s", err, p.stderr.String())
	}
	for _, c := range []struct{ file, decision string }{{p.auditFile + ".1", "dryrun-deny"}, {p.auditFile, "deny"}} {
		b, err := os.ReadFile(c.file)
		if err != nil {
			t.Fatal(err)
		}
		d, err := canonicalDecisions(c.file, string(b))
		if err != nil {
			t.Fatal(err)
		}
		if len(d) != 1 || !strings.Contains(d[0], `"decision":"`+c.decision+`"`) {
			t.Errorf("%s holds %v, want one %s decision", filepath.Base(c.file), d, c.decision)
		}
	}
}

// TestRegistriesConfExampleRoutesSkopeoThroughTheProxy runs skopeo with
// deploy/containers' drop-in (what node-config writes), pointed at a proxy whose upstream is
// named ghcr.io (the local registry under that name).
func TestRegistriesConfExampleRoutesSkopeoThroughTheProxy(t *testing.T) {
	cfg := strings.NewReplacer("name: lab", "name: ghcr.io", "defaultUpstream: lab", "defaultUpstream: ghcr.io", "lab/", "ghcr.io/").
		Replace(lab.config("enforce", "http://"+lab.reg))
	p := startTestProxy(t, "registries-conf", cfg)
	example, err := os.ReadFile("../deploy/containers/registries.conf.d/99-authz-proxy.conf")
	if err != nil {
		t.Fatal(err)
	}
	// The only edits: the proxy's address, and plain http for this test.
	text := strings.ReplaceAll(string(example), "authz-proxy.internal:5000", p.addr)
	text = regexp.MustCompile(`(?m)^location = .*$`).ReplaceAllString(text, "$0\ninsecure = true")
	conf := filepath.Join(t.TempDir(), "registries.conf")
	if err := os.WriteFile(conf, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	inspect := func(ref string) (string, error) {
		return lab.tool(t.Context(), nil, "skopeo", "--registries-conf", conf, "inspect", "--raw", "docker://"+ref)
	}
	out, err := inspect("ghcr.io/e2e/app:signed")
	mustSucceed(t, "skopeo inspect ghcr.io/e2e/app:signed", out, err)
	out, err = inspect("ghcr.io/e2e/app:unsigned")
	out = mustFail(t, "skopeo inspect ghcr.io/e2e/app:unsigned", out, err)
	wantContains(t, "skopeo inspect of an unsigned image", out, "denied by rule")
}
