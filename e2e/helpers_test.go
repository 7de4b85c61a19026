//go:build e2e

package e2e_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/authz-proxy/authz-proxy/internal/testkit"
)

// process is a long-running child: the registry or a proxy.
type process struct {
	cmd    *exec.Cmd
	output *testkit.Buffer // stdout and stderr, unless given separately
	exited chan struct{}
	err    error // set before exited is closed
	once   sync.Once
}

func startProcess(env []string, output *testkit.Buffer, path string, args ...string) (*process, error) {
	return startProcessSplit(env, output, output, path, args...)
}

func startProcessSplit(env []string, stdout, stderr *testkit.Buffer, path string, args ...string) (*process, error) {
	cmd := exec.Command(path, args...)
	cmd.Env = env
	cmd.Stdout, cmd.Stderr = stdout, stderr
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p := &process{cmd: cmd, output: stdout, exited: make(chan struct{})}
	go func() {
		p.err = cmd.Wait() // returns once stdout and stderr are fully copied
		close(p.exited)
	}()
	return p, nil
}

// stop asks the process to end (SIGTERM), kills it if it has not after 20
// seconds, and returns how it ended.
func (p *process) stop() error {
	p.once.Do(func() {
		select {
		case <-p.exited:
			return
		default:
		}
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.exited:
		case <-time.After(20 * time.Second):
			_ = p.cmd.Process.Kill()
			<-p.exited
			p.err = fmt.Errorf("did not stop within 20s of SIGTERM (killed): %v", p.err)
		}
	})
	<-p.exited
	return p.err
}

// proxyProc is a running authz-proxy serve.
type proxyProc struct {
	*process
	name      string
	addr      string // 127.0.0.1:port
	config    string // path of its configuration
	auditFile string
	stdout    *testkit.Buffer // the decision log
	stderr    *testkit.Buffer
}

// startProxy writes configText (with {{ADDR}} and {{AUDIT}} filled in) to a
// file of its own and runs `authz-proxy serve --config FILE` until GET /v2/
// answers 200.
func startProxy(ctx context.Context, w *world, name, configText string) (*proxyProc, error) {
	dir, err := os.MkdirTemp(w.dir, "proxy-"+name+"-")
	if err != nil {
		return nil, err
	}
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	p := &proxyProc{
		name:      name,
		addr:      fmt.Sprintf("127.0.0.1:%d", port),
		config:    filepath.Join(dir, "config.yaml"),
		auditFile: filepath.Join(dir, "decisions.jsonl"),
		stdout:    &testkit.Buffer{},
		stderr:    &testkit.Buffer{},
	}
	text := strings.NewReplacer("{{ADDR}}", p.addr, "{{AUDIT}}", p.auditFile).Replace(configText)
	if err := os.WriteFile(p.config, []byte(text), 0o644); err != nil {
		return nil, err
	}
	proc, err := startProcessSplit(w.env(), p.stdout, p.stderr, w.proxyBin, "serve", "--config", p.config)
	if err != nil {
		return nil, fmt.Errorf("starting proxy %s: %w", name, err)
	}
	p.process = proc
	if err := waitReady(ctx, "http://"+p.addr+"/v2/", proc.exited); err != nil {
		_ = proc.stop()
		return nil, fmt.Errorf("proxy %s did not come up: %v\nconfig:\n%s\nstderr:\n%s", name, err, text, p.stderr.String())
	}
	return p, nil
}

// startTestProxy is startProxy for one test; the proxy stops when the test
// ends.
func startTestProxy(t *testing.T, name, configText string) *proxyProc {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	p, err := startProxy(ctx, lab, name, configText)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.stop() })
	return p
}

// url is the proxy's base URL.
func (p *proxyProc) url() string { return "http://" + p.addr }

// freePort returns a loopback port that was free a moment ago.
func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// decision is one line of the decision log, read with audit.Parse (its
// fields checked against the decision log's schema).
type decision = testkit.Decision

// lines returns the complete lines of the proxy's stdout.
func (p *proxyProc) lines() []string {
	s := p.stdout.String()
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	} else {
		return nil
	}
	return strings.Split(s, "\n")
}

// mark is a position in the decision log: decisions after it are the ones a
// test caused.
func (p *proxyProc) mark() int { return len(p.lines()) }

