package proxy

import (
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"

	"github.com/authz-proxy/authz-proxy/internal/oci"
)

func FuzzParseRoute(f *testing.F) {
	for _, s := range []string{
		"/v2/", "/v2/lab/library/nginx/manifests/latest", "/v2/library/nginx/manifests/sha256:" + strings.Repeat("a", 64) + "?ns=lab",
		"/v2/a/manifests/b/blobs/sha256:" + strings.Repeat("0", 64), "/v2/lab/x/tags/list?n=1", "/v2/x/referrers/sha256:" + strings.Repeat("1", 64),
		"/v2/../../etc/passwd/manifests/x", "/v2/lab//manifests/x?ns=",
	} {
		f.Add(s)
	}
	upstreams := func(n string) bool { return n == "lab" || n == "docker.io" }
	f.Fuzz(func(t *testing.T, target string) {
		u, err := url.ParseRequestURI(target)
		if err != nil {
			return
		}
		rt, err := parseRoute(&http.Request{Method: http.MethodGet, URL: u}, upstreams, "docker.io")
		if err != nil {
			if _, ok := err.(*httpError); !ok {
				t.Fatalf("error is not an httpError: %v", err)
			}
			return
		}
		if rt.kind == kindBase {
			return
		}
		if !upstreams(rt.upstream) {
			t.Fatalf("routed %q to unconfigured upstream %q", target, rt.upstream)
		}
		if !repoGrammar.MatchString(rt.repo) || strings.Contains(rt.repo, "..") {
			t.Fatalf("routed %q to invalid repository %q", target, rt.repo)
		}
		if _, err := oci.ParseReference(rt.ref.String()); rt.kind != kindTags && (err != nil || (rt.ref.Tag == "") == (rt.ref.Digest == "")) {
			t.Fatalf("routed %q with an invalid reference %+v: %v", target, rt.ref, err)
		}
		if (rt.kind == kindBlob || rt.kind == kindReferrers) && rt.ref.Digest == "" {
			t.Fatalf("routed %q without a digest: %+v", target, rt.ref)
		}
	})
}

// repoGrammar is the distribution spec's grammar of repository names, as
// the spec writes it: validRepo must accept exactly what it matches.
var repoGrammar = regexp.MustCompile(`^[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*)*$`)

func TestRepositoryNamesFollowTheSpecGrammar(t *testing.T) {
	for _, name := range []string{
		"a", "library/nginx", "a.b_c__d-e---f/g9", "0/1/2",
		"", "/", "a/", "/a", "a//b", "A", "a.", ".a", "a..b", "a___b", "a_-b", "a-", "-a", "a/.b", "a b", "a\x00", "é",
	} {
		if got, want := validRepo(name), repoGrammar.MatchString(name); got != want {
			t.Errorf("validRepo(%q) = %v, the grammar says %v", name, got, want)
		}
	}
}

func FuzzRepositoryNamesFollowTheSpecGrammar(f *testing.F) {
	for _, s := range []string{"library/nginx", "a__b/c--d.e", "a___b", "a//b", "a-", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		if got, want := validRepo(name), repoGrammar.MatchString(name); got != want {
			t.Fatalf("validRepo(%q) = %v, the grammar says %v", name, got, want)
		}
	})
}
