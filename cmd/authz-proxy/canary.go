package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/authz-proxy/authz-proxy/internal/canary"
	"github.com/authz-proxy/authz-proxy/internal/kube"
	"github.com/authz-proxy/authz-proxy/internal/metrics"
)

// canaryFlags are canary's flags.
type canaryFlags struct {
	cri, output, metricsAddr string
	events                   bool
	every                    time.Duration
	c                        canary.Config
}

func canaryCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flags("canary", stderr)
	var f canaryFlags
	host, _ := os.Hostname()
	if n := os.Getenv("NODE_NAME"); n != "" {
		host = n
	}
	fs.StringVar(&f.cri, "cri", "", "the runtime's CRI socket: unix:///run/containerd/containerd.sock, unix:///var/run/crio/crio.sock")
	fs.StringVar(&f.c.Allowed, "allowed", "", "an image the policy allows, as the kubelet names it (registry/repository:tag or @digest)")
	fs.StringVar(&f.c.Denied, "denied", "", "an image the policy denies, which the registry itself serves")
	fs.StringVar(&f.c.Runtime, "runtime", "", "with --hosts: containerd or cri-o")
	fs.StringVar(&f.c.HostsDir, "hosts", "", "check the node's files in this folder too (as node-config --out): they must send both images' registries to --server alone")
	fs.StringVar(&f.c.Server, "server", "", "with --hosts: the proxy's URL as the node reaches it")
	fs.StringVar(&f.c.Node, "node", host, "the node's name in the report, the metrics and events (default $NODE_NAME, else the host name)")
	fs.DurationVar(&f.c.Timeout, "timeout", 2*time.Minute, "how long one pull may take")
	fs.DurationVar(&f.every, "every", 0, "run again at this interval until stopped (default: once, and exit 0 enforced and every check passed, 1 not)")
	fs.StringVar(&f.metricsAddr, "metrics", "", "with --every: serve /metrics and /healthz at this address (authz_proxy_canary_*)")
	fs.BoolVar(&f.events, "events", false, "record a Kubernetes Warning event on this pod (POD_NAME, POD_NAMESPACE) for each run that fails")
	fs.StringVar(&f.output, "output", "text", "text or json")
	if err := parse(fs, args); err != nil {
		return err
	}
	switch {
	case fs.NArg() > 0:
		return usageErr("canary: unexpected argument %q", fs.Arg(0))
	case f.cri == "":
		return usageErr("canary: --cri ENDPOINT is required (the runtime's socket, as the kubelet's --container-runtime-endpoint)")
	case f.c.Allowed == "" || f.c.Denied == "":
		return usageErr("canary: --allowed IMAGE and --denied IMAGE are required")
	case f.c.HostsDir != "" && (f.c.Server == "" || f.c.Runtime == ""):
		return usageErr("canary: --hosts needs --runtime and --server")
	case f.output != "text" && f.output != "json":
		return usageErr("canary: --output %q: want text or json", f.output)
	case f.metricsAddr != "" && f.every == 0:
		return usageErr("canary: --metrics needs --every")
	}
	p, err := canary.DialCRI(f.cri)
	if err != nil {
		return &exitError{code: 2, err: err}
	}
	defer p.Close()
	var rec *recorder
	if f.events {
		if rec, err = newRecorder(); err != nil {
			return &exitError{code: 2, err: fmt.Errorf("canary --events: %w", err)}
		}
	}
	if f.every == 0 {
		r := canary.Run(ctx, p, f.c, time.Now())
		if err := f.print(stdout, r); err != nil {
			return err
		}
		rec.record(ctx, r, stderr)
		if !r.OK() {
			return &exitError{code: 1}
		}
		return nil
	}
	m := metrics.NewCanary()
	if f.metricsAddr != "" {
		ln, err := net.Listen("tcp", f.metricsAddr)
		if err != nil {
			return &exitError{code: 2, err: fmt.Errorf("canary: %w", err)}
		}
		srv := &http.Server{Handler: m.Handler(), ReadHeaderTimeout: 10 * time.Second}
		go func() { _ = srv.Serve(ln) }()
		defer srv.Close()
	}
	tick := time.NewTicker(f.every)
	defer tick.Stop()
	for {
		r := canary.Run(ctx, p, f.c, time.Now())
		if ctx.Err() != nil {
			return nil // stopped during the run: its outcome says nothing
		}
		checks := map[string]bool{}
		for _, c := range r.Checks {
			checks[checkName(c.Name)] = c.OK
		}
		m.Result(r.Node, r.Enforced, checks, r.Time)
		if err := f.print(stdout, r); err != nil {
			return err
		}
		rec.record(ctx, r, stderr)
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}

// checkName is a check's name as the metrics label it.
func checkName(name string) string {
	switch name {
	case "mirror configured":
		return metrics.CheckMirrorConfigured
	case "allowed pull served":
		return metrics.CheckAllowedServed
	default:
		return metrics.CheckDeniedRefused
	}
}

func (f *canaryFlags) print(w io.Writer, r canary.Report) error {
	if f.output == "json" {
		return r.WriteJSON(w)
	}
	r.WriteText(w)
	return nil
}

// recorder records a failed run as a Warning event on the canary's pod.
type recorder struct {
	client         *kube.Client
	pod, namespace string
	uid            string
}

func newRecorder() (*recorder, error) {
	pod, ns := os.Getenv("POD_NAME"), os.Getenv("POD_NAMESPACE")
	if pod == "" || ns == "" {
		return nil, errors.New("POD_NAME and POD_NAMESPACE must be set (the downward API's metadata.name and metadata.namespace)")
	}
	c, err := kube.InCluster(kube.ServiceAccountDir)
	if err != nil {
		return nil, err
	}
	return &recorder{client: c, pod: pod, namespace: ns, uid: os.Getenv("POD_UID")}, nil
}

func (rec *recorder) record(ctx context.Context, r canary.Report, stderr io.Writer) {
	if rec == nil || r.OK() {
		return
	}
	reason := "CanaryCheckFailed"
	if !r.Enforced {
		reason = "CanaryNotEnforced"
	}
	msg := fmt.Sprintf("node %s: %s", r.Node, strings.Join(r.Failed(), "; "))
	if len(msg) > 1000 {
		msg = msg[:1000] + "…"
	}
	err := rec.client.Record(ctx, kube.Event{
		Namespace: rec.namespace,
		Object:    kube.ObjectRef{APIVersion: "v1", Kind: "Pod", Namespace: rec.namespace, Name: rec.pod, UID: rec.uid},
		Type:      "Warning", Reason: reason, Message: msg,
		Component: "authz-proxy-canary", Host: r.Node, Time: r.Time,
	})
	if err != nil {
		fmt.Fprintf(stderr, "canary: recording the event: %v\n", err)
	}
}
