package proxy_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/sigstore/sigstore/pkg/signature"
	"github.com/sigstore/sigstore/pkg/signature/payload"

	"github.com/authz-proxy/authz-proxy/internal/audit"
	"github.com/authz-proxy/authz-proxy/internal/budget"
	"github.com/authz-proxy/authz-proxy/internal/clients"
	"github.com/authz-proxy/authz-proxy/internal/config"
	"github.com/authz-proxy/authz-proxy/internal/limits"
	"github.com/authz-proxy/authz-proxy/internal/metrics"
	"github.com/authz-proxy/authz-proxy/internal/oci"
	"github.com/authz-proxy/authz-proxy/internal/policy"
	"github.com/authz-proxy/authz-proxy/internal/proxy"
	"github.com/authz-proxy/authz-proxy/internal/sign"
	"github.com/authz-proxy/authz-proxy/internal/source"
	"github.com/authz-proxy/authz-proxy/internal/store"
	"github.com/authz-proxy/authz-proxy/internal/testkit"
	"github.com/authz-proxy/authz-proxy/internal/upstream"
	"github.com/authz-proxy/authz-proxy/internal/verify"
)

// env is one upstream registry (go-containerregistry's, in process), keys
// for the attestors ci and release plus one of nobody, and a proxy in front
// with the policy under test.
type env struct {
	t        testing.TB
	upstream *httptest.Server
	// registry is the upstream's registry itself, for a front that
	// answers with it and then does more.
	registry http.Handler
	// front, when set, sees every upstream request first (fault injection,
	// counting).
	front     atomic.Pointer[func(http.ResponseWriter, *http.Request) bool]
	dir       string
	keys      map[string]signature.Signer
	proxy     *httptest.Server
	server    *proxy.Server
	metrics   *metrics.Metrics
	sources   []*source.Source
	decisions *testkit.Buffer
	// labName is the first upstream's name (lab by default).
	labName string
	// trustRoots are what the policy is compiled with (withTrustRoots).
	trustRoots map[string]*verify.TrustedRoot
	// clock is the proxy's clock of verdict and breakglass expiry, moved
	// by hand.
	clock    *testkit.Clock
	requests sync.Map // path -> *atomic.Int64, upstream requests seen
	// inProxy counts the requests in the proxy's handler now.
	inProxy atomic.Int64
	// limits are the configuration's limits: verifyTimeout and more.
	limits string
	// tags are how the upstreams' tags are resolved with a store.
	tags map[string]source.Tags
	// policyText is the policy in force.
	policyText string
	// other is the second upstream: its name and URL (by default "other",
	// the same registry as lab).
	otherName, otherURL string
}

// policyYAML is the policy of most tests: lab/signed/** needs ci,
// lab/two/** needs ci and release, lab/tools/** is allowlisted.
const policyYAML = `
attestors:
  - name: ci
    publicKeys: [{file: ci.pub}]
  - name: release
    publicKeys: [{file: release.pub}]
policy:
  allowlist: ["lab/tools/**"]
  rules:
    - name: two-person
      images: ["lab/two/**"]
      require:
        - signature: {attestors: [ci, release], threshold: 2}
    - name: dry
      images: ["lab/dry/**"]
      enforcement: dryrun
      require:
        - signature: {attestors: [ci]}
    - name: open
      images: ["lab/open/**"]
      action: allow
    - name: signed
      images: ["lab/**"]
      require:
        - signature: {attestors: [ci]}
`

type envOption func(*envConfig)

type envConfig struct {
	referrers          bool
	policy             string
	upstreamURL        string
	username, password string
	limits             limits.Limits
	verifyTimeout      time.Duration
	store              *store.Store
	tags               map[string]source.Tags
	// moreLimits are further fields of the configuration's limits.
	moreLimits string
	// labName, otherName and other: see withUpstreams.
	labName, otherName string
	other              http.Handler
	// trustRoots are the trust roots the policy is compiled with.
	trustRoots map[string]*verify.TrustedRoot
	// auditQueue, when not 0, queues the decision log's lines (as serve
	// does), and its writes wait for auditGate to close.
	auditQueue int
	auditGate  <-chan struct{}
}

