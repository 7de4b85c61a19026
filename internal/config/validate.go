package config

import (
	"errors"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"net/url"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/authz-proxy/authz-proxy/internal/limits"
	"github.com/authz-proxy/authz-proxy/internal/pattern"
	"github.com/authz-proxy/authz-proxy/internal/vuln"
)

var upstreamName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._:-]*$`)

// validator collects every problem of a configuration, each positioned.
type validator struct {
	c    *Config
	errs []error
}

func (v *validator) errorf(path []any, format string, args ...any) {
	v.errs = append(v.errs, v.c.Errorf(path, format, args...))
}

func p(path ...any) []any { return path }

func (c *Config) validate() error {
	v := &validator{c: c}
	v.listen()
	v.metrics()
	v.audit()
	v.upstreams()
	environments := v.environments()
	if c.Cache.MaxEntries < 0 {
		v.errorf(p("cache", "maxEntries"), "must be positive")
	}
	if c.Cache.AllowTTL < 0 || c.Cache.DenyTTL < 0 {
		v.errorf(p("cache"), "TTLs must be positive durations such as 30s or 10m")
	}
	l := c.Limits
	for field, d := range map[string]time.Duration{"dialTimeout": l.DialTimeout, "responseTimeout": l.ResponseTimeout, "verifyTimeout": l.VerifyTimeout, "writeTimeout": l.WriteTimeout, "sendTimeout": l.SendTimeout, "headerWait": l.HeaderWait} {
		if d < 0 {
			v.errorf(p("limits", field), "must be a positive duration such as 10s")
		}
	}
	for field, n := range map[string]int64{"maxSignatures": int64(l.MaxSignatures), "maxArtifactSize": l.MaxArtifactSize, "maxAttestations": int64(l.MaxAttestations), "maxEnvelopeSize": l.MaxEnvelopeSize, "manifestCacheBytes": l.ManifestCacheBytes,
		"maxConnections": int64(l.MaxConnections), "maxConnectionsPerClient": int64(l.MaxConnectionsPerClient), "clientBurst": int64(l.ClientBurst),
		"maxManifestBytesPerUpstream": l.MaxManifestBytesPerUpstream, "maxManifestBytesPerClient": l.MaxManifestBytesPerClient,
		"maxFills": int64(l.MaxFills), "maxFillsPerUpstream": int64(l.MaxFillsPerUpstream), "maxFillWindowBytes": l.MaxFillWindowBytes} {
		if n < 0 {
			v.errorf(p("limits", field), "must be positive")
		}
	}
	if l.ClientRate < 0 {
		v.errorf(p("limits", "clientRate"), "must be a positive number of requests per second, or 0 for no limit")
	}
	for field, n := range map[string]int64{"maxManifestBytesPerUpstream": l.MaxManifestBytesPerUpstream, "maxManifestBytesPerClient": l.MaxManifestBytesPerClient} {
		switch {
		case n > l.MaxManifestBytesInFlight && l.MaxManifestBytesInFlight > 0:
			v.errorf(p("limits", field), "%d is more than maxManifestBytesInFlight (%d): a share is a part of the whole", n, l.MaxManifestBytesInFlight)
		case n > 0 && n < limits.MaxManifestSize:
			v.errorf(p("limits", field), "%d is less than one manifest of the 4 MiB limit: want at least 4194304", n)
		}
	}
	if l.MaxFillsPerUpstream > l.MaxFills && l.MaxFills > 0 {
		v.errorf(p("limits", "maxFillsPerUpstream"), "%d is more than maxFills (%d): a share is a part of the whole", l.MaxFillsPerUpstream, l.MaxFills)
	}
	if l.MaxConnectionsPerClient > l.MaxConnections && l.MaxConnections > 0 {
		v.errorf(p("limits", "maxConnectionsPerClient"), "%d is more than maxConnections (%d): a share is a part of the whole", l.MaxConnectionsPerClient, l.MaxConnections)
	}
	if l.MaxManifestBytesInFlight < 0 {
		v.errorf(p("limits", "maxManifestBytesInFlight"), "must be positive")
	} else if l.MaxManifestBytesInFlight < 2*limits.MaxManifestSize {
		v.errorf(p("limits", "maxManifestBytesInFlight"), "%d is less than two manifests of the 4 MiB limit: want at least 8388608", l.MaxManifestBytesInFlight)
	}
	v.store()
	v.clients()
	roots := v.trustRoots()
	attestors := v.attestors(roots)
	v.policy(attestors, environments)
	return errors.Join(v.errs...)
}

// store checks the store section: a driver, the fields it takes and only
// those, and a size bound.
func (v *validator) store() {
	st := v.c.Store
	if st == nil {
		return
	}
	path := p("store")
	fields := map[string]bool{
		"rootdirectory": st.RootDirectory != "", "bucket": st.Bucket != "", "region": st.Region != "",
		"regionendpoint": st.RegionEndpoint != "", "forcepathstyle": st.ForcePathStyle,
		"accesskeyFile": st.AccessKeyFile != "", "secretkeyFile": st.SecretKeyFile != "",
	}
	var takes []string
	switch st.Driver {
	case StoreFilesystem:
		takes = []string{"rootdirectory"}
		if st.RootDirectory == "" {
			v.errorf(path, "rootdirectory is required with driver filesystem: the folder that holds the content, e.g. /var/lib/authz-proxy")
		}
	case StoreS3:
		takes = []string{"rootdirectory", "bucket", "region", "regionendpoint", "forcepathstyle", "accesskeyFile", "secretkeyFile"}
		v.s3(st)
	case StoreInMemory:
	case "":
		v.errorf(path, "driver is required: filesystem, s3 or inmemory")
	default:
		v.errorf(append(path, "driver"), "%q: want filesystem, s3 or inmemory", st.Driver)
	}
	if st.Driver != "" {
		for _, f := range slices.Sorted(maps.Keys(fields)) {
			if fields[f] && !slices.Contains(takes, f) {
				v.errorf(append(path, f), "driver %s takes no %s", st.Driver, f)
			}
		}
	}
	if st.MaxSize == "" {
		v.errorf(path, "maxSize is required: how much the store may hold, e.g. 100GiB; past it the least recently used blobs are evicted")
	} else if n, err := ParseSize(st.MaxSize); err != nil {
		v.errorf(append(path, "maxSize"), "%v", err)
	} else {
		st.MaxBytes = n
	}
}

// s3 checks where the s3 driver connects and with what credential.
func (v *validator) s3(st *Store) {
	path := p("store")
	if st.Bucket == "" {
		v.errorf(path, "bucket is required with driver s3")
	}
	if st.RegionEndpoint == "" && st.Region == "" {
		v.errorf(path, "region is required with driver s3 (or regionendpoint, for S3-compatible services)")
	}
	if e := st.RegionEndpoint; e != "" {
		u, err := url.Parse(e)
		if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.User != nil {
			v.errorf(append(path, "regionendpoint"), "%q: want http(s)://host[:port] of the S3 service, without credentials", e)
		}
	}
	if (st.AccessKeyFile == "") != (st.SecretKeyFile == "") {
		v.errorf(path, "set both accesskeyFile and secretkeyFile, or neither (the credential then comes from the environment: AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)")
	}
	v.readable(append(path, "accesskeyFile"), st.AccessKeyFile)
	v.readable(append(path, "secretkeyFile"), st.SecretKeyFile)
}

var sizeRE = regexp.MustCompile(`^\s*([0-9]+(?:\.[0-9]+)?)\s*([KMGT]i?B|B)?\s*$`)

// ParseSize reads a size such as 100GiB (binary units KiB, MiB, GiB, TiB),
// 500MB (decimal units KB, MB, GB, TB) or 1073741824 (bytes).
func ParseSize(s string) (int64, error) {
	m := sizeRE.FindStringSubmatch(s)
	if m == nil {
		return 0, fmt.Errorf("%q: want a size such as 100GiB, 500MB or a number of bytes", s)
	}
	n, err := strconv.ParseFloat(m[1], 64)
	if err != nil {
		return 0, fmt.Errorf("%q: %v", s, err)
	}
	unit := map[string]float64{"": 1, "B": 1,
		"KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30, "TiB": 1 << 40,
		"KB": 1e3, "MB": 1e6, "GB": 1e9, "TB": 1e12}[m[2]]
	size := n * unit
	if size < 1 || size > 1<<62 {
		return 0, fmt.Errorf("%q: want a size from 1 byte to 4 EiB", s)
	}
	return int64(size), nil
}

func (v *validator) metrics() {
	m := v.c.Metrics
	if m == nil {
		return
	}
	if _, _, err := net.SplitHostPort(m.Addr); err != nil {
		v.errorf(p("metrics", "addr"), "want host:port, e.g. 127.0.0.1:9090: %v", err)
	} else if m.Addr == v.c.Listen.Addr {
		v.errorf(p("metrics", "addr"), "%s is listen.addr too: give metrics a port of its own", m.Addr)
	}
}

var logID = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._:@/-]{0,127}$`)

