package vuln

import (
	"net/url"
	"strings"
)

// purl is a package URL, pkg:type/namespace/name@version?qualifiers#subpath
// (https://github.com/package-url/purl-spec), as far as matching needs it.
type purl struct {
	typ, namespace, name, version string
}

// parsePURL reads s, percent-decoding each part; ok is false when s is no
// package URL.
func parsePURL(s string) (p purl, ok bool) {
	rest, ok := strings.CutPrefix(s, "pkg:")
	if !ok {
		return p, false
	}
	rest, _, _ = strings.Cut(rest, "#")
	rest, _, _ = strings.Cut(rest, "?")
	rest = strings.TrimLeft(rest, "/")
	if i := strings.LastIndex(rest, "@"); i >= 0 && i > strings.LastIndex(rest, "/") {
		rest, p.version = rest[:i], rest[i+1:]
	}
	typ, path, ok := strings.Cut(rest, "/")
	if !ok || typ == "" || path == "" {
		return purl{}, false
	}
	p.typ = strings.ToLower(typ)
	if i := strings.LastIndex(path, "/"); i >= 0 {
		p.namespace, p.name = path[:i], path[i+1:]
	} else {
		p.name = path
	}
	var err error
	for _, part := range []*string{&p.namespace, &p.name, &p.version} {
		if *part, err = url.PathUnescape(*part); err != nil {
			return purl{}, false
		}
	}
	return p, p.name != ""
}

// samePackage reports whether p and q name one package (type, namespace
// and name), and p, when it names a version, q's version.
func (p purl) samePackage(q purl) bool {
	return p.typ == q.typ && p.namespace == q.namespace && p.name == q.name && (p.version == "" || p.version == q.version)
}
