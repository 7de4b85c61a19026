package proxy_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// breakglassPolicy is policyYAML with breakglass entries before its rules.
func breakglassPolicy(entries ...string) string {
	return strings.Replace(policyYAML, "policy:\n", "policy:\n  breakglass:\n"+strings.Join(entries, ""), 1)
}

func breakglassEntry(image string, expires time.Time) string {
	return fmt.Sprintf("    - {image: %q, expires: %q, reason: INC-1234 hotfix}\n", image, expires.UTC().Format(time.RFC3339Nano))
}

func TestBreakglass(t *testing.T) {
	hour := time.Hour
	tests := []struct {
		name string
		// entry is the breakglass entry for an unsigned image whose two
		// digests are v1 and v2.
		entry          func(v1 string) string
		wantV1, wantV2 string
	}{
		{"an unexpired entry with a digest allows that digest only",
			func(v1 string) string { return breakglassEntry("lab/signed/app@"+v1, time.Now().Add(hour)) }, "breakglass", "deny"},
		{"an unexpired entry without a digest allows every digest of the image",
			func(string) string { return breakglassEntry("lab/signed/app", time.Now().Add(hour)) }, "breakglass", "breakglass"},
		{"an expired entry is ignored",
			func(v1 string) string { return breakglassEntry("lab/signed/app@"+v1, time.Now().Add(-hour)) }, "deny", "deny"},
		{"an entry for another image changes nothing",
			func(string) string { return breakglassEntry("lab/signed/other", time.Now().Add(hour)) }, "deny", "deny"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t)
			v1, v2 := e.push("signed/app:v1"), e.push("signed/app:v2")
			e.reload(breakglassPolicy(tt.entry(v1.String())))
			for _, c := range []struct {
				tag, digest, want string
			}{{"v1", v1.String(), tt.wantV1}, {"v2", v2.String(), tt.wantV2}} {
				resp := e.get(http.MethodGet, "/v2/lab/signed/app/manifests/"+c.tag)
				wantStatus := http.StatusOK
				if c.want == "deny" {
					wantStatus = http.StatusForbidden
				}
				if resp.StatusCode != wantStatus {
					t.Errorf("%s: status %d, want %d", c.tag, resp.StatusCode, wantStatus)
				}
				rec := e.lastDecision(c.digest)
				if rec.Decision != c.want {
					t.Errorf("%s: decision %q, want %q", c.tag, rec.Decision, c.want)
				}
				if c.want == "breakglass" && (rec.Level != "WARN" || rec.Rule != "breakglass" || len(rec.Reasons) != 1 || !strings.Contains(rec.Reasons[0], "INC-1234 hotfix")) {
					t.Errorf("%s: a breakglass decision must be logged at WARN with its reason: %+v", c.tag, rec)
				}
			}
		})
	}
}

func TestBreakglassEndsAtItsExpiryWhateverIsCached(t *testing.T) {
	e := newEnv(t) // outcomes are cached for a minute
	d := e.push("signed/app:v1")
	expires := e.clock.Now().Add(10 * time.Second) // well within the minute outcomes are cached
	e.reload(breakglassPolicy(breakglassEntry("lab/signed/app", expires)))
	path := "/v2/lab/signed/app/manifests/" + d.String()
	if resp := e.get(http.MethodGet, path); resp.StatusCode != http.StatusOK {
		t.Fatalf("before expiry: status %d", resp.StatusCode)
	}
	if resp := e.get(http.MethodGet, path); resp.StatusCode != http.StatusOK || e.lastDecision(d.String()).Decision != "breakglass" {
		t.Fatalf("before expiry, again: status %d, %+v", resp.StatusCode, e.lastDecision(d.String()))
	}
	e.clock.Advance(10*time.Second + time.Millisecond) // the proxy's clock passes the expiry
	expectError(t, e.get(http.MethodGet, path), http.StatusForbidden, "DENIED")
	if rec := e.lastDecision(d.String()); rec.Decision != "deny" || rec.Cached {
		t.Errorf("after expiry: %+v, want a fresh deny", rec)
	}
}

func TestEnvironmentsByAddressRange(t *testing.T) {
	policyFor := func(cidr string) string {
		return "environments:\n  - name: local\n    clients: [{cidr: " + cidr + "}]\n" + strings.Replace(policyYAML, "  rules:\n",
			"  rules:\n    - name: local-open\n      images: [\"lab/env/**\"]\n      environments: [local]\n      action: allow\n", 1)
	}
	tests := []struct {
		name         string
		cidr         string
		wantStatus   int
		wantRule     string
		wantEnv      string
		wantDecision string
	}{
		{"a client in the range meets the rule for its environment", "127.0.0.0/8", http.StatusOK, "local-open", "local", "allow"},
		{"a client of no environment meets only rules without environments", "10.0.0.0/8", http.StatusForbidden, "signed", "", "deny"},
	}
	e := newEnv(t)
	d := e.push("env/app:v1") // unsigned
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e.reload(policyFor(tt.cidr)) // a new generation: the other case's cached verdict is not used
			resp := e.get(http.MethodGet, "/v2/lab/env/app/manifests/v1")
			if resp.StatusCode != tt.wantStatus {
				t.Errorf("status %d, want %d", resp.StatusCode, tt.wantStatus)
			}
			rec := e.lastDecision(d.String())
			if rec.Decision != tt.wantDecision || rec.Rule != tt.wantRule || rec.Client.Environment != tt.wantEnv || rec.Cached {
				t.Errorf("decision %+v, want %s by rule %s for environment %q, not from the cache", rec, tt.wantDecision, tt.wantRule, tt.wantEnv)
			}
		})
	}
}

