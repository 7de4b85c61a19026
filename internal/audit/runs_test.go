package audit_test

import (
	"crypto"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/authz-proxy/authz-proxy/internal/audit"
)

// open starts a process's decision log at path, signed with key.
func open(t *testing.T, path string, key crypto.Signer, opts ...audit.Option) *audit.Log {
	t.Helper()
	l, err := audit.New(nil, path, append([]audit.Option{audit.WithChain(), audit.WithCheckpoints(key, time.Hour)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// run is one process writing recs to the decision log at path and
// stopping cleanly.
func run(t *testing.T, path string, key crypto.Signer, recs ...audit.Record) {
	t.Helper()
	l := open(t, path, key)
	write(t, l, recs...)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
}

func breakglass(i int) audit.Record {
	r := record(i)
	r.Decision, r.Rule, r.Reasons = audit.Breakglass, "breakglass", []string{"breakglass lab/app until 2027-01-31T00:00:00Z: INC-1"}
	return r
}

// threeRuns writes what three runs of the proxy write when logrotate moves
// the file away while it is stopped: each run on a file of its own (start,
// an allow, a breakglass, an allow, shutdown), as decisions.jsonl.1, .2 and
// .3.
func threeRuns(t *testing.T, key crypto.Signer) []string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "decisions.jsonl")
	var files []string
	for i := 1; i <= 3; i++ {
		run(t, path, key, record(10*i+1), breakglass(10*i+2), record(10*i+4))
		files = append(files, fmt.Sprintf("%s.%d", path, i))
		if err := os.Rename(path, files[i-1]); err != nil {
			t.Fatal(err)
		}
	}
	return files
}

// forge rewrites ls as someone who can write the files but does not hold
// the key would: lines dropped, seq and prev recomputed from the first
// line's, signatures stripped.
func forge(t *testing.T, ls []string, drop func(line string) bool) []string {
	t.Helper()
	var first struct {
		Seq  uint64 `json:"seq"`
		Prev string `json:"prev"`
	}
	if err := json.Unmarshal([]byte(ls[0]), &first); err != nil {
		t.Fatal(err)
	}
	seq, prev := first.Seq, first.Prev
	var out []string
	for _, l := range ls {
		if drop(l) {
			continue
		}
		body := strings.TrimSuffix(l, "\n")
		line := body[:strings.Index(body, `,"seq":`)] + fmt.Sprintf(`,"seq":%d,"prev":%q}`, seq, prev)
		out = append(out, line+"\n")
		seq, prev = seq+1, hashOf(line)
	}
	return out
}

// TestVerifyFailsWhereARunWasCutRewrittenOrLeftOut is what someone who can
// write the log files but does not hold the checkpoint key can do between
// runs (a log-shipping sidecar, whoever edits the archive): verify --key
// fails at the line where it shows, saying what is missing. Each case is
// verified without a key too: alone is the kind of problem the chain alone
// finds first, "" when it finds none (the README's tamper table says so).
func TestVerifyFailsWhereARunWasCutRewrittenOrLeftOut(t *testing.T) {
	key, pub := checkpointKey(t)
	for _, c := range []struct {
		name string
		// build returns the files to verify and the first problem's file
		// (an index) and line.
		build             func(t *testing.T) (files []string, file, line int)
		kind, says, alone string
	}{
		{"a tail cut before a restart", func(t *testing.T) ([]string, int, int) {
			path := filepath.Join(t.TempDir(), "decisions.jsonl")
			run(t, path, key, record(1), breakglass(2), breakglass(3))
			writeLines(t, path, lines(t, path)[:2]) // from the first breakglass line to the end
			run(t, path, key, record(4))
			if start := lines(t, path)[2]; !strings.Contains(start, `"previous":"unclean","found":{"checkpoint":{"seq":5,"hash":"sha256:`) ||
				!strings.Contains(start, `"why":"the file does not hold the proxy's last checkpoint (seq 5, shutdown): it ends at seq 2`) {
				t.Errorf("the start after the cut does not say so: %s", start)
			}
			return []string{path}, 0, 3
		}, audit.ProblemRemoved, "the proxy's last checkpoint before this start was seq 5 (sha256:", audit.ProblemRemoved},
		{"a whole run rewritten, its checkpoints' signatures stripped", func(t *testing.T) ([]string, int, int) {
			files := threeRuns(t, key)
			forged := strings.TrimSuffix(files[1], ".2") + ".2x"
			writeLines(t, forged, forge(t, lines(t, files[1]), func(l string) bool { return strings.Contains(l, `"decision":"breakglass"`) }))
			return []string{files[0], forged, files[2]}, 1, 1
		}, audit.ProblemSignature, "the checkpoint is not signed, but --key was given", audit.ProblemRemoved},
		{"a whole run left out", func(t *testing.T) ([]string, int, int) {
			files := threeRuns(t, key)
			return []string{files[0], files[2]}, 1, 1
		}, audit.ProblemRemoved, "the run before ended with its shutdown checkpoint seq 10 (sha256:", audit.ProblemRemoved},
		{"a start whose previous names a checkpoint absent from the files, re-linked over the run left out", func(t *testing.T) ([]string, int, int) {
			files := threeRuns(t, key)
			last := lines(t, files[0])[4]
			third := lines(t, files[2])
			third[0] = strings.Replace(third[0], `"seq":11,`, `"seq":6,`, 1)
			third[0] = third[0][:strings.Index(third[0], `,"prev":"`)] + fmt.Sprintf(`,"prev":%q`, hashOf(strings.TrimSuffix(last, "\n"))) + third[0][strings.Index(third[0], `,"signature":`):]
			writeLines(t, files[2], third)
			return []string{files[0], files[2]}, 1, 1
		}, audit.ProblemSignature, "does not verify", audit.ProblemBroken},
		{"the end of a run's file cut, the next run on a new file", func(t *testing.T) ([]string, int, int) {
			files := threeRuns(t, key)
			writeLines(t, files[0], lines(t, files[0])[:3])
			return files, 0, 3
		}, audit.ProblemTruncated, "ends here without the checkpoint the proxy writes when it leaves a file", audit.ProblemTruncated},
		{"a restart after its record of the last checkpoint was deleted", func(t *testing.T) ([]string, int, int) {
			path := filepath.Join(t.TempDir(), "decisions.jsonl")
			run(t, path, key, record(1), breakglass(2), breakglass(3))
			writeLines(t, path, lines(t, path)[:2])
			if err := os.Remove(filepath.Join(filepath.Dir(path), ".decisions.jsonl.checkpoint")); err != nil {
				t.Fatal(err)
			}
			run(t, path, key, record(4))
			return []string{path}, 0, 3
		}, audit.ProblemBroken, "with no record of its last checkpoint", audit.ProblemBroken},
		{"the last run rewritten from a breakglass line to its end, hashes recomputed", func(t *testing.T) ([]string, int, int) {
			files := threeRuns(t, key)
			ls := lines(t, files[2]) // start, allow, breakglass, allow, shutdown
			writeLines(t, files[2], append(ls[:2:2], forge(t, ls[2:], func(l string) bool { return strings.Contains(l, `"decision":"breakglass"`) })...))
			return files, 2, 4
		}, audit.ProblemSignature, "the checkpoint is not signed, but --key was given", ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			files, file, line := c.build(t)
			rep, err := audit.Verify(files, keys(pub))
			if err != nil {
				t.Fatal(err)
			}
			if rep.OK() {
				t.Fatalf("verify found nothing; want %s at %s:%d", c.kind, files[file], line)
			}
			if first := rep.Problems[0]; first.File != files[file] || first.Line != line || first.Kind != c.kind || !strings.Contains(first.Message, c.says) {
				t.Errorf("first problem %v; want %s at %s:%d saying %q; all:\n%s", first, c.kind, files[file], line, c.says, findings(rep.Problems))
			}
			if !strings.HasPrefix(rep.Problems[0].String(), fmt.Sprintf("%s:%d: %s: ", files[file], line, c.kind)) {
				t.Errorf("the problem reads %q; want it to begin with the file and the line", rep.Problems[0])
			}
			alone, err := audit.Verify(files, nil)
			if err != nil {
				t.Fatal(err)
			}
			switch {
			case c.alone == "" && !alone.OK():
				t.Errorf("without a key: problems:\n%swant none (the chain alone cannot tell)", findings(alone.Problems))
			case c.alone != "" && (alone.OK() || alone.Problems[0].Kind != c.alone || !slices.Contains(files, alone.Problems[0].File) || alone.Problems[0].Line < 1):
				t.Errorf("without a key: problems:\n%swant %s first, at a file and line", findings(alone.Problems), c.alone)
			}
		})
	}
}

func TestRunsOnNewFilesAfterLogrotateContinueOneChainThatVerifies(t *testing.T) {
	key, pub := checkpointKey(t)
	files := threeRuns(t, key)
	second := lines(t, files[1])[0]
	if !strings.Contains(second, `"reason":"start","previous":{"seq":5,"hash":"`+hashOf(strings.TrimSuffix(lines(t, files[0])[4], "\n"))+`"}`) ||
		!strings.Contains(second, `"seq":6,"prev":"sha256:`) {
		t.Errorf("the second run's start does not continue the first run's chain from its shutdown checkpoint: %s", second)
	}
	rep, err := audit.Verify([]string{files[2], files[0], files[1]}, keys(pub))
	if err != nil {
		t.Fatal(err)
	}
	if !rep.OK() || len(rep.Notes) != 0 || !rep.Closed || rep.Tail != 0 || len(rep.Logs) != 1 || rep.Logs[0].Starts != 3 || rep.Logs[0].LastSeq != 15 {
		t.Errorf("problems:\n%snotes:\n%slogs %+v; want none, one log of 3 starts, seq 1-15, closed", findings(rep.Problems), findings(rep.Notes), rep.Logs)
	}
}

func TestVerifyAcceptsADeclaredUncleanStartAndCountsWhatNoCheckpointVouchedFor(t *testing.T) {
	key, pub := checkpointKey(t)
	path := filepath.Join(t.TempDir(), "decisions.jsonl")
	killed := open(t, path, key) // killed: never closed
	write(t, killed, record(1), record(2), record(3))
	if err := killed.Checkpoint(); err != nil {
		t.Fatal(err)
	}
	write(t, killed, record(4), record(5))
	restarted := open(t, path, key)
	if !strings.Contains(restarted.Unclean(), "2 line(s) follow its last checkpoint (seq 5, interval)") {
		t.Errorf("Unclean() = %q; want the 2 lines after the interval checkpoint", restarted.Unclean())
	}
	write(t, restarted, record(6))
	if err := restarted.Close(); err != nil {
		t.Fatal(err)
	}
	rep, err := audit.Verify([]string{path}, keys(pub))
	if err != nil {
		t.Fatal(err)
	}
	if !rep.OK() || len(rep.Notes) != 1 || !strings.Contains(rep.Notes[0].String(), "decisions.jsonl:8: the proxy restarted here after a stop without its shutdown checkpoint") {
		t.Fatalf("problems:\n%snotes:\n%swant none, and a note of the restart at line 8", findings(rep.Problems), findings(rep.Notes))
	}
	got := rep.Logs[0]
	if got.Unclean != 1 || len(got.Unvouched) != 1 || got.Unvouched[0].Lines != 2 || got.Unvouched[0].After.Line != 5 || got.Unvouched[0].Until.Line != 8 || !rep.Closed || rep.Tail != 0 {
		t.Errorf("log %+v, unvouched %+v; want the 2 lines between the checkpoint at line 5 and the restart at line 8, and the log closed", got, got.Unvouched)
	}
}

// TestVerifyCountsTheLinesAfterTheLastSignedCheckpoint: lines cut from the
// end of a log that did not stop (the proxy killed, or still writing)
// leave no trace in the chain; verify counts the lines that follow the last
// signed checkpoint, which only the chain vouches for, and a checkpoint
// that is not signed vouches for nothing with --key.
func TestVerifyCountsTheLinesAfterTheLastSignedCheckpoint(t *testing.T) {
	key, pub := checkpointKey(t)
	path := filepath.Join(t.TempDir(), "decisions.jsonl")
	killed := open(t, path, key) // never closed
	write(t, killed, record(1), record(2), record(3))
	if err := killed.Checkpoint(); err != nil {
		t.Fatal(err)
	}
	write(t, killed, record(4), record(5), breakglass(6))
	ls := lines(t, path) // start, 3 records, checkpoint, 3 records
	unsigned := strings.Replace(ls[4], `"reason":"interval"`, `"reason":"shutdown"`, 1)
	unsigned = unsigned[:strings.Index(unsigned, `,"seq":`)] + fmt.Sprintf(`,"seq":9,"prev":%q}`+"\n", hashOf(strings.TrimSuffix(ls[7], "\n")))
	for _, c := range []struct {
		name  string
		lines []string
		tail  int
	}{
		{"as the proxy left it", ls, 3},
		{"its breakglass line cut", ls[:7], 2},
		{"an unsigned shutdown checkpoint appended", append(ls[:8:8], unsigned), 4},
	} {
		t.Run(c.name, func(t *testing.T) {
			writeLines(t, path, c.lines)
			rep, err := audit.Verify([]string{path}, keys(pub))
			if err != nil {
				t.Fatal(err)
			}
			wantOK := len(c.lines) < 9
			if rep.OK() != wantOK || rep.Closed || rep.Tail != c.tail || rep.LastCheckpoint == nil || rep.LastCheckpoint.Line != 5 {
				t.Errorf("ok %v (want %v), closed %v, tail %d (want %d), last checkpoint %+v (want line 5); problems:\n%s", rep.OK(), wantOK, rep.Closed, rep.Tail, c.tail, rep.LastCheckpoint, findings(rep.Problems))
			}
		})
	}
}

// TestAStartTakesAsACleanEndOnlyAShutdownCheckpointItCanVerify: the file's
// last line and the state beside it are both writable by others; a start
// after a shutdown checkpoint forged in both declares an unclean stop, and
// one after a key rotation (a checkpoint of the key before, which this
// process no longer holds) does not.
func TestAStartTakesAsACleanEndOnlyAShutdownCheckpointItCanVerify(t *testing.T) {
	key, _ := checkpointKey(t)
	other, _ := checkpointKey(t)
	keyID, _ := audit.KeyID(key.Public())
	otherID, _ := audit.KeyID(other.Public())
	for _, c := range []struct {
		name string
		// before is the key of the run before; forge edits its last line
		// and the state alike.
		before crypto.Signer
		forge  func(line string) string
		says   string // in the start's found.why; "": a clean start
	}{
		{"after a clean stop", key, func(l string) string { return l }, ""},
		{"after a key rotation", other, func(l string) string { return l }, ""},
		{"after a shutdown checkpoint stripped of its signature", key, func(l string) string {
			return l[:strings.Index(l, `,"signature":`)] + "}\n"
		}, "it is not signed, and this log signs its checkpoints"},
		{"after another key's shutdown checkpoint under this key's id", other, func(l string) string {
			return strings.ReplaceAll(l, otherID, keyID)
		}, "its signature does not verify with key " + keyID},
	} {
		t.Run(c.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "decisions.jsonl")
			state := filepath.Join(filepath.Dir(path), ".decisions.jsonl.checkpoint")
			run(t, path, c.before, record(1))
			ls := lines(t, path)
			ls[len(ls)-1] = c.forge(ls[len(ls)-1])
			writeLines(t, path, ls)
			writeLines(t, state, ls[len(ls)-1:])
			l := open(t, path, key)
			defer l.Close()
			start := lines(t, path)[len(ls)]
			switch {
			case c.says == "" && (l.Unclean() != "" || !strings.Contains(start, `"previous":{"seq":3,"hash":"`+hashOf(strings.TrimSuffix(ls[2], "\n"))+`"}`)):
				t.Errorf("the start %s (unclean: %q); want it to name the shutdown checkpoint before it", start, l.Unclean())
			case c.says != "" && (!strings.Contains(l.Unclean(), c.says) || !strings.Contains(start, `"previous":"unclean"`)):
				t.Errorf("the start %s (unclean: %q); want an unclean stop declared, saying %q", start, l.Unclean(), c.says)
			}
		})
	}
}

