package store

import (
	"testing"
	"time"
)

func TestSweepsRestNineTimesAsLongAsTheyTakeAndHalfTheTimeWhenAskedFor(t *testing.T) {
	for _, tt := range []struct {
		name           string
		interval, took time.Duration
		regular, asked time.Duration
	}{
		{"a small store sweeps every interval", time.Minute, 100 * time.Millisecond, time.Minute - 100*time.Millisecond, 100 * time.Millisecond},
		{"a sweep of a tenth of the interval still does", time.Minute, 6 * time.Second, 54 * time.Second, 6 * time.Second},
		{"a longer one rests nine times as long", time.Minute, 20 * time.Second, 180 * time.Second, 20 * time.Second},
		{"one longer than the interval is never back to back", time.Minute, 2 * time.Minute, 18 * time.Minute, 2 * time.Minute},
	} {
		t.Run(tt.name, func(t *testing.T) {
			regular, asked := rest(tt.interval, tt.took)
			if regular != tt.regular || asked != tt.asked {
				t.Errorf("after a sweep of %v every %v: rests %v (asked for: %v), want %v (%v)", tt.took, tt.interval, regular, asked, tt.regular, tt.asked)
			}
		})
	}
}
