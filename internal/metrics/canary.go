package metrics

import (
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// The canary's checks, as the values of its check label.
const (
	CheckMirrorConfigured = "mirror_configured"
	CheckAllowedServed    = "allowed_served"
	CheckDeniedRefused    = "denied_refused"
)

// Canary is the instrumentation of `authz-proxy canary` on one node: its
// own registry, served by its own listener (the node agent's, not the
// proxy's).
type Canary struct {
	reg      *prometheus.Registry
	enforced *prometheus.GaugeVec
	checks   *prometheus.GaugeVec
	lastRun  *prometheus.GaugeVec
}

// NewCanary returns the canary's collectors, registered.
func NewCanary() *Canary {
	c := &Canary{
		reg: prometheus.NewRegistry(),
		enforced: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: namespace, Subsystem: "canary", Name: "enforced",
			Help: "1 when the node's runtime, asked to pull an image the policy denies, did not get it; 0 when it did (or its files do not send the registry to the proxy alone).",
		}, []string{"node"}),
		checks: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: namespace, Subsystem: "canary", Name: "check",
			Help: "1 when the canary's check passed on the node at its last run: mirror_configured, allowed_served, denied_refused (with 403).",
		}, []string{"node", "check"}),
		lastRun: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: namespace, Subsystem: "canary", Name: "last_run_timestamp_seconds",
			Help: "When the canary last ran on the node.",
		}, []string{"node"}),
	}
	c.reg.MustRegister(c.enforced, c.checks, c.lastRun)
	return c
}

// Result records one run on node: whether enforcement held, and each
// check that was made.
func (c *Canary) Result(node string, enforced bool, checks map[string]bool, at time.Time) {
	c.enforced.WithLabelValues(node).Set(b2f(enforced))
	for check, ok := range checks {
		c.checks.WithLabelValues(node, check).Set(b2f(ok))
	}
	c.lastRun.WithLabelValues(node).Set(float64(at.Unix()))
}

// Handler serves /metrics and /healthz.
func (c *Canary) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(c.reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte("ok\n"))
	})
	return mux
}

// b2f is a gauge's value for b: 1 or 0.
func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
