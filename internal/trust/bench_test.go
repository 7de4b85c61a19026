package trust_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"testing"
	"time"

	"github.com/authz-proxy/authz-proxy/internal/sign/virtual"
	"github.com/authz-proxy/authz-proxy/internal/testkit"
	"github.com/authz-proxy/authz-proxy/internal/trust"
	"github.com/authz-proxy/authz-proxy/internal/verify"
)

// BenchmarkKeylessVerifyUnderATUFRoot is one keyless check (a cosign v3
// bundle with a Rekor entry) under the same trusted_root.json, read from a
// file and kept current by TUF with a refresh every second running
// beside: the judged path holds the root in memory either way, so the two
// cost the same.
func BenchmarkKeylessVerifyUnderATUFRoot(b *testing.B) {
	vs, err := virtual.New()
	if err != nil {
		b.Fatal(err)
	}
	raw, err := vs.TrustedRoot()
	if err != nil {
		b.Fatal(err)
	}
	sum := sha256.Sum256([]byte("image"))
	image := "sha256:" + hex.EncodeToString(sum[:])
	bundle, err := vs.DSSEBundle("release@acme.example", "https://ci.acme.example", virtual.CosignStatement(image), virtual.Options{})
	if err != nil {
		b.Fatal(err)
	}
	fromFile, err := verify.ParseTrustedRoot(raw)
	if err != nil {
		b.Fatal(err)
	}
	repo := testkit.NewTUFRepo(b, raw)
	m := trust.New(trust.Options{})
	b.Cleanup(m.Close)
	set, err := m.Load(context.Background(), []trust.Spec{{Name: "lab", TUF: &trust.TUF{Mirror: repo.URL(), Root: repo.FirstRoot(), Refresh: time.Second}}})
	if err != nil {
		b.Fatal(err)
	}
	m.Use(set)
	for _, c := range []struct {
		name string
		root *verify.TrustedRoot
	}{{"trustedRootFile", fromFile}, {"tuf", set.Roots(time.Now())["lab"]}} {
		b.Run(c.name, func(b *testing.B) {
			k, err := verify.NewKeyless([]*verify.TrustedRoot{c.root}, verify.Identity{Issuer: "https://ci.acme.example", Subject: "release@acme.example"}, verify.SigningTime{RequireTlog: true})
			if err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			for b.Loop() {
				s, err := verify.ParseBundle(bundle)
				if err != nil {
					b.Fatal(err)
				}
				if _, err := k.Verify(s, image); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
