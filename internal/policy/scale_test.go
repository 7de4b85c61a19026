package policy

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"math/rand/v2"
	"runtime"
	"testing"

	"github.com/authz-proxy/authz-proxy/internal/audit"
)

// BenchmarkCachedVerdicts holds 1,000 and 1,000,000 verified outcomes in
// a judge's cache, each as a cosign key signature leaves it (its reason
// and its verification, naming the digest), and reports the memory one
// entry takes (the heap after a collection, over the entries) and the time
// a hit takes among them. bench/run.sh prints these in its scaling table.
func BenchmarkCachedVerdicts(b *testing.B) {
	const keyID = "sha256:8dad5d038e0dd3b8b416ae00a912851a1106ebc28ed18f649392e1e8db53f4c1"
	const requirement = "signature attestors=ci threshold=1"
	for _, n := range []int{1000, 1000000} {
		b.Run(fmt.Sprintf("entries=%d", n), func(b *testing.B) {
			before := heap()
			j, err := NewJudge(n, nil)
			if err != nil {
				b.Fatal(err)
			}
			key := func(i int) outcomeKey {
				sum := sha256.Sum256(fmt.Appendf(nil, "%d", i))
				return outcomeKey{generation: "gen-1", upstream: "lab", repository: "bench/app", digest: "sha256:" + hex.EncodeToString(sum[:]), requirement: requirement}
			}
			for i := range n {
				k := key(i)
				source := "tag sha256-" + k.digest[7:] + ".sig"
				j.outcomes.Add(k, outcome{
					ok:        true,
					by:        []audit.Verification{{Attestor: "ci", KeyID: keyID, Source: source}},
					reasons:   []string{fmt.Sprintf("signed by attestor ci (key %s, %s)", keyID[:19], source)},
					mediaType: "application/vnd.oci.image.manifest.v1+json",
				}, 1<<40)
			}
			perEntry := float64(heap()-before) / float64(n)
			// The keys of the hits are built before: a request has its own.
			r := rand.New(rand.NewPCG(1, 2))
			probe := make([]outcomeKey, 4096)
			for i := range probe {
				probe[i] = key(r.IntN(n))
			}
			b.ResetTimer()
			i := 0
			for b.Loop() {
				if _, _, ok := j.outcomes.Get(probe[i%len(probe)]); !ok {
					b.Fatal("a miss")
				}
				i++
			}
			b.ReportMetric(perEntry, "B/entry")
			runtime.KeepAlive(j)
		})
	}
}

// heap is the live heap after a collection.
func heap() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}
