// Package nodeconfig writes the files that point a node's container runtime
// at the proxy and nowhere else: containerd's hosts.toml per upstream, a
// CRI-O/podman registries.conf.d drop-in, and the proxy's CA and client
// certificate beside them; it finds and removes what it wrote, and says
// whether a node's files still send a registry to the proxy alone.
package nodeconfig

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/BurntSushi/toml"
	"github.com/google/renameio/v2"
)

// The runtimes written for.
const (
	Containerd = "containerd"
	CRIO       = "cri-o"
)

// Header is the first line of every text file written here: what marks a
// file as this package's to replace or remove.
const Header = "# Written by authz-proxy node-config; it is replaced when regenerated and removed when uninstalled.\n"

// The names of what is written, relative to the output folder. containerd
// reads DIR/<registry>/hosts.toml (DIR is its CRI config_path, usually
// /etc/containerd/certs.d) and resolves the certificate paths in it from
// that folder; CRI-O, podman, skopeo and buildah read
// DIR/registries.conf.d/*.conf and the certificates of a registry host from
// DIR/certs.d/<host:port>/ (DIR is /etc/containers).
const (
	hostsFile  = "hosts.toml"
	dropIn     = "registries.conf.d/99-authz-proxy.conf"
	certPrefix = "authz-proxy-"
	caFile     = certPrefix + "ca.crt"
	clientCert = certPrefix + "client.cert"
	clientKey  = certPrefix + "client.key"
)

// Options is what the files say.
type Options struct {
	// Runtime is Containerd or CRIO.
	Runtime string
	// Server is the proxy's URL as the node reaches it:
	// https://host[:port] (http:// for labs).
	Server string
	// Upstreams are the names of the proxy's upstreams, each a registry
	// host (docker.io, ghcr.io, registry.internal:5000).
	Upstreams []string
	// CA is the PEM of the CA that issued the proxy's certificate, when the
	// node does not trust it already.
	CA []byte
	// ClientCert and ClientKey are the node's client certificate and key
	// (PEM) for an mTLS listener.
	ClientCert, ClientKey []byte
}

// File is one file to write, its path relative to the output folder.
type File struct {
	Path string
	Data []byte
	// Secret files are written readable by their owner only.
	Secret bool
}

// upstreamName is a registry host as the proxy's configuration accepts one;
// it is also a folder name that stays inside the output folder.
var upstreamName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._:-]*$`)

func (o Options) check() (*url.URL, error) {
	var errs []error
	if o.Runtime != Containerd && o.Runtime != CRIO {
		errs = append(errs, fmt.Errorf("runtime %q: want %s or %s", o.Runtime, Containerd, CRIO))
	}
	u, err := url.Parse(o.Server)
	switch {
	case o.Server == "":
		errs = append(errs, errors.New("the proxy's URL is required (https://host:port, as the nodes reach it)"))
	case err != nil:
		errs = append(errs, fmt.Errorf("server: %w", err))
	case u.Scheme != "https" && u.Scheme != "http", u.Host == "", u.Path != "" && u.Path != "/", u.RawQuery != "", u.User != nil:
		errs = append(errs, fmt.Errorf("server %q: want https://host[:port]", o.Server))
	}
	if len(o.Upstreams) == 0 {
		errs = append(errs, errors.New("name at least one upstream"))
	}
	for _, name := range o.Upstreams {
		switch {
		case !upstreamName.MatchString(name) || strings.Contains(name, "..") || name == "_default":
			errs = append(errs, fmt.Errorf("upstream %q: want a registry host name such as docker.io (letters, digits, . _ - :)", name))
		case !strings.ContainsAny(name, ".:") && name != "localhost":
			// As docker/distribution's reference grammar reads a name.
			errs = append(errs, fmt.Errorf("upstream %q: runtimes read an image %s/app as docker.io/%s/app, so they never ask for a registry of that name: name the upstream after the registry host its images carry (with a dot or a port, or localhost)", name, name, name))
		case o.Runtime == CRIO && strings.Contains(name, ":"):
			// The upstream's name is the first path segment of the location,
			// and a reference's path cannot hold a colon.
			errs = append(errs, fmt.Errorf("upstream %q: CRI-O reaches an upstream by its name as a path segment, which cannot hold a port; front that registry under a name without one", name))
		}
	}
	if (len(o.ClientCert) == 0) != (len(o.ClientKey) == 0) {
		errs = append(errs, errors.New("give both the client certificate and its key, or neither"))
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return u, nil
}

// Files returns what is written for o, in a stable order: the same options
// give the same bytes.
func Files(o Options) ([]File, error) {
	u, err := o.check()
	if err != nil {
		return nil, err
	}
	ups := slices.Clone(o.Upstreams)
	slices.Sort(ups)
	ups = slices.Compact(ups)
	server := u.Scheme + "://" + u.Host
	var files []File
	certs := func(dir string) {
		if len(o.CA) > 0 {
			files = append(files, File{Path: filepath.Join(dir, caFile), Data: o.CA})
		}
		if len(o.ClientCert) > 0 {
			files = append(files,
				File{Path: filepath.Join(dir, clientCert), Data: o.ClientCert},
				File{Path: filepath.Join(dir, clientKey), Data: o.ClientKey, Secret: true})
		}
	}
	switch o.Runtime {
	case Containerd:
		for _, up := range ups {
			files = append(files, File{Path: filepath.Join(up, hostsFile), Data: containerdHosts(up, server, o)})
			certs(up)
		}
	case CRIO:
		files = append(files, File{Path: dropIn, Data: registriesConf(ups, u)})
		certs(filepath.Join("certs.d", u.Host))
	}
	return files, nil
}

func containerdHosts(upstream, server string, o Options) []byte {
	var b bytes.Buffer
	b.WriteString(Header)
	fmt.Fprintf(&b, `#
