package policy

import (
	"encoding/json"
	"maps"
	"slices"
	"strings"
	"testing"

	"github.com/authz-proxy/authz-proxy/internal/verify"
	"github.com/authz-proxy/authz-proxy/internal/vuln"
)

// FuzzAPredicatesOwnTime feeds the readers of the time a predicate gives
// itself (ownTimes) predicates as a signer may write them: each gives a
// real time and the field it read, or no time; it never panics. For a
// scan, it is the time the scan's parser reads.
func FuzzAPredicatesOwnTime(f *testing.F) {
	types := slices.Sorted(maps.Keys(ownTimes))
	for i, seed := range []string{
		`{"scanner": {"result": {"Results": []}}, "metadata": {"scanFinishedOn": "2026-05-01T10:01:00Z"}}`,
		`{"runDetails": {"metadata": {"finishedOn": "2026-05-01T10:01:00.123456789+02:00"}}}`,
		`{"metadata": {"buildFinishedOn": "0001-01-01T00:00:00Z"}}`,
		`{"timestamp": 1714557660}`,
		`{"creationInfo": {"created": "2026-05-01"}}`,
		`{"metadata": {"timestamp": null}}`,
		`[]`, `null`,
	} {
		f.Add(uint8(i), []byte(seed))
	}
	f.Fuzz(func(t *testing.T, which uint8, raw []byte) {
		pt := types[int(which)%len(types)]
		p := &parsedAttestation{env: &verify.Envelope{Statement: &verify.Statement{PredicateType: pt, Predicate: json.RawMessage(raw)}}}
		at, from := p.ownTime()
		if at.IsZero() != (from == "") || !at.IsZero() && (at.Year() <= 1 || !strings.HasPrefix(from, "its ")) {
			t.Fatalf("%s: %q gives %s by %q", pt, raw, at, from)
		}
		if again, _ := p.ownTime(); !again.Equal(at) {
			t.Fatalf("read twice: %s, then %s", at, again)
		}
		if pt != VulnPredicateType {
			return
		}
		if s, err := vuln.ParseCosignVuln(raw); err == nil && !s.FinishedOn.Equal(at) && !(s.FinishedOn.IsZero() && at.IsZero()) {
			t.Fatalf("the scan finished at %s, its own time is %s", s.FinishedOn, at)
		}
	})
}
