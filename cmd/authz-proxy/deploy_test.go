package main

import (
	"bufio"
	"bytes"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"errors"
	"io"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/BurntSushi/toml"
	"gopkg.in/yaml.v3"

	"github.com/authz-proxy/authz-proxy/internal/config"
)

// The deployment examples under deploy/ are parsed here with the decoders
// of their formats and checked against what the binary does: the flags it
// takes, the configuration it validates, the ports it listens on.

const repoRoot = "../.."

// proxyHost is the proxy's address in every example.
const proxyHost = "authz-proxy.internal:5000"

func readRepoFile(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repoRoot, name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// k8sObject is the part of a Kubernetes object these tests read.
type k8sObject struct {
	Kind     string `yaml:"kind"`
	Metadata struct {
		Name string `yaml:"name"`
	} `yaml:"metadata"`
	Data map[string]string `yaml:"data"`
	Spec struct {
		Template struct {
			Spec podSpec `yaml:"spec"`
		} `yaml:"template"`
		Ports []struct {
			Name       string    `yaml:"name"`
			TargetPort yaml.Node `yaml:"targetPort"`
		} `yaml:"ports"`
	} `yaml:"spec"`
}

type podSpec struct {
	InitContainers []container `yaml:"initContainers"`
	Containers     []container `yaml:"containers"`
	Volumes        []struct {
		Name      string     `yaml:"name"`
		ConfigMap *keySource `yaml:"configMap"`
		Secret    *keySource `yaml:"secret"`
		Projected *struct {
			Sources []struct {
				ConfigMap *keySource `yaml:"configMap"`
				Secret    *keySource `yaml:"secret"`
			} `yaml:"sources"`
		} `yaml:"projected"`
	} `yaml:"volumes"`
}

type keySource struct {
	Name       string `yaml:"name"`
	SecretName string `yaml:"secretName"`
	Items      []struct {
		Key  string `yaml:"key"`
		Path string `yaml:"path"`
	} `yaml:"items"`
}

type container struct {
	Name  string   `yaml:"name"`
	Image string   `yaml:"image"`
	Args  []string `yaml:"args"`
	Ports []struct {
		Name          string `yaml:"name"`
		ContainerPort int    `yaml:"containerPort"`
	} `yaml:"ports"`
	Env []struct {
		Name string `yaml:"name"`
	} `yaml:"env"`
	ReadinessProbe *probe `yaml:"readinessProbe"`
	LivenessProbe  *probe `yaml:"livenessProbe"`
	StartupProbe   *probe `yaml:"startupProbe"`
	VolumeMounts   []struct {
		Name      string `yaml:"name"`
		MountPath string `yaml:"mountPath"`
	} `yaml:"volumeMounts"`
}

type probe struct {
	HTTPGet struct {
		Path string    `yaml:"path"`
		Port yaml.Node `yaml:"port"`
	} `yaml:"httpGet"`
}

func decodeManifests(t *testing.T, name string) []k8sObject {
	t.Helper()
	dec := yaml.NewDecoder(bytes.NewReader(readRepoFile(t, name)))
	var objs []k8sObject
	for {
		var o k8sObject
		err := dec.Decode(&o)
		if errors.Is(err, io.EOF) {
			return objs
		}
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		objs = append(objs, o)
	}
}

// parseServeArgs parses a command line of the binary as serve would, and
// returns the --config value.
func parseServeArgs(t *testing.T, where string, args []string) string {
	t.Helper()
	if len(args) == 0 || args[0] != "serve" {
		t.Fatalf("%s: command line %q does not run serve", where, args)
	}
	fs, path, _ := serveFlags(io.Discard)
	if err := fs.Parse(args[1:]); err != nil || fs.NArg() > 0 {
		t.Fatalf("%s: %q: serve would refuse these flags: %v %v", where, args, err, fs.Args())
	}
	return *path
}

// fakeSecret is what the tests put where a Kubernetes Secret would be.
func fakeSecret(t *testing.T, key string) []byte {
	t.Helper()
	now := time.Now()
	switch key {
	case "tls.crt", "tls.key", "ca.crt":
		_, _, certPEM, keyPEM := newCert(t, &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "authz-proxy.internal"},
			DNSNames: []string{"authz-proxy.internal"}, NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour), IsCA: true, BasicConstraintsValid: true}, nil, nil)
		if key == "tls.key" {
			return keyPEM
		}
		return certPEM
	}
	return []byte("secret")
}