// withLimits sets the upstream limits and the verification timeout.
func withLimits(l limits.Limits, verifyTimeout time.Duration) envOption {
	return func(c *envConfig) { c.limits, c.verifyTimeout = l, verifyTimeout }
}

// withConfigLimits adds fields to the configuration's limits, in YAML flow
// style ("writeTimeout: 1s, maxManifestBytesInFlight: 16777216").
func withConfigLimits(fields string) envOption {
	return func(c *envConfig) { c.moreLimits = fields }
}

func withCredentials(user, pass string) envOption {
	return func(c *envConfig) { c.username, c.password = user, pass }
}

func withoutReferrersAPI() envOption { return func(c *envConfig) { c.referrers = false } }

func withPolicy(p string) envOption { return func(c *envConfig) { c.policy = p } }

// withTrustRoots compiles the policy with the trust roots given, by name.
func withTrustRoots(roots map[string]*verify.TrustedRoot) envOption {
	return func(c *envConfig) { c.trustRoots = roots }
}

// withStalledAuditQueue queues the decision log's lines, at most n, as
// serve does, on a disk that writes nothing until gate is closed.
func withStalledAuditQueue(n int, gate <-chan struct{}) envOption {
	return func(c *envConfig) { c.auditQueue, c.auditGate = n, gate }
}

// withStore puts blobs, manifests and tags through st.
func withStore(st *store.Store) envOption { return func(c *envConfig) { c.store = st } }

// withTags sets how the upstreams' tags are resolved.
func withTags(tags map[string]source.Tags) envOption { return func(c *envConfig) { c.tags = tags } }

// withUpstreams names the two upstreams lab and other, and serves other
// from a registry of its own, h (nil: the same registry as lab).
func withUpstreams(lab, other string, h http.Handler) envOption {
	return func(c *envConfig) { c.labName, c.otherName, c.other = lab, other, h }
}

func withUpstreamURL(u string) envOption {
	return func(c *envConfig) { c.upstreamURL = u }
}

