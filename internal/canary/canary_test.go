package canary

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/authz-proxy/authz-proxy/internal/nodeconfig"
)

// node answers pulls as a runtime would have: each image's error, in the
// words containerd or CRI-O use, or success.
type node struct {
	errs    map[string]error
	removed []string
}

func (n *node) Pull(_ context.Context, image string) (string, error) {
	if err := n.errs[image]; err != nil {
		return "", err
	}
	return "sha256:" + strings.Repeat("a", 64), nil
}

func (n *node) Remove(_ context.Context, ref string) error {
	n.removed = append(n.removed, ref)
	return nil
}

const (
	allowed = "ghcr.io/authz-proxy/authz-proxy:1.0.0"
	denied  = "docker.io/library/hello-world:latest"
)

func TestRunTellsEnforcementFromHowTheRuntimeAnswered(t *testing.T) {
	containerd403 := errors.New(`rpc error: code = Unknown desc = failed to pull and unpack image "docker.io/library/hello-world:latest": failed to resolve reference: unexpected status from HEAD request to https://authz-proxy.internal:5000/v2/library/hello-world/manifests/latest?ns=docker.io: 403 Forbidden`)
	crio403 := errors.New(`rpc error: code = Unknown desc = reading manifest latest in authz-proxy.internal:5000/docker.io/library/hello-world: denied: docker.io/library/hello-world@sha256:… denied by rule "authz-proxy-canary": the canary's denied image`)
	down := errors.New(`rpc error: code = Unknown desc = failed to resolve reference: dial tcp 10.0.0.1:5000: connect: connection refused`)
	for _, tc := range []struct {
		name             string
		errs             map[string]error
		ok, enforced     bool
		removed          bool
		failed, reported string
	}{
		{"containerd: the proxy's 403", map[string]error{denied: containerd403}, true, true, false, "", "refused with 403"},
		{"cri-o: the proxy's DENIED", map[string]error{denied: crio403}, true, true, false, "", "refused with 403"},
		{"the denied image pulled", nil, false, false, true, "denied pull refused: NOT ENFORCED: " + denied, "removed from the node again"},
		{"the proxy down", map[string]error{allowed: down, denied: down}, false, true, false, "allowed pull served: " + allowed + " was not pulled", "is the proxy down?"},
		{"the allowed image refused by the policy", map[string]error{allowed: containerd403, denied: containerd403}, false, true, false, "check the policy", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := &node{errs: tc.errs}
			r := Run(t.Context(), n, Config{Node: "worker-1", Allowed: allowed, Denied: denied}, time.Now())
			if r.OK() != tc.ok || r.Enforced != tc.enforced {
				t.Errorf("ok %v enforced %v, want %v %v: %+v", r.OK(), r.Enforced, tc.ok, tc.enforced, r.Checks)
			}
			if got := len(n.removed) > 0; got != tc.removed {
				t.Errorf("removed %v from the node, want removal %v", n.removed, tc.removed)
			}
			failed := strings.Join(r.Failed(), "\n")
			if tc.failed != "" && !strings.Contains(failed, tc.failed) {
				t.Errorf("failed checks %q, want %q", failed, tc.failed)
			}
			var text strings.Builder
			r.WriteText(&text)
			if !strings.Contains(text.String(), tc.reported) {
				t.Errorf("report\n%s\nwants %q", text.String(), tc.reported)
			}
		})
	}
}

func TestRunChecksTheMirrorFilesOfBothImagesRegistries(t *testing.T) {
	dir := t.TempDir()
	if _, err := nodeconfig.Write(dir, nodeconfig.Options{Runtime: nodeconfig.Containerd, Server: "https://proxy:5000", Upstreams: []string{"docker.io"}}); err != nil {
		t.Fatal(err)
	}
	refused := errors.New("unexpected status from HEAD request: 403 Forbidden")
	c := Config{Node: "w", Allowed: allowed, Denied: denied, Runtime: nodeconfig.Containerd, HostsDir: dir, Server: "https://proxy:5000"}
	r := Run(t.Context(), &node{errs: map[string]error{denied: refused}}, c, time.Now())
	if r.Enforced || r.Checks[0].OK || !strings.Contains(r.Checks[0].Detail, "ghcr.io/hosts.toml") {
		t.Errorf("ghcr.io has no file, yet: enforced %v, %+v", r.Enforced, r.Checks[0])
	}
	c.Allowed = "docker.io/library/busybox:1.37"
	r = Run(t.Context(), &node{errs: map[string]error{denied: refused}}, c, time.Now())
	if !r.OK() || !r.Enforced || r.Checks[0].Detail != "the containerd files send docker.io to https://proxy:5000 only" {
		t.Errorf("both images on docker.io, configured: %+v", r.Checks)
	}
}
