package audit

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/google/renameio/v2"
)

// What a start checkpoint's "previous" says of the run before it.
const (
	// PreviousNone: nothing came before: no chain in the file and no
	// record of a checkpoint written before (a first start).
	PreviousNone = "none"
	// PreviousUnclean: the run before did not end with its shutdown
	// checkpoint as the file's last line; "found" says what was found.
	PreviousUnclean = "unclean"
)

// Link names one line of a log's chain.
type Link struct {
	LogID string `json:"logId,omitempty"`
	Seq   uint64 `json:"seq"`
	Hash  string `json:"hash"`
}

func (e *entry) link() *Link { return &Link{LogID: e.logID, Seq: e.seq, Hash: e.hash} }

// Found is what a start checkpoint found when the run before it did not end
// cleanly: it is the start checkpoint's "found".
type Found struct {
	// Checkpoint is the last checkpoint the proxy wrote before this start,
	// as its state file recorded it, and Reason that checkpoint's reason;
	// nil without a record.
	Checkpoint *Link  `json:"checkpoint,omitempty"`
	Reason     string `json:"reason,omitempty"`
	// Last is the file's last line of a chain; nil when it holds none.
	Last *Link `json:"last,omitempty"`
	// Why says what was found, in words.
	Why string `json:"why"`
}

// statePath is where the log at path keeps its last checkpoint line: a
// hidden file beside it, which logrotate's pattern and a glob of the log's
// files (decisions.jsonl*) leave alone.
func statePath(path string) string {
	return filepath.Join(filepath.Dir(path), "."+filepath.Base(path)+".checkpoint")
}

// readState reads the last checkpoint line the proxy wrote: nil, nil when
// there is none.
func readState(path string) (*entry, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	e := parseEntry(bytes.TrimSuffix(b, []byte("\n")), true, 0, path, 1)
	if !e.checkpoint() {
		return nil, fmt.Errorf("%s holds no checkpoint line", path)
	}
	return e, nil
}

// saveState records line, the checkpoint just written, as the log's last
// checkpoint: written whole to a temporary file, synced, and renamed over
// the state, so that a crash leaves the old state or the new one. A failure
// is logged once until it succeeds again: without the state a restart
// after logrotate starts a new chain, which verify accepts only after a
// clean stop. l.mu is held.
func (l *Log) saveState(line []byte) {
	if l.state == "" {
		return
	}
	err := renameio.WriteFile(l.state, append(bytes.Clone(line), '\n'), 0o640)
	if err != nil && !l.stateFailing {
		l.opts.logger.Error("recording the decision log's last checkpoint", "file", l.state, "err", err.Error())
	}
	l.stateFailing = err != nil
}

// startFrom decides where a process continues the chain of the file at
// path and what its start checkpoint says of the run before: from the
// file's last whole line (last: nil when there is none, unchained when that
// line carries no chain) and the last checkpoint the proxy recorded
// (state). The chain continues from the file's last line when the file
// holds the recorded checkpoint and follows it; from the recorded
// checkpoint when the file holds no chain or ends before it (cut, or
// replaced), so that what is missing shows where the new run begins.
func (l *Log) startFrom(path string, last *entry, unchained bool, state *entry, stateErr error) (from *entry, attrs []slog.Attr) {
	unclean := func(f Found) []slog.Attr {
		l.unclean = f.Why
		return []slog.Attr{slog.String("previous", PreviousUnclean), slog.Any("found", f)}
	}
	clean := func(e *entry) []slog.Attr { return []slog.Attr{slog.Any("previous", e.link())} }
	var f Found
	if state != nil {
		f.Checkpoint, f.Reason = state.link(), state.reason
	}
	if last != nil {
		f.Last = last.link()
	}
	switch {
	case last == nil && state == nil && unchained:
		f.Why = "the file's last line is not part of a chain (written without audit.chain, or damaged): a new chain starts"
		return nil, unclean(f)
	case last == nil && state == nil && stateErr != nil:
		f.Why = fmt.Sprintf("the record of the proxy's last checkpoint cannot be read (%s), and the file holds no line of a chain: a new chain starts", stateErr)
		return nil, unclean(f)
	case last == nil && state == nil:
		return nil, []slog.Attr{slog.String("previous", PreviousNone)}
	case state == nil:
		if last.reason == CheckpointShutdown && l.distrust(last) == "" {
			return last, clean(last)
		}
		why := "the state file is missing"
		if stateErr != nil {
			why = stateErr.Error()
		}
		f.Why = fmt.Sprintf("no record of the proxy's last checkpoint (%s), and the file ends at seq %d, not with a shutdown checkpoint: the proxy stopped without one, or lines were cut from the end", why, last.seq)
		if last.reason == CheckpointShutdown {
			f.Why = fmt.Sprintf("no record of the proxy's last checkpoint (%s), and the file ends at seq %d with a shutdown checkpoint that cannot be taken as it says: %s", why, last.seq, l.distrust(last))
		}
		return last, unclean(f)
	case last == nil:
		switch {
		case unchained:
			f.Why = fmt.Sprintf("the file's last line is not part of a chain; the chain continues from the last checkpoint written (seq %d, %s)", state.seq, state.reason)
		case state.reason == CheckpointShutdown && l.distrust(state) == "":
			return state, clean(state) // a new file: rotated while the proxy was stopped
		case state.reason == CheckpointShutdown:
			f.Why = fmt.Sprintf("the recorded last checkpoint (seq %d, shutdown) cannot be taken as it says: %s; this file holds no line of the chain", state.seq, l.distrust(state))
		default:
			f.Why = fmt.Sprintf("the proxy stopped without its shutdown checkpoint after its last checkpoint (seq %d, %s), and this file holds no line of the chain: the lines after that checkpoint, if any, are in the file before", state.seq, state.reason)
		}
		return state, unclean(f)
	case last.hash == state.hash && state.reason == CheckpointShutdown && l.distrust(state) == "":
		return last, clean(last)
	case last.hash == state.hash && state.reason == CheckpointShutdown:
		f.Why = fmt.Sprintf("the file ends with the recorded last checkpoint (seq %d, shutdown), which cannot be taken as it says: %s", state.seq, l.distrust(state))
		return last, unclean(f)
	case last.hash == state.hash:
		f.Why = fmt.Sprintf("the proxy stopped right after its last checkpoint (seq %d, %s), without its shutdown checkpoint", state.seq, state.reason)
		return last, unclean(f)
	case last.seq > state.seq && follows(path, state):
		f.Why = fmt.Sprintf("the proxy stopped without its shutdown checkpoint: %d line(s) follow its last checkpoint (seq %d, %s), which no checkpoint vouched for before this start", last.seq-state.seq, state.seq, state.reason)
		return last, unclean(f)
	default:
		f.Why = fmt.Sprintf("the file does not hold the proxy's last checkpoint (seq %d, %s): it ends at seq %d; lines were cut from its end, or it was replaced; the chain continues from that checkpoint", state.seq, state.reason, last.seq)
		return state, unclean(f)
	}
}