func newEnv(t testing.TB, opts ...envOption) *env {
	t.Helper()
	ec := envConfig{referrers: true, policy: policyYAML, verifyTimeout: 10 * time.Second, labName: "lab", otherName: "other"}
	for _, o := range opts {
		o(&ec)
	}
	if ec.store == nil && everyEnvHasAStore {
		ec.store = tempStore(t)
	}
	if ec.tags == nil {
		// As the configuration's defaults.
		ec.tags = map[string]source.Tags{ec.labName: {StaleIfError: config.DefaultStaleIfError}, ec.otherName: {StaleIfError: config.DefaultStaleIfError}}
	}
	if ec.limits.ResponseTimeout == 0 {
		ec.limits.ResponseTimeout = 5 * time.Second
	}
	e := &env{t: t, dir: t.TempDir(), keys: map[string]signature.Signer{}, decisions: &testkit.Buffer{}, clock: testkit.NewClock(time.Now()), limits: fmt.Sprintf("verifyTimeout: %s", ec.verifyTimeout), tags: ec.tags,
		policyText: ec.policy, labName: ec.labName, otherName: ec.otherName, trustRoots: ec.trustRoots}
	if ec.moreLimits != "" {
		e.limits += ", " + ec.moreLimits
	}
	reg := registry.New(registry.WithReferrersSupport(ec.referrers), registry.Logger(log.New(io.Discard, "", 0)))
	e.registry = reg
	e.upstream = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, _ := e.requests.LoadOrStore(r.Method+" "+r.URL.Path, new(atomic.Int64))
		n.(*atomic.Int64).Add(1)
		if f := e.front.Load(); f != nil && (*f)(w, r) {
			return
		}
		reg.ServeHTTP(w, r)
	}))
	t.Cleanup(e.upstream.Close)
	for _, k := range []string{"ci", "release", "nobody"} {
		e.keys[k] = testkit.NewSigner(t, filepath.Join(e.dir, k+".pub"))
	}
	if ec.upstreamURL == "" {
		ec.upstreamURL = e.upstream.URL
	}
	e.otherURL = ec.upstreamURL
	if ec.other != nil {
		other := httptest.NewServer(ec.other)
		t.Cleanup(other.Close)
		e.otherURL = other.URL
	}
	cfg, pol := e.compile(ec.upstreamURL, ec.policy)
	// As serve wires it: one budget for the upstreams and the proxy.
	b := budget.New(cfg.Limits.MaxManifestBytesInFlight, 2*time.Second)
	b.SetShares(cfg.Limits.MaxManifestBytesPerUpstream, cfg.Limits.MaxManifestBytesPerClient)
	ul := ec.limits
	if ul.HeaderWait == 0 {
		ul.HeaderWait = cfg.Limits.HeaderWait
	}
	var ups []*upstream.Client
	for _, u := range cfg.Upstreams {
		c, err := upstream.New(upstream.Options{Name: u.Name, URL: u.URL, Insecure: u.Insecure, Username: ec.username, Password: ec.password, Limits: ul, Budget: b})
		if err != nil {
			t.Fatal(err)
		}
		ups = append(ups, c)
	}
	var sink io.Writer = e.decisions
	var aopts []audit.Option
	if ec.auditQueue > 0 {
		sink, aopts = testkit.Gated{W: e.decisions, Gate: ec.auditGate}, []audit.Option{audit.WithQueue(ec.auditQueue)}
	}
	al, err := audit.New(sink, "", aopts...)
	if err != nil {
		t.Fatal(err)
	}
	if ec.auditQueue > 0 {
		t.Cleanup(func() { _ = al.Close() }) // the queue's writer
	}
	e.metrics = metrics.New()
	e.metrics.WatchBudget(b.Snapshot)
	e.sources = sources(t, ups, ec.store, ec.tags, e.metrics, e.clock.Now)
	h, err := proxy.New(proxy.Options{
		Policy: pol, Sources: e.sources, DefaultUpstream: e.labName, MaxEntries: cfg.Cache.MaxEntries,
		Budget: b, Limits: cfg.Limits, Audit: al, Metrics: e.metrics, Now: e.clock.Now, Clients: compileClients(t, cfg),
	})
	if err != nil {
		t.Fatal(err)
	}
	e.server = h
	e.metrics.WatchOutages(h.Outages)
	e.proxy = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		e.inProxy.Add(1)
		defer e.inProxy.Add(-1)
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(e.proxy.Close)
	return e
}

// sources are the upstreams' sources, as serve wires them: with st, when
// not nil, and the tags of each, dated by now.
func sources(t testing.TB, ups []*upstream.Client, st *store.Store, tags map[string]source.Tags, m *metrics.Metrics, now func() time.Time) []*source.Source {
	t.Helper()
	if st != nil {
		m.WatchStore(st.Stats)
	}
	var srcs []*source.Source
	for _, u := range ups {
		src, err := source.New(source.Options{Upstream: u, Store: st, Tags: tags[u.Name()], Metrics: m, Now: now})
		if err != nil {
			t.Fatal(err)
		}
		srcs = append(srcs, src)
	}
	return srcs
}