func (v *validator) audit() {
	a := v.c.Audit
	if a.LogID != "" && !logID.MatchString(a.LogID) {
		v.errorf(p("audit", "logId"), "%q: want up to 128 letters, digits and . _ : @ / -, starting with a letter or digit", a.LogID)
	}
	if r := v.c.Revalidate; r != nil {
		if r.Interval < time.Second {
			v.errorf(p("revalidate", "interval"), "%s: want an interval of at least 1s, such as 4h", r.Interval)
		}
		if r.Window < 0 {
			v.errorf(p("revalidate", "window"), "%s: want a positive duration, such as 24h", r.Window)
		}
	}
	cp := a.Checkpoint
	if cp == nil {
		return
	}
	if !a.Chained() {
		v.errorf(p("audit", "checkpoint"), "a checkpoint signs the chain: it needs audit.chain: true")
	}
	if cp.KeyFile == "" {
		v.errorf(p("audit", "checkpoint"), "keyFile is required: the PEM private key (Ed25519 or ECDSA) that signs the checkpoints")
	} else {
		v.readable(p("audit", "checkpoint", "keyFile"), cp.KeyFile)
	}
	if cp.Every < time.Second {
		v.errorf(p("audit", "checkpoint", "every"), "%s: want an interval of at least 1s, such as 1m", cp.Every)
	}
}

