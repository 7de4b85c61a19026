package revalidate_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/authz-proxy/authz-proxy/internal/audit"
	"github.com/authz-proxy/authz-proxy/internal/demo"
	"github.com/authz-proxy/authz-proxy/internal/metrics"
	"github.com/authz-proxy/authz-proxy/internal/policy"
	"github.com/authz-proxy/authz-proxy/internal/revalidate"
	"github.com/authz-proxy/authz-proxy/internal/source"
	"github.com/authz-proxy/authz-proxy/internal/store"
	"github.com/authz-proxy/authz-proxy/internal/testkit"
	"github.com/authz-proxy/authz-proxy/internal/upstream"
)

// labPolicy is the lab's upstream with attestor ci holding the keys given
// (the lab's ci key and a spare one), release holding the ci key for the
// referrer image, extra rules first, then demo-images.
const labPolicy = `upstreams: [{name: lab, url: "http://%[1]s", insecure: true}]
attestors:
  - {name: ci, publicKeys: [%[2]s]}
  - {name: release, publicKeys: [{file: %[4]s}]}
policy:
  allowlist: [lab/tools/**]
  rules:%[3]s
    - name: released
      images: ["lab/demo/referrer"]
      require: [{signature: {attestors: [release]}}]
    - name: demo-images
      images: ["lab/demo/**"]
      require: [{signature: {attestors: [ci]}}]
`

// pulled are the lab's images pulled and allowed before: by attestor ci's
// signature in a .sig tag, by attestor release's among the referrers, by
// the allowlist.
var pulled = []struct{ repo, tag string }{{"demo/app", "signed"}, {"demo/referrer", "signed"}, {"tools/debug", "latest"}}

func TestRevalidationRevokesWhatThePolicyInForceNowDeniesOnce(t *testing.T) {
	for _, c := range []struct {
		name string
		// change changes the upstream, or returns the keys and rules of
		// a new policy ("" and "": the policy as it was).
		change       func(t *testing.T, lab *demo.Lab) (keys, rules string)
		rule, reason string
	}{
		{"a signature deleted upstream", func(t *testing.T, lab *demo.Lab) (string, string) {
			deleteTag(t, lab, "demo/app", sigTag(t, lab, "demo/app", "signed"))
			return "", ""
		}, "demo-images", "no cosign signature found"},
		{"a key removed from an attestor", func(t *testing.T, lab *demo.Lab) (string, string) {
			return "{file: spare.pub}", ""
		}, "demo-images", "none verifies with a key of attestor ci"},
		{"a new deny rule", func(t *testing.T, lab *demo.Lab) (string, string) {
			return "", "\n    - {name: no-app, images: [lab/demo/app], action: deny}"
		}, "no-app", `rule "no-app"`},
	} {
		for _, stored := range []bool{false, true} {
			name := c.name
			if stored {
				name += ", evidence read through a store"
			}
			t.Run(name, func(t *testing.T) { revokeOnce(t, c.change, c.rule, c.reason, stored) })
		}
	}
}

