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
)

// noOrigin is an upstream never asked: every blob read is stored.
type noOrigin struct{}

func (noOrigin) Fetch(context.Context, int64, int64) (io.ReadCloser, int64, error) {
	return nil, 0, fmt.Errorf("the upstream was asked")
}
func (noOrigin) Confirm(context.Context) error { return fmt.Errorf("the upstream was asked") }

// BenchmarkStoreOfManyObjects opens filesystem stores holding 1,000 and
// 100,000 blobs (each with its use mark and a link for its repository, as
// a pull leaves it), and reports how long the store takes to open (until
// it serves), the first byte of a stored blob after opening, and a sweep
// of everything (which a store does at start and every minute).
// bench/run.sh prints these in its scaling table.
func BenchmarkStoreOfManyObjects(b *testing.B) {
	for _, n := range []int{1000, 100000} {
		b.Run(fmt.Sprintf("objects=%d", n), func(b *testing.B) {
			ctx := context.Background()
			root := b.TempDir()
			d, err := NewDriver(ctx, Filesystem, map[string]any{"rootdirectory": root})
			if err != nil {
				b.Fatal(err)
			}
			scope := Scope{Upstream: "lab", Repository: "bench/app"}
			var last string
			for i := range n {
				body := fmt.Appendf(nil, "blob %d", i)
				sum := sha256.Sum256(body)
				last = "sha256:" + hex.EncodeToString(sum[:])
				o, _ := scope.object(blobKind, last)
				// Written as the filesystem driver lays them out, without
				// its temporary files: a fill writes them one by one.
				for _, p := range []struct {
					path string
					b    []byte
				}{{o.dataPath(), body}, {o.usedPath(), nil}, {o.linkPath(scope.Repository), nil}} {
					full := filepath.Join(root, filepath.FromSlash(p.path))
					if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
						b.Fatal(err)
					}
					if err := os.WriteFile(full, p.b, 0o644); err != nil {
						b.Fatal(err)
					}
				}
			}
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