// environments checks the environments and returns their names.
func (v *validator) environments() map[string]bool {
	names := map[string]bool{}
	mTLS := v.c.Listen.TLS != nil && v.c.Listen.TLS.ClientCAFile != ""
	for i, e := range v.c.Environments {
		switch {
		case e.Name == "":
			v.errorf(p("environments", i), "name is required")
		case names[e.Name]:
			v.errorf(p("environments", i, "name"), "%q is used twice", e.Name)
		}
		names[e.Name] = true
		if len(e.Clients) == 0 {
			v.errorf(p("environments", i), "clients is required: give at least one cn, cidr or principal")
		}
		for j, sel := range e.Clients {
			path := p("environments", i, "clients", j)
			set := 0
			for _, f := range []string{sel.CN, sel.CIDR, sel.Principal} {
				if f != "" {
					set++
				}
			}
			switch {
			case set != 1:
				v.errorf(path, "set exactly one of cn, cidr and principal")
			case sel.Principal != "" && v.c.Clients == nil:
				v.errorf(append(path, "principal"), "%q selects clients by who they authenticated as, but there is no clients section: nobody authenticates", sel.Principal)
			case sel.CN != "" && !mTLS:
				v.errorf(append(path, "cn"), "%q selects clients by their certificate, but listen.tls.clientCAFile is not set, so no client certificate is asked for", sel.CN)
			case sel.CIDR != "":
				if _, err := netip.ParsePrefix(sel.CIDR); err != nil {
					v.errorf(append(path, "cidr"), "%q: want an address range such as 10.1.0.0/16 (one address: 10.1.2.3/32)", sel.CIDR)
				}
			}
		}
	}
	return names
}

// clients checks the clients section: a way to authenticate, issuers
// that can be verified, access entries that name someone and something.
func (v *validator) clients() {
	cl := v.c.Clients
	if cl == nil {
		return
	}
	if cl.Htpasswd == "" && len(cl.Tokens) == 0 && !cl.Certificates {
		v.errorf(p("clients"), "no way to authenticate: set htpasswd, tokens or certificates (or remove clients to let anyone pull)")
	}
	if cl.Certificates && (v.c.Listen.TLS == nil || v.c.Listen.TLS.ClientCAFile == "") {
		v.errorf(p("clients", "certificates"), "needs listen.tls.clientCAFile: without it no client certificate is asked for")
	}
	names := map[string]bool{}
	for i, t := range cl.Tokens {
		path := p("clients", "tokens", i)
		switch {
		case !principalPrefix.MatchString(t.Name):
			v.errorf(append(path, "name"), "%q: want a short name of letters, digits and '-' (it prefixes the principals: <name>:<sub>)", t.Name)
		case t.Name == "user" || t.Name == "cert":
			v.errorf(append(path, "name"), "%q is the prefix of htpasswd users or certificates: choose another", t.Name)
		case names[t.Name]:
			v.errorf(append(path, "name"), "%q is used twice", t.Name)
		}
		names[t.Name] = true
		if u, err := url.Parse(t.Issuer); err != nil || u.Scheme == "" || u.Host == "" {
			v.errorf(append(path, "issuer"), "%q: want the issuer's URL, as its tokens' iss claim says it", t.Issuer)
		}
		if len(t.Audiences) == 0 {
			v.errorf(append(path, "audiences"), "is required: name the audience the tokens are issued for (e.g. authz-proxy)")
		}
		switch {
		case (t.JWKSFile == "") == (t.JWKSURL == ""):
			v.errorf(path, "set exactly one of jwksFile and jwksURL")
		case t.JWKSURL != "":
			if u, err := url.Parse(t.JWKSURL); err != nil || u.Scheme != "https" && u.Scheme != "http" || u.Host == "" {
				v.errorf(append(path, "jwksURL"), "%q: want an http(s) URL", t.JWKSURL)
			}
		}
	}
	for i, a := range cl.Anonymous {
		if _, err := pattern.Parse(a); err != nil {
			v.errorf(p("clients", "anonymous", i), "%v", err)
		}
	}
	for i, a := range cl.Access {
		path := p("clients", "access", i)
		if len(a.Principals) == 0 || len(a.Images) == 0 {
			v.errorf(path, "give principals and images: who may pull what")
		}
		for j, pr := range a.Principals {
			if strings.TrimSpace(pr) == "" {
				v.errorf(append(path, "principals", j), "is empty")
			}
		}
		for j, img := range a.Images {
			if _, err := pattern.Parse(img); err != nil {
				v.errorf(append(path, "images", j), "%v", err)
			}
		}
	}
}