func TestVerifyTakesEachRotatedKeyForTheTimeItSigned(t *testing.T) {
	oldKey, oldPub := checkpointKey(t)
	newKey, newPub := checkpointKey(t)
	path := filepath.Join(t.TempDir(), "decisions.jsonl")
	run(t, path, oldKey, record(1))
	time.Sleep(time.Millisecond) // the rotation's time falls between the runs
	rotated := time.Now()
	time.Sleep(time.Millisecond)
	run(t, path, newKey, record(2))
	for _, c := range []struct {
		name string
		keys []audit.Key
		line int // of the first problem; 0: none
		says string
	}{
		{"each key for its time", []audit.Key{{Public: oldPub, Until: rotated}, {Public: newPub, From: rotated}}, 0, ""},
		{"both keys for any time", keys(oldPub, newPub), 0, ""},
		{"the new key only", keys(newPub), 1, "which is not one given with --key"},
		{"the old key given until before it signed", []audit.Key{{Public: oldPub, Until: rotated.Add(-time.Hour)}, {Public: newPub, From: rotated}}, 1, "which is given for [until "},
		{"the new key given for the time before the rotation", []audit.Key{{Public: oldPub}, {Public: newPub, Until: rotated}}, 4, "which is given for [until "},
	} {
		t.Run(c.name, func(t *testing.T) {
			rep, err := audit.Verify([]string{path}, c.keys)
			if err != nil {
				t.Fatal(err)
			}
			switch {
			case c.line == 0 && !rep.OK():
				t.Errorf("problems:\n%swant none", findings(rep.Problems))
			case c.line != 0 && (rep.OK() || rep.Problems[0].Line != c.line || rep.Problems[0].Kind != audit.ProblemSignature || !strings.Contains(rep.Problems[0].Message, c.says)):
				t.Errorf("problems:\n%swant a signature problem at line %d saying %q", findings(rep.Problems), c.line, c.says)
			}
		})
	}
}

