package audit

import (
	"bytes"
	"context"
	"crypto"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// Checkpoint reasons: why a checkpoint line was written.
const (
	// CheckpointStart is the first line a process writes: it continues the
	// chain of the file's last line, or starts a new chain.
	CheckpointStart = "start"
	// CheckpointInterval is written every interval while serving.
	CheckpointInterval = "interval"
	// CheckpointReopen is the last line of a file the proxy leaves for a
	// new one (SIGHUP after logrotate); the chain continues in the new file.
	CheckpointReopen = "reopen"
	// CheckpointShutdown is the last line a process writes.
	CheckpointShutdown = "shutdown"
	// CheckpointResume is written once the log can be written again after
	// failing: it says how many lines were lost, and since when.
	CheckpointResume = "resume"
)

// Observer is told what the log does, for metrics. *metrics.Metrics is one.
type Observer interface {
	// AuditWrite is told of each line written to the decision log (to
	// audit.file, or to standard output without one): ok is false when it
	// could not be written.
	AuditWrite(ok bool)
	// AuditCheckpoint is told of each checkpoint written.
	AuditCheckpoint(at time.Time)
	// AuditQueueFull is told of each request that waits for room in the
	// decision log's queue (WithQueue).
	AuditQueueFull()
}

// Option configures a Log.
type Option func(*options) error

type options struct {
	chain    bool
	key      crypto.Signer
	every    time.Duration
	required bool
	logger   *slog.Logger
	observer Observer
	// logID names the log; defaultID only when the state names none.
	logID, defaultID string
	follower         func(Record)
	queue            int // lines; 0: written by the request itself
}

// WithChain makes every line carry its sequence number and the hash of the
// line before it, and marks the start and end of each process and file with
// a checkpoint line.
func WithChain() Option {
	return func(o *options) error { o.chain = true; return nil }
}

// WithCheckpoints signs every checkpoint with key (Ed25519 or ECDSA, see
// ParsePrivateKey) and writes one every interval. It needs WithChain.
func WithCheckpoints(key crypto.Signer, every time.Duration) Option {
	return func(o *options) error {
		if key == nil {
			return errors.New("audit: WithCheckpoints needs a key")
		}
		if every <= 0 {
			return fmt.Errorf("audit: checkpoint interval %s: want a positive duration", every)
		}
		if _, err := KeyID(key.Public()); err != nil {
			return fmt.Errorf("audit: checkpoint key: %w", err)
		}
		o.key, o.every = key, every
		return nil
	}
}

// WithLogID names the log: every line carries "logId": id, so that the
// logs of several replicas can be told apart, verified one by one and
// merged.
func WithLogID(id string) Option {
	return func(o *options) error {
		if id == "" {
			return errors.New("audit: WithLogID needs an id")
		}
		o.logID = id
		return nil
	}
}

// WithDefaultLogID names the log id unless the last checkpoint the log
// recorded (its state, beside the file) names one: a log keeps its id
// across restarts, a new key or a new host name, until WithLogID sets
// another.
func WithDefaultLogID(id string) Option {
	return func(o *options) error {
		if id == "" {
			return errors.New("audit: WithDefaultLogID needs an id")
		}
		o.defaultID = id
		return nil
	}
}

// WithFollower hands f each decision record once it is written to the log
// of record, with its time: re-validation learns what was allowed from it.
// f runs on the writer's goroutine, outside the log's lock, and must be
// quick.
func WithFollower(f func(Record)) Option {
	return func(o *options) error { o.follower = f; return nil }
}

// WithRequired declares that a decision must not be acted on unless its
// record was written: Write's error then means "refuse", and Healthy
// reports a failing log (readiness).
func WithRequired() Option {
	return func(o *options) error { o.required = true; return nil }
}

// WithLogger is where failures to write the log are reported.
func WithLogger(l *slog.Logger) Option {
	return func(o *options) error { o.logger = l; return nil }
}

// WithObserver receives every write and checkpoint, for metrics.
func WithObserver(obs Observer) Option {
	return func(o *options) error {
		if obs != nil {
			o.observer = obs
		}
		return nil
	}
}

type noObserver struct{}

func (noObserver) AuditWrite(bool)           {}
func (noObserver) AuditCheckpoint(time.Time) {}
func (noObserver) AuditQueueFull()           {}

// Log writes records: each one JSON line, encoded once and written with a
// single write to the file (if any) and to standard output, so that lines
// never interleave and both sinks hold the same bytes. The file is the
// log of record when there is one; without one, standard output is.
type Log struct {
	stdout io.Writer // nil: no standard output
	path   string    // "" without a file
	opts   options
	keyID  string
	logID  string // "" without one
	// state is where the last checkpoint line is kept ("" without a file
	// or a chain); stateFailing while it cannot be written.
	state        string
	stateFailing bool
	// unclean says why the run before did not end cleanly, "" when it did.
	unclean string

	mu   sync.Mutex
	f    *os.File // nil without a file, or once closed
	size int64    // bytes of f known to hold whole lines
	// torn: f may end in part of a line (a write failed midway and could
	// not be undone); the next line starts on a line of its own.
	torn   bool
	seq    uint64 // of the last line of the chain
	head   []byte // "sha256:<hex>" of the last line of the chain
	closed bool
	// failing is the last write error while the log of record cannot be
	// written, nil when it can; lost counts the lines not written since
	// failedAt.
	failing  error
	lost     int
	failedAt time.Time
	warnedAt time.Time

	stop chan struct{} // closed to stop the checkpoint ticker
	done chan struct{} // closed once it has stopped

	// queue, with WithQueue, takes decision lines to the writer, which
	// closes written when it has written the last. qmu and qclosed keep
	// Write from sending once Close closed it.
	queue       chan queued
	written     chan struct{}
	qmu         sync.RWMutex
	qclosed     bool
	smu         sync.Mutex
	shares      map[string]*share // by client, those with lines queued
	queueWarned atomic.Int64      // unix nanoseconds of the last warning
	// batchBuf and batchHead are the writer's, reused from batch to batch.
	batchBuf, batchHead []byte
}

// New writes records to stdout (if not nil) and, when path is not empty,
// appends them to the file at path. With WithChain a start checkpoint is
// written at once: the chain continues from the file's last line, or from
// the last checkpoint the log recorded when the file holds no chain or
// ends before it (after logrotate moved it away, or when lines were cut),
// and the checkpoint names the run before (see startFrom).
func New(stdout io.Writer, path string, opts ...Option) (*Log, error) {
	l := &Log{stdout: stdout, path: path, opts: options{logger: slog.New(slog.DiscardHandler), observer: noObserver{}}}
	for _, opt := range opts {
		if err := opt(&l.opts); err != nil {
			return nil, err
		}
	}
	if l.opts.key != nil {
		if !l.opts.chain {
			return nil, errors.New("audit: checkpoints sign the chain: WithCheckpoints needs WithChain")
		}
		l.keyID, _ = KeyID(l.opts.key.Public())
	}
	l.logID = l.opts.logID
	var start []slog.Attr
	if l.opts.chain {
		start = []slog.Attr{slog.String("previous", PreviousNone)}
	}
	if path != "" {
		f, size, torn, err := openAppend(path)
		if err != nil {
			return nil, err
		}
		l.f, l.size, l.torn = f, size, torn
		if l.opts.chain {
			if start, err = l.continueChain(path); err != nil {
				f.Close()
				return nil, err
			}
		}
	}
	if l.logID == "" {
		l.logID = l.opts.defaultID
	}
	if l.opts.chain {
		if err := l.checkpoint(CheckpointStart, start...); err != nil {
			if l.f != nil {
				l.f.Close()
			}
			return nil, fmt.Errorf("writing the decision log: %w", err)
		}
		if l.unclean != "" {
			l.opts.logger.Warn("the decision log continues after an unclean stop", "file", path, "found", l.unclean)
		}
	}
	if l.opts.key != nil {
		l.stop, l.done = make(chan struct{}), make(chan struct{})
		go l.tick()
	}
	if l.opts.queue > 0 {
		l.queue, l.written, l.shares = make(chan queued, l.opts.queue), make(chan struct{}), map[string]*share{}
		go l.writer()
	}
	return l, nil
}

// continueChain reads where the chain of the file at path goes on and what
// the start checkpoint says of the run before, and takes the log id the
// state recorded unless one was given.
func (l *Log) continueChain(path string) ([]slog.Attr, error) {
	last, unchained, err := lastEntry(path)
	if err != nil {
		return nil, err
	}
	l.state = statePath(path)
	state, stateErr := readState(l.state)
	if l.logID == "" && state != nil {
		l.logID = state.logID
	}
	from, attrs := l.startFrom(path, last, unchained, state, stateErr)
	if from != nil {
		l.seq, l.head = from.seq, []byte(from.hash)
	}
	return attrs, nil
}

// openAppend opens path for appending and says how much it holds and
// whether it ends in part of a line.
func openAppend(path string) (f *os.File, size int64, torn bool, err error) {
	f, err = os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o640)
	if err != nil {
		return nil, 0, false, err
	}
	fi, err := f.Stat()
	if err != nil || !fi.Mode().IsRegular() {
		return f, 0, false, nil // a device or pipe: nothing to look back at
	}
	size = fi.Size()
	if size > 0 {
		r, err := os.Open(path)
		if err == nil {
			last := make([]byte, 1)
			if _, err := r.ReadAt(last, size-1); err == nil {
				torn = last[0] != '\n'
			}
			r.Close()
		}
	}
	return f, size, torn, nil
}

