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

func key(d string) cache.Key {
	return cache.Key{Generation: "g1", Upstream: "lab", Repository: "app", Digest: d}
}

func TestConcurrentCallersComputeOnce(t *testing.T) {
	c, _ := cache.New[string](10)
	var calls atomic.Int32
	release := make(chan struct{})
	var wg sync.WaitGroup
	results := make(chan string, 20)
	for range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			v, _, err := c.Do(context.Background(), key("d"), time.Second, func(context.Context) (string, time.Duration, error) {
				calls.Add(1)
				<-release
				return "allow", time.Minute, nil
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
	if n := calls.Load(); n != 1 {
		t.Errorf("computed %d times, want 1", n)
	}
	if _, cached, _ := c.Do(context.Background(), key("d"), time.Second, nil); !cached {
		t.Error("the next call did not hit the cache")
	}
}

func TestErrorsAreNotCached(t *testing.T) {
	c, _ := cache.New[string](10)
	boom := errors.New("upstream down")
	if _, _, err := c.Do(context.Background(), key("d"), time.Second, func(context.Context) (string, time.Duration, error) {
		return "", 0, boom
	}); !errors.Is(err, boom) {
		t.Fatalf("err = %v", err)
	}
	if _, ok := c.Get(key("d")); ok {
		t.Fatal("an error was cached")
	}
}

func TestEntriesExpireAfterTheirOwnTTL(t *testing.T) {
	c, _ := cache.New[string](10)
	c.Add(key("short"), "deny", time.Millisecond)
	c.Add(key("long"), "allow", time.Hour)
	time.Sleep(5 * time.Millisecond)
	if _, ok := c.Get(key("short")); ok {
		t.Error("expired entry returned")
	}
	if v, ok := c.Get(key("long")); !ok || v != "allow" {
		t.Error("unexpired entry lost")
	}
}

func TestGenerationSeparatesVerdicts(t *testing.T) {
	c, _ := cache.New[string](10)
	c.Add(key("d"), "allow", time.Hour)
	k := key("d")
	k.Generation = "g2"
	if _, ok := c.Get(k); ok {
		t.Error("a verdict of policy generation g1 was returned for g2")
	}
}

func TestLeastRecentlyUsedIsEvicted(t *testing.T) {
	c, _ := cache.New[int](2)
	c.Add(key("a"), 1, time.Hour)
	c.Add(key("b"), 2, time.Hour)
	c.Get(key("a"))
	c.Add(key("c"), 3, time.Hour)
	if _, ok := c.Get(key("b")); ok {
		t.Error("b should have been evicted")
	}
	if c.Len() != 2 {
		t.Errorf("Len = %d", c.Len())
	}
}

func TestCallerThatGivesUpDoesNotCancelTheComputation(t *testing.T) {
	c, _ := cache.New[string](10)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	started := make(chan struct{})
	go func() {
		_, _, err := c.Do(ctx, key("d"), time.Second, func(cctx context.Context) (string, time.Duration, error) {
			close(started)
			time.Sleep(20 * time.Millisecond)
			return "allow", time.Minute, cctx.Err()
		})
		done <- err
	}()
	<-started
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("the impatient caller got %v", err)
	}
	deadline := time.Now().Add(time.Second)
	for time.Now().Before(deadline) {
		if v, ok := c.Get(key("d")); ok && v == "allow" {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatal("the computation was cancelled with its first caller")
}

func TestEnvironmentSeparatesVerdicts(t *testing.T) {
	c, _ := cache.New[string](10)
	c.Add(key("d"), "deny", time.Hour)
	k := key("d")
	k.Environment = "dev"
	if _, ok := c.Get(k); ok {
		t.Error("a verdict for clients of no environment was returned for clients of dev")
	}
}

func TestEvictionsAreCountedOnAddAndResize(t *testing.T) {
	c, _ := cache.New[int](3)
	for i, d := range []string{"a", "b", "c", "d"} {
		c.Add(key(d), i, time.Hour)
	}
	c.Add(key("d"), 9, time.Hour) // replacing an entry evicts nothing
	if got := c.Evictions(); got != 1 {
		t.Fatalf("after 4 adds into 3 places: %d evictions, want 1", got)
	}
	c.Resize(1)
	if got, n := c.Evictions(), c.Len(); got != 3 || n != 1 {
		t.Errorf("after shrinking to 1: %d evictions and %d entries, want 3 and 1", got, n)
	}
	if v, ok := c.Get(key("d")); !ok || v != 9 {
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