// revokeOnce pulls the lab's images under the policy they are allowed by,
// then changes the upstream or the policy: one round logs lab/demo/app
// revoked by rule saying reason, once, and counts it. stored: the source
// reads through a store (as serve's do with one), which has kept the
// evidence of the first round.
func revokeOnce(t *testing.T, change func(t *testing.T, lab *demo.Lab) (keys, rules string), rule, reason string, stored bool) {
	lab, err := demo.Start(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(lab.Close)
	dir := t.TempDir()
	testkit.NewKey(t).WritePublic(t, filepath.Join(dir, "spare.pub"))
	ci := fmt.Sprintf("{file: %s}, {file: spare.pub}", filepath.Join(lab.Dir, "ci.pub"))
	compile := func(keys, rules string) *policy.Policy {
		p, err := policy.Compile(testkit.LoadConfig(t, dir, fmt.Sprintf(labPolicy, lab.Upstream, keys, rules, filepath.Join(lab.Dir, "ci.pub")), nil))
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	var st *store.Store
	if stored {
		d, err := store.NewDriver(t.Context(), store.InMemory, nil)
		if err != nil {
			t.Fatal(err)
		}
		if st, err = store.New(t.Context(), store.Options{Driver: d, MaxSize: 1 << 30, Owner: "test", SweepInterval: time.Hour}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
	}
	client, src := labSource(t, lab, st)
	registries := map[string]policy.Registry{"lab": src}
	var log testkit.Buffer
	decisions, err := audit.New(&log, "")
	if err != nil {
		t.Fatal(err)
	}
	m := metrics.New()
	rv := revalidate.New(revalidate.Options{Observer: m})
	before := compile(ci, "")
	rv.SetWindow(24*time.Hour, before)
	digests := map[string]string{}
	for _, p := range pulled {
		digests[p.repo] = digestOf(t, client, p.repo, p.tag)
		rv.Observe(audit.Record{Time: time.Now(), Decision: audit.Allow, Image: "lab/" + p.repo, Reference: p.tag, Digest: digests[p.repo],
			Upstream: "lab", Rule: "demo-images", Client: audit.Client{Addr: "10.0.0.7:4000"}})
	}
	if s := rv.Run(t.Context(), before, registries, decisions); s.Judged != 3 || s.Allowed != 3 || log.Len() != 0 {
		t.Fatalf("under the policy they were allowed by: %+v, log %s; want 3 judged, all allowed, nothing logged", s, log.String())
	}

	keys, rules := change(t, lab)
	if keys == "" {
		keys = ci
	}
	now := compile(keys, rules)
	s := rv.Run(t.Context(), now, registries, decisions)
	lines := testkit.Decisions(t, log.String())
	if s.Judged != 3 || s.Revoked != 1 || s.Allowed != 2 || len(lines) != 1 {
		t.Fatalf("after the change: %+v, log:\n%s\nwant 3 judged, 1 revoked, 1 line", s, log.String())
	}
	got := lines[0]
	if got.Decision != audit.Revoked || got.Level != "WARN" || got.Digest != digests["demo/app"] || got.Image != "lab/demo/app" || got.Reference != "signed" ||
		got.Rule != rule || !strings.Contains(strings.Join(got.Reasons, "; "), reason) || got.Client.Addr != "10.0.0.7:4000" {
		t.Errorf("the revoked line %s; want lab/demo/app:signed revoked by rule %s saying %q", got, rule, reason)
	}
	if s := rv.Run(t.Context(), now, registries, decisions); s.Judged != 2 || s.Revoked != 0 || len(testkit.Decisions(t, log.String())) != 1 {
		t.Errorf("the round after: %+v; want the 2 others judged, and the revoked digest not logged again", s)
	}
	for result, want := range map[string]float64{"allowed": 3 + 2 + 2, "revoked": 1} {
		if got := scrape(t, m, fmt.Sprintf(`authz_proxy_revalidations_total{result=%q,upstream="lab"}`, result)); got != want {
			t.Errorf("authz_proxy_revalidations_total{result=%q} = %v, want %v", result, got, want)
		}
	}
}

func TestRevalidationJudgesADigestAllowedAgainAfterItWasRevoked(t *testing.T) {
	lab, err := demo.Start(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(lab.Close)
	dir := t.TempDir()
	p, err := policy.Compile(testkit.LoadConfig(t, dir, fmt.Sprintf(labPolicy, lab.Upstream, "{file: "+filepath.Join(lab.Dir, "ci.pub")+"}", "\n    - {name: no-app, images: [lab/demo/app], action: deny}", filepath.Join(lab.Dir, "ci.pub")), nil))
	if err != nil {
		t.Fatal(err)
	}
	client, src := labSource(t, lab, nil)
	clock := testkit.NewClock(time.Now())
	rv := revalidate.New(revalidate.Options{Now: clock.Now})
	rv.SetWindow(time.Hour, p)
	allow := func() {
		rv.Observe(audit.Record{Time: clock.Now(), Decision: audit.Allow, Image: "lab/demo/app", Reference: "signed", Digest: digestOf(t, client, "demo/app", "signed"), Upstream: "lab", Rule: "demo-images"})
	}
	allow()
	registries := map[string]policy.Registry{"lab": src}
	for _, c := range []struct {
		name  string
		do    func()
		judge int
	}{
		{"the allowed digest, now denied", func() {}, 1},
		{"once revoked", func() {}, 0},
		{"allowed again (a breakglass, a rule changed back)", allow, 1},
		{"out of the window", func() { clock.Advance(2 * time.Hour) }, 0},
	} {
		clock.Advance(time.Second)
		c.do()
		if s := rv.Run(t.Context(), p, registries, nil); s.Judged != c.judge {
			t.Errorf("%s: %d judged, want %d", c.name, s.Judged, c.judge)
		}
	}
}

// labSource is the lab's upstream client, and the source the judge reads
// of it through st (nil: none), as serve, check and replay build it.
func labSource(t *testing.T, lab *demo.Lab, st *store.Store) (*upstream.Client, *source.Source) {
	t.Helper()
	client, err := upstream.New(upstream.Options{Name: "lab", URL: "http://" + lab.Upstream, Insecure: true})
	if err != nil {
		t.Fatal(err)
	}
	src, err := source.New(source.Options{Upstream: client, Store: st})
	if err != nil {
		t.Fatal(err)
	}
	return client, src
}

func digestOf(t *testing.T, c *upstream.Client, repo, tag string) string {
	t.Helper()
	m, err := c.Manifest(context.Background(), repo, tag)
	if err != nil {
		t.Fatal(err)
	}
	return m.Digest
}

// sigTag is the cosign .sig tag of repo:tag.
func sigTag(t *testing.T, lab *demo.Lab, repo, tag string) string {
	t.Helper()
	c, _ := labSource(t, lab, nil)
	return strings.Replace(digestOf(t, c, repo, tag), ":", "-", 1) + ".sig"
}

// deleteTag deletes repo:tag in the lab's registry, as `crane delete` does.
func deleteTag(t *testing.T, lab *demo.Lab, repo, tag string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodDelete, "http://"+lab.Upstream+"/v2/"+repo+"/manifests/"+tag, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("DELETE %s:%s: %s", repo, tag, resp.Status)
	}
}

// scrape is the value of one series of m's /metrics, 0 when absent.
func scrape(t *testing.T, m *metrics.Metrics, series string) float64 {
	t.Helper()
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	for _, line := range strings.Split(rec.Body.String(), "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("%s: %v", line, err)
			}
			return f
		}
	}
	return 0
}
