package main

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/authz-proxy/authz-proxy/internal/testkit"
)

func wantContains(t *testing.T, out string, subs ...string) {
	t.Helper()
	for _, s := range subs {
		if !strings.Contains(out, s) {
			t.Errorf("output does not contain %q; output:\n%s", s, out)
		}
	}
}

// writeCheckpointKey writes an Ed25519 key pair as `openssl genpkey
// -algorithm ed25519` and `openssl pkey -pubout` do, as audit.key and
// audit.pub in dir, and returns the private key's path.
func writeCheckpointKey(t *testing.T, dir string) string {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, _ := x509.MarshalPKCS8PrivateKey(priv)
	pubDER, _ := x509.MarshalPKIXPublicKey(pub)
	testkit.WriteFile(t, filepath.Join(dir, "audit.key"), string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})))
	testkit.WriteFile(t, filepath.Join(dir, "audit.pub"), string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER})))
	return filepath.Join(dir, "audit.key")
}

// exitCode is the code run's error exits with.
func exitCode(err error) int {
	if err == nil {
		return 0
	}
	var ee *exitError
	if errors.As(err, &ee) {
		return ee.code
	}
	return 2
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := plainClient.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestADecisionLogThatCannotBeWrittenIsNeverSilent fills the disk under the
// decision log (the file the proxy reopens is /dev/full) and checks what
// operators and clients see, with audit.required and without, and that
// the log records the gap once it can be written again.
func TestADecisionLogThatCannotBeWrittenIsNeverSilent(t *testing.T) {
	for _, c := range []struct {
		required           bool
		status, readyWhile int
	}{
		{required: true, status: http.StatusServiceUnavailable, readyWhile: http.StatusServiceUnavailable},
		{required: false, status: http.StatusOK, readyWhile: http.StatusOK},
	} {
		t.Run(map[bool]string{true: "required", false: "not required"}[c.required], func(t *testing.T) {
			lab := startLab(t)
			dir := t.TempDir()
			writeCheckpointKey(t, dir)
			link, first, second := filepath.Join(dir, "decisions.jsonl"), filepath.Join(dir, "first.jsonl"), filepath.Join(dir, "second.jsonl")
			if err := os.Symlink(first, link); err != nil {
				t.Fatal(err)
			}
			cfg := strings.Replace(labConfig(lab, signedPolicy), "defaultUpstream: lab\n",
				"defaultUpstream: lab\naudit: {file: decisions.jsonl, checkpoint: {keyFile: audit.key, every: 1h}, required: "+map[bool]string{true: "true", false: "false"}[c.required]+"}\n", 1)
			in := startServe(t, dir, cfg, 0)
			signed := "/v2/lab/demo/app/manifests/signed"
			if status, err := in.pull(signed); err != nil || status != http.StatusOK {
				t.Fatalf("%d %v", status, err)
			}

			// The disk fills up under the file logrotate makes anew.
			retarget(t, link, "/dev/full")
			in.hup <- os.Interrupt
			in.waitLog("configuration unchanged")
			resp, err := plainClient.Get("http://" + in.addr + signed)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != c.status {
				t.Errorf("a pull while the log cannot be written: %d %s; want %d", resp.StatusCode, body, c.status)
			}
			if c.required && !strings.Contains(string(body), `"code":"UNAVAILABLE"`) || c.required && !strings.Contains(string(body), "could not be written to the decision log") {
				t.Errorf("body %s; want UNAVAILABLE saying the decision could not be logged", body)
			}
			if status, why := get(t, "http://"+in.metricsAddr+"/readyz"); status != c.readyWhile || c.required && !strings.Contains(why, "decision log") {
				t.Errorf("/readyz while the log cannot be written: %d %s; want %d", status, why, c.readyWhile)
			}
			in.waitMetric("authz_proxy_audit_last_write_successful", nil, 0)
			if n, _ := metric(in.scrape(), "authz_proxy_audit_write_errors_total", nil); n < 1 {
				t.Errorf("authz_proxy_audit_write_errors_total = %v, want at least 1", n)
			}
			wantContains(t, in.logs.String(), `"level":"ERROR","msg":"the decision log cannot be written`, "no space left on device")

			// Space again: the readiness probe writes the resume checkpoint.
			retarget(t, link, second)
			if status, why := get(t, "http://"+in.metricsAddr+"/readyz"); status != http.StatusOK {
				t.Errorf("/readyz once the log can be written: %d %s", status, why)
			}
			if status, err := in.pull(signed); err != nil || status != http.StatusOK {
				t.Errorf("a pull once the log can be written: %d %v", status, err)
			}
			in.waitMetric("authz_proxy_audit_last_write_successful", nil, 1)
			if err := in.stop(); err != nil {
				t.Fatal(err)
			}
			var out bytes.Buffer
			err = run(t.Context(), []string{"audit", "verify", "--log", first, "--log", second, "--key", filepath.Join(dir, "audit.pub")}, &out, io.Discard)
			if err != nil {
				t.Errorf("audit verify: %v\n%s", err, out.String())
			}
			wantContains(t, out.String(), "line(s) were lost", "OK: ", "The log ends with the proxy's shutdown checkpoint")
		})
	}
}

func retarget(t *testing.T, link, target string) {
	t.Helper()
	tmp := link + ".new"
	if err := os.Symlink(target, tmp); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, link); err != nil {
		t.Fatal(err)
	}
}

