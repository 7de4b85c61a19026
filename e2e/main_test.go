//go:build e2e

// Package e2e_test drives the authz-proxy binary end to end: the real
// distribution registry as the upstream, images signed by the real cosign
// CLI, and pulls by the real crane, skopeo and cosign clients through the
// proxy; the decision-log report is opened in headless chromium; the
// content store on a folder and on versitygw's S3. Everything listens on
// 127.0.0.1 only; nothing needs the internet.
//
// Run with:
//
//	AUTHZ_E2E_TOOLS=$(bash scripts/tools.sh) go test -tags e2e -count=1 -v -timeout 20m ./e2e/...
package e2e_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/authz-proxy/authz-proxy/internal/testkit"
)

// lab is the shared world of the suite: set up once in TestMain.
var lab *world

// world is the upstream registry, the keys, the images pushed and signed,
// and the main proxy in front of them.
type world struct {
	tools    string // folder holding registry, cosign, crane
	dir      string // scratch folder for everything
	proxyBin string
	reg      string // upstream registry host:port
	registry *process

	ciKey, ciPub       string
	rogueKey, roguePub string
	trustedRoot        string // an empty Sigstore trusted root: keeps cosign verify off the network

	img images

	main *proxyProc // the proxy every test shares
}

// images are the digests of everything pushed to the upstream. Repository
// names are upstream paths; through the proxy they are lab/<repository>.
type images struct {
	signed      v1.Hash // e2e/app:signed, cosign-signed by ci (.sig tag), Docker schema 2
	unsigned    v1.Hash // e2e/app:unsigned
	rogue       v1.Hash // e2e/app:rogue, signed by the rogue key only
	copied      v1.Hash // e2e/app:copied, carrying signed's ci signature in its .sig tag
	referrer    v1.Hash // e2e/referrer:signed, cosign --registry-referrers-mode=oci-1-1
	index       v1.Hash // e2e/multiarch:v1, index signed by ci (not recursively)
	children    []v1.Hash
	badIndex    v1.Hash // e2e/multiarch:unsigned, index never signed
	badChildren []v1.Hash
	trojanBase  v1.Hash // e2e/trojan:base, unsigned
	trojanOCI   v1.Hash // e2e/trojan:sha256-<trojanBase hex>.sig, runnable OCI image with a subject
	trojanDock  v1.Hash // e2e/trojan2:sha256-<trojanBase hex>.sig, runnable Docker image with a subject
	// disguised: e2e/disguised:sha256-<trojanBase hex>.sig, a runnable
	// image (one tar+gzip layer holding bin/payload) whose layer is
	// labelled application/octet-stream, with a subject.
	disguised v1.Hash
	tool      v1.Hash // tools/debug:latest, unsigned but allowlisted
	misc      v1.Hash // misc/app:v1, unsigned, matched by no rule
	tarball   string  // an image tarball for crane push
}

const setupTimeout = 4 * time.Minute

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	tools := os.Getenv("AUTHZ_E2E_TOOLS")
	if tools == "" {
		fmt.Fprintln(os.Stderr, "FAIL: e2e: AUTHZ_E2E_TOOLS is not set. Run `bash scripts/tools.sh` (it builds registry, cosign and crane "+
			"and installs skopeo) and set AUTHZ_E2E_TOOLS to the folder it prints, e.g.\n"+
			"  AUTHZ_E2E_TOOLS=$(bash scripts/tools.sh) go test -tags e2e -count=1 -v ./e2e/...")
		return 1
	}
	for _, tool := range []string{"registry", "cosign", "cosign3", "crane", "notation", "versitygw", "helm"} {
		if _, err := os.Stat(filepath.Join(tools, tool)); err != nil {
			fmt.Fprintf(os.Stderr, "FAIL: e2e: AUTHZ_E2E_TOOLS=%s has no %s binary (%v): run `bash scripts/tools.sh`\n", tools, tool, err)
			return 1
		}
	}
	for _, tool := range []string{"skopeo", "chromium"} {
		if _, err := exec.LookPath(tool); err != nil {
			fmt.Fprintf(os.Stderr, "FAIL: e2e: %s is not on PATH: run `bash scripts/tools.sh`\n", tool)
			return 1
		}
	}
	dir, err := os.MkdirTemp("", "authz-proxy-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "FAIL: e2e:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	w := &world{tools: tools, dir: dir}
	defer w.close()
	start := time.Now()
	if err := w.setup(); err != nil {
		fmt.Fprintf(os.Stderr, "FAIL: e2e setup: %v\n", err)
		if w.registry != nil && w.registry.output.Len() > 0 {
			fmt.Fprintf(os.Stderr, "registry log:\n%s\n", w.registry.output.String())
		}
		return 1
	}
	fmt.Fprintf(os.Stderr, "e2e: setup done in %s (registry %s, proxy %s)\n", time.Since(start).Round(time.Millisecond), w.reg, w.main.addr)
	lab = w
	code := m.Run()

	// At the end, every decision the main proxy printed must be in its
	// audit file too: one complete JSON line each.
	if err := w.main.stop(); err != nil {
		fmt.Fprintf(os.Stderr, "FAIL: e2e: stopping the main proxy: %v\nstderr:\n%s\n", err, w.main.stderr.String())
		code = 1
	}
	if err := compareAudit(w.main); err != nil {
		fmt.Fprintf(os.Stderr, "--- FAIL: audit file of the main proxy (checked after all tests): %v\n", err)
		code = 1
	} else {
		n, _ := countDecisions(w.main)
		fmt.Fprintf(os.Stderr, "--- PASS: audit file of the main proxy holds the same %d decisions as its stdout\n", n)
	}
	return code
}

