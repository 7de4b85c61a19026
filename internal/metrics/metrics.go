// Package metrics is authz-proxy's Prometheus instrumentation and its
// operational endpoints: /metrics, /healthz (the process is up) and /readyz
// (a configuration is loaded, the proxy listener is up and every readiness
// check passes). Every method is
// safe on a nil *Metrics, which records nothing, so that code paths need no
// checks.
//
// Label values come from the configuration (upstream, rule and environment
// names) or from small fixed sets, never from what a client sent, so the
// number of series stays bounded.
package metrics

import (
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/authz-proxy/authz-proxy/internal/audit"
	"github.com/authz-proxy/authz-proxy/internal/budget"
	"github.com/authz-proxy/authz-proxy/internal/store"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

const namespace = "authz_proxy"

// Metrics holds every collector of one proxy process.
type Metrics struct {
	reg            *prometheus.Registry
	requests       *prometheus.CounterVec
	decisions      *prometheus.CounterVec
	verification   *prometheus.HistogramVec
	upstream       *prometheus.HistogramVec
	upstreamErrors *prometheus.CounterVec
	cacheHits      prometheus.Counter
	cacheMisses    prometheus.Counter
	panics         prometheus.Counter
	configInfo     *prometheus.GaugeVec
	reloads        *prometheus.CounterVec
	lastReloadOK   prometheus.Gauge
	lastReloadTime prometheus.Gauge
	auditErrors    prometheus.Counter
	auditWaits     prometheus.Counter
	auditOK        prometheus.Gauge
	checkpoints    prometheus.Counter
	lastCheckpoint prometheus.Gauge
	checkpointsDue prometheus.Gauge
	manifests      *prometheus.CounterVec
	staleTags      *prometheus.CounterVec
	evidence       *prometheus.CounterVec
	abandoned      *prometheus.CounterVec
	rateLimited    prometheus.Counter
	revalidations  *prometheus.CounterVec
	revalidated    prometheus.Gauge
	ready          atomic.Bool

	mu     sync.Mutex
	checks []check
	notes  []func() []string
	shares *sharesCollector
}

// check is a readiness condition: /readyz answers 503 while f returns an
// error.
type check struct {
	name string
	f    func() error
}

// Reload results, the values of the result label of
// authz_proxy_config_reloads_total.
const (
	ReloadSuccess = "success"
	ReloadFailure = "failure"
)

// New returns the collectors, registered with a registry of their own
// together with the Go runtime and process collectors.
func New() *Metrics {
	latency := []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30}
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "requests_total",
			Help: "HTTP requests answered, by upstream, kind of request (base, manifests, blobs, tags, referrers, other) and status code.",
		}, []string{"upstream", "kind", "code"}),
		decisions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "decisions_total",
			Help: "Manifest decisions, one per decision-log record, by upstream, client environment, rule and decision (allow, deny, dryrun-deny, breakglass, error).",
		}, []string{"upstream", "environment", "rule", "decision"}),
		verification: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: namespace, Name: "verification_duration_seconds",
			Help:    "Time to judge one digest on a verdict-cache miss: finding and verifying its signatures.",
			Buckets: latency,
		}, []string{"upstream"}),
		upstream: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: namespace, Name: "upstream_request_duration_seconds",
			Help:    "Time an upstream took to answer, by operation: manifest (whole manifest read), head (a manifest HEAD, to learn a tag's digest), blob, tags and referrers (response headers), evidence (the signature and attestation artifacts of a digest in one place: the tag schemes, then the referrers when those do not suffice).",
			Buckets: latency,
		}, []string{"upstream", "op"}),
		upstreamErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "upstream_errors_total",
			Help: "Failed upstream calls by kind: connection, timeout, auth, rate_limited, unauthorized, server_error, unexpected_status, too_large, digest_mismatch, invalid_manifest.",
		}, []string{"upstream", "kind"}),
		cacheHits: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: namespace, Subsystem: "cache", Name: "hits_total",
			Help: "Manifest decisions whose requirement outcomes all came from the cache: nothing was read or verified.",
		}),
		cacheMisses: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: namespace, Subsystem: "cache", Name: "misses_total",
			Help: "Manifest decisions that needed a verification (or waited for one already running).",
		}),
		panics: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: namespace, Name: "panics_total",
			Help: "Internal errors (panics) recovered while serving a request or verifying: that request failed closed with 503, the process went on.",
		}),
		configInfo: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: namespace, Subsystem: "config", Name: "info",
			Help: "1 for the configuration generation in force (a hash of the configuration and the files it names).",
		}, []string{"generation"}),
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Subsystem: "config", Name: "reloads_total",
			Help: "Configuration reloads attempted (SIGHUP or a changed file), by result.",
		}, []string{"result"}),
		lastReloadOK: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: namespace, Subsystem: "config", Name: "last_reload_successful",
			Help: "1 when the last configuration load or reload succeeded, 0 when it failed and the previous configuration stayed in force.",
		}),
		lastReloadTime: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: namespace, Subsystem: "config", Name: "last_reload_success_timestamp_seconds",
			Help: "When the configuration in force was loaded, in Unix seconds.",
		}),
		auditErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: namespace, Subsystem: "audit", Name: "write_errors_total",
			Help: "Decision-log lines (decision records and checkpoints) that could not be written to audit.file, or to standard output without one.",
		}),
		auditWaits: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: namespace, Subsystem: "audit", Name: "queue_full_total",
			Help: "Requests that waited for room in the decision log's queue, or in their client's share of it (an eighth; the disk not keeping up); no line is dropped.",
		}),
		auditOK: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: namespace, Subsystem: "audit", Name: "last_write_successful",
			Help: "1 when the last decision-log line was written, 0 while the decision log cannot be written.",
		}),
		checkpoints: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: namespace, Subsystem: "audit", Name: "checkpoints_total",
			Help: "Checkpoint lines written to the decision log (signed when audit.checkpoint is set).",
		}),
		lastCheckpoint: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: namespace, Subsystem: "audit", Name: "last_checkpoint_timestamp_seconds",
			Help: "When the last checkpoint was written to the decision log, in Unix seconds.",
		}),
		checkpointsDue: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: namespace, Subsystem: "audit", Name: "checkpoint_interval_seconds",
			Help: "audit.checkpoint.every: how often a signed checkpoint is due, in seconds; 0 without a checkpoint key.",
		}),
		manifests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "manifests_total",
			Help: "Manifests judged, by upstream and where their bytes came from: upstream (fetched for the request), store (the proxy's verified copy; the tag resolved by a HEAD, or an immutable tag by its last resolution), stale (the upstream failed; the tag's last known digest, within staleIfError).",
		}, []string{"upstream", "source"}),
		staleTags: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "stale_tags_total",
			Help: "Tags served from their last known digest because the upstream failed (connection, timeout, 5xx, 429), within the upstream's staleIfError.",
		}, []string{"upstream"}),
		evidence: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "evidence_from_store_total",
			Help: "Verifications whose signatures and attestations were read from the store, as the upstream gave them before, because the upstream failed; they were verified again under the policy in force.",
		}, []string{"upstream"}),
		abandoned: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "sends_abandoned_total",
			Help: "Responses let go because their client read nothing for limits.sendTimeout (its connection closed, what was held for it released), by kind of request.",
		}, []string{"kind"}),
		rateLimited: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: namespace, Name: "rate_limited_total",
			Help: "Requests answered 429 because their client sent more than limits.clientRate.",
		}),
		revalidations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "revalidations_total",
			Help: "Digests allowed within revalidate.window judged again under the policy in force, by upstream and result: allowed (still), revoked (now denied: a decision-log line \"revoked\"), error (could not be judged again).",
		}, []string{"upstream", "result"}),
		revalidated: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: namespace, Name: "revalidation_last_run_timestamp_seconds",
			Help: "When the last re-validation round ended, in Unix seconds; 0 before the first (or without revalidate).",
		}),
	}
	m.shares = &sharesCollector{mu: &m.mu}
	m.auditOK.Set(1)
	m.reg.MustRegister(m.requests, m.decisions, m.verification, m.upstream, m.upstreamErrors,
		m.cacheHits, m.cacheMisses, m.panics, m.configInfo, m.reloads, m.lastReloadOK, m.lastReloadTime,
		m.auditErrors, m.auditWaits, m.auditOK, m.checkpoints, m.lastCheckpoint, m.checkpointsDue,
		m.manifests, m.staleTags, m.evidence, m.abandoned, m.rateLimited, m.shares, m.revalidations, m.revalidated,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// AuditWrite counts one decision-log line written (ok) or not.
func (m *Metrics) AuditWrite(ok bool) {
	if m == nil {
		return
	}
	if ok {
		m.auditOK.Set(1)
		return
	}
	m.auditOK.Set(0)
	m.auditErrors.Inc()
}

// AuditCheckpointInterval records how often signed checkpoints are due (0:
// never), for alerting when they stop.
func (m *Metrics) AuditCheckpointInterval(d time.Duration) {
	if m == nil {
		return
	}
	m.checkpointsDue.Set(d.Seconds())
}

// AuditQueueFull counts a request that waited for room in the decision
// log's queue.
func (m *Metrics) AuditQueueFull() {
	if m == nil {
		return
	}
	m.auditWaits.Inc()
}

// AuditCheckpoint counts one checkpoint written to the decision log.
func (m *Metrics) AuditCheckpoint(at time.Time) {
	if m == nil {
		return
	}
	m.checkpoints.Inc()
	m.lastCheckpoint.Set(float64(at.UnixNano()) / 1e9)
}

// Revalidation results, the values of the result label of
// authz_proxy_revalidations_total.
const (
	RevalidationAllowed = "allowed"
	RevalidationRevoked = "revoked"
	RevalidationError   = "error"
)

// Revalidated counts one digest judged again by re-validation, with its
// result (RevalidationAllowed, RevalidationRevoked, RevalidationError).
func (m *Metrics) Revalidated(upstream, result string) {
	if m == nil {
		return
	}
	m.revalidations.WithLabelValues(upstream, result).Inc()
}

// RevalidationDone records the end of a re-validation round.
func (m *Metrics) RevalidationDone(at time.Time) {
	if m == nil {
		return
	}
	m.revalidated.Set(float64(at.UnixNano()) / 1e9)
}

// Request counts one answered HTTP request. upstream is "" when the
// request named none.
func (m *Metrics) Request(upstream, kind string, code int) {
	if m == nil {
		return
	}
	m.requests.WithLabelValues(upstream, kind, strconv.Itoa(code)).Inc()
}

// Decision counts one manifest decision.
func (m *Metrics) Decision(upstream, environment, rule, decision string) {
	if m == nil {
		return
	}
	m.decisions.WithLabelValues(upstream, environment, rule, decision).Inc()
}

// Verification observes the time one digest took to judge.
func (m *Metrics) Verification(upstream string, d time.Duration) {
	if m == nil {
		return
	}
	m.verification.WithLabelValues(upstream).Observe(d.Seconds())
}

// Upstream observes the time one upstream call took, and counts it as an
// error of errKind unless errKind is "".
func (m *Metrics) Upstream(upstream, op string, d time.Duration, errKind string) {
	if m == nil {
		return
	}
	m.upstream.WithLabelValues(upstream, op).Observe(d.Seconds())
	if errKind != "" {
		m.upstreamErrors.WithLabelValues(upstream, errKind).Inc()
	}
}

// Manifest counts one manifest judged, by where its bytes came from
// (audit.SourceUpstream, SourceStore or SourceStale).
func (m *Metrics) Manifest(upstream, source string) {
	if m == nil {
		return
	}
	m.manifests.WithLabelValues(upstream, source).Inc()
}

// StaleTag counts one tag served from its last known digest because the
// upstream failed.
func (m *Metrics) StaleTag(upstream string) {
	if m == nil {
		return
	}
	m.staleTags.WithLabelValues(upstream).Inc()
}

// EvidenceFromStore counts one verification whose evidence was read from
// the store because the upstream failed.
func (m *Metrics) EvidenceFromStore(upstream string) {
	if m == nil {
		return
	}
	m.evidence.WithLabelValues(upstream).Inc()
}

// Panic counts one recovered panic.
func (m *Metrics) Panic() {
	if m == nil {
		return
	}
	m.panics.Inc()
}

// WatchBudget exports the manifest budget read from snapshot at each
// scrape: the bytes held by requests in flight, the bound, and the shares
// (the whole, each upstream's, the clients'). Call it once.
func (m *Metrics) WatchBudget(snapshot func() budget.Snapshot) {
	if m == nil {
		return
	}
	m.reg.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Namespace: namespace, Name: "manifest_bytes_in_flight",
			Help: "Manifest and signature bytes held by requests in flight (read, being judged or being written).",
		}, func() float64 { return float64(snapshot().InUse) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Namespace: namespace, Name: "manifest_bytes_in_flight_limit",
			Help: "limits.maxManifestBytesInFlight: past it requests are refused with 503 and Retry-After.",
		}, func() float64 { return float64(snapshot().Max) }),
	)
	m.WatchShares(func() []Share { return budgetShares(snapshot()) })
}

