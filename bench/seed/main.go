// Command seed fills a registry for bench/: one signed image (bench/app:v1),
// one unsigned (bench/app:unsigned), many signed images for cold
// verifications, one large blob, and another for cold pulls. It signs in the layout
// cosign writes, with a key it makes, and writes the public key and the
// digests to -out; with -tuf, a TUF repository for a trust root too.
package main

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	mrand "math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/sigstore/sigstore/pkg/cryptoutils"
	"github.com/sigstore/sigstore/pkg/signature"

	"github.com/authz-proxy/authz-proxy/internal/sign"
	"github.com/authz-proxy/authz-proxy/internal/sign/virtual"
)

func main() {
	registry := flag.String("registry", "127.0.0.1:5001", "registry host:port (plain http)")
	out := flag.String("out", ".", "folder for ci.pub, cold.txt and seed.json")
	cold := flag.Int("cold", 2000, "signed images for cold verifications")
	blobMiB := flag.Int64("blob-mib", 1024, "size of the large blob, MiB")
	coldBlobMiB := flag.Int64("cold-blob-mib", 256, "size of the blob for concurrent cold pulls, MiB")
	tufDir := flag.String("tuf", "", "also write there a TUF repository whose trusted_root.json lists a test CA (a trust root for the proxy's configuration)")
	flag.Parse()
	ctx := context.Background()
	if *tufDir != "" {
		ca, err := virtual.NewCA("bench CA", time.Now().Add(-time.Hour), time.Now().Add(365*24*time.Hour))
		check(err)
		root, err := virtual.TrustedRoot(virtual.Parts{Authorities: []*virtual.CA{ca}})
		check(err)
		_, err = sign.NewTUFRepo(*tufDir, root, time.Now().Add(30*24*time.Hour))
		check(err)
	}

	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	check(err)
	pem, err := cryptoutils.MarshalPublicKeyToPEM(priv.Public())
	check(err)
	check(os.WriteFile(filepath.Join(*out, "ci.pub"), pem, 0o644))
	signer, err := sign.NewSigner(priv)
	check(err)

	repo, err := name.NewRepository(*registry+"/bench/app", name.Insecure)
	check(err)
	signed := pushSigned(ctx, repo, repo.Tag("v1"), signer)
	unsignedImg, err := random.Image(512, 1)
	check(err)
	check(remote.Write(repo.Tag("unsigned"), unsignedImg))

	f, err := os.Create(filepath.Join(*out, "cold.txt"))
	check(err)
	w := bufio.NewWriter(f)
	var mu sync.Mutex
	var wg sync.WaitGroup
	work := make(chan int)
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				d := pushSigned(ctx, repo, repo.Tag(fmt.Sprintf("cold-%d", i)), signer)
				mu.Lock()
				fmt.Fprintln(w, d)
				mu.Unlock()
			}
		}()
	}
	for i := range *cold {
		work <- i
	}
	close(work)
	wg.Wait()
	check(w.Flush())
	check(f.Close())

	blob := pushBlob(repo, *blobMiB<<20, 1)
	coldBlob := pushBlob(repo, *coldBlobMiB<<20, 2)
	b, _ := json.Marshal(map[string]string{"repo": "bench/app", "signed": signed, "blob": blob, "coldBlob": coldBlob})
	check(os.WriteFile(filepath.Join(*out, "seed.json"), b, 0o644))
	log.Printf("seeded %s: signed %s, %d cold images, blob %s (%d MiB), cold blob %s (%d MiB)", *registry, signed, *cold, blob, *blobMiB, coldBlob, *coldBlobMiB)
}

func pushSigned(ctx context.Context, repo name.Repository, ref name.Tag, s signature.Signer) string {
	img, err := random.Image(512, 1)
	check(err)
	check(remote.Write(ref, img))
	d, err := img.Digest()
	check(err)
	sig, err := sign.New(s, repo, d.String())
	check(err)
	check(sign.AttachTag(ctx, repo, d.String(), []sign.Signature{sig}))
	return d.String()
}

// pseudoBlob is a large layer of reproducible pseudo-random bytes, streamed:
// never held in memory.
type pseudoBlob struct {
	size   int64
	seed   byte
	digest v1.Hash
}

func (p *pseudoBlob) reader() io.Reader {
	return io.LimitReader(rngReader{mrand.NewChaCha8([32]byte{p.seed})}, p.size)
}

type rngReader struct{ r *mrand.ChaCha8 }

func (r rngReader) Read(b []byte) (int, error) { return r.r.Read(b) }

func (p *pseudoBlob) Digest() (v1.Hash, error)             { return p.digest, nil }
func (p *pseudoBlob) DiffID() (v1.Hash, error)             { return p.digest, nil }
func (p *pseudoBlob) Size() (int64, error)                 { return p.size, nil }
func (p *pseudoBlob) MediaType() (types.MediaType, error)  { return types.OCILayer, nil }
func (p *pseudoBlob) Compressed() (io.ReadCloser, error)   { return io.NopCloser(p.reader()), nil }
func (p *pseudoBlob) Uncompressed() (io.ReadCloser, error) { return io.NopCloser(p.reader()), nil }

func pushBlob(repo name.Repository, size int64, seed byte) string {
	p := &pseudoBlob{size: size, seed: seed}
	h := sha256.New()
	_, err := io.Copy(h, p.reader())
	check(err)
	p.digest = v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(h.Sum(nil))}
	check(remote.WriteLayer(repo, p))
	return p.digest.String()
}

func check(err error) {
	if err != nil {
		log.Fatal(err)
	}
}