// principalPrefix is the shape of a token issuer's name.
var principalPrefix = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,31}$`)

// warnings lists what loads but deserves a look, as of now.
func (c *Config) warnings(now time.Time) []string {
	var w []string
	if c.Store != nil && c.Store.Driver == StoreInMemory {
		w = append(w, c.Errorf(p("store", "driver"), "inmemory keeps nothing past the process and holds up to maxSize in memory: for tests; use filesystem").Error())
	}
	for i, u := range c.Upstreams {
		if c.Store == nil && len(u.ImmutableTags) > 0 {
			w = append(w, c.Errorf(p("upstreams", i, "immutableTags"), "takes effect only with a store section: without one, every tag is resolved by the upstream").Error())
		}
	}
	for i, b := range c.Policy.Breakglass {
		if !b.Expires.IsZero() && !now.Before(b.Expires) {
			w = append(w, c.Errorf(p("policy", "breakglass", i, "expires"), "%s has passed: this entry is ignored (remove it)", b.Expires.Format(time.RFC3339)).Error())
		}
	}
	rules := append([]Rule{}, c.Policy.Rules...)
	paths := make([][]any, 0, len(rules)+1)
	for i := range rules {
		paths = append(paths, p("policy", "rules", i))
	}
	rules, paths = append(rules, c.Policy.Default), append(paths, p("policy", "default"))
	for k, r := range rules {
		for j, req := range r.Require {
			if req.Vulnerabilities == nil {
				continue
			}
			for i, a := range req.Vulnerabilities.AllowedCves {
				path := append(append([]any{}, paths[k]...), "require", j, "vulnerabilities", "allowedCves", i, "expires")
				switch left := a.Expires.Sub(now); {
				case a.Expires.IsZero():
				case left <= 0:
					w = append(w, c.Errorf(path, "%s has passed: the exception for %s is ignored (remove it)", a.Expires.Format(time.RFC3339), a.ID).Error())
				case left <= AllowedCVEWarning:
					w = append(w, c.Errorf(path, "the exception for %s expires in %s (%s): fix the image or renew the exception", a.ID, Days(left), a.Expires.Format(time.RFC3339)).Error())
				}
			}
		}
	}
	return w
}

// Days says a duration in days (hours under two days), for messages.
func Days(d time.Duration) string {
	if d < 48*time.Hour {
		return fmt.Sprintf("%dh", int(d.Hours()))
	}
	return fmt.Sprintf("%d days", int(d.Hours()/24))
}

func (v *validator) listen() {
	l := v.c.Listen
	if _, _, err := net.SplitHostPort(l.Addr); err != nil {
		v.errorf(p("listen", "addr"), "want host:port, e.g. 127.0.0.1:5000: %v", err)
	}
	if l.TLS == nil {
		return
	}
	if l.TLS.CertFile == "" || l.TLS.KeyFile == "" {
		v.errorf(p("listen", "tls"), "certFile and keyFile are both required")
	}
	for field, name := range map[string]string{"certFile": l.TLS.CertFile, "keyFile": l.TLS.KeyFile, "clientCAFile": l.TLS.ClientCAFile} {
		v.readable(p("listen", "tls", field), name)
	}
}

func (v *validator) readable(path []any, name string) {
	if name == "" {
		return
	}
	if _, err := os.ReadFile(v.c.Path(name)); err != nil {
		v.errorf(path, "%v", err)
	}
}

func (v *validator) upstreams() {
	c := v.c
	if len(c.Upstreams) == 0 {
		v.errorf(p("upstreams"), "at least one upstream is required")
	}
	seen := map[string]bool{}
	for i, u := range c.Upstreams {
		switch {
		case u.Name == "":
			v.errorf(p("upstreams", i), "name is required")
		case !upstreamName.MatchString(u.Name):
			v.errorf(p("upstreams", i, "name"), "%q: use a registry host name such as docker.io (letters, digits, . _ - :)", u.Name)
		case seen[u.Name]:
			v.errorf(p("upstreams", i, "name"), "%q is used twice", u.Name)
		}
		seen[u.Name] = true
		v.upstreamURL(i, u)
		v.upstreamTags(i, u)
		if a := u.Auth; a != nil {
			switch {
			case a.Username == "":
				v.errorf(p("upstreams", i, "auth"), "username is required")
			case (a.PasswordFile == "") == (a.PasswordEnv == ""):
				v.errorf(p("upstreams", i, "auth"), "set exactly one of passwordFile and passwordEnv")
			case a.PasswordFile != "":
				v.readable(p("upstreams", i, "auth", "passwordFile"), a.PasswordFile)
			case os.Getenv(a.PasswordEnv) == "":
				v.errorf(p("upstreams", i, "auth", "passwordEnv"), "environment variable %s is not set", a.PasswordEnv)
			}
		}
	}
	if c.DefaultUpstream != "" && !seen[c.DefaultUpstream] {
		v.errorf(p("defaultUpstream"), "%q names no upstream", c.DefaultUpstream)
	}
}

// tagGlob is an immutableTags entry: a tag's characters, and `*`.
var tagGlob = regexp.MustCompile(`^[A-Za-z0-9_*][A-Za-z0-9._*-]{0,127}$`)

// upstreamTags checks immutableTags, tagTTL and staleIfError.
func (v *validator) upstreamTags(i int, up Upstream) {
	seen := map[string]bool{}
	for j, g := range up.ImmutableTags {
		switch {
		case !tagGlob.MatchString(g):
			v.errorf(p("upstreams", i, "immutableTags", j), "%q: want a tag glob such as v*.*.* (letters, digits, _ . - and *, up to 128, not starting with . or -)", g)
		case g == "*" || strings.Trim(g, "*") == "":
			v.errorf(p("upstreams", i, "immutableTags", j), "%q makes every tag immutable, latest included: name the tags that never move, such as v*.*.*", g)
		case seen[g]:
			v.errorf(p("upstreams", i, "immutableTags", j), "%q is listed twice", g)
		}
		seen[g] = true
	}
	if up.TagTTL < 0 {
		v.errorf(p("upstreams", i, "tagTTL"), "%s: want a duration of 0s (ask the upstream on every pull) or more, such as 30s", up.TagTTL)
	}
	if d := up.StaleIfError; d != nil && *d < 0 {
		v.errorf(p("upstreams", i, "staleIfError"), "%s: want a duration of 0s (off) or more, such as 24h", *d)
	}
}

func (v *validator) upstreamURL(i int, up Upstream) {
	path := p("upstreams", i, "url")
	if up.URL == "" {
		v.errorf(p("upstreams", i), "url is required")
		return
	}
	u, err := url.Parse(up.URL)
	switch {
	case err != nil:
		v.errorf(path, "%v", err)
	case u.Scheme != "https" && u.Scheme != "http":
		v.errorf(path, "%q: want https://host[:port]", up.URL)
	case u.Host == "":
		v.errorf(path, "%q has no host", up.URL)
	case u.Path != "" && u.Path != "/", u.RawQuery != "", u.User != nil:
		v.errorf(path, "%q: give only scheme and host (no path, query or credentials; use auth for credentials)", up.URL)
	case u.Scheme == "http" && !up.Insecure:
		v.errorf(path, "%q is plain http: set insecure: true to allow it (tests and labs only)", up.URL)
	}
}

// trustRoots checks the named trust roots and returns their names.
func (v *validator) trustRoots() map[string]bool {
	names := map[string]bool{}
	for i, r := range v.c.TrustRoots {
		path := p("trustRoots", i)
		switch {
		case r.Name == "":
			v.errorf(path, "name is required")
		case names[r.Name]:
			v.errorf(p("trustRoots", i, "name"), "%q is used twice", r.Name)
		}
		names[r.Name] = true
		switch {
		case (r.TUF == nil) == (r.File == ""):
			v.errorf(path, "set exactly one of tuf and file: a TUF repository that keeps trusted_root.json current, or a trusted_root.json file")
		case r.File != "":
			v.readable(p("trustRoots", i, "file"), r.File)
		default:
			v.tuf(append(path, "tuf"), r.TUF)
		}
	}
	return names
}

// tuf checks a TUF repository's settings; the root.json is parsed when the
// trust roots load.
func (v *validator) tuf(path []any, t *TUF) {
	u, err := url.Parse(t.Mirror)
	switch {
	case err != nil:
		v.errorf(append(p(path...), "mirror"), "%v", err)
	case u.Scheme == "file":
		if u.Host != "" || (u.Path == "" && u.Opaque == "") {
			v.errorf(append(p(path...), "mirror"), "%q: want file:///absolute/folder or file:relative/folder (a snapshot written by authz-proxy trust fetch)", t.Mirror)
		}
	case u.Scheme != "https" && u.Scheme != "http":
		v.errorf(append(p(path...), "mirror"), "%q: want https://host[/path], http://host[/path] or file:///folder", t.Mirror)
	case u.Host == "":
		v.errorf(append(p(path...), "mirror"), "%q has no host", t.Mirror)
	case u.RawQuery != "" || u.User != nil:
		v.errorf(append(p(path...), "mirror"), "%q: give no query or credentials", t.Mirror)
	}
	switch {
	case t.Root == "":
		v.errorf(append(p(path...), "root"), "required for a mirror other than %s: the repository's root.json that the client starts trusting (embedded is the public-good root)", DefaultTUFMirror)
	case t.Root != EmbeddedRoot:
		v.readable(append(p(path...), "root"), t.Root)
	}
	if t.Refresh != nil && *t.Refresh < time.Second {
		v.errorf(append(p(path...), "refresh"), "%s: want a duration of at least 1s, such as 24h", *t.Refresh)
	}
	if t.Cache != "" {
		if fi, err := os.Stat(v.c.Path(t.Cache)); err == nil && !fi.IsDir() {
			v.errorf(append(p(path...), "cache"), "%s is not a folder", t.Cache)
		}
	}
}

func (v *validator) attestors(roots map[string]bool) map[string]bool {
	names := map[string]bool{}
	for i, a := range v.c.Attestors {
		switch {
		case a.Name == "":
			v.errorf(p("attestors", i), "name is required")
		case names[a.Name]:
			v.errorf(p("attestors", i, "name"), "%q is used twice", a.Name)
		}
		names[a.Name] = true
		kinds := 0
		for _, set := range []bool{len(a.PublicKeys) > 0, a.Keyless != nil, a.Notation != nil} {
			if set {
				kinds++
			}
		}
		switch {
		case kinds > 1:
			v.errorf(p("attestors", i), "set exactly one of publicKeys, keyless and notation: an attestor is key holders, a keyless identity or a Notary Project signer")
		case a.Keyless != nil:
			v.keyless(i, a, roots)
		case a.Notation != nil:
			v.notation(i, a)
		case len(a.PublicKeys) == 0:
			v.errorf(p("attestors", i), "publicKeys, keyless or notation is required")
		case a.RequireTlog && a.TrustedRootFile == "" && len(a.TrustRoots) == 0:
			v.errorf(p("attestors", i, "requireTlog"), "needs trustRoots or trustedRootFile: the Sigstore trusted roots (trusted_root.json) whose Rekor keys verify the transparency-log proofs")
		case !a.RequireTlog && (a.TrustedRootFile != "" || len(a.TrustRoots) > 0):
			v.errorf(p("attestors", i), "trustRoots and trustedRootFile verify transparency-log proofs: set requireTlog: true, or remove them")
		default:
			v.readable(p("attestors", i, "trustedRootFile"), a.TrustedRootFile)
			v.rootNames(p("attestors", i, "trustRoots"), a.TrustRoots, roots)
		}
		for j, k := range a.PublicKeys {
			if (k.File == "") == (k.PEM == "") {
				v.errorf(p("attestors", i, "publicKeys", j), "set exactly one of file and pem")
			}
		}
	}
	return names
}

// keyless checks the keyless identity of attestor i.
func (v *validator) keyless(i int, a Attestor, trustRoots map[string]bool) {
	k := a.Keyless
	path := p("attestors", i, "keyless")
	if a.RequireTlog {
		v.errorf(p("attestors", i, "requireTlog"), "for a keyless attestor, set keyless.requireTlog instead")
	}
	if a.TrustedRootFile != "" {
		v.errorf(p("attestors", i, "trustedRootFile"), "for a keyless attestor, set keyless.trustedRootFile instead")
	}
	if len(a.TrustRoots) > 0 {
		v.errorf(p("attestors", i, "trustRoots"), "for a keyless attestor, set keyless.trustRoots instead")
	}
	if k.Issuer == "" && k.GitHub == nil {
		v.errorf(path, "issuer is required: the OIDC issuer of the signing identity, e.g. https://token.actions.githubusercontent.com")
	}
	switch {
	case k.Subject != "" && k.SubjectRegexp != "":
		v.errorf(path, "set at most one of subject and subjectRegexp")
	case k.Subject == "" && k.SubjectRegexp == "" && k.GitHub == nil:
		v.errorf(path, "set subject, subjectRegexp or github: the identity the certificate must name")
	case k.SubjectRegexp != "":
		if _, err := regexp.Compile(k.SubjectRegexp); err != nil {
			v.errorf(append(path, "subjectRegexp"), "%v", err)
		}
	}
	for _, name := range slices.Sorted(maps.Keys(k.Certificate)) {
		value := k.Certificate[name]
		fp := append(p(path...), "certificate", name)
		base, isRegexp := strings.CutSuffix(name, "Regexp")
		switch {
		case value == "":
			v.errorf(fp, "empty: give the value the certificate must carry (or drop the field)")
		case isRegexp:
			if _, err := regexp.Compile(value); err != nil {
				v.errorf(fp, "%v", err)
			}
			if _, both := k.Certificate[base]; both {
				v.errorf(fp, "set at most one of %s and %s", base, name)
			}
		}
	}
	if g := k.GitHub; g != nil {
		v.github(append(p(path...), "github"), g)
	}
	if len(k.TrustedRoots()) == 0 && len(k.TrustRoots) == 0 {
		v.errorf(path, "trustRoots, trustedRootFile or trustedRootFiles is required: the Sigstore trusted roots (trusted_root.json) to verify certificates and log entries offline")
	}
	v.rootNames(append(p(path...), "trustRoots"), k.TrustRoots, trustRoots)
	v.readable(append(p(path...), "trustedRootFile"), k.TrustedRootFile)
	for j, f := range k.TrustedRootFiles {
		if f == "" {
			v.errorf(append(p(path...), "trustedRootFiles", j), "empty file name")
		}
		v.readable(append(p(path...), "trustedRootFiles", j), f)
	}
}

// notation checks the Notary Project signer of attestor i. The
// certificates and identities are parsed when the policy compiles.
func (v *validator) notation(i int, a Attestor) {
	n := a.Notation
	path := p("attestors", i, "notation")
	if a.RequireTlog || a.TrustedRootFile != "" {
		v.errorf(p("attestors", i), "requireTlog and trustedRootFile are Sigstore's: a notation attestor uses trustStore (and tsaRoots for timestamps)")
	}
	if len(n.TrustStore) == 0 {
		v.errorf(path, "trustStore is required: files of the CA certificates (PEM) that the signature's certificate chain must include, as in notation's trust store")
	}
	for _, set := range []struct {
		field string
		files []string
	}{{"trustStore", n.TrustStore}, {"tsaRoots", n.TSARoots}} {
		for j, f := range set.files {
			fp := append(p(path...), set.field, j)
			if f == "" {
				v.errorf(fp, "empty file name")
				continue
			}
			v.readable(fp, f)
		}
	}
	switch {
	case len(n.TrustedIdentities) == 0:
		v.errorf(path, `trustedIdentities is required: "x509.subject: C=US, ST=WA, O=Acme, CN=release" as notation's trust policy writes them, or "*" for any signer of the trust store`)
	case len(n.TrustedIdentities) > 1 && slices.Contains(n.TrustedIdentities, "*"):
		v.errorf(append(p(path...), "trustedIdentities"), `"*" trusts any signer of the trust store: it cannot be listed with other identities`)
	}
	switch n.Level {
	case "", NotationStrict, NotationPermissive, NotationAudit:
	default:
		v.errorf(append(p(path...), "level"), "%q: want strict, permissive or audit (notation's levels; skip is leaving the attestor out)", n.Level)
	}
	switch {
	case n.VerifyTimestamp != "" && n.VerifyTimestamp != TimestampAlways && n.VerifyTimestamp != TimestampAfterCertExpiry:
		v.errorf(append(p(path...), "verifyTimestamp"), "%q: want always or afterCertExpiry", n.VerifyTimestamp)
	case n.VerifyTimestamp != "" && len(n.TSARoots) == 0:
		v.errorf(append(p(path...), "verifyTimestamp"), "needs tsaRoots: the root certificates of the timestamp authorities whose timestamps are verified")
	}
}

