package audit_test

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/authz-proxy/authz-proxy/internal/audit"
)

// FuzzVerify feeds verify decision logs as an auditor may be handed them:
// edited, damaged or not decision logs at all. It must never panic, and
// every problem it reports must point at a line of the file.
func FuzzVerify(f *testing.F) {
	key, pub := checkpointKey(f)
	path := filepath.Join(f.TempDir(), "seed.jsonl")
	l, err := audit.New(nil, path, audit.WithChain(), audit.WithCheckpoints(key, time.Hour))
	if err != nil {
		f.Fatal(err)
	}
	for i := range 6 {
		write(f, l, record(i))
		if i == 3 {
			if err := l.Checkpoint(); err != nil {
				f.Fatal(err)
			}
		}
	}
	l.Close()
	seed, err := os.ReadFile(path)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(seed)
	f.Add(bytes.ReplaceAll(seed, []byte(`"deny"`), []byte(`"allow"`)))
	f.Add(seed[:len(seed)/2])
	f.Add([]byte("{}\n{\"seq\":1,\"prev\":\"\"}\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		p := filepath.Join(t.TempDir(), "decisions.jsonl")
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		rep, err := audit.Verify([]string{p}, keys(pub))
		if err != nil {
			return
		}
		lines := bytes.Count(data, []byte("\n")) + 1
		for _, pr := range append(rep.Problems, rep.Notes...) {
			if pr.Line < 1 || pr.Line > lines {
				t.Fatalf("a finding at line %d of a %d-line file: %v", pr.Line, lines, pr)
			}
		}
		if bytes.Equal(data, seed) && !rep.OK() {
			t.Fatalf("the seed log as written has problems: %v", rep.Problems)
		}
	})
}
