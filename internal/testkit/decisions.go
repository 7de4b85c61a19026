package testkit

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/authz-proxy/authz-proxy/internal/audit"
)

// Decision is one decision-log line read back: the record as audit.Parse
// reads it (the reader an auditor's tools use), its level and the line.
type Decision struct {
	audit.Record
	// Level is the line's log level: INFO for an allow, WARN for a deny, a
	// dry-run deny or a breakglass, ERROR for an error.
	Level string
	// Line is the line as written.
	Line string
}

// String is the line as written, for failure messages.
func (d Decision) String() string { return d.Line }

// Attestors lists the attestors of d.VerifiedBy, in order.
func (d Decision) Attestors() []string {
	names := make([]string, len(d.VerifiedBy))
	for i, v := range d.VerifiedBy {
		names[i] = v.Attestor
	}
	return names
}

// decisionFields are the fields every decision line carries (SPEC.md's
// decision log), whatever their values.
var decisionFields = []string{"time", "level", "decision", "image", "reference", "digest", "mediaType", "upstream", "rule", "enforcement", "reasons", "verifiedBy", "cached", "client", "durationMs"}

// ParseDecision reads one line of a decision log. ok is false for a JSON
// line that is not a decision (an operational log line, a checkpoint). A
// line that is not JSON, or a decision line that lacks a field of the
// decision log's schema or has reasons or verifiedBy that are not arrays,
// is an error: a user's tools could not read it.
func ParseDecision(line string) (d Decision, ok bool, err error) {
	r, err := audit.Parse([]byte(line))
	if errors.Is(err, audit.ErrNotDecision) {
		return Decision{}, false, nil
	}
	if err != nil {
		return Decision{}, false, fmt.Errorf("a decision-log line is not JSON (%v): %s", err, line)
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal([]byte(line), &fields); err != nil {
		return Decision{}, false, err
	}
	var missing []string
	for _, f := range decisionFields {
		if _, ok := fields[f]; !ok {
			missing = append(missing, f)
		}
	}
	if len(missing) > 0 {
		return Decision{}, false, fmt.Errorf("a decision line lacks %s: %s", strings.Join(missing, ", "), line)
	}
	for _, f := range []string{"reasons", "verifiedBy"} {
		if v := fields[f]; len(v) == 0 || v[0] != '[' {
			return Decision{}, false, fmt.Errorf("a decision line's %s is not an array: %s", f, line)
		}
	}
	var level struct{ Level string }
	_ = json.Unmarshal([]byte(line), &level) // it is JSON: audit.Parse read it
	return Decision{Record: r, Level: level.Level, Line: line}, true, nil
}

// Decisions reads the decision records of log, JSON lines as the proxy
// writes them, in order. Other JSON lines (operational lines, checkpoints)
// are skipped, and so is a last line not yet ended by a newline (a process
// still writing it). A line that ParseDecision refuses fails the test.
func Decisions(t testing.TB, log string) []Decision {
	t.Helper()
	end := strings.LastIndexByte(log, '\n')
	if end < 0 {
		return nil
	}
	var out []Decision
	for _, line := range strings.Split(log[:end], "\n") {
		if strings.TrimSpace(line) == "" {
			continue
		}
		d, ok, err := ParseDecision(line)
		if err != nil {
			t.Fatal(err)
		}
		if ok {
			out = append(out, d)
		}
	}
	return out
}

// LastDecision returns the newest decision of log about digest; none fails
// the test.
func LastDecision(t testing.TB, log, digest string) Decision {
	t.Helper()
	ds := Decisions(t, log)
	for i := len(ds) - 1; i >= 0; i-- {
		if ds[i].Digest == digest {
			return ds[i]
		}
	}
	t.Fatalf("no decision logged for %s; log:\n%s", digest, log)
	return Decision{}
}

// WaitForLine waits until the decision log at path holds text: its writer
// writes a line just after the answer, so a test that rotates the file (as
// logrotate would) waits for the line first.
func WaitForLine(t testing.TB, path, text string) {
	t.Helper()
	WaitFor(t, path+" to hold "+text, func() bool {
		b, _ := os.ReadFile(path)
		return strings.Contains(string(b), text)
	})
}
