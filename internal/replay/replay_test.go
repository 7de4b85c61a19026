package replay_test

import (
	"strings"
	"testing"

	"github.com/authz-proxy/authz-proxy/internal/policy"
	"github.com/authz-proxy/authz-proxy/internal/replay"
)

// envs puts clients of 10.1.0.0/16 and the identity prod-cluster in prod.
type envs struct{}

func (envs) Environment(c policy.Client) string {
	if len(c.Names) > 0 && c.Names[0] == "prod-cluster" || c.Addr.IsValid() && strings.HasPrefix(c.Addr.String(), "10.1.") {
		return "prod"
	}
	return ""
}

const d1, d2 = "sha256:1111111111111111111111111111111111111111111111111111111111111111", "sha256:2222222222222222222222222222222222222222222222222222222222222222"

func line(decision, ref, digest, rule, client, time string) string {
	return `{"time":"` + time + `","level":"INFO","msg":"decision","decision":"` + decision + `","image":"lab/app","reference":"` + ref +
		`","digest":"` + digest + `","mediaType":"application/vnd.oci.image.manifest.v1+json","upstream":"lab","rule":"` + rule +
		`","enforcement":"enforce","reasons":[],"verifiedBy":[],"cached":false,"client":` + client + `,"durationMs":1.5}`
}

func TestReadGroupsRecordsIntoPulls(t *testing.T) {
	node := `{"addr":"10.2.0.7:4000"}`
	prod := `{"addr":"192.0.2.1:4000","identity":"prod-cluster"}`
	tests := []struct {
		name                         string
		lines                        []string
		wantPulls, wantSkipped, bad  int
		wantWas, wantEnv, wantTag    string
		wantRecords, wantPullsOfLast int
	}{
		{"pulls of one digest by one tag are one pull; the last decision is the one that counts",
			[]string{line("deny", "v1", d1, "r", node, "2026-01-01T00:00:00Z"), line("allow", "v1", d1, "r", node, "2026-01-02T00:00:00Z")},
			1, 0, 0, "allow", "", "v1", 2, 2},
		{"a pull by digest has no tag",
			[]string{line("allow", d1, d1, "r", node, "2026-01-01T00:00:00Z")},
			1, 0, 0, "allow", "", "", 1, 1},
		{"the environment comes from the logged identity under the candidate configuration",
			[]string{line("allow", "v1", d1, "r", prod, "2026-01-01T00:00:00Z"), line("allow", "v1", d1, "r", node, "2026-01-01T00:00:00Z")},
			2, 0, 0, "allow", "", "v1", 2, 1},
		{"errors and signature artifacts are skipped, operational lines ignored, other lines counted",
			[]string{
				line("error", "v1", "", "", node, "2026-01-01T00:00:00Z"),
				line("allow", "sha256-1111.sig", d2, "(signature artifact)", node, "2026-01-01T00:00:00Z"),
				`{"time":"2026-01-01T00:00:00Z","level":"INFO","msg":"serving"}`,
				"panic: not JSON",
				line("dryrun-deny", "v2", d2, "r", node, "2026-01-01T00:00:00Z"),
			},
			1, 2, 1, "dryrun-deny", "", "v2", 3, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l, err := replay.Read(strings.NewReader(strings.Join(tt.lines, "\n")+"\n"), envs{})
			if err != nil {
				t.Fatal(err)
			}
			if len(l.Pulls) != tt.wantPulls || l.Skipped != tt.wantSkipped || l.Unreadable != tt.bad || l.Records != tt.wantRecords {
				t.Fatalf("%d pulls, %d records, %d skipped, %d unreadable; want %d, %d, %d, %d", len(l.Pulls), l.Records, l.Skipped, l.Unreadable, tt.wantPulls, tt.wantRecords, tt.wantSkipped, tt.bad)
			}
			last := l.Pulls[len(l.Pulls)-1]
			if last.Was.Decision != tt.wantWas || last.Environment != tt.wantEnv || last.Tag != tt.wantTag || last.Repository != "app" || last.Pulls != tt.wantPullsOfLast {
				t.Errorf("pull %+v; want was %s, environment %q, tag %q, %d pulls", *last, tt.wantWas, tt.wantEnv, tt.wantTag, tt.wantPullsOfLast)
			}
		})
	}
}

func TestSummarizeAndSortPutNewlyRefusedPullsFirst(t *testing.T) {
	res := func(image, was, now string) replay.Result {
		return replay.Result{Pull: replay.Pull{Image: image, Was: replay.Decision{Decision: was}}, Now: replay.Decision{Decision: now}}
	}
	results := []replay.Result{res("a", "allow", "allow"), res("b", "deny", "allow"), res("c", "allow", "deny"), res("d", "dryrun-deny", "error")}
	s := replay.Summarize(&replay.Log{Records: 7, Skipped: 1}, results)
	if s.Judged != 4 || s.Changed != 3 || s.Errors != 1 || s.ByChange["allow -> deny"] != 1 || s.Records != 7 || s.Skipped != 1 {
		t.Errorf("summary %+v", s)
	}
	replay.Sort(results)
	var order []string
	for _, r := range results {
		order = append(order, r.Image)
	}
	if got := strings.Join(order, ""); got != "cdba" {
		t.Errorf("order %s, want c d (newly refused), b (changed), a (unchanged)", got)
	}
}
