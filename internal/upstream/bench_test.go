package upstream_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"io"
	"log"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/authz-proxy/authz-proxy/internal/oci"
	"github.com/authz-proxy/authz-proxy/internal/sign"
	"github.com/authz-proxy/authz-proxy/internal/upstream"
)

// BenchmarkColdReads measures the upstream reads of a cold decision
// against an in-process registry (whose own work is in the figures): the
// manifest by digest, and the .sig tag with its payload. A pull by tag of
// bytes held measures the cached path's one round trip.
func BenchmarkColdReads(b *testing.B) {
	srv := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	b.Cleanup(srv.Close)
	host := strings.TrimPrefix(srv.URL, "http://")
	repo, err := name.NewRepository(host+"/bench/app", name.Insecure)
	if err != nil {
		b.Fatal(err)
	}
	img, err := random.Image(512, 1)
	if err != nil {
		b.Fatal(err)
	}
	if err := remote.Write(repo.Tag("v1"), img); err != nil {
		b.Fatal(err)
	}
	d, _ := img.Digest()
	priv, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	signer, err := sign.NewSigner(priv)
	if err != nil {
		b.Fatal(err)
	}
	sig, err := sign.New(signer, repo, d.String())
	if err != nil {
		b.Fatal(err)
	}
	if err := sign.AttachTag(context.Background(), repo, d.String(), []sign.Signature{sig}); err != nil {
		b.Fatal(err)
	}
	c, err := upstream.New(upstream.Options{Name: "lab", URL: srv.URL, Insecure: true})
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	b.Run("manifest by digest", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := c.Manifest(ctx, "bench/app", d.String()); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("manifest by tag, bytes held", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := c.Manifest(ctx, "bench/app", "v1"); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run(".sig tag and payload", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			ev, err := c.Evidence(ctx, "bench/app", d.String(), oci.Want{Signatures: true, From: oci.TagSchemes})
			if err != nil || len(ev.Signatures) != 1 {
				b.Fatalf("%+v, %v", ev, err)
			}
		}
	})
}
