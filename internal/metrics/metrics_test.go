package metrics_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

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

func TestANilMetricsRecordsNothingAndDoesNotPanic(t *testing.T) {
	var m *metrics.Metrics
	m.Request("lab", "manifests", 200)
	m.Decision("lab", "", "r", "allow")
	m.Verification("lab", time.Millisecond)
	m.Upstream("lab", "manifest", time.Millisecond, "timeout")
	m.Cache(true)
	m.WatchCache(func() int { return 0 }, func() uint64 { return 0 })
	m.ConfigLoaded("g", true)
	m.ReloadFailed()
	m.SetReady(true)
}
