package store

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"sync/atomic"
)

// Reader is one client's copy of a blob, from the store or from a fill.
// Reading it whole either yields exactly the bytes of its digest or fails
// before the last byte.
type Reader struct {
	size  int64
	hit   bool
	r     io.Reader
	close func() error
}

// Size is the blob's length, -1 when the upstream did not say.
func (r *Reader) Size() int64 { return r.size }

// FromStore reports whether the blob is read from the store (a hit) rather
// than from the upstream through a fill.
func (r *Reader) FromStore() bool { return r.hit }

func (r *Reader) Read(p []byte) (int, error) { return r.r.Read(p) }

// WriteTo writes the blob to w in large pieces.
func (r *Reader) WriteTo(w io.Writer) (int64, error) {
	if wt, ok := r.r.(io.WriterTo); ok {
		return wt.WriteTo(w)
	}
	return io.Copy(w, struct{ io.Reader }{r.r})
}

// Close releases what the reader holds; the fill it may be reading goes on.
func (r *Reader) Close() error { return r.close() }

// open returns a reader of the whole of d (size bytes) from the store,
// checked against d as it is read.
func (s *Store) open(ctx context.Context, d object, size int64) (*Reader, error) {
	rc, err := s.openAt(ctx, d, 0, size, true)
	if err != nil {
		return nil, err
	}
	return &Reader{size: size, hit: true, r: rc, close: rc.Close}, nil
}

// openAt returns a reader of n of d's stored bytes from off. When this
// process checked d against its digest before, every chunk is checked
// against the tag it recorded then, before its bytes are given out, whole
// or not (chunks.go). Otherwise a whole read (off 0, n its size) is hashed
// and checked against the digest, and recorded; a part is not checked. It
// marks d used.
func (s *Store) openAt(ctx context.Context, d object, off, n int64, whole bool) (io.ReadCloser, error) {
	if s.down(&s.readDown) {
		return nil, ErrNotStored
	}
	size := int64(-1)
	if whole {
		size = n
	}
	t, tagged := s.tagsOf(d, size)
	if tagged && off+n > t.size {
		tagged = false // not the object the tags are of
	}
	at := off
	if tagged {
		at = off - off%chunkSize
	}
	rc, err := s.d.Reader(ctx, d.dataPath(), at)
	if err != nil {
		if !isNotFound(err) && ctx.Err() == nil {
			s.failed(&s.readDown, "read", err)
		}
		return nil, ErrNotStored
	}
	s.touch(d)
	switch {
	case tagged:
		return s.newChecked(d, t, rc, off, n), nil
	case whole:
		return &verifier{s: s, d: d, rc: rc, h: d.hash(), left: n, g: s.newTagger(n)}, nil
	}
	return &part{rc: rc, r: io.LimitedReader{R: rc, N: n}, n: &s.stats.storeBytes}, nil
}

// part is n stored bytes from an offset, not checked.
type part struct {
	rc io.ReadCloser
	r  io.LimitedReader
	n  *atomic.Int64
}

func (p *part) Read(b []byte) (int, error) {
	n, err := p.r.Read(b)
	p.n.Add(int64(n))
	return n, err
}

// WriteTo hands w a limited reader of the file itself, which w may send
// with sendfile(2).
func (p *part) WriteTo(w io.Writer) (int64, error) {
	n, err := io.Copy(w, &p.r)
	p.n.Add(n)
	return n, err
}

func (p *part) Close() error { return p.rc.Close() }

// ReadRange returns length bytes of blob dgst from offset on, from what
// the store holds for scope's upstream; Stat says first whether scope may
// read it. A part of a blob cannot be checked against its digest, but it is
// checked chunk by chunk when this process checked the whole blob before
// (a fill or a whole read); otherwise a client assembling parts checks the
// whole (containerd, crane and skopeo do).
func (s *Store) ReadRange(ctx context.Context, scope Scope, dgst string, offset, length int64) (io.ReadCloser, error) {
	obj, ok := scope.object(blobKind, dgst)
	if !ok {
		return nil, ErrNotStored
	}
	return s.openAt(ctx, obj, offset, length, false)
}

// verifier reads a whole stored blob, hashing it, and gives out its last
// byte only once all of them match the digest. A mismatch evicts the blob.
type verifier struct {
	s    *Store
	d    object
	rc   io.ReadCloser
	h    hash.Hash
	left int64 // bytes not yet given out
	// checked: all bytes given out, and they match the digest.
	checked bool
	// g tags the chunks as they are hashed, kept once they match; nil
	// for a small blob.
	g *tagger
}

// sum hashes b, and tags it.
func (v *verifier) sum(b []byte) {
	v.h.Write(b)
	if v.g != nil {
		_, _ = v.g.Write(b) // a tagger does not fail
	}
}

// hashWriter hashes, and tags, what is written to it.
func (v *verifier) hashWriter() io.Writer {
	if v.g == nil {
		return v.h
	}
	return io.MultiWriter(v.h, v.g)
}

