package audit_test

import (
	"context"
	"io"
	"path/filepath"
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
				l.Write(context.Background(), rec)
			}
		})
	}
}
