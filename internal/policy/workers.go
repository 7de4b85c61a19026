package policy

import "time"

// workerIdle is how long an idle worker waits for more work.
const workerIdle = 10 * time.Second

// workers runs functions on goroutines that outlive them: a read ahead
// goes through the HTTP client, whose calls grow a new goroutine's stack
// several times (copying it each time, about a tenth of the proxy's CPU
// per cold decision); a worker keeps the stack it grew for the next one.
// A worker idle for workerIdle ends.
type workers struct {
	idle chan func()
}

func newWorkers() workers { return workers{idle: make(chan func())} }

// run starts fn on an idle worker, or on a new one when none is idle.
func (w *workers) run(fn func()) {
	select {
	case w.idle <- fn:
	default:
		go w.work(fn)
	}
}

func (w *workers) work(fn func()) {
	t := time.NewTimer(workerIdle)
	defer t.Stop()
	for {
		fn()
		t.Reset(workerIdle)
		select {
		case fn = <-w.idle:
		case <-t.C:
			return
		}
	}
}
