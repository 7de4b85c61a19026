package budget_test

import (
	"context"
	"errors"
	"testing"
	"testing/synctest"
	"time"

	"github.com/authz-proxy/authz-proxy/internal/budget"
)

func TestLargeRequestsLeaveRoomForSmallOnes(t *testing.T) {
	ctx := context.Background()
	b := budget.New(32<<20, 10*time.Millisecond) // reserve: 4 MiB
	var leases []*budget.Lease
	for {
		l, err := b.Take(ctx, lab, 4<<20)
		if errors.Is(err, budget.ErrExhausted) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		leases = append(leases, l)
	}
	if len(leases) != 7 {
		t.Fatalf("%d large requests admitted, want 7 (28 of 32 MiB, leaving the 4 MiB reserve)", len(leases))
	}
	for range 64 {
		l, err := b.Take(ctx, lab, budget.Large)
		if err != nil {
			t.Fatalf("a small request was refused while large ones hold the budget: %v", err)
		}
		defer l.Release()
	}
	if _, err := b.Take(ctx, lab, budget.Large+1); !errors.Is(err, budget.ErrExhausted) {
		t.Fatalf("a large request was admitted into the reserve: %v", err)
	}
	leases[0].Release()
	leases[0].Release() // twice gives back once
	if got := b.InUse(); got != 6*(4<<20)+64*budget.Large {
		t.Fatalf("in use %d after one release", got)
	}
}

func TestALargeRequestWaitsForRoom(t *testing.T) {
	// In a bubble, time is the bubble's: synctest.Wait returns once the
	// request is blocked waiting, and the minute it may wait passes only
	// when everything else waits too.
	tests := []struct {
		name string
		// makeRoom frees room, or not, while the request waits.
		makeRoom bool
		wantErr  error
	}{
		{"admitted once room is made", true, nil},
		{"refused when no room is made within the wait", false, budget.ErrExhausted},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				ctx := context.Background()
				b := budget.New(16<<20, time.Minute)
				held, err := b.Take(ctx, lab, 14<<20)
				if err != nil {
					t.Fatal(err)
				}
				got := make(chan error, 1)
				go func() {
					l, err := b.Take(ctx, lab, 4<<20)
					got <- err
					l.Release()
				}()
				synctest.Wait()
				select {
				case err := <-got:
					t.Fatalf("answered at once while the budget was full: %v", err)
				default:
				}
				if tt.makeRoom {
					if err := held.Resize(ctx, 1<<20); err != nil { // the upstream said 1 MiB
						t.Fatal(err)
					}
				}
				if err := <-got; !errors.Is(err, tt.wantErr) {
					t.Fatalf("the waiting request got %v, want %v", err, tt.wantErr)
				}
			})
		})
	}
}

func TestNilBudgetAdmitsEverything(t *testing.T) {
	var b *budget.Budget
	l, err := b.Take(context.Background(), lab, 1<<40)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Resize(context.Background(), 1<<41); err != nil {
		t.Fatal(err)
	}
	l.Release()
}

// BenchmarkTakeAndRelease measures the accounting of one manifest when
// nobody waits, as on every pull.
func BenchmarkTakeAndRelease(b *testing.B) {
	bu := budget.New(64<<20, time.Second)
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		l, err := bu.Take(ctx, lab, 4<<20)
		if err != nil {
			b.Fatal(err)
		}
		_ = l.Resize(ctx, 600)
		l.Release()
	}
}

var lab = budget.UpstreamParty("lab")

func TestAPartyAtItsShareNeverRefusesAnother(t *testing.T) {
	ctx := context.Background()
	b := budget.New(128<<20, 0)
	b.SetShares(64<<20, 32<<20)
	slow := budget.UpstreamParty("slow.example")
	// The hanging upstream's requests take its share, and no more.
	var held []*budget.Lease
	for {
		l, err := b.Take(ctx, slow, 4<<20)
		if err != nil {
			var se *budget.ShareError
			if !errors.As(err, &se) || se.Party != slow || !errors.Is(err, budget.ErrExhausted) {
				t.Fatalf("refused with %v, want slow.example's share", err)
			}
			break
		}
		held = append(held, l)
	}
	if len(held) != 14 {
		t.Fatalf("slow.example holds %d requests of 4 MiB, want 14: its share of 64 MiB but the eighth left for small ones", len(held))
	}
	// Another upstream, and a client, still get large requests in.
	for _, p := range []budget.Party{lab, budget.ClientParty("10.0.0.7")} {
		l, err := b.Take(ctx, p, 4<<20)
		if err != nil {
			t.Fatalf("%s was refused while slow.example holds its share: %v", p, err)
		}
		l.Release()
	}
	// A client at its share is refused its next request, small ones too;
	// another client is not.
	greedy := budget.ClientParty("10.0.0.66")
	for range 7 {
		if _, err := b.Take(ctx, greedy, 4<<20); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := b.Take(ctx, greedy, 4<<20); !errors.Is(err, budget.ErrExhausted) {
		t.Errorf("a large request into the last eighth of a client's share was admitted: %v", err)
	}
	// Its everyday manifests still fit, up to the share.
	for range 64 {
		if _, err := b.Take(ctx, greedy, budget.Large); err != nil {
			t.Fatalf("an everyday manifest of a client holding large ones: %v", err)
		}
	}
	if _, err := b.Take(ctx, greedy, 1024); !errors.Is(err, budget.ErrExhausted) {
		t.Errorf("a client past its share was admitted: %v", err)
	}
	if l, err := b.Take(ctx, budget.ClientParty("10.0.0.8"), 1024); err != nil {
		t.Errorf("another client was refused: %v", err)
	} else {
		l.Release()
	}
	s := b.Snapshot()
	if s.Upstreams["slow.example"] != 56<<20 || s.ClientsAtShare != 1 || s.MaxClient != 32<<20 || s.Refused["upstream"] != 1 || s.Refused["client"] != 2 || s.RefusedUpstream["slow.example"] != 1 {
		t.Errorf("snapshot %+v", s)
	}
	for _, l := range held {
		l.Release()
	}
	if s := b.Snapshot(); s.Upstreams["slow.example"] != 0 {
		t.Errorf("released, slow.example still holds %d", s.Upstreams["slow.example"])
	}
}

func TestTryTakeNeverWaits(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := budget.New(16<<20, time.Minute)
		held, err := b.Take(context.Background(), lab, 14<<20)
		if err != nil {
			t.Fatal(err)
		}
		defer held.Release()
		start := time.Now()
		if _, err := b.TryTake(budget.ClientParty("c"), 4<<20); !errors.Is(err, budget.ErrExhausted) {
			t.Fatalf("TryTake with no room: %v", err)
		}
		if waited := time.Since(start); waited != 0 {
			t.Errorf("TryTake waited %s (bubble time)", waited)
		}
	})
}