func TestKubernetesManifestsRunAValidConfiguration(t *testing.T) {
	for _, name := range []string{"deploy/kubernetes/authz-proxy.yaml", "deploy/kubernetes/sidecar.yaml"} {
		t.Run(name, func(t *testing.T) {
			objs := decodeManifests(t, name)
			configMaps := map[string]map[string]string{}
			var pod *podSpec
			var service *k8sObject
			for i, o := range objs {
				switch o.Kind {
				case "ConfigMap":
					configMaps[o.Metadata.Name] = o.Data
				case "Deployment", "Job":
					pod = &objs[i].Spec.Template.Spec
				case "Service":
					service = &objs[i]
				}
			}
			if pod == nil {
				t.Fatal("no Deployment or Job")
			}
			var proxy *container
			for i, c := range append(slices.Clone(pod.InitContainers), pod.Containers...) {
				if len(c.Args) > 0 && c.Args[0] == "serve" {
					proxy = &append(slices.Clone(pod.InitContainers), pod.Containers...)[i]
				}
			}
			if proxy == nil {
				t.Fatal("no container runs authz-proxy serve")
			}
			cfgPath := parseServeArgs(t, name, proxy.Args)

			// Lay out the container's files as the kubelet would, from the
			// ConfigMaps here and stand-ins for the Secrets.
			root := t.TempDir()
			put := func(dir, path string, data []byte) {
				full := filepath.Join(root, dir, path)
				if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(full, data, 0o600); err != nil {
					t.Fatal(err)
				}
			}
			project := func(dir string, src *keySource, secret bool) {
				if secret {
					for _, it := range src.Items {
						put(dir, it.Path, fakeSecret(t, it.Key))
					}
					return
				}
				data, ok := configMaps[src.Name]
				if !ok {
					t.Fatalf("volume names ConfigMap %q, which %s does not define", src.Name, name)
				}
				if len(src.Items) == 0 {
					for k, v := range data {
						put(dir, k, []byte(v))
					}
				}
				for _, it := range src.Items {
					v, ok := data[it.Key]
					if !ok {
						t.Fatalf("ConfigMap %s has no key %q", src.Name, it.Key)
					}
					put(dir, it.Path, []byte(v))
				}
			}
			for _, m := range proxy.VolumeMounts {
				for _, v := range pod.Volumes {
					if v.Name != m.Name {
						continue
					}
					switch {
					case v.ConfigMap != nil:
						project(m.MountPath, v.ConfigMap, false)
					case v.Secret != nil:
						project(m.MountPath, v.Secret, true)
					case v.Projected != nil:
						for _, s := range v.Projected.Sources {
							if s.ConfigMap != nil {
								project(m.MountPath, s.ConfigMap, false)
							} else {
								project(m.MountPath, s.Secret, true)
							}
						}
					}
				}
			}
			for _, e := range proxy.Env {
				t.Setenv(e.Name, "from-a-secret")
			}
			full := filepath.Join(root, cfgPath)
			out, errOut, code := runCmd(t, "validate", "--config", full)
			if code != 0 {
				t.Fatalf("the configuration mounted at %s does not validate: exit %d\n%s%s", cfgPath, code, out, errOut)
			}
			c, err := config.Load(full)
			if err != nil {
				t.Fatal(err)
			}

			// Ports: the container declares the proxy's and the metrics'
			// ports, probes ask the metrics listener, the Service targets
			// declared ports.
			ports := map[string]int{}
			for _, p := range proxy.Ports {
				ports[p.Name] = p.ContainerPort
			}
			portOf := func(addr string) int {
				_, p, _ := net.SplitHostPort(addr)
				n, _ := strconv.Atoi(p)
				return n
			}
			if c.Metrics == nil {
				t.Fatal("the configuration has no metrics listener for the probes")
			}
			if len(proxy.Ports) > 0 && (!slices.Contains(mapsValues(ports), portOf(c.Listen.Addr)) || !slices.Contains(mapsValues(ports), portOf(c.Metrics.Addr))) {
				t.Errorf("container ports %v do not include listen.addr %s and metrics.addr %s", ports, c.Listen.Addr, c.Metrics.Addr)
			}
			probes := 0
			for _, pr := range []*probe{proxy.ReadinessProbe, proxy.LivenessProbe, proxy.StartupProbe} {
				if pr == nil {
					continue
				}
				probes++
				port, err := strconv.Atoi(pr.HTTPGet.Port.Value)
				if err != nil {
					port = ports[pr.HTTPGet.Port.Value]
				}
				if port != portOf(c.Metrics.Addr) || (pr.HTTPGet.Path != "/readyz" && pr.HTTPGet.Path != "/healthz") {
					t.Errorf("probe %s on port %s: want /readyz or /healthz on the metrics port %d", pr.HTTPGet.Path, pr.HTTPGet.Port.Value, portOf(c.Metrics.Addr))
				}
			}
			if probes == 0 {
				t.Error("the proxy container has no probe")
			}
			if service != nil {
				for _, p := range service.Spec.Ports {
					if _, ok := ports[p.TargetPort.Value]; !ok {
						t.Errorf("Service port %s targets %q, which the container does not declare", p.Name, p.TargetPort.Value)
					}
				}
			}
		})
	}
}

