package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/authz-proxy/authz-proxy/internal/config"
	"github.com/authz-proxy/authz-proxy/internal/demo"
	"github.com/authz-proxy/authz-proxy/internal/testkit"
)

// startLab runs the demo's sample registry for one test.
func startLab(t *testing.T) *demo.Lab {
	t.Helper()
	lab, err := demo.Start(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(lab.Close)
	return lab
}

// labConfig is a configuration for lab with the policy text given, which
// may use %[1]s for the ci key's path. It listens wherever the test's
// listeners are.
func labConfig(lab *demo.Lab, policy string) string {
	return fmt.Sprintf(`listen: {addr: "127.0.0.1:0"}
metrics: {addr: "127.0.0.1:1"}
upstreams: [{name: lab, url: "http://%s", insecure: true}]
defaultUpstream: lab
`, lab.Upstream) + fmt.Sprintf(policy, filepath.Join(lab.Dir, "ci.pub"))
}

// signedPolicy demands the ci signature for lab/demo/**.
const signedPolicy = `attestors: [{name: ci, publicKeys: [{file: %[1]s}]}]
policy:
  allowlist: [lab/tools/**]
  rules:
    - name: demo-images
      images: ["lab/demo/**"]
      require: [{signature: {attestors: [ci]}}]
`

// instance is one `serve` running in the test process.
type instance struct {
	t           *testing.T
	config      string
	addr        string
	metricsAddr string
	hup         chan os.Signal
	decisions   *testkit.Buffer
	logs        *testkit.Buffer
	stop        func() error
}

// startServe writes configText to a file in dir and serves it, watching
// the files every watch (0: on SIGHUP only). The proxy stops with the test.
func startServe(t *testing.T, dir, configText string, watch time.Duration) *instance {
	t.Helper()
	in := &instance{t: t, config: filepath.Join(dir, "config.yaml"), hup: make(chan os.Signal, 1), decisions: &testkit.Buffer{}, logs: &testkit.Buffer{}}
	testkit.WriteFile(t, in.config, configText)
	l, err := load(in.config)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	mln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	in.addr, in.metricsAddr = ln.Addr().String(), mln.Addr().String()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	env := serveEnv{ln: ln, metricsLn: mln, reload: in.hup, watch: watch, stdout: in.decisions, logger: slog.New(slog.NewJSONHandler(in.logs, nil))}
	go func() { done <- serve(ctx, in.config, l, env) }()
	var once sync.Once
	var stopErr error
	in.stop = func() error {
		once.Do(func() { cancel(); stopErr = <-done })
		return stopErr
	}
	t.Cleanup(func() { _ = in.stop() })
	in.waitMetric("authz_proxy_config_last_reload_successful", nil, 1)
	return in
}

var plainClient = &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{Proxy: nil, MaxIdleConnsPerHost: 16}}

// pull asks the proxy for a manifest and returns the status.
func (in *instance) pull(path string) (int, error) {
	req, _ := http.NewRequest(http.MethodGet, "http://"+in.addr+path, nil)
	req.Header.Set("Accept", "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json")
	resp, err := plainClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	_, err = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode, err
}

// scrape reads the proxy's /metrics.
func (in *instance) scrape() map[string]*dto.MetricFamily {
	in.t.Helper()
	resp, err := plainClient.Get("http://" + in.metricsAddr + "/metrics")
	if err != nil {
		in.t.Fatal(err)
	}
	defer resp.Body.Close()
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		in.t.Fatalf("/metrics: %v", err)
	}
	return fams
}

// metric is the value of the series of name with exactly these labels.
func metric(fams map[string]*dto.MetricFamily, name string, labels map[string]string) (float64, bool) {
	for _, m := range fams[name].GetMetric() {
		if len(m.GetLabel()) != len(labels) {
			continue
		}
		match := true
		for _, l := range m.GetLabel() {
			match = match && labels[l.GetName()] == l.GetValue()
		}
		if !match {
			continue
		}
		switch {
		case m.Counter != nil:
			return m.GetCounter().GetValue(), true
		case m.Gauge != nil:
			return m.GetGauge().GetValue(), true
		}
	}
	return 0, false
}

