package audit_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/authz-proxy/authz-proxy/internal/audit"
)

// FuzzParse feeds the decision-log reader (used by replay, report and an
// auditor's tools) lines as a log collector may hand them over: cut short,
// edited, or lines of other programs. A line is a decision, not a
// decision (skipped), or malformed (counted as unreadable), nothing else;
// and a decision read, written by the proxy's own writer and read again is
// the decision first read: nothing a reader sees is lost or changed by a
// round trip.
func FuzzParse(f *testing.F) {
	var seed bytes.Buffer
	l, err := audit.New(&seed, "")
	if err != nil {
		f.Fatal(err)
	}
	secs := int64(3)
	write(f, l, audit.Record{
		Decision: audit.Allow, Image: "lab/app", Reference: "v1", Digest: "sha256:abc", MediaType: "application/vnd.oci.image.manifest.v1+json",
		Upstream: "lab", Rule: "signed", Enforcement: "enforce", Reasons: []string{"signed by ci"},
		VerifiedBy: []audit.Verification{{Attestor: "ci", KeyID: "sha256:k", Source: "tag", LogIndex: &secs}},
		Client:     audit.Client{Addr: "10.1.2.3:4567", Identity: "node-1"}, Duration: 1500 * time.Microsecond,
	})
	f.Add(bytes.TrimSpace(seed.Bytes()))
	f.Add([]byte(`{"time":"2026-01-01T00:00:00Z","level":"INFO","msg":"serving"}`))
	f.Add([]byte(`{"msg":"decision","decision":"deny","durationMs":-1}`))
	f.Add([]byte(`{"msg":"decision","decision":"deny","durationMs":1e300,"reasons":null}`))
	f.Add([]byte(`{"msg":"decision","decision":"deny","time":"not a time"}`))
	// A float that is not a whole number of nanoseconds: read to the
	// microsecond, as written.
	f.Add([]byte(`{"msg":"decision","decision":"allow","durationMs":1.001}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := audit.Parse(data)
		if err != nil {
			if !errors.Is(err, audit.ErrNotDecision) && !errors.Is(err, audit.ErrMalformed) {
				t.Fatalf("an error that is neither ErrNotDecision nor ErrMalformed: %v", err)
			}
			if errors.Is(err, audit.ErrNotDecision) && !json.Valid(data) {
				t.Fatalf("a line that is not JSON was taken for another program's line: %q", data)
			}
			return
		}
		if r.Decision == "" || r.Duration < 0 {
			t.Fatalf("read a decision without a decision or with a negative duration: %+v", r)
		}
		var out bytes.Buffer
		w, err := audit.New(&out, "")
		if err != nil {
			t.Fatal(err)
		}
		if err := w.Write(context.Background(), r); err != nil {
			t.Fatal(err)
		}
		again, err := audit.Parse(bytes.TrimSpace(out.Bytes()))
		if err != nil {
			t.Fatalf("what was read does not read back once written (%v): %s", err, out.Bytes())
		}
		if a, b := comparable(r), comparable(again); a != b {
			t.Fatalf("a decision changed in a round trip:\nread    %s\nwritten %s\nread as %s", data, out.Bytes(), b)
		}
	})
}

// comparable is r as JSON without what Write sets anew (the time, the
// place in a chain, the log id) and with empty lists as none.
func comparable(r audit.Record) string {
	r.Time, r.Seq, r.Prev, r.LogID = time.Time{}, 0, "", ""
	if len(r.Reasons) == 0 {
		r.Reasons = nil
	}
	if len(r.VerifiedBy) == 0 {
		r.VerifiedBy = nil
	}
	b, _ := json.Marshal(r)
	return string(b)
}
