package budget_test

import (
	"errors"
	"testing"

	"github.com/authz-proxy/authz-proxy/internal/budget"
)

func TestLargeRequestsLeaveRoomForSmallOnes(t *testing.T) {
	b := budget.New(32 << 20) // reserve: 4 MiB
	var releases []func()
	for {
		release, err := b.Acquire(4 << 20)
		if errors.Is(err, budget.ErrExhausted) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		releases = append(releases, release)
	}
	if len(releases) != 7 {
		t.Fatalf("%d large requests admitted, want 7 (28 of 32 MiB, leaving the 4 MiB reserve)", len(releases))
	}
	for range 64 {
		release, err := b.Acquire(budget.Large)
		if err != nil {
			t.Fatalf("a small request was refused while large ones hold the budget: %v", err)
		}
		defer release()
	}
	if _, err := b.Acquire(budget.Large + 1); !errors.Is(err, budget.ErrExhausted) {
		t.Fatalf("a large request was admitted into the reserve: %v", err)
	}
	releases[0]()
	releases[0]() // twice gives back once
	if got := b.InUse(); got != 6*(4<<20)+64*budget.Large {
		t.Fatalf("in use %d after one release", got)
	}
}

func TestNilBudgetAdmitsEverything(t *testing.T) {
	var b *budget.Budget
	release, err := b.Acquire(1 << 40)
	if err != nil {
		t.Fatal(err)
	}
	release()
}
