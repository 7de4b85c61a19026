package metrics_test

import (
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/authz-proxy/authz-proxy/internal/audit"
	"github.com/authz-proxy/authz-proxy/internal/budget"
	"github.com/authz-proxy/authz-proxy/internal/metrics"
)

func get(t *testing.T, h http.Handler, path string) (int, string) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
	body, _ := io.ReadAll(rec.Result().Body)
	return rec.Code, string(body)
}

func TestReadyzFollowsSetReadyAndHealthzIsAlwaysUp(t *testing.T) {
	m := metrics.New()
	h := m.Handler()
	tests := []struct {
		name       string
		ready      bool
		wantReadyz int
	}{
		{"before the listener is up", false, http.StatusServiceUnavailable},
		{"while serving", true, http.StatusOK},
		{"once shutdown began", false, http.StatusServiceUnavailable},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m.SetReady(tt.ready)
			if code, _ := get(t, h, "/readyz"); code != tt.wantReadyz {
				t.Errorf("/readyz: %d, want %d", code, tt.wantReadyz)
			}
			if code, _ := get(t, h, "/healthz"); code != http.StatusOK {
				t.Errorf("/healthz: %d", code)
			}
		})
	}
}

func TestReadyzStaysReadyAndSaysWhatANoteSays(t *testing.T) {
	m := metrics.New()
	m.SetReady(true)
	m.ReadyNote("decision log", "started after a stop without its shutdown checkpoint: 2 line(s) follow its last checkpoint")
	if code, body := get(t, m.Handler(), "/readyz"); code != http.StatusOK || body != "ready\ndecision log: started after a stop without its shutdown checkpoint: 2 line(s) follow its last checkpoint\n" {
		t.Errorf("/readyz: %d %q; want ready, then the note", code, body)
	}
}

func TestReadyzSaysWhichCheckFailsAndWhy(t *testing.T) {
	m := metrics.New()
	m.SetReady(true)
	var failing error
	m.AddReadinessCheck("decision log", func() error { return failing })
	m.AddReadinessCheck("trust root", func() error { return nil })
	if code, body := get(t, m.Handler(), "/readyz"); code != http.StatusOK || body != "ready\n" {
		t.Errorf("/readyz with every check passing: %d %q", code, body)
	}
	failing = errors.New("the decision log (/var/log/d.jsonl) cannot be written since 2026-12-07T08:00:00Z, 3 line(s) lost: write: no space left on device")
	want := "not ready: decision log: the decision log (/var/log/d.jsonl) cannot be written since 2026-12-07T08:00:00Z, 3 line(s) lost: write: no space left on device\n"
	if code, body := get(t, m.Handler(), "/readyz"); code != http.StatusServiceUnavailable || body != want {
		t.Errorf("/readyz with a failing check: %d %q, want 503 %q", code, body, want)
	}
	m.SetReady(false)
	if code, body := get(t, m.Handler(), "/readyz"); code != http.StatusServiceUnavailable || body != "not ready\n" {
		t.Errorf("/readyz once shutdown began: %d %q", code, body)
	}
}