func mapsValues(m map[string]int) []int {
	var v []int
	for _, n := range m {
		v = append(v, n)
	}
	return v
}

func TestContainerdHostsTOMLMakesTheProxyTheOnlyHost(t *testing.T) {
	files, err := filepath.Glob(filepath.Join(repoRoot, "deploy/containerd/*/hosts.toml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no deploy/containerd/<registry>/hosts.toml: %v", err)
	}
	for _, f := range files {
		rel, _ := filepath.Rel(repoRoot, f)
		t.Run(rel, func(t *testing.T) {
			var hosts struct {
				Server       string         `toml:"server"`
				Capabilities []string       `toml:"capabilities"`
				CA           any            `toml:"ca"`
				Client       any            `toml:"client"`
				SkipVerify   *bool          `toml:"skip_verify"`
				Host         map[string]any `toml:"host"`
			}
			md, err := toml.Decode(string(readRepoFile(t, rel)), &hosts)
			if err != nil {
				t.Fatal(err)
			}
			if u := md.Undecoded(); len(u) > 0 {
				t.Errorf("keys containerd's hosts.toml does not have: %v", u)
			}
			if hosts.Server != "https://"+proxyHost {
				t.Errorf("server = %q, want https://%s", hosts.Server, proxyHost)
			}
			if len(hosts.Host) > 0 {
				t.Errorf("[host] entries %v: containerd falls back to other hosts past a refusal; the proxy must be the only one", hosts.Host)
			}
			if !slices.Contains(hosts.Capabilities, "pull") || !slices.Contains(hosts.Capabilities, "resolve") || slices.Contains(hosts.Capabilities, "push") {
				t.Errorf("capabilities %v: want pull and resolve (the proxy is read-only)", hosts.Capabilities)
			}
			if hosts.SkipVerify != nil && *hosts.SkipVerify {
				t.Error("skip_verify in an example")
			}
		})
	}
}