// waitMetric polls /metrics until the series has the value, for at most
// 20 seconds: reloads happen in the server's own time.
func (in *instance) waitMetric(name string, labels map[string]string, want float64) {
	in.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		got, ok := metric(in.scrape(), name, labels)
		if ok && got == want {
			return
		}
		if time.Now().After(deadline) {
			in.t.Fatalf("%s%v is %v (present: %v), want %v; server log:\n%s", name, labels, got, ok, want, in.logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitLog waits, for at most 20 seconds, until the server logs text.
func (in *instance) waitLog(text string) {
	in.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !strings.Contains(in.logs.String(), text) {
		if time.Now().After(deadline) {
			in.t.Fatalf("the server did not log %q; log:\n%s", text, in.logs.String())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// reload writes configText and sends SIGHUP, and waits until the new
// generation is in force.
func (in *instance) reload(configText string) {
	in.t.Helper()
	testkit.WriteFile(in.t, in.config, configText)
	c, err := config.Load(in.config)
	if err != nil {
		in.t.Fatal(err)
	}
	in.hup <- os.Interrupt // any value: serve only receives
	in.waitMetric("authz_proxy_config_info", map[string]string{"generation": c.Generation}, 1)
}

// waitDecisions returns the decision records written to log after its
// first mark bytes once there are at least n: serve's decision log is
// written by a writer of its own, just after the answer.
func waitDecisions(t *testing.T, log *testkit.Buffer, mark, n int) []testkit.Decision {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		recs := testkit.Decisions(t, log.String()[mark:])
		if len(recs) >= n || time.Now().After(deadline) {
			return recs
		}
	}
}

// decisionLines reads the decision records written so far (not the
// checkpoints between them).
func (in *instance) decisionLines() []testkit.Decision {
	in.t.Helper()
	return testkit.Decisions(in.t, in.decisions.String())
}

func TestReloadUnderConcurrentPullsFailsNoPull(t *testing.T) {
	lab := startLab(t)
	base := labConfig(lab, signedPolicy)
	in := startServe(t, t.TempDir(), base, 0)

	const pullers, maxPulls = 4, 2000
	paths := []string{"/v2/lab/demo/app/manifests/signed", "/v2/lab/demo/referrer/manifests/signed", "/v2/lab/demo/multiarch/manifests/v1", "/v2/lab/tools/debug/manifests/latest"}
	var stop atomic.Bool
	var pulls, failed atomic.Int64
	var firstFailure atomic.Value
	var wg sync.WaitGroup
	pullersDone := make(chan struct{})
	// waitPulls waits until every puller has pulled again, or all are done.
	waitPulls := func() {
		before := pulls.Load()
		for pulls.Load() < before+pullers {
			select {
			case <-pullersDone:
				return
			case <-time.After(time.Millisecond):
			}
		}
	}
	for p := range pullers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < maxPulls && !stop.Load(); i++ {
				path := paths[(p+i)%len(paths)]
				status, err := in.pull(path)
				pulls.Add(1)
				if err != nil || status != http.StatusOK {
					failed.Add(1)
					firstFailure.CompareAndSwap(nil, fmt.Sprintf("%s: %d %v", path, status, err))
				}
			}
		}()
	}
	go func() { wg.Wait(); close(pullersDone) }()
	// Each reload is a new generation: verdicts are judged anew while pulls
	// go on.
	for i := range 6 {
		in.reload(strings.Replace(base, "policy:\n", fmt.Sprintf("cache: {allowTTL: %dm}\npolicy:\n", i+1), 1))
		waitPulls() // pulls under the new configuration
	}
	// A broken configuration is refused and changes nothing.
	testkit.WriteFile(t, in.config, strings.Replace(base, "attestors: [ci]", "attestors: [nobody]", 1))
	in.hup <- os.Interrupt
	in.waitMetric("authz_proxy_config_reloads_total", map[string]string{"result": "failure"}, 1)
	in.waitMetric("authz_proxy_config_last_reload_successful", nil, 0)
	waitPulls()
	stop.Store(true)
	<-pullersDone

	t.Logf("%d pulls during 7 reloads", pulls.Load())
	if n := failed.Load(); n > 0 {
		t.Errorf("%d of %d pulls failed during reloads; first: %v", n, pulls.Load(), firstFailure.Load())
	}
	if got, _ := metric(in.scrape(), "authz_proxy_config_reloads_total", map[string]string{"result": "success"}); got != 6 {
		t.Errorf("%v successful reloads counted, want 6", got)
	}
	if !strings.Contains(in.logs.String(), `unknown attestor \"nobody\"`) {
		t.Errorf("the refused reload does not say why:\n%s", in.logs.String())
	}
	for _, d := range in.decisionLines() {
		if d.Decision != "allow" {
			t.Errorf("decision during reloads: %v", d)
		}
	}
}

func TestChangedKeyFileIsReloadedAndOldVerdictsAreNotUsed(t *testing.T) {
	lab := startLab(t)
	dir := t.TempDir()
	key := filepath.Join(dir, "ci.pub")
	ciKey, err := os.ReadFile(filepath.Join(lab.Dir, "ci.pub"))
	if err != nil {
		t.Fatal(err)
	}
	testkit.WriteFile(t, key, string(ciKey))
	text := strings.Replace(labConfig(lab, signedPolicy), filepath.Join(lab.Dir, "ci.pub"), "ci.pub", 1)
	in := startServe(t, dir, text, 20*time.Millisecond)

	const path = "/v2/lab/demo/app/manifests/signed"
	if status, err := in.pull(path); err != nil || status != http.StatusOK {
		t.Fatalf("signed with the ci key: %d %v", status, err)
	}
	// Rotate the attestor's key file to a key that signed nothing.
	testkit.NewKey(t).WritePublic(t, key)
	c, err := config.Load(in.config)
	if err != nil {
		t.Fatal(err)
	}
	in.waitMetric("authz_proxy_config_info", map[string]string{"generation": c.Generation}, 1)
	if status, err := in.pull(path); err != nil || status != http.StatusForbidden {
		t.Fatalf("after the key changed: %d %v, want 403 (the allow cached under the old key must not be used)", status, err)
	}
	if !strings.Contains(in.logs.String(), `"trigger":"file changed"`) {
		t.Errorf("the reload does not say a file change caused it:\n%s", in.logs.String())
	}
}

func TestReloadOfWhatNeedsARestartIsRefused(t *testing.T) {
	lab := startLab(t)
	dir := t.TempDir()
	base := labConfig(lab, signedPolicy)
	in := startServe(t, dir, base, 0)
	tests := []struct {
		name, from, to, wantLog string
	}{
		{"listen.addr", `listen: {addr: "127.0.0.1:0"}`, `listen: {addr: "127.0.0.1:5999"}`, "listen.addr: changed from 127.0.0.1:0 to 127.0.0.1:5999"},
		{"metrics.addr", `metrics: {addr: "127.0.0.1:1"}`, `metrics: {addr: "127.0.0.1:2"}`, "metrics.addr: changed from 127.0.0.1:1 to 127.0.0.1:2"},
		{"metrics.pprof", `metrics: {addr: "127.0.0.1:1"}`, `metrics: {addr: "127.0.0.1:1", pprof: true}`, "metrics.pprof: changed from off to on"},
		{"audit.file", "defaultUpstream: lab\n", "defaultUpstream: lab\naudit: {file: decisions.jsonl}\n", "audit.file: changed from (none) to " + filepath.Join(dir, "decisions.jsonl")},
		{"audit.required", "defaultUpstream: lab\n", "defaultUpstream: lab\naudit: {required: true}\n", "audit.required: changed from false to true"},
		{"audit.chain", "defaultUpstream: lab\n", "defaultUpstream: lab\naudit: {chain: false}\n", "audit.chain: changed from true to false"},
		{"audit.checkpoint", "defaultUpstream: lab\n", "defaultUpstream: lab\naudit: {checkpoint: {keyFile: " + writeCheckpointKey(t, dir) + "}}\n", "audit.checkpoint.every: changed from (none) to 1m0s"},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			testkit.WriteFile(t, in.config, strings.Replace(base, tt.from, tt.to, 1))
			in.hup <- os.Interrupt
			in.waitMetric("authz_proxy_config_reloads_total", map[string]string{"result": "failure"}, float64(i+1))
			if !strings.Contains(in.logs.String(), tt.wantLog) || !strings.Contains(in.logs.String(), "takes a restart") {
				t.Errorf("log does not say %q takes a restart:\n%s", tt.wantLog, in.logs.String())
			}
			if status, err := in.pull("/v2/lab/demo/app/manifests/signed"); err != nil || status != http.StatusOK {
				t.Errorf("after a refused reload: %d %v", status, err)
			}
		})
	}
}

func TestSIGHUPReopensTheAuditFileForLogrotate(t *testing.T) {
	lab := startLab(t)
	dir := t.TempDir()
	auditFile := filepath.Join(dir, "decisions.jsonl")
	in := startServe(t, dir, strings.Replace(labConfig(lab, signedPolicy), "defaultUpstream: lab\n", "defaultUpstream: lab\naudit: {file: decisions.jsonl}\n", 1), 0)
	if status, err := in.pull("/v2/lab/demo/app/manifests/signed"); err != nil || status != http.StatusOK {
		t.Fatalf("%d %v", status, err)
	}
	testkit.WaitForLine(t, auditFile, `"reference":"signed"`)
	if err := os.Rename(auditFile, auditFile+".1"); err != nil {
		t.Fatal(err)
	}
	in.hup <- os.Interrupt
	in.waitLog("configuration unchanged") // the SIGHUP has been handled
	if status, err := in.pull("/v2/lab/demo/app/manifests/unsigned"); err != nil || status != http.StatusForbidden {
		t.Fatalf("%d %v", status, err)
	}
	if err := in.stop(); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ file, want string }{{auditFile + ".1", `"reference":"signed"`}, {auditFile, `"reference":"unsigned"`}} {
		b, err := os.ReadFile(c.file)
		if err != nil {
			t.Fatal(err)
		}
		decisions := testkit.Decisions(t, string(b))
		if len(decisions) != 1 || !strings.Contains(decisions[0].Line, c.want) {
			t.Errorf("%s holds %q, want the one decision %s", filepath.Base(c.file), b, c.want)
		}
	}
	// The chain runs from the rotated file into the new one.
	var out bytes.Buffer
	if err := run(t.Context(), []string{"audit", "verify", "--log", auditFile, auditFile + ".1"}, &out, io.Discard); err != nil {
		t.Errorf("audit verify of the rotated log: %v\n%s", err, out.String())
	}
	wantContains(t, out.String(), "ends with the reopen checkpoint (rotated)", "ends with the shutdown checkpoint", "OK: 2 decision(s)")
}

