package store_test

import (
	"context"
	"io"
	"testing"

	"github.com/authz-proxy/authz-proxy/internal/store"
)

// BenchmarkReadFromTheStore measures what checking a whole read against
// its digest costs: a whole blob read (hashed, its last byte held until it
// matches) against the same bytes read as a range (not hashed), from the
// filesystem store.
func BenchmarkReadFromTheStore(b *testing.B) {
	s := fsStore(b, b.TempDir(), store.Options{})
	blob, d := blob(b, 256<<20)
	mustGet(b, s, app, d, &origin{blob: blob})
	o := &origin{blob: blob}
	b.Run("whole, checked against the digest", func(b *testing.B) {
		b.SetBytes(int64(len(blob)))
		for b.Loop() {
			r, err := s.Get(context.Background(), app, d, o)
			if err != nil || !r.FromStore() {
				b.Fatal(err)
			}
			if _, err := r.WriteTo(io.Discard); err != nil {
				b.Fatal(err)
			}
			r.Close()
		}
	})
	b.Run("range, unchecked", func(b *testing.B) {
		b.SetBytes(int64(len(blob)))
		for b.Loop() {
			rc, err := s.ReadRange(context.Background(), app, d, 0, int64(len(blob)))
			if err != nil {
				b.Fatal(err)
			}
			if _, err := io.Copy(io.Discard, rc); err != nil {
				b.Fatal(err)
			}
			rc.Close()
		}
	})
}

// BenchmarkFill measures a fill: fetching a blob (from memory here), hashing
// it, writing it to the filesystem store and streaming it to one client.
func BenchmarkFill(b *testing.B) {
	s := fsStore(b, b.TempDir(), store.Options{})
	blobs := make([]*origin, 0, 8)
	digests := make([]string, 0, 8)
	for range 4 {
		bb, d := blob(b, 128<<20)
		blobs, digests = append(blobs, &origin{blob: bb}), append(digests, d)
	}
	b.SetBytes(128 << 20)
	i := 0
	for b.Loop() {
		if i == len(blobs) {
			b.StopTimer()
			s = fsStore(b, b.TempDir(), store.Options{})
			i = 0
			b.StartTimer()
		}
		r, err := s.Get(context.Background(), app, digests[i], blobs[i])
		if err != nil || r.FromStore() {
			b.Fatal(err)
		}
		if _, err := r.WriteTo(io.Discard); err != nil {
			b.Fatal(err)
		}
		r.Close()
		i++
	}
}
