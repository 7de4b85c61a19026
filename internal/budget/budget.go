// Package budget bounds the bytes of manifests that requests hold at once:
// read from an upstream, judged, and written to a client that may read
// slowly or not at all. Past the bound a request is refused, so that
// memory stays bounded whatever clients do; a request of unknown size is
// counted at the most it may be, which also bounds how many of them reach
// an upstream at once.
//
// Every byte is held by a party: the upstream it is read from, or the
// client it is held for. Each party may hold at most its share of the
// budget (SetShares), so that one upstream that hangs, or one client that
// reads nothing, holds its own share and never refuses another party.
package budget

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"
)

// ErrExhausted is returned when a request's bytes do not fit the budget,
// or its party's share: the caller answers 503 with Retry-After.
var ErrExhausted = errors.New("too many manifest bytes in flight")

// Large is the size past which a request must leave an eighth of the budget
// free, and may wait for room: everyday manifests (a few KiB) are then
// still served at once while clients hold large ones.
const Large = 64 << 10

// Kind is a kind of party.
type Kind uint8

// The kinds of party.
const (
	// Upstream parties hold the bytes read from an upstream, by its
	// configured name.
	Upstream Kind = iota + 1
	// Client parties hold the bytes of responses to a client, by its
	// source address or identity.
	Client
)

func (k Kind) String() string {
	if k == Client {
		return "client"
	}
	return "upstream"
}

// Party is who holds bytes of a budget.
type Party struct {
	Kind Kind
	Name string
}

// UpstreamParty is the party of the bytes read from upstream name.
func UpstreamParty(name string) Party { return Party{Upstream, name} }

// ClientParty is the party of the bytes held for client name.
func ClientParty(name string) Party { return Party{Client, name} }

func (p Party) String() string { return p.Kind.String() + " " + p.Name }

// ShareError is a request refused because its party holds its share.
type ShareError struct {
	Party Party
	Share int64
}

func (e *ShareError) Error() string {
	return fmt.Sprintf("%v: %s holds its share of %d bytes", ErrExhausted, e.Party, e.Share)
}

func (e *ShareError) Unwrap() error { return ErrExhausted }

// Budget is a byte budget; a nil *Budget admits everything. Safe for
// concurrent use.
type Budget struct {
	mu   sync.Mutex
	max  int64
	used int64
	wait time.Duration
	// shares bound each party by kind; 0: the budget alone bounds it.
	shares map[Kind]int64
	// held is what each party holding bytes holds; a party holding none
	// has no entry.
	held map[Party]int64
	// refused counts requests refused, by the whole budget (kind 0) or by
	// their party's share.
	refused         map[Kind]uint64
	refusedUpstream map[string]uint64
	// freed is closed, and replaced, whenever bytes are given back while
	// waiting callers (waiters of them) wait on it.
	freed   chan struct{}
	waiters int
}

// New returns a budget of max bytes, in which a large request waits at
// most wait for room.
func New(max int64, wait time.Duration) *Budget {
	return &Budget{max: max, wait: wait, freed: make(chan struct{}), shares: map[Kind]int64{}, held: map[Party]int64{},
		refused: map[Kind]uint64{}, refusedUpstream: map[string]uint64{}}
}

// SetMax changes the budget; bytes already taken stay taken.
func (b *Budget) SetMax(max int64) {
	b.mu.Lock()
	b.max = max
	b.notify()
	b.mu.Unlock()
}

