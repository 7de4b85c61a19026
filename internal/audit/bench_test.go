package audit_test

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/authz-proxy/authz-proxy/internal/audit"
)

// BenchmarkWrite measures one decision record written to a file and to
// standard output, without and with the hash chain (and a signed
// checkpoint every second, as bench/run.sh runs it).
func BenchmarkWrite(b *testing.B) {
	key, _ := checkpointKey(b)
	rec := record(1)
	rec.Reasons = []string{"signed by attestor ci (key sha256:8dad5d038e0d, tag sha256-957c2411d94cc9f263aa69a8e5f9aa58e7315ec5e379fc939c2401f357b366a5.sig)"}
	rec.VerifiedBy = []audit.Verification{{Attestor: "ci", KeyID: "sha256:8dad5d038e0dd3b8b416ae00a912851a1106ebc28ed18f649392e1e8db53f4c1", Source: "tag sha256-957c2411d94cc9f263aa69a8e5f9aa58e7315ec5e379fc939c2401f357b366a5.sig"}}
	for _, c := range []struct {
		name string
		opts []audit.Option
	}{
		{"chain off", nil},
		{"chain on", []audit.Option{audit.WithChain(), audit.WithCheckpoints(key, time.Second)}},
	} {
		b.Run(c.name, func(b *testing.B) {
			l, err := audit.New(io.Discard, filepath.Join(b.TempDir(), "d.jsonl"), c.opts...)
			if err != nil {
				b.Fatal(err)
			}
			defer l.Close()
			b.ReportAllocs()
			for b.Loop() {
				write(b, l, rec)
			}
		})
	}
}

// BenchmarkVerify measures verify over a signed log of 10,000 records.
func BenchmarkVerify(b *testing.B) {
	key, pub := checkpointKey(b)
	path := filepath.Join(b.TempDir(), "d.jsonl")
	l, err := audit.New(nil, path, audit.WithChain(), audit.WithCheckpoints(key, time.Hour))
	if err != nil {
		b.Fatal(err)
	}
	const n = 10_000
	for i := range n {
		write(b, l, record(i))
		if i%1000 == 0 {
			if err := l.Checkpoint(); err != nil {
				b.Fatal(err)
			}
		}
	}
	l.Close()
	for b.Loop() {
		rep, err := audit.Verify([]string{path}, keys(pub))
		if err != nil || !rep.OK() {
			b.Fatal(err, rep.Problems)
		}
	}
	b.ReportMetric(float64(n*b.N)/b.Elapsed().Seconds(), "lines/s")
}

