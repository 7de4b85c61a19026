package metrics

import (
	"bytes"
	"encoding/json"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/promql/parser"
	"gopkg.in/yaml.v3"

	"github.com/authz-proxy/authz-proxy/internal/budget"
)

// exported is every metric name the binary exports, as a query names it
// (a histogram as _bucket, _sum and _count too). Each collector is made to
// hold a series, so that vectors show in the exposition; a test checks
// that none was missed.
func exported(t *testing.T) map[string]bool {
	t.Helper()
	m := New()
	m.WatchCache(func() int { return 1 }, func() uint64 { return 1 })
	m.WatchBudget(func() budget.Snapshot { return budget.Snapshot{InUse: 1, Max: 2} })
	m.Panic()
	m.Request("lab", "manifests", 200)
	m.Decision("lab", "", "rule", "allow")
	m.Verification("lab", time.Millisecond)
	m.Upstream("lab", "manifest", time.Millisecond, "timeout")
	m.Cache(true)
	m.Cache(false)
	m.ConfigLoaded("gen", true)
	m.ReloadFailed()
	m.AuditWrite(false)
	m.AuditCheckpoint(time.Now())
	m.AuditCheckpointInterval(time.Minute)
	m.Manifest("lab", "stale")
	m.StaleTag("lab")
	m.EvidenceFromStore("lab")
	m.SendAbandoned("manifests")
	m.RateLimited()
	m.WatchShares(func() []Share { return []Share{{Bound: "connections", Party: "all"}} })
	m.WatchOutages(func() map[string]time.Time { return map[string]time.Time{"lab": time.Now()} })
	m.Revalidated("lab", RevalidationRevoked)
	m.RevalidationDone(time.Now())
	m.WatchTrust(func() []TrustRoot {
		return []TrustRoot{{Name: "public-good", Kind: "tuf", Refreshed: time.Now(), Expires: time.Now(), SigningUntil: time.Now(), Usable: true}}
	})
	fams, err := m.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	// The canary's, served by the node agent.
	c := NewCanary()
	c.Result("node-1", true, map[string]bool{CheckDeniedRefused: true}, time.Now())
	canary, err := c.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	fams = append(fams, canary...)
	names := map[string]bool{}
	for _, f := range fams {
		names[f.GetName()] = true
		if f.GetType() == dto.MetricType_HISTOGRAM {
			for _, s := range []string{"_bucket", "_sum", "_count"} {
				names[f.GetName()+s] = true
			}
		}
		if f.GetType() == dto.MetricType_SUMMARY {
			names[f.GetName()+"_sum"], names[f.GetName()+"_count"] = true, true
		}
	}
	descs := make(chan *prometheus.Desc, 1000)
	m.reg.Describe(descs)
	c.reg.Describe(descs)
	close(descs)
	fqName := regexp.MustCompile(`fqName: "([^"]+)"`)
	for d := range descs {
		if n := fqName.FindStringSubmatch(d.String()); n != nil && !names[n[1]] {
			t.Errorf("metric %s is registered but has no series here: make exported() touch it", n[1])
		}
	}
	return names
}

// prometheusOwn are series Prometheus makes itself for every target.
var prometheusOwn = map[string]bool{"up": true}

// checkExpr parses a PromQL expression with Prometheus' own parser and
// checks that every metric it selects is exported.
func checkExpr(t *testing.T, where, expr string, names map[string]bool) {
	t.Helper()
	e, err := parser.ParseExpr(expr)
	if err != nil {
		t.Errorf("%s: %q does not parse: %v", where, expr, err)
		return
	}
	selected := 0
	parser.Inspect(e, func(n parser.Node, _ []parser.Node) error {
		if vs, ok := n.(*parser.VectorSelector); ok {
			selected++
			if !names[vs.Name] && !prometheusOwn[vs.Name] {
				t.Errorf("%s: %q selects %s, which authz-proxy does not export", where, expr, vs.Name)
			}
		}
		return nil
	})
	if selected == 0 {
		t.Errorf("%s: %q selects no metric", where, expr)
	}
}

