package main

import (
	"bytes"
	"context"
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/authz-proxy/authz-proxy/internal/kube"
	"github.com/authz-proxy/authz-proxy/internal/nodeconfig"
)

func TestTheNodeAgentRemovesItsFilesOnlyWhenItsDaemonSetIsGone(t *testing.T) {
	for _, tc := range []struct {
		name   string
		status int
		body   string
		kept   bool
		says   string
	}{
		{"a rolling update: the DaemonSet is there", http.StatusOK, `{"metadata":{"name":"authz-proxy-nodes"}}`, true, "still there"},
		{"helm uninstall: the DaemonSet is gone", http.StatusNotFound, `{"kind":"Status"}`, false, "is deleted: removed"},
		{"nodes turned off: the DaemonSet is being deleted", http.StatusOK, `{"metadata":{"deletionTimestamp":"2026-12-01T10:00:00Z"}}`, false, "is deleted: removed"},
		{"helm uninstall: the service account is gone too", http.StatusUnauthorized, `{"message":"Unauthorized"}`, false, "taking the release as uninstalled"},
		{"helm uninstall: the RoleBinding is gone too", http.StatusForbidden, `{"message":"daemonsets.apps is forbidden"}`, false, "taking the release as uninstalled"},
		{"the API server cannot say", http.StatusInternalServerError, `{"message":"etcdserver: request timed out"}`, true, "could not learn"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var asked string
			srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				asked = r.URL.Path
				w.WriteHeader(tc.status)
				_, _ = w.Write([]byte(tc.body))
			}))
			defer srv.Close()
			tok := filepath.Join(t.TempDir(), "token")
			if err := os.WriteFile(tok, []byte("t"), 0o600); err != nil {
				t.Fatal(err)
			}
			client, err := kube.New(srv.URL, tok, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}))
			if err != nil {
				t.Fatal(err)
			}
			dir := t.TempDir()
			if _, err := nodeconfig.Write(dir, nodeconfig.Options{Runtime: nodeconfig.Containerd, Server: "https://proxy:5000", Upstreams: []string{"docker.io"}}); err != nil {
				t.Fatal(err)
			}
			ctx, stop := context.WithCancel(t.Context())
			stop() // SIGTERM
			var out, errOut bytes.Buffer
			n := nodeConfigFlags{runtime: "containerd", out: dir, daemonSet: "authz-proxy-nodes", namespace: "authz-proxy"}
			if err := keepUntilUninstalled(ctx, client, n, &out, &errOut); err != nil {
				t.Fatal(err)
			}
			if asked != "/apis/apps/v1/namespaces/authz-proxy/daemonsets/authz-proxy-nodes" {
				t.Errorf("asked %s", asked)
			}
			_, err = os.Stat(filepath.Join(dir, "docker.io", "hosts.toml"))
			if kept := err == nil; kept != tc.kept {
				t.Errorf("hosts.toml kept %v, want %v", kept, tc.kept)
			}
			if all := out.String() + errOut.String(); !strings.Contains(all, tc.says) {
				t.Errorf("said %q, want %q", all, tc.says)
			}
		})
	}
}
