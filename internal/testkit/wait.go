package testkit

import (
	"io"
	"testing"
	"time"
)

// WaitFor polls cond until it holds, failing t with what after a minute:
// for state written just after an answer (a decision line, a fill ending).
func WaitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(time.Minute); !cond(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not after a minute", what)
		}
	}
}

// Gated is a disk that writes nothing until Gate is closed: each Write
// waits for it, then writes to W.
type Gated struct {
	W    io.Writer
	Gate <-chan struct{}
}

// Write writes p to W once Gate is closed.
func (g Gated) Write(p []byte) (int, error) {
	<-g.Gate
	return g.W.Write(p)
}
