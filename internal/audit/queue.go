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
// writer takes every line queued at once, completes each with its place
// in the chain, and writes them with one write per sink. A full queue
// makes the next request wait for room (a line is never dropped), which
// is counted and logged. With WithRequired, a request waits for its own
// line to be written (together with the others queued), so that nothing is
// served unlogged.
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
	line *bytes.Buffer
	done chan error
}

// maxBatch bounds the lines written at once.
const maxBatch = 512

// enqueue hands line to the writer, waiting for room when the queue is
// full, and, when the log is required, for the line to be written. It
// reports false when the log is closed: the caller writes the line itself.
func (l *Log) enqueue(line *bytes.Buffer) (bool, error) {
	l.qmu.RLock()
	defer l.qmu.RUnlock()
	if l.qclosed {
		return false, nil
	}
	q := queued{line: line}
	if l.opts.required {
		q.done = make(chan error, 1)
	}
	select {
	case l.queue <- q:
	default:
		l.queueFull()
		l.queue <- q
	}
	if q.done == nil {
		return true, nil
	}
	return true, <-q.done
}

// queueFull counts a request that waits for room, and says so at most
// once a minute.
func (l *Log) queueFull() {
	l.opts.observer.AuditQueueFull()
	now := time.Now().UnixNano()
	if last := l.queueWarned.Load(); now-last > int64(time.Minute) && l.queueWarned.CompareAndSwap(last, now) {
		l.opts.logger.Warn("the decision log's queue is full: requests wait for the disk until it has room (no line is dropped)", "file", l.path, "queue", cap(l.queue))
	}
}

// writer writes the queued lines until the queue is closed.
func (l *Log) writer() {
	defer close(l.written)
	batch := make([]queued, 0, maxBatch)
	for q := range l.queue {
		batch = append(batch[:0], q)
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