func (w *world) close() {
	if w.main != nil {
		_ = w.main.stop()
	}
	if w.registry != nil {
		_ = w.registry.stop()
	}
}

func (w *world) setup() error {
	ctx, cancel := context.WithTimeout(context.Background(), setupTimeout)
	defer cancel()
	for _, d := range []string{"home", "docker", "xdg", "tuf"} {
		if err := os.MkdirAll(filepath.Join(w.dir, d), 0o755); err != nil {
			return err
		}
	}
	// An empty trusted root: with --key and --insecure-ignore-tlog cosign
	// verify needs nothing from it, and with it cosign does not try to
	// fetch one from the Sigstore TUF CDN.
	w.trustedRoot = filepath.Join(w.dir, "trusted_root.json")
	if err := os.WriteFile(w.trustedRoot, []byte(`{"mediaType":"application/vnd.dev.sigstore.trustedroot+json;version=0.1"}`+"\n"), 0o644); err != nil {
		return err
	}

	// Build the proxy in the background while the registry starts.
	w.proxyBin = filepath.Join(w.dir, "authz-proxy")
	built := make(chan error, 1)
	go func() {
		cmd := exec.CommandContext(ctx, "go", "build", "-o", w.proxyBin, "./cmd/authz-proxy")
		cmd.Dir = ".."
		out, err := cmd.CombinedOutput()
		if err != nil {
			err = fmt.Errorf("go build ./cmd/authz-proxy: %v\n%s", err, out)
		}
		built <- err
	}()
	for _, step := range []func(context.Context) error{w.startRegistry, w.keys, w.push, w.sign} {
		if err := step(ctx); err != nil {
			return errors.Join(err, <-built) // the build's error too, once it is done
		}
	}
	if err := <-built; err != nil {
		return err
	}
	p, err := startProxy(ctx, w, "main", w.mainConfig())
	if err != nil {
		return err
	}
	w.main = p
	return nil
}

// startRegistry runs the suite's upstream: the distribution registry on a
// free loopback port.
func (w *world) startRegistry(ctx context.Context) error {
	addr, p, err := w.runRegistry(ctx, filepath.Join(w.dir, "registry-data"))
	w.reg, w.registry = addr, p
	return err
}

// runRegistry runs a distribution registry keeping its content in data,
// on a free loopback port, and returns its host:port.
func (w *world) runRegistry(ctx context.Context, data string) (string, *process, error) {
	port, err := freePort()
	if err != nil {
		return "", nil, err
	}
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	cfg := data + ".yml"
	text := fmt.Sprintf(`version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: %s
  delete:
    enabled: true
http:
  addr: %s
`, data, addr)
	if err := os.WriteFile(cfg, []byte(text), 0o644); err != nil {
		return "", nil, err
	}
	p, err := startProcess(w.env(), &testkit.Buffer{}, filepath.Join(w.tools, "registry"), "serve", cfg)
	if err != nil {
		return "", nil, fmt.Errorf("starting registry: %w", err)
	}
	if err := waitReady(ctx, "http://"+addr+"/v2/", p.exited); err != nil {
		return "", p, fmt.Errorf("registry did not come up: %w\n%s", err, p.output.String())
	}
	return addr, p, nil
}

// env is the environment for every tool: a private HOME and config
// folders, no proxies, an empty cosign password.
func (w *world) env() []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		switch strings.ToUpper(k) {
		case "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY", "HOME", "DOCKER_CONFIG",
			"XDG_RUNTIME_DIR", "XDG_CONFIG_HOME", "TUF_ROOT", "COSIGN_PASSWORD", "COSIGN_EXPERIMENTAL",
			"REGISTRY_AUTH_FILE", "CONTAINERS_REGISTRIES_CONF", "REGISTRY_HTTP_ADDR", "REGISTRY_STORAGE":
			continue
		}
		env = append(env, kv)
	}
	return append(env,
		"HOME="+filepath.Join(w.dir, "home"),
		"DOCKER_CONFIG="+filepath.Join(w.dir, "docker"),
		"XDG_RUNTIME_DIR="+filepath.Join(w.dir, "xdg"),
		"XDG_CONFIG_HOME="+filepath.Join(w.dir, "xdg"),
		"TUF_ROOT="+filepath.Join(w.dir, "tuf"),
		"COSIGN_PASSWORD=",
	)
}