// budgetShares are the manifest budget's shares as metrics read them: the
// whole, each upstream's, and the clients' (not named one by one).
func budgetShares(s budget.Snapshot) []Share {
	const bound = "manifest_bytes"
	shares := []Share{
		{Bound: bound, Party: "all", InUse: float64(s.InUse), Limit: float64(s.Max), Refused: s.Refused["budget"]},
		{Bound: bound, Party: "client", InUse: float64(s.MaxClient), Limit: float64(s.ClientShare), Refused: s.Refused["client"], Saturated: s.ClientsAtShare},
	}
	names := map[string]bool{}
	for name := range s.Upstreams {
		names[name] = true
	}
	for name := range s.RefusedUpstream {
		names[name] = true
	}
	for name := range names {
		n, saturated := s.Upstreams[name], 0
		if s.Saturated(n) {
			saturated = 1
		}
		shares = append(shares, Share{Bound: bound, Party: "upstream", Upstream: name, InUse: float64(n), Limit: float64(s.UpstreamShare), Refused: s.RefusedUpstream[name], Saturated: saturated})
	}
	return shares
}

// SendAbandoned counts a response of kind let go at limits.sendTimeout.
func (m *Metrics) SendAbandoned(kind string) {
	if m == nil {
		return
	}
	m.abandoned.WithLabelValues(kind).Inc()
}

