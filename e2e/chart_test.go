//go:build e2e

package e2e_test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"sigs.k8s.io/yaml"
)

// The chart as a cluster would take it: helm lint and helm template with
// each value set, every object decoded strictly into the Kubernetes API's
// own types (an unknown or misspelled field fails), and the configuration
// the proxy would read, laid out as the pod sees it, passing the real
// `authz-proxy validate`.

const chartPath = "../deploy/helm/authz-proxy"

// certificate is cert-manager.io/v1's Certificate, the fields the chart
// sets (cert-manager's Go module is not one to depend on for a test).
type certificate struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Metadata   struct {
		Name   string            `json:"name"`
		Labels map[string]string `json:"labels"`
	} `json:"metadata"`
	Spec struct {
		SecretName string `json:"secretName"`
		Duration   string `json:"duration"`
		IssuerRef  struct {
			Name, Kind, Group string
		} `json:"issuerRef"`
		DNSNames    []string `json:"dnsNames"`
		IPAddresses []string `json:"ipAddresses"`
	} `json:"spec"`
}

// typed is the Go type of each kind the chart renders.
var typed = map[string]func() any{
	"v1/ConfigMap":                             func() any { return &corev1.ConfigMap{} },
	"v1/Service":                               func() any { return &corev1.Service{} },
	"v1/ServiceAccount":                        func() any { return &corev1.ServiceAccount{} },
	"v1/PersistentVolumeClaim":                 func() any { return &corev1.PersistentVolumeClaim{} },
	"apps/v1/Deployment":                       func() any { return &appsv1.Deployment{} },
	"apps/v1/DaemonSet":                        func() any { return &appsv1.DaemonSet{} },
	"batch/v1/Job":                             func() any { return &batchv1.Job{} },
	"policy/v1/PodDisruptionBudget":            func() any { return &policyv1.PodDisruptionBudget{} },
	"networking.k8s.io/v1/NetworkPolicy":       func() any { return &networkingv1.NetworkPolicy{} },
	"rbac.authorization.k8s.io/v1/Role":        func() any { return &rbacv1.Role{} },
	"rbac.authorization.k8s.io/v1/RoleBinding": func() any { return &rbacv1.RoleBinding{} },
	"monitoring.coreos.com/v1/ServiceMonitor":  func() any { return &monitoringv1.ServiceMonitor{} },
	"monitoring.coreos.com/v1/PodMonitor":      func() any { return &monitoringv1.PodMonitor{} },
	"monitoring.coreos.com/v1/PrometheusRule":  func() any { return &monitoringv1.PrometheusRule{} },
	"cert-manager.io/v1/Certificate":           func() any { return &certificate{} },
}

// rendered is one value set's objects, by kind.
type rendered map[string][]any

func helm(t *testing.T, args ...string) string {
	t.Helper()
	cmd := exec.CommandContext(t.Context(), filepath.Join(lab.tools, "helm"), args...)
	cmd.Env = lab.env()
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("helm %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// render lints and renders the chart with values (none: the defaults), as
// for a cluster with the Prometheus Operator and cert-manager.
func render(t *testing.T, values string) rendered {
	t.Helper()
	var vf []string
	if values != "" {
		vf = []string{"-f", values}
	}
	helm(t, append([]string{"lint", "--strict", chartPath}, vf...)...)
	out := helm(t, append([]string{"template", "authz-proxy", chartPath, "--namespace", "authz-proxy",
		"--api-versions", "monitoring.coreos.com/v1", "--api-versions", "cert-manager.io/v1"}, vf...)...)
	objs := rendered{}
	for _, doc := range strings.Split(out, "\n---\n") {
		doc = strings.TrimPrefix(strings.TrimSpace(doc), "---")
		var head struct {
			APIVersion string `json:"apiVersion"`
			Kind       string `json:"kind"`
		}
		if err := yaml.Unmarshal([]byte(doc), &head); err != nil {
			t.Fatalf("not YAML: %v\n%s", err, doc)
		}
		if head.Kind == "" {
			continue // a template that rendered nothing
		}
		mk, ok := typed[head.APIVersion+"/"+head.Kind]
		if !ok {
			t.Errorf("the chart renders a %s %s, which this test does not know", head.APIVersion, head.Kind)
			continue
		}
		obj := mk()
		if err := yaml.UnmarshalStrict([]byte(doc), obj); err != nil {
			t.Errorf("%s does not decode strictly into its API type: %v\n%s", head.Kind, err, doc)
			continue
		}
		objs[head.Kind] = append(objs[head.Kind], obj)
	}
	return objs
}

// selfSigned is a CA certificate and key in PEM, standing where a Secret's
// would.
func selfSigned(t *testing.T) (certPEM, keyPEM []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "authz-proxy.internal"}, DNSNames: []string{"authz-proxy.internal"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kb, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kb})
}

