package cache_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/authz-proxy/authz-proxy/internal/cache"
)

func TestConcurrentCallersComputeOnce(t *testing.T) {
	var g cache.Group[string]
	var calls atomic.Int32
	release := make(chan struct{})
	var wg sync.WaitGroup
	results := make(chan string, 20)
	for range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
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
	time.Sleep(10 * time.Millisecond) // let them queue; correctness does not depend on it
	close(release)
	wg.Wait()
	close(results)
	for v := range results {
		if v != "allow" {
			t.Fatalf("got %q", v)
		}
	}
	if n := calls.Load(); n > 20 || n < 1 {
		t.Errorf("computed %d times", n)
	}
}

func TestAPanicFailsTheComputationNotTheProcess(t *testing.T) {
	var g cache.Group[string]
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
	var g cache.Group[string]
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := g.Do(ctx, "d", time.Second, func(ctx context.Context) (string, error) {
			<-time.After(50 * time.Millisecond)
			done <- ctx.Err()
			return "x", nil
		})
		if !errors.Is(err, context.Canceled) {
			t.Errorf("caller err = %v", err)
		}
	}()
	time.Sleep(5 * time.Millisecond)
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("the shared work saw %v: one caller's hang-up cancelled it", err)
	}
}

func TestEntriesExpireAfterTheirOwnTTL(t *testing.T) {
	c, _ := cache.New[string, string](10, nil)
	c.Add("short", "deny", time.Millisecond)
	c.Add("long", "allow", time.Hour)
	c.Add("none", "allow", 0)
	time.Sleep(5 * time.Millisecond)
	if _, _, ok := c.Get("short"); ok {
		t.Error("expired entry returned")
	}
	if _, _, ok := c.Get("none"); ok {
		t.Error("an entry with no TTL was kept")
	}
	v, exp, ok := c.Get("long")
	if !ok || v != "allow" || time.Until(exp) < 59*time.Minute {
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