// shippedDropIn is the drop-in of deploy/containers.
const shippedDropIn = "deploy/containers/registries.conf.d/99-authz-proxy.conf"

func TestRegistriesConfRemapsEachRegistryToTheProxy(t *testing.T) {
	var conf struct {
		UnqualifiedSearchRegistries []string `toml:"unqualified-search-registries"`
		Registry                    []struct {
			Prefix   string `toml:"prefix"`
			Location string `toml:"location"`
			Insecure bool   `toml:"insecure"`
			Blocked  bool   `toml:"blocked"`
			Mirror   []any  `toml:"mirror"`
		} `toml:"registry"`
	}
	md, err := toml.Decode(string(readRepoFile(t, shippedDropIn)), &conf)
	if err != nil {
		t.Fatal(err)
	}
	if u := md.Undecoded(); len(u) > 0 {
		t.Errorf("keys containers-registries.conf does not have: %v", u)
	}
	if len(conf.Registry) == 0 {
		t.Fatal("no [[registry]]")
	}
	for _, r := range conf.Registry {
		if want := proxyHost + "/" + r.Prefix; r.Location != want {
			t.Errorf("registry %s: location %q, want %q (the upstream name as the path prefix)", r.Prefix, r.Location, want)
		}
		if len(r.Mirror) > 0 {
			t.Errorf("registry %s has mirrors: a refused mirror falls back to the original location", r.Prefix)
		}
		if r.Insecure {
			t.Errorf("registry %s: insecure in an example", r.Prefix)
		}
	}
}

// TestNodeConfigWritesTheShippedRuntimeFiles runs node-config as the
// README does and compares what it writes, byte for byte, with
// deploy/containerd and deploy/containers: they are its output. It also
// writes the CA and client certificate it was given beside them, which
// the examples do not ship.
func TestNodeConfigWritesTheShippedRuntimeFiles(t *testing.T) {
	for _, tc := range []struct{ runtime, shipped string }{
		{"containerd", "deploy/containerd"},
		{"cri-o", "deploy/containers"},
	} {
		t.Run(tc.runtime, func(t *testing.T) {
			in, out := t.TempDir(), t.TempDir()
			certs := map[string][]byte{"ca.crt": fakeSecret(t, "ca.crt"), "client.crt": fakeSecret(t, "tls.crt"), "client.key": fakeSecret(t, "tls.key")}
			for name, b := range certs {
				if err := os.WriteFile(filepath.Join(in, name), b, 0o600); err != nil {
					t.Fatal(err)
				}
			}
			stdout, stderr, code := runCmd(t, "node-config", "--runtime", tc.runtime, "--out", out, "--server", "https://"+proxyHost,
				"--upstream", "docker.io", "--upstream", "ghcr.io",
				"--ca", filepath.Join(in, "ca.crt"), "--client-cert", filepath.Join(in, "client.crt"), "--client-key", filepath.Join(in, "client.key"))
			if code != 0 {
				t.Fatalf("exit %d\n%s%s", code, stdout, stderr)
			}
			written := map[string][]byte{}
			if err := filepath.WalkDir(out, func(path string, d os.DirEntry, err error) error {
				if err != nil || d.IsDir() {
					return err
				}
				rel, _ := filepath.Rel(out, path)
				written[rel], err = os.ReadFile(path)
				return err
			}); err != nil {
				t.Fatal(err)
			}
			shipped := 0
			if err := filepath.WalkDir(filepath.Join(repoRoot, tc.shipped), func(path string, d os.DirEntry, err error) error {
				if err != nil || d.IsDir() {
					return err
				}
				shipped++
				rel, _ := filepath.Rel(filepath.Join(repoRoot, tc.shipped), path)
				want, _ := os.ReadFile(path)
				got, ok := written[rel]
				switch {
				case !ok:
					t.Errorf("%s/%s is shipped, node-config does not write it", tc.shipped, rel)
				case !bytes.Equal(got, want):
					t.Errorf("node-config writes %s otherwise than %s/%s:\n%s\nshipped:\n%s", rel, tc.shipped, rel, got, want)
				}
				delete(written, rel)
				return nil
			}); err != nil {
				t.Fatal(err)
			}
			if shipped == 0 {
				t.Fatalf("%s is empty", tc.shipped)
			}
			for rel, b := range written {
				base := filepath.Base(rel)
				src := map[string]string{"authz-proxy-ca.crt": "ca.crt", "authz-proxy-client.cert": "client.crt", "authz-proxy-client.key": "client.key"}[base]
				if src == "" || !bytes.Equal(b, certs[src]) {
					t.Errorf("node-config also writes %s, which is neither shipped nor a copy of a certificate it was given", rel)
				}
			}
		})
	}
}