// decisionsSince parses the decision-log lines after mark.
func (p *proxyProc) decisionsSince(t *testing.T, mark int) []decision {
	t.Helper()
	var out []decision
	for _, line := range p.lines()[mark:] {
		d, ok, err := testkit.ParseDecision(line)
		if err != nil {
			t.Fatalf("proxy %s printed a stdout line that is no decision-log line: %v", p.name, err)
		}
		if ok {
			out = append(out, d)
		}
	}
	return out
}

// waitDecision returns the first decision after mark for which match holds,
// polling the proxy's stdout (the line is written before the response, but
// reaches the test through a pipe).
func (p *proxyProc) waitDecision(t *testing.T, mark int, what string, match func(decision) bool) decision {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		for _, d := range p.decisionsSince(t, mark) {
			if match(d) {
				return d
			}
		}
		if time.Now().After(deadline) {
			var b strings.Builder
			for _, d := range p.decisionsSince(t, mark) {
				b.WriteString("  " + d.Line + "\n")
			}
			t.Fatalf("proxy %s logged no decision for %s within 10s; decisions since the test began:\n%s\nproxy stderr:\n%s",
				p.name, what, b.String(), tail(p.stderr.String(), 4000))
		}
		time.Sleep(20 * time.Millisecond) // polling for the log line to arrive
	}
}

// decisionFor is waitDecision for a digest (and, if not empty, the
// reference asked for).
func (p *proxyProc) decisionFor(t *testing.T, mark int, digest, reference string) decision {
	t.Helper()
	what := digest
	if reference != "" {
		what += " asked for as " + reference
	}
	return p.waitDecision(t, mark, what, func(d decision) bool {
		return d.Digest == digest && (reference == "" || d.Reference == reference)
	})
}

// checkDecision asserts the fields every decision of the main policy has.
func checkDecision(t *testing.T, d decision, want, image, rule string) {
	t.Helper()
	var problems []string
	if d.Decision != want {
		problems = append(problems, fmt.Sprintf("decision %q, want %q", d.Decision, want))
	}
	if d.Image != image {
		problems = append(problems, fmt.Sprintf("image %q, want %q", d.Image, image))
	}
	if rule != "" && d.Rule != rule {
		problems = append(problems, fmt.Sprintf("rule %q, want %q", d.Rule, rule))
	}
	if d.Upstream != "lab" {
		problems = append(problems, fmt.Sprintf("upstream %q, want lab", d.Upstream))
	}
	// Every field is there (testkit.ParseDecision checked); these must
	// also have a value.
	if d.Time.IsZero() || d.Level == "" || d.Digest == "" || d.Reference == "" || d.Enforcement == "" || d.Client.Addr == "" {
		problems = append(problems, "time, level, digest, reference, enforcement and client.addr must all be set")
	}
	// A denial answered from the verdict cache is decided without fetching
	// the manifest again, so only a fresh decision must know its media type.
	if d.MediaType == "" && !d.Cached {
		problems = append(problems, "mediaType must be set")
	}
	if want != "allow" && len(d.Reasons) == 0 {
		problems = append(problems, "a "+want+" must give its reasons")
	}
	if len(problems) > 0 {
		t.Errorf("decision log line:\n%s\n%s", d.Line, strings.Join(problems, "\n"))
	}
}

// httpClient talks to loopback only, through no proxy.
var httpClient = &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{Proxy: nil}}

// manifestAccept is what runtimes send when asking for a manifest.
const manifestAccept = "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, " +
	"application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.docker.distribution.manifest.v2+json"

type response struct {
	status int
	header http.Header
	body   []byte
}

// request sends one request and reads the whole answer.
func request(t *testing.T, method, url string, body io.Reader, header http.Header) response {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, url, body)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: reading the body: %v", method, url, err)
	}
	return response{status: resp.StatusCode, header: resp.Header, body: b}
}

func getManifest(t *testing.T, method, url string) response {
	t.Helper()
	return request(t, method, url, nil, http.Header{"Accept": {manifestAccept}})
}

// ociError is the distribution-spec error body.
type ociError struct {
	Errors []struct {
		Code    string          `json:"code"`
		Message string          `json:"message"`
		Detail  json.RawMessage `json:"detail"`
	} `json:"errors"`
}

// wantOCIError asserts r is an OCI error answer with the status and code.
func wantOCIError(t *testing.T, what string, r response, status int, code string) ociError {
	t.Helper()
	var e ociError
	if r.status != status {
		t.Fatalf("%s: status %d, want %d; body: %s", what, r.status, status, r.body)
	}
	if err := json.Unmarshal(r.body, &e); err != nil || len(e.Errors) == 0 {
		t.Fatalf("%s: body is not an OCI error (%v): %s", what, err, r.body)
	}
	if e.Errors[0].Code != code {
		t.Fatalf("%s: error code %q, want %q; body: %s", what, e.Errors[0].Code, code, r.body)
	}
	return e
}

