//go:build e2e

package e2e_test

import (
	"encoding/base64"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/crypto/bcrypt"
)

// clientsProxy is the suite's policy served with clients: ci may pull
// lab/e2e/**, dev only lab/dev/**.
func clientsProxy(t *testing.T) *proxyProc {
	t.Helper()
	var users strings.Builder
	for _, u := range []string{"ci", "dev"} {
		hash, err := bcrypt.GenerateFromPassword([]byte(u+"-password"), bcrypt.MinCost)
		if err != nil {
			t.Fatal(err)
		}
		users.WriteString(u + ":" + string(hash) + "\n")
	}
	htpasswd := filepath.Join(t.TempDir(), "users.htpasswd")
	if err := os.WriteFile(htpasswd, []byte(users.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	return startTestProxy(t, "clients", lab.mainConfig()+fmt.Sprintf(`
clients:
  htpasswd: %q
  access:
    - {principals: ["user:ci"], images: ["lab/e2e/**"]}
    - {principals: ["user:dev"], images: ["lab/dev/**"]}
`, htpasswd))
}

// authFile is a config.json holding user's password for host, as `docker
// login` and `crane auth login` write it, and as podman's auth.json holds it.
func authFile(t *testing.T, host, user string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "config.json")
	auth := base64.StdEncoding.EncodeToString([]byte(user + ":" + user + "-password"))
	if err := os.WriteFile(path, fmt.Appendf(nil, `{"auths":{%q:{"auth":%q}}}`, host, auth), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestCredentialsDecideWhoPullsWithCraneAndSkopeo(t *testing.T) {
	p := clientsProxy(t)
	img := lab.img.signed
	ref := p.addr + "/lab/e2e/app:signed"
	for _, tt := range []struct {
		name, user string
		want       string // "" pulled, else what the refusal says
	}{
		{"with the credentials of a user who may pull", "ci", ""},
		{"without credentials", "", "UNAUTHORIZED"},
		{"with another principal's credentials", "dev", "user:dev may not pull lab/e2e/app"},
	} {
		t.Run("crane "+tt.name, func(t *testing.T) {
			var env []string
			if tt.user != "" {
				env = []string{"DOCKER_CONFIG=" + filepath.Dir(authFile(t, p.addr, tt.user))}
			}
			mark := p.mark()
			out, err := lab.tool(t.Context(), env, "crane", "pull", "--insecure", ref, filepath.Join(t.TempDir(), "image.tar"))
			if tt.want == "" {
				mustSucceed(t, "crane pull "+ref, out, err)
				if d := p.decisionFor(t, mark, img.String(), "signed"); d.Principal != "user:ci" || d.Decision != "allow" {
					t.Errorf("decision %s; want allowed, pulled by user:ci", d)
				}
				return
			}
			out = mustFail(t, "crane pull "+ref, out, err)
			wantContains(t, "crane pull "+ref, out, tt.want)
		})
		t.Run("skopeo "+tt.name, func(t *testing.T) {
			// CRI-O and podman read the credentials of a remapped location
			// from an auth file (--src-creds goes to the original name).
			args := []string{"copy", "docker://lab.example/e2e/app:signed", "oci:" + filepath.Join(t.TempDir(), "out") + ":signed"}
			if tt.user != "" {
				args = append([]string{"copy", "--src-authfile", authFile(t, p.addr, tt.user)}, args[1:]...)
			}
			out, err := skopeo(t, p, args...)
			if tt.want == "" {
				mustSucceed(t, "skopeo copy", out, err)
				return
			}
			out = mustFail(t, "skopeo copy", out, err)
			if tt.want == "UNAUTHORIZED" {
				// containers/image words a 401 its own way.
				if !strings.Contains(strings.ToLower(out), "unauthorized") && !strings.Contains(out, "401") {
					t.Errorf("skopeo without credentials: %s; want it told it is unauthorized", out)
				}
				return
			}
			wantContains(t, "skopeo copy", out, tt.want)
		})
	}
	// Nothing was served to the refused pulls: every decision of the
	// refused principal is a deny by the access rule.
	for _, d := range p.decisionsSince(t, 0) {
		if d.Principal == "user:dev" && (d.Decision != "deny" || d.Rule != "(access)") {
			t.Errorf("user:dev got %s", d)
		}
	}
}
