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

// sweeper sweeps at start, every SweepInterval, and when asked to (the
// store grew past MaxSize), resting between sweeps as rest says.
func (s *Store) sweeper() {
	defer s.wg.Done()
	for {
		began := time.Now()
		_ = s.Sweep(s.ctx)
		took := time.Since(began)
		s.stats.lastSweep.Store(int64(took))
		regular, asked := rest(s.o.SweepInterval, took)
		next := time.NewTimer(regular)
		select {
		case <-s.ctx.Done():
			return
		case <-next.C:
		case <-s.sweepNow:
			next.Reset(asked - time.Since(began.Add(took)))
			select {
			case <-s.ctx.Done():
				return
			case <-next.C:
			}
		}
	}
}

// rest is how long the sweeper waits after a sweep that took took: for
// the next regular sweep, until interval has passed since this one began
// but at least nine times as long as it took, so that a store too large
// to walk in a fraction of the interval is swept a tenth of the time, not
// back to back; for a sweep asked for, as long as it took (the store is
// over its size: half the time at most).
func rest(interval, took time.Duration) (regular, asked time.Duration) {
	return max(interval-took, 9*took), took
}

// sweepSoon asks the sweeper for a sweep now.
func (s *Store) sweepSoon() {
	select {
	case s.sweepNow <- struct{}{}:
	default:
	}
}

// entry is what a sweep learns of one object.
type entry struct {
	o      object
	size   int64     // of its data and notes
	stored bool      // it has data
	used   time.Time // last use: the newer of its data and its use mark
	newest time.Time // its newest object
}

// Sweep measures the store, evicts the least recently used objects past
// MaxSize (down to 90% of it), with the notes kept about them, and deletes
// leftovers: uploads nobody wrote to for StaleUploads, links and notes of
// objects not stored, records of tags not resolved for 30 days, and the
// layout of before content was kept per upstream. The store sweeps by
// itself; Sweep is for a sweep now (authz-proxy gc). It is safe while
// serving and while other replicas sweep: a blob evicted while being read
// is read to its end (the filesystem keeps an open file; S3 finishes a GET
// begun), and one evicted between a look-up and a read is fetched again.
func (s *Store) Sweep(ctx context.Context) error {
	s.sweeping.Lock()
	defer s.sweeping.Unlock()
	began := time.Now()
	entries := map[objKey]*entry{}
	var total int64
	var staleTags []string
	err := s.d.Walk(ctx, root, func(fi storagedriver.FileInfo) error {
		if fi.IsDir() {
			return skipLinksOfStored(entries, fi.Path())
		}
		mod := fi.ModTime()
		o, leaf, ok := parseObjectPath(fi.Path())
		if !ok {
			if isTagPath(fi.Path()) && began.Sub(mod) > tagRecordTTL {
				staleTags = append(staleTags, fi.Path())
			}
			return nil
		}
		e := entries[o.key()]
		if e == nil {
			e = &entry{o: o}
			entries[o.key()] = e
		}
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
	s.deleteAll(ctx, staleTags)
	s.removeOldLayout(ctx)
	var lru []*entry
	for _, e := range entries {
		switch {
		case e.stored:
			lru = append(lru, e)
		case began.Sub(e.newest) > linkOnlyTTL:
			_ = s.d.Delete(ctx, e.o.dir())
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
		if fi, err := s.d.Stat(ctx, e.o.usedPath()); err == nil && fi.ModTime().After(e.used) {
			continue
		}
		if err := s.d.Delete(ctx, e.o.dir()); err != nil && !isNotFound(err) {
			s.failed(nil, "evict", err)
			return errorf("evict %s: %w", e.o, err)
		}
		s.touched.Remove(e.o.key())
		s.tagged.Remove(e.o.key())
		total -= e.size
		s.size.Add(-e.size)
		s.stats.blobs.Add(-1)
		s.stats.evictions.Add(1)
		s.stats.evictedBytes.Add(e.size)
		evicted++
		freed += e.size
	}
	if evicted > 0 {
		s.log.Info("store: evicted the least recently used content", "objects", evicted, "bytes", freed, "size", total, "maxSize", s.o.MaxSize)
	}
	return ctx.Err()
}

// removeOldLayout deletes the content of the layout of before content was
// kept per upstream (/blobs and /tags at the top), which is never read:
// it did not say which upstream supplied what.
func (s *Store) removeOldLayout(ctx context.Context) {
	for _, dir := range []string{"/blobs", "/tags"} {
		if _, err := s.d.Stat(ctx, dir); err != nil {
			continue
		}
		if err := s.d.Delete(ctx, dir); err != nil && !isNotFound(err) {
			s.failed(nil, "sweep", err)
			continue
		}
		s.log.Info("store: removed the content of an earlier layout, which did not keep content per upstream", "folder", dir)
	}
}

// skipLinksOfStored skips the links of an object whose data the walk has
// seen (walks list a folder's entries in order, "data" before "links"):
// they matter to a sweep only for an object not stored, and a stored blob
// has a folder of them per repository that pulled it, most of the
// folders of a store.
func skipLinksOfStored(entries map[objKey]*entry, dir string) error {
	o, leaf, ok := parseObjectPath(dir)
	if !ok || leaf != "links" {
		return nil
	}
	if e := entries[o.key()]; e != nil && e.stored {
		return storagedriver.ErrSkipDir
	}
	return nil
}

func countStored(entries map[objKey]*entry) int {
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
	return s.deleteAll(ctx, stale)
}

// deleteAll deletes paths; a failure is reported and ends it.
func (s *Store) deleteAll(ctx context.Context, paths []string) int {
	for i, p := range paths {
		if err := s.d.Delete(ctx, p); err != nil && !isNotFound(err) {
			s.failed(nil, "sweep", err)
			return i
		}
	}
	return len(paths)
}

// parseObjectPath splits /content/<up>/<kind>/<alg>/<xx>/<hex>/<leaf...>.
func parseObjectPath(p string) (object, string, bool) {
	parts := strings.SplitN(strings.TrimPrefix(p, root+"/"), "/", 6)
	if len(parts) < 6 || !strings.HasPrefix(p, root+"/") {
		return object{}, "", false
	}
	var k kind
	switch parts[1] {
	case blobKind.folder():
		k = blobKind
	case manifestKind.folder():
		k = manifestKind
	default:
		return object{}, "", false
	}
	d, ok := parseDigest(parts[2] + ":" + parts[4])
	if !ok || parts[3] != d.hex[:2] {
		return object{}, "", false
	}
	return object{digest: d, up: parts[0], kind: k}, parts[5], true
}

// isTagPath reports whether p is a tag record: /content/<up>/tags/....
func isTagPath(p string) bool {
	parts := strings.SplitN(strings.TrimPrefix(p, root+"/"), "/", 3)
	return strings.HasPrefix(p, root+"/") && len(parts) == 3 && parts[1] == "tags"
}