func TestAuditVerifyExitsZeroOneOrTwo(t *testing.T) {
	lab := startLab(t)
	dir := t.TempDir()
	writeCheckpointKey(t, dir)
	cfg := strings.Replace(labConfig(lab, signedPolicy), "defaultUpstream: lab\n", "defaultUpstream: lab\naudit: {file: decisions.jsonl, checkpoint: {keyFile: audit.key}}\n", 1)
	in := startServe(t, dir, cfg, 0)
	for _, p := range []string{"/v2/lab/demo/app/manifests/signed", "/v2/lab/demo/app/manifests/unsigned", "/v2/lab/demo/app/manifests/signed"} {
		if _, err := in.pull(p); err != nil {
			t.Fatal(err)
		}
	}
	if err := in.stop(); err != nil {
		t.Fatal(err)
	}
	log, pub := filepath.Join(dir, "decisions.jsonl"), filepath.Join(dir, "audit.pub")
	intact, _ := os.ReadFile(log)
	edited := filepath.Join(dir, "edited.jsonl")
	testkit.WriteFile(t, edited, strings.Replace(string(intact), `"decision":"deny"`, `"decision":"allow"`, 1))
	unchained := filepath.Join(dir, "unchained.jsonl")
	testkit.WriteFile(t, unchained, `{"time":"2026-01-01T00:00:00Z","level":"INFO","msg":"decision","decision":"allow"}`+"\n")
	for _, c := range []struct {
		name string
		args []string
		code int
		want []string
	}{
		{"intact, with the key", []string{"--log", log, "--key", pub}, 0, []string{"OK: 3 decision(s) in 5 line(s)", "2 signed, 2 verified with sha256:", "ends with the shutdown checkpoint"}},
		{"intact, without a key", []string{log}, 0, []string{"OK: 3 decision(s)", "signatures not checked (give --key)"}},
		{"a decision changed", []string{"--log", edited, "--key", pub}, 1, []string{"edited.jsonl:3: changed: this line was changed", "FAIL: the log is not as the proxy wrote it."}},
		{"as JSON", []string{"--log", edited, "--output", "json"}, 1, []string{`"ok": false`, `"kind": "changed"`, `"line": 3`}},
		{"a missing file", []string{"--log", filepath.Join(dir, "nothing.jsonl")}, 2, nil},
		{"a bad key", []string{"--log", log, "--key", log}, 2, nil},
		{"no chain", []string{"--log", unchained}, 2, nil},
		{"no log", []string{"--key", pub}, 2, nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			err := run(t.Context(), append([]string{"audit", "verify"}, c.args...), &out, &errOut)
			if code := exitCode(err); code != c.code {
				t.Errorf("exit %d (%v), want %d; output:\n%s", code, err, c.code, out.String())
			}
			wantContains(t, out.String(), c.want...)
		})
	}
}