func (v *verifier) Read(p []byte) (int, error) {
	switch {
	case v.checked:
		return 0, io.EOF
	case v.left <= 0: // stored empty: is that its digest?
		if got := hex.EncodeToString(v.h.Sum(nil)); got != v.d.hex {
			return 0, v.corrupt("it is empty")
		}
		v.checked = true
		return 0, io.EOF
	case len(p) == 0:
		return 0, nil
	}
	if v.left > 1 {
		p = p[:min(int64(len(p)), v.left-1)]
		n, err := v.rc.Read(p)
		v.sum(p[:n])
		v.left -= int64(n)
		v.s.stats.storeBytes.Add(int64(n))
		if err == io.EOF {
			return n, v.corrupt(fmt.Sprintf("%d bytes short", v.left))
		}
		return n, err
	}
	var last [1]byte
	if _, err := io.ReadFull(v.rc, last[:]); err != nil {
		if errors.Is(err, io.EOF) {
			return 0, v.corrupt("1 byte short")
		}
		return 0, err
	}
	v.sum(last[:])
	if got := hex.EncodeToString(v.h.Sum(nil)); got != v.d.hex {
		return 0, v.corrupt("the bytes hash to " + v.d.alg + ":" + got)
	}
	p[0] = last[0]
	v.left, v.checked = 0, true
	v.g.keep(v.d)
	v.s.stats.storeBytes.Add(1)
	return 1, nil
}

// WriteTo copies to w while another goroutine hashes: a read costs the
// slower of hashing and copying, not their sum. The last byte goes out
// once all match.
func (v *verifier) WriteTo(w io.Writer) (int64, error) {
	if f, ok := v.rc.(*os.File); ok && v.left > 1 {
		return v.sendFile(f, w)
	}
	const pieces, pieceSize = 4, 1 << 20
	free := make(chan []byte, pieces)
	for range pieces {
		free <- make([]byte, min(max(v.left, 1), pieceSize))
	}
	toHash := make(chan []byte, pieces)
	hashed := make(chan struct{})
	go func() {
		defer close(hashed)
		for b := range toHash {
			v.sum(b) // hashing and writing only read b
			free <- b[:cap(b)]
		}
	}()
	var total int64
	var err error
	for v.left > 1 && err == nil {
		b := <-free
		var n int
		n, err = v.rc.Read(b[:min(int64(len(b)), v.left-1)])
		v.left -= int64(n)
		v.s.stats.storeBytes.Add(int64(n))
		toHash <- b[:n]
		if n > 0 {
			m, werr := w.Write(b[:n])
			total += int64(m)
			if werr != nil {
				err = werr
			}
		}
		if err == io.EOF {
			err = nil
			if v.left > 1 {
				err = errShort
			}
		}
	}
	close(toHash)
	<-hashed
	if errors.Is(err, errShort) {
		return total, v.corrupt(fmt.Sprintf("%d bytes short", v.left))
	}
	if err != nil {
		return total, err
	}
	var last [1]byte
	n, err := v.Read(last[:]) // the check, then the last byte (if any)
	if n > 0 {
		m, werr := w.Write(last[:n])
		total += int64(m)
		if werr != nil {
			return total, werr
		}
	}
	if err == io.EOF {
		err = nil
	}
	return total, err
}

// sendFile copies a file of the filesystem driver to w as the kernel can
// (sendfile(2) to a plain-HTTP client) while another goroutine hashes the
// file with reads at their own offsets.
func (v *verifier) sendFile(f *os.File, w io.Writer) (int64, error) {
	size := v.left
	hashed := make(chan int64, 1)
	var stop atomic.Bool
	go func() {
		n, _ := io.CopyBuffer(v.hashWriter(), &stoppable{r: io.NewSectionReader(f, 0, size), stop: &stop}, make([]byte, 1<<20))
		hashed <- n
	}()
	n, err := io.Copy(w, io.LimitReader(f, size-1))
	v.s.stats.storeBytes.Add(n)
	if err != nil {
		stop.Store(true) // the client is gone: the hash is of no use
	}
	got := <-hashed
	if err != nil {
		return n, err
	}
	if n < size-1 || got < size {
		return n, v.corrupt(fmt.Sprintf("%d bytes short", size-min(n+1, got)))
	}
	if sum := hex.EncodeToString(v.h.Sum(nil)); sum != v.d.hex {
		return n, v.corrupt("the bytes hash to " + v.d.alg + ":" + sum)
	}
	var last [1]byte
	if _, err := f.ReadAt(last[:], size-1); err != nil {
		return n, err
	}
	v.left, v.checked = 0, true
	v.g.keep(v.d)
	m, err := w.Write(last[:])
	v.s.stats.storeBytes.Add(int64(m))
	return n + int64(m), err
}

// stoppable reads r until stop is set.
type stoppable struct {
	r    io.Reader
	stop *atomic.Bool
}

func (s *stoppable) Read(p []byte) (int, error) {
	if s.stop.Load() {
		return 0, io.EOF
	}
	return s.r.Read(p)
}

// errShort: the stored blob ended before its size.
var errShort = errors.New("short")

func (v *verifier) Close() error { return v.rc.Close() }

// corrupt reports a stored blob that does not match its digest, and
// evicts it before the client's stream is cut.
func (v *verifier) corrupt(why string) error { return v.s.evictCorrupt(v.d, why) }

// counting counts the bytes read through it.
type counting struct {
	io.ReadCloser
	n *atomic.Int64
}

func (c *counting) Read(p []byte) (int, error) {
	n, err := c.ReadCloser.Read(p)
	c.n.Add(int64(n))
	return n, err
}
