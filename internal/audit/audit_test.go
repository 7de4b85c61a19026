package audit_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/authz-proxy/authz-proxy/internal/audit"
)

func TestConcurrentDecisionsAreWholeJSONLinesInTheFile(t *testing.T) {
	for _, tt := range []struct {
		name string
		opts []audit.Option
	}{
		{"written by each request", []audit.Option{audit.WithChain()}},
		{"written by the queue's writer", []audit.Option{audit.WithQueue(audit.DefaultQueue), audit.WithChain()}},
		{"a queue of 4 lines: requests wait for room, no line is lost, the chain holds", []audit.Option{audit.WithQueue(4), audit.WithChain()}},
	} {
		t.Run(tt.name, func(t *testing.T) { concurrentDecisions(t, tt.opts...) })
	}
}

func concurrentDecisions(t *testing.T, opts ...audit.Option) {
	path := filepath.Join(t.TempDir(), "decisions.jsonl")
	var obs observer
	l, err := audit.New(nil, path, append(opts, audit.WithObserver(&obs))...)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for i := range 200 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := l.Write(context.Background(), audit.Record{Decision: audit.Deny, Image: "lab/app", Digest: "sha256:x", Reasons: []string{"no signature", string(rune('a' + i%26))}}); err != nil {
				t.Error(err)
			}
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
		if rec["msg"] == "checkpoint" {
			continue
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
	rep, err := audit.Verify([]string{path}, nil)
	if err != nil || !rep.OK() {
		t.Errorf("audit verify: %v %+v", err, rep)
	}
}

// wholeLines returns the records in the file at path, failing on any line
// that is not one complete JSON object.
func wholeLines(t *testing.T, path string) []audit.Record {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var recs []audit.Record
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		r, err := audit.Parse(sc.Bytes())
		if errors.Is(err, audit.ErrNotDecision) && strings.Contains(sc.Text(), `"msg":"checkpoint"`) {
			continue
		}
		if err != nil {
			t.Fatalf("%s: a line is not a whole decision record (%v): %q", path, err, sc.Text())
		}
		recs = append(recs, r)
	}
	return recs
}

func TestReopenAfterLogrotateLosesAndSplitsNoRecordAndKeepsTheChain(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "decisions.jsonl")
	l, err := audit.New(nil, path, audit.WithChain())
	if err != nil {
		t.Fatal(err)
	}
	const writers, each = 8, 40
	var before, all sync.WaitGroup
	rotating, reopened := make(chan struct{}), make(chan struct{})
	write := func(n int) {
		for range n {
			if err := l.Write(context.Background(), audit.Record{Decision: audit.Allow, Image: "lab/app", Digest: "sha256:x", Reference: "v1"}); err != nil {
				t.Error(err)
			}
		}
	}
	for range writers {
		before.Add(1)
		all.Add(1)
		go func() {
			defer all.Done()
			write(each) // surely into the old file
			before.Done()
			<-rotating
			write(each) // while the file is renamed and reopened
			<-reopened
			write(each) // surely into the new file
		}()
	}
	before.Wait()
	close(rotating)
	if err := os.Rename(path, path+".1"); err != nil { // what logrotate does
		t.Fatal(err)
	}
	if err := l.Reopen(); err != nil {
		t.Fatal(err)
	}
	close(reopened)
	all.Wait()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	old, cur := wholeLines(t, path+".1"), wholeLines(t, path)
	if len(old)+len(cur) != 3*writers*each {
		t.Errorf("%d records in the rotated file and %d in the new one, want %d in all", len(old), len(cur), 3*writers*each)
	}
	if len(old) < writers*each || len(cur) < writers*each {
		t.Errorf("rotated file has %d records, new file %d; want at least %d in each", len(old), len(cur), writers*each)
	}
	rep, err := audit.Verify([]string{path + ".1", path}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !rep.OK() || rep.Files[0].Ends != audit.CheckpointReopen || !rep.Closed {
		t.Errorf("the chain across the rotation: files %+v, closed %v, problems %v", rep.Files, rep.Closed, rep.Problems)
	}
}

func TestRecordsAfterCloseGoToStdoutOnly(t *testing.T) {
	var stdout strings.Builder
	path := filepath.Join(t.TempDir(), "decisions.jsonl")
	l, err := audit.New(&stdout, path)
	if err != nil {
		t.Fatal(err)
	}
	write(t, l, audit.Record{Decision: audit.Allow, Image: "lab/app"})
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if err := l.Write(context.Background(), audit.Record{Decision: audit.Deny, Image: "lab/late"}); err != nil {
		t.Errorf("a record written after Close, to stdout: %v", err)
	}
	if n := len(wholeLines(t, path)); n != 1 {
		t.Errorf("the file has %d records, want the 1 written before Close", n)
	}
	if !strings.Contains(stdout.String(), "lab/late") {
		t.Error("a record written after Close is missing from stdout")
	}
}

func TestParseReadsBackWhatWriteWrote(t *testing.T) {
	var buf strings.Builder
	l, _ := audit.New(&buf, "")
	want := audit.Record{
		Decision: audit.Breakglass, Image: "lab/app", Reference: "v1", Digest: "sha256:abc", MediaType: "application/vnd.oci.image.manifest.v1+json",
		Upstream: "lab", Rule: "breakglass", Enforcement: "enforce", Reasons: []string{"INC-1"},
		VerifiedBy: []audit.Verification{{Attestor: "ci", KeyID: "sha256:k", Source: "tag"}}, Cached: true,
		Client: audit.Client{Addr: "10.1.2.3:4567", Identity: "prod-cluster", Environment: "prod"}, Duration: 1500 * time.Microsecond,
		Source: audit.SourceStale,
	}
	write(t, l, want)
	// source is the last field of a decision, after those of the first
	// version: the lines before it kept their bytes.
	if line := buf.String(); !strings.Contains(line, `"durationMs":1.5,"source":"stale"}`) {
		t.Errorf("source is not the last field: %s", line)
	}
	got, err := audit.Parse([]byte(buf.String()))
	if err != nil {
		t.Fatal(err)
	}
	if got.Time.IsZero() {
		t.Error("time not read")
	}
	got.Time = time.Time{}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("read back\n%+v\nwant\n%+v", got, want)
	}
	if _, err := audit.Parse([]byte(`{"time":"2026-01-01T00:00:00Z","level":"INFO","msg":"serving"}`)); !errors.Is(err, audit.ErrNotDecision) {
		t.Errorf("an operational line parsed as %v", err)
	}
}