func TestValidateReportsAnUnusableCheckpointKey(t *testing.T) {
	lab := startLab(t)
	dir := t.TempDir()
	testkit.WriteFile(t, filepath.Join(dir, "audit.key"), "not a key\n")
	cfg := strings.Replace(labConfig(lab, signedPolicy), "defaultUpstream: lab\n", "defaultUpstream: lab\naudit:\n  checkpoint: {keyFile: audit.key}\n", 1)
	path := filepath.Join(dir, "config.yaml")
	testkit.WriteFile(t, path, cfg)
	err := run(t.Context(), []string{"validate", "--config", path}, io.Discard, io.Discard)
	if exitCode(err) != 2 || err == nil || !strings.Contains(err.Error(), path+":6: audit.checkpoint.keyFile: audit.key: no PEM block found") {
		t.Errorf("validate: %v; want exit 2 naming the file, line and field", err)
	}
}

func TestReportReadsRotatedAndGzippedLogsWithinAWindow(t *testing.T) {
	dir := t.TempDir()
	lines := []string{
		`{"time":"2026-08-01T10:00:00Z","level":"WARN","msg":"decision","decision":"deny","image":"lab/app","reference":"v1","digest":"sha256:` + strings.Repeat("a", 64) + `","upstream":"lab","rule":"acme","enforcement":"enforce","reasons":["no cosign signature found"],"verifiedBy":[],"cached":false,"client":{"addr":"10.0.0.1:4000"},"durationMs":1}`,
		`{"time":"2026-08-02T10:00:00Z","level":"WARN","msg":"decision","decision":"deny","image":"lab/old","reference":"v1","digest":"sha256:` + strings.Repeat("b", 64) + `","upstream":"lab","rule":"acme","enforcement":"enforce","reasons":["no cosign signature found"],"verifiedBy":[],"cached":false,"client":{"addr":"10.0.0.1:4000"},"durationMs":1}`,
	}
	testkit.WriteFile(t, filepath.Join(dir, "old.jsonl"), lines[0]+"\n")
	testkit.WriteFile(t, filepath.Join(dir, "new.jsonl.gz"), string(testkit.Gzip(t, []byte(lines[1]+"\n"))))
	for _, c := range []struct {
		name string
		args []string
		want []string
		not  string
	}{
		{"both files, as JSON", []string{"--output", "json"}, []string{`"records": 2`, `"lab/app"`, `"lab/old"`}, ""},
		{"since a time", []string{"--since", "2026-08-02", "--output", "json"}, []string{`"records": 1`, `"lab/old"`}, `"lab/app"`},
		{"until a time, as text", []string{"--until", "2026-08-02T00:00:00Z"}, []string{"1 decision(s): allow 0, deny 1", "lab/app"}, "lab/old"},
		{"as HTML into a file", []string{"--output", "html", "--out", filepath.Join(dir, "report.html")}, nil, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			var out bytes.Buffer
			args := append([]string{"report", "--log", filepath.Join(dir, "old.jsonl"), filepath.Join(dir, "new.jsonl.gz")}, c.args...)
			if err := run(t.Context(), args, &out, io.Discard); err != nil {
				t.Fatal(err)
			}
			wantContains(t, out.String(), c.want...)
			if c.not != "" && strings.Contains(out.String(), c.not) {
				t.Errorf("output holds %s, outside the window:\n%s", c.not, out.String())
			}
		})
	}
	html, err := os.ReadFile(filepath.Join(dir, "report.html"))
	if err != nil {
		t.Fatal(err)
	}
	wantContains(t, string(html), `<table id="denials">`, "lab/app", "lab/old")
	if err := run(t.Context(), []string{"report", "--log", filepath.Join(dir, "old.jsonl"), "--since", "yesterday"}, io.Discard, io.Discard); exitCode(err) != 2 {
		t.Errorf("--since yesterday: %v, want a usage error", err)
	}
}

