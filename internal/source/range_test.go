package source

import "testing"

func TestRangesOfOneSpanAreServedFromTheStore(t *testing.T) {
	for _, tt := range []struct {
		header      string
		size        int64
		off, n      int64
		ok          bool
		unsatisfied bool
	}{
		{"bytes=10-19", 100, 10, 10, true, false},
		{"bytes=90-", 100, 90, 10, true, false},
		{"bytes=-3", 100, 97, 3, true, false},
		{"bytes=-300", 100, 0, 100, true, false},
		{"bytes=50-500", 100, 50, 50, true, false},
		{"bytes=100-", 100, 0, -1, false, true},
		{"bytes=-0", 100, 0, -1, false, true},
		{"bytes=0-0", 0, 0, -1, false, true},
		{"bytes=0-1,5-6", 100, 0, 0, false, false},
		{"bytes=5-1", 100, 0, 0, false, false},
		{"items=0-1", 100, 0, 0, false, false},
		{"bytes=x-1", 100, 0, 0, false, false},
	} {
		t.Run(tt.header, func(t *testing.T) {
			off, n, ok := parseRange(tt.header, tt.size)
			if ok != tt.ok || (ok && (off != tt.off || n != tt.n)) || tt.unsatisfied != (n < 0) {
				t.Errorf("parseRange(%q, %d) = %d, %d, %v; want %d, %d, %v", tt.header, tt.size, off, n, ok, tt.off, tt.n, tt.ok)
			}
		})
	}
}

// FuzzParseRange feeds parseRange whatever a client sends as Range: a
// range it serves lies within the blob, and anything else is either served
// whole or refused with 416.
func FuzzParseRange(f *testing.F) {
	for _, h := range []string{"bytes=0-9", "bytes=5-", "bytes=-5", "bytes=9223372036854775807-", "bytes=-9223372036854775808", "bytes= 1-2", "bytes=1-2,3-4", ""} {
		f.Add(h, int64(100))
	}
	f.Fuzz(func(t *testing.T, h string, size int64) {
		if size < 0 {
			return
		}
		off, n, ok := parseRange(h, size)
		switch {
		case ok:
			if off < 0 || n < 1 || off > size-n {
				t.Fatalf("parseRange(%q, %d) = %d, %d: outside the blob", h, size, off, n)
			}
		case n != 0 && n != -1:
			t.Fatalf("parseRange(%q, %d) = %d, %d, false: neither whole nor 416", h, size, off, n)
		}
	})
}