func TestMetricsListenerServesHealthReadinessAndCounters(t *testing.T) {
	lab := startLab(t)
	in := startServe(t, t.TempDir(), labConfig(lab, signedPolicy), 0)
	for _, p := range []string{"/v2/lab/demo/app/manifests/signed", "/v2/lab/demo/app/manifests/signed", "/v2/lab/demo/app/manifests/unsigned"} {
		if _, err := in.pull(p); err != nil {
			t.Fatal(err)
		}
	}
	for _, p := range []string{"/healthz", "/readyz"} {
		resp, err := plainClient.Get("http://" + in.metricsAddr + p)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Errorf("%s: %d while serving", p, resp.StatusCode)
		}
	}
	fams := in.scrape()
	for _, c := range []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"authz_proxy_decisions_total", map[string]string{"upstream": "lab", "environment": "", "rule": "demo-images", "decision": "allow"}, 2},
		{"authz_proxy_decisions_total", map[string]string{"upstream": "lab", "environment": "", "rule": "demo-images", "decision": "deny"}, 1},
		{"authz_proxy_cache_hits_total", nil, 1},
		{"authz_proxy_cache_misses_total", nil, 2},
		{"authz_proxy_config_last_reload_successful", nil, 1},
	} {
		if got, ok := metric(fams, c.name, c.labels); !ok || got != c.want {
			t.Errorf("%s%v = %v (present: %v), want %v", c.name, c.labels, got, ok, c.want)
		}
	}
	for _, name := range []string{"authz_proxy_verification_duration_seconds", "authz_proxy_upstream_request_duration_seconds", "authz_proxy_cache_entries", "authz_proxy_cache_evictions_total", "go_goroutines"} {
		if fams[name] == nil {
			t.Errorf("/metrics has no %s", name)
		}
	}
}

