package report_test

import (
	"bytes"
	"io"
	"os"
	"testing"

	"github.com/authz-proxy/authz-proxy/internal/report"
)

// FuzzBuild feeds the report decision logs as they may come: edited,
// damaged, or other JSON. Building and rendering it must never fail or
// panic on what a log holds.
func FuzzBuild(f *testing.F) {
	seed, err := os.ReadFile("../../examples/decision-log/decisions.jsonl")
	if err != nil {
		f.Fatal(err)
	}
	f.Add(seed)
	f.Add([]byte(`{"time":"2026-01-01T00:00:00Z","msg":"decision","decision":"breakglass","reasons":["breakglass x until y: z"]}` + "\n"))
	f.Add([]byte(`{"time":"0001-01-01T00:00:00Z","msg":"decision","decision":"deny"}` + "\n" + `{"time":"9999-12-31T23:59:59Z","msg":"decision","decision":"error"}` + "\n"))
	f.Add([]byte(`{"time":"2026-01-01T00:00:00Z","msg":"decision","decision":"allow","image":"a","digest":"d","logId":"r1"}` + "\n" +
		`{"time":"2026-01-01T01:00:00Z","msg":"decision","decision":"revoked","image":"a","digest":"d","reference":"v1","logId":"r1"}` + "\n" +
		`{"time":"2026-01-01T00:01:00Z","msg":"checkpoint","reason":"interval","logId":"r2"}` + "\n" +
		`{"time":"2026-01-01T00:02:00Z","msg":"checkpoint","reason":"interval","logId":"r2"}` + "\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := report.Build([]report.Source{{Name: "fuzz", R: bytes.NewReader(data)}}, report.Window{})
		if err != nil {
			return // a line over the size limit
		}
		for _, render := range []func(io.Writer) error{r.Text, r.JSON, r.HTML} {
			if err := render(io.Discard); err != nil {
				t.Fatalf("rendering a report of %q: %v", data, err)
			}
		}
	})
}