// lineHash is how the chain names a line: the SHA-256 of its bytes, without
// the newline.
func lineHash(line []byte) string {
	sum := sha256.Sum256(line)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// Write logs r: allows at info level, denials, breakglass and revocations at warn, errors
// at error. It returns an error when the record could not be written to the
// log of record (the file, or standard output without one); the failure is
// also logged and counted, and the write retried with the next record.
func (l *Log) Write(ctx context.Context, r Record) error {
	level := slog.LevelInfo
	switch r.Decision {
	case Deny, DryRunDeny, Breakglass, Revoked:
		level = slog.LevelWarn
	case Error:
		level = slog.LevelError
	}
	if r.Reasons == nil {
		r.Reasons = []string{}
	}
	if r.VerifiedBy == nil {
		r.VerifiedBy = []Verification{}
	}
	r.Time = time.Now()
	line := encodeDecision(ctx, r.Time, level, &r)
	if l.queue != nil {
		if ok, err := l.enqueue(line, &r); ok {
			l.follow(err, r)
			return err // the writer returns line to the pool
		}
	}
	defer linePool.Put(line)
	err := l.write(line.Bytes())
	l.follow(err, r)
	return err
}

// follow hands r, written or queued without error, to the follower.
func (l *Log) follow(err error, r Record) {
	if err == nil && l.opts.follower != nil {
		r.LogID = l.logID
		l.opts.follower(r)
	}
}

// write appends a decision line, under the lock.
func (l *Log) write(line []byte) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.failing != nil {
		l.recover()
	}
	_, err := l.append(line, false)
	l.opts.observer.AuditWrite(err == nil)
	if err != nil {
		l.failed(err)
	}
	return err
}

