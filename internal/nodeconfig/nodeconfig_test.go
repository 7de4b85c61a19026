package nodeconfig

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func tree(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(dir, path)
		out = append(out, rel)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(out)
	return out
}

func put(t *testing.T, path, text string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestWriteLaysOutEachRuntimesFilesAndRemoveTakesOnlyThem(t *testing.T) {
	for _, tc := range []struct {
		name    string
		opts    Options
		foreign []string // files another hand wrote, which must survive Remove
		want    []string
	}{
		{
			name:    "containerd: a hosts.toml per upstream, the certificates beside each",
			opts:    Options{Runtime: Containerd, Server: "https://proxy:5000", Upstreams: []string{"ghcr.io", "docker.io"}, CA: []byte("ca"), ClientCert: []byte("c"), ClientKey: []byte("k")},
			foreign: []string{"quay.io/hosts.toml", "docker.io/other.crt"},
			want: []string{"docker.io/authz-proxy-ca.crt", "docker.io/authz-proxy-client.cert", "docker.io/authz-proxy-client.key", "docker.io/hosts.toml", "docker.io/other.crt",
				"ghcr.io/authz-proxy-ca.crt", "ghcr.io/authz-proxy-client.cert", "ghcr.io/authz-proxy-client.key", "ghcr.io/hosts.toml", "quay.io/hosts.toml"},
		},
		{
			name:    "cri-o: one drop-in, the certificates under certs.d/<proxy host>",
			opts:    Options{Runtime: CRIO, Server: "https://proxy:5000", Upstreams: []string{"docker.io"}, CA: []byte("ca")},
			foreign: []string{"registries.conf.d/00-site.conf", "certs.d/proxy:5000/site.crt"},
			want:    []string{"certs.d/proxy:5000/authz-proxy-ca.crt", "certs.d/proxy:5000/site.crt", "registries.conf.d/00-site.conf", "registries.conf.d/99-authz-proxy.conf"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			for _, f := range tc.foreign {
				put(t, filepath.Join(dir, f), "someone else's\n")
			}
			res, err := Write(dir, tc.opts)
			if err != nil {
				t.Fatal(err)
			}
			if got := tree(t, dir); !slices.Equal(got, tc.want) {
				t.Errorf("files after Write:\n%v\nwant\n%v", got, tc.want)
			}
			if len(res.Replaced) > 0 {
				t.Errorf("replaced %v, which were not there", res.Replaced)
			}
			if again, _ := Write(dir, tc.opts); len(again.Written) > 0 || len(again.Removed) > 0 {
				t.Errorf("writing the same again changed %v and removed %v", again.Written, again.Removed)
			}
			if _, err := Remove(dir, tc.opts.Runtime); err != nil {
				t.Fatal(err)
			}
			slices.Sort(tc.foreign)
			if got := tree(t, dir); !slices.Equal(got, tc.foreign) {
				t.Errorf("files after Remove: %v, want only the others' %v", got, tc.foreign)
			}
		})
	}
}

func TestWriteRemovesWhatIsNoLongerWantedAndReplacesAForeignHostsFile(t *testing.T) {
	dir := t.TempDir()
	put(t, filepath.Join(dir, "ghcr.io/hosts.toml"), "server = \"https://ghcr.io\"\n[host.\"https://mirror\"]\n")
	o := Options{Runtime: Containerd, Server: "https://proxy:5000", Upstreams: []string{"docker.io", "ghcr.io"}, CA: []byte("ca")}
	res, err := Write(dir, o)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(res.Replaced, []string{"ghcr.io/hosts.toml"}) {
		t.Errorf("replaced %v, want the hand-written ghcr.io/hosts.toml named", res.Replaced)
	}
	o.Upstreams, o.CA = []string{"ghcr.io"}, nil
	res, err = Write(dir, o)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"docker.io/authz-proxy-ca.crt", "docker.io/hosts.toml", "ghcr.io/authz-proxy-ca.crt"}
	slices.Sort(res.Removed)
	if !slices.Equal(res.Removed, want) {
		t.Errorf("removed %v, want the dropped upstream's files and the CA no longer given %v", res.Removed, want)
	}
	if got := tree(t, dir); !slices.Equal(got, []string{"ghcr.io/hosts.toml"}) {
		t.Errorf("left %v", got)
	}
}

