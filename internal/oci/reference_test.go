package oci_test

import (
	"errors"
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
