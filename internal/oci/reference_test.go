package oci_test

import (
	"errors"
	"regexp"
	"strings"
	"testing"

	"github.com/authz-proxy/authz-proxy/internal/oci"
)

func TestParseReference(t *testing.T) {
	sha256 := "sha256:" + strings.Repeat("a", 64)
	tests := []struct {
		in      string
		want    oci.Reference
		wantErr error
	}{
		{"latest", oci.Reference{Tag: "latest"}, nil},
		{"sha256-" + strings.Repeat("a", 64) + ".sig", oci.Reference{Tag: "sha256-" + strings.Repeat("a", 64) + ".sig"}, nil},
		{sha256, oci.Reference{Digest: sha256}, nil},
		{"sha512:" + strings.Repeat("b", 128), oci.Reference{Digest: "sha512:" + strings.Repeat("b", 128)}, nil},
		{"-v1", oci.Reference{}, oci.ErrInvalidTag},
		{"", oci.Reference{}, oci.ErrInvalidTag},
		{strings.Repeat("x", 129), oci.Reference{}, oci.ErrInvalidTag},
		{"sha256:" + strings.Repeat("A", 64), oci.Reference{}, oci.ErrInvalidDigest},
		{"md5:abc", oci.Reference{}, oci.ErrInvalidDigest},
	}
	for _, tt := range tests {
		got, err := oci.ParseReference(tt.in)
		if !errors.Is(err, tt.wantErr) || got != tt.want {
			t.Errorf("ParseReference(%.20q) = %+v, %v; want %+v, %v", tt.in, got, err, tt.want, tt.wantErr)
		}
		if err == nil && got.String() != tt.in {
			t.Errorf("%q does not round-trip: %q", tt.in, got.String())
		}
	}
}

// The distribution spec's grammar, as regular expressions.
var (
	tagGrammar    = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$`)
	digestGrammar = regexp.MustCompile(`^(sha256:[a-f0-9]{64}|sha512:[a-f0-9]{128})$`)
)

// FuzzReferencesParseAsTheSpecsGrammarSays: every string ParseReference
// takes is a tag or a digest of the grammar, and every one of those it
// takes.
func FuzzReferencesParseAsTheSpecsGrammarSays(f *testing.F) {
	for _, s := range []string{"latest", "v1.2.3-rc_1", ".v1", "-v1", "_v", strings.Repeat("x", 128), strings.Repeat("x", 129),
		"sha256:" + strings.Repeat("a", 64), "sha256:" + strings.Repeat("a", 63), "sha512:" + strings.Repeat("0", 128),
		"sha256:" + strings.Repeat("A", 64), "sha256:" + strings.Repeat("a", 64) + "\n", "md5:abc", ":", "v1\u00e9"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		ref, err := oci.ParseReference(s)
		switch {
		case tagGrammar.MatchString(s):
			if err != nil || ref.Tag != s {
				t.Fatalf("tag %q: %+v, %v", s, ref, err)
			}
		case digestGrammar.MatchString(s):
			if err != nil || ref.Digest != s {
				t.Fatalf("digest %q: %+v, %v", s, ref, err)
			}
		case err == nil:
			t.Fatalf("%q is neither a tag nor a digest, yet parsed as %+v", s, ref)
		}
		if d, err := oci.ParseDigest(s); (err == nil) != digestGrammar.MatchString(s) || err == nil && d != s {
			t.Fatalf("ParseDigest(%q) = %q, %v", s, d, err)
		}
	})
}