// RateLimited counts a request refused for its client's rate.
func (m *Metrics) RateLimited() {
	if m == nil {
		return
	}
	m.rateLimited.Inc()
}

// Share is one party's share of a bound, as a scrape reads it.
type Share struct {
	// Bound is what is shared: manifest_bytes, fills, connections,
	// decision_log_lines.
	Bound string
	// Party is upstream or client, or all for the bound as a whole.
	Party string
	// Upstream names the upstream of party upstream, else "".
	Upstream string
	// InUse is what the party holds (for clients: the most one holds),
	// Limit its share.
	InUse, Limit float64
	// Refused counts requests refused by this share since start.
	Refused uint64
	// Saturated is how many parties hold their whole share now (0 or 1
	// for an upstream; for clients, which are not named, how many).
	Saturated int
}

// WatchShares exports, at each scrape, the shares that shares returns,
// beside those of the other bounds watched.
func (m *Metrics) WatchShares(shares func() []Share) {
	if m == nil {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.shares.sources = append(m.shares.sources, shares)
}

// sharesCollector exports the shares of every bound watched.
type sharesCollector struct {
	mu      *sync.Mutex
	sources []func() []Share
}

var (
	shareLabels    = []string{"bound", "party", "upstream"}
	shareInUse     = prometheus.NewDesc(namespace+"_share_in_use", "What one party holds of a shared bound (manifest_bytes in bytes, fills, connections); for clients, the most one client holds.", shareLabels, nil)
	shareLimit     = prometheus.NewDesc(namespace+"_share_limit", "One party's share of a bound (limits.maxManifestBytesPerUpstream and PerClient, maxFillsPerUpstream, maxConnectionsPerClient), or the bound itself for party all.", shareLabels, nil)
	shareRefused   = prometheus.NewDesc(namespace+"_share_refused_total", "Requests refused because a party held its share, or the whole bound was taken (party all).", shareLabels, nil)
	shareSaturated = prometheus.NewDesc(namespace+"_share_saturated", "Parties holding their whole share now: 1 or 0 for an upstream, how many for clients.", shareLabels, nil)
)

func (c *sharesCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{shareInUse, shareLimit, shareRefused, shareSaturated} {
		ch <- d
	}
}

func (c *sharesCollector) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	sources := c.sources
	c.mu.Unlock()
	var shares []Share
	for _, f := range sources {
		shares = append(shares, f()...)
	}
	for _, s := range shares {
		l := []string{s.Bound, s.Party, s.Upstream}
		ch <- prometheus.MustNewConstMetric(shareInUse, prometheus.GaugeValue, s.InUse, l...)
		ch <- prometheus.MustNewConstMetric(shareLimit, prometheus.GaugeValue, s.Limit, l...)
		ch <- prometheus.MustNewConstMetric(shareRefused, prometheus.CounterValue, float64(s.Refused), l...)
		ch <- prometheus.MustNewConstMetric(shareSaturated, prometheus.GaugeValue, float64(s.Saturated), l...)
	}
}

