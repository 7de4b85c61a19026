package oci

import (
	"errors"
	"fmt"
	"strings"
)

// The distribution spec's grammar of tags and digests, checked by hand on
// every request (a regular expression cost a microsecond of each cached
// pull; reference_test.go fuzzes these against the grammar written as
// one):
//
//	tag    [A-Za-z0-9_][A-Za-z0-9._-]{0,127}
//	digest sha256:[a-f0-9]{64} | sha512:[a-f0-9]{128}
func validTag(s string) bool {
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

func validDigest(s string) bool {
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
	if !validTag(s) {
		return Reference{}, fmt.Errorf("%w %q: a tag is up to 128 letters, digits, '_', '.' and '-', not starting with '.' or '-'", ErrInvalidTag, s)
	}
	return Reference{Tag: s}, nil
}

// ParseDigest checks that s is a sha256 or sha512 digest. The error wraps
// ErrInvalidDigest.
func ParseDigest(s string) (string, error) {
	if !validDigest(s) {
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