func TestDockerDaemonJSONNamesTheProxyAsMirror(t *testing.T) {
	var daemon struct {
		RegistryMirrors []string `json:"registry-mirrors"`
	}
	dec := json.NewDecoder(bytes.NewReader(readRepoFile(t, "deploy/docker/daemon.json")))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&daemon); err != nil {
		t.Fatal(err)
	}
	if len(daemon.RegistryMirrors) != 1 || daemon.RegistryMirrors[0] != "https://"+proxyHost {
		t.Errorf("registry-mirrors %v, want [https://%s]", daemon.RegistryMirrors, proxyHost)
	}
}

// dockerfile returns the Dockerfile's instructions, continuation lines
// joined, comments dropped.
func dockerfile(t *testing.T) [][2]string {
	t.Helper()
	var out [][2]string
	sc := bufio.NewScanner(bytes.NewReader(readRepoFile(t, "Dockerfile")))
	var cur string
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if cur == "" && (line == "" || strings.HasPrefix(line, "#")) {
			continue
		}
		if strings.HasSuffix(line, "\\") {
			cur += strings.TrimSuffix(line, "\\") + " "
			continue
		}
		cur += line
		op, arg, _ := strings.Cut(cur, " ")
		out = append(out, [2]string{strings.ToUpper(op), strings.TrimSpace(arg)})
		cur = ""
	}
	return out
}

func TestDockerfileBuildsAndRunsThisBinary(t *testing.T) {
	_ = version // the build sets it with -X main.version
	goMod := string(readRepoFile(t, "go.mod"))
	goVersion := regexp.MustCompile(`(?m)^go (\d+\.\d+)`).FindStringSubmatch(goMod)
	var from, build, copied, entrypoint, cmd, user string
	var exposed []string
	for _, in := range dockerfile(t) {
		switch op, arg := in[0], in[1]; op {
		case "FROM":
			if from == "" {
				from = arg
			}
		case "RUN":
			if strings.Contains(arg, "go build") {
				build = arg
			}
		case "COPY":
			if strings.HasPrefix(arg, "--from=") {
				copied = arg
			}
		case "ENTRYPOINT":
			entrypoint = arg
		case "CMD":
			cmd = arg
		case "EXPOSE":
			exposed = append(exposed, strings.Fields(arg)...)
		case "USER":
			user = arg
		}
	}
	if goVersion == nil || !strings.HasPrefix(from, "golang:"+goVersion[1]+" ") {
		t.Errorf("build stage %q: want golang:%v, the go.mod version", from, goVersion)
	}
	out := regexp.MustCompile(`-o (\S+) \./cmd/authz-proxy$`).FindStringSubmatch(build)
	if !strings.Contains(build, "CGO_ENABLED=0") || !strings.Contains(build, "-X main.version=") || out == nil {
		t.Fatalf("build %q: want a static build (CGO_ENABLED=0) of ./cmd/authz-proxy with -X main.version", build)
	}
	var ep, args []string
	if err := json.Unmarshal([]byte(entrypoint), &ep); err != nil || len(ep) != 1 {
		t.Fatalf("ENTRYPOINT %s: want the binary alone, in exec form", entrypoint)
	}
	if !strings.HasSuffix(copied, out[1]+" "+ep[0]) {
		t.Errorf("COPY %q does not put the built %s at the ENTRYPOINT %s", copied, out[1], ep[0])
	}
	if err := json.Unmarshal([]byte(cmd), &args); err != nil {
		t.Fatalf("CMD %s: want exec form", cmd)
	}
	cfgPath := parseServeArgs(t, "Dockerfile CMD", args)
	for _, o := range decodeManifests(t, "deploy/kubernetes/authz-proxy.yaml") {
		if o.Kind != "Deployment" {
			continue
		}
		c := o.Spec.Template.Spec.Containers[0]
		if !slices.Equal(c.Args, args) {
			t.Errorf("the Deployment runs %q, the image's CMD is %q", c.Args, args)
		}
		for _, p := range c.Ports {
			if !slices.Contains(exposed, strconv.Itoa(p.ContainerPort)) {
				t.Errorf("the Deployment's port %d is not EXPOSEd", p.ContainerPort)
			}
		}
	}
	if filepath.Dir(cfgPath) != "/etc/authz-proxy" {
		t.Errorf("CMD reads %s; the manifests mount the configuration in /etc/authz-proxy", cfgPath)
	}
	if !strings.Contains(user, "nonroot") {
		t.Errorf("USER %q: want an unprivileged user", user)
	}
}

