package audit_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/authz-proxy/authz-proxy/internal/audit"
	"github.com/authz-proxy/authz-proxy/internal/testkit"
)

func TestOneClientsBurstOnAStalledDiskNeverMakesAnotherClientWait(t *testing.T) {
	// Standard output on a disk that does not answer until resumed.
	var out testkit.Buffer
	resume := make(chan struct{})
	var obs observer
	l, err := audit.New(testkit.Gated{W: &out, Gate: resume}, "", audit.WithQueue(16), audit.WithObserver(&obs))
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
	testkit.WaitFor(t, "the noisy client's requests to wait for room", func() bool {
		obs.mu.Lock()
		defer obs.mu.Unlock()
		return obs.waits > 0
	})
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
	close(resume)
	noisy.Wait()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if n, q := strings.Count(out.String(), `"addr":"10.0.0.1:`), strings.Count(out.String(), `"addr":"10.0.0.2:4000"`); n != 40 || q != 1 {
		t.Errorf("decision lines: %d of the noisy client, %d of the other; want all 40 and 1, none dropped", n, q)
	}
}

func TestDecisionsOfMoreClientsThanTheSharesKeptAreAllWritten(t *testing.T) {
	var out testkit.Buffer
	l, err := audit.New(&out, "", audit.WithQueue(16))
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
	if n := strings.Count(out.String(), `"decision":"allow"`); n != 3000 {
		t.Errorf("%d decision lines of 3000 clients; want every one", n)
	}
}