// Cache counts one decision as a verdict-cache hit or miss.
func (m *Metrics) Cache(hit bool) {
	if m == nil {
		return
	}
	if hit {
		m.cacheHits.Inc()
	} else {
		m.cacheMisses.Inc()
	}
}

// WatchCache exports the verdict cache's size and evictions, read from the
// functions at each scrape. Call it once.
func (m *Metrics) WatchCache(entries func() int, evictions func() uint64) {
	if m == nil {
		return
	}
	m.reg.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Namespace: namespace, Subsystem: "cache", Name: "entries",
			Help: "Requirement outcomes (verified signatures and attestations per digest) in the cache, expired ones included until they are looked up or evicted.",
		}, func() float64 { return float64(entries()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Namespace: namespace, Subsystem: "cache", Name: "evictions_total",
			Help: "Requirement outcomes evicted from the cache to make room.",
		}, func() float64 { return float64(evictions()) }),
	)
}

// ConfigLoaded records a configuration put in force, at start or by a
// reload (reload true).
func (m *Metrics) ConfigLoaded(generation string, reload bool) {
	if m == nil {
		return
	}
	m.configInfo.Reset()
	m.configInfo.WithLabelValues(generation).Set(1)
	m.lastReloadOK.Set(1)
	m.lastReloadTime.SetToCurrentTime()
	if reload {
		m.reloads.WithLabelValues(ReloadSuccess).Inc()
	}
}