var (
	githubRepository = regexp.MustCompile(`^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$`)
	githubWorkflow   = regexp.MustCompile(`^([A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+/)?\.github/workflows/[^@]+\.ya?ml$`)
)

// github checks the GitHub Actions identity at path.
func (v *validator) github(path []any, g *GitHub) {
	switch {
	case g.Repository == "":
		v.errorf(path, "repository is required: owner/name of the repository that was built, e.g. acme/app")
	case !githubRepository.MatchString(g.Repository):
		v.errorf(append(path, "repository"), "%q: want owner/name, e.g. acme/app", g.Repository)
	}
	if g.Workflow != "" && !githubWorkflow.MatchString(g.Workflow) {
		v.errorf(append(path, "workflow"), "%q: want the workflow file's path, .github/workflows/release.yml, or owner/name/.github/workflows/build.yml for a reusable workflow of another repository (no @ref: github.ref says which ref)", g.Workflow)
	}
	if g.Ref != "" && !strings.HasPrefix(g.Ref, "refs/") {
		v.errorf(append(path, "ref"), "%q: want a full git ref, e.g. refs/tags/v* or refs/heads/main", g.Ref)
	}
	switch g.Runner {
	case "", "github-hosted", "self-hosted":
	default:
		v.errorf(append(path, "runner"), "%q: want github-hosted or self-hosted (leave it out for either)", g.Runner)
	}
	if g.Host != "" && (strings.ContainsAny(g.Host, "/:@ ") || !strings.Contains(g.Host, ".")) {
		v.errorf(append(path, "host"), "%q: want a host name such as github.com or acme.ghe.com", g.Host)
	}
}