func TestProfilerIsServedOnTheMetricsListenerOnlyWhenTurnedOn(t *testing.T) {
	lab := startLab(t)
	base := labConfig(lab, signedPolicy)
	for _, tt := range []struct {
		name, config string
		want         int
	}{
		{"off by default", base, http.StatusNotFound},
		{"on with metrics.pprof", strings.Replace(base, `metrics: {addr: "127.0.0.1:1"}`, `metrics: {addr: "127.0.0.1:1", pprof: true}`, 1), http.StatusOK},
	} {
		t.Run(tt.name, func(t *testing.T) {
			in := startServe(t, t.TempDir(), tt.config, 0)
			for _, p := range []string{"/debug/pprof/", "/debug/pprof/heap?debug=1"} {
				resp, err := plainClient.Get("http://" + in.metricsAddr + p)
				if err != nil {
					t.Fatal(err)
				}
				resp.Body.Close()
				if resp.StatusCode != tt.want {
					t.Errorf("%s: %d, want %d", p, resp.StatusCode, tt.want)
				}
			}
			if fams := in.scrape(); fams["authz_proxy_config_info"] == nil {
				t.Error("/metrics is not served beside the profiler")
			}
		})
	}
}

func TestMutualTLSClientIsMappedToItsEnvironment(t *testing.T) {
	lab := startLab(t)
	dir := t.TempDir()
	p := newPKI(t, dir)
	text := fmt.Sprintf(`listen:
  addr: 127.0.0.1:0
  tls: {certFile: %s, keyFile: %s, clientCAFile: %s}
upstreams: [{name: lab, url: "http://%s", insecure: true}]
environments:
  - name: prod
    clients: [{cn: prod-cluster}]
  - name: dev
    clients: [{cn: dev.clusters.example}]
attestors: [{name: ci, publicKeys: [{file: %s}]}]
policy:
  rules:
    - name: prod-signed
      images: ["lab/demo/**"]
      environments: [prod]
      require: [{signature: {attestors: [ci]}}]
    - name: dev-open
      images: ["lab/demo/**"]
      environments: [dev]
      action: allow
`, p.serverCert, p.server, p.clientCA, lab.Upstream, filepath.Join(lab.Dir, "ci.pub"))
	in := startServe(t, dir, text, 0)
	decisions := in.decisions

	tests := []struct {
		name         string
		cert         tls.Certificate
		image        string
		wantStatus   int
		wantIdentity string
		wantEnv      string
		wantRule     string
	}{
		{"a prod client pulling an unsigned image meets the prod rule", p.issue(t, "prod-cluster"), "demo/app:unsigned", 403, "prod-cluster", "prod", "prod-signed"},
		{"a prod client pulling a signed image", p.issue(t, "prod-cluster"), "demo/app:signed", 200, "prod-cluster", "prod", "prod-signed"},
		{"a client named by a DNS SAN meets the dev rule", p.issue(t, "node-7", "dev.clusters.example"), "demo/app:unsigned", 200, "node-7", "dev", "dev-open"},
		{"a client of no environment meets only rules without environments", p.issue(t, "laptop"), "demo/app:signed", 403, "laptop", "", "default"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: p.pool, Certificates: []tls.Certificate{tt.cert}}}}
			repo, tag, _ := strings.Cut(tt.image, ":")
			mark := len(decisions.String())
			resp, err := c.Get("https://" + in.addr + "/v2/lab/" + repo + "/manifests/" + tag)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tt.wantStatus {
				t.Errorf("status %d, want %d", resp.StatusCode, tt.wantStatus)
			}
			recs := waitDecisions(t, decisions, mark, 1)
			if len(recs) != 1 {
				t.Fatalf("%d decisions logged for one pull: %v", len(recs), recs)
			}
			if rec := recs[0]; rec.Rule != tt.wantRule || rec.Client.Identity != tt.wantIdentity || rec.Client.Environment != tt.wantEnv {
				t.Errorf("decision %s; want rule %s, identity %s, environment %q", rec, tt.wantRule, tt.wantIdentity, tt.wantEnv)
			}
		})
	}
}