func TestVerifyFailsOnACheckpointSignedByAKeyNotGiven(t *testing.T) {
	_, pub := checkpointKey(t)
	other, _ := checkpointKey(t)
	keyID, _ := audit.KeyID(pub)
	otherID, _ := audit.KeyID(other.Public())
	for _, c := range []struct {
		name string
		edit func(line string) string
		says string
	}{
		{"another key's checkpoints", func(l string) string { return l }, "names key " + otherID + ", which is not one given with --key"},
		{"another key's signatures under the id of the key given", func(l string) string { return strings.ReplaceAll(l, otherID, keyID) }, "does not verify with key " + keyID},
	} {
		t.Run(c.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "decisions.jsonl")
			run(t, path, other, record(1))
			ls := lines(t, path)
			for i := range ls {
				ls[i] = c.edit(ls[i])
			}
			writeLines(t, path, ls)
			rep, err := audit.Verify([]string{path}, keys(pub))
			if err != nil {
				t.Fatal(err)
			}
			if rep.OK() || rep.Problems[0].Line != 1 || rep.Problems[0].Kind != audit.ProblemSignature || !strings.Contains(rep.Problems[0].Message, c.says) {
				t.Errorf("problems:\n%swant the start checkpoint at line 1 saying %q", findings(rep.Problems), c.says)
			}
		})
	}
}

