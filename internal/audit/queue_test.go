package audit_test

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/authz-proxy/authz-proxy/internal/audit"
)

// stalledSink is standard output on a disk that does not answer until
// resumed.
type stalledSink struct {
	resume chan struct{}
	mu     sync.Mutex
	buf    bytes.Buffer
}

func (s *stalledSink) Write(p []byte) (int, error) {
	<-s.resume
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.Write(p)
}

func TestOneClientsBurstOnAStalledDiskNeverMakesAnotherClientWait(t *testing.T) {
	sink := &stalledSink{resume: make(chan struct{})}
	var obs observer
	l, err := audit.New(sink, "", audit.WithQueue(16), audit.WithObserver(&obs))
	if err != nil {
		t.Fatal(err)
	}
	// Each client's lines name it as the proxy's shares do: its address
	// without the port, whatever connection it came on.
	decision := func(addr string) audit.Record {
		host, _, _ := strings.Cut(addr, ":")
		return audit.Record{Decision: audit.Allow, Image: "lab/app", Digest: "sha256:x", Client: audit.Client{Addr: addr, Party: host}}
	}
	// The noisy client sends more decisions than the whole queue holds,
	// from many connections; past its share (2 lines) its requests wait.
	var noisy sync.WaitGroup
	for i := range 40 {
		noisy.Go(func() {
			if err := l.Write(context.Background(), decision("10.0.0.1:"+string(rune('0'+i%10))+"000")); err != nil {
				t.Error(err)
			}
		})
	}
	for deadline := time.Now().Add(10 * time.Second); ; {
		obs.mu.Lock()
		waits := obs.waits
		obs.mu.Unlock()
		if waits > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the noisy client's requests never waited for room")
		}
		time.Sleep(time.Millisecond)
	}
	quiet := make(chan error, 1)
	go func() { quiet <- l.Write(context.Background(), decision("10.0.0.2:4000")) }()
	select {
	case err := <-quiet:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("another client's decision waited for the noisy client's lines on the stalled disk")
	}
	close(sink.resume)
	noisy.Wait()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	out := sink.buf.String()
	if n, q := strings.Count(out, `"addr":"10.0.0.1:`), strings.Count(out, `"addr":"10.0.0.2:4000"`); n != 40 || q != 1 {
		t.Errorf("decision lines: %d of the noisy client, %d of the other; want all 40 and 1, none dropped", n, q)
	}
}

func TestDecisionsOfMoreClientsThanTheSharesKeptAreAllWritten(t *testing.T) {
	sink := &stalledSink{resume: make(chan struct{})}
	close(sink.resume)
	l, err := audit.New(sink, "", audit.WithQueue(16))
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for i := range 3000 {
		wg.Go(func() {
			r := audit.Record{Decision: audit.Allow, Image: "lab/app", Digest: "sha256:x", Client: audit.Client{Addr: fmt.Sprintf("10.1.%d.%d:4000", i/250, i%250), Party: fmt.Sprintf("10.1.%d.%d", i/250, i%250)}}
			if err := l.Write(context.Background(), r); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(sink.buf.String(), `"decision":"allow"`); n != 3000 {
		t.Errorf("%d decision lines of 3000 clients; want every one", n)
	}
}