// scrape reads the metrics of e's proxy.
func scrape(t *testing.T, h http.Handler) map[string]*dto.MetricFamily {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(rec.Body)
	if err != nil {
		t.Fatalf("/metrics is not the Prometheus text format: %v", err)
	}
	return fams
}

// value is the value of the series of name with exactly these labels (a
// histogram's sample count), and whether it exists.
func value(fams map[string]*dto.MetricFamily, name string, labels ...string) (float64, bool) {
	f := fams[name]
	if f == nil {
		return 0, false
	}
next:
	for _, m := range f.GetMetric() {
		if len(m.GetLabel())*2 != len(labels) {
			continue
		}
		for i, l := range m.GetLabel() {
			if l.GetName() != labels[2*i] || l.GetValue() != labels[2*i+1] {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			return m.GetCounter().GetValue(), true
		case m.Gauge != nil:
			return m.GetGauge().GetValue(), true
		case m.Histogram != nil:
			return float64(m.GetHistogram().GetSampleCount()), true
		}
	}
	return 0, false
}

func TestMetricsCountRequestsDecisionsCacheAndUpstreamErrors(t *testing.T) {
	e := newEnv(t)
	signed := e.push("signed/app:v1")
	e.push("signed/app:v2") // unsigned
	e.signTag("signed/app", "ci", signed, signed)
	e.push("signed/broken:v1")
	fail := func(w http.ResponseWriter, r *http.Request) bool {
		if r.URL.Path == "/v2/signed/broken/manifests/v1" {
			http.Error(w, "boom", http.StatusInternalServerError)
			return true
		}
		return false
	}
	e.front.Store(&fail)
	for _, c := range []struct {
		path   string
		status int
	}{
		{"/v2/lab/signed/app/manifests/v1", 200},                 // verified: a miss
		{"/v2/lab/signed/app/manifests/" + signed.String(), 200}, // from the cache
		{"/v2/lab/signed/app/manifests/v2", 403},                 // verified: a miss
		{"/v2/lab/signed/broken/manifests/v1", 503},              // upstream fails
		{"/v2/lab/signed/app/blobs/sha256:" + strings.Repeat("0", 64), 404},
	} {
		if resp := e.get(http.MethodGet, c.path); resp.StatusCode != c.status {
			t.Fatalf("GET %s: %d, want %d", c.path, resp.StatusCode, c.status)
		}
	}
	fams := scrape(t, e.metrics.Handler())
	for _, c := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"authz_proxy_requests_total", []string{"code", "200", "kind", "manifests", "upstream", "lab"}, 2},
		{"authz_proxy_requests_total", []string{"code", "403", "kind", "manifests", "upstream", "lab"}, 1},
		{"authz_proxy_requests_total", []string{"code", "503", "kind", "manifests", "upstream", "lab"}, 1},
		{"authz_proxy_requests_total", []string{"code", "404", "kind", "blobs", "upstream", "lab"}, 1},
		{"authz_proxy_decisions_total", []string{"decision", "allow", "environment", "", "rule", "signed", "upstream", "lab"}, 2},
		{"authz_proxy_decisions_total", []string{"decision", "deny", "environment", "", "rule", "signed", "upstream", "lab"}, 1},
		{"authz_proxy_decisions_total", []string{"decision", "error", "environment", "", "rule", "", "upstream", "lab"}, 1},
		{"authz_proxy_cache_hits_total", nil, 1},
		{"authz_proxy_cache_misses_total", nil, 2},
		{"authz_proxy_cache_entries", nil, 2},
		{"authz_proxy_cache_evictions_total", nil, 0},
		{"authz_proxy_verification_duration_seconds", []string{"upstream", "lab"}, 2},
		{"authz_proxy_upstream_request_duration_seconds", []string{"op", "manifest", "upstream", "lab"}, 3}, // the cached pull by digest is served from held bytes
		// the tag schemes twice, the referrers once (for the unsigned
		// image); none for the broken image, pulled by tag (by digest, its
		// signatures would be read while its manifest is asked for)
		{"authz_proxy_upstream_request_duration_seconds", []string{"op", "evidence", "upstream", "lab"}, 3},
		{"authz_proxy_upstream_request_duration_seconds", []string{"op", "blob", "upstream", "lab"}, 1},
		{"authz_proxy_upstream_errors_total", []string{"kind", "server_error", "upstream", "lab"}, 1},
	} {
		got, ok := value(fams, c.name, c.labels...)
		if !ok || got != c.want {
			t.Errorf("%s%v = %v (present: %v), want %v", c.name, c.labels, got, ok, c.want)
		}
	}
}
