package proxy

import (
	"errors"
	"net/http"
	"regexp"
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

// repoRE is the distribution spec's grammar of repository names.
var repoRE = regexp.MustCompile(`^[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*)*$`)

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
		at := -1
		for _, k := range []string{kindManifest, kindBlob, kindReferrers} {
			if i := strings.LastIndex(rest, "/"+k+"/"); i > at {
				at, rt.kind = i, k
			}
		}
		if at < 0 {
			return route{}, errorf(errNotRegistryPath, "not a registry API path: %s", path)
		}
		rt.repo, ref = rest[:at], rest[at+len(rt.kind)+2:]
	}
	if ns := r.URL.Query().Get("ns"); ns != "" {
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
	if !repoRE.MatchString(rt.repo) || len(rt.repo) > 255 {
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