// TestTheExampleDecisionLogVerifies checks the log a proxy recorded in
// examples/decision-log (the README's sample): the format in which earlier
// releases wrote a log is still verified.
func TestTheExampleDecisionLogVerifies(t *testing.T) {
	var out bytes.Buffer
	dir := "../../examples/decision-log"
	err := run(t.Context(), []string{"audit", "verify", "--log", dir + "/decisions.jsonl", dir + "/decisions.jsonl.1.gz", "--key", dir + "/audit.pub"}, &out, io.Discard)
	if err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	wantContains(t, out.String(), "decisions.jsonl.1.gz  10 line(s)  seq 1-10   ends with the reopen checkpoint (rotated)", "3 signed, 3 verified", "OK: 13 decision(s) in 16 line(s)")
}

func TestANewCheckpointKeyTakesARestart(t *testing.T) {
	lab := startLab(t)
	dir := t.TempDir()
	writeCheckpointKey(t, dir)
	cfg := strings.Replace(labConfig(lab, signedPolicy), "defaultUpstream: lab\n", "defaultUpstream: lab\naudit: {checkpoint: {keyFile: audit.key}}\n", 1)
	in := startServe(t, dir, cfg, 0)
	writeCheckpointKey(t, dir) // a new key under the same name
	in.hup <- os.Interrupt
	in.waitMetric("authz_proxy_config_reloads_total", map[string]string{"result": "failure"}, 1)
	wantContains(t, in.logs.String(), "audit.checkpoint.keyFile: the checkpoint key changed from sha256:", "takes a restart")
}

// TestAuditVerifyFailsWhenATailIsCutBeforeARestart is the cut an editor of
// the log file can make while the proxy is stopped: the breakglass pulls
// cut from the end of the file, then the proxy started again. The restart
// says so (its start checkpoint, /readyz), and verify fails at that line.
func TestAuditVerifyFailsWhenATailIsCutBeforeARestart(t *testing.T) {
	lab := startLab(t)
	dir := t.TempDir()
	writeCheckpointKey(t, dir)
	cfg := strings.Replace(labConfig(lab, signedPolicy), "defaultUpstream: lab\n", "defaultUpstream: lab\naudit: {file: decisions.jsonl, checkpoint: {keyFile: audit.key, every: 1h}, logId: node-a}\n", 1)
	cfg = strings.Replace(cfg, "policy:\n", "policy:\n  breakglass: [{image: lab/demo/referrer, expires: 2999-01-01T00:00:00Z, reason: INC-7}]\n", 1)
	log, pub := filepath.Join(dir, "decisions.jsonl"), filepath.Join(dir, "audit.pub")

	in := startServe(t, dir, cfg, 0)
	for _, p := range []string{"/v2/lab/demo/app/manifests/signed", "/v2/lab/demo/referrer/manifests/signed", "/v2/lab/demo/referrer/manifests/signed"} {
		if status, err := in.pull(p); err != nil || status != http.StatusOK {
			t.Fatalf("%s: %d %v", p, status, err)
		}
	}
	if err := in.stop(); err != nil {
		t.Fatal(err)
	}
	intact, _ := os.ReadFile(log)
	ls := strings.SplitAfter(string(intact), "\n")
	if len(ls) != 6 || !strings.Contains(ls[2], `"decision":"breakglass"`) {
		t.Fatalf("the log is not start, allow, breakglass, breakglass, shutdown:\n%s", intact)
	}
	testkit.WriteFile(t, log, strings.Join(ls[:2], "")) // from the first breakglass line on

	in = startServe(t, dir, cfg, 0)
	status, ready := get(t, "http://"+in.metricsAddr+"/readyz")
	for deadline := time.Now().Add(30 * time.Second); status != http.StatusOK && time.Now().Before(deadline); {
		// Ready once serve has started everything.
		time.Sleep(20 * time.Millisecond)
		status, ready = get(t, "http://"+in.metricsAddr+"/readyz")
	}
	if status != http.StatusOK || !strings.Contains(ready, "decision log: started after a stop without its shutdown checkpoint: the file does not hold the proxy's last checkpoint (seq 5, shutdown): it ends at seq 2") {
		t.Errorf("/readyz after the restart: %d %q; want ready, saying what the start found", status, ready)
	}
	wantContains(t, in.logs.String(), "the decision log continues after an unclean stop")
	if _, err := in.pull("/v2/lab/demo/app/manifests/signed"); err != nil {
		t.Fatal(err)
	}
	if err := in.stop(); err != nil {
		t.Fatal(err)
	}

	var out bytes.Buffer
	err := run(t.Context(), []string{"audit", "verify", "--log", log, "--key", pub}, &out, io.Discard)
	if code := exitCode(err); code != 1 {
		t.Fatalf("audit verify: exit %d (%v), want 1\n%s", code, err, out.String())
	}
	wantContains(t, out.String(), log+":3: removed: the proxy's last checkpoint before this start was seq 5 (sha256:", "seq 3 to 5 are missing",
		"node-a  1 file(s)  seq 1-8", "FAIL: the log is not as the proxy wrote it.")
}

