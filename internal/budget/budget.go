// Package budget bounds the bytes of manifests that requests hold at once:
// read from an upstream, judged, and written to a client that may read
// slowly or not at all. Past the bound a request is refused at once, so
// that memory stays bounded whatever clients do.
package budget

import (
	"errors"
	"sync"
)

// ErrExhausted is returned when a request's bytes do not fit the budget:
// the caller answers 503 with Retry-After.
var ErrExhausted = errors.New("too many manifest bytes in flight")

// Large is the size past which a request must leave Reserve of the budget
// free: everyday manifests (a few KiB) are then still served while clients
// hold large ones.
const Large = 64 << 10

// Budget is a byte budget; a nil *Budget admits everything. Safe for
// concurrent use.
type Budget struct {
	mu   sync.Mutex
	max  int64
	used int64
}

// New returns a budget of max bytes.
func New(max int64) *Budget { return &Budget{max: max} }

// SetMax changes the budget; bytes already taken stay taken.
func (b *Budget) SetMax(max int64) {
	b.mu.Lock()
	b.max = max
	b.mu.Unlock()
}

// Max is the budget.
func (b *Budget) Max() int64 {
	if b == nil {
		return 0
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.max
}

// reserve is how much of the budget a request of more than Large bytes
// must leave free: an eighth.
func (b *Budget) reserve() int64 { return b.max / 8 }

// Acquire takes n bytes if they fit, without waiting, and returns the
// function that gives them back (safe to call more than once). It returns
// ErrExhausted when they do not fit.
func (b *Budget) Acquire(n int64) (release func(), err error) {
	if b == nil || n <= 0 {
		return func() {}, nil
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	free := b.max - b.used
	if n > free || n > Large && free-n < b.reserve() {
		return nil, ErrExhausted
	}
	b.used += n
	var once sync.Once
	return func() {
		once.Do(func() {
			b.mu.Lock()
			b.used -= n
			b.mu.Unlock()
		})
	}, nil
}

// InUse is the number of bytes taken.
func (b *Budget) InUse() int64 {
	if b == nil {
		return 0
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.used
}