func TestAlertRulesParseAndNameExportedMetrics(t *testing.T) {
	names := exported(t)
	data, err := os.ReadFile("../../deploy/monitoring/alerts.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var file struct {
		Groups []struct {
			Name  string `yaml:"name"`
			Rules []struct {
				Alert       string            `yaml:"alert"`
				Expr        string            `yaml:"expr"`
				For         string            `yaml:"for"`
				Labels      map[string]string `yaml:"labels"`
				Annotations map[string]string `yaml:"annotations"`
			} `yaml:"rules"`
		} `yaml:"groups"`
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&file); err != nil {
		t.Fatalf("alerts.yaml is not a Prometheus rule file: %v", err)
	}
	var alerts []string
	for _, g := range file.Groups {
		for _, r := range g.Rules {
			alerts = append(alerts, r.Alert)
			checkExpr(t, "alert "+r.Alert, r.Expr, names)
			if r.For != "" {
				if _, err := model.ParseDuration(r.For); err != nil {
					t.Errorf("alert %s: for %q: %v", r.Alert, r.For, err)
				}
			}
			if r.Labels["severity"] == "" || r.Annotations["summary"] == "" || r.Annotations["description"] == "" {
				t.Errorf("alert %s needs a severity label and summary and description annotations", r.Alert)
			}
		}
	}
	// What an operator must hear about: deny spike, upstream errors, a
	// failed reload, breakglass in use, a decision log not written.
	for _, want := range []string{"AuthzProxyDenySpike", "AuthzProxyUpstreamErrors", "AuthzProxyPullsFailingClosed", "AuthzProxyConfigReloadFailed", "AuthzProxyBreakglassInUse", "AuthzProxyDecisionLogNotWritten", "AuthzProxyCheckpointsStopped"} {
		if !slices.Contains(alerts, want) {
			t.Errorf("alerts.yaml has no %s", want)
		}
	}
}

// grafanaVar is a dashboard variable in a query: $name, ${name} or
// ${name:format}.
var grafanaVar = regexp.MustCompile(`\$\{?(__\w+|\w+)(:\w+)?\}?`)

// substitute replaces Grafana's variables as Grafana does before a query
// reaches Prometheus: intervals by a duration, others (in label matchers)
// by a regular expression.
func substitute(expr string) string {
	return grafanaVar.ReplaceAllStringFunc(expr, func(v string) string {
		if strings.Contains(v, "__") && strings.Contains(v, "interval") || strings.Contains(v, "__range") {
			return "5m"
		}
		return ".*"
	})
}

var labelValues = regexp.MustCompile(`^label_values\((.*),\s*(\w+)\)$`)

func TestGrafanaDashboardQueriesParseAndNameExportedMetrics(t *testing.T) {
	names := exported(t)
	data, err := os.ReadFile("../../deploy/monitoring/grafana-dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		UID        string  `json:"uid"`
		Panels     []panel `json:"panels"`
		Templating struct {
			List []struct {
				Name  string `json:"name"`
				Type  string `json:"type"`
				Query any    `json:"query"`
			} `json:"list"`
		} `json:"templating"`
	}
	if err := json.Unmarshal(data, &dash); err != nil {
		t.Fatalf("grafana-dashboard.json: %v", err)
	}
	queries := 0
	ids := map[int]bool{}
	var walk func([]panel)
	walk = func(ps []panel) {
		for _, p := range ps {
			if ids[p.ID] {
				t.Errorf("panel id %d is used twice", p.ID)
			}
			ids[p.ID] = true
			if p.Type != "row" && p.Datasource.UID != "${datasource}" {
				t.Errorf("panel %q: datasource %q, want the ${datasource} variable (so that the dashboard imports anywhere)", p.Title, p.Datasource.UID)
			}
			for _, tg := range p.Targets {
				queries++
				checkExpr(t, "panel "+p.Title, substitute(tg.Expr), names)
			}
			walk(p.Panels)
		}
	}
	walk(dash.Panels)
	if queries < 20 {
		t.Errorf("%d queries in the dashboard; it should cover decisions, denials, verification, upstreams, the cache, reloads, the decision log and the process", queries)
	}
	for _, v := range dash.Templating.List {
		if v.Type != "query" {
			continue
		}
		q, _ := v.Query.(map[string]any)["query"].(string)
		m := labelValues.FindStringSubmatch(q)
		if m == nil {
			t.Errorf("variable %s: query %q, want label_values(SELECTOR, LABEL)", v.Name, q)
			continue
		}
		checkExpr(t, "variable "+v.Name, substitute(m[1]), names)
	}
}

type panel struct {
	ID         int    `json:"id"`
	Type       string `json:"type"`
	Title      string `json:"title"`
	Datasource struct {
		UID string `json:"uid"`
	} `json:"datasource"`
	Targets []struct {
		Expr string `json:"expr"`
	} `json:"targets"`
	Panels []panel `json:"panels"`
}

// TestREADMEListsEveryMetric keeps the README's metrics table complete.
func TestREADMEListsEveryMetric(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	for name := range exported(t) {
		if strings.HasPrefix(name, namespace) && !strings.HasSuffix(name, "_bucket") && !strings.HasSuffix(name, "_sum") && !strings.HasSuffix(name, "_count") &&
			!bytes.Contains(readme, []byte("`"+name+"`")) {
			t.Errorf("README.md does not list %s", name)
		}
	}
}