var linePool = sync.Pool{New: func() any { return new(bytes.Buffer) }}

// encodeDecision renders the decision line of r, outside any lock, with
// appendDecision, or slog's JSON handler where appendDecision leaves it to
// slog. The caller returns the buffer to linePool.
func encodeDecision(ctx context.Context, t time.Time, level slog.Level, r *Record) *bytes.Buffer {
	buf := linePool.Get().(*bytes.Buffer)
	buf.Reset()
	buf.Grow(1024)
	if b, ok := appendDecision(buf.AvailableBuffer(), t, level, r); ok {
		buf.Write(b)
		return buf
	}
	linePool.Put(buf)
	return encode(ctx, t, level, "decision", decisionAttrs(r)...)
}

// decisionAttrs are the attributes of r's decision line, in order.
func decisionAttrs(r *Record) []slog.Attr {
	attrs := []slog.Attr{
		slog.String("decision", r.Decision),
		slog.String("image", r.Image),
		slog.String("reference", r.Reference),
		slog.String("digest", r.Digest),
		slog.String("mediaType", r.MediaType),
		slog.String("upstream", r.Upstream),
		slog.String("rule", r.Rule),
		slog.String("enforcement", r.Enforcement),
		slog.Any("reasons", r.Reasons),
		slog.Any("verifiedBy", r.VerifiedBy),
		slog.Bool("cached", r.Cached),
		slog.Any("client", r.Client),
		slog.Float64("durationMs", float64(r.Duration.Microseconds())/1000),
	}
	// Fields added since the first version go last: the lines of older
	// versions stay what they were.
	if r.Source != "" {
		attrs = append(attrs, slog.String("source", r.Source))
	}
	if r.Evidence != "" {
		attrs = append(attrs, slog.String("evidence", r.Evidence), slog.Int64("evidenceAgeSeconds", int64(r.EvidenceAge/time.Second)))
	}
	if r.Principal != "" {
		attrs = append(attrs, slog.String("principal", r.Principal))
	}
	return attrs
}

// encode renders one line as slog's JSON handler does, outside any lock.
// The caller returns the buffer to linePool.
func encode(ctx context.Context, t time.Time, level slog.Level, msg string, attrs ...slog.Attr) *bytes.Buffer {
	buf := linePool.Get().(*bytes.Buffer)
	buf.Reset()
	rec := slog.NewRecord(t, level, msg, 0)
	rec.AddAttrs(attrs...)
	_ = slog.NewJSONHandler(buf, nil).Handle(ctx, rec) // a bytes.Buffer does not fail
	return buf
}