// compileClients is the clients section of cfg (nil: none).
func compileClients(t testing.TB, cfg *config.Config) *clients.Clients {
	t.Helper()
	cl, err := clients.Compile(context.Background(), cfg, clients.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return cl
}

// compile writes a configuration with the upstreams lab at upstreamURL
// and other (by default at the same URL), outcomes cached for a minute,
// and the given policy, and compiles it.
func (e *env) compile(upstreamURL, policyText string) (*config.Config, *policy.Policy) {
	e.t.Helper()
	otherURL := e.otherURL
	if otherURL == e.upstream.URL {
		otherURL = upstreamURL
	}
	cfgText := fmt.Sprintf("upstreams:\n  - name: %q\n    url: %s\n    insecure: true\n  - name: %q\n    url: %s\n    insecure: true\n", e.labName, upstreamURL, e.otherName, otherURL) +
		fmt.Sprintf("cache: {allowTTL: 1m, denyTTL: 1m}\nlimits: {%s}\n", e.limits) + policyText
	cfg := testkit.LoadConfig(e.t, e.dir, cfgText, nil)
	pol, err := policy.Compile(cfg, policy.WithTrustRoots(e.trustRoots))
	if err != nil {
		e.t.Fatal(err)
	}
	return cfg, pol
}

// reload puts policyText in force in the running proxy, with the same
// upstreams and cache settings.
func (e *env) reload(policyText string) {
	e.t.Helper()
	cfg, pol := e.compile(e.upstream.URL, policyText)
	e.policyText = policyText
	if err := e.server.Reload(proxy.Options{Policy: pol, Sources: e.sources, DefaultUpstream: e.labName, MaxEntries: 10000, Clients: compileClients(e.t, cfg)}); err != nil {
		e.t.Fatal(err)
	}
}

// host is the upstream's host:port; repositories are pushed there directly.
func (e *env) host() string { return strings.TrimPrefix(e.upstream.URL, "http://") }

// proxyHost is the proxy's host:port.
func (e *env) proxyHost() string { return strings.TrimPrefix(e.proxy.URL, "http://") }

// push writes a random image to repo:tag upstream and returns its digest.
func (e *env) push(repoTag string) v1.Hash {
	e.t.Helper()
	img, err := random.Image(256, 1)
	if err != nil {
		e.t.Fatal(err)
	}
	return e.write(repoTag, img)
}

func (e *env) write(repoTag string, img v1.Image) v1.Hash {
	e.t.Helper()
	ref, err := name.ParseReference(e.host()+"/"+repoTag, name.Insecure)
	if err != nil {
		e.t.Fatal(err)
	}
	if err := remote.Write(ref, img); err != nil {
		e.t.Fatal(err)
	}
	d, err := img.Digest()
	if err != nil {
		e.t.Fatal(err)
	}
	return d
}

func (e *env) repo(repo string) name.Repository {
	e.t.Helper()
	r, err := name.NewRepository(e.host()+"/"+repo, name.Insecure)
	if err != nil {
		e.t.Fatal(err)
	}
	return r
}

// signTag signs digest with key's payload naming signedDigest, stored in the
// .sig tag of digest.
func (e *env) signTag(repo, key string, digest, signedDigest v1.Hash) {
	e.t.Helper()
	sig, err := sign.New(e.keys[key], e.repo(repo), signedDigest.String())
	if err != nil {
		e.t.Fatal(err)
	}
	if err := sign.AttachTag(context.Background(), e.repo(repo), digest.String(), []sign.Signature{sig}); err != nil {
		e.t.Fatal(err)
	}
}

// signTagWith signs digest with key in the .sig tag, its payload holding
// annotations (as `cosign sign -a` writes them).
func (e *env) signTagWith(repo, key string, digest v1.Hash, annotations map[string]any) {
	e.t.Helper()
	raw, err := payload.Cosign{Image: e.repo(repo).Digest(digest.String()), Annotations: annotations}.MarshalJSON()
	if err != nil {
		e.t.Fatal(err)
	}
	sig, err := e.keys[key].SignMessage(bytes.NewReader(raw))
	if err != nil {
		e.t.Fatal(err)
	}
	if err := sign.AttachTag(context.Background(), e.repo(repo), digest.String(), []sign.Signature{{Payload: raw, Sig: sig}}); err != nil {
		e.t.Fatal(err)
	}
}

// signReferrer signs digest with key and stores it as an OCI 1.1 referrer.
func (e *env) signReferrer(repo, key string, digest v1.Hash, fallbackTag bool) {
	e.t.Helper()
	r := e.repo(repo)
	desc, err := sign.Describe(context.Background(), r.Digest(digest.String()))
	if err != nil {
		e.t.Fatal(err)
	}
	sig, err := sign.New(e.keys[key], r, digest.String())
	if err != nil {
		e.t.Fatal(err)
	}
	if _, err := sign.AttachReferrer(context.Background(), r, desc, sig, fallbackTag); err != nil {
		e.t.Fatal(err)
	}
}

// attestation signs an in-toto statement (v0.1, as cosign v2 writes) of
// predicateType about subject, with key.
func (e *env) attestation(repo, key string, subject v1.Hash, predicateType string, predicate any) sign.Attestation {
	e.t.Helper()
	return e.attestationOf(oci.StatementV01, repo, key, subject, predicateType, predicate)
}

// attestationOf is attestation with the statement type given.
func (e *env) attestationOf(statementType, repo, key string, subject v1.Hash, predicateType string, predicate any) sign.Attestation {
	e.t.Helper()
	st, err := sign.Statement(statementType, e.repo(repo).Name(), subject.String(), predicateType, predicate)
	if err != nil {
		e.t.Fatal(err)
	}
	a, err := sign.Attest(e.keys[key], predicateType, st)
	if err != nil {
		e.t.Fatal(err)
	}
	return a
}

// attestTag stores atts in the .att tag of digest, as cosign attest does.
func (e *env) attestTag(repo string, digest v1.Hash, atts ...sign.Attestation) {
	e.t.Helper()
	if err := sign.AttachAttestationTag(context.Background(), e.repo(repo), digest.String(), atts); err != nil {
		e.t.Fatal(err)
	}
}

// attestReferrer stores a, signed by key, as a Sigstore-bundle referrer of
// digest, as cosign attest --new-bundle-format does.
func (e *env) attestReferrer(repo, key string, digest v1.Hash, a sign.Attestation, fallbackTag bool) {
	e.t.Helper()
	r := e.repo(repo)
	desc, err := sign.Describe(context.Background(), r.Digest(digest.String()))
	if err != nil {
		e.t.Fatal(err)
	}
	if _, err := sign.AttachAttestationReferrer(context.Background(), r, desc, a, e.keys[key], fallbackTag); err != nil {
		e.t.Fatal(err)
	}
}

// get sends method to the proxy.
func (e *env) get(method, path string) *http.Response {
	e.t.Helper()
	req, err := http.NewRequest(method, e.proxy.URL+path, nil)
	if err != nil {
		e.t.Fatal(err)
	}
	req.Header.Set("Accept", "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { resp.Body.Close() })
	return resp
}

// ociError is the body of an OCI error response.
type ociError struct {
	Errors []struct {
		Code    string          `json:"code"`
		Message string          `json:"message"`
		Detail  json.RawMessage `json:"detail"`
	} `json:"errors"`
}

// expectError asserts the response's status and OCI error code, and returns
// the message.
func expectError(t *testing.T, resp *http.Response, status int, code string) string {
	t.Helper()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != status {
		t.Fatalf("status %d, want %d; body: %s", resp.StatusCode, status, body)
	}
	var oe ociError
	if err := json.Unmarshal(body, &oe); err != nil || len(oe.Errors) == 0 {
		t.Fatalf("body is not an OCI error: %s", body)
	}
	if oe.Errors[0].Code != code {
		t.Fatalf("code %s, want %s; message: %s", oe.Errors[0].Code, code, oe.Errors[0].Message)
	}
	return oe.Errors[0].Message
}

// lastDecision returns the newest decision-log record for digest; every
// line of the log must be a whole record of the documented schema.
func (e *env) lastDecision(digest string) testkit.Decision {
	e.t.Helper()
	return testkit.LastDecision(e.t, e.decisions.String(), digest)
}

// count is the number of upstream requests seen for method and path.
func (e *env) count(method, path string) int64 {
	n, ok := e.requests.Load(method + " " + path)
	if !ok {
		return 0
	}
	return n.(*atomic.Int64).Load()
}
