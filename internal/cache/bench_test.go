package cache_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/authz-proxy/authz-proxy/internal/cache"
)

// outcomeKey is shaped like the judge's: generation, upstream, repository,
// digest and requirement.
type outcomeKey struct {
	generation, upstream, repository, digest, requirement string
}

// BenchmarkOutcomeCache measures a look-up of the cache of verified
// outcomes, on the path of every cached pull: a hit in a full cache, a
// miss, and an addition that evicts the least recently used entry.
func BenchmarkOutcomeCache(b *testing.B) {
	const entries = 10000
	c, err := cache.New[outcomeKey, bool](entries, time.Now)
	if err != nil {
		b.Fatal(err)
	}
	keys := make([]outcomeKey, entries)
	for i := range keys {
		keys[i] = outcomeKey{"g1", "lab", "team/app", fmt.Sprintf("sha256:%064x", i), "signature ci"}
		c.Add(keys[i], true, time.Hour)
	}
	b.Run("hit", func(b *testing.B) {
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			if _, _, ok := c.Get(keys[i%entries]); !ok {
				b.Fatal("miss")
			}
			i++
		}
	})
	b.Run("miss", func(b *testing.B) {
		b.ReportAllocs()
		k := outcomeKey{"g1", "lab", "team/app", "sha256:none", "signature ci"}
		for b.Loop() {
			if _, _, ok := c.Get(k); ok {
				b.Fatal("hit")
			}
		}
	})
	b.Run("add, evicting", func(b *testing.B) {
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			c.Add(outcomeKey{"g2", "lab", "team/app", fmt.Sprintf("sha256:%064x", i), "signature ci"}, true, time.Hour)
			i++
		}
	})
}
