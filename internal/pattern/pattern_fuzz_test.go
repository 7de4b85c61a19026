package pattern_test

import (
	"strconv"
	"strings"
	"testing"

	"github.com/authz-proxy/authz-proxy/internal/pattern"
)

// FuzzParse feeds the image patterns of a policy (and of `check` on the
// command line) what a config author may write. A refusal quotes the
// pattern; what parses reads back as written, matches the image it
// describes, and keeps its fences: a named upstream is not matched by
// another, `*` stays within one path segment, a tag pattern never matches
// a pull by digest, a pinned digest no other digest.
func FuzzParse(f *testing.F) {
	for _, s := range []string{
		"docker.io/library/busybox", "ghcr.io/acme/**", "ghcr.io/**/app", "localhost:5000/app:v1.*",
		"ghcr.io/acme/app@" + dA, "docker.io/library/*", "**", "docker.io/a**b", "docker.io/app:b@d tag", "lab/**:v*",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, text string) {
		p, err := pattern.Parse(text)
		if err != nil {
			if !strings.Contains(err.Error(), strconv.Quote(text)) {
				t.Fatalf("the error does not quote the pattern %q: %v", text, err)
			}
			return
		}
		if p.String() != text {
			t.Fatalf("pattern %q reads back as %q", text, p.String())
		}
		img := instance(text)
		if !p.Match(img) {
			t.Fatalf("%q does not match the image it describes, %+v", text, img)
		}
		if up, _, ok := strings.Cut(img.Name, "/"); ok && !strings.Contains(firstSegment(text), "*") {
			other := img
			other.Name = up + ".evil.example" + img.Name[len(up):]
			if p.Match(other) {
				t.Fatalf("%q, naming upstream %s, matches %s", text, up, other.Name)
			}
		}
		if !strings.Contains(text, "**") {
			for _, name := range []string{strings.Replace(img.Name, "x", "x/y", 1), img.Name + "/y"} {
				deeper := img
				deeper.Name = name
				if name != img.Name && p.Match(deeper) {
					t.Fatalf("%q, without **, matches %s: a path segment more", text, name)
				}
			}
		}
		if hasTag(text) {
			byDigest := img
			byDigest.Tag = ""
			if p.Match(byDigest) {
				t.Fatalf("%q, naming a tag, matches a pull by digest", text)
			}
		}
		if strings.Contains(text, "@") {
			other := img
			other.Digest = dB
			if img.Digest == dB {
				other.Digest = dA
			}
			if p.Match(other) {
				t.Fatalf("%q, pinned to %s, matches %s", text, img.Digest, other.Digest)
			}
		}
	})
}

// nameOf is the name part of a pattern that parsed: without its digest and
// tag.
func nameOf(text string) string {
	name, _, _ := strings.Cut(text, "@")
	if i := strings.LastIndex(name, ":"); i > strings.LastIndex(name, "/") && strings.Contains(name, "/") {
		name = name[:i]
	}
	return name
}

// hasTag reports whether a pattern that parsed names a tag.
func hasTag(text string) bool {
	name, _, _ := strings.Cut(text, "@")
	return nameOf(text) != name
}

func firstSegment(text string) string {
	seg, _, _ := strings.Cut(nameOf(text), "/")
	return seg
}

// instance is an image that a pattern that parsed describes: each * and
// ** taken as "x", the tag's likewise, its digest or dA.
func instance(text string) pattern.Image {
	name := nameOf(text)
	img := pattern.Image{Name: strings.ReplaceAll(strings.ReplaceAll(name, "**", "x"), "*", "x"), Digest: dA}
	if name == "**" {
		img.Name = "x/x"
	}
	if hasTag(text) {
		tag := strings.TrimPrefix(strings.SplitN(text, "@", 2)[0], name+":")
		img.Tag = strings.ReplaceAll(tag, "*", "x")
	}
	if _, d, ok := strings.Cut(text, "@"); ok {
		img.Digest = d
	}
	return img
}
