package proxy

import (
	"net/http"
	"regexp"
	"strings"

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
	ref      string // tag or digest for manifests, digest for blobs and referrers
	// prefixed is true when the upstream came from the path, not ?ns= or
	// the default; links handed back must keep the prefix.
	prefixed bool
	ns       bool
}

// The distribution spec's grammar for names, tags and digests.
var (
	repoRE   = regexp.MustCompile(`^[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*)*$`)
	tagRE    = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$`)
	digestRE = regexp.MustCompile(`^(sha256:[a-f0-9]{64}|sha512:[a-f0-9]{128})$`)
)

// parseRoute reads the request path and query. upstreams reports whether a
// name is a configured upstream.
func parseRoute(r *http.Request, upstreams func(string) bool, defaultUpstream string) (route, error) {
	path := r.URL.Path
	if path == "/v2" || path == "/v2/" {
		return route{kind: kindBase}, nil
	}
	rest, ok := strings.CutPrefix(path, "/v2/")
	if !ok {
		return route{}, errorf(http.StatusNotFound, errcode.ErrorCodeUnsupported, "not a registry API path: %s", path)
	}
	var rt route
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
			return route{}, errorf(http.StatusNotFound, errcode.ErrorCodeUnsupported, "not a registry API path: %s", path)
		}
		rt.repo, rt.ref = rest[:at], rest[at+len(rt.kind)+2:]
	}
	if ns := r.URL.Query().Get("ns"); ns != "" {
		if !upstreams(ns) {
			return route{}, errorf(http.StatusNotFound, errcode.ErrorCodeNameUnknown, "ns=%s names no upstream of this proxy", ns)
		}
		rt.upstream, rt.ns = ns, true
	} else if first, repo, ok := strings.Cut(rt.repo, "/"); ok && upstreams(first) {
		rt.upstream, rt.repo, rt.prefixed = first, repo, true
	} else if defaultUpstream != "" {
		rt.upstream = defaultUpstream
	} else {
		return route{}, errorf(http.StatusNotFound, errcode.ErrorCodeNameUnknown,
			"%s names no upstream (use ?ns=<upstream> or /v2/<upstream>/<repository>; this proxy has no defaultUpstream)", rt.repo)
	}
	if !repoRE.MatchString(rt.repo) || len(rt.repo) > 255 {
		return route{}, errorf(http.StatusBadRequest, errcode.ErrorCodeNameInvalid, "invalid repository name %q", rt.repo)
	}
	switch rt.kind {
	case kindManifest:
		if !tagRE.MatchString(rt.ref) && !digestRE.MatchString(rt.ref) {
			return route{}, errorf(http.StatusBadRequest, errcode.ErrorCodeManifestInvalid, "invalid tag or digest %q", rt.ref)
		}
	case kindBlob, kindReferrers:
		if !digestRE.MatchString(rt.ref) {
			return route{}, errorf(http.StatusBadRequest, errcode.ErrorCodeDigestInvalid, "invalid digest %q", rt.ref)
		}
	}
	return rt, nil
}

// isDigest reports whether ref is a digest rather than a tag.
func isDigest(ref string) bool { return strings.Contains(ref, ":") }