func TestAuditVerifyTakesRotatedKeysWithTheTimeEachSigned(t *testing.T) {
	lab := startLab(t)
	dir, oldDir := t.TempDir(), t.TempDir()
	cfg := strings.Replace(labConfig(lab, signedPolicy), "defaultUpstream: lab\n", "defaultUpstream: lab\naudit: {file: decisions.jsonl, checkpoint: {keyFile: audit.key}}\n", 1)
	writeCheckpointKey(t, dir)
	in := startServe(t, dir, cfg, 0)
	if _, err := in.pull("/v2/lab/demo/app/manifests/signed"); err != nil {
		t.Fatal(err)
	}
	if err := in.stop(); err != nil {
		t.Fatal(err)
	}
	oldPub := filepath.Join(oldDir, "audit.pub")
	if err := os.Rename(filepath.Join(dir, "audit.pub"), oldPub); err != nil {
		t.Fatal(err)
	}
	rotated := time.Now()      // between the two runs
	writeCheckpointKey(t, dir) // the new key
	in = startServe(t, dir, cfg, 0)
	if err := in.stop(); err != nil {
		t.Fatal(err)
	}
	log, newPub, at := filepath.Join(dir, "decisions.jsonl"), filepath.Join(dir, "audit.pub"), rotated.Format(time.RFC3339Nano)
	for _, c := range []struct {
		name string
		keys []string
		code int
		want string
	}{
		{"each key for the time it signed", []string{oldPub + "@.." + at, newPub + "@" + at + ".."}, 0, "OK: 1 decision(s)"},
		{"the new key only", []string{newPub}, 1, log + ":1: signature: the checkpoint names key sha256:"},
		{"the old key for after the rotation", []string{oldPub + "@" + at + "..", newPub}, 1, log + ":1: signature: the checkpoint, of "},
		{"a time that is not one", []string{oldPub + "@yesterday.."}, 2, ""},
		{"a time that ends before it begins", []string{oldPub + "@2026-03-01..2026-02-01"}, 2, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			args := []string{"audit", "verify", "--log", log}
			for _, k := range c.keys {
				args = append(args, "--key", k)
			}
			var out bytes.Buffer
			err := run(t.Context(), args, &out, io.Discard)
			if code := exitCode(err); code != c.code {
				t.Errorf("exit %d (%v), want %d\n%s", code, err, c.code, out.String())
			}
			wantContains(t, out.String(), c.want)
		})
	}
}

