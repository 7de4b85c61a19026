package store

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sync/errgroup"
)

// noOrigin is an upstream never asked: every blob read is stored.
type noOrigin struct{}

func (noOrigin) Fetch(context.Context, int64, int64) (io.ReadCloser, int64, error) {
	return nil, 0, fmt.Errorf("the upstream was asked")
}
func (noOrigin) Confirm(context.Context) error { return fmt.Errorf("the upstream was asked") }

// BenchmarkStoreOfManyObjects opens filesystem stores holding 1,000 and
// 1,000,000 blobs (each with its use mark and a link for its repository,
// as a pull leaves it), and reports how long the store takes to open
// (until it serves), the first byte of a stored blob after opening, and a
// sweep of everything (which a store does at start and then every minute,
// or nine times as long as a sweep takes). bench/run.sh prints these in
// its scaling table; the million takes about 20 GiB of disk (four
// folders and a file of a 4 KiB block each per blob) and minutes to lay
// out and remove.
func BenchmarkStoreOfManyObjects(b *testing.B) {
	for _, n := range []int{1000, 1000000} {
		b.Run(fmt.Sprintf("objects=%d", n), func(b *testing.B) {
			ctx := context.Background()
			root := b.TempDir()
			d, err := NewDriver(ctx, Filesystem, map[string]any{"rootdirectory": root})
			if err != nil {
				b.Fatal(err)
			}
			scope := Scope{Upstream: "lab", Repository: "bench/app"}
			last := layOut(b, root, scope, n)
			var start, first, sweep time.Duration
			for b.Loop() {
				t := time.Now()
				s, err := New(ctx, Options{Driver: d, MaxSize: 1 << 40, Owner: "bench", SweepInterval: time.Hour})
				if err != nil {
					b.Fatal(err)
				}
				start = time.Since(t)
				t = time.Now()
				r, err := s.Get(ctx, scope, last, noOrigin{})
				if err != nil {
					b.Fatal(err)
				}
				var one [1]byte
				if _, err := io.ReadFull(r, one[:]); err != nil {
					b.Fatal(err)
				}
				first = time.Since(t)
				r.Close()
				for s.Stats().Sweeps == 0 { // the sweep at start
					time.Sleep(time.Millisecond)
				}
				t = time.Now()
				if err := s.Sweep(ctx); err != nil {
					b.Fatal(err)
				}
				sweep = time.Since(t)
				s.Close()
			}
			b.ReportMetric(float64(start.Microseconds())/1000, "start-ms")
			b.ReportMetric(float64(first.Microseconds())/1000, "first-byte-ms")
			b.ReportMetric(float64(sweep.Microseconds())/1000, "sweep-ms")
		})
	}
}

// layOut writes n blobs for scope under root as the filesystem driver lays
// them out, without its temporary files (a fill writes them one by one),
// on four goroutines, and returns the digest of the last.
func layOut(b *testing.B, root string, scope Scope, n int) string {
	b.Helper()
	digest := func(i int) string {
		sum := sha256.Sum256(fmt.Appendf(nil, "blob %d", i))
		return "sha256:" + hex.EncodeToString(sum[:])
	}
	const workers = 4
	var g errgroup.Group
	for w := range workers {
		g.Go(func() error {
			for i := w; i < n; i += workers {
				o, _ := scope.object(blobKind, digest(i))
				link := filepath.Join(root, filepath.FromSlash(o.linkPath(scope.Repository)))
				if err := os.MkdirAll(filepath.Dir(link), 0o755); err != nil {
					return err
				}
				for path, body := range map[string][]byte{o.dataPath(): fmt.Appendf(nil, "blob %d", i), o.usedPath(): nil, o.linkPath(scope.Repository): nil} {
					if err := os.WriteFile(filepath.Join(root, filepath.FromSlash(path)), body, 0o644); err != nil {
						return err
					}
				}
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		b.Fatal(err)
	}
	return digest(n - 1)
}
