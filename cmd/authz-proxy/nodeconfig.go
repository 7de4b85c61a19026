package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/authz-proxy/authz-proxy/internal/config"
	"github.com/authz-proxy/authz-proxy/internal/kube"
	"github.com/authz-proxy/authz-proxy/internal/nodeconfig"
)

// nodeConfigFlags are node-config's flags, also read by canary.
type nodeConfigFlags struct {
	runtime, out, server, cfg string
	upstreams                 listFlag
	ca, clientCert, clientKey string
	remove, keep              bool
	daemonSet, namespace      string
}

func (n *nodeConfigFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&n.runtime, "runtime", "", "containerd or cri-o")
	fs.StringVar(&n.out, "out", "", "the runtime's folder: containerd's config_path (/etc/containerd/certs.d), or /etc/containers for cri-o")
	fs.StringVar(&n.server, "server", "", "the proxy's URL as the nodes reach it, e.g. https://authz-proxy.internal:5000")
	fs.Var(&n.upstreams, "upstream", "an upstream's name (a registry host); repeat for each")
	fs.StringVar(&n.cfg, "config", "", "take the upstreams from this proxy configuration instead of --upstream")
	fs.StringVar(&n.ca, "ca", "", "PEM file of the CA of the proxy's certificate, copied beside the configuration")
	fs.StringVar(&n.clientCert, "client-cert", "", "PEM file of the node's client certificate (mTLS), copied beside the configuration")
	fs.StringVar(&n.clientKey, "client-key", "", "PEM file of its key")
}

// options reads the files the flags name into nodeconfig.Options.
func (n *nodeConfigFlags) options() (nodeconfig.Options, error) {
	o := nodeconfig.Options{Runtime: n.runtime, Server: n.server, Upstreams: n.upstreams}
	if n.cfg != "" {
		if len(n.upstreams) > 0 {
			return o, usageErr("node-config: give --upstream or --config, not both")
		}
		c, err := config.Load(n.cfg)
		if err != nil {
			return o, err
		}
		for _, u := range c.Upstreams {
			o.Upstreams = append(o.Upstreams, u.Name)
		}
	}
	for _, f := range []struct {
		path string
		into *[]byte
	}{{n.ca, &o.CA}, {n.clientCert, &o.ClientCert}, {n.clientKey, &o.ClientKey}} {
		if f.path == "" {
			continue
		}
		b, err := os.ReadFile(f.path)
		if err != nil {
			return o, &exitError{code: 2, err: fmt.Errorf("node-config: %w", err)}
		}
		*f.into = b
	}
	return o, nil
}

func nodeConfigCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flags("node-config", stderr)
	var n nodeConfigFlags
	n.register(fs)
	fs.BoolVar(&n.remove, "remove", false, "remove what node-config wrote in --out, and nothing else")
	fs.BoolVar(&n.keep, "keep", false, "after writing, stay running; when stopped, remove what was written unless --daemonset still exists (a node agent)")
	fs.StringVar(&n.daemonSet, "daemonset", "", "with --keep: the DaemonSet whose deletion means uninstall (in --namespace)")
	fs.StringVar(&n.namespace, "namespace", os.Getenv("POD_NAMESPACE"), "with --keep: the DaemonSet's namespace")
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usageErr("node-config: unexpected argument %q", fs.Arg(0))
	}
	if n.out == "" {
		return usageErr("node-config: --out DIR is required")
	}
	if n.remove {
		res, err := nodeconfig.Remove(n.out, n.runtime)
		if err != nil {
			return usageErr("node-config: %v", err)
		}
		printResult(stdout, n.out, res)
		return nil
	}
	o, err := n.options()
	if err != nil {
		return err
	}
	// Options that would not enforce, or a folder that cannot be written:
	// exit 2 either way, and for the options nothing was written.
	res, err := nodeconfig.Write(n.out, o)
	if err != nil {
		return &exitError{code: 2, err: fmt.Errorf("node-config: %w", err)}
	}
	printResult(stdout, n.out, res)
	if !n.keep {
		return nil
	}
	return keepNodeConfig(ctx, n, stdout, stderr)
}

func printResult(w io.Writer, dir string, res nodeconfig.Result) {
	for _, l := range []struct {
		what  string
		paths []string
	}{{"wrote", res.Written}, {"unchanged", res.Kept}, {"removed", res.Removed}} {
		for _, p := range l.paths {
			fmt.Fprintf(w, "%s %s/%s\n", l.what, strings.TrimSuffix(dir, "/"), p)
		}
	}
	for _, p := range res.Replaced {
		fmt.Fprintf(w, "note: %s/%s was not written by node-config; it now is (the proxy must be the only host)\n", strings.TrimSuffix(dir, "/"), p)
	}
}

// keepNodeConfig waits until the node agent is stopped, then removes what
// it wrote only when its DaemonSet is gone or being deleted (an uninstall,
// or nodes turned off): a rolling update, a drain or an eviction keeps the
// node pointed at the proxy. When the API cannot say, the files stay:
// enforcement is not given up on a guess.
func keepNodeConfig(ctx context.Context, n nodeConfigFlags, stdout, stderr io.Writer) error {
	if n.daemonSet == "" || n.namespace == "" {
		return usageErr("node-config: --keep needs --daemonset and --namespace (or POD_NAMESPACE)")
	}
	client, err := kube.InCluster(kube.ServiceAccountDir)
	if err != nil {
		return &exitError{code: 2, err: fmt.Errorf("node-config --keep: %w", err)}
	}
	return keepUntilUninstalled(ctx, client, n, stdout, stderr)
}

func keepUntilUninstalled(ctx context.Context, client *kube.Client, n nodeConfigFlags, stdout, stderr io.Writer) error {
	fmt.Fprintf(stdout, "node-config: keeping %s until DaemonSet %s/%s is deleted\n", n.out, n.namespace, n.daemonSet)
	<-ctx.Done()
	askCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	path := "/apis/apps/v1/namespaces/" + url.PathEscape(n.namespace) + "/daemonsets/" + url.PathEscape(n.daemonSet)
	live, err := client.Live(askCtx, path)
	// helm uninstall deletes the DaemonSet, its RoleBinding, Role and
	// ServiceAccount at once: by the time a pod asks, its token may be
	// refused (401) or its permission gone (403). Neither happens to a
	// pod whose release stays (an update, a drain), whose pod object and
	// token live until it has stopped.
	var st *kube.StatusError
	if errors.As(err, &st) && (st.Code == http.StatusUnauthorized || st.Code == http.StatusForbidden) {
		fmt.Fprintf(stdout, "node-config: the API server refuses this pod's service account (%s): taking the release as uninstalled\n", st.Status)
		live, err = false, nil
	}
	switch {
	case err != nil:
		fmt.Fprintf(stderr, "node-config: could not learn whether DaemonSet %s/%s is deleted (%v): keeping %s\n", n.namespace, n.daemonSet, err, n.out)
		return nil
	case live:
		fmt.Fprintf(stdout, "node-config: DaemonSet %s/%s is still there (an update or a drain): keeping %s\n", n.namespace, n.daemonSet, n.out)
		return nil
	}
	res, err := nodeconfig.Remove(n.out, n.runtime)
	printResult(stdout, n.out, res)
	if err != nil {
		return &exitError{code: 2, err: fmt.Errorf("node-config: %w", err)}
	}
	fmt.Fprintf(stdout, "node-config: DaemonSet %s/%s is deleted: removed what node-config wrote in %s\n", n.namespace, n.daemonSet, n.out)
	return nil
}
