// Package cache keeps what is costly to compute or fetch: Cache, a bounded
// LRU whose entries expire after a per-entry TTL; Group, one computation per
// key for all concurrent callers, on a context detached from any one of
// them, with panics turned into errors; and Bounded, an LRU bounded by the
// bytes of its values. Errors are never cached.
package cache

import (
	"context"
	"fmt"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
)

type entry[V any] struct {
	value   V
	expires time.Time
}

// Cache is a bounded LRU of values that expire; safe for concurrent use.
type Cache[K comparable, V any] struct {
	lru       *lru.Cache[K, entry[V]]
	now       func() time.Time
	evictions atomic.Uint64
}

// New returns a cache of at most maxEntries values whose entries expire by
// the clock now (nil: time.Now).
func New[K comparable, V any](maxEntries int, now func() time.Time) (*Cache[K, V], error) {
	l, err := lru.New[K, entry[V]](maxEntries)
	if err != nil {
		return nil, err
	}
	if now == nil {
		now = time.Now
	}
	return &Cache[K, V]{lru: l, now: now}, nil
}

// Get returns the unexpired value for k and when it expires.
func (c *Cache[K, V]) Get(k K) (v V, expires time.Time, ok bool) {
	e, ok := c.lru.Get(k)
	if !ok {
		return v, time.Time{}, false
	}
	if !c.now().Before(e.expires) {
		c.lru.Remove(k)
		return v, time.Time{}, false
	}
	return e.value, e.expires, true
}

// Add stores v under k for ttl; a ttl that is not positive stores nothing.
func (c *Cache[K, V]) Add(k K, v V, ttl time.Duration) {
	if ttl <= 0 {
		return
	}
	if c.lru.Add(k, entry[V]{value: v, expires: c.now().Add(ttl)}) {
		c.evictions.Add(1)
	}
}

// Len is the number of entries, expired ones included until they are seen.
func (c *Cache[K, V]) Len() int { return c.lru.Len() }

// Resize changes the most entries kept, evicting the least recently used
// ones beyond it.
func (c *Cache[K, V]) Resize(maxEntries int) {
	c.evictions.Add(uint64(c.lru.Resize(maxEntries)))
}

// Evictions counts the entries evicted to make room since New.
func (c *Cache[K, V]) Evictions() uint64 { return c.evictions.Load() }

// Group runs one computation per key for all concurrent callers. The
// zero Group is ready to use.
type Group[K comparable, V any] struct {
	mu    sync.Mutex
	calls map[K]*call[V]
}

// call is one computation in flight; done is closed once val and err are
// set.
type call[V any] struct {
	done chan struct{}
	val  V
	err  error
}

// PanicError is a computation that panicked: it fails that computation,
// not the process.
type PanicError struct {
	Value any
	Stack []byte
}

func (e *PanicError) Error() string { return fmt.Sprintf("internal error: panic: %v", e.Value) }

// Do runs fn once for all concurrent callers of key and gives each its
// result. fn runs in the goroutine of the first caller (a goroutine of its
// own would cost more than the work on a cold path: its stack grows through
// the HTTP client), on a context detached from every caller (a client
// hanging up does not cancel the others' work), bounded by timeout (0: by
// nothing but fn's own bounds). A
// caller that came later stops waiting when its ctx ends; the first one
// finishes the work, within timeout, for the others; a caller whose ctx
// has ended already starts nothing. A panic in fn is returned as a
// *PanicError.
func (g *Group[K, V]) Do(ctx context.Context, key K, timeout time.Duration, fn func(ctx context.Context) (V, error)) (V, error) {
	if err := ctx.Err(); err != nil {
		var zero V
		return zero, err
	}
	g.mu.Lock()
	if c, ok := g.calls[key]; ok {
		g.mu.Unlock()
		select {
		case <-ctx.Done():
			var zero V
			return zero, ctx.Err()
		case <-c.done:
			return c.val, c.err
		}
	}
	c := &call[V]{done: make(chan struct{})}
	if g.calls == nil {
		g.calls = map[K]*call[V]{}
	}
	g.calls[key] = c
	g.mu.Unlock()
	defer func() {
		g.mu.Lock()
		delete(g.calls, key)
		g.mu.Unlock()
		close(c.done)
	}()
	c.val, c.err = run(ctx, timeout, fn)
	return c.val, c.err
}

// detached has the values of its parent, and neither its cancellation nor
// its deadline: context.WithoutCancel, as a pointer, so that reading a
// value (the HTTP client reads several per request) allocates nothing.
// context.Cause is not meaningful on it, only on a context derived from it
// (the HTTP client derives one for every request).
type detached struct{ parent context.Context }

func (d *detached) Deadline() (time.Time, bool) { return time.Time{}, false }
func (d *detached) Done() <-chan struct{}       { return nil }
func (d *detached) Err() error                  { return nil }
func (d *detached) Value(key any) any           { return d.parent.Value(key) }

// run calls fn on a context detached from ctx, bounded by timeout (0: by
// nothing but fn's own bounds), and turns a panic into a *PanicError.
func run[V any](ctx context.Context, timeout time.Duration, fn func(ctx context.Context) (V, error)) (v V, err error) {
	defer func() {
		if p := recover(); p != nil {
			var zero V
			v, err = zero, &PanicError{Value: p, Stack: debug.Stack()}
		}
	}()
	if timeout <= 0 {
		return fn(&detached{ctx})
	}
	cctx, cancel := context.WithTimeout(&detached{ctx}, timeout)
	defer cancel()
	return fn(cctx)
}