// keys makes the ci and rogue key pairs with cosign.
func (w *world) keys(ctx context.Context) error {
	for _, k := range []string{"ci", "rogue"} {
		prefix := filepath.Join(w.dir, k)
		if out, err := w.tool(ctx, nil, "cosign", "generate-key-pair", "--output-key-prefix", prefix); err != nil {
			return fmt.Errorf("cosign generate-key-pair %s: %v\n%s", k, err, out)
		}
	}
	w.ciKey, w.ciPub = filepath.Join(w.dir, "ci.key"), filepath.Join(w.dir, "ci.pub")
	w.rogueKey, w.roguePub = filepath.Join(w.dir, "rogue.key"), filepath.Join(w.dir, "rogue.pub")
	return nil
}

// tool runs one of the tools (cosign, crane, registry from AUTHZ_E2E_TOOLS,
// skopeo from PATH) and returns its combined output.
func (w *world) tool(ctx context.Context, extraEnv []string, name string, args ...string) (string, error) {
	path := filepath.Join(w.tools, name)
	if name == "skopeo" {
		path = "skopeo"
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, path, args...)
	cmd.Env = append(w.env(), extraEnv...)
	cmd.Dir = w.dir
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		err = fmt.Errorf("%v (timed out)", err)
	}
	return string(out), err
}

// cosignSign signs repo@digest on the upstream with the key, by digest.
func (w *world) cosignSign(ctx context.Context, key, repo string, digest v1.Hash, referrers bool) error {
	args := []string{"sign", "--key", key, "--tlog-upload=false", "-y", "--allow-http-registry"}
	var env []string
	if referrers {
		args = append(args, "--registry-referrers-mode=oci-1-1")
		env = append(env, "COSIGN_EXPERIMENTAL=1")
	}
	ref := w.reg + "/" + repo + "@" + digest.String()
	args = append(args, ref)
	if out, err := w.tool(ctx, env, "cosign", args...); err != nil {
		return fmt.Errorf("cosign %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return nil
}

func (w *world) sign(ctx context.Context) error {
	i := &w.img
	steps := []func() error{
		func() error { return w.cosignSign(ctx, w.ciKey, "e2e/app", i.signed, false) },
		func() error { return w.cosignSign(ctx, w.rogueKey, "e2e/app", i.rogue, false) },
		func() error { return w.cosignSign(ctx, w.ciKey, "e2e/referrer", i.referrer, true) },
		// The index only, as cosign sign does without --recursive.
		func() error { return w.cosignSign(ctx, w.ciKey, "e2e/multiarch", i.index, false) },
		func() error {
			// A genuine ci signature of signed, copied onto copied's tag.
			src := w.reg + "/e2e/app:" + sigTag(i.signed)
			dst := w.reg + "/e2e/app:" + sigTag(i.copied)
			if out, err := w.tool(ctx, nil, "crane", "copy", "--insecure", src, dst); err != nil {
				return fmt.Errorf("crane copy %s %s: %v\n%s", src, dst, err, out)
			}
			return nil
		},
	}
	for _, step := range steps {
		if err := step(); err != nil {
			return err
		}
	}
	return nil
}

// mainConfig is the main proxy's configuration.
func (w *world) mainConfig() string {
	return w.config("enforce", "http://"+w.reg)
}

// config is the suite's policy with the given enforcement and upstream URL.
// startProxy fills in {{ADDR}} and {{AUDIT}}.
func (w *world) config(enforcement, upstreamURL string) string {
	return fmt.Sprintf(`listen:
  addr: {{ADDR}}
upstreams:
  - name: lab
    url: %q
    insecure: true
defaultUpstream: lab
audit:
  file: {{AUDIT}}
attestors:
  - name: ci
    publicKeys:
      - file: %q
policy:
  enforcement: %s
  allowlist:
    - lab/tools/**
  rules:
    - name: e2e
      images: ["lab/e2e/**"]
      require:
        - signature:
            attestors: [ci]
  default:
    action: deny
`, upstreamURL, w.ciPub, enforcement)
}

// sigTag is cosign's signature tag for d: sha256-<hex>.sig.
func sigTag(d v1.Hash) string { return d.Algorithm + "-" + d.Hex + ".sig" }

// waitReady polls url until it answers 200 (or 401, from a proxy with
// clients), the process exits, or ctx ends.
func waitReady(ctx context.Context, url string, exited <-chan struct{}) error {
	client := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{Proxy: nil}}
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	deadline := time.After(30 * time.Second)
	var last error
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		resp, err := client.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK || resp.StatusCode == http.StatusUnauthorized { // up; 401: it asks clients who they are
				return nil
			}
			err = fmt.Errorf("GET %s: %s", url, resp.Status)
		}
		last = err
		select {
		case <-exited:
			return errors.New("the process exited")
		case <-deadline:
			return fmt.Errorf("not ready after 30s: %v", last)
		case <-ctx.Done():
			return errors.Join(ctx.Err(), last)
		case <-tick.C:
		}
	}
}
