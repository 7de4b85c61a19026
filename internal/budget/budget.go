// Package budget bounds the bytes of manifests that requests hold at once:
// read from an upstream, judged, and written to a client that may read
// slowly or not at all. Past the bound a request is refused, so that
// memory stays bounded whatever clients do; a request of unknown size is
// counted at the most it may be, which also bounds how many of them reach
// an upstream at once.
package budget

import (
	"context"
	"errors"
	"sync"
	"time"
)

// ErrExhausted is returned when a request's bytes do not fit the budget:
// the caller answers 503 with Retry-After.
var ErrExhausted = errors.New("too many manifest bytes in flight")

// Large is the size past which a request must leave an eighth of the budget
// free, and may wait for room: everyday manifests (a few KiB) are then
// still served at once while clients hold large ones.
const Large = 64 << 10

// Budget is a byte budget; a nil *Budget admits everything. Safe for
// concurrent use.
type Budget struct {
	mu   sync.Mutex
	max  int64
	used int64
	wait time.Duration
	// freed is closed, and replaced, whenever bytes are given back while
	// waiting callers (waiters of them) wait on it.
	freed   chan struct{}
	waiters int
}

// New returns a budget of max bytes, in which a large request waits at
// most wait for room.
func New(max int64, wait time.Duration) *Budget {
	return &Budget{max: max, wait: wait, freed: make(chan struct{})}
}

// SetMax changes the budget; bytes already taken stay taken.
func (b *Budget) SetMax(max int64) {
	b.mu.Lock()
	b.max = max
	b.notify()
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

// InUse is the number of bytes taken.
func (b *Budget) InUse() int64 {
	if b == nil {
		return 0
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.used
}

// Lease is bytes taken from a budget; a nil *Lease holds nothing.
type Lease struct {
	b *Budget
	n int64
}

// Take takes n bytes. A request of at most Large bytes is admitted at once
// when they fit; a larger one must leave an eighth of the budget free and
// waits for room for at most the budget's wait (or until ctx ends). It
// returns ErrExhausted when they do not fit.
func (b *Budget) Take(ctx context.Context, n int64) (*Lease, error) {
	if b == nil {
		return nil, nil
	}
	l := &Lease{b: b}
	if err := l.grow(ctx, n); err != nil {
		return nil, err
	}
	return l, nil
}

// Resize makes the lease hold n bytes: giving some back, or taking more
// under the rules of Take.
func (l *Lease) Resize(ctx context.Context, n int64) error {
	if l == nil {
		return nil
	}
	if n <= l.n {
		l.b.mu.Lock()
		l.b.used -= l.n - n
		l.n = n
		l.b.notify()
		l.b.mu.Unlock()
		return nil
	}
	return l.grow(ctx, n-l.n)
}

// Release gives every byte back. It may be called more than once.
func (l *Lease) Release() { _ = l.Resize(context.Background(), 0) }

// grow takes n more bytes for l.
func (l *Lease) grow(ctx context.Context, n int64) error {
	b := l.b
	var deadline <-chan time.Time
	for {
		b.mu.Lock()
		free := b.max - b.used
		large := l.n+n > Large
		if n <= free && (!large || free-n >= b.max/8) {
			b.used += n
			l.n += n
			b.mu.Unlock()
			return nil
		}
		freed := b.freed
		if large {
			b.waiters++
		}
		b.mu.Unlock()
		if !large {
			return ErrExhausted
		}
		if deadline == nil {
			t := time.NewTimer(b.wait)
			defer t.Stop()
			deadline = t.C
		}
		var err error
		select {
		case <-freed:
		case <-deadline:
			err = ErrExhausted
		case <-ctx.Done():
			err = ErrExhausted
		}
		b.mu.Lock()
		b.waiters--
		b.mu.Unlock()
		if err != nil {
			return err
		}
	}
}

// notify wakes the waiters, if any (most releases have none to wake, and
// make no channel); b.mu is held.
func (b *Budget) notify() {
	if b.waiters == 0 {
		return
	}
	close(b.freed)
	b.freed = make(chan struct{})
}