// ReloadFailed records a reload that was refused: the configuration in
// force stays.
func (m *Metrics) ReloadFailed() {
	if m == nil {
		return
	}
	m.lastReloadOK.Set(0)
	m.reloads.WithLabelValues(ReloadFailure).Inc()
}

// SetReady sets what /readyz answers: ready while the proxy listener
// serves, not ready before and once shutdown began.
func (m *Metrics) SetReady(ready bool) {
	if m == nil {
		return
	}
	m.ready.Store(ready)
}

// AddReadinessCheck makes /readyz answer 503, naming the check and its
// error, while f returns an error. /readyz calls f at each probe.
func (m *Metrics) AddReadinessCheck(name string, f func() error) {
	if m == nil {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.checks = append(m.checks, check{name, f})
}

// ReadyNote adds a line that /readyz answers after "ready": what an
// operator should know that does not make the process unready, such as a
// decision log that started after an unclean stop.
func (m *Metrics) ReadyNote(name, note string) {
	if m == nil {
		return
	}
	line := []string{name + ": " + note}
	m.AddReadinessNote(func() []string { return line })
}

// notReady says why the process is not ready, "" when it is.
func (m *Metrics) notReady() string {
	if !m.ready.Load() {
		return "not ready"
	}
	m.mu.Lock()
	checks := m.checks
	m.mu.Unlock()
	var why []string
	for _, c := range checks {
		if err := c.f(); err != nil {
			why = append(why, fmt.Sprintf("%s: %v", c.name, err))
		}
	}
	if len(why) > 0 {
		return "not ready: " + strings.Join(why, "; ")
	}
	return ""
}

// AddReadinessNote adds f's lines to the body of /readyz: what an operator
// should know (an upstream failing) without making the proxy unready.
func (m *Metrics) AddReadinessNote(f func() []string) {
	if m == nil {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.notes = append(m.notes, f)
}

// readyNotes are the lines of the readiness notes now.
func (m *Metrics) readyNotes() string {
	m.mu.Lock()
	notes := m.notes
	m.mu.Unlock()
	var b strings.Builder
	for _, f := range notes {
		for _, line := range f() {
			b.WriteString(line + "\n")
		}
	}
	return b.String()
}

// WatchOutages exports, at each scrape, which upstreams are taken to be
// failing (outages returns their names with when each began).
func (m *Metrics) WatchOutages(outages func() map[string]time.Time) {
	if m == nil {
		return
	}
	m.reg.MustRegister(outageCollector(outages))
	m.AddReadinessNote(func() []string {
		var lines []string
		for name, since := range outages() {
			lines = append(lines, fmt.Sprintf("upstream %s: failing since %s; what the store holds is served, judged again", name, since.UTC().Format(time.RFC3339)))
		}
		slices.Sort(lines)
		return lines
	})
}

type outageCollector func() map[string]time.Time

var outageDesc = prometheus.NewDesc(namespace+"_upstream_outage_since_timestamp_seconds", "When each upstream taken to be failing now began to fail (connection errors, timeouts, 5xx; not a 429), in Unix seconds: the store answers first while it lasts.", []string{"upstream"}, nil)

func (c outageCollector) Describe(ch chan<- *prometheus.Desc) { ch <- outageDesc }

func (c outageCollector) Collect(ch chan<- prometheus.Metric) {
	for name, since := range c() {
		ch <- prometheus.MustNewConstMetric(outageDesc, prometheus.GaugeValue, float64(since.Unix()), name)
	}
}

// Handler serves /metrics, /healthz and /readyz.
func (m *Metrics) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if why := m.notReady(); why != "" {
			if notes := m.readyNotes(); notes != "" {
				why += "\n" + strings.TrimSuffix(notes, "\n")
			}
			http.Error(w, why, http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ready\n" + m.readyNotes()))
	})
	return mux
}

// WatchAuditQueue exports the decision log's queue as shares, read from
// stats at each scrape: the lines queued of the whole, and the most one
// client holds of its share (clients past it wait for their own lines;
// authz_proxy_audit_queue_full_total counts both).
func (m *Metrics) WatchAuditQueue(stats func() audit.QueueStats) {
	m.WatchShares(func() []Share {
		st := stats()
		if st.Size == 0 {
			return nil
		}
		return []Share{
			{Bound: "decision_log_lines", Party: "all", InUse: float64(st.Queued), Limit: float64(st.Size)},
			{Bound: "decision_log_lines", Party: "client", InUse: float64(st.Most), Limit: float64(st.PerClient), Saturated: st.Saturated},
		}
	})
}

// WatchStore exports the content store's counters and size, read from
// stats at each scrape. Call it once.
func (m *Metrics) WatchStore(stats func() store.Stats) {
	if m == nil {
		return
	}
	m.reg.MustRegister(storeCollector(stats))
	m.WatchShares(func() []Share { return fillShares(stats()) })
}

// fillShares are the store's fills in flight as shares: the whole, and
// each upstream's; and the fills' windows as a whole.
func fillShares(st store.Stats) []Share {
	shares := []Share{
		{Bound: "fills", Party: "all", InUse: float64(st.FillsInFlight), Limit: float64(st.MaxFills), Refused: st.FillsRefused},
		{Bound: "fill_window_bytes", Party: "all", InUse: float64(st.WindowBytes), Limit: float64(st.MaxWindowBytes)},
	}
	for up, n := range st.FillsByUpstream {
		saturated := 0
		if n >= st.MaxFillsPerUpstream {
			saturated = 1
		}
		shares = append(shares, Share{Bound: "fills", Party: "upstream", Upstream: up, InUse: float64(n), Limit: float64(st.MaxFillsPerUpstream), Saturated: saturated})
	}
	return shares
}

// storeCollector reads the store's stats once per scrape.
type storeCollector func() store.Stats

func storeDesc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc(prometheus.BuildFQName(namespace, "store", name), help, labels, nil)
}

