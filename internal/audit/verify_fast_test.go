package audit

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"
)

// FuzzDecisionLineReadsWhatJSONReads holds verify's reading of a decision
// line without decoding it (decisionLine) to what encoding/json reads of
// it, for lines the proxy writes from any record and log id: escapes in
// every string, a log id that needs them (decoded whole), lines with and
// without a log id.
func FuzzDecisionLineReadsWhatJSONReads(f *testing.F) {
	f.Add("allow", "lab/app", `,"seq":1,"prev":"x"`, "\u2028<&>", "node-1", int64(1234567))
	f.Add("deny", "", "", "", "", int64(0))
	f.Add("breakglass", `,"logId":"evil"`, `"}`, "\\", `a"b`, int64(-5))
	f.Fuzz(func(t *testing.T, decision, image, reason, source, logID string, nanos int64) {
		if decision == "" {
			decision = Allow
		}
		var out bytes.Buffer
		opts := []Option{WithChain()}
		if logID != "" {
			opts = append(opts, WithLogID(logID))
		}
		l, err := New(&out, "", opts...)
		if err != nil {
			t.Fatal(err)
		}
		r := Record{Decision: decision, Image: image, Reference: reason, Reasons: []string{reason, source},
			VerifiedBy: []Verification{{Attestor: image, Source: source}}, Client: Client{Addr: source}, Source: source, Duration: time.Duration(nanos)}
		if err := l.Write(context.Background(), r); err != nil {
			t.Fatal(err)
		}
		line := []byte(strings.Split(out.String(), "\n")[1])
		var fast, slow entry
		ok := decisionLine(line, &fast)
		decodeEntry(line, &slow)
		if !slow.json || !slow.chained || slow.msg != "decision" {
			t.Fatalf("the proxy wrote a line encoding/json does not read as a chained decision: %s", line)
		}
		if !ok {
			if !strings.ContainsAny(logID, "\"\\") && strings.ToValidUTF8(logID, "") == logID && !strings.ContainsFunc(logID, func(r rune) bool { return r < 0x20 || r == '\u2028' || r == '\u2029' }) {
				t.Fatalf("a decision line with a plain log id was decoded whole: %s", line)
			}
			return
		}
		if fast.json != slow.json || fast.chained != slow.chained || fast.msg != slow.msg || fast.logID != slow.logID || fast.seq != slow.seq || fast.prev != slow.prev || !fast.time.Equal(slow.time) {
			t.Fatalf("read without decoding: %+v\ndecoded: %+v\nline: %s", fast, slow, line)
		}
	})
}