func (v *validator) policy(attestors, environments map[string]bool) {
	pol := v.c.Policy
	v.enforcement(p("policy", "enforcement"), pol.Enforcement)
	for i, a := range pol.Allowlist {
		if _, err := pattern.Parse(a); err != nil {
			v.errorf(p("policy", "allowlist", i), "%v", err)
		}
	}
	for i, b := range pol.Breakglass {
		path := p("policy", "breakglass", i)
		if b.Image == "" {
			v.errorf(path, "image is required: <upstream>/<repository>[@digest]")
		} else if _, err := pattern.Parse(b.Image); err != nil {
			v.errorf(append(path, "image"), "%v", err)
		}
		if b.Expires.IsZero() {
			v.errorf(path, "expires is required, e.g. %s: an exception must end", time.Now().Add(24*time.Hour).UTC().Format(time.RFC3339))
		}
		if b.Reason == "" {
			v.errorf(path, "reason is required (an incident or ticket): it is written into every decision the entry makes")
		}
	}
	names := map[string]bool{}
	for i, r := range pol.Rules {
		path := p("policy", "rules", i)
		switch {
		case r.Name == "":
			v.errorf(path, "name is required (it appears in every decision)")
		case names[r.Name]:
			v.errorf(append(path, "name"), "%q is used twice", r.Name)
		}
		names[r.Name] = true
		if len(r.Images) == 0 {
			v.errorf(path, "images is required")
		}
		for j, img := range r.Images {
			if _, err := pattern.Parse(img); err != nil {
				v.errorf(append(path, "images", j), "%v", err)
			}
		}
		for j, env := range r.Environments {
			if !environments[env] {
				v.errorf(append(path, "environments", j), "unknown environment %q (define it under environments)", env)
			}
		}
		v.rule(path, r, attestors)
	}
	if len(pol.Default.Images) > 0 {
		v.errorf(p("policy", "default", "images"), "the default rule applies to every image no rule matched; it takes no images")
	}
	if len(pol.Default.Environments) > 0 {
		v.errorf(p("policy", "default", "environments"), "the default rule applies to every client; it takes no environments")
	}
	v.rule(p("policy", "default"), pol.Default, attestors)
}

