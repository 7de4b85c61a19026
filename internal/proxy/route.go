package proxy

import (
	"errors"
	"net/http"
	"strings"

	"github.com/authz-proxy/authz-proxy/internal/oci"
	"github.com/distribution/distribution/v3/registry/api/errcode"
)

// Route kinds.
const (
	kindBase      = "base"
	kindManifest  = "manifests"
	kindBlob      = "blobs"
	kindTags      = "tags"
	kindReferrers = "referrers"
)

// route is a parsed request: which upstream, which repository, what.
type route struct {
	kind     string
	upstream string
	repo     string
	ref      oci.Reference // tag or digest for manifests, digest for blobs and referrers
	// prefixed is true when the upstream came from the path, not ?ns= or
	// the default; links handed back must keep the prefix.
	prefixed bool
	ns       bool
}

// validRepo reports whether name follows the distribution spec's grammar
// of repository names, [a-z0-9]+((\.|_|__|-+)[a-z0-9]+)* components
// separated by slashes (matched by hand: a regexp cost more than the rest
// of routing; a test holds the two equal).
func validRepo(name string) bool {
	for component := range strings.SplitSeq(name, "/") {
		if !validComponent(component) {
			return false
		}
	}
	return true
}

func validComponent(c string) bool {
	alnum := func(b byte) bool { return 'a' <= b && b <= 'z' || '0' <= b && b <= '9' }
	for i := 0; i < len(c); {
		if !alnum(c[i]) {
			return false // a component, and each part after a separator, starts with [a-z0-9]
		}
		for i < len(c) && alnum(c[i]) {
			i++
		}
		if i == len(c) {
			return true
		}
		switch sep := c[i:]; {
		case strings.HasPrefix(sep, "__"):
			i += 2
		case sep[0] == '.', sep[0] == '_':
			i++
		case sep[0] == '-':
			for i < len(c) && c[i] == '-' {
				i++
			}
		default:
			return false
		}
		if i == len(c) {
			return false // a separator must be followed by [a-z0-9]
		}
	}
	return false // empty
}

// endpoints are the kinds of path that end with /<kind>/<reference>, and
// what separates the repository from the reference in each.
var endpoints = [...]struct{ kind, sep string }{
	{kindManifest, "/" + kindManifest + "/"},
	{kindBlob, "/" + kindBlob + "/"},
	{kindReferrers, "/" + kindReferrers + "/"},
}

// parseRoute reads the request path and query. upstreams reports whether a
// name is a configured upstream.
func parseRoute(r *http.Request, upstreams func(string) bool, defaultUpstream string) (route, error) {
	path := r.URL.Path
	if path == "/v2" || path == "/v2/" {
		return route{kind: kindBase}, nil
	}
	rest, ok := strings.CutPrefix(path, "/v2/")
	if !ok {
		return route{}, errorf(errNotRegistryPath, "not a registry API path: %s", path)
	}
	var rt route
	var ref string
	switch {
	case strings.HasSuffix(rest, "/tags/list"):
		rt.kind, rt.repo = kindTags, strings.TrimSuffix(rest, "/tags/list")
	default:
		at, end := -1, 0
		for _, k := range endpoints {
			if i := strings.LastIndex(rest, k.sep); i > at {
				at, end, rt.kind = i, i+len(k.sep), k.kind
			}
		}
		if at < 0 {
			return route{}, errorf(errNotRegistryPath, "not a registry API path: %s", path)
		}
		rt.repo, ref = rest[:at], rest[end:]
	}
	var ns string
	if r.URL.RawQuery != "" {
		ns = r.URL.Query().Get("ns")
	}
	if ns != "" {
		if !upstreams(ns) {
			return route{}, errorf(errcode.ErrorCodeNameUnknown, "ns=%s names no upstream of this proxy", ns)
		}
		rt.upstream, rt.ns = ns, true
	} else if first, repo, ok := strings.Cut(rt.repo, "/"); ok && upstreams(first) {
		rt.upstream, rt.repo, rt.prefixed = first, repo, true
	} else if defaultUpstream != "" {
		rt.upstream = defaultUpstream
	} else {
		return route{}, errorf(errcode.ErrorCodeNameUnknown,
			"%s names no upstream (use ?ns=<upstream> or /v2/<upstream>/<repository>; this proxy has no defaultUpstream)", rt.repo)
	}
	if len(rt.repo) > 255 || !validRepo(rt.repo) {
		return route{}, errorf(errcode.ErrorCodeNameInvalid, "invalid repository name %q", rt.repo)
	}
	var err error
	switch rt.kind {
	case kindManifest:
		rt.ref, err = oci.ParseReference(ref)
	case kindBlob, kindReferrers:
		rt.ref.Digest, err = oci.ParseDigest(ref)
	}
	switch {
	case errors.Is(err, oci.ErrInvalidTag):
		return route{}, errorf(errcode.ErrorCodeTagInvalid, "%v", err)
	case err != nil:
		return route{}, errorf(errcode.ErrorCodeDigestInvalid, "%v", err)
	}
	return rt, nil
}
