package cache_test

import (
	"context"
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/authz-proxy/authz-proxy/internal/audit"
	"github.com/authz-proxy/authz-proxy/internal/cache"
	"github.com/authz-proxy/authz-proxy/internal/policy"
)

// verdictOf is a verdict of the size the proxy caches for a signed image.
func verdictOf(i int) policy.Verdict {
	return policy.Verdict{
		Allowed: true, Rule: "acme", Enforcement: "enforce",
		Reasons: []string{fmt.Sprintf("signed by attestor ci (key sha256:4c319b33a15e, tag sha256-%064d.sig)", i)},
		VerifiedBy: []audit.Verification{{Attestor: "ci", KeyID: "sha256:4c319b33a15e84f9be95986bc98e373b3ad9ff85db5a6ad3e968721811c20c5d",
			Source: fmt.Sprintf("tag sha256-%064d.sig", i)}},
	}
}

func digestKey(i int) cache.Key {
	return cache.Key{Generation: "418760ea594bb43e", Upstream: "ghcr.io", Repository: "acme/app", Digest: fmt.Sprintf("sha256:%064d", i)}
}

func BenchmarkVerdictCacheHit(b *testing.B) {
	c, _ := cache.New[policy.Verdict](10000)
	keys := make([]cache.Key, 10000)
	for i := range keys {
		keys[i] = digestKey(i)
		c.Add(keys[i], verdictOf(i), time.Hour)
	}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			if _, ok := c.Get(keys[i%len(keys)]); !ok {
				b.Fatal("miss")
			}
			i++
		}
	})
}

func BenchmarkVerdictCacheDoHit(b *testing.B) {
	c, _ := cache.New[policy.Verdict](10)
	k := digestKey(1)
	c.Add(k, verdictOf(1), time.Hour)
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, cached, _ := c.Do(ctx, k, time.Second, nil); !cached {
			b.Fatal("miss")
		}
	}
}

// BenchmarkHeapOf10000Verdicts reports the heap that 10,000 cached
// verdicts of signed images hold (metric MiB/10k-verdicts).
func BenchmarkHeapOf10000Verdicts(b *testing.B) {
	for b.Loop() {
		runtime.GC()
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		c, _ := cache.New[policy.Verdict](10000)
		for i := range 10000 {
			c.Add(digestKey(i), verdictOf(i), time.Hour)
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/(1<<20), "MiB/10k-verdicts")
		runtime.KeepAlive(c)
	}
}
