// Package cache keeps verdicts: a bounded LRU whose entries expire after a
// per-entry TTL, and a single computation per key for concurrent callers.
// Errors are never cached.
package cache

import (
	"context"
	"fmt"
	"sync/atomic"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
	"golang.org/x/sync/singleflight"
)

// Key identifies one verdict. Generation is the policy's, so a new policy
// never meets an old verdict; Environment is the client's, since rules may
// apply to some environments only.
type Key struct {
	Generation  string
	Environment string
	Upstream    string
	Repository  string
	Digest      string
}

func (k Key) String() string {
	return fmt.Sprintf("%s\x00%s\x00%s\x00%s\x00%s", k.Generation, k.Environment, k.Upstream, k.Repository, k.Digest)
}

type entry[V any] struct {
	value   V
	expires time.Time
}

// Cache is a verdict cache; safe for concurrent use.
type Cache[V any] struct {
	lru       *lru.Cache[Key, entry[V]]
	flight    singleflight.Group
	now       func() time.Time
	evictions atomic.Uint64
}

// New returns a cache of at most maxEntries verdicts.
func New[V any](maxEntries int) (*Cache[V], error) {
	l, err := lru.New[Key, entry[V]](maxEntries)
	if err != nil {
		return nil, err
	}
	return &Cache[V]{lru: l, now: time.Now}, nil
}

// Get returns the unexpired value for k.
func (c *Cache[V]) Get(k Key) (V, bool) {
	e, ok := c.lru.Get(k)
	if !ok {
		var zero V
		return zero, false
	}
	if c.now().After(e.expires) {
		c.lru.Remove(k)
		var zero V
		return zero, false
	}
	return e.value, true
}

// Add stores v under k for ttl.
func (c *Cache[V]) Add(k Key, v V, ttl time.Duration) {
	if c.lru.Add(k, entry[V]{value: v, expires: c.now().Add(ttl)}) {
		c.evictions.Add(1)
	}
}

// Len is the number of entries, expired ones included until they are seen.
func (c *Cache[V]) Len() int { return c.lru.Len() }

// Resize changes the most entries kept, evicting the least recently used
// ones beyond it.
func (c *Cache[V]) Resize(maxEntries int) {
	c.evictions.Add(uint64(c.lru.Resize(maxEntries)))
}

// Evictions counts the entries evicted to make room since New.
func (c *Cache[V]) Evictions() uint64 { return c.evictions.Load() }

// Compute produces a value and how long it may be cached.
type Compute[V any] func(ctx context.Context) (V, time.Duration, error)

// Do returns the cached value for k, or runs compute once for all concurrent
// callers and caches its result. compute runs on a context detached from
// any one caller (a client hanging up does not cancel the others' work),
// bounded by timeout. A caller whose ctx ends stops waiting. cached reports
// whether the value came from the cache.
func (c *Cache[V]) Do(ctx context.Context, k Key, timeout time.Duration, compute Compute[V]) (v V, cached bool, err error) {
	if v, ok := c.Get(k); ok {
		return v, true, nil
	}
	ch := c.flight.DoChan(k.String(), func() (any, error) {
		if v, ok := c.Get(k); ok { // computed while we queued
			return v, nil
		}
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), timeout)
		defer cancel()
		v, ttl, err := compute(cctx)
		if err != nil {
			return nil, err
		}
		c.Add(k, v, ttl)
		return v, nil
	})
	select {
	case <-ctx.Done():
		var zero V
		return zero, false, ctx.Err()
	case r := <-ch:
		if r.Err != nil {
			var zero V
			return zero, false, r.Err
		}
		return r.Val.(V), false, nil
	}
}
