package cache

import (
	"sync"

	"github.com/hashicorp/golang-lru/v2/simplelru"
)

// Bounded is an LRU of immutable values bounded by their total size in
// bytes rather than by their number: the proxy keeps recently served
// manifests in one, keyed by digest, so that a pull by digest whose verdict
// is cached needs no upstream call. Safe for concurrent use.
type Bounded[K comparable, V any] struct {
	mu    sync.Mutex
	lru   *simplelru.LRU[K, V]
	size  func(V) int64
	total int64
	max   int64
}

// NewBounded returns a cache holding values of at most maxBytes in total, as
// measured by size. A value larger than maxBytes is never kept.
func NewBounded[K comparable, V any](maxBytes int64, size func(V) int64) *Bounded[K, V] {
	b := &Bounded[K, V]{size: size, max: maxBytes}
	// The count bound is a formality: the byte bound evicts first.
	b.lru, _ = simplelru.NewLRU[K, V](1<<30, func(_ K, v V) { b.total -= b.size(v) })
	return b
}

// Get returns the value for k and marks it recently used.
func (b *Bounded[K, V]) Get(k K) (V, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.lru.Get(k)
}

// Add stores v under k, evicting the least recently used values until the
// total fits.
func (b *Bounded[K, V]) Add(k K, v V) {
	n := b.size(v)
	if n > b.max {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.lru.Remove(k)
	b.lru.Add(k, v)
	b.total += n
	for b.total > b.max {
		b.lru.RemoveOldest()
	}
}

// Bytes is the total size of the values held.
func (b *Bounded[K, V]) Bytes() int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.total
}
