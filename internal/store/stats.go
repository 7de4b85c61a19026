package store

import (
	"sync"
	"sync/atomic"
	"time"
)

// Stats are the store's counters since it was opened, and its size.
type Stats struct {
	// Hits are blob requests answered from the store; Misses, those
	// answered by a fill (started or joined).
	Hits, Misses uint64
	// StoreBytes were read from the store for clients; UpstreamBytes were
	// fetched from the upstream by fills and by clients catching up.
	StoreBytes, UpstreamBytes int64
	// FillsInFlight are fills running now; FillsStored, fills that ended
	// with the blob stored.
	FillsInFlight int64
	FillsStored   uint64
	// FillsByUpstream are the fills running now per upstream.
	FillsByUpstream map[string]int
	// FillsCancelled are fills nobody read, cancelled to make room for
	// one a client waits for; FillsRefused, blobs not stored because the
	// fills were at their bound (the whole, or the upstream's share) and
	// none could be cancelled: they streamed from the upstream.
	FillsCancelled, FillsRefused uint64
	// MaxFills and MaxFillsPerUpstream are the bounds.
	MaxFills, MaxFillsPerUpstream int
	// WindowBytes are held in the fills' windows now; MaxWindowBytes is
	// their bound.
	WindowBytes, MaxWindowBytes int64
	// FillErrors counts fills by what went wrong: "upstream" (it answered
	// with an error, or the connection failed), "digest" (its bytes did not
	// match), "store" (the store could not take the blob: the clients were
	// served, it was not stored).
	FillErrors map[string]uint64
	// Evictions and EvictedBytes are blobs evicted to stay under MaxSize.
	Evictions    uint64
	EvictedBytes int64
	// Corrupt are stored blobs found not to match their digest when read,
	// and evicted.
	Corrupt uint64
	// StoreErrors counts failures of the store by operation (stat, read,
	// write, commit, link, touch, evict, sweep, cleanup); each was served
	// from the upstream instead.
	StoreErrors map[string]uint64
	// Size is the bytes stored, as of the last sweep and since; Blobs, the
	// blobs stored at the last sweep; MaxSize, the bound.
	Size, Blobs, MaxSize int64
	// Sweeps completed, and how long the last one took (a sweep walks
	// every object: it grows with the store).
	Sweeps    uint64
	LastSweep time.Duration
	// Reads are manifests (and other small content) read whole from the
	// store.
	Reads uint64
	// WritesInFlight are background writes running or waiting: links, use
	// marks, manifests, notes, tag records.
	WritesInFlight int64
}

// counters are the live values behind Stats.
type counters struct {
	hits, misses                            atomic.Uint64
	storeBytes, upstreamBytes               atomic.Int64
	fillsInFlight                           atomic.Int64
	fillsStored, evictions, corrupt, sweeps atomic.Uint64
	fillsCancelled, fillsRefused            atomic.Uint64
	evictedBytes, blobs                     atomic.Int64
	reads                                   atomic.Uint64
	writesInFlight                          atomic.Int64
	lastSweep                               atomic.Int64

	mu          sync.Mutex
	fillErrors  map[string]uint64
	storeErrors map[string]uint64
}

func (c *counters) fillError(reason string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.fillErrors == nil {
		c.fillErrors = map[string]uint64{}
	}
	c.fillErrors[reason]++
}

func (c *counters) storeError(op string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.storeErrors == nil {
		c.storeErrors = map[string]uint64{}
	}
	c.storeErrors[op]++
}

// Stats returns the store's counters now.
func (s *Store) Stats() Stats {
	c := &s.stats
	st := Stats{
		Hits: c.hits.Load(), Misses: c.misses.Load(),
		StoreBytes: c.storeBytes.Load(), UpstreamBytes: c.upstreamBytes.Load(),
		FillsInFlight: c.fillsInFlight.Load(), FillsStored: c.fillsStored.Load(),
		Evictions: c.evictions.Load(), EvictedBytes: c.evictedBytes.Load(),
		Corrupt: c.corrupt.Load(), Sweeps: c.sweeps.Load(),
		LastSweep: time.Duration(c.lastSweep.Load()),
		Size:      s.size.Load(), Blobs: c.blobs.Load(), MaxSize: s.o.MaxSize,
		Reads: c.reads.Load(), WritesInFlight: c.writesInFlight.Load(),
		FillErrors: map[string]uint64{}, StoreErrors: map[string]uint64{},
		FillsCancelled: c.fillsCancelled.Load(), FillsRefused: c.fillsRefused.Load(),
		MaxFills: s.o.MaxFills, MaxFillsPerUpstream: s.o.MaxFillsPerUpstream,
		WindowBytes: s.windowBytes.Load(), MaxWindowBytes: s.o.MaxWindowBytes,
		FillsByUpstream: map[string]int{},
	}
	s.mu.Lock()
	for up, n := range s.fillsOf {
		if n > 0 {
			st.FillsByUpstream[up] = n
		}
	}
	s.mu.Unlock()
	c.mu.Lock()
	defer c.mu.Unlock()
	for k, v := range c.fillErrors {
		st.FillErrors[k] = v
	}
	for k, v := range c.storeErrors {
		st.StoreErrors[k] = v
	}
	return st
}