// BenchmarkVerifyMillionLines measures verify over a signed log of
// 1,000,000 lines as a proxy writes them (decision records of an allow
// with its evidence, about 800 bytes each, a checkpoint every 10,000
// lines, a log id), in one file. The README states the time on one core
// (go test -run '^$' -bench VerifyMillionLines -benchtime 3x -cpu 1).
func BenchmarkVerifyMillionLines(b *testing.B) {
	key, pub := checkpointKey(b)
	path := filepath.Join(b.TempDir(), "d.jsonl")
	l, err := audit.New(nil, path, audit.WithChain(), audit.WithCheckpoints(key, time.Hour), audit.WithLogID("authz-proxy-7d9f8c6b5-x2x9q-8dad5d03"))
	if err != nil {
		b.Fatal(err)
	}
	rec := record(1)
	rec.Reasons = []string{"signed by attestor ci (key sha256:8dad5d038e0d, tag sha256-957c2411d94cc9f263aa69a8e5f9aa58e7315ec5e379fc939c2401f357b366a5.sig)"}
	rec.VerifiedBy = []audit.Verification{{Attestor: "ci", KeyID: "sha256:8dad5d038e0dd3b8b416ae00a912851a1106ebc28ed18f649392e1e8db53f4c1", Source: "tag sha256-957c2411d94cc9f263aa69a8e5f9aa58e7315ec5e379fc939c2401f357b366a5.sig"}}
	rec.MediaType = "application/vnd.oci.image.manifest.v1+json"
	const n = 1_000_000
	for i := 2; i < n; i++ { // the start and shutdown checkpoints make n
		if i%10_000 == 0 {
			if err := l.Checkpoint(); err != nil {
				b.Fatal(err)
			}
			continue
		}
		rec.Digest = fmt.Sprintf("sha256:%064x", i)
		write(b, l, rec)
	}
	if err := l.Close(); err != nil {
		b.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(fi.Size())
	b.ResetTimer()
	for b.Loop() {
		rep, err := audit.Verify([]string{path}, keys(pub))
		if err != nil || !rep.OK() || rep.Lines != n {
			b.Fatal(err, rep.Problems, rep.Lines)
		}
	}
	b.ReportMetric(float64(n*b.N)/b.Elapsed().Seconds(), "lines/s")
}

// BenchmarkDecisionLogAtARate writes decisions at 1,000 and 20,000 a
// second for two seconds, from 16 requests at once, to a chained file and
// to standard output (a file here) through the queue, as serve does. It
// reports the log's CPU as a share of one core and the slowest and 99th
// percentile wait of a request (its Write): with the queue no request waits
// on the disk; and the writes to standard output per line (the writer's
// batches). bench/run.sh prints these in its scaling table.
func BenchmarkDecisionLogAtARate(b *testing.B) {
	rec := record(1)
	rec.Reasons = []string{"signed by attestor ci (key sha256:8dad5d038e0d, tag sha256-957c2411d94cc9f263aa69a8e5f9aa58e7315ec5e379fc939c2401f357b366a5.sig)"}
	rec.VerifiedBy = []audit.Verification{{Attestor: "ci", KeyID: "sha256:8dad5d038e0dd3b8b416ae00a912851a1106ebc28ed18f649392e1e8db53f4c1", Source: "tag sha256-957c2411d94cc9f263aa69a8e5f9aa58e7315ec5e379fc939c2401f357b366a5.sig"}}
	for _, rate := range []int{1000, 20000} {
		b.Run(fmt.Sprintf("decisions=%d/s", rate), func(b *testing.B) {
			dir := b.TempDir()
			stdout, err := os.Create(filepath.Join(dir, "stdout"))
			if err != nil {
				b.Fatal(err)
			}
			defer stdout.Close()
			out := &countingWriter{w: stdout}
			l, err := audit.New(out, filepath.Join(dir, "d.jsonl"), audit.WithChain(), audit.WithQueue(audit.DefaultQueue))
			if err != nil {
				b.Fatal(err)
			}
			defer l.Close()
			const workers, run = 16, 2 * time.Second
			var waits []time.Duration
			for b.Loop() {
				waits = waits[:0]
				out.writes.Store(0)
				cpu0 := cpuTime(b)
				start := time.Now()
				per := make([][]time.Duration, workers)
				var wg sync.WaitGroup
				for w := range workers {
					wg.Go(func() {
						// Each request at its time: rate/workers a second.
						every := time.Duration(workers) * time.Second / time.Duration(rate)
						for next := start.Add(time.Duration(w) * every / workers); next.Before(start.Add(run)); next = next.Add(every) {
							time.Sleep(time.Until(next))
							t := time.Now()
							write(b, l, rec)
							per[w] = append(per[w], time.Since(t))
						}
					})
				}
				wg.Wait()
				cpu := cpuTime(b) - cpu0
				for _, p := range per {
					waits = append(waits, p...)
				}
				slices.Sort(waits)
				b.ReportMetric(100*cpu.Seconds()/time.Since(start).Seconds(), "%cpu")
				b.ReportMetric(float64(waits[len(waits)*99/100].Microseconds()), "p99-µs")
				b.ReportMetric(float64(waits[len(waits)-1].Microseconds()), "max-µs")
				b.ReportMetric(float64(cpu.Microseconds())/float64(len(waits)), "cpu-µs/line")
				b.ReportMetric(float64(out.writes.Load())/float64(len(waits)), "writes/line")
			}
		})
	}
}

// countingWriter counts the writes to w.
type countingWriter struct {
	w      io.Writer
	writes atomic.Int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	c.writes.Add(1)
	return c.w.Write(p)
}

// cpuTime is the CPU this process spent so far, user and system.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