// append writes line, one JSON object and a newline as encode made it,
// completed with the log id, its place in the chain and, for a checkpoint
// with a key, its signature, and returns the line written (without its
// newline). The caller reports a failure. l.mu is held.
func (l *Log) append(line []byte, sign bool) ([]byte, error) {
	buf := l.appendPlace(make([]byte, 0, len(line)+200), line, l.seq+1, l.head)
	if sign && l.opts.key != nil {
		sig, err := signCheckpoint(l.opts.key, append(buf, '}'))
		if err != nil {
			return nil, fmt.Errorf("signing a checkpoint: %w", err)
		}
		buf = append(buf, `,"signature":"`...)
		buf = base64.StdEncoding.AppendEncode(buf, sig)
		buf = append(buf, '"')
	}
	buf = append(buf, "}\n"...)
	if err := l.emit(buf); err != nil {
		return nil, err
	}
	if l.opts.chain {
		l.seq++
		l.head = nextHead(l.head, buf[:len(buf)-1])
	}
	return buf[:len(buf)-1], nil
}

// appendPlace appends line, one JSON object as encode made it, without its
// closing brace and completed with the log id and, in a chain, its place:
// seq, and prev, the head of the chain before it.
func (l *Log) appendPlace(buf, line []byte, seq uint64, prev []byte) []byte {
	buf = append(buf, bytes.TrimSuffix(line, []byte("}\n"))...)
	if l.logID != "" {
		buf = append(buf, `,"logId":`...)
		buf = appendSlogString(buf, l.logID)
	}
	if l.opts.chain {
		buf = append(buf, `,"seq":`...)
		buf = strconv.AppendUint(buf, seq, 10)
		buf = append(buf, `,"prev":"`...)
		buf = append(buf, prev...)
		buf = append(buf, '"')
	}
	return buf
}

// nextHead is the head of the chain after line (without its newline),
// written over head's bytes: "sha256:<hex>", as lineHash says.
func nextHead(head, line []byte) []byte {
	sum := sha256.Sum256(line)
	return hex.AppendEncode(append(head[:0], "sha256:"...), sum[:])
}

// emit writes buf to the file and to standard output, and returns the
// error of the log of record. A write to the file that fails midway is
// undone, so that the file holds whole lines only; when it cannot be, the
// next line starts on a line of its own. l.mu is held.
func (l *Log) emit(buf []byte) error {
	var err error
	if l.f != nil {
		out := buf
		if l.torn {
			out = append([]byte{'\n'}, buf...)
		}
		var n int
		n, err = l.f.Write(out)
		switch {
		case err == nil:
			l.size += int64(n)
			l.torn = false
		case n > 0 && l.f.Truncate(l.size) != nil:
			l.torn = true
		}
	}
	if l.stdout != nil {
		if _, serr := l.stdout.Write(buf); l.f == nil && l.path == "" {
			err = serr
		}
	}
	return err
}

// failed records that a line could not be written, and says so: at once
// when the log starts failing, then at most once a minute. l.mu is held.
func (l *Log) failed(err error) {
	now := time.Now()
	first := l.failing == nil
	l.failing = err
	l.lost++
	if first {
		l.failedAt = now
	} else if now.Sub(l.warnedAt) < time.Minute {
		return
	}
	l.warnedAt = now
	consequence := "decisions are served without a record (audit.required is false)"
	if l.opts.required {
		consequence = "manifest requests are answered 503 until it can be written (audit.required)"
	}
	l.opts.logger.Error("the decision log cannot be written; "+consequence, "file", l.path, "lost", l.lost, "since", l.failedAt.Format(time.RFC3339), "err", err.Error())
}

// recover tries to write to the log again after it failed: the file is
// opened anew (it may have been replaced or its file system remounted) and a
// resume checkpoint records the lines lost. l.mu is held.
func (l *Log) recover() {
	if l.closed {
		return
	}
	if l.path != "" {
		f, size, torn, err := openAppend(l.path)
		if err != nil {
			l.failing = err
			return
		}
		old := l.f
		l.f, l.size, l.torn = f, size, torn
		if old != nil {
			old.Close()
		}
	}
	lost, since := l.lost, l.failedAt
	line := l.checkpointLine(CheckpointResume, slog.Int("lost", lost), slog.String("since", since.Format(time.RFC3339Nano)))
	defer linePool.Put(line)
	written, err := l.append(line.Bytes(), true)
	if err != nil {
		l.failing = err // still failing; the resume line is tried again, not counted as lost
		return
	}
	l.saveState(written)
	l.opts.observer.AuditWrite(true)
	l.failing, l.lost = nil, 0
	l.opts.observer.AuditCheckpoint(time.Now())
	l.opts.logger.Info("the decision log can be written again", "file", l.path, "lost", lost, "since", since.Format(time.RFC3339))
}