var (
	storeRequests     = storeDesc("requests_total", "Whole-blob requests by result: hit (answered from the store) or miss (answered by a fill, started or joined).", "result")
	storeBytes        = storeDesc("bytes_total", "Blob bytes by source: read from the store for clients, or fetched from the upstream by fills.", "source")
	storeInFlight     = storeDesc("fills_in_flight", "Fills running: blobs being fetched from the upstream once for all their clients while written to the store.")
	storeFills        = storeDesc("fills_stored_total", "Fills that ended with the blob verified and stored.")
	storeFillErrors   = storeDesc("fill_errors_total", "Fills that went wrong, by reason: upstream (error answer or connection failure), digest (bytes not matching: not stored, streams cut), store (the store could not take it: served, not stored).", "reason")
	storeEvictions    = storeDesc("evictions_total", "Blobs evicted, least recently used first, to stay under maxSize.")
	storeEvictedBytes = storeDesc("evicted_bytes_total", "Bytes of the blobs evicted.")
	storeCorrupt      = storeDesc("corrupt_total", "Stored blobs that did not match their digest when read: the stream was cut and the blob evicted.")
	storeErrors       = storeDesc("errors_total", "Store failures by operation (stat, read, write, commit, link, touch, put, note, tag, evict, sweep, cleanup; queue: a background write skipped, the writes waiting held too much); each was served from the upstream instead.", "op")
	storeSize         = storeDesc("size_bytes", "Bytes stored, as of the last sweep and since.")
	storeMaxSize      = storeDesc("max_size_bytes", "The store's maxSize.")
	storeBlobs        = storeDesc("blobs", "Blobs stored at the last sweep.")
	storeReads        = storeDesc("reads_total", "Manifests and signature layers read whole from the store, each checked against its digest.")
	storeWrites       = storeDesc("writes_in_flight", "Background writes running or waiting: manifests, the evidence they were judged on, tag records, links and use marks.")
	storeSweeps       = storeDesc("sweeps_total", "Sweeps completed: the store measured, least recently used blobs evicted past maxSize, leftovers deleted.")
	storeLastSweep    = storeDesc("last_sweep_seconds", "How long the last sweep took; it walks every object, and the store rests nine times as long before the next regular one.")
)