func (v *validator) enforcement(path []any, e string) {
	if e != "" && e != Enforce && e != DryRun {
		v.errorf(path, "%q: want enforce or dryrun", e)
	}
}

func (v *validator) rule(path []any, r Rule, attestors map[string]bool) {
	v.enforcement(append(path, "enforcement"), r.Enforcement)
	switch r.Action {
	case ActionAllow, ActionDeny:
		if len(r.Require) > 0 {
			v.errorf(append(path, "require"), "action %s takes no require (require implies action verify)", r.Action)
		}
	case ActionVerify:
		if len(r.Require) == 0 {
			v.errorf(path, "action verify needs at least one require entry")
		}
	case "":
		v.errorf(path, "action is required: allow, deny or verify (or give require)")
	default:
		v.errorf(append(path, "action"), "%q: want allow, deny or verify", r.Action)
	}
	for i, req := range r.Require {
		rp := append(append([]any{}, path...), "require", i)
		kinds := 0
		for _, set := range []bool{req.Signature != nil, req.Attestation != nil, req.Vulnerabilities != nil} {
			if set {
				kinds++
			}
		}
		switch {
		case kinds != 1:
			v.errorf(rp, "give exactly one of signature, attestation and vulnerabilities")
		case req.Attestation != nil:
			v.attestation(append(rp, "attestation"), req.Attestation, attestors)
		case req.Vulnerabilities != nil:
			v.vulnerabilities(append(rp, "vulnerabilities"), req.Vulnerabilities, attestors)
		default:
			v.requirementAttestors(append(rp, "signature"), req.Signature.Attestors, req.Signature.Threshold, attestors)
			v.auditLevel(path, append(rp, "signature"), r, req.Signature.Attestors)
		}
	}
}

// notationAttestor returns the Notary Project signer named name, nil if
// there is none.
func (v *validator) notationAttestor(name string) *Notation {
	for _, a := range v.c.Attestors {
		if a.Name == name {
			return a.Notation
		}
	}
	return nil
}

// auditLevel checks that a notation attestor of level audit is only asked
// by rules in dryrun: audit means "log, never block".
func (v *validator) auditLevel(rulePath, path []any, r Rule, names []string) {
	enforcement := r.Enforcement
	if enforcement == "" {
		enforcement = v.c.Policy.Enforcement
	}
	if enforcement != Enforce {
		return
	}
	for i, name := range names {
		if n := v.notationAttestor(name); n != nil && n.Level == NotationAudit {
			v.errorf(append(append([]any{}, path...), "attestors", i), "attestor %q has level audit, which logs failures without blocking: that is enforcement dryrun here; set %s.enforcement: dryrun (or give the attestor level strict or permissive)", name, fieldName(rulePath))
		}
	}
}

func (v *validator) attestation(path []any, a *AttestationRequirement, attestors map[string]bool) {
	switch {
	case a.PredicateType == "":
		v.errorf(path, "predicateType is required, e.g. https://slsa.dev/provenance/v1 or a cosign --type name such as slsaprovenance1 or vuln")
	case !strings.Contains(a.PredicateType, ":"):
		v.errorf(append(path, "predicateType"), "%q: want a predicate type URI or one of cosign's --type names (%s)", a.PredicateType, strings.Join(slices.Sorted(maps.Keys(PredicateTypeAliases)), ", "))
	default:
		if _, err := url.ParseRequestURI(a.PredicateType); err != nil {
			v.errorf(append(path, "predicateType"), "%q is not a URI: %v", a.PredicateType, err)
		}
	}
	v.requirementAttestors(path, a.Attestors, a.Threshold, attestors)
	v.attestingAttestors(path, a.Attestors)
	switch a.Select {
	case SelectNewest, SelectAny, SelectAll:
	default:
		v.errorf(append(path, "select"), "%q: want newest (the newest verified attestation decides), any (any one that satisfies) or all (every one must satisfy)", a.Select)
	}
}

