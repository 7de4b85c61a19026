package store_test

import (
	"context"
	"errors"
	"io"
	"testing"

	"github.com/authz-proxy/authz-proxy/internal/store"
	"github.com/authz-proxy/authz-proxy/internal/testkit"
)

// startAbandoned starts a fill of a blob of size bytes whose upstream holds
// the body after 64 KiB, and hangs up once the upstream answered: a fill
// nobody reads.
func startAbandoned(t *testing.T, s *store.Store, scope store.Scope, size int) *origin {
	t.Helper()
	b, d := blob(t, size)
	o := &origin{blob: b, gate: make(chan struct{})}
	t.Cleanup(func() { close(o.gate) })
	r, err := s.Get(context.Background(), scope, d, o)
	if err != nil {
		t.Fatal(err)
	}
	r.Close()
	return o
}

func TestAFillNobodyReadsKeepsNoWindow(t *testing.T) {
	s := fsStore(t, t.TempDir(), store.Options{})
	b, d := blob(t, 8<<20)
	o := &origin{blob: b, gate: make(chan struct{}), gateAt: 2 << 20}
	defer close(o.gate)
	r, err := s.Get(context.Background(), app, d, o)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(r, make([]byte, 1<<20)); err != nil {
		t.Fatal(err)
	}
	if st := s.Stats(); st.WindowBytes < 1<<20 {
		t.Fatalf("a fill being read: %d window bytes, want the bytes received", st.WindowBytes)
	}
	r.Close() // the client hangs up
	if st := s.Stats(); st.FillsInFlight != 1 || st.WindowBytes != 0 {
		t.Errorf("a fill nobody reads: %d in flight, %d window bytes; want it going on, with no window", st.FillsInFlight, st.WindowBytes)
	}
}

func TestFillsPastTheirBoundCancelTheOnesNobodyReadsFirst(t *testing.T) {
	s := fsStore(t, t.TempDir(), store.Options{MaxFills: 2, MaxFillsPerUpstream: 2})
	startAbandoned(t, s, app, 1<<20)
	startAbandoned(t, s, app, 1<<20)
	// A client waits for a third blob: one abandoned fill makes room.
	b, d := blob(t, 100<<10)
	if !mustGetOK(t, s, app, d, &origin{blob: b}) {
		t.Fatal("a fill a client waits for did not start while abandoned fills held the bound")
	}
	if st := s.Stats(); st.FillsCancelled != 1 {
		t.Errorf("%d fills cancelled, want 1", st.FillsCancelled)
	}

	// Fills that clients read are never cancelled: past the bound the
	// blob streams from the upstream without being stored.
	s2 := fsStore(t, t.TempDir(), store.Options{MaxFills: 1, MaxFillsPerUpstream: 1})
	held, hd := blob(t, 1<<20)
	ho := &origin{blob: held, gate: make(chan struct{})}
	defer close(ho.gate)
	r, err := s2.Get(context.Background(), app, hd, ho)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	nb, nd := blob(t, 10<<10)
	if _, err := s2.Get(context.Background(), app, nd, &origin{blob: nb}); !errors.Is(err, store.ErrNotStored) {
		t.Fatalf("past the bound with every fill read: %v, want ErrNotStored", err)
	}
	if st := s2.Stats(); st.FillsRefused != 1 || st.FillsCancelled != 0 {
		t.Errorf("refused %d, cancelled %d; want 1 and 0", st.FillsRefused, st.FillsCancelled)
	}
}

func TestOneUpstreamAtItsShareOfFillsNeverRefusesAnother(t *testing.T) {
	s := fsStore(t, t.TempDir(), store.Options{MaxFills: 4, MaxFillsPerUpstream: 2})
	slow := store.Scope{Upstream: "slow.example", Repository: "x/y"}
	var readers []io.Closer
	for range 2 {
		b, d := blob(t, 1<<20)
		o := &origin{blob: b, gate: make(chan struct{})}
		defer close(o.gate)
		r, err := s.Get(context.Background(), slow, d, o)
		if err != nil {
			t.Fatal(err)
		}
		readers = append(readers, r)
	}
	defer func() {
		for _, r := range readers {
			r.Close()
		}
	}()
	b, d := blob(t, 10<<10)
	if _, err := s.Get(context.Background(), slow, d, &origin{blob: b}); !errors.Is(err, store.ErrNotStored) {
		t.Errorf("slow.example past its share: %v, want ErrNotStored", err)
	}
	if !mustGetOK(t, s, app, d, &origin{blob: b}) {
		t.Error("another upstream was refused a fill while slow.example held its share")
	}
	if st := s.Stats(); st.FillsByUpstream["slow.example"] != 2 {
		t.Errorf("fills by upstream %v", st.FillsByUpstream)
	}
}

func TestTheWindowsOfAllFillsStayWithinTheirBound(t *testing.T) {
	const bound = 1 << 20
	s := fsStore(t, t.TempDir(), store.Options{MaxWindowBytes: bound})
	var readers []*store.Reader
	for range 4 {
		b, d := blob(t, 4<<20)
		r, err := s.Get(context.Background(), app, d, &origin{blob: b})
		if err != nil {
			t.Fatal(err)
		}
		readers = append(readers, r)
	}
	// Nobody reads past the first bytes while the fills run to their end.
	testkit.WaitFor(t, "the fills to end", func() bool { return s.Stats().FillsInFlight == 0 })
	if w := s.Stats().WindowBytes; w > bound+4*(256<<10) {
		t.Errorf("%d window bytes, over the bound of %d (and a chunk a fill)", w, bound)
	}
	// The readers fell behind: they continue from the store, whole.
	for _, r := range readers {
		n, err := io.Copy(io.Discard, r)
		if err != nil || n != 4<<20 {
			t.Errorf("a reader behind the window read %d bytes, %v", n, err)
		}
		r.Close()
	}
	if w := s.Stats().WindowBytes; w != 0 {
		t.Errorf("%d window bytes once every reader is done", w)
	}
}

// mustGetOK is mustGet that reports success instead of whether it was a
// hit.
func mustGetOK(t *testing.T, s *store.Store, scope store.Scope, d string, o *origin) bool {
	t.Helper()
	got, _, err := get(t, s, scope, d, o)
	return err == nil && string(got) == string(o.blob)
}
