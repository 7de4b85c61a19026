package store

import (
	"context"
	"slices"
	"strings"
	"time"

	storagedriver "github.com/distribution/distribution/v3/registry/storage/driver"
)

// linkOnlyTTL is how long links to a digest that was never stored are kept:
// the layers of manifests served to clients that had them already.
const linkOnlyTTL = 24 * time.Hour

// clearOwnUploads deletes what this owner's fills left when the process
// was killed: no fill of this owner runs yet.
func (s *Store) clearOwnUploads(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	dir := "/uploads/" + s.o.Owner
	var files, bytes int64
	err := s.d.Walk(ctx, dir, func(fi storagedriver.FileInfo) error {
		if !fi.IsDir() {
			files++
			bytes += fi.Size()
		}
		return nil
	})
	if err == nil && files > 0 {
		err = s.d.Delete(ctx, dir)
	}
	switch {
	case err != nil && !isNotFound(err):
		s.failed(nil, "cleanup", err)
	case files > 0:
		s.log.Info("store: removed the leftovers of fills interrupted by the last exit", "files", files, "bytes", bytes)
	}
}

// sweeper sweeps at start, every SweepInterval, and when asked to.
func (s *Store) sweeper() {
	defer s.wg.Done()
	t := time.NewTicker(s.o.SweepInterval)
	defer t.Stop()
	for {
		_ = s.Sweep(s.ctx)
		select {
		case <-s.ctx.Done():
			return
		case <-t.C:
		case <-s.sweepNow:
		}
	}
}

// sweepSoon asks the sweeper for a sweep now.
func (s *Store) sweepSoon() {
	select {
	case s.sweepNow <- struct{}{}:
	default:
	}
}

// entry is what a sweep learns of one digest.
type entry struct {
	d      digest
	size   int64     // of its data and notes
	stored bool      // it has data
	used   time.Time // last use: the newer of its data and its use mark
	newest time.Time // its newest object
}

// Sweep measures the store, evicts the least recently used blobs past
// MaxSize (down to 90% of it), with the notes kept about them, and deletes
// leftovers: uploads nobody wrote to for StaleUploads, links and notes of
// digests not stored, records of tags not resolved for 30 days. The store sweeps by
// itself; Sweep is for a sweep now (authz-proxy gc). It is safe while
// serving and while other replicas sweep: a blob evicted while being read
// is read to its end (the filesystem keeps an open file; S3 finishes a GET
// begun), and one evicted between a look-up and a read is fetched again.
func (s *Store) Sweep(ctx context.Context) error {
	s.sweeping.Lock()
	defer s.sweeping.Unlock()
	began := time.Now()
	entries := map[string]*entry{}
	var total int64
	err := s.d.Walk(ctx, "/blobs", func(fi storagedriver.FileInfo) error {
		if fi.IsDir() {
			return nil
		}
		d, leaf, ok := parseBlobPath(fi.Path())
		if !ok {
			return nil
		}
		e := entries[d.String()]
		if e == nil {
			e = &entry{d: d}
			entries[d.String()] = e
		}
		mod := fi.ModTime()
		if mod.After(e.newest) {
			e.newest = mod
		}
		switch {
		case leaf == "data":
			e.stored = true
			e.size += fi.Size()
			total += fi.Size()
			fallthrough
		case leaf == "used":
			if mod.After(e.used) {
				e.used = mod
			}
		case strings.HasPrefix(leaf, "notes/"):
			e.size += fi.Size()
			total += fi.Size()
		}
		return nil
	})
	if err != nil && !isNotFound(err) {
		if ctx.Err() == nil {
			s.failed(nil, "sweep", err)
		}
		return errorf("sweep: %w", err)
	}
	s.size.Store(total)
	s.stats.blobs.Store(int64(countStored(entries)))
	s.stats.sweeps.Add(1)
	s.reclaimUploads(ctx, began)
	s.reclaimTags(ctx, began)
	var lru []*entry
	for _, e := range entries {
		switch {
		case e.stored:
			lru = append(lru, e)
		case began.Sub(e.newest) > linkOnlyTTL:
			_ = s.d.Delete(ctx, e.d.dir())
		}
	}
	if total <= s.o.MaxSize {
		return nil
	}
	slices.SortFunc(lru, func(a, b *entry) int { return a.used.Compare(b.used) })
	target := s.o.MaxSize / 10 * 9
	var evicted, freed int64
	for _, e := range lru {
		if total <= target || ctx.Err() != nil {
			break
		}
		// Used since the walk, here or by a replica: keep it.
		if fi, err := s.d.Stat(ctx, e.d.usedPath()); err == nil && fi.ModTime().After(e.used) {
			continue
		}
		if err := s.d.Delete(ctx, e.d.dir()); err != nil && !isNotFound(err) {
			s.failed(nil, "evict", err)
			return errorf("evict %s: %w", e.d, err)
		}
		s.touched.Remove(e.d.String())
		total -= e.size
		s.size.Add(-e.size)
		s.stats.blobs.Add(-1)
		s.stats.evictions.Add(1)
		s.stats.evictedBytes.Add(e.size)
		evicted++
		freed += e.size
	}
	if evicted > 0 {
		s.log.Info("store: evicted the least recently used blobs", "blobs", evicted, "bytes", freed, "size", total, "maxSize", s.o.MaxSize)
	}
	return ctx.Err()
}

func countStored(entries map[string]*entry) int {
	n := 0
	for _, e := range entries {
		if e.stored {
			n++
		}
	}
	return n
}

// reclaimUploads deletes uploads nobody wrote to for StaleUploads: fills
// of processes that were killed and did not come back under their owner
// name. A fill in progress writes continuously (on S3 its upload is not an
// object until it completes).
func (s *Store) reclaimUploads(ctx context.Context, now time.Time) {
	if n := s.deleteOlderThan(ctx, "/uploads", now.Add(-s.o.StaleUploads)); n > 0 {
		s.log.Info("store: removed abandoned uploads", "files", n)
	}
}

// reclaimTags deletes the records of tags not resolved for tagRecordTTL:
// tags nobody pulls any more.
func (s *Store) reclaimTags(ctx context.Context, now time.Time) {
	s.deleteOlderThan(ctx, "/tags", now.Add(-tagRecordTTL))
}

// deleteOlderThan deletes the files under root last written before cutoff
// and returns how many it deleted; a failure is reported and ends it.
func (s *Store) deleteOlderThan(ctx context.Context, root string, cutoff time.Time) int {
	var stale []string
	err := s.d.Walk(ctx, root, func(fi storagedriver.FileInfo) error {
		if !fi.IsDir() && fi.ModTime().Before(cutoff) {
			stale = append(stale, fi.Path())
		}
		return nil
	})
	if err != nil && !isNotFound(err) {
		if ctx.Err() == nil {
			s.failed(nil, "sweep", err)
		}
		return 0
	}
	for i, p := range stale {
		if err := s.d.Delete(ctx, p); err != nil && !isNotFound(err) {
			s.failed(nil, "sweep", err)
			return i
		}
	}
	return len(stale)
}

// parseBlobPath splits /blobs/<alg>/<xx>/<hex>/<leaf...>.
func parseBlobPath(p string) (digest, string, bool) {
	parts := strings.SplitN(strings.TrimPrefix(p, "/"), "/", 5)
	if len(parts) < 5 || parts[0] != "blobs" {
		return digest{}, "", false
	}
	d, ok := parseDigest(parts[1] + ":" + parts[3])
	if !ok || parts[2] != d.hex[:2] {
		return digest{}, "", false
	}
	return d, parts[4], true
}