// SetShares bounds the bytes one upstream and one client may hold (0:
// only by the budget); bytes already taken stay taken.
func (b *Budget) SetShares(upstream, client int64) {
	b.mu.Lock()
	b.shares[Upstream], b.shares[Client] = upstream, client
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

// Snapshot is what a budget holds now, and what it refused since it was
// made, for metrics.
type Snapshot struct {
	InUse, Max int64
	// UpstreamShare and ClientShare are the shares (0: none).
	UpstreamShare, ClientShare int64
	// Upstreams are the bytes held per upstream now.
	Upstreams map[string]int64
	// Clients hold bytes now; ClientsAtShare of them hold their whole
	// share (what large requests may take of it: all but an eighth), the
	// most MaxClient.
	Clients, ClientsAtShare int
	MaxClient               int64
	// Refused are requests refused by the whole budget ("budget"), by an
	// upstream's share ("upstream") and by a client's ("client");
	// RefusedUpstream by upstream's share, per upstream.
	Refused         map[string]uint64
	RefusedUpstream map[string]uint64
}

// Snapshot reports b's state.
func (b *Budget) Snapshot() Snapshot {
	if b == nil {
		return Snapshot{}
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	s := Snapshot{InUse: b.used, Max: b.max, UpstreamShare: b.shares[Upstream], ClientShare: b.shares[Client],
		Upstreams: map[string]int64{}, Refused: map[string]uint64{}, RefusedUpstream: map[string]uint64{}}
	for p, n := range b.held {
		if p.Kind == Upstream {
			s.Upstreams[p.Name] = n
			continue
		}
		s.Clients++
		s.MaxClient = max(s.MaxClient, n)
		if share := b.shares[Client]; share > 0 && saturated(n, share) {
			s.ClientsAtShare++
		}
	}
	for k, n := range b.refused {
		name := "budget"
		if k != 0 {
			name = k.String()
		}
		s.Refused[name] = n
	}
	for u, n := range b.refusedUpstream {
		s.RefusedUpstream[u] = n
	}
	return s
}

// saturated reports whether a party holding n bytes of share can take no
// more large requests.
func saturated(n, share int64) bool { return n+Large > share-share/8 }

// Saturated reports whether an upstream holding n bytes of snapshot s's
// upstream share can take no more large requests.
func (s Snapshot) Saturated(n int64) bool {
	return s.UpstreamShare > 0 && saturated(n, s.UpstreamShare)
}

// Lease is bytes taken from a budget by one party; a nil *Lease holds
// nothing.
type Lease struct {
	b *Budget
	p Party
	n int64
}

// Take takes n bytes for party p. A request of at most Large bytes is
// admitted at once when they fit the budget and p's share; a larger one
// must also leave an eighth of the budget free, and waits for room for at
// most the budget's wait (or until ctx ends). It returns an error wrapping
// ErrExhausted (a *ShareError when p's share refuses) when they do not fit.
func (b *Budget) Take(ctx context.Context, p Party, n int64) (*Lease, error) {
	if b == nil {
		return nil, nil
	}
	l := &Lease{b: b, p: p}
	if err := l.grow(ctx, n); err != nil {
		return nil, err
	}
	return l, nil
}

// TryTake is Take without waiting: for bytes the caller holds already
// (a manifest read), which waiting would keep in memory uncounted.
func (b *Budget) TryTake(p Party, n int64) (*Lease, error) {
	if b == nil {
		return nil, nil
	}
	l := &Lease{b: b, p: p}
	if err := l.growNow(n); err != nil {
		return nil, err
	}
	return l, nil
}

// growNow takes n more bytes for l if they fit now.
func (l *Lease) growNow(n int64) error {
	b := l.b
	b.mu.Lock()
	ok, fitsShare, share := b.fits(l, n)
	if ok {
		b.take(l, n)
	}
	b.mu.Unlock()
	if ok {
		return nil
	}
	b.refuse(l.p, !fitsShare)
	if !fitsShare {
		return &ShareError{Party: l.p, Share: share}
	}
	return ErrExhausted
}

// fits reports whether n more bytes for l fit the budget and l's share
// now; b.mu is held.
func (b *Budget) fits(l *Lease, n int64) (ok, fitsShare bool, share int64) {
	free := b.max - b.used
	large := l.n+n > Large
	share = b.shares[l.p.Kind]
	// Within a share as within the whole: a large request leaves an
	// eighth of it free, for the party's everyday manifests.
	held := b.held[l.p] + n
	fitsShare = share <= 0 || held <= share && (!large || share-held >= share/8)
	return fitsShare && n <= free && (!large || free-n >= b.max/8), fitsShare, share
}

// take counts n more bytes for l; b.mu is held.
func (b *Budget) take(l *Lease, n int64) {
	b.used += n
	l.n += n
	b.held[l.p] += n
}

// Resize makes the lease hold n bytes: giving some back, or taking more
// under the rules of Take.
func (l *Lease) Resize(ctx context.Context, n int64) error {
	if l == nil {
		return nil
	}
	b := l.b
	b.mu.Lock()
	if n <= l.n {
		b.give(l, l.n-n)
		b.mu.Unlock()
		return nil
	}
	more := n - l.n
	b.mu.Unlock()
	return l.grow(ctx, more)
}

// Release gives every byte back. It may be called more than once.
func (l *Lease) Release() { _ = l.Resize(context.Background(), 0) }

// give gives back n of l's bytes; b.mu is held.
func (b *Budget) give(l *Lease, n int64) {
	if n <= 0 {
		return
	}
	b.used -= n
	l.n -= n
	if left := b.held[l.p] - n; left > 0 {
		b.held[l.p] = left
	} else {
		delete(b.held, l.p)
	}
	b.notify()
}

// grow takes n more bytes for l.
func (l *Lease) grow(ctx context.Context, n int64) error {
	b := l.b
	var deadline <-chan time.Time
	for {
		b.mu.Lock()
		ok, fitsShare, share := b.fits(l, n)
		large := l.n+n > Large
		if ok {
			b.take(l, n)
			b.mu.Unlock()
			return nil
		}
		freed := b.freed
		if large {
			b.waiters++
		}
		b.mu.Unlock()
		err := error(ErrExhausted)
		if !fitsShare {
			err = &ShareError{Party: l.p, Share: share}
		}
		if !large {
			b.refuse(l.p, !fitsShare)
			return err
		}
		if deadline == nil {
			t := time.NewTimer(b.wait)
			defer t.Stop()
			deadline = t.C
		}
		var stop bool
		select {
		case <-freed:
		case <-deadline:
			stop = true
		case <-ctx.Done():
			stop = true
		}
		b.mu.Lock()
		b.waiters--
		b.mu.Unlock()
		if stop {
			b.refuse(l.p, !fitsShare)
			return err
		}
	}
}

// refuse counts a request of p refused, by its share or by the budget.
func (b *Budget) refuse(p Party, byShare bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !byShare {
		b.refused[0]++
		return
	}
	b.refused[p.Kind]++
	if p.Kind == Upstream {
		b.refusedUpstream[p.Name]++
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
