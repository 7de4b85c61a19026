// Package pattern parses and matches the image patterns used in policy
// rules, the allowlist and on the command line:
// <upstream>/<repository>[:tag][@digest], where `*` matches within one path
// segment and `**` across segments.
package pattern

import (
	"fmt"
	"regexp"
	"strings"
)

// Pattern is a compiled image pattern. The zero value matches nothing.
type Pattern struct {
	text   string
	prefix string // literal start of every name matched: a cheap first test
	suffix string // literal end of every name matched, when it has a *
	name   *regexp.Regexp
	tag    *regexp.Regexp // nil: any tag, or none
	digest string         // "": any digest
}

// Image is what a pattern is matched against: one manifest being judged.
type Image struct {
	// Name is "<upstream>/<repository>".
	Name string
	// Tag is the tag the client asked for, "" when it asked by digest.
	Tag string
	// Digest is the digest of the manifest being judged.
	Digest string
}

var (
	nameChars   = regexp.MustCompile(`^[A-Za-z0-9._\-/:*]+$`)
	tagChars    = regexp.MustCompile(`^[A-Za-z0-9._\-*]{1,128}$`)
	digestShape = regexp.MustCompile(`^sha(256:[a-f0-9]{64}|512:[a-f0-9]{128})$`)
)

// Parse compiles text. The error says what is wrong in words a config author
// can act on.
func Parse(text string) (Pattern, error) {
	p := Pattern{text: text}
	rest := text
	if i := strings.LastIndex(rest, "@"); i >= 0 {
		p.digest = rest[i+1:]
		rest = rest[:i]
		if !digestShape.MatchString(p.digest) {
			return Pattern{}, fmt.Errorf("pattern %q: %q is not a digest (want sha256:<64 hex>)", text, p.digest)
		}
	}
	if i := strings.LastIndex(rest, ":"); i > strings.LastIndex(rest, "/") && strings.Contains(rest, "/") {
		tag := rest[i+1:]
		rest = rest[:i]
		if !tagChars.MatchString(tag) {
			return Pattern{}, fmt.Errorf("pattern %q: bad tag %q", text, tag)
		}
		p.tag = regexp.MustCompile("^" + globToRegexp(tag, false) + "$")
	}
	if rest != "**" {
		if !strings.Contains(rest, "/") {
			return Pattern{}, fmt.Errorf("pattern %q: want <upstream>/<repository>, e.g. docker.io/library/nginx or ghcr.io/acme/**", text)
		}
		if !nameChars.MatchString(rest) {
			return Pattern{}, fmt.Errorf("pattern %q: only letters, digits, . _ - / : * are allowed in a name", text)
		}
		for _, seg := range strings.Split(rest, "/") {
			switch {
			case seg == "":
				return Pattern{}, fmt.Errorf("pattern %q: empty path segment", text)
			case strings.Contains(seg, "***"):
				return Pattern{}, fmt.Errorf("pattern %q: %q: use * within a segment or ** across segments", text, seg)
			case strings.Contains(seg, "**") && seg != "**":
				return Pattern{}, fmt.Errorf("pattern %q: ** must be a whole path segment (got %q)", text, seg)
			}
		}
	}
	p.name = regexp.MustCompile("^" + globToRegexp(rest, true) + "$")
	// Everything before the first * is literal (the regular expression's
	// own literal prefix is empty when it is not one-pass).
	p.prefix, _, _ = strings.Cut(rest, "*")
	if i := strings.LastIndex(rest, "*"); i >= 0 {
		p.suffix = rest[i+1:]
		if strings.HasSuffix(rest[:i+1], "**") {
			// "**/" may match nothing at all: "a/**/b" matches "a/b".
			p.suffix = strings.TrimPrefix(p.suffix, "/")
		}
	}
	return p, nil
}

// globToRegexp turns a glob into a regular expression: `**` spans path
// segments, `*` stays within one; everything else is literal.
func globToRegexp(glob string, path bool) string {
	var b strings.Builder
	for i := 0; i < len(glob); i++ {
		switch {
		case path && strings.HasPrefix(glob[i:], "**/"):
			b.WriteString(`(?:.*/)?`) // "a/**/b" also matches "a/b"
			i += 2
		case path && strings.HasPrefix(glob[i:], "**"):
			b.WriteString(`.*`)
			i++
		case glob[i] == '*' && path:
			b.WriteString(`[^/]*`)
		case glob[i] == '*':
			b.WriteString(`.*`)
		default:
			b.WriteString(regexp.QuoteMeta(glob[i : i+1]))
		}
	}
	return b.String()
}

// Match reports whether img is matched: its name by the glob, and its tag and
// digest where the pattern names them.
func (p Pattern) Match(img Image) bool {
	if p.name == nil || !strings.HasPrefix(img.Name, p.prefix) || !p.name.MatchString(img.Name) {
		return false
	}
	if p.tag != nil && (img.Tag == "" || !p.tag.MatchString(img.Tag)) {
		return false
	}
	return p.digest == "" || p.digest == img.Digest
}

// String returns the pattern as written.
func (p Pattern) String() string { return p.text }

// Wildcard reports whether s matches glob, in which * stands for any
// characters (none included) and everything else for itself: the globs of
// principals ("k8s:system:serviceaccount:prod:*").
func Wildcard(glob, s string) bool {
	parts := strings.Split(glob, "*")
	if len(parts) == 1 {
		return glob == s
	}
	if !strings.HasPrefix(s, parts[0]) {
		return false
	}
	rest := s[len(parts[0]):]
	for _, part := range parts[1 : len(parts)-1] {
		i := strings.Index(rest, part)
		if i < 0 {
			return false
		}
		rest = rest[i+len(part):]
	}
	return len(rest) >= len(parts[len(parts)-1]) && strings.HasSuffix(rest, parts[len(parts)-1])
}