func TestAFailedReloadKeepsTheGenerationAndClearsLastReloadSuccessful(t *testing.T) {
	m := metrics.New()
	m.ConfigLoaded("aaaa", false)
	m.ConfigLoaded("bbbb", true)
	m.ReloadFailed()
	_, body := get(t, m.Handler(), "/metrics")
	for _, want := range []string{
		`authz_proxy_config_info{generation="bbbb"} 1`,
		`authz_proxy_config_last_reload_successful 0`,
		`authz_proxy_config_reloads_total{result="failure"} 1`,
		`authz_proxy_config_reloads_total{result="success"} 1`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	if strings.Contains(body, `generation="aaaa"`) {
		t.Error("the generation replaced is still exported")
	}
}

// TestEachEventShowsInMetricsAsAnOperatorQueriesIt records each event the
// proxy reports and reads /metrics as Prometheus scrapes it: the series
// and value a dashboard or an alert of deploy/monitoring queries. Each
// event is also given to a nil *Metrics, which is how the proxy runs
// without metrics.addr: it records nothing and carries on.
func TestEachEventShowsInMetricsAsAnOperatorQueriesIt(t *testing.T) {
	checkpoint := time.Unix(1767225600, 0)
	tests := []struct {
		name   string
		record func(m *metrics.Metrics)
		want   []string
	}{
		{"an answered request, by upstream, kind and status", func(m *metrics.Metrics) { m.Request("lab", "manifests", 403) },
			[]string{`authz_proxy_requests_total{code="403",kind="manifests",upstream="lab"} 1`}},
		{"a decision, by upstream, environment, rule and decision", func(m *metrics.Metrics) {
			m.Decision("lab", "prod", "signed", "deny")
			m.Decision("lab", "prod", "signed", "deny")
		}, []string{`authz_proxy_decisions_total{decision="deny",environment="prod",rule="signed",upstream="lab"} 2`}},
		{"a verification's duration", func(m *metrics.Metrics) { m.Verification("lab", 250*time.Millisecond) },
			[]string{`authz_proxy_verification_duration_seconds_count{upstream="lab"} 1`, `authz_proxy_verification_duration_seconds_sum{upstream="lab"} 0.25`}},
		{"an upstream call, and its error by kind", func(m *metrics.Metrics) {
			m.Upstream("lab", "manifest", 2*time.Second, "timeout")
			m.Upstream("lab", "manifest", time.Second, "")
		}, []string{
			`authz_proxy_upstream_request_duration_seconds_count{op="manifest",upstream="lab"} 2`,
			`authz_proxy_upstream_request_duration_seconds_sum{op="manifest",upstream="lab"} 3`,
			`authz_proxy_upstream_errors_total{kind="timeout",upstream="lab"} 1`,
		}},
		{"verdict-cache hits and misses", func(m *metrics.Metrics) {
			m.Cache(true)
			m.Cache(true)
			m.Cache(false)
		}, []string{`authz_proxy_cache_hits_total 2`, `authz_proxy_cache_misses_total 1`}},
		{"the verdict cache's size and evictions, read at the scrape", func(m *metrics.Metrics) {
			m.WatchCache(func() int { return 3 }, func() uint64 { return 7 })
		}, []string{`authz_proxy_cache_entries 3`, `authz_proxy_cache_evictions_total 7`}},
		{"the manifest bytes in flight and their limit", func(m *metrics.Metrics) {
			m.WatchBudget(func() budget.Snapshot { return budget.Snapshot{InUse: 1024, Max: 128 << 20} })
		}, []string{`authz_proxy_manifest_bytes_in_flight 1024`, `authz_proxy_manifest_bytes_in_flight_limit 1.34217728e+08`}},
		{"a recovered panic", func(m *metrics.Metrics) { m.Panic() }, []string{`authz_proxy_panics_total 1`}},
		{"a decision-log line that could not be written", func(m *metrics.Metrics) { m.AuditWrite(false) },
			[]string{`authz_proxy_audit_write_errors_total 1`, `authz_proxy_audit_last_write_successful 0`}},
		{"the decision log written again", func(m *metrics.Metrics) {
			m.AuditWrite(false)
			m.AuditWrite(true)
		}, []string{`authz_proxy_audit_write_errors_total 1`, `authz_proxy_audit_last_write_successful 1`}},
		{"the decision log's queue as shares, watched after lines were written", func(m *metrics.Metrics) {
			m.AuditWrite(true)
			m.WatchAuditQueue(func() audit.QueueStats {
				return audit.QueueStats{Queued: 100, Size: 8192, Most: 1024, PerClient: 1024, Saturated: 1}
			})
		}, []string{
			`authz_proxy_share_in_use{bound="decision_log_lines",party="all",upstream=""} 100`,
			`authz_proxy_share_limit{bound="decision_log_lines",party="client",upstream=""} 1024`,
			`authz_proxy_share_saturated{bound="decision_log_lines",party="client",upstream=""} 1`,
		}},
		{"a checkpoint, when it was written and how often they are due", func(m *metrics.Metrics) {
			m.AuditCheckpointInterval(time.Hour)
			m.AuditCheckpoint(checkpoint)
		}, []string{`authz_proxy_audit_checkpoints_total 1`, `authz_proxy_audit_last_checkpoint_timestamp_seconds 1.7672256e+09`, `authz_proxy_audit_checkpoint_interval_seconds 3600`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var off *metrics.Metrics
			tt.record(off)
			m := metrics.New()
			tt.record(m)
			code, body := get(t, m.Handler(), "/metrics")
			if code != http.StatusOK {
				t.Fatalf("/metrics: %d", code)
			}
			lines := strings.Split(body, "\n")
			for _, want := range tt.want {
				if !slices.Contains(lines, want) {
					t.Errorf("/metrics lacks the line %s", want)
				}
			}
		})
	}
}

func TestReadyzNotesTrustRootsThatNeedAttentionAndStaysReady(t *testing.T) {
	since := time.Date(2026, 12, 1, 8, 0, 0, 0, time.UTC)
	for _, tt := range []struct {
		name string
		root metrics.TrustRoot
		want string
	}{
		{"a root in good health: no line", metrics.TrustRoot{Name: "public-good", Kind: "tuf", Usable: true}, ""},
		{"withdrawn", metrics.TrustRoot{Name: "public-good", Withdrawn: "its TUF metadata expired"}, "trust root public-good: WITHDRAWN: its TUF metadata expired\n"},
		{"expiring", metrics.TrustRoot{Name: "github", Usable: true, Expiring: "its TUF metadata (timestamp.json) expires at …"}, "trust root github: expiring: its TUF metadata (timestamp.json) expires at …\n"},
		{"failing to refresh", metrics.TrustRoot{Name: "lab", Usable: true, Mirror: "https://tuf.example", Failures: 3, FailingSince: since, LastError: "connection refused", Refreshed: since.Add(-time.Hour), Expires: since.Add(72 * time.Hour)},
			"trust root lab: refreshing from https://tuf.example fails since 2026-12-01T08:00:00Z (3 in a row): connection refused; the root verified at 2026-12-01T07:00:00Z stays, valid until 2026-12-04T08:00:00Z\n"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			m := metrics.New()
			m.SetReady(true)
			m.WatchTrust(func() []metrics.TrustRoot { return []metrics.TrustRoot{tt.root} })
			if code, body := get(t, m.Handler(), "/readyz"); code != http.StatusOK || body != "ready\n"+tt.want {
				t.Errorf("/readyz: %d %q, want 200 %q", code, body, "ready\n"+tt.want)
			}
		})
	}
}