// TestAuditVerifyAndReportOverAFolderOfTwoReplicas runs two replicas, each
// with its log id and its audit.file in a folder of its own, rotated
// twice; the middle file of one is lost. verify over the folder names
// that replica and the line where its chain jumps; report merges both.
func TestAuditVerifyAndReportOverAFolderOfTwoReplicas(t *testing.T) {
	lab := startLab(t)
	root := t.TempDir()
	key := writeCheckpointKey(t, root)
	for _, id := range []string{"replica-a", "replica-b"} {
		dir := filepath.Join(root, "logs", id)
		if err := os.MkdirAll(dir, 0o750); err != nil {
			t.Fatal(err)
		}
		cfg := strings.Replace(labConfig(lab, signedPolicy), "defaultUpstream: lab\n",
			fmt.Sprintf("defaultUpstream: lab\naudit: {file: decisions.jsonl, checkpoint: {keyFile: %s, every: 1h}, logId: %s}\n", key, id), 1)
		in := startServe(t, dir, cfg, 0)
		log := filepath.Join(dir, "decisions.jsonl")
		for gen := 2; gen >= 1; gen-- {
			if _, err := in.pull("/v2/lab/demo/app/manifests/signed"); err != nil {
				t.Fatal(err)
			}
			testkit.WaitForLine(t, log, `"reference":"signed"`)
			if err := os.Rename(log, fmt.Sprintf("%s.%d", log, gen)); err != nil {
				t.Fatal(err)
			}
			in.hup <- os.Interrupt
			deadline := time.Now().Add(20 * time.Second)
			for strings.Count(in.logs.String(), "configuration unchanged") < 3-gen { // the file was reopened before
				if time.Now().After(deadline) {
					t.Fatalf("SIGHUP was not handled:\n%s", in.logs.String())
				}
				time.Sleep(5 * time.Millisecond)
			}
		}
		if _, err := in.pull("/v2/lab/demo/app/manifests/unsigned"); err != nil {
			t.Fatal(err)
		}
		if err := in.stop(); err != nil {
			t.Fatal(err)
		}
		if err := os.Remove(filepath.Join(dir, "config.yaml")); err != nil { // not a log
			t.Fatal(err)
		}
	}
	folder, b := filepath.Join(root, "logs"), filepath.Join(root, "logs", "replica-b", "decisions.jsonl")
	if err := os.Remove(b + ".1"); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	err := run(t.Context(), []string{"audit", "verify", "--log", folder, "--key", filepath.Join(root, "audit.pub")}, &out, io.Discard)
	if code := exitCode(err); code != 1 {
		t.Fatalf("audit verify: exit %d (%v), want 1\n%s", code, err, out.String())
	}
	wantContains(t, out.String(), "Logs (2, one per replica):", "replica-a  3 file(s)", "replica-b  2 file(s)", "replica-b: gap at "+b+":1",
		b+":1: removed: ", "a file between the two was not given")
	if strings.Contains(out.String(), "replica-a: gap") {
		t.Errorf("replica-a has a gap:\n%s", out.String())
	}
	out.Reset()
	if err := run(t.Context(), []string{"report", "--log", folder, "--output", "json"}, &out, io.Discard); err != nil {
		t.Fatal(err)
	}
	var rep struct {
		Records  int `json:"records"`
		Replicas []struct {
			LogID     string `json:"logId"`
			Decisions int    `json:"decisions"`
			Stopped   bool   `json:"stopped"`
		} `json:"replicas"`
	}
	if err := json.Unmarshal(out.Bytes(), &rep); err != nil {
		t.Fatal(err)
	}
	if len(rep.Replicas) != 2 || rep.Replicas[0].LogID != "replica-a" || rep.Replicas[0].Decisions != 3 || rep.Replicas[1].Decisions != 2 || !rep.Replicas[0].Stopped || rep.Records != 5 {
		t.Errorf("report: %+v; want replica-a with 3 decisions and replica-b with the 2 of its files left", rep)
	}
}