// checkpointLine encodes a checkpoint line before its chain fields.
func (l *Log) checkpointLine(reason string, extra ...slog.Attr) *bytes.Buffer {
	attrs := append([]slog.Attr{slog.String("reason", reason)}, extra...)
	if l.keyID != "" {
		attrs = append(attrs, slog.String("keyId", l.keyID))
	}
	return encode(context.Background(), time.Now(), slog.LevelInfo, "checkpoint", attrs...)
}

// checkpoint writes a checkpoint line, signed when a key is configured,
// and records it as the log's last checkpoint (the shutdown checkpoint
// once the file holds it on stable storage). l.mu is held.
func (l *Log) checkpoint(reason string, extra ...slog.Attr) error {
	line := l.checkpointLine(reason, extra...)
	defer linePool.Put(line)
	written, err := l.append(line.Bytes(), true)
	l.opts.observer.AuditWrite(err == nil)
	if err != nil {
		l.failed(err)
		return err
	}
	if reason == CheckpointShutdown && l.f != nil {
		if err := l.f.Sync(); err != nil {
			return err
		}
	}
	l.saveState(written)
	l.opts.observer.AuditCheckpoint(time.Now())
	return nil
}

// Checkpoint writes an interval checkpoint now. It is a no-op without a
// chain.
func (l *Log) Checkpoint() error {
	if !l.opts.chain {
		return nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.failing != nil {
		l.recover()
	}
	return l.checkpoint(CheckpointInterval)
}

// tick writes the interval checkpoints until Close.
func (l *Log) tick() {
	defer close(l.done)
	t := time.NewTicker(l.opts.every)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			_ = l.Checkpoint() // a failure is logged and counted
		case <-l.stop:
			return
		}
	}
}

// Required reports whether a decision must be refused when its record
// could not be written (WithRequired).
func (l *Log) Required() bool { return l.opts.required }

// Healthy returns nil when the log can be written. While it cannot, each
// call tries again (a readiness probe drives recovery when no request
// comes) and returns why it still fails.
func (l *Log) Healthy() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.failing != nil {
		l.recover()
	}
	if l.failing != nil {
		where := "standard output"
		if l.path != "" {
			where = l.path
		}
		return fmt.Errorf("the decision log (%s) cannot be written since %s, %d line(s) lost: %w", where, l.failedAt.Format(time.RFC3339), l.lost, l.failing)
	}
	return nil
}

// Path is the audit file's path, "" without one.
func (l *Log) Path() string { return l.path }

// LogID is the id every line carries, "" without one.
func (l *Log) LogID() string { return l.logID }

// Unclean says, when the run before this one did not end with its
// shutdown checkpoint as the file's last line, what the start found (as
// its start checkpoint records it); "" when it did.
func (l *Log) Unclean() string { return l.unclean }

// Reopen opens the audit file at its path anew and writes to it from the
// next record on: after logrotate renamed the old file, records go to a new
// one. With a chain, the old file ends with a reopen checkpoint and the
// chain continues in the new one. A record is never split between the two.
// When the file cannot be opened, the old one is kept and the error
// returned.
func (l *Log) Reopen() error {
	if l.path == "" {
		return nil
	}
	f, size, torn, err := openAppend(l.path)
	if err != nil {
		return err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		f.Close()
		return os.ErrClosed
	}
	if l.opts.chain && l.failing == nil {
		_ = l.checkpoint(CheckpointReopen) // a failure is logged and counted
	}
	old := l.f
	l.f, l.size, l.torn = f, size, torn
	return old.Close()
}

// Close writes the shutdown checkpoint, flushes the audit file to stable
// storage and closes it; records written after Close go to standard output
// only.
func (l *Log) Close() error {
	if l.stop != nil {
		close(l.stop)
		<-l.done
		l.stop = nil
	}
	l.closeQueue()
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil
	}
	var err error
	if l.opts.chain {
		if l.failing != nil {
			l.recover()
		}
		err = l.checkpoint(CheckpointShutdown)
	}
	l.closed = true
	if l.f != nil {
		err = errors.Join(err, l.f.Sync(), l.f.Close())
		l.f = nil
	}
	return err
}
