package store

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"runtime"
	"sync"
)

// A blob read from the store is checked as it goes out. A whole read with
// nothing else known is hashed against its digest, and its last byte held
// back until it matches. But a blob whose bytes this process has checked
// against its digest before (when a fill wrote them, or at a whole read)
// is checked faster, and before any of its bytes leave: every chunk (of
// chunkSize bytes) was tagged then with a MAC (GMAC, AES-GCM over no
// plaintext) under a key that lives only in this process's memory, and the
// tags are kept there too. Reading it again, each chunk is read whole,
// tagged again on every core at once and compared, and only then written:
// a chunk that was changed on disk (or in the bucket) stops the stream
// before its bytes leave and evicts the blob. Nobody without the key,
// whoever can write to the store included, can make a changed chunk pass;
// and GMAC runs several times faster than SHA-256. Ranges of such a blob
// are checked the same way, chunk by chunk.

// minTagged is the smallest blob whose chunk tags are kept: a smaller one
// is hashed whole in less time than it takes to schedule the workers.
const minTagged = 2 * chunkSize

// chunkTags are the tags of the chunks of one stored object.
type chunkTags struct {
	id   uint64 // with a chunk's index, the nonce of its tag
	size int64
	sums []byte // tagSize bytes per chunk
}

const tagSize = 16

// chunkLen is the length of chunk i.
func (t *chunkTags) chunkLen(i int) int {
	return int(min(chunkSize, t.size-int64(i)*chunkSize))
}

// newMAC is the store's chunk MAC, under a key of this process alone.
func newMAC() cipher.AEAD {
	key := make([]byte, 16)
	_, _ = rand.Read(key) // crypto/rand.Read never fails
	block, err := aes.NewCipher(key)
	if err != nil {
		panic(err) // a 16-byte key is always an AES key
	}
	mac, err := cipher.NewGCM(block)
	if err != nil {
		panic(err) // AES has GCM's block size
	}
	return mac
}

// tag appends the tag of chunk i of the object of id to dst.
func (s *Store) tag(dst []byte, id uint64, i int, b []byte) []byte {
	var nonce [12]byte
	binary.BigEndian.PutUint64(nonce[:8], id)
	binary.BigEndian.PutUint32(nonce[8:], uint32(i))
	return s.mac.Seal(dst, nonce[:], nil, b)
}

// newTagger tags the bytes of an object of size bytes (-1: not known yet)
// as they are checked against its digest, or returns nil when the object
// is too small to be worth it.
func (s *Store) newTagger(size int64) *tagger {
	if size >= 0 && size < minTagged {
		return nil
	}
	var id [8]byte
	_, _ = rand.Read(id[:])
	t := &tagger{s: s, t: &chunkTags{id: binary.BigEndian.Uint64(id[:])}}
	if size > 0 {
		t.t.sums = make([]byte, 0, tagSize*((size+chunkSize-1)/chunkSize))
	}
	return t
}

// tagger tags the chunks of the bytes written to it, in order.
type tagger struct {
	s     *Store
	t     *chunkTags
	carry []byte // the start of a chunk not yet whole
}

// Write tags p's whole chunks, keeping the start of the next; it never
// fails. A writer in pieces of chunkSize (a fill) is tagged without a
// copy.
func (g *tagger) Write(p []byte) (int, error) {
	n := len(p)
	if len(g.carry) > 0 {
		m := min(len(p), chunkSize-len(g.carry))
		g.carry = append(g.carry, p[:m]...)
		p = p[m:]
		if len(g.carry) == chunkSize {
			g.add(g.carry)
			g.carry = g.carry[:0]
		}
	}
	for len(p) >= chunkSize {
		g.add(p[:chunkSize])
		p = p[chunkSize:]
	}
	if len(p) > 0 {
		if g.carry == nil {
			g.carry = make([]byte, 0, chunkSize)
		}
		g.carry = append(g.carry, p...)
	}
	return n, nil
}

func (g *tagger) add(b []byte) {
	g.t.sums = g.s.tag(g.t.sums, g.t.id, int(g.t.size/chunkSize), b)
	g.t.size += int64(len(b))
}

// keep records the tags of the bytes written, which matched the digest of
// o, as o's, when o is large enough.
func (g *tagger) keep(o object) {
	if g == nil {
		return
	}
	if len(g.carry) > 0 {
		g.add(g.carry)
		g.carry = nil
	}
	if g.t.size >= minTagged {
		g.s.tagged.Add(o.key(), g.t)
	}
}

// tagsOf returns the tags kept for o if they are of an object of size
// bytes (-1: any).
func (s *Store) tagsOf(o object, size int64) (*chunkTags, bool) {
	t, ok := s.tagged.Get(o.key())
	if !ok || size >= 0 && t.size != size {
		return nil, false
	}
	return t, true
}