# containerd: pulls of %[1]s go to the proxy and to no other host. No [host]
# is listed: containerd falls back from a host that refuses to the next one
# and then to the server, so any other entry would be a way around the
# policy. containerd asks the proxy with ?ns=%[1]s, which selects the
# upstream of that name. Certificate paths are relative to this folder.
`, upstream)
	fmt.Fprintf(&b, "server = %s\n", strconv.Quote(server))
	b.WriteString(`capabilities = ["pull", "resolve"]` + "\n")
	if len(o.CA) > 0 {
		fmt.Fprintf(&b, "ca = %s\n", strconv.Quote(caFile))
	}
	if len(o.ClientCert) > 0 {
		fmt.Fprintf(&b, "client = [[%s, %s]]\n", strconv.Quote(clientCert), strconv.Quote(clientKey))
	}
	return b.Bytes()
}

func registriesConf(upstreams []string, u *url.URL) []byte {
	var b bytes.Buffer
	b.WriteString(Header)
	fmt.Fprintf(&b, `#
# CRI-O, podman, skopeo and buildah: each registry's location is remapped to
# the proxy, with the upstream name as the first path segment. Not
# [[registry.mirror]]: these tools try every mirror and then the original
# location, so a refused image would be pulled from the original. The
# proxy's CA and the client certificate are in ../certs.d/%s/.
`, u.Host)
	for _, up := range upstreams {
		fmt.Fprintf(&b, "\n[[registry]]\nprefix = %s\nlocation = %s\n", strconv.Quote(up), strconv.Quote(u.Host+"/"+up))
		if u.Scheme == "http" {
			b.WriteString("insecure = true\n")
		}
	}
	return b.Bytes()
}

// Result says what Write and Remove changed, as paths relative to the
// output folder.
type Result struct {
	Written  []string // created or changed
	Kept     []string // already as they should be
	Removed  []string // written before, no longer wanted
	Replaced []string // files that another hand wrote, now the proxy's
}

// Write brings dir to what Files(o) says: each file written whole and then
// renamed into place (a runtime never reads half a file), and whatever this
// package wrote before that o no longer wants removed (an upstream dropped,
// a certificate no longer given).
func Write(dir string, o Options) (Result, error) {
	files, err := Files(o)
	if err != nil {
		return Result{}, err
	}
	var res Result
	want := map[string]bool{}
	for _, f := range files {
		want[f.Path] = true
		full := filepath.Join(dir, f.Path)
		old, err := os.ReadFile(full)
		if err == nil && bytes.Equal(old, f.Data) {
			res.Kept = append(res.Kept, f.Path)
			continue
		}
		if err == nil && !owned(f.Path, old) {
			res.Replaced = append(res.Replaced, f.Path)
		}
		if err := writeFile(full, f); err != nil {
			return res, err
		}
		res.Written = append(res.Written, f.Path)
	}
	old, err := find(dir, o.Runtime)
	if err != nil {
		return res, err
	}
	for _, p := range old {
		if want[p] {
			continue
		}
		if err := remove(dir, p); err != nil {
			return res, err
		}
		res.Removed = append(res.Removed, p)
	}
	return res, nil
}

// Remove deletes every file this package wrote in dir for the runtime,
// and the folders it leaves empty.
func Remove(dir, runtime string) (Result, error) {
	if runtime != Containerd && runtime != CRIO {
		return Result{}, fmt.Errorf("runtime %q: want %s or %s", runtime, Containerd, CRIO)
	}
	paths, err := find(dir, runtime)
	if err != nil {
		return Result{}, err
	}
	var res Result
	for _, p := range paths {
		if err := remove(dir, p); err != nil {
			return res, err
		}
		res.Removed = append(res.Removed, p)
	}
	return res, nil
}

// owned reports whether a file at rel with these bytes is this package's:
// a text file that starts with Header, or a certificate under its prefix.
func owned(rel string, data []byte) bool {
	if strings.HasPrefix(filepath.Base(rel), certPrefix) {
		return true
	}
	return bytes.HasPrefix(data, []byte(Header))
}

// find lists what this package wrote in dir: hosts.toml files that start
// with Header and the certificates beside them (containerd), or the drop-in
// and the certificates under certs.d (CRI-O).
func find(dir, runtime string) ([]string, error) {
	var out []string
	switch runtime {
	case Containerd:
		entries, err := os.ReadDir(dir)
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return nil, err
		}
		for _, e := range entries {
			if !e.IsDir() {
				continue
			}
			rel := filepath.Join(e.Name(), hostsFile)
			if data, err := os.ReadFile(filepath.Join(dir, rel)); err == nil && owned(rel, data) {
				out = append(out, rel)
			}
			certs, err := filepath.Glob(filepath.Join(dir, e.Name(), certPrefix+"*"))
			if err != nil {
				return nil, err
			}
			for _, c := range certs {
				out = append(out, filepath.Join(e.Name(), filepath.Base(c)))
			}
		}
	case CRIO:
		if data, err := os.ReadFile(filepath.Join(dir, dropIn)); err == nil && owned(dropIn, data) {
			out = append(out, dropIn)
		}
		certs, err := filepath.Glob(filepath.Join(dir, "certs.d", "*", certPrefix+"*"))
		if err != nil {
			return nil, err
		}
		for _, c := range certs {
			rel, _ := filepath.Rel(dir, c)
			out = append(out, rel)
		}
	}
	return out, nil
}

func writeFile(full string, f File) error {
	if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
		return err
	}
	mode := os.FileMode(0o644)
	if f.Secret {
		mode = 0o600
	}
	// Exactly mode, whatever the file it replaces had: a secret stays 0600.
	pf, err := renameio.NewPendingFile(full, renameio.WithStaticPermissions(mode))
	if err == nil {
		defer func() { _ = pf.Cleanup() }()
		if _, err = pf.Write(f.Data); err == nil {
			err = pf.CloseAtomicallyReplace()
		}
	}
	if err != nil {
		return fmt.Errorf("writing %s: %w", full, err)
	}
	return nil
}

// remove deletes dir/rel and then its folders, up to dir, while they are
// empty.
func remove(dir, rel string) error {
	if err := os.Remove(filepath.Join(dir, rel)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	for d := filepath.Dir(rel); d != "." && d != string(filepath.Separator); d = filepath.Dir(d) {
		if os.Remove(filepath.Join(dir, d)) != nil {
			break // not empty: someone else's files are there
		}
	}
	return nil
}

// Configured reports whether the files in dir send pulls of the registry
// upstream to the proxy at server and to no other host, as the runtime
// reads them: nil when they do, else what is missing or wrong. It reads
// what is there, whoever wrote it.
func Configured(dir, runtime, upstream, server string) error {
	u, err := Options{Runtime: runtime, Server: server, Upstreams: []string{upstream}}.check()
	if err != nil {
		return err
	}
	switch runtime {
	case Containerd:
		path := filepath.Join(dir, upstream, hostsFile)
		data, err := os.ReadFile(path)
		if err != nil {
			return fmt.Errorf("%s: %w: containerd pulls %s from the registry itself", path, err, upstream)
		}
		var h struct {
			Server string         `toml:"server"`
			Host   map[string]any `toml:"host"`
		}
		if _, err := toml.Decode(string(data), &h); err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
		if strings.TrimSuffix(h.Server, "/") != u.Scheme+"://"+u.Host {
			return fmt.Errorf("%s: server is %q, not the proxy %s", path, h.Server, u.Scheme+"://"+u.Host)
		}
		if len(h.Host) > 0 {
			return fmt.Errorf("%s: lists other hosts (%s): containerd falls back to them past the proxy's refusal", path, strings.Join(slices.Sorted(maps.Keys(h.Host)), ", "))
		}
		return nil
	default:
		path := filepath.Join(dir, dropIn)
		data, err := os.ReadFile(path)
		if err != nil {
			return fmt.Errorf("%s: %w: CRI-O pulls %s from the registry itself", path, err, upstream)
		}
		var c struct {
			Registry []struct {
				Prefix   string `toml:"prefix"`
				Location string `toml:"location"`
				Mirror   []any  `toml:"mirror"`
			} `toml:"registry"`
		}
		if _, err := toml.Decode(string(data), &c); err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
		for _, r := range c.Registry {
			if r.Prefix != upstream {
				continue
			}
			if want := u.Host + "/" + upstream; r.Location != want {
				return fmt.Errorf("%s: %s is remapped to %q, not %q", path, upstream, r.Location, want)
			}
			if len(r.Mirror) > 0 {
				return fmt.Errorf("%s: %s has mirrors, tried before the proxy's location", path, upstream)
			}
			return nil
		}
		return fmt.Errorf("%s: no [[registry]] for %s: CRI-O pulls it from the registry itself", path, upstream)
	}
}