// distrust says why the checkpoint e, read back at start (the file's last
// line, or the recorded last checkpoint: both writable by others), cannot
// be taken as the run before's clean end; "" when it can. Without a key
// any checkpoint can. With one it must be signed, and verify with this
// key when it names it; one naming another key (the key before a
// rotation, which this process no longer holds) is taken as it says, and
// verify judges it with the key given for its time.
func (l *Log) distrust(e *entry) string {
	switch {
	case !e.checkpoint():
		return "it is not a checkpoint"
	case l.opts.key == nil:
		return ""
	case e.signature == nil:
		return "it is not signed, and this log signs its checkpoints"
	case e.keyID == l.keyID && !verifyCheckpoint(l.opts.key.Public(), e.signed, e.signature):
		return "its signature does not verify with key " + l.keyID
	}
	return ""
}

// maxLookBack bounds how far back from its end a file is read at start.
const maxLookBack = 64 << 20

// follows reports whether the chain that ends the file at path passes
// through the checkpoint cp: read back from the end, the line at cp's seq
// is cp, or the one after it links to cp. Past maxLookBack it cannot tell,
// and says yes: the file is then continued, and verify judges the links.
func follows(path string, cp *entry) bool {
	f, err := os.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return false
	}
	answer, decided := true, false
	_ = backward(f, fi.Size(), func(raw []byte) bool {
		e := parseEntry(raw, true, 0, path, 0)
		switch {
		case !e.chained:
			return true
		case e.hash == cp.hash:
			answer, decided = true, true
		case e.seq == cp.seq+1:
			answer, decided = e.prev == cp.hash, true
		case e.seq <= cp.seq:
			answer, decided = false, true
		}
		return !decided
	})
	return answer
}

// lastEntry reads the last whole line of the file at path: nil when it has
// none; unchained when that line carries no chain.
func lastEntry(path string) (last *entry, unchained bool, err error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, false, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil || !fi.Mode().IsRegular() {
		return nil, false, err // a device or pipe: nothing to look back at
	}
	err = backward(f, fi.Size(), func(raw []byte) bool {
		if len(bytes.TrimSpace(raw)) == 0 {
			return true
		}
		if e := parseEntry(raw, true, 0, path, 0); e.chained {
			last = e
		} else {
			unchained = true
		}
		return false
	})
	if errors.Is(err, errLookBack) && last == nil && !unchained {
		return nil, false, fmt.Errorf("%s: its last line is over %d MiB: not a decision log", path, maxLookBack>>20)
	}
	return last, unchained, nil
}

var errLookBack = errors.New("read back past the limit")

// backward calls fn with each whole line of the file of the given size,
// from its last one back (a last line without its newline is skipped: a
// write cut short), until fn returns false. It reads at most maxLookBack
// bytes, then returns errLookBack.
func backward(r io.ReaderAt, size int64, fn func(line []byte) bool) error {
	const block = 64 << 10
	pos := size
	var pending []byte // bytes from pos on, not yet passed to fn
	ended := false     // pending ends where a whole line ends
	for pos > 0 {
		if size-pos >= maxLookBack {
			return errLookBack
		}
		n := min(block, pos)
		chunk := make([]byte, n, int(n)+len(pending))
		if _, err := r.ReadAt(chunk, pos-n); err != nil && !errors.Is(err, io.EOF) {
			return err
		}
		pos -= n
		pending = append(chunk, pending...)
		if !ended {
			i := bytes.LastIndexByte(pending, '\n')
			if i < 0 {
				continue
			}
			pending, ended = pending[:i], true
		}
		for {
			i := bytes.LastIndexByte(pending, '\n')
			if i < 0 {
				break
			}
			if !fn(pending[i+1:]) {
				return nil
			}
			pending = pending[:i]
		}
	}
	if ended {
		fn(pending)
	}
	return nil
}
