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
	"sync/atomic"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
	"golang.org/x/sync/singleflight"
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

// Group runs one computation per key for all concurrent callers.
type Group[V any] struct {
	flight singleflight.Group
}

// PanicError is a computation that panicked: it fails that computation,
// not the process.
type PanicError struct {
	Value any
	Stack []byte
}

func (e *PanicError) Error() string { return fmt.Sprintf("internal error: panic: %v", e.Value) }

// Do runs fn once for all concurrent callers of key and gives each its
// result. fn runs on a context detached from any one caller (a client
// hanging up does not cancel the others' work), bounded by timeout; a caller
// whose ctx ends stops waiting. A panic in fn is returned as a *PanicError.
func (g *Group[V]) Do(ctx context.Context, key string, timeout time.Duration, fn func(ctx context.Context) (V, error)) (V, error) {
	ch := g.flight.DoChan(key, func() (v any, err error) {
		defer func() {
			if p := recover(); p != nil {
				err = &PanicError{Value: p, Stack: debug.Stack()}
			}
		}()
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), timeout)
		defer cancel()
		return fn(cctx)
	})
	var zero V
	select {
	case <-ctx.Done():
		return zero, ctx.Err()
	case r := <-ch:
		if r.Err != nil {
			return zero, r.Err
		}
		return r.Val.(V), nil
	}
}
