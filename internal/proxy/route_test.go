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

// FuzzRewriteLink feeds rewriteLink whatever an upstream sends as a Link
// header of a paginated answer: every link it hands back is a path of the
// registry API on this proxy (no scheme or host of the upstream's), keeps
// the upstream in its path prefix or ns parameter as the request did, and
// comes from a link the upstream sent.
func FuzzRewriteLink(f *testing.F) {
	for _, s := range []string{
		`</v2/team/app/tags/list?last=b&n=2>; rel="next"`,
		`<https://registry.example/v2/team/app/tags/list?n=1&last=x>; rel="next", <http://other/v2/x>; rel="prev"`,
		`<//evil.example/v2/a>; rel="next"`, `<%zz>; rel="next"`, `<>`, `no brackets`, `<aaaa:%0X0000>`, `</v2/><>`,
	} {
		f.Add(s, true, false)
		f.Add(s, false, true)
	}
	f.Fuzz(func(t *testing.T, link string, prefixed, ns bool) {
		rt := route{upstream: "lab", prefixed: prefixed, ns: ns}
		out := rewriteLink(link, rt)
		in, got := linkURL.FindAllStringSubmatch(link, -1), linkURL.FindAllStringSubmatch(out, -1)
		if len(got) > len(in) {
			t.Fatalf("rewriteLink(%q) = %q: %d links from %d", link, out, len(got), len(in))
		}
		for i, m := range got {
			u, err := url.Parse(m[1])
			if err != nil {
				t.Fatalf("rewriteLink(%q) = %q: link %d does not parse: %v", link, out, i, err)
			}
			if u.Scheme != "" || u.Host != "" || u.Opaque != "" || !strings.HasPrefix(u.Path, "/v2/") {
				t.Fatalf("rewriteLink(%q) = %q: link %d is not a registry path of the proxy", link, out, i)
			}
			if ns && u.Query().Get("ns") != "lab" {
				t.Fatalf("rewriteLink(%q) = %q: link %d lost ns", link, out, i)
			}
			if prefixed && !strings.HasPrefix(u.Path, "/v2/lab/") {
				t.Fatalf("rewriteLink(%q) = %q: link %d lost the path prefix", link, out, i)
			}
		}
	})
}

func TestPaginationLinksStayOnTheProxyAndItsUpstream(t *testing.T) {
	for _, tt := range []struct {
		link string
		rt   route
		want string
	}{
		{`</v2/team/app/tags/list?last=b&n=2>; rel="next"`, route{upstream: "lab", prefixed: true}, `</v2/lab/team/app/tags/list?last=b&n=2>; rel="next"`},
		{`<https://registry.example/v2/team/app/tags/list?n=1>; rel="next"`, route{upstream: "lab", ns: true}, `</v2/team/app/tags/list?n=1&ns=lab>; rel="next"`},
		{`<https://cdn.example/elsewhere>; rel="next", </v2/a/tags/list?n=1>; rel="prev"`, route{upstream: "lab"}, `</v2/a/tags/list?n=1>; rel="prev"`},
		{`<aaaa:%0X0000>; rel="next"`, route{upstream: "lab"}, ``},
	} {
		if got := rewriteLink(tt.link, tt.rt); got != tt.want {
			t.Errorf("rewriteLink(%q) = %q, want %q", tt.link, got, tt.want)
		}
	}
}
