package store

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	storagedriver "github.com/distribution/distribution/v3/registry/storage/driver"
)

// Get returns the whole blob dgst for scope: from the store when it holds
// it for scope's upstream and scope may read it (checked against the
// digest as it is read), or from the upstream through one fill per blob of
// that upstream, shared by every concurrent caller and streamed to each
// while it is written to the store. The last byte reaches no client before
// the whole blob matched its digest.
//
// A caller joining a fill started for another repository is first
// confirmed by its own upstream (o.Confirm), unless linked. ErrNotStored:
// dgst or scope is not one the store keeps; ask the upstream.
func (s *Store) Get(ctx context.Context, scope Scope, dgst string, o Origin) (*Reader, error) {
	obj, ok := scope.object(blobKind, dgst)
	if !ok {
		return nil, ErrNotStored
	}
	if f := s.inflight(obj); f != nil {
		return s.join(ctx, f, scope, o)
	}
	size, err := s.stored(ctx, obj)
	switch {
	case err == nil:
		if err := s.visible(ctx, scope, obj, o); err != nil {
			return nil, err
		}
		if r, err := s.open(ctx, obj, size); err == nil {
			s.stats.hits.Add(1)
			return r, nil
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		// Evicted meanwhile, or the store fails: fetch it.
	case !errors.Is(err, ErrNotStored):
		return nil, err
	}
	f := s.startFill(obj, scope, o)
	if f == nil {
		return nil, ErrNotStored // closed
	}
	return s.join(ctx, f, scope, o)
}

// Prefetch starts a fill of dgst for scope in the background unless one
// runs: a client asked for part of a blob the store does not hold, which
// the caller serves from the upstream meanwhile.
func (s *Store) Prefetch(scope Scope, dgst string, o Origin) {
	if obj, ok := scope.object(blobKind, dgst); ok {
		s.startFill(obj, scope, o)
	}
}

func (s *Store) inflight(obj object) *fill {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.fills[obj.key()]
}

// startFill returns the fill of obj in flight, starting one for scope from
// o when none is; nil once the store is closed, or when the fills in
// flight are at their bound (the whole, or obj's upstream's share) and
// none that nobody reads can be cancelled to make room.
func (s *Store) startFill(obj object, scope Scope, o Origin) *fill {
	s.mu.Lock()
	defer s.mu.Unlock()
	if f := s.fills[obj.key()]; f != nil || s.closed {
		return f
	}
	if !s.roomForFill(scope.Upstream) {
		s.stats.fillsRefused.Add(1)
		return nil
	}
	f := &fill{s: s, d: obj, scope: scope, ready: make(chan struct{}), done: make(chan struct{}), wake: make(chan struct{}), size: -1}
	f.ctx, f.cancel = context.WithCancelCause(s.ctx)
	s.fills[obj.key()] = f
	s.fillsOf[scope.Upstream]++
	s.wg.Add(1)
	s.stats.fillsInFlight.Add(1)
	go f.run(o)
	return f
}

// errFillDropped ends a fill nobody read, to make room for one a client
// waits for.
var errFillDropped = errors.New("the store's fills in flight were at their bound, and nobody read this one: cancelled")

// roomForFill reports whether a fill of upstream up may start, cancelling
// an abandoned fill (one nobody reads) if that makes room; s.mu is held.
func (s *Store) roomForFill(up string) bool {
	ownFull := s.fillsOf[up] >= s.o.MaxFillsPerUpstream
	if !ownFull && len(s.fills) < s.o.MaxFills {
		return true
	}
	for k, f := range s.fills {
		if ownFull && f.scope.Upstream != up || !f.abandoned() {
			continue
		}
		// Out of the count now: its goroutine ends when it sees the
		// cancellation.
		delete(s.fills, k)
		s.fillsOf[f.scope.Upstream]--
		f.cancel(errFillDropped)
		s.stats.fillsCancelled.Add(1)
		return true
	}
	return false
}

// abandoned reports whether nobody reads f, or waits to.
func (f *fill) abandoned() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.readers == 0
}

// join returns a reader of fill f for a caller of scope, once the upstream
// answered.
func (s *Store) join(ctx context.Context, f *fill, scope Scope, o Origin) (*Reader, error) {
	f.attach(1)
	if scope != f.scope && !s.linked(ctx, scope.Repository, f.d) {
		if err := o.Confirm(ctx); err != nil {
			f.attach(-1)
			return nil, err
		}
		s.link(scope.Repository, f.d)
	}
	select {
	case <-f.ready:
	case <-ctx.Done():
		f.attach(-1)
		return nil, ctx.Err()
	}
	f.mu.Lock()
	size, err := f.size, f.err
	f.mu.Unlock()
	if err != nil {
		f.attach(-1)
		return nil, err
	}
	s.stats.misses.Add(1)
	fr := &fillReader{f: f, ctx: ctx, o: o}
	return &Reader{size: size, r: fr, close: fr.Close}, nil
}

