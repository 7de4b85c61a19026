//go:build e2e

package e2e_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/core/remotes"
	"github.com/containerd/containerd/v2/core/remotes/docker"
	"github.com/containerd/containerd/v2/core/remotes/docker/config"
	containerdlog "github.com/containerd/log"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/crypto/bcrypt"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// A node as the kubelet sees it: containerd's own resolver
// (core/remotes/docker with config.ConfigureHosts reading a certs.d
// folder, the code containerd's CRI plugin runs for every pull) over the
// files `authz-proxy node-config` wrote. The upstream is named after the
// registry's own host:port, so that the same image reference goes to the
// proxy when the node has its file and to the registry itself when not.

func init() {
	// containerd's resolver logs each refused fetch at info: the tests
	// assert what it returns.
	_ = containerdlog.SetLevel("warn")
}

// nodeProxy starts a proxy whose upstream is the suite's registry under
// its own host:port name.
func nodeProxy(t *testing.T) *proxyProc {
	t.Helper()
	return nodeProxyNamed(t, lab.reg)
}

// nodeProxyNamed starts a proxy whose upstream is the suite's registry
// under the name given.
func nodeProxyNamed(t *testing.T, name string) *proxyProc {
	t.Helper()
	return startTestProxy(t, "node", nodeProxyConfig(name))
}

// nodeProxyConfig is the configuration of nodeProxyNamed.
func nodeProxyConfig(name string) string {
	return fmt.Sprintf(`listen:
  addr: {{ADDR}}
upstreams:
  - name: %[1]s
    url: "http://%[3]s"
    insecure: true
audit:
  file: {{AUDIT}}
attestors:
  - name: ci
    publicKeys:
      - file: %[2]q
policy:
  rules:
    - name: e2e
      images: ["%[1]s/e2e/**"]
      require:
        - signature:
            attestors: [ci]
  default:
    action: deny
`, name, lab.ciPub, lab.reg)
}