func TestSystemdUnitAndLogrotateReloadTheProxy(t *testing.T) {
	unit := map[string]string{}
	for _, line := range strings.Split(string(readRepoFile(t, "deploy/systemd/authz-proxy.service")), "\n") {
		if k, v, ok := strings.Cut(line, "="); ok && !strings.HasPrefix(line, "#") {
			unit[k] = v
		}
	}
	exec := strings.Fields(unit["ExecStart"])
	if len(exec) == 0 || exec[0] != "/usr/local/bin/authz-proxy" {
		t.Fatalf("ExecStart %q", unit["ExecStart"])
	}
	parseServeArgs(t, "ExecStart", exec[1:])
	if unit["ExecReload"] != "/bin/kill -HUP $MAINPID" {
		t.Errorf("ExecReload %q: want SIGHUP, which reloads and reopens the audit file", unit["ExecReload"])
	}
	rotate := string(readRepoFile(t, "deploy/logrotate/authz-proxy"))
	if !strings.HasPrefix(strings.TrimSpace(rotate[strings.Index(rotate, "\n/"):]), "/var/log/"+unit["LogsDirectory"]+"/") {
		t.Errorf("logrotate rotates a file outside the unit's LogsDirectory %s", unit["LogsDirectory"])
	}
	if !strings.Contains(rotate, "systemctl reload authz-proxy.service") {
		t.Error("logrotate does not send the proxy SIGHUP (systemctl reload) after rotating")
	}
}

func TestREADMEReferencesEveryDeploymentFile(t *testing.T) {
	readme := string(readRepoFile(t, "README.md"))
	err := filepath.WalkDir(filepath.Join(repoRoot, "deploy"), func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(repoRoot, path)
		if strings.HasPrefix(rel, chartDir+"/") {
			rel = chartDir // the chart is linked as one
		}
		if !strings.Contains(readme, "("+rel+")") {
			t.Errorf("README.md does not link %s", rel)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestTheChartShipsTheMonitoringFilesAsTheyAre(t *testing.T) {
	for _, name := range []string{"alerts.yaml", "grafana-dashboard.json"} {
		if !bytes.Equal(readRepoFile(t, chartDir+"/files/"+name), readRepoFile(t, "deploy/monitoring/"+name)) {
			t.Errorf("%s/files/%s differs from deploy/monitoring/%s: copy it again", chartDir, name, name)
		}
	}
}
