package cache_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/authz-proxy/authz-proxy/internal/cache"
	"github.com/authz-proxy/authz-proxy/internal/testkit"
)

func TestConcurrentCallersComputeOnce(t *testing.T) {
	// In a bubble: synctest.Wait returns once every caller waits, with no
	// sleep and no chance of one arriving after the computation ended.
	synctest.Test(t, func(t *testing.T) {
		var g cache.Group[string, string]
		var calls atomic.Int32
		release := make(chan struct{})
		results := make(chan string, 20)
		for range 20 {
			go func() {
				v, err := g.Do(context.Background(), "d", time.Second, func(context.Context) (string, error) {
					calls.Add(1)
					<-release
					return "allow", nil
				})
				if err != nil {
					t.Error(err)
				}
				results <- v
			}()
		}
		synctest.Wait()
		close(release)
		for range 20 {
			if v := <-results; v != "allow" {
				t.Fatalf("got %q", v)
			}
		}
		if n := calls.Load(); n != 1 {
			t.Errorf("computed %d times for 20 concurrent callers, want once", n)
		}
	})
}

func TestAPanicFailsTheComputationNotTheProcess(t *testing.T) {
	var g cache.Group[string, string]
	_, err := g.Do(context.Background(), "d", time.Second, func(context.Context) (string, error) {
		var m map[string]int
		m["x"]++ //nolint:staticcheck // SA5000: a nil map write, the runtime panic under test
		return "", nil
	})
	var pe *cache.PanicError
	if !errors.As(err, &pe) || len(pe.Stack) == 0 {
		t.Fatalf("err = %v, want a *PanicError with its stack", err)
	}
	v, err := g.Do(context.Background(), "d", time.Second, func(context.Context) (string, error) { return "next", nil })
	if err != nil || v != "next" {
		t.Fatalf("the next computation: %q, %v", v, err)
	}
}

func TestCallerThatHangsUpStopsWaitingButTheWorkGoesOn(t *testing.T) {
	var g cache.Group[string, string]
	first, cancelFirst := context.WithCancel(context.Background())
	later, cancelLater := context.WithCancel(context.Background())
	started, release := make(chan struct{}), make(chan struct{})
	sawCancel := make(chan error, 1)
	firstDone := make(chan string, 1)
	go func() {
		v, err := g.Do(first, "d", time.Minute, func(ctx context.Context) (string, error) {
			close(started)
			<-release
			sawCancel <- ctx.Err()
			return "x", nil
		})
		if err != nil {
			t.Errorf("the first caller, who did the work: %v", err)
		}
		firstDone <- v
	}()
	<-started
	laterErr := make(chan error, 1)
	go func() {
		_, err := g.Do(later, "d", time.Minute, func(context.Context) (string, error) {
			t.Error("a second computation ran while the first was in flight")
			return "", nil
		})
		laterErr <- err
	}()
	cancelLater()
	if err := <-laterErr; !errors.Is(err, context.Canceled) {
		t.Errorf("a later caller that hung up: err = %v, want context.Canceled at once", err)
	}
	cancelFirst()
	close(release)
	if err := <-sawCancel; err != nil {
		t.Fatalf("the shared work saw %v: a caller's hang-up cancelled it", err)
	}
	if v := <-firstDone; v != "x" {
		t.Errorf("the first caller got %q", v)
	}
}

func TestEntriesExpireAfterTheirOwnTTL(t *testing.T) {
	clock := testkit.NewClock(time.Now())
	c, _ := cache.New[string, string](10, clock.Now)
	c.Add("short", "deny", time.Millisecond)
	c.Add("long", "allow", time.Hour)
	c.Add("none", "allow", 0)
	clock.Advance(time.Millisecond)
	if _, _, ok := c.Get("short"); ok {
		t.Error("expired entry returned")
	}
	if _, _, ok := c.Get("none"); ok {
		t.Error("an entry with no TTL was kept")
	}
	v, exp, ok := c.Get("long")
	if !ok || v != "allow" || !exp.Equal(clock.Now().Add(time.Hour-time.Millisecond)) {
		t.Errorf("unexpired entry: %q %v %v", v, exp, ok)
	}
}

func TestEvictionsAreCountedOnAddAndResize(t *testing.T) {
	c, _ := cache.New[string, int](3, nil)
	for i, d := range []string{"a", "b", "c", "d"} {
		c.Add(d, i, time.Hour)
	}
	c.Add("d", 9, time.Hour) // replacing an entry evicts nothing
	if got := c.Evictions(); got != 1 {
		t.Fatalf("after 4 adds into 3 places: %d evictions, want 1", got)
	}
	if _, _, ok := c.Get("a"); ok {
		t.Error("the least recently used entry was kept")
	}
	c.Resize(1)
	if got, n := c.Evictions(), c.Len(); got != 3 || n != 1 {
		t.Errorf("after shrinking to 1: %d evictions and %d entries, want 3 and 1", got, n)
	}
	if v, _, ok := c.Get("d"); !ok || v != 9 {
		t.Error("shrinking evicted the most recently used entry")
	}
}

func TestBoundedEvictsByTotalSize(t *testing.T) {
	b := cache.NewBounded[string, []byte](10, func(v []byte) int64 { return int64(len(v)) })
	b.Add("a", make([]byte, 4))
	b.Add("b", make([]byte, 4))
	b.Get("a")
	b.Add("c", make([]byte, 4)) // 12 > 10: b, the least recently used, goes
	if _, ok := b.Get("b"); ok {
		t.Error("b should have been evicted")
	}
	if _, ok := b.Get("a"); !ok {
		t.Error("a was used recently and should stay")
	}
	if got := b.Bytes(); got != 8 {
		t.Errorf("Bytes = %d, want 8", got)
	}
	b.Add("huge", make([]byte, 11))
	if _, ok := b.Get("huge"); ok || b.Bytes() != 8 {
		t.Error("a value larger than the whole cache was kept")
	}
	b.Add("a", make([]byte, 2)) // replacing a value re-counts it
	if got := b.Bytes(); got != 6 {
		t.Errorf("after replacing a: Bytes = %d, want 6", got)
	}
}

func TestCallerGoneBeforeTheWorkStartsNothing(t *testing.T) {
	var g cache.Group[string, string]
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := g.Do(ctx, "d", time.Second, func(context.Context) (string, error) {
		t.Error("the work started for a caller who had gone")
		return "", nil
	})
	if !errors.Is(err, context.Canceled) {
		t.Errorf("err = %v, want context.Canceled", err)
	}
}