// nodeConfig runs the binary's node-config for containerd into dir.
func nodeConfig(t *testing.T, dir string, args ...string) string {
	t.Helper()
	cmd := exec.CommandContext(t.Context(), lab.proxyBin, append([]string{"node-config", "--runtime", "containerd", "--out", dir}, args...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("node-config %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// containerdPull pulls ref as containerd's CRI plugin resolves it, with
// the hosts of certsDir: the manifest by its tag (HEAD first), then the
// config and every layer, each checked against its digest. It returns the
// manifest's digest.
func containerdPull(ctx context.Context, certsDir, ref string) (digest.Digest, error) {
	resolver := docker.NewResolver(docker.ResolverOptions{
		Hosts: config.ConfigureHosts(ctx, config.HostOptions{HostDir: config.HostDirFromRoot(certsDir)}),
	})
	name, desc, err := resolver.Resolve(ctx, ref)
	if err != nil {
		return "", err
	}
	fetcher, err := resolver.Fetcher(ctx, name)
	if err != nil {
		return "", err
	}
	raw, err := fetchAll(ctx, fetcher, desc)
	if err != nil {
		return "", err
	}
	var m ocispec.Manifest
	if err := json.Unmarshal(raw, &m); err != nil {
		return "", err
	}
	for _, d := range append([]ocispec.Descriptor{m.Config}, m.Layers...) {
		if _, err := fetchAll(ctx, fetcher, d); err != nil {
			return "", err
		}
	}
	return desc.Digest, nil
}

func fetchAll(ctx context.Context, f remotes.Fetcher, d ocispec.Descriptor) ([]byte, error) {
	rc, err := f.Fetch(ctx, d)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	b, err := io.ReadAll(io.LimitReader(rc, 64<<20))
	if err != nil {
		return nil, err
	}
	if got := digest.FromBytes(b); got != d.Digest {
		return nil, fmt.Errorf("%s: got bytes of %s", d.Digest, got)
	}
	return b, nil
}

func TestContainerdPullsThroughTheGeneratedHostsFileAndNothingElse(t *testing.T) {
	p := nodeProxy(t)
	certs := t.TempDir()
	nodeConfig(t, certs, "--server", p.url(), "--upstream", lab.reg)
	hosts, err := os.ReadFile(filepath.Join(certs, lab.reg, "hosts.toml"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(hosts), `server = "`+p.url()+`"`) {
		t.Fatalf("the generated hosts.toml does not name the proxy:\n%s", hosts)
	}
	ctx := t.Context()
	signed, unsigned := lab.reg+"/e2e/app:signed", lab.reg+"/e2e/app:unsigned"

	t.Run("the allowed image is pulled through the proxy", func(t *testing.T) {
		mark := p.mark()
		got, err := containerdPull(ctx, certs, signed)
		if err != nil {
			t.Fatalf("containerd's resolver could not pull %s: %v", signed, err)
		}
		if got.String() != lab.img.signed.String() {
			t.Errorf("pulled %s, want %s", got, lab.img.signed)
		}
		d := p.waitDecision(t, mark, "the signed pull", func(d decision) bool { return d.Reference == "signed" })
		if d.Decision != "allow" || d.Rule != "e2e" || d.Upstream != lab.reg || d.Digest != lab.img.signed.String() {
			t.Errorf("decision: %s", d)
		}
	})
	t.Run("the denied image is refused with 403", func(t *testing.T) {
		mark := p.mark()
		_, err := containerdPull(ctx, certs, unsigned)
		if err == nil || !strings.Contains(err.Error(), "403 Forbidden") {
			t.Fatalf("containerd's resolver: %v, want the proxy's 403", err)
		}
		if !strings.Contains(err.Error(), p.addr) {
			t.Errorf("the refusal %q does not come from the proxy at %s", err, p.addr)
		}
		d := p.waitDecision(t, mark, "the unsigned pull", func(d decision) bool { return d.Reference == "unsigned" })
		if d.Decision != "deny" || d.Rule != "e2e" || d.Upstream != lab.reg || d.Digest != lab.img.unsigned.String() {
			t.Errorf("decision: %s", d)
		}
	})
	t.Run("a registry with no generated file reaches the origin", func(t *testing.T) {
		out := nodeConfig(t, certs, "--remove")
		if !strings.Contains(out, "removed "+filepath.Join(certs, lab.reg, "hosts.toml")) {
			t.Fatalf("node-config --remove did not remove the hosts.toml:\n%s", out)
		}
		mark := p.mark()
		got, err := containerdPull(ctx, certs, unsigned)
		if err != nil {
			t.Fatalf("without its file, containerd should reach the registry itself: %v", err)
		}
		if got.String() != lab.img.unsigned.String() {
			t.Errorf("pulled %s, want the unsigned image %s", got, lab.img.unsigned)
		}
		time.Sleep(200 * time.Millisecond) // a decision line would have arrived by now
		if ds := p.decisionsSince(t, mark); len(ds) > 0 {
			t.Errorf("the proxy saw the pull: %v", ds)
		}
	})
}

// criNode is a CRI image service over a unix socket that pulls as
// containerd's CRI plugin does, with containerd's resolver over certsDir:
// what the canary talks to on a node, without a containerd daemon.
type criNode struct {
	runtimeapi.UnimplementedImageServiceServer
	certsDir string
	mu       sync.Mutex
	images   map[string]bool // the image references pulled and not removed
}

func (n *criNode) PullImage(ctx context.Context, req *runtimeapi.PullImageRequest) (*runtimeapi.PullImageResponse, error) {
	ref := req.GetImage().GetImage()
	d, err := containerdPull(ctx, n.certsDir, ref)
	if err != nil {
		return nil, status.Errorf(codes.Unknown, "failed to pull and unpack image %q: %v", ref, err)
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	n.images[d.String()] = true
	return &runtimeapi.PullImageResponse{ImageRef: d.String()}, nil
}

func (n *criNode) RemoveImage(_ context.Context, req *runtimeapi.RemoveImageRequest) (*runtimeapi.RemoveImageResponse, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	delete(n.images, req.GetImage().GetImage())
	return &runtimeapi.RemoveImageResponse{}, nil
}

func (n *criNode) holds(ref string) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.images[ref]
}

func startCRINode(t *testing.T, certsDir string) (*criNode, string) {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "cri.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	n := &criNode{certsDir: certsDir, images: map[string]bool{}}
	srv := grpc.NewServer()
	runtimeapi.RegisterImageServiceServer(srv, n)
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(srv.Stop)
	return n, "unix://" + sock
}

func TestCanaryReportsEnforcementAsTheNodesRuntimePulls(t *testing.T) {
	p := nodeProxy(t)
	certs := t.TempDir()
	nodeConfig(t, certs, "--server", p.url(), "--upstream", lab.reg)
	node, endpoint := startCRINode(t, certs)
	signed, unsigned := lab.reg+"/e2e/app:signed", lab.reg+"/e2e/app:unsigned"
	canary := func(t *testing.T, extra ...string) (string, int) {
		t.Helper()
		args := append([]string{"canary", "--cri", endpoint, "--node", "worker-1", "--allowed", signed, "--denied", unsigned,
			"--runtime", "containerd", "--hosts", certs, "--server", p.url()}, extra...)
		cmd := exec.CommandContext(t.Context(), lab.proxyBin, args...)
		out, err := cmd.CombinedOutput()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		return string(out), code
	}

	t.Run("with the generated file: enforced, exit 0", func(t *testing.T) {
		out, code := canary(t)
		if code != 0 {
			t.Fatalf("exit %d, want 0:\n%s", code, out)
		}
		wantContains(t, "canary", out, "node worker-1", "mirror configured    yes", "allowed pull served  yes", "denied pull refused  yes",
			"refused with 403", "ENFORCED: this node pulls through the proxy")
	})
	t.Run("as JSON", func(t *testing.T) {
		out, code := canary(t, "--output", "json")
		var r struct {
			Node     string `json:"node"`
			Enforced bool   `json:"enforced"`
			Checks   []struct {
				Name string `json:"name"`
				OK   bool   `json:"ok"`
			} `json:"checks"`
		}
		if err := json.Unmarshal([]byte(out), &r); err != nil || code != 0 {
			t.Fatalf("exit %d, %v:\n%s", code, err, out)
		}
		if r.Node != "worker-1" || !r.Enforced || len(r.Checks) != 3 {
			t.Errorf("report %+v", r)
		}
	})
	t.Run("the proxy down: reported, and nothing pulled from the origin", func(t *testing.T) {
		down := nodeProxy(t)
		dcerts := t.TempDir()
		nodeConfig(t, dcerts, "--server", down.url(), "--upstream", lab.reg)
		_ = down.stop()
		dnode, dendpoint := startCRINode(t, dcerts)
		cmd := exec.CommandContext(t.Context(), lab.proxyBin, "canary", "--cri", dendpoint, "--node", "worker-2", "--allowed", signed, "--denied", unsigned,
			"--runtime", "containerd", "--hosts", dcerts, "--server", down.url(), "--timeout", "20s")
		outb, err := cmd.CombinedOutput()
		out := string(outb)
		if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 {
			t.Fatalf("%v, want exit 1:\n%s", err, out)
		}
		wantContains(t, "canary", out, "allowed pull served  NO", "is the proxy down?", "ENFORCED, but not every check passed")
		if dnode.holds(lab.img.unsigned.String()) || dnode.holds(lab.img.signed.String()) {
			t.Error("with the proxy down the node pulled from the origin")
		}
	})
	t.Run("with the file removed: not enforced, exit 1, the image removed again", func(t *testing.T) {
		nodeConfig(t, certs, "--remove")
		out, code := canary(t)
		if code != 1 {
			t.Fatalf("exit %d, want 1:\n%s", code, out)
		}
		wantContains(t, "canary", out, "mirror configured    NO", "pulls "+lab.reg+" from the registry itself",
			"denied pull refused  NO", "NOT ENFORCED: "+unsigned, "removed from the node again", "NOT ENFORCED on this node")
		if node.holds(lab.img.unsigned.String()) {
			t.Error("the canary left the denied image on the node")
		}
	})
	t.Run("every interval: authz_proxy_canary_enforced{node} is 0", func(t *testing.T) {
		port, err := freePort()
		if err != nil {
			t.Fatal(err)
		}
		addr := fmt.Sprintf("127.0.0.1:%d", port)
		cmd := exec.CommandContext(t.Context(), lab.proxyBin, "canary", "--cri", endpoint, "--node", "worker-1", "--allowed", signed, "--denied", unsigned,
			"--runtime", "containerd", "--hosts", certs, "--server", p.url(), "--every", "1h", "--metrics", addr)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
		deadline := time.Now().Add(30 * time.Second)
		for {
			body := ""
			if resp, err := http.Get("http://" + addr + "/metrics"); err == nil {
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				body = string(b)
			}
			if strings.Contains(body, "authz_proxy_canary_last_run_timestamp_seconds") {
				wantContains(t, "metrics", body, `authz_proxy_canary_enforced{node="worker-1"} 0`,
					`authz_proxy_canary_check{check="denied_refused",node="worker-1"} 0`,
					`authz_proxy_canary_check{check="allowed_served",node="worker-1"} 1`)
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("no canary run in the metrics after 30s:\n%s", body)
			}
			time.Sleep(100 * time.Millisecond)
		}
	})
}

// TestCRIOPullsThroughTheGeneratedDropIn is the same for CRI-O and podman:
// skopeo (containers/image, the library CRI-O pulls with) reads the
// drop-in node-config writes, for the registry under a host name without a
// port. (An upstream named by host:port cannot be a location's path
// segment: node-config refuses it for cri-o, and the containerd test above
// shows the way to the origin.)
func TestCRIOPullsThroughTheGeneratedDropIn(t *testing.T) {
	const name = "registry.lab"
	p := nodeProxyNamed(t, name)
	etc := t.TempDir()
	cmd := exec.CommandContext(t.Context(), lab.proxyBin, "node-config", "--runtime", "cri-o", "--out", etc, "--server", p.url(), "--upstream", name)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("node-config: %v\n%s", err, out)
	}
	dropIn := filepath.Join(etc, "registries.conf.d", "99-authz-proxy.conf")
	inspect := func(ref string) (string, error) {
		return lab.tool(t.Context(), nil, "skopeo", "--insecure-policy", "--registries-conf", dropIn, "inspect", "--raw", "docker://"+ref)
	}
	t.Run("the allowed image is served by the proxy", func(t *testing.T) {
		mark := p.mark()
		out, err := inspect(name + "/e2e/app:signed")
		mustSucceed(t, "skopeo inspect signed", out, err)
		d := p.waitDecision(t, mark, "the signed pull", func(d decision) bool { return d.Reference == "signed" })
		if d.Decision != "allow" || d.Upstream != name || d.Digest != lab.img.signed.String() {
			t.Errorf("decision: %s", d)
		}
	})
	t.Run("the denied image is refused with the proxy's reason", func(t *testing.T) {
		mark := p.mark()
		out, err := inspect(name + "/e2e/app:unsigned")
		msg := mustFail(t, "skopeo inspect unsigned", out, err)
		wantContains(t, "skopeo", msg, "denied", "denied by rule")
		d := p.waitDecision(t, mark, "the unsigned pull", func(d decision) bool { return d.Reference == "unsigned" })
		if d.Decision != "deny" || d.Upstream != name || d.Rule != "e2e" {
			t.Errorf("decision: %s", d)
		}
	})
	t.Run("node-config refuses an upstream named with a port", func(t *testing.T) {
		cmd := exec.CommandContext(t.Context(), lab.proxyBin, "node-config", "--runtime", "cri-o", "--out", t.TempDir(), "--server", p.url(), "--upstream", lab.reg)
		out, err := cmd.CombinedOutput()
		if err == nil || !strings.Contains(string(out), "cannot hold a port") {
			t.Errorf("%v: %s", err, out)
		}
	})
}

// containerd sends the credential a hosts.toml [header] gives it: with
// clients on, the node's pull authenticates, and without it gets 401.
func TestContainerdPullsWithTheCredentialOfItsHostsFile(t *testing.T) {
	hash, err := bcrypt.GenerateFromPassword([]byte("node-password"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	htpasswd := filepath.Join(t.TempDir(), "users.htpasswd")
	if err := os.WriteFile(htpasswd, []byte("node:"+string(hash)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	p := startTestProxy(t, "node-clients", nodeProxyConfig(lab.reg)+fmt.Sprintf(`clients:
  htpasswd: %q
  access: [{principals: ["user:node"], images: ["%s/**"]}]
`, htpasswd, lab.reg))
	certs := t.TempDir()
	nodeConfig(t, certs, "--server", p.url(), "--upstream", lab.reg)
	signed := lab.reg + "/e2e/app:signed"
	if _, err := containerdPull(t.Context(), certs, signed); err == nil || !strings.Contains(err.Error(), "401") {
		t.Fatalf("without a credential: %v, want the proxy's 401", err)
	}
	hostsFile := filepath.Join(certs, lab.reg, "hosts.toml")
	f, err := os.OpenFile(hostsFile, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	_, err = fmt.Fprintf(f, "\n[header]\n  Authorization = [\"Basic %s\"]\n", base64.StdEncoding.EncodeToString([]byte("node:node-password")))
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Fatal(err)
	}
	mark := p.mark()
	got, err := containerdPull(t.Context(), certs, signed)
	if err != nil {
		t.Fatalf("with the hosts.toml header: %v", err)
	}
	if got.String() != lab.img.signed.String() {
		t.Errorf("pulled %s, want %s", got, lab.img.signed)
	}
	if d := p.waitDecision(t, mark, "the signed pull", func(d decision) bool { return d.Reference == "signed" }); d.Decision != "allow" || d.Principal != "user:node" {
		t.Errorf("decision %s; want allowed, pulled by user:node", d)
	}
}