// TestVerifyReportsEachReplicaOfAFolder verifies a folder holding the
// logs of two replicas (each rotated twice): each log on its own, and one
// file of one replica left out shows in that replica's log.
func TestVerifyReportsEachReplicaOfAFolder(t *testing.T) {
	key, pub := checkpointKey(t)
	dir := t.TempDir()
	for _, id := range []string{"replica-a", "replica-b"} {
		path := filepath.Join(dir, id, "decisions.jsonl")
		if err := os.Mkdir(filepath.Dir(path), 0o750); err != nil {
			t.Fatal(err)
		}
		l := open(t, path, key, audit.WithLogID(id))
		for gen := 2; gen >= 1; gen-- {
			write(t, l, record(gen), record(gen+10))
			if err := os.Rename(path, fmt.Sprintf("%s.%d", path, gen)); err != nil {
				t.Fatal(err)
			}
			if err := l.Reopen(); err != nil {
				t.Fatal(err)
			}
		}
		write(t, l, record(9))
		if err := l.Close(); err != nil {
			t.Fatal(err)
		}
	}
	rep, err := audit.Verify([]string{dir}, keys(pub))
	if err != nil {
		t.Fatal(err)
	}
	if !rep.OK() || len(rep.Logs) != 2 || len(rep.Files) != 6 {
		t.Fatalf("problems:\n%s%d logs in %d files; want none, 2 logs in 6 files", findings(rep.Problems), len(rep.Logs), len(rep.Files))
	}
	for _, l := range rep.Logs {
		if len(l.Files) != 3 || l.FirstSeq != 1 || l.LastSeq != 9 || !l.Closed || l.Decisions != 5 || len(l.Gaps) != 0 {
			t.Errorf("log %+v; want 3 files, seq 1-9, 5 decisions, closed, no gap", l)
		}
	}

	missing := filepath.Join(dir, "replica-b", "decisions.jsonl.1")
	if err := os.Remove(missing); err != nil {
		t.Fatal(err)
	}
	rep, err = audit.Verify([]string{dir}, keys(pub))
	if err != nil {
		t.Fatal(err)
	}
	a, b := rep.Logs[0], rep.Logs[1]
	if a.LogID != "replica-a" || a.Problems != 0 || b.LogID != "replica-b" || len(b.Gaps) != 1 || len(rep.Problems) != 1 {
		t.Fatalf("logs %+v %+v, problems:\n%swant replica-b alone with a gap", a, b, findings(rep.Problems))
	}
	if gap := b.Gaps[0]; gap.File != filepath.Join(dir, "replica-b", "decisions.jsonl") || gap.Line != 1 || gap.Kind != audit.ProblemRemoved || gap.LogID != "replica-b" ||
		!strings.Contains(gap.Message, "seq 5 to 7 are missing after "+filepath.Join(dir, "replica-b", "decisions.jsonl.2")+":4") {
		t.Errorf("gap %v; want the lines of the file left out missing before line 1 of replica-b's current file", gap)
	}
	alone, err := audit.Verify([]string{dir}, nil) // the chain alone
	if err != nil {
		t.Fatal(err)
	}
	if len(alone.Problems) != 1 || alone.Problems[0] != b.Gaps[0] {
		t.Errorf("without a key: problems:\n%swant the same gap of replica-b", findings(alone.Problems))
	}
}

func TestALogKeepsItsIDAcrossRestartsUntilOneIsConfigured(t *testing.T) {
	key, _ := checkpointKey(t)
	path := filepath.Join(t.TempDir(), "decisions.jsonl")
	for _, c := range []struct {
		opt  audit.Option
		want string
	}{
		{audit.WithDefaultLogID("node-1-8dad5d03"), "node-1-8dad5d03"},
		{audit.WithDefaultLogID("node-1-47b5d2a3"), "node-1-8dad5d03"}, // a new key: the log keeps its id
		{audit.WithLogID("prod-eu-1"), "prod-eu-1"},
	} {
		l := open(t, path, key, c.opt)
		write(t, l, record(1))
		if err := l.Close(); err != nil {
			t.Fatal(err)
		}
		for _, line := range lines(t, path)[len(lines(t, path))-3:] {
			if !strings.Contains(line, `,"logId":"`+c.want+`","seq":`) {
				t.Errorf("a line without logId %s: %s", c.want, line)
			}
		}
	}
}
