package audit

import (
	"bytes"
	"fmt"
	"time"
)

// DefaultQueue is the decision lines a Log with a queue holds at most
// before a request waits for the disk (serve's setting).
const DefaultQueue = 8192

// WithQueue hands the decision lines to a writer of their own through a
// queue of at most n lines, so that no request waits on the disk: the
// writer takes every line queued within a millisecond of the first (at
// once with WithRequired), completes each with its place in the chain,
// and writes them with one write per sink. A full queue
// makes the next request wait for room (a line is never dropped), which
// is counted and logged. Each client (Client.Party) holds at most an
// eighth of the queue: a client past its share waits for its own lines to
// be written, so that one client's burst while the disk is slow never
// makes another's request wait. With WithRequired, a request waits for its
// own line to be written (together with the others queued), so that
// nothing is served unlogged.
func WithQueue(n int) Option {
	return func(o *options) error {
		if n <= 0 {
			return fmt.Errorf("audit: queue of %d lines: want at least 1", n)
		}
		o.queue = n
		return nil
	}
}

// queued is one decision line waiting for the writer; done, when not nil,
// receives the result of writing it.
type queued struct {
	line  *bytes.Buffer
	done  chan error
	share *share
}

// share is the room one client has in the queue: a slot per line it may
// hold there; users counts those holding or waiting for one, so that a
// share nobody uses can be forgotten.
type share struct {
	key   string // the client
	slots chan struct{}
	users int
}

// shareOf is the share of the client of r, taken for one line: the caller
// waits for a slot, and the writer gives it back (release).
func (l *Log) shareOf(r *Record) *share {
	key := r.Client.Party
	l.smu.Lock()
	defer l.smu.Unlock()
	s := l.shares[key]
	if s == nil {
		if len(l.shares) >= keptShares {
			for k, o := range l.shares {
				if o.users == 0 {
					delete(l.shares, k)
				}
			}
		}
		s = &share{key: key, slots: make(chan struct{}, l.perClient())}
		l.shares[key] = s
	}
	s.users++
	return s
}

// perClient is the lines one client may hold in the queue.
func (l *Log) perClient() int { return max(1, cap(l.queue)/8) }

// release gives back the slot of one line of s, written.
func (l *Log) release(s *share) {
	<-s.slots
	l.smu.Lock()
	s.users--
	l.smu.Unlock()
}

// keptShares is how many clients' shares are kept between their lines
// (not made anew for each), those unused forgotten past it.
const keptShares = 1024

// maxBatch bounds the lines written at once.
const maxBatch = 512

// linger is how long the writer waits after the first line of a batch for
// more to share its writes: at thousands of decisions a second, one write
// per sink for dozens of lines instead of one for each. Nobody waits for
// those lines; a required log, whose requests wait for their own, writes
// at once.
const linger = time.Millisecond

// enqueue hands line to the writer, waiting for room when the queue is
// full, and, when the log is required, for the line to be written. It
// reports false when the log is closed: the caller writes the line itself.
func (l *Log) enqueue(line *bytes.Buffer, r *Record) (bool, error) {
	l.qmu.RLock()
	defer l.qmu.RUnlock()
	if l.qclosed {
		return false, nil
	}
	q := queued{line: line, share: l.shareOf(r)}
	if l.opts.required {
		q.done = make(chan error, 1)
	}
	select {
	case q.share.slots <- struct{}{}:
	default:
		l.queueFull("a client's share of the decision log's queue is full: its requests wait for the disk until its lines are written (no line is dropped; other clients' are not held up)", "client", q.share.key, "share", cap(q.share.slots))
		q.share.slots <- struct{}{}
	}
	select {
	case l.queue <- q:
	default:
		l.queueFull("the decision log's queue is full: requests wait for the disk until it has room (no line is dropped)", "queue", cap(l.queue))
		l.queue <- q
	}
	if q.done == nil {
		return true, nil
	}
	return true, <-q.done
}

// queueFull counts a request that waits for room, and says why at most
// once a minute.
func (l *Log) queueFull(msg string, args ...any) {
	l.opts.observer.AuditQueueFull()
	now := time.Now().UnixNano()
	if last := l.queueWarned.Load(); now-last > int64(time.Minute) && l.queueWarned.CompareAndSwap(last, now) {
		l.opts.logger.Warn(msg, append([]any{"file", l.path}, args...)...)
	}
}

// writer writes the queued lines until the queue is closed.
func (l *Log) writer() {
	defer close(l.written)
	batch := make([]queued, 0, maxBatch)
	for q := range l.queue {
		batch = append(batch[:0], q)
		if !l.opts.required {
			time.Sleep(linger)
		}
	more:
		for len(batch) < maxBatch {
			select {
			case q, ok := <-l.queue:
				if !ok {
					break more
				}
				batch = append(batch, q)
			default:
				break more
			}
		}
		l.writeBatch(batch)
	}
}

// writeBatch writes the lines of batch, each completed with the log id and
// its place in the chain, with one write per sink.
func (l *Log) writeBatch(batch []queued) {
	l.mu.Lock()
	if l.failing != nil {
		l.recover()
	}
	seq, head := l.seq, append(l.batchHead[:0], l.head...)
	buf := l.batchBuf[:0]
	for _, q := range batch {
		start := len(buf)
		buf = append(l.appendPlace(buf, q.line.Bytes(), seq+1, head), "}\n"...)
		if l.opts.chain {
			seq++
			head = nextHead(head, buf[start:len(buf)-1])
		}
	}
	err := l.emit(buf)
	if err == nil {
		l.seq, l.head = seq, append(l.head[:0], head...)
	}
	for range batch {
		l.opts.observer.AuditWrite(err == nil)
		if err != nil {
			l.failed(err)
		}
	}
	l.batchBuf, l.batchHead = buf[:0], head[:0]
	l.mu.Unlock()
	for _, q := range batch {
		linePool.Put(q.line)
		l.release(q.share)
		if q.done != nil {
			q.done <- err
		}
	}
}

// closeQueue stops taking lines and waits for the writer to write those
// queued.
func (l *Log) closeQueue() {
	if l.queue == nil {
		return
	}
	l.qmu.Lock()
	if l.qclosed {
		l.qmu.Unlock()
		return
	}
	l.qclosed = true
	close(l.queue)
	l.qmu.Unlock()
	<-l.written
}

// QueueStats is how full the decision log's queue is; all 0 without one.
type QueueStats struct {
	Queued, Size int // lines queued, of at most Size
	// Most is what the client holding the most holds of its share of
	// PerClient lines, and Saturated how many clients hold it whole.
	Most, PerClient, Saturated int
}

// QueueStats says how full the queue is now.
func (l *Log) QueueStats() QueueStats {
	if l.queue == nil {
		return QueueStats{}
	}
	l.smu.Lock()
	defer l.smu.Unlock()
	st := QueueStats{Queued: len(l.queue), Size: cap(l.queue), PerClient: l.perClient()}
	for _, s := range l.shares {
		n := len(s.slots)
		st.Most = max(st.Most, n)
		if n >= st.PerClient {
			st.Saturated++
		}
	}
	return st
}