func (c storeCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{storeRequests, storeBytes, storeInFlight, storeFills, storeFillErrors, storeEvictions, storeEvictedBytes, storeCorrupt, storeErrors, storeSize, storeMaxSize, storeBlobs, storeReads, storeWrites, storeSweeps, storeLastSweep} {
		ch <- d
	}
}

func (c storeCollector) Collect(ch chan<- prometheus.Metric) {
	s := c()
	counter := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v, labels...)
	}
	gauge := func(d *prometheus.Desc, v float64) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v)
	}
	counter(storeRequests, float64(s.Hits), "hit")
	counter(storeRequests, float64(s.Misses), "miss")
	counter(storeBytes, float64(s.StoreBytes), "store")
	counter(storeBytes, float64(s.UpstreamBytes), "upstream")
	gauge(storeInFlight, float64(s.FillsInFlight))
	counter(storeFills, float64(s.FillsStored))
	for _, reason := range []string{"upstream", "digest", "store"} {
		counter(storeFillErrors, float64(s.FillErrors[reason]), reason)
	}
	counter(storeEvictions, float64(s.Evictions))
	counter(storeEvictedBytes, float64(s.EvictedBytes))
	counter(storeCorrupt, float64(s.Corrupt))
	for _, op := range slices.Sorted(maps.Keys(s.StoreErrors)) {
		counter(storeErrors, float64(s.StoreErrors[op]), op)
	}
	gauge(storeSize, float64(s.Size))
	gauge(storeMaxSize, float64(s.MaxSize))
	gauge(storeBlobs, float64(s.Blobs))
	counter(storeReads, float64(s.Reads))
	gauge(storeWrites, float64(s.WritesInFlight))
	counter(storeSweeps, float64(s.Sweeps))
	gauge(storeLastSweep, s.LastSweep.Seconds())
}

// TrustRoot is what /metrics and /readyz show of one trust root (package
// trust's Status, as the command wires them).
type TrustRoot struct {
	Name string
	// Kind is tuf or file.
	Kind string
	// Digest is that of the trusted_root.json in force, Version the TUF
	// targets version that delivered it (0 for a file).
	Digest  string
	Version int64
	// Mirror and Refresh are a TUF root's repository and interval.
	Mirror  string
	Refresh time.Duration
	// Refreshed is when the root in force was last verified; Expires
	// when its first TUF metadata expires (zero for a file);
	// SigningUntil when its last signing material ends (zero: never).
	Refreshed, Expires, SigningUntil time.Time
	// Refreshes and FailedRefreshes count refreshes since start,
	// Failures those failed in a row since FailingSince, LastError the
	// last one's.
	Refreshes, FailedRefreshes, Failures int
	FailingSince                         time.Time
	LastError                            string
	// Usable is false while the root verifies nothing: Withdrawn says
	// why. Expiring says what of it expires soon, unrenewed ("" if
	// nothing).
	Usable              bool
	Withdrawn, Expiring string
}

