package audit_test

import (
	"bufio"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/authz-proxy/authz-proxy/internal/audit"
)

func TestConcurrentDecisionsAreWholeJSONLinesInTheFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "decisions.jsonl")
	l, err := audit.New(nil, path)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for i := range 200 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			l.Write(context.Background(), audit.Record{Decision: audit.Deny, Image: "lab/app", Digest: "sha256:x", Reasons: []string{"no signature", string(rune('a' + i%26))}})
		}()
	}
	wg.Wait()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	n := 0
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var rec map[string]any
		if err := json.Unmarshal(sc.Bytes(), &rec); err != nil {
			t.Fatalf("line %d is not JSON: %s", n+1, sc.Text())
		}
		for _, field := range []string{"time", "decision", "image", "reference", "digest", "mediaType", "upstream", "rule", "enforcement", "reasons", "verifiedBy", "cached", "client", "durationMs"} {
			if _, ok := rec[field]; !ok {
				t.Fatalf("line %d lacks %q: %s", n+1, field, sc.Text())
			}
		}
		n++
	}
	if n != 200 {
		t.Errorf("%d lines, want 200", n)
	}
}