// attach counts a reader of f in (1) or out (-1); with none left, f keeps
// no window.
func (f *fill) attach(n int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.readers += n
	if f.readers == 0 {
		f.trim()
	}
}

// fill is one digest being fetched from the upstream and stored. The
// newest bytes received (the window) are kept for the clients reading
// along; chunks are never written while in the window, so readers use
// them without copying.
type fill struct {
	s     *Store
	d     object
	scope Scope
	ready chan struct{} // closed once the upstream answered, or the fill ended
	done  chan struct{} // closed when the fill ended
	// ctx is the fill's own, which the store cancels to drop it.
	ctx    context.Context
	cancel context.CancelCauseFunc

	mu       sync.Mutex
	wake     chan struct{} // closed and replaced at every change
	chunks   []*chunk
	start    int64 // offset of chunks[0]
	end      int64 // bytes received
	size     int64 // the whole length, -1 while unknown
	verified bool  // all bytes received, and they match the digest
	stored   bool
	finished bool
	err      error
	answered bool
	// readers read the fill, or wait to: a fill with none keeps no
	// window, and may be dropped to make room.
	readers int
}

// changed wakes the readers; f.mu is held.
func (f *fill) changed() {
	close(f.wake)
	f.wake = make(chan struct{})
	if !f.answered && (f.finished || f.err != nil) {
		f.answered = true
		close(f.ready)
	}
}

func (f *fill) answer(length int64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.size = length
	if !f.answered {
		f.answered = true
		close(f.ready)
	}
}

func (f *fill) append(c *chunk) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.chunks = append(f.chunks, c)
	f.end += int64(len(c.b))
	f.s.windowBytes.Add(int64(len(c.b)))
	f.trim()
	f.changed()
}

// trim drops the oldest chunks of the window: all of them when nobody
// reads f, else those past the window's size or the store's bound on all
// windows, always keeping the newest; f.mu is held.
func (f *fill) trim() {
	keep := 1
	if f.readers == 0 {
		keep = 0
	}
	for len(f.chunks) > keep && (keep == 0 || f.end-f.start-int64(len(f.chunks[0].b)) >= f.s.o.Window || f.s.windowBytes.Load() > f.s.o.MaxWindowBytes) {
		old := f.chunks[0]
		f.start += int64(len(old.b))
		f.s.windowBytes.Add(-int64(len(old.b)))
		f.chunks[0] = nil
		f.chunks = f.chunks[1:]
		old.drop()
	}
}

// chunk is a piece of a fill's window. Readers take a reference while they
// write from it; one that leaves the window with none is used again,
// so that a fill's memory stays flat whatever the blob's size.
type chunk struct {
	b    []byte
	refs int // readers writing from it; under the fill's mu
	pool *sync.Pool
}

// drop takes c out of the window; f.mu is held.
func (c *chunk) drop() {
	if c.refs == 0 {
		c.pool.Put(c)
	} else {
		c.pool = nil // a reader still has it: left to the collector
	}
}

func (f *fill) verify() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.verified, f.size = true, f.end
	f.changed()
}

func (f *fill) fail(err error) {
	f.forget()
	f.mu.Lock()
	defer f.mu.Unlock()
	f.err = err
	f.readers = 0 // every reader gets the error: the window goes
	f.trim()
	f.changed()
}

// finish ends the fill; stored says whether the blob of size bytes is in
// the store now.
func (f *fill) finish(size int64, stored bool) {
	f.forget()
	f.mu.Lock()
	defer f.mu.Unlock()
	f.finished, f.stored = true, stored
	if f.size < 0 {
		f.size = size
	}
	if f.readers == 0 {
		f.trim()
	}
	f.changed()
}

// forget takes f out of the fills in flight, before its end is told: a
// caller that sees the end and asks again starts afresh.
func (f *fill) forget() {
	f.s.mu.Lock()
	defer f.s.mu.Unlock()
	if f.s.fills[f.d.key()] == f {
		delete(f.s.fills, f.d.key())
		f.s.fillsOf[f.scope.Upstream]--
	}
}

