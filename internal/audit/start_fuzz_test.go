package audit

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

// FuzzStartAfterAnyFile starts a log, with and without a checkpoint key,
// on a file and a state (the last checkpoint recorded beside it) as whoever
// can write them may leave them: cut, edited, forged, not a decision log.
// backward reads the file's whole lines, newest first, as they are. New
// never fails on them (short of a last line over maxLookBack), never
// changes a byte already there, and writes one chain from its start
// checkpoint to its shutdown checkpoint; the start says what came before
// it, and claims a clean end of the run before only for a shutdown
// checkpoint that the file ends with or the state holds, signed by the key
// (when it names it) if the log has one.
func FuzzStartAfterAnyFile(f *testing.F) {
	_, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		f.Fatal(err)
	}
	keyID, _ := KeyID(key.Public())
	dir := f.TempDir()
	path := filepath.Join(dir, "seed.jsonl")
	for range 2 {
		l, err := New(nil, path, WithChain(), WithCheckpoints(key, time.Hour))
		if err != nil {
			f.Fatal(err)
		}
		if err := l.Write(f.Context(), Record{Decision: Allow, Image: "lab/app"}); err != nil {
			f.Fatal(err)
		}
		l.Close()
	}
	seed, _ := os.ReadFile(path)
	state, _ := os.ReadFile(statePath(path))
	for _, signed := range []bool{true, false} {
		f.Add(seed, state, true, signed)
		f.Add(seed, []byte{}, false, signed)
		f.Add(seed[:len(seed)/2], state, true, signed)
		f.Add(bytes.ReplaceAll(seed, []byte(`"signature":"`), []byte(`"signature":"AA`)), bytes.ReplaceAll(state, []byte(`"signature":"`), []byte(`"signature":"AA`)), true, signed)
	}
	f.Add(seed, []byte(`{"msg":"checkpoint","seq":99,"prev":"","reason":"shutdown"}`), true, true)
	f.Add([]byte{}, []byte("not a checkpoint"), true, false)
	f.Add([]byte("not a log\n{\"seq\":1,\"prev\":\"\"}"), []byte{}, false, false)
	f.Fuzz(func(t *testing.T, data, state []byte, stateFile, signed bool) {
		var forward [][]byte
		if end := bytes.LastIndexByte(data, '\n'); end >= 0 {
			forward = bytes.Split(data[:end], []byte("\n"))
		}
		var back [][]byte
		if err := backward(bytes.NewReader(data), int64(len(data)), func(l []byte) bool { back = append(back, bytes.Clone(l)); return true }); err != nil {
			t.Fatal(err)
		}
		slices.Reverse(back)
		if !slices.EqualFunc(forward, back, bytes.Equal) {
			t.Fatalf("backward read %q; the file's whole lines are %q", back, forward)
		}

		p := filepath.Join(t.TempDir(), "decisions.jsonl")
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		if stateFile {
			if err := os.WriteFile(statePath(p), state, 0o600); err != nil {
				t.Fatal(err)
			}
		}
		opts := []Option{WithChain()}
		if signed {
			opts = append(opts, WithCheckpoints(key, time.Hour))
		}
		l, err := New(nil, p, opts...)
		if err != nil {
			t.Fatalf("starting on %q (state %q): %v", data, state, err)
		}
		if err := l.Close(); err != nil {
			t.Fatal(err)
		}
		written, _ := os.ReadFile(p)
		if !bytes.HasPrefix(written, data) {
			t.Fatalf("the file held %q; after a start and a stop it holds %q", data, written)
		}
		lines := bytes.Split(bytes.TrimSuffix(bytes.TrimPrefix(written[len(data):], []byte("\n")), []byte("\n")), []byte("\n")) // a torn last line is ended first
		run := make([]*entry, len(lines))
		for i, line := range lines {
			run[i] = parseEntry(line, true, 0, p, i+1)
			if i > 0 && (run[i].prev != run[i-1].hash || run[i].seq != run[i-1].seq+1) {
				t.Fatalf("line %d of the run does not follow the one before: %s", i+1, bytes.Join(lines, []byte("\n")))
			}
		}
		start := run[0]
		if len(run) != 2 || !start.start() || run[1].reason != CheckpointShutdown {
			t.Fatalf("the run wrote %s; want its start and shutdown checkpoints", bytes.Join(lines, []byte("\n")))
		}
		if signed && (start.keyID != keyID || !verifyCheckpoint(key.Public(), start.signed, start.signature)) {
			t.Fatalf("the start %s is not signed with the log's key", lines[0])
		}

		var lastLine []byte // the file's last whole line that is not blank
		for _, line := range slices.Backward(forward) {
			if len(bytes.TrimSpace(line)) > 0 {
				lastLine = line
				break
			}
		}
		switch start.previous {
		case PreviousNone:
			if lastLine != nil || stateFile {
				t.Fatalf("the start %s says nothing came before it; the file's last line is %q, the state %q", lines[0], lastLine, state)
			}
			if start.prev != "" {
				t.Fatalf("the start %s says nothing came before it, yet links to a line", lines[0])
			}
		case PreviousUnclean:
			if start.found == nil || start.found.Why == "" {
				t.Fatalf("the start %s declares an unclean stop without saying what it found", lines[0])
			}
		case previousLink:
			named := start.previousLink
			var by *entry
			for _, cand := range [][]byte{lastLine, bytes.TrimSuffix(state, []byte("\n"))} {
				if e := parseEntry(cand, true, 0, p, 0); cand != nil && e.hash == named.Hash {
					by = e
				}
			}
			switch {
			case by == nil || !by.checkpoint() || by.reason != CheckpointShutdown || by.seq != named.Seq:
				t.Fatalf("the start %s names as the run before's clean end no shutdown checkpoint of the file's last line %q or the state %q", lines[0], lastLine, state)
			case signed && (by.signature == nil || by.keyID == keyID && !verifyCheckpoint(key.Public(), by.signed, by.signature)):
				t.Fatalf("the start %s takes as the run before's clean end %q, which the log's key did not sign", lines[0], by.hash)
			case start.prev != named.Hash || start.seq != named.Seq+1:
				t.Fatalf("the start %s names a run before that it does not follow", lines[0])
			}
		default:
			t.Fatalf("the start %s says nothing of the run before", lines[0])
		}
	})
}
