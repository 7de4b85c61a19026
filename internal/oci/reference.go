package oci

import (
	"errors"
	"fmt"
	"strings"
)

// ValidTag reports whether s is a tag of the distribution spec's grammar,
// [A-Za-z0-9_][A-Za-z0-9._-]{0,127}. Tags and digests are checked by hand
// on every request (a regular expression cost a microsecond of each
// cached pull); reference_test.go fuzzes both against the grammar written
// as regular expressions.
func ValidTag(s string) bool {
	if len(s) == 0 || len(s) > 128 || s[0] == '.' || s[0] == '-' {
		return false
	}
	for i := range len(s) {
		if c := s[i]; !isAlnum(c) && c != '_' && c != '.' && c != '-' {
			return false
		}
	}
	return true
}

// ValidDigest reports whether s is a digest of the OCI image spec, lower
// case: sha256:[a-f0-9]{64} or sha512:[a-f0-9]{128}.
func ValidDigest(s string) bool {
	alg, hex, _ := strings.Cut(s, ":")
	if !(alg == "sha256" && len(hex) == 64 || alg == "sha512" && len(hex) == 128) {
		return false
	}
	for i := range len(hex) {
		if c := hex[i]; !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

func isAlnum(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z'
}

// Errors of references that do not parse.
var (
	ErrInvalidTag    = errors.New("invalid tag")
	ErrInvalidDigest = errors.New("invalid digest")
)

// Reference is a manifest reference as a client gives it: a tag or a
// digest, exactly one of the two.
type Reference struct {
	Tag, Digest string
}

// ParseReference parses a tag or a digest (sha256 or sha512). The error
// wraps ErrInvalidTag or ErrInvalidDigest.
func ParseReference(s string) (Reference, error) {
	if IsDigest(s) {
		d, err := ParseDigest(s)
		return Reference{Digest: d}, err
	}
	if !ValidTag(s) {
		return Reference{}, fmt.Errorf("%w %q: a tag is up to 128 letters, digits, '_', '.' and '-', not starting with '.' or '-'", ErrInvalidTag, s)
	}
	return Reference{Tag: s}, nil
}

// ParseDigest checks that s is a sha256 or sha512 digest. The error wraps
// ErrInvalidDigest.
func ParseDigest(s string) (string, error) {
	if !ValidDigest(s) {
		return "", fmt.Errorf("%w %q: want sha256:<64 hex digits> or sha512:<128 hex digits>", ErrInvalidDigest, s)
	}
	return s, nil
}

// String is the reference as written in a request path.
func (r Reference) String() string {
	if r.Digest != "" {
		return r.Digest
	}
	return r.Tag
}
