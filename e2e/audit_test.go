//go:build e2e

package e2e_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/authz-proxy/authz-proxy/internal/testkit"
)

// proxyCmd runs the authz-proxy binary with args and returns its output
// and exit code.
func proxyCmd(t *testing.T, args ...string) (string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, lab.proxyBin, args...)
	cmd.Env = lab.env()
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return string(out), 0
	case errors.As(err, &ee):
		return string(out), ee.ExitCode()
	}
	t.Fatalf("authz-proxy %s: %v\n%s", strings.Join(args, " "), err, out)
	return "", 0
}

// chromiumFlags are the flags under which Debian's chromium runs headless
// here: no sandbox (root in a container), no GPU, and nothing that reaches
// for the network.
var chromiumFlags = []string{"--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
	"--disable-background-networking", "--disable-component-update", "--disable-sync"}

// chromium runs headless chromium with a fresh profile and returns what it
// printed.
func chromium(t *testing.T, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	all := append(append(chromiumFlags, "--user-data-dir="+t.TempDir()), args...)
	cmd := exec.CommandContext(ctx, "chromium", all...)
	cmd.Env = lab.env()
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("chromium %s: %v\n%s", strings.Join(args, " "), err, tail(stderr.String(), 2000))
	}
	return stdout.String()
}

// TestAuditorVerifiesTheSignedLogAndReadsTheReport is what an auditor does
// with a month of pulls: the proxy signs its decision log, logrotate moves
// the file away and the proxy reopens it; the auditor verifies the files
// with the public key (an edit is caught at its line), and opens the HTML
// report in a real browser, where the denied pulls are listed.
func TestAuditorVerifiesTheSignedLogAndReadsTheReport(t *testing.T) {
	dir := t.TempDir()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, _ := x509.MarshalPKCS8PrivateKey(priv)
	pubDER, _ := x509.MarshalPKIXPublicKey(pub)
	keyFile, pubFile := filepath.Join(dir, "audit.key"), filepath.Join(dir, "audit.pub")
	testkit.WriteFile(t, keyFile, string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})))
	testkit.WriteFile(t, pubFile, string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER})))

	cfg := strings.Replace(lab.config("enforce", "http://"+lab.reg), "  file: {{AUDIT}}\n",
		"  file: {{AUDIT}}\n  checkpoint: {keyFile: "+keyFile+", every: 1s}\n  required: true\n", 1)
	p := startTestProxy(t, "auditor", cfg)
	pull := func(ref string) {
		out, err := crane(t, "manifest", "--insecure", p.addr+"/lab/"+ref)
		if strings.HasSuffix(ref, ":unsigned") {
			mustFail(t, "crane manifest "+ref, out, err)
		} else {
			mustSucceed(t, "crane manifest "+ref, out, err)
		}
	}
	pull("e2e/app:signed")
	pull("e2e/app:unsigned")
	time.Sleep(1500 * time.Millisecond) // an interval checkpoint
	// logrotate: rename, then SIGHUP (systemctl reload).
	if err := os.Rename(p.auditFile, p.auditFile+".1"); err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(p.stderr.String(), "configuration unchanged") {
		if time.Now().After(deadline) {
			t.Fatalf("the proxy did not handle SIGHUP:\n%s", p.stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	pull("e2e/app:unsigned")
	pull("tools/debug:latest")
	if err := p.stop(); err != nil {
		t.Fatalf("stopping the proxy: %v\n%s", err, p.stderr.String())
	}

	// Verify, files given newest first as a glob lists them.
	out, code := proxyCmd(t, "audit", "verify", "--log", p.auditFile, p.auditFile+".1", "--key", pubFile)
	if code != 0 {
		t.Fatalf("audit verify: exit %d\n%s", code, out)
	}
	wantContains(t, "audit verify", out, "ends with the reopen checkpoint (rotated)", "ends with the shutdown checkpoint", "OK: 4 decision(s)")

	// Someone turns a denial into an allow.
	lines := strings.SplitAfter(readFile(t, p.auditFile+".1"), "\n")
	edited := -1
	for i, l := range lines {
		if strings.Contains(l, `"decision":"deny"`) {
			lines[i] = strings.Replace(l, `"decision":"deny"`, `"decision":"allow"`, 1)
			edited = i + 1
			break
		}
	}
	forged := filepath.Join(dir, "decisions.jsonl.1")
	testkit.WriteFile(t, forged, strings.Join(lines, ""))
	out, code = proxyCmd(t, "audit", "verify", "--log", forged, p.auditFile, "--key", pubFile)
	if code != 1 {
		t.Errorf("audit verify of an edited log: exit %d, want 1\n%s", code, out)
	}
	wantContains(t, "audit verify of an edited log", out, forged+":"+strconv.Itoa(edited)+": changed")

	// The report, opened in a real browser.
	page := filepath.Join(dir, "report.html")
	out, code = proxyCmd(t, "report", "--log", p.auditFile+".1", "--log", p.auditFile, "--output", "html", "--out", page)
	if code != 0 {
		t.Fatalf("report: exit %d\n%s", code, out)
	}
	dom := chromium(t, "--dump-dom", "file://"+page)
	table := regexp.MustCompile(`(?s)<table id="denials">.*?</table>`).FindString(dom)
	if table == "" {
		t.Fatalf("the page chromium rendered has no deny table:\n%s", tail(dom, 3000))
	}
	wantContains(t, "the deny table", table, "lab/e2e/app", "unsigned", "e2e", "no cosign signature found", lab.img.unsigned.String()[:19])
	if !regexp.MustCompile(`<td class="n">2</td>`).MatchString(table) {
		t.Errorf("the deny table does not count the unsigned image's 2 denied pulls:\n%s", table)
	}
	wantContains(t, "the rendered page", dom, `<svg id="timeline"`)
	shot := filepath.Join(dir, "report.png")
	chromium(t, "--window-size=1280,1600", "--screenshot="+shot, "file://"+page)
	if fi, err := os.Stat(shot); err != nil || fi.Size() < 10_000 {
		t.Errorf("chromium's screenshot of the report is missing or blank: %v", err)
	}
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
