package main

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/authz-proxy/authz-proxy/internal/testkit"
)

// waitAtLeast polls /metrics until the series reaches min, for at most 20
// seconds, and returns its value.
func (in *instance) waitAtLeast(name string, labels map[string]string, min float64) float64 {
	in.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		if got, ok := metric(in.scrape(), name, labels); ok && got >= min {
			return got
		}
		if time.Now().After(deadline) {
			in.t.Fatalf("%s%v did not reach %v; server log:\n%s", name, labels, min, in.logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// revoked are the revoked lines of the decision log.
func (in *instance) revoked() []testkit.Decision {
	var out []testkit.Decision
	for _, d := range in.decisionLines() {
		if d.Decision == "revoked" {
			out = append(out, d)
		}
	}
	return out
}

// TestServeRevalidatesUnderThePolicyInForce pulls two signed images, then
// puts a rule denying one of them in force by a reload: the next round of
// re-validation logs it revoked once, counts it, and leaves the other be;
// report lists it as allowed before and denied now.
func TestServeRevalidatesUnderThePolicyInForce(t *testing.T) {
	lab := startLab(t)
	dir := t.TempDir()
	base := strings.Replace(labConfig(lab, signedPolicy), "defaultUpstream: lab\n", "defaultUpstream: lab\naudit: {file: decisions.jsonl}\nrevalidate: {interval: 1s}\n", 1)
	in := startServe(t, dir, base, 0)
	for _, p := range []string{"/v2/lab/demo/app/manifests/signed", "/v2/lab/demo/referrer/manifests/signed"} {
		if status, err := in.pull(p); err != nil || status != http.StatusOK {
			t.Fatalf("%s: %d %v", p, status, err)
		}
	}
	allowed := map[string]string{"upstream": "lab", "result": "allowed"}
	in.waitAtLeast("authz_proxy_revalidations_total", allowed, 2) // a round after the pulls
	if got := in.revoked(); len(got) != 0 {
		t.Fatalf("revoked under the policy they were allowed by: %v", got)
	}

	in.reload(strings.Replace(base, "  rules:\n", "  rules:\n    - {name: no-app, images: [lab/demo/app], action: deny}\n", 1))
	in.waitMetric("authz_proxy_revalidations_total", map[string]string{"upstream": "lab", "result": "revoked"}, 1)
	after := in.waitAtLeast("authz_proxy_revalidations_total", allowed, 3)
	in.waitAtLeast("authz_proxy_revalidations_total", allowed, after+1) // and one round more
	got := in.revoked()
	if len(got) != 1 || got[0].Image != "lab/demo/app" || got[0].Rule != "no-app" || got[0].Reference != "signed" || got[0].Level != "WARN" {
		t.Fatalf("revoked lines %v; want lab/demo/app:signed once, by rule no-app", got)
	}
	if err := in.stop(); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := run(t.Context(), []string{"report", "--log", filepath.Join(dir, "decisions.jsonl")}, &out, io.Discard); err != nil {
		t.Fatal(err)
	}
	wantContains(t, out.String(), "ALLOWED BEFORE, DENIED NOW (revoked by re-validation: 1)", "lab/demo/app  ", "demo-images", "no-app")
	out.Reset()
	if err := run(t.Context(), []string{"audit", "verify", "--log", filepath.Join(dir, "decisions.jsonl")}, &out, io.Discard); err != nil {
		t.Errorf("audit verify of a log with revoked lines: %v\n%s", err, out.String())
	}
}

// TestRevalidateJudgesTheLoggedPullsAgainOnDemand stops the proxy, deletes
// a signature upstream, and runs `authz-proxy revalidate` over the decision
// log: the digest whose signature is gone is revoked, exit 1.
func TestRevalidateJudgesTheLoggedPullsAgainOnDemand(t *testing.T) {
	lab := startLab(t)
	dir := t.TempDir()
	cfg := strings.Replace(labConfig(lab, signedPolicy), "defaultUpstream: lab\n", "defaultUpstream: lab\naudit: {file: decisions.jsonl}\n", 1)
	in := startServe(t, dir, cfg, 0)
	for _, p := range []string{"/v2/lab/demo/app/manifests/signed", "/v2/lab/demo/referrer/manifests/signed", "/v2/lab/demo/app/manifests/unsigned"} {
		if _, err := in.pull(p); err != nil {
			t.Fatal(err)
		}
	}
	if err := in.stop(); err != nil {
		t.Fatal(err)
	}
	var signed string
	for _, d := range in.decisionLines() {
		if d.Image == "lab/demo/app" && d.Reference == "signed" {
			signed = d.Digest
		}
	}
	req, _ := http.NewRequest(http.MethodDelete, "http://"+lab.Upstream+"/v2/demo/app/manifests/"+strings.Replace(signed, ":", "-", 1)+".sig", nil)
	resp, err := plainClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	config := filepath.Join(dir, "config.yaml")
	for _, c := range []struct {
		output string
		want   []string
	}{
		{"text", []string{"Re-validated 2 digest(s) allowed since ", "1 still allowed, 1 revoked (allowed before, denied now), 0 could not be judged.", "lab/demo/app:signed", "revoked", "no cosign signature found"}},
		{"log", []string{`"decision":"revoked","image":"lab/demo/app","reference":"signed","digest":"` + signed + `"`}},
		{"json", []string{`"revoked": 1`, `"decision": "deny"`}},
	} {
		t.Run(c.output, func(t *testing.T) {
			var out bytes.Buffer
			err := run(t.Context(), []string{"revalidate", "--config", config, "--since", "24h", "--output", c.output}, &out, io.Discard)
			if code := exitCode(err); code != 1 {
				t.Errorf("exit %d (%v), want 1\n%s", code, err, out.String())
			}
			wantContains(t, out.String(), c.want...)
			if c.output == "json" && !json.Valid(out.Bytes()) {
				t.Errorf("not JSON: %s", out.String())
			}
		})
	}
	var out bytes.Buffer
	if err := run(t.Context(), []string{"revalidate", "--config", config, "--since", "2999-01-01"}, &out, io.Discard); err != nil {
		t.Errorf("nothing allowed since then: %v\n%s", err, out.String())
	}
	if err := run(t.Context(), []string{"revalidate", "--config", config, "--since", "yesterday"}, io.Discard, io.Discard); exitCode(err) != 2 {
		t.Errorf("--since yesterday: %v, want a usage error", err)
	}
}