func TestReplayShowsWhatACandidatePolicyWouldChange(t *testing.T) {
	lab := startLab(t)
	dir := t.TempDir()
	// In production: dryrun, and an allowlist for tools.
	current := strings.Replace(labConfig(lab, signedPolicy), "defaultUpstream: lab\n", "defaultUpstream: lab\naudit: {file: decisions.jsonl}\n", 1)
	current = strings.Replace(current, "policy:\n", "policy:\n  enforcement: dryrun\n", 1)
	in := startServe(t, dir, current, 0)
	lab.Tour(context.Background(), in.addr, io.Discard) // pulls every sample, an index and its platform images too
	if err := in.stop(); err != nil {
		t.Fatal(err)
	}
	// The candidate enforces and drops the allowlist.
	candidate := filepath.Join(dir, "candidate.yaml")
	testkit.WriteFile(t, candidate, strings.Replace(labConfig(lab, signedPolicy), "  allowlist: [lab/tools/**]\n", "", 1))
	log := filepath.Join(dir, "decisions.jsonl")

	out, errOut, code := runCmd(t, "replay", "--config", candidate, "--log", log)
	if code != 1 {
		t.Fatalf("replay: exit %d, want 1 (decisions change)\n%s%s", code, out, errOut)
	}
	t.Logf("replay output:\n%s", out)
	for _, want := range []string{"8 decision(s) would change: 1 allow -> deny, 7 dryrun-deny -> deny.", "lab/tools/debug:latest", "lab/demo/app:unsigned", "default", "no cosign signature found"} {
		if !strings.Contains(out, want) {
			t.Errorf("replay output lacks %q:\n%s", want, out)
		}
	}
	out, _, code = runCmd(t, "replay", "--config", candidate, "--log", log, "--output", "json", "--all")
	var report replayReport
	if err := json.Unmarshal([]byte(out), &report); err != nil || code != 1 {
		t.Fatalf("--output json: exit %d, %v\n%s", code, err, out)
	}
	if s := report.Summary; s.Changed != 8 || s.Errors != 0 || s.Judged != len(report.Results) || s.Judged < 9 {
		t.Errorf("summary %+v with %d results", s, len(report.Results))
	}
	inherited := 0
	for _, r := range report.Results {
		if len(r.Now.Reasons) > 0 && strings.HasPrefix(r.Now.Reasons[0], "listed in allowed index") {
			inherited++
			if r.Changed() || r.Now.Decision != "allow" {
				t.Errorf("a platform image of an allowed index: %+v", r)
			}
		}
	}
	if inherited != 2 {
		t.Errorf("%d platform images inherited their index's verdict, want 2", inherited)
	}

	// Under the policy in force, nothing changes.
	testkit.WriteFile(t, candidate, current)
	out, _, code = runCmd(t, "replay", "--config", candidate, "--log", log)
	if code != 0 || !strings.Contains(out, "No decision would change.") {
		t.Errorf("replay under the current policy: exit %d\n%s", code, out)
	}
}