// checked reads n bytes from off of a stored object whose chunk tags are
// known, from rc, which starts at the chunk that holds off. No byte of a
// chunk is given out before the chunk matched its tag.
type checked struct {
	s    *Store
	d    object
	t    *chunkTags
	rc   io.ReadCloser
	next int   // the chunk rc reads next
	skip int   // bytes of chunk next before off
	left int64 // bytes still to give out
	// cur are the checked bytes of the last chunk read not yet given out,
	// in buf, a chunk of the fills' pool.
	cur  []byte
	buf  *chunk
	once sync.Once // of the eviction
}

func (s *Store) newChecked(d object, t *chunkTags, rc io.ReadCloser, off, n int64) *checked {
	return &checked{s: s, d: d, t: t, rc: rc, next: int(off / chunkSize), skip: int(off % chunkSize), left: n}
}

// read reads chunk i whole into b and checks it.
func (c *checked) read(i int, b []byte) ([]byte, error) {
	b = b[:c.t.chunkLen(i)]
	if m, err := io.ReadFull(c.rc, b); err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return nil, c.corrupt(fmt.Sprintf("%d bytes short", c.t.size-int64(i)*chunkSize-int64(m)))
		}
		return nil, err
	}
	return b, nil
}

// check compares chunk i, b, with its tag.
func (c *checked) check(i int, b []byte) error {
	var sum [tagSize]byte
	if !hmac.Equal(c.s.tag(sum[:0], c.t.id, i, b), c.t.sums[i*tagSize:(i+1)*tagSize]) {
		return c.corrupt(fmt.Sprintf("chunk %d (bytes %d-%d) changed since it was checked against the digest", i, int64(i)*chunkSize, int64(i)*chunkSize+int64(len(b))-1))
	}
	return nil
}

// give returns the part of chunk b that is asked for, and counts it.
func (c *checked) give(b []byte) []byte {
	b = b[c.skip:]
	c.skip = 0
	if int64(len(b)) > c.left {
		b = b[:c.left]
	}
	c.left -= int64(len(b))
	c.s.stats.storeBytes.Add(int64(len(b)))
	return b
}

func (c *checked) Read(p []byte) (int, error) {
	if len(c.cur) == 0 {
		if c.left <= 0 {
			return 0, io.EOF
		}
		if c.buf == nil {
			c.buf = c.s.chunks.Get().(*chunk)
		}
		b, err := c.read(c.next, c.buf.b)
		if err == nil {
			err = c.check(c.next, b)
		}
		if err != nil {
			return 0, err
		}
		c.next++
		c.cur = c.give(b)
	}
	n := copy(p, c.cur)
	c.cur = c.cur[n:]
	return n, nil
}

// piece is one chunk on its way to the writer: read, then checked by a
// worker; checked is closed once err says how that went.
type piece struct {
	i       int
	buf     *chunk // of the fills' pool
	b       []byte
	err     error
	checked chan struct{}
}

// WriteTo reads the chunks ahead of w, checks them on every core at once,
// and writes each, in order, once it matched.
func (c *checked) WriteTo(w io.Writer) (int64, error) {
	var total int64
	if len(c.cur) > 0 { // from an earlier Read
		n, err := w.Write(c.cur)
		total += int64(n)
		c.cur = nil
		if err != nil {
			return total, err
		}
	}
	if c.left <= 0 {
		return total, nil
	}
	workers := runtime.GOMAXPROCS(0)
	ahead := 2 * workers
	order := make(chan *piece, ahead)
	work := make(chan *piece, ahead)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for p := range work {
				p.err = c.check(p.i, p.b)
				close(p.checked)
			}
		})
	}
	last := int((int64(c.next)*chunkSize + int64(c.skip) + c.left - 1) / chunkSize)
	first := c.next
	go func() {
		defer close(order)
		defer close(work)
		for i := first; i <= last; i++ {
			p := &piece{i: i, buf: c.s.chunks.Get().(*chunk), checked: make(chan struct{})}
			b, err := c.read(i, p.buf.b)
			select {
			case order <- p:
			case <-stop:
				c.s.chunks.Put(p.buf)
				return
			}
			if err != nil {
				p.err = err
				close(p.checked)
				return
			}
			p.b = b
			work <- p
		}
	}()
	var err error
	for p := range order {
		<-p.checked // or failed to be read; a worker may still hold it
		if err == nil {
			if err = p.err; err == nil {
				var n int
				n, err = w.Write(c.give(p.b))
				total += int64(n)
			}
			if err != nil {
				close(stop)
			}
		}
		c.s.chunks.Put(p.buf)
	}
	wg.Wait()
	c.next = last + 1
	return total, err
}

func (c *checked) Close() error {
	if c.buf != nil {
		c.s.chunks.Put(c.buf)
		c.buf, c.cur = nil, nil
	}
	return c.rc.Close()
}

// corrupt reports a chunk that does not match, evicting the object (once,
// however many chunks are found wrong).
func (c *checked) corrupt(why string) error {
	err := fmt.Errorf("%w: %s: %s", ErrCorrupt, c.d, why)
	c.once.Do(func() { _ = c.s.evictCorrupt(c.d, why) })
	return err
}