// WatchTrust exports, at each scrape, the state of each trust root that
// roots returns, and adds to /readyz a line for each root that is
// withdrawn, expiring, or failing to refresh: the proxy stays ready
// (keyless signatures that a withdrawn root alone judges fail closed,
// everything else is served).
func (m *Metrics) WatchTrust(roots func() []TrustRoot) {
	if m == nil {
		return
	}
	m.reg.MustRegister(trustCollector(roots))
	m.AddReadinessNote(func() []string {
		var lines []string
		for _, s := range roots() {
			switch {
			case s.Withdrawn != "":
				lines = append(lines, "trust root "+s.Name+": WITHDRAWN: "+s.Withdrawn)
			case s.Expiring != "":
				lines = append(lines, "trust root "+s.Name+": expiring: "+s.Expiring)
			case s.LastError != "":
				lines = append(lines, fmt.Sprintf("trust root %s: refreshing from %s fails since %s (%d in a row): %s; the root verified at %s stays, valid until %s",
					s.Name, s.Mirror, s.FailingSince.UTC().Format(time.RFC3339), s.Failures, s.LastError, s.Refreshed.UTC().Format(time.RFC3339), s.Expires.UTC().Format(time.RFC3339)))
			}
		}
		return lines
	})
}

type trustCollector func() []TrustRoot

func trustDesc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc(namespace+"_trust_root_"+name, help, append([]string{"root"}, labels...), nil)
}

var (
	trustInfoDesc      = trustDesc("info", "1 for each trust root, with its kind (tuf, file) and the sha256 digest of the trusted_root.json in force.", "kind", "digest")
	trustVersionDesc   = trustDesc("version", "The TUF targets metadata version of the trusted_root.json in force (0 for a file).")
	trustRefreshDesc   = trustDesc("last_refresh_timestamp_seconds", "When the trust root in force was last verified (loaded, or refreshed from its mirror), in Unix seconds.")
	trustIntervalDesc  = trustDesc("refresh_interval_seconds", "How often a TUF trust root is refreshed (tuf.refresh).")
	trustExpiryDesc    = trustDesc("expiry_seconds", "Seconds until the first of a TUF trust root's metadata (root, timestamp, snapshot, targets) expires; negative once it has: it then verifies nothing.")
	trustSigningDesc   = trustDesc("signing_expiry_seconds", "Seconds until the last signing material of a kind the trust root lists (certificate authorities, transparency logs, timestamp authorities) ends; absent when none ends.")
	trustUsableDesc    = trustDesc("usable", "1 while the trust root verifies, 0 while it is withdrawn (its TUF metadata expired) or not loaded.")
	trustExpiringDesc  = trustDesc("expiring", "1 while something of the trust root expires within 7 days and nothing renews it (the log warns): TUF metadata that no refresh renews, or its last signing material.")
	trustRefreshesDesc = trustDesc("refreshes_total", "Refreshes of a TUF trust root from its mirror since start, by result (success, failure).", "result")
	trustFailuresDesc  = trustDesc("refresh_failures", "Refreshes of a TUF trust root that failed in a row, up to now (0 once one succeeds).")
)

func (c trustCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{trustInfoDesc, trustVersionDesc, trustRefreshDesc, trustIntervalDesc, trustExpiryDesc, trustSigningDesc, trustUsableDesc, trustExpiringDesc, trustRefreshesDesc, trustFailuresDesc} {
		ch <- d
	}
}

func (c trustCollector) Collect(ch chan<- prometheus.Metric) {
	now := time.Now()
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	for _, s := range c() {
		gauge(trustInfoDesc, 1, s.Name, s.Kind, s.Digest)
		gauge(trustVersionDesc, float64(s.Version), s.Name)
		gauge(trustUsableDesc, b2f(s.Usable), s.Name)
		gauge(trustExpiringDesc, b2f(s.Expiring != ""), s.Name)
		if !s.Refreshed.IsZero() {
			gauge(trustRefreshDesc, float64(s.Refreshed.Unix()), s.Name)
		}
		if !s.SigningUntil.IsZero() {
			gauge(trustSigningDesc, s.SigningUntil.Sub(now).Seconds(), s.Name)
		}
		if s.Kind != "tuf" {
			continue
		}
		gauge(trustIntervalDesc, s.Refresh.Seconds(), s.Name)
		if !s.Expires.IsZero() {
			gauge(trustExpiryDesc, s.Expires.Sub(now).Seconds(), s.Name)
		}
		gauge(trustFailuresDesc, float64(s.Failures), s.Name)
		ch <- prometheus.MustNewConstMetric(trustRefreshesDesc, prometheus.CounterValue, float64(s.Refreshes), s.Name, "success")
		ch <- prometheus.MustNewConstMetric(trustRefreshesDesc, prometheus.CounterValue, float64(s.FailedRefreshes), s.Name, "failure")
	}
}
