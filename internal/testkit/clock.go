package testkit

import (
	"sync"
	"time"
)

// Clock is a clock that the test moves by hand: its Now is the `now func()
// time.Time` that policy.NewJudge, cache.New and proxy.Options take, so that
// expiry is tested without waiting for the wall clock.
type Clock struct {
	mu sync.Mutex
	t  time.Time
}

// NewClock returns a clock reading start.
func NewClock(start time.Time) *Clock { return &Clock{t: start} }

// Now is the clock's reading.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

// Advance moves the clock forward by d.
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}