// attestingAttestors checks that the attestors at path can sign in-toto
// attestations.
func (v *validator) attestingAttestors(path []any, names []string) {
	for i, name := range names {
		if v.notationAttestor(name) != nil {
			v.errorf(append(append([]any{}, path...), "attestors", i), "attestor %q is a Notary Project signer: notation signs images, not in-toto attestations; list it under a signature requirement", name)
		}
	}
}

// vulnerabilities checks a vulnerabilities requirement: who signs scans
// and VEX, the severities, and each exception and blocked id.
func (v *validator) vulnerabilities(path []any, r *VulnerabilitiesRequirement, attestors map[string]bool) {
	at := func(field ...any) []any { return append(append([]any{}, path...), field...) }
	v.requirementAttestors(path, r.Attestors, 1, attestors)
	v.attestingAttestors(path, r.Attestors)
	if r.MaxAge < 0 {
		v.errorf(at("maxAge"), "%s: want a positive duration such as 168h (or leave it out for no bound)", r.MaxAge)
	}
	for _, s := range []struct{ field, value string }{
		{"maximumFixableSeverity", r.MaximumFixableSeverity},
		{"maximumUnfixableSeverity", r.MaximumUnfixableSeverity},
		{"unknownSeverity", r.UnknownSeverity},
	} {
		if s.value == "" {
			v.errorf(path, "%s is required: the worst severity allowed (%s)", s.field, strings.Join(vuln.Levels(), ", "))
		} else if _, err := vuln.ParseSeverity(s.value); err != nil {
			v.errorf(at(s.field), "%v", err)
		}
	}
	allowed := map[string]bool{}
	for i, a := range r.AllowedCves {
		switch {
		case a.ID == "":
			v.errorf(at("allowedCves", i), "id is required: the CVE (CVE-2024-1234) or GitHub advisory (GHSA-xxxx-xxxx-xxxx) excepted")
		case !vuln.ValidID(a.ID):
			v.errorf(at("allowedCves", i, "id"), "%q: want a CVE id such as CVE-2024-1234 or a GitHub advisory id GHSA-xxxx-xxxx-xxxx", a.ID)
		case allowed[strings.ToUpper(a.ID)]:
			v.errorf(at("allowedCves", i, "id"), "%q is listed twice", a.ID)
		}
		allowed[strings.ToUpper(a.ID)] = true
		if a.Expires.IsZero() {
			v.errorf(at("allowedCves", i), "expires is required, e.g. %s: an exception must end", time.Now().Add(30*24*time.Hour).UTC().Format(time.RFC3339))
		}
		if a.Reason == "" {
			v.errorf(at("allowedCves", i), "reason is required (why it is safe, a ticket): it is written into every decision the exception makes")
		}
	}
	blocked := map[string]bool{}
	for i, id := range r.BlockedCves {
		switch {
		case !vuln.ValidID(id):
			v.errorf(at("blockedCves", i), "%q: want a CVE id such as CVE-2021-44228 or a GitHub advisory id GHSA-xxxx-xxxx-xxxx", id)
		case blocked[strings.ToUpper(id)]:
			v.errorf(at("blockedCves", i), "%q is listed twice", id)
		case allowed[strings.ToUpper(id)]:
			v.errorf(at("blockedCves", i), "%q is also in allowedCves: a blocked id denies whatever the exceptions say; keep it in one list", id)
		}
		blocked[strings.ToUpper(id)] = true
	}
	if x := r.VEX; x != nil {
		if len(x.Attestors) == 0 {
			v.errorf(at("vex"), "attestors is required: who may suppress findings with OpenVEX attestations")
		} else {
			v.requirementAttestors(at("vex"), x.Attestors, 1, attestors)
			v.attestingAttestors(at("vex"), x.Attestors)
		}
	}
}

// requirementAttestors checks the attestors and threshold of a requirement.
func (v *validator) requirementAttestors(path []any, names []string, threshold int, attestors map[string]bool) {
	if len(names) == 0 {
		v.errorf(path, "attestors is required")
	}
	seen := map[string]bool{}
	for i, a := range names {
		switch {
		case !attestors[a]:
			v.errorf(append(path, "attestors", i), "unknown attestor %q (define it under attestors)", a)
		case seen[a]:
			v.errorf(append(path, "attestors", i), "attestor %q is listed twice", a)
		}
		seen[a] = true
	}
	if threshold < 1 || threshold > len(names) {
		v.errorf(append(path, "threshold"), "%d: want 1 to %d (the number of attestors listed)", threshold, len(names))
	}
}

// rootNames checks that names, at path, each name one of the trust roots
// once.
func (v *validator) rootNames(path []any, names []string, trustRoots map[string]bool) {
	seen := map[string]bool{}
	for j, name := range names {
		fp := append(p(path...), j)
		switch {
		case !trustRoots[name]:
			v.errorf(fp, "%q is not a trust root: name one of trustRoots", name)
		case seen[name]:
			v.errorf(fp, "%q is listed twice", name)
		}
		seen[name] = true
	}
}