// crane runs crane and returns its combined output.
func crane(t *testing.T, args ...string) (string, error) {
	t.Helper()
	return lab.tool(t.Context(), nil, "crane", args...)
}

// mustSucceed fails the test with the tool's output when err is not nil.
func mustSucceed(t *testing.T, what, out string, err error) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s failed: %v\noutput:\n%s", what, err, out)
	}
}

// mustFail fails the test when err is nil, and returns the output.
func mustFail(t *testing.T, what, out string, err error) string {
	t.Helper()
	if err == nil {
		t.Fatalf("%s succeeded, want it refused; output:\n%s", what, out)
	}
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		t.Fatalf("%s did not run: %v\n%s", what, err, out)
	}
	return out
}

// wantContains asserts that out contains every one of subs.
func wantContains(t *testing.T, what, out string, subs ...string) {
	t.Helper()
	for _, s := range subs {
		if !strings.Contains(out, s) {
			t.Errorf("%s: output does not contain %q; output:\n%s", what, s, out)
		}
	}
}

// skopeo runs skopeo with a registries.conf that remaps lab.example to the
// proxy's lab upstream, as CRI-O and podman are configured to use it.
func skopeo(t *testing.T, p *proxyProc, args ...string) (string, error) {
	t.Helper()
	return skopeoVia(t, p, "lab.example", "lab", args...)
}

// skopeoVia is skopeo with prefix remapped to the proxy's upstream.
func skopeoVia(t *testing.T, p *proxyProc, prefix, upstream string, args ...string) (string, error) {
	t.Helper()
	conf := filepath.Join(t.TempDir(), "registries.conf")
	text := fmt.Sprintf("unqualified-search-registries = []\n\n[[registry]]\nprefix = %q\nlocation = \"%s/%s\"\ninsecure = true\n", prefix, p.addr, upstream)
	if err := os.WriteFile(conf, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	all := append([]string{"--insecure-policy", "--registries-conf", conf}, args...)
	return lab.tool(t.Context(), nil, "skopeo", all...)
}

// tail keeps the end of a long text.
func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "..." + s[len(s)-n:]
}

// canonicalDecisions parses JSON lines and returns each decision without its
// time (each sink stamps its own), re-encoded with sorted keys. Every line
// must be a complete JSON object.
func canonicalDecisions(what, text string) ([]string, error) {
	var out []string
	if text != "" && !strings.HasSuffix(text, "\n") {
		return nil, fmt.Errorf("%s ends with an incomplete line: %q", what, tail(text, 200))
	}
	sc := bufio.NewScanner(strings.NewReader(text))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for n := 1; sc.Scan(); n++ {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			return nil, fmt.Errorf("%s line %d is not one complete JSON object: %v: %s", what, n, err, sc.Text())
		}
		if m["msg"] != "decision" {
			continue
		}
		delete(m, "time")
		b, _ := json.Marshal(m)
		out = append(out, string(b))
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%s: %v", what, err)
	}
	return out, nil
}

// compareAudit checks, once p has stopped, that its audit file holds
// exactly the decisions it printed on stdout, one complete JSON line each.
func compareAudit(p *proxyProc) error {
	stdout, err := canonicalDecisions("stdout", p.stdout.String())
	if err != nil {
		return err
	}
	raw, err := os.ReadFile(p.auditFile)
	if err != nil {
		return fmt.Errorf("audit.file: %v", err)
	}
	file, err := canonicalDecisions("audit.file "+p.auditFile, string(raw))
	if err != nil {
		return err
	}
	if len(file) != len(stdout) {
		return fmt.Errorf("stdout has %d decisions, audit.file %d", len(stdout), len(file))
	}
	a, b := slices.Clone(stdout), slices.Clone(file)
	sort.Strings(a)
	sort.Strings(b)
	if !reflect.DeepEqual(a, b) {
		for i := range a {
			if a[i] != b[i] {
				return fmt.Errorf("stdout and audit.file differ, first at:\n stdout: %s\n file:   %s", a[i], b[i])
			}
		}
	}
	return nil
}

// countDecisions counts the decisions on p's stdout.
func countDecisions(p *proxyProc) (int, error) {
	d, err := canonicalDecisions("stdout", p.stdout.String())
	return len(d), err
}
