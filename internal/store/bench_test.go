package store_test

import (
	"context"
	"io"
	"testing"

	"github.com/authz-proxy/authz-proxy/internal/store"
)

// BenchmarkReadFromTheStore measures what checking a read from the
// filesystem store costs: a whole blob this process checked when it stored
// it (each chunk checked against its tag before its bytes go out), the
// same bytes as a range (checked alike), and the first whole read of a
// restarted proxy (hashed against the digest, its last byte held until it
// matches, the chunks tagged meanwhile).
func BenchmarkReadFromTheStore(b *testing.B) {
	root := b.TempDir()
	s := fsStore(b, root, store.Options{})
	blob, d := blob(b, 256<<20)
	mustGet(b, s, app, d, &origin{blob: blob})
	o := &origin{blob: blob}
	whole := func(b *testing.B, s *store.Store) {
		r, err := s.Get(context.Background(), app, d, o)
		if err != nil || !r.FromStore() {
			b.Fatal(err)
		}
		if _, err := r.WriteTo(io.Discard); err != nil {
			b.Fatal(err)
		}
		r.Close()
	}
	b.Run("whole, checked chunk by chunk", func(b *testing.B) {
		b.SetBytes(int64(len(blob)))
		for b.Loop() {
			whole(b, s)
		}
	})
	b.Run("range, checked chunk by chunk", func(b *testing.B) {
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
	b.Run("whole, after a restart: hashed against the digest", func(b *testing.B) {
		b.SetBytes(int64(len(blob)))
		for b.Loop() {
			b.StopTimer()
			fresh := fsStore(b, root, store.Options{})
			b.StartTimer()
			whole(b, fresh)
			b.StopTimer()
			fresh.Close()
			b.StartTimer()
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
