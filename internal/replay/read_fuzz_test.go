package replay_test

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"github.com/authz-proxy/authz-proxy/internal/audit"
	"github.com/authz-proxy/authz-proxy/internal/replay"
)

// FuzzRead feeds replay the decision logs a user hands it: cut short,
// edited, mixed with a log collector's own lines. Read never fails on
// lines of ordinary length, and accounts for every line: each decision
// record is a pull or skipped, each other line ignored or counted as
// unreadable (the first one named), and every pull names an upstream
// repository and a digest that replay can fetch again.
func FuzzRead(f *testing.F) {
	node, prod := `{"addr":"10.2.0.7:4000"}`, `{"addr":"192.0.2.1:4000","identity":"prod-cluster"}`
	f.Add([]byte(strings.Join([]string{
		line("deny", "v1", d1, "r", node, "2026-01-01T00:00:00Z"),
		line("allow", "v1", d1, "r", prod, "2026-01-02T00:00:00Z"),
		line("allow", d2, d2, "r", node, "2026-01-02T00:00:00Z"),
		line("error", "v1", "", "", node, "2026-01-01T00:00:00Z"),
		`{"time":"2026-01-01T00:00:00Z","level":"INFO","msg":"serving"}`,
		"panic: not JSON",
	}, "\n")))
	f.Add([]byte(strings.Replace(line("allow", "v1", d1, "r", node, "2026-01-01T00:00:00Z"), `"image":"lab/app"`, `"image":"lab/"`, 1)))
	f.Add([]byte(line("allow", "v1", d1, "r", node, "2026-01-01T00:00:00Z") + "\r\n\n\n" + line("deny", "v1", d1, "r", node, "")))
	f.Fuzz(func(t *testing.T, data []byte) {
		l, err := replay.Read(bytes.NewReader(data), envs{})
		if err != nil {
			t.Fatalf("a decision log of %d bytes was refused: %v", len(data), err)
		}
		// What audit.Parse makes of each line, counted independently.
		var records, unreadable, firstUnreadable int
		lines := strings.Split(strings.TrimSuffix(string(data), "\n"), "\n")
		for i, ln := range lines {
			ln = strings.TrimSuffix(ln, "\r")
			if strings.TrimSpace(ln) == "" {
				continue
			}
			_, err := audit.Parse([]byte(ln))
			switch {
			case err == nil:
				records++
			case !errors.Is(err, audit.ErrNotDecision):
				if unreadable++; firstUnreadable == 0 {
					firstUnreadable = i + 1
				}
			}
		}
		if l.Records != records || l.Unreadable != unreadable || l.FirstUnreadable != firstUnreadable {
			t.Fatalf("read %d records and %d unreadable lines (first %d); the log has %d and %d (first %d)", l.Records, l.Unreadable, l.FirstUnreadable, records, unreadable, firstUnreadable)
		}
		pulled := 0
		seen := map[string]bool{}
		for _, p := range l.Pulls {
			pulled += p.Pulls
			if p.Upstream == "" || p.Repository == "" || p.Image != p.Upstream+"/"+p.Repository || p.Digest == "" {
				t.Fatalf("a pull replay cannot fetch again: %+v", *p)
			}
			if p.Was.Decision == audit.Error || p.Pulls < 1 {
				t.Fatalf("a pull of an error, or of no record: %+v", *p)
			}
			key := strings.Join([]string{p.Upstream, p.Repository, p.Digest, p.Tag, p.Environment}, "\x00")
			if seen[key] {
				t.Fatalf("one pull listed twice: %+v", *p)
			}
			seen[key] = true
		}
		if l.Skipped+pulled != l.Records {
			t.Fatalf("%d records, but %d skipped and %d in pulls", l.Records, l.Skipped, pulled)
		}
	})
}