// run fetches the blob from o, streams it to the readers, checks its
// digest and stores it. It runs on the store's context, detached from the
// request that started it: a client hanging up does not end the fill.
func (f *fill) run(o Origin) {
	s := f.s
	defer s.wg.Done()
	defer s.stats.fillsInFlight.Add(-1)
	defer close(f.done)
	defer f.cancel(nil)
	ctx, cancel := context.WithCancel(f.ctx)
	defer cancel()
	// Another fill, here or in a replica, may have stored it since the
	// caller looked.
	if size, err := s.stored(ctx, f.d); err == nil {
		f.finish(size, true)
		return
	}
	body, length, err := o.Fetch(ctx, 0, -1)
	if err != nil {
		s.stats.fillError("upstream")
		f.fail(err)
		return
	}
	defer closeQuietly(body)
	f.answer(length)
	// The upstream served it to this scope.
	s.link(f.scope.Repository, f.d)

	w, upload := s.newUpload(ctx, f.d, length)
	h := f.d.hash()
	g := s.newTagger(length)
	idle := time.AfterFunc(s.o.FillIdleTimeout, cancel)
	defer idle.Stop()
	var n int64
	for {
		c := s.chunks.Get().(*chunk)
		c.pool = &s.chunks
		m, rerr := readChunk(body, c.b[:cap(c.b)])
		if m > 0 {
			idle.Reset(s.o.FillIdleTimeout)
			c.b = c.b[:m]
			h.Write(c.b)
			if g != nil {
				_, _ = g.Write(c.b) // a tagger does not fail
			}
			n += int64(m)
			s.stats.upstreamBytes.Add(int64(m))
			if w != nil {
				if _, err := w.Write(c.b); err != nil {
					s.failed(&s.writeDown, "write", err)
					s.stats.fillError("store")
					s.discard(w, upload)
					w = nil
				}
			}
			f.append(c)
		} else {
			s.chunks.Put(c)
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			switch cause := context.Cause(f.ctx); {
			case errors.Is(cause, errFillDropped):
				rerr = cause
			case ctx.Err() != nil && s.ctx.Err() == nil:
				rerr = fmt.Errorf("no bytes from the upstream for %s: %w", s.o.FillIdleTimeout, rerr)
			}
			s.stats.fillError("upstream")
			s.discard(w, upload)
			f.fail(fmt.Errorf("blob %s from the upstream, after %d bytes: %w", f.d, n, rerr))
			return
		}
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != f.d.hex || (length >= 0 && n != length) {
		s.stats.fillError("digest")
		s.discard(w, upload)
		s.log.Warn("upstream sent bytes that do not match the digest; not stored, clients' streams cut", "digest", f.d.String(), "scope", f.scope.String(), "got", f.d.alg+":"+got, "bytes", n, "length", length)
		f.fail(fmt.Errorf("%w %s (%d bytes hash to %s:%s)", ErrDigestMismatch, f.d, n, f.d.alg, got))
		return
	}
	// Release the last byte to the readers, then store.
	f.verify()
	stored := w != nil && s.commit(ctx, w, upload, f.d, n)
	if stored {
		g.keep(f.d)
	}
	f.finish(n, stored)
}

// readChunk fills buf from r unless r ends or fails first: it returns
// io.EOF only at the clean end of r.
func readChunk(r io.Reader, buf []byte) (int, error) {
	n := 0
	for n < len(buf) {
		m, err := r.Read(buf[n:])
		n += m
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// newUpload opens where the fill of d is written, or returns nil when it
// is not to be stored: too large for the store, or the store is failing.
func (s *Store) newUpload(ctx context.Context, d object, length int64) (storagedriver.FileWriter, string) {
	if length > s.o.MaxSize {
		return nil, ""
	}
	if s.down(&s.writeDown) {
		s.stats.fillError("store")
		return nil, ""
	}
	upload := "/uploads/" + s.o.Owner + "/" + d.alg + "-" + d.hex + "-" + randomSuffix()
	w, err := s.d.Writer(ctx, upload, false)
	if err != nil {
		s.failed(&s.writeDown, "write", err)
		s.stats.fillError("store")
		return nil, ""
	}
	return w, upload
}

// discard drops an upload that will not be stored.
func (s *Store) discard(w storagedriver.FileWriter, upload string) {
	if w == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(s.ctx), opTimeout)
	defer cancel()
	_ = w.Cancel(ctx)
	_ = s.d.Delete(ctx, upload) // the filesystem driver removes it on Cancel; others may not
}

// commit makes a verified upload of d visible: moved into place, marked
// used. It reports whether d is stored.
func (s *Store) commit(ctx context.Context, w storagedriver.FileWriter, upload string, d object, size int64) bool {
	if err := w.Commit(ctx); err != nil {
		s.failed(&s.writeDown, "commit", err)
		s.stats.fillError("store")
		s.discard(w, upload)
		return false
	}
	_ = w.Close()
	if err := s.d.Move(ctx, upload, d.dataPath()); err != nil {
		s.failed(&s.writeDown, "commit", err)
		s.stats.fillError("store")
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), opTimeout)
		_ = s.d.Delete(dctx, upload)
		cancel()
		return false
	}
	s.stats.fillsStored.Add(1)
	s.touched.Add(d.key(), time.Now())
	uctx, cancel := context.WithTimeout(ctx, opTimeout)
	if err := s.d.PutContent(uctx, d.usedPath(), nil); err != nil {
		s.failed(&s.writeDown, "touch", err)
	}
	cancel()
	if s.size.Add(size) > s.o.MaxSize {
		s.sweepSoon()
	}
	return true
}