func TestFilesRefusesOptionsThatWouldNotEnforce(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts Options
		want string
	}{
		{"no server", Options{Runtime: Containerd, Upstreams: []string{"docker.io"}}, "the proxy's URL is required"},
		{"a server with a path", Options{Runtime: Containerd, Server: "https://proxy/v2", Upstreams: []string{"docker.io"}}, "want https://host[:port]"},
		{"no upstream", Options{Runtime: CRIO, Server: "https://proxy"}, "at least one upstream"},
		{"an upstream that climbs out of the folder", Options{Runtime: Containerd, Server: "https://proxy", Upstreams: []string{"../etc"}}, `upstream "../etc"`},
		{"cri-o: an upstream with a port, which a location's path cannot hold", Options{Runtime: CRIO, Server: "https://proxy", Upstreams: []string{"registry.internal:5000"}}, "cannot hold a port"},
		{"an upstream that is no registry host", Options{Runtime: Containerd, Server: "https://proxy", Upstreams: []string{"lab"}}, "never ask for a registry of that name"},
		{"containerd's catch-all folder", Options{Runtime: Containerd, Server: "https://proxy", Upstreams: []string{"_default"}}, `upstream "_default"`},
		{"a client key without its certificate", Options{Runtime: Containerd, Server: "https://proxy", Upstreams: []string{"docker.io"}, ClientKey: []byte("k")}, "both the client certificate and its key"},
		{"an unknown runtime", Options{Runtime: "docker", Server: "https://proxy", Upstreams: []string{"docker.io"}}, `runtime "docker"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Files(tc.opts)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %v, want one saying %q", err, tc.want)
			}
		})
	}
}

func TestConfiguredSaysWhyAFileDoesNotSendTheRegistryToTheProxyAlone(t *testing.T) {
	for _, tc := range []struct {
		name, runtime, file, text, want string
	}{
		{"containerd: the generated file", Containerd, "", "", ""},
		{"containerd: no file", Containerd, "-", "", "pulls docker.io from the registry itself"},
		{"containerd: another server", Containerd, "docker.io/hosts.toml", "server = \"https://registry-1.docker.io\"\n", "not the proxy"},
		{"containerd: a fallback host", Containerd, "docker.io/hosts.toml", "server = \"https://proxy:5000\"\n[host.\"https://registry-1.docker.io\"]\n", "lists other hosts (https://registry-1.docker.io)"},
		{"cri-o: the generated file", CRIO, "", "", ""},
		{"cri-o: no file", CRIO, "-", "", "pulls docker.io from the registry itself"},
		{"cri-o: another registry only", CRIO, "registries.conf.d/99-authz-proxy.conf", "[[registry]]\nprefix = \"quay.io\"\nlocation = \"proxy:5000/quay.io\"\n", "no [[registry]] for docker.io"},
		{"cri-o: a mirror", CRIO, "registries.conf.d/99-authz-proxy.conf", "[[registry]]\nprefix = \"docker.io\"\nlocation = \"proxy:5000/docker.io\"\n[[registry.mirror]]\nlocation = \"mirror.example\"\n", "has mirrors"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			switch tc.file {
			case "":
				if _, err := Write(dir, Options{Runtime: tc.runtime, Server: "https://proxy:5000", Upstreams: []string{"docker.io"}}); err != nil {
					t.Fatal(err)
				}
			case "-":
			default:
				put(t, filepath.Join(dir, tc.file), tc.text)
			}
			err := Configured(dir, tc.runtime, "docker.io", "https://proxy:5000")
			switch {
			case tc.want == "" && err != nil:
				t.Errorf("the generated file is not taken as configured: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Errorf("error %v, want one saying %q", err, tc.want)
			}
		})
	}
}

func TestTheClientKeyIsWrittenOwnerOnlyEvenOverAFileReadableByAll(t *testing.T) {
	dir := t.TempDir()
	key := filepath.Join(dir, "docker.io", "authz-proxy-client.key")
	put(t, key, "an older key\n")
	if err := os.Chmod(key, 0o644); err != nil {
		t.Fatal(err)
	}
	o := Options{Runtime: Containerd, Server: "https://proxy:5000", Upstreams: []string{"docker.io"}, ClientCert: []byte("c"), ClientKey: []byte("k")}
	if _, err := Write(dir, o); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(key)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("the client key is %v, want -rw------- whatever the file it replaced", fi.Mode().Perm())
	}
	if hosts, err := os.Stat(filepath.Join(dir, "docker.io", "hosts.toml")); err != nil || hosts.Mode().Perm() != 0o644 {
		t.Errorf("hosts.toml: %v %v, want -rw-r--r--", hosts.Mode().Perm(), err)
	}
}