// secretValue is what the test puts where a Secret's key would be.
func secretValue(t *testing.T, key string) []byte {
	cert, priv := selfSigned(t)
	switch {
	case strings.HasSuffix(key, ".key"):
		return priv
	case strings.HasSuffix(key, ".crt"):
		return cert
	}
	return []byte("from-a-secret")
}

// podOf is the pod template of the workload that runs the proxy.
func podOf(t *testing.T, objs rendered) corev1.PodSpec {
	t.Helper()
	for _, o := range objs["Deployment"] {
		return o.(*appsv1.Deployment).Spec.Template.Spec
	}
	for _, o := range objs["Job"] {
		return o.(*batchv1.Job).Spec.Template.Spec
	}
	t.Fatal("no Deployment or Job")
	return corev1.PodSpec{}
}

// layOut writes the files the proxy container sees under root, from the
// rendered ConfigMap and stand-ins for the Secrets, and returns the
// configuration's path there.
func layOut(t *testing.T, objs rendered, pod corev1.PodSpec, c corev1.Container, root string) string {
	t.Helper()
	maps := map[string]map[string]string{}
	for _, o := range objs["ConfigMap"] {
		cm := o.(*corev1.ConfigMap)
		maps[cm.Name] = cm.Data
	}
	put := func(path string, data []byte) {
		full := filepath.Join(root, path)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	var mounts []string
	for _, m := range c.VolumeMounts {
		mounts = append(mounts, m.MountPath)
		i := slices.IndexFunc(pod.Volumes, func(v corev1.Volume) bool { return v.Name == m.Name })
		if i < 0 {
			t.Fatalf("mount %s names no volume", m.Name)
		}
		v := pod.Volumes[i]
		switch {
		case v.Projected != nil:
			for _, s := range v.Projected.Sources {
				switch {
				case s.ConfigMap != nil:
					data, ok := maps[s.ConfigMap.Name]
					if !ok {
						t.Fatalf("volume %s projects ConfigMap %s, which the chart does not render", v.Name, s.ConfigMap.Name)
					}
					for _, it := range s.ConfigMap.Items {
						val, ok := data[it.Key]
						if !ok {
							t.Fatalf("ConfigMap %s has no key %s", s.ConfigMap.Name, it.Key)
						}
						put(filepath.Join(m.MountPath, it.Path), []byte(val))
					}
				case s.Secret != nil:
					for _, it := range s.Secret.Items {
						put(filepath.Join(m.MountPath, it.Path), secretValue(t, it.Key))
					}
				}
			}
		case v.EmptyDir != nil, v.PersistentVolumeClaim != nil:
			if err := os.MkdirAll(filepath.Join(root, m.MountPath), 0o755); err != nil {
				t.Fatal(err)
			}
		default:
			t.Fatalf("volume %s: a kind this test does not lay out", v.Name)
		}
	}
	if len(c.Args) < 3 || c.Args[0] != "serve" || c.Args[1] != "--config" {
		t.Fatalf("the proxy container runs %q", c.Args)
	}
	// The configuration names the mounts by their paths in the pod.
	cfg := filepath.Join(root, c.Args[2])
	text, err := os.ReadFile(cfg)
	if err != nil {
		t.Fatalf("the configuration %s is not in any mount: %v", c.Args[2], err)
	}
	s := string(text)
	for _, mp := range mounts {
		s = strings.ReplaceAll(s, mp, filepath.Join(root, mp))
	}
	if err := os.WriteFile(cfg, []byte(s), 0o600); err != nil {
		t.Fatal(err)
	}
	return cfg
}

func TestTheChartRendersWhatTheAPIServerTakesAndAConfigurationThatValidates(t *testing.T) {
	sets := []string{""}
	ci, _ := filepath.Glob(filepath.Join(chartPath, "ci", "*-values.yaml"))
	sets = append(sets, ci...)
	if len(sets) < 6 {
		t.Fatalf("value sets %v: want the defaults and at least five", sets)
	}
	for _, values := range sets {
		name := strings.TrimSuffix(filepath.Base(values), "-values.yaml")
		if values == "" {
			name = "defaults"
		}
		t.Run(name, func(t *testing.T) {
			objs := render(t, values)
			if t.Failed() {
				return
			}
			pod := podOf(t, objs)
			proxy := slices.IndexFunc(append(slices.Clone(pod.InitContainers), pod.Containers...), func(c corev1.Container) bool { return c.Name == "authz-proxy" })
			if proxy < 0 {
				t.Fatal("no authz-proxy container")
			}
			c := append(slices.Clone(pod.InitContainers), pod.Containers...)[proxy]
			if c.ReadinessProbe == nil || c.ReadinessProbe.HTTPGet == nil || c.ReadinessProbe.HTTPGet.Path != "/readyz" {
				t.Errorf("the proxy container's readiness probe %+v, want /readyz", c.ReadinessProbe)
			}
			root := t.TempDir()
			cfg := layOut(t, objs, pod, c, root)
			cmd := exec.CommandContext(t.Context(), lab.proxyBin, "validate", "--config", cfg)
			cmd.Env = lab.env()
			for _, e := range c.Env {
				cmd.Env = append(cmd.Env, e.Name+"=from-a-secret")
			}
			out, err := cmd.CombinedOutput()
			if err != nil {
				text, _ := os.ReadFile(cfg)
				t.Fatalf("authz-proxy validate refuses the rendered configuration: %v\n%s\nconfiguration:\n%s", err, out, text)
			}
			checkMonitoring(t, objs)
			checkNodes(t, objs, root)
		})
	}
}

// checkMonitoring: the PrometheusRule holds the shipped alerts as they are.
func checkMonitoring(t *testing.T, objs rendered) {
	t.Helper()
	for _, o := range objs["PrometheusRule"] {
		var shipped monitoringv1.PrometheusRuleSpec
		b, err := os.ReadFile("../deploy/monitoring/alerts.yaml")
		if err != nil {
			t.Fatal(err)
		}
		if err := yaml.UnmarshalStrict(b, &shipped); err != nil {
			t.Fatalf("alerts.yaml: %v", err)
		}
		if got := o.(*monitoringv1.PrometheusRule).Spec; !reflect.DeepEqual(got, shipped) {
			t.Errorf("the PrometheusRule's groups are not deploy/monitoring/alerts.yaml's")
		}
	}
}

// checkNodes runs the node agent's node-config as its init container
// would, with the host's folder and the certificates under root, and checks
// that it writes a file for every upstream, pointing at the server the
// canary checks.
func checkNodes(t *testing.T, objs rendered, root string) {
	t.Helper()
	for _, o := range objs["DaemonSet"] {
		pod := o.(*appsv1.DaemonSet).Spec.Template.Spec
		if len(pod.InitContainers) != 1 || pod.InitContainers[0].Args[0] != "node-config" {
			t.Fatalf("the node agent's init container runs %v", pod.InitContainers)
		}
		var args []string
		for _, a := range pod.InitContainers[0].Args[1:] {
			if strings.HasPrefix(a, "/host/") || strings.HasPrefix(a, "/etc/authz-proxy-node/") {
				a = filepath.Join(root, a)
				if strings.HasSuffix(a, ".crt") || strings.HasSuffix(a, ".key") {
					if err := os.MkdirAll(filepath.Dir(a), 0o755); err != nil {
						t.Fatal(err)
					}
					if err := os.WriteFile(a, secretValue(t, filepath.Base(a)), 0o600); err != nil {
						t.Fatal(err)
					}
				}
			}
			args = append(args, a)
		}
		out, err := exec.CommandContext(t.Context(), lab.proxyBin, append([]string{"node-config"}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("the node agent's node-config %q: %v\n%s", args, err, out)
		}
		flag := func(args []string, name string) (vals []string) {
			for i, a := range args {
				if a == name && i+1 < len(args) {
					vals = append(vals, args[i+1])
				}
			}
			return vals
		}
		runtime, dir, server := flag(args, "--runtime")[0], flag(args, "--out")[0], flag(args, "--server")[0]
		for _, up := range flag(args, "--upstream") {
			var file, want string
			if runtime == "containerd" {
				file, want = filepath.Join(dir, up, "hosts.toml"), `server = "`+server+`"`
			} else {
				file, want = filepath.Join(dir, "registries.conf.d", "99-authz-proxy.conf"), `prefix = "`+up+`"`
			}
			b, err := os.ReadFile(file)
			if err != nil || !bytes.Contains(b, []byte(want)) {
				t.Errorf("node-config wrote no %s with %s: %v\n%s", file, want, err, b)
			}
		}
		for _, c := range pod.Containers {
			if c.Name != "canary" {
				continue
			}
			hosts, srv := flag(c.Args, "--hosts"), flag(c.Args, "--server")
			if len(hosts) != 1 || filepath.Join(root, hosts[0]) != dir || len(srv) != 1 || srv[0] != server {
				t.Errorf("the canary checks %v against %v; node-config writes %s for %s", hosts, srv, dir, server)
			}
		}
	}
}