func TestValidateWarnsAboutAnExpiredBreakglassEntry(t *testing.T) {
	lab := startLab(t)
	path := filepath.Join(t.TempDir(), "config.yaml")
	testkit.WriteFile(t, path, strings.Replace(labConfig(lab, signedPolicy), "policy:\n", "policy:\n  breakglass: [{image: lab/demo/app, expires: 2020-01-01T00:00:00Z, reason: INC-1}]\n", 1))
	out, errOut, code := runCmd(t, "validate", "--config", path)
	if code != 0 || !strings.Contains(out, "OK") || !strings.Contains(errOut, "warning: ") || !strings.Contains(errOut, "policy.breakglass[0].expires: 2020-01-01T00:00:00Z has passed: this entry is ignored") {
		t.Errorf("exit %d\nstdout: %s\nstderr: %s", code, out, errOut)
	}
}

func TestCheckJudgesAsAClientOfTheEnvironmentGiven(t *testing.T) {
	lab := startLab(t)
	path := filepath.Join(t.TempDir(), "config.yaml")
	text := strings.Replace(labConfig(lab, signedPolicy), "  rules:\n", "  rules:\n    - {name: prod-open, images: [\"lab/demo/**\"], environments: [prod], action: allow}\n", 1)
	testkit.WriteFile(t, path, "environments: [{name: prod, clients: [{cidr: 10.0.0.0/8}]}]\n"+text)
	tests := []struct {
		name     string
		args     []string
		wantCode int
		wantOut  string
	}{
		{"a client of no environment meets the rule for everyone", nil, 1, "deny"},
		{"a client of prod meets the rule for prod", []string{"--environment", "prod"}, 0, "prod-open"},
		{"an environment the configuration lacks is an error", []string{"--environment", "nope"}, 2, `"nope"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			args := append(append([]string{"check", "--config", path}, tt.args...), "lab/demo/app:unsigned")
			out, errOut, code := runCmd(t, args...)
			if code != tt.wantCode || !strings.Contains(out+errOut, tt.wantOut) {
				t.Errorf("exit %d, want %d and %q:\n%s%s", code, tt.wantCode, tt.wantOut, out, errOut)
			}
		})
	}
}

func TestShutdownTurnsUnreadyAndLetsInFlightPullsFinish(t *testing.T) {
	lab := startLab(t)
	// The upstream is the lab's registry behind a gate that holds one
	// manifest request until released.
	target, _ := url.Parse("http://" + lab.Upstream)
	relay := httputil.NewSingleHostReverseProxy(target)
	entered, release := make(chan struct{}), make(chan struct{})
	var armed atomic.Bool
	armed.Store(true)
	gate := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "/manifests/signed") && armed.CompareAndSwap(true, false) {
			close(entered)
			<-release
		}
		relay.ServeHTTP(w, r)
	}))
	defer gate.Close()
	in := startServe(t, t.TempDir(), strings.Replace(labConfig(lab, signedPolicy), lab.Upstream, strings.TrimPrefix(gate.URL, "http://"), 1), 0)

	pulled := make(chan int, 1)
	go func() {
		status, err := in.pull("/v2/lab/demo/app/manifests/signed")
		if err != nil {
			t.Errorf("the in-flight pull failed: %v", err)
		}
		pulled <- status
	}()
	<-entered
	stopped := make(chan error, 1)
	go func() { stopped <- in.stop() }() // SIGTERM
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := plainClient.Get("http://" + in.metricsAddr + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusServiceUnavailable {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("/readyz did not turn unready once shutdown began")
		}
		time.Sleep(10 * time.Millisecond)
	}
	close(release)
	if status := <-pulled; status != http.StatusOK {
		t.Errorf("the pull in flight at shutdown got %d, want 200", status)
	}
	if err := <-stopped; err != nil {
		t.Errorf("serve returned %v after draining", err)
	}
}

func TestConnectionsPastTheLimitWaitForAFreeOne(t *testing.T) {
	lab := startLab(t)
	in := startServe(t, t.TempDir(), strings.Replace(labConfig(lab, signedPolicy), "upstreams:", "limits: {maxConnections: 2}\nupstreams:", 1), 0)
	var held []net.Conn
	for range 2 {
		c, err := net.Dial("tcp", in.addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		held = append(held, c)
	}
	// Two idle connections take every place: a third client is not
	// served while they stay.
	impatient := &http.Client{Timeout: 300 * time.Millisecond, Transport: &http.Transport{Proxy: nil}}
	if resp, err := impatient.Get("http://" + in.addr + "/v2/"); err == nil {
		resp.Body.Close()
		t.Fatalf("a third connection was served past maxConnections: 2 (%d)", resp.StatusCode)
	}
	held[0].Close()
	if status, err := in.pull("/v2/lab/demo/app/manifests/signed"); err != nil || status != http.StatusOK {
		t.Fatalf("after a place freed: %d %v", status, err)
	}
}
