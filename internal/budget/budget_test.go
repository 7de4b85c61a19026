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
		l, err := b.Take(ctx, 4<<20)
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
		l, err := b.Take(ctx, budget.Large)
		if err != nil {
			t.Fatalf("a small request was refused while large ones hold the budget: %v", err)
		}
		defer l.Release()
	}
	if _, err := b.Take(ctx, budget.Large+1); !errors.Is(err, budget.ErrExhausted) {
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
				held, err := b.Take(ctx, 14<<20)
				if err != nil {
					t.Fatal(err)
				}
				got := make(chan error, 1)
				go func() {
					l, err := b.Take(ctx, 4<<20)
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
	l, err := b.Take(context.Background(), 1<<40)
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
		l, err := bu.Take(ctx, 4<<20)
		if err != nil {
			b.Fatal(err)
		}
		_ = l.Resize(ctx, 600)
		l.Release()
	}
}
