package testkit_test

import (
	"context"
	"strings"
	"testing"

	"github.com/authz-proxy/authz-proxy/internal/audit"
	"github.com/authz-proxy/authz-proxy/internal/testkit"
)

func TestParseDecisionHoldsLinesToTheDecisionLogSchema(t *testing.T) {
	var log testkit.Buffer
	l, err := audit.New(&log, "")
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Write(context.Background(), audit.Record{Decision: audit.Deny, Image: "lab/app", Digest: "sha256:abc", Reasons: []string{"unsigned"}}); err != nil {
		t.Fatal(err)
	}
	written := strings.TrimSpace(log.String())
	tests := []struct {
		name, line   string
		wantDecision bool
		wantErr      string
	}{
		{"a line the proxy wrote", written, true, ""},
		{"an operational line", `{"time":"2026-01-01T00:00:00Z","level":"INFO","msg":"serving"}`, false, ""},
		{"a decision without cached", strings.Replace(written, `"cached":false,`, "", 1), false, "lacks cached"},
		{"reasons that are not a list", strings.Replace(written, `"reasons":["unsigned"]`, `"reasons":null`, 1), false, "reasons is not an array"},
		{"a line cut short", written[:len(written)/2], false, "not JSON"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, ok, err := testkit.ParseDecision(tt.line)
			if ok != tt.wantDecision || (err == nil) != (tt.wantErr == "") || err != nil && !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("ParseDecision: %v, %v; want decision %v, error %q", ok, err, tt.wantDecision, tt.wantErr)
			}
			if ok && (d.Decision != audit.Deny || d.Level != "WARN" || d.Line != tt.line) {
				t.Errorf("read %+v", d)
			}
		})
	}
	if ds := testkit.Decisions(t, log.String()+written[:10]); len(ds) != 1 {
		t.Errorf("%d decisions in a log of one and a line being written, want 1", len(ds))
	}
}