// fillReader is one client's reading of a fill: from its window while it
// keeps up, and, when it fell behind, from the store once the fill stored
// the blob (or, when it could not, from the upstream).
type fillReader struct {
	f   *fill
	ctx context.Context
	o   Origin
	off int64
	// rest is where a reader that fell behind reads on from.
	rest   io.ReadCloser
	closed bool
}

// errBehind: the bytes at the reader's offset left the window.
var errBehind = errors.New("fell behind the fill")

// next returns up to max bytes at r.off from the window, waiting for them,
// and the chunk they are in, which the caller releases once it used them.
func (r *fillReader) next(max int) ([]byte, *chunk, error) {
	f := r.f
	for {
		f.mu.Lock()
		if f.err != nil {
			err := f.err
			f.mu.Unlock()
			return nil, nil, err
		}
		if f.verified && r.off >= f.end {
			f.mu.Unlock()
			return nil, nil, io.EOF
		}
		if r.off < f.start {
			f.mu.Unlock()
			return nil, nil, errBehind
		}
		avail := f.end
		if !f.verified {
			avail-- // the last byte waits for the digest
		}
		pos := f.start
		for _, c := range f.chunks {
			if r.off >= avail {
				break
			}
			if r.off < pos+int64(len(c.b)) {
				b := c.b[r.off-pos:]
				b = b[:min(int64(len(b)), avail-r.off, int64(max))]
				c.refs++
				f.mu.Unlock()
				return b, c, nil
			}
			pos += int64(len(c.b))
		}
		if f.finished {
			// Ended without these bytes in the window: stored
			// elsewhere meanwhile.
			f.mu.Unlock()
			return nil, nil, errBehind
		}
		wake := f.wake
		f.mu.Unlock()
		select {
		case <-wake:
		case <-r.ctx.Done():
			return nil, nil, r.ctx.Err()
		}
	}
}

// release gives back a reader's reference to c.
func (r *fillReader) release(c *chunk) {
	r.f.mu.Lock()
	defer r.f.mu.Unlock()
	c.refs--
}

// catchUp finds where a reader that fell behind reads on from, once the
// fill ended: the store, else the upstream from its offset.
func (r *fillReader) catchUp() error {
	f := r.f
	select {
	case <-f.done:
	case <-r.ctx.Done():
		return r.ctx.Err()
	}
	f.mu.Lock()
	err, stored, size := f.err, f.stored, f.size
	f.mu.Unlock()
	if err != nil {
		return err
	}
	if stored {
		if rc, err := f.s.openAt(r.ctx, f.d, r.off, size-r.off, r.off == 0); err == nil {
			r.rest = rc
			return nil
		}
	}
	body, _, err := r.o.Fetch(r.ctx, r.off, size)
	if err != nil {
		return err
	}
	r.rest = &counting{ReadCloser: body, n: &f.s.stats.upstreamBytes}
	return nil
}

func (r *fillReader) Read(p []byte) (int, error) {
	if r.rest == nil {
		b, c, err := r.next(len(p))
		if !errors.Is(err, errBehind) {
			n := copy(p, b)
			if c != nil {
				r.release(c)
			}
			r.off += int64(n)
			return n, err
		}
		if err := r.catchUp(); err != nil {
			return 0, err
		}
	}
	n, err := r.rest.Read(p)
	r.off += int64(n)
	return n, err
}

// WriteTo writes the window's chunks to w as they are, without copying.
func (r *fillReader) WriteTo(w io.Writer) (int64, error) {
	var total int64
	for r.rest == nil {
		b, c, err := r.next(1 << 20)
		if c != nil {
			m, werr := w.Write(b)
			r.release(c)
			r.off += int64(m)
			total += int64(m)
			if werr != nil {
				return total, werr
			}
			continue
		}
		switch {
		case err == io.EOF:
			return total, nil
		case errors.Is(err, errBehind):
			if err := r.catchUp(); err != nil {
				return total, err
			}
		case err != nil:
			return total, err
		}
	}
	m, err := io.Copy(w, r.rest)
	r.off += m
	return total + m, err
}

func (r *fillReader) Close() error {
	if !r.closed {
		r.closed = true
		r.f.attach(-1)
	}
	if r.rest != nil {
		return r.rest.Close()
	}
	return nil
}
