package report_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/authz-proxy/authz-proxy/internal/audit"
	"github.com/authz-proxy/authz-proxy/internal/report"
)

// recorded is a decision log that authz-proxy wrote (examples/decision-log:
// a rotated, gzipped file and the current one), with an allowlisted image,
// signed and unsigned pulls, a dryrun rule, a breakglass entry and an
// upstream that was down.
var recorded = []string{"../../examples/decision-log/decisions.jsonl.1.gz", "../../examples/decision-log/decisions.jsonl"}

func build(t *testing.T, w report.Window) *report.Report {
	t.Helper()
	var sources []report.Source
	for _, p := range recorded {
		rc, err := audit.Open(p)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { rc.Close() })
		sources = append(sources, report.Source{Name: p, R: rc})
	}
	r, err := report.Build(sources, w)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestReportOfARecordedLogCountsWhatAuditorsAskAbout(t *testing.T) {
	r := build(t, report.Window{})
	if r.Records != 13 || r.Unreadable != 0 {
		t.Errorf("%d records, %d unreadable; want 13 decisions (the 3 checkpoints are not decisions), 0", r.Records, r.Unreadable)
	}
	want := []report.Count{{"allow", 4}, {"deny", 3}, {"dryrun-deny", 2}, {"breakglass", 2}, {"error", 2}, {"revoked", 0}}
	if !equal(r.Decisions, want) {
		t.Errorf("decisions %v, want %v", r.Decisions, want)
	}
	d := r.Denials
	if d.Total != 3 || !equal(d.ByImage, []report.Count{{"lab/demo/app", 3}}) || !equal(d.ByRule, []report.Count{{"demo-images", 3}}) ||
		!equal(d.ByEnvironment, []report.Count{{"ci", 3}}) {
		t.Errorf("denials by image %v, rule %v, environment %v", d.ByImage, d.ByRule, d.ByEnvironment)
	}
	if len(d.Pulls) != 1 || d.Pulls[0].Pulls != 3 || d.Pulls[0].Tags[0] != "unsigned" || !strings.HasPrefix(d.Pulls[0].Reason, "no cosign signature found") {
		t.Errorf("denied pulls %+v; want the unsigned image's digest, pulled 3 times", d.Pulls)
	}
	if len(r.DryRun) != 1 || r.DryRun[0].Image != "lab/demo/multiarch" || r.DryRun[0].Rule != "qa-approved" || r.DryRun[0].Pulls != 2 {
		t.Errorf("dryrun %+v; want lab/demo/multiarch, which qa-approved would have denied twice", r.DryRun)
	}
	bg := r.Breakglass
	if len(bg) != 1 || bg[0].Entry != "lab/demo/referrer" || bg[0].Reason != "INC-4211 release blocked by the signing outage" ||
		!bg[0].Expires.Equal(time.Date(2027, 1, 31, 0, 0, 0, 0, time.UTC)) || bg[0].Pulls != 2 {
		t.Errorf("breakglass %+v; want the INC-4211 entry, expiring 2027-01-31, used twice", bg)
	}
	if len(r.Errors) != 1 || r.Errors[0].Upstream != "mirror" || r.Errors[0].Count != 2 || !strings.Contains(r.Errors[0].Reasons[0].Key, "connection refused") {
		t.Errorf("errors %+v; want 2 on mirror, connection refused", r.Errors)
	}
	if len(r.Clients) != 1 || r.Clients[0].Client != "127.0.0.1" || r.Clients[0].Environment != "ci" || r.Clients[0].Decisions != 13 || r.Clients[0].Denials != 3 || r.Clients[0].Errors != 2 {
		t.Errorf("clients %+v; want 127.0.0.1 of ci with 13 decisions, 3 denials, 2 errors", r.Clients)
	}
}

func equal(a, b []report.Count) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestReportWindowKeepsOnlyTheRecordsWithinIt(t *testing.T) {
	all := build(t, report.Window{})
	mid := all.First.Add(all.Last.Sub(all.First) / 2)
	before, after := build(t, report.Window{Until: mid}), build(t, report.Window{Since: mid})
	if before.Records+after.Records != all.Records || before.Records == 0 || after.Records == 0 {
		t.Errorf("%d records before %s and %d from then on; want the %d split between them", before.Records, mid, after.Records, all.Records)
	}
	if !after.First.After(mid) && !after.First.Equal(mid) {
		t.Errorf("the window from %s holds a record of %s", mid, after.First)
	}
}

func TestReportGroupsReasonsWithDigestsElided(t *testing.T) {
	got := report.Reason([]string{"a signature by attestor release was made for sha256:" + strings.Repeat("ab", 32) + ", not for this digest"})
	if got != "a signature by attestor release was made for sha256:…, not for this digest" {
		t.Errorf("got %q", got)
	}
}

// TestHTMLReportIsOneSelfContainedPage checks what opening the file
// offline needs: nothing fetched, the charts inline, the denied pulls in a
// table, and log content escaped.
func TestHTMLReportIsOneSelfContainedPage(t *testing.T) {
	r := build(t, report.Window{})
	r.Denials.Pulls[0].Reason = `<script>alert("from a log line")</script>`
	var b bytes.Buffer
	if err := r.HTML(&b); err != nil {
		t.Fatal(err)
	}
	html := b.String()
	for _, want := range []string{`<table id="denials">`, "lab/demo/app", `<table id="dryrun">`, `<table id="breakglass">`, "INC-4211", `<table id="errors">`, `<svg id="timeline"`, "&lt;script&gt;"} {
		if !strings.Contains(html, want) {
			t.Errorf("the page lacks %s", want)
		}
	}
	if m := regexp.MustCompile(`(?i)(src|href)\s*=|url\(|@import|<script`).FindString(html); m != "" {
		t.Errorf("the page refers to something outside it (%q): it must open offline", m)
	}
}

func TestJSONReportRoundTrips(t *testing.T) {
	r := build(t, report.Window{})
	var b bytes.Buffer
	if err := r.JSON(&b); err != nil {
		t.Fatal(err)
	}
	var back report.Report
	if err := json.Unmarshal(b.Bytes(), &back); err != nil {
		t.Fatal(err)
	}
	if back.Records != r.Records || len(back.Breakglass) != 1 || back.Denials.Total != 3 {
		t.Errorf("read back %+v", back)
	}
}

func TestImagesAllowedWithSuppressedFindingsAreListedOncePerFinding(t *testing.T) {
	line := func(decision, at string) string {
		return `{"time":"` + at + `","level":"INFO","msg":"decision","decision":"` + decision + `","image":"lab/acme/app","reference":"v1",` +
			`"digest":"sha256:` + strings.Repeat("1", 64) + `","mediaType":"application/vnd.oci.image.manifest.v1+json","upstream":"lab","rule":"scanned","enforcement":"enforce",` +
			`"reasons":["vulnerabilities: ..."],"verifiedBy":[{"attestor":"security","keyId":"sha256:k","source":"tag x.att","predicateType":"https://cosign.sigstore.dev/attestation/vuln/v1","attestation":"sha256:a",` +
			`"suppressed":[{"id":"CVE-2026-0001","severity":"CRITICAL","package":"openssl","version":"3.0.1","by":"vex","detail":"not_affected (vulnerable_code_not_in_execute_path), attestor vendor, attestation sha256:b"},` +
			`{"id":"CVE-2026-0002","severity":"HIGH","package":"zlib","version":"1.2.13","by":"exception","detail":"INC-77","expires":"2027-01-31T00:00:00Z"}]}],` +
			`"cached":false,"client":{"addr":"127.0.0.1:1"},"durationMs":1}` + "\n"
	}
	log := line("allow", "2026-05-01T10:00:00Z") + line("allow", "2026-05-01T11:00:00Z") + line("deny", "2026-05-01T12:00:00Z")
	r, err := report.Build([]report.Source{{Name: "decisions.jsonl", R: strings.NewReader(log)}}, report.Window{})
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Suppressed) != 2 {
		t.Fatalf("suppressed %+v; want the two findings, once each", r.Suppressed)
	}
	vex, exc := r.Suppressed[0], r.Suppressed[1]
	if vex.ID != "CVE-2026-0001" || vex.By != "vex" || vex.Pulls != 2 || vex.Scanner != "security" || !strings.Contains(vex.Detail, "attestor vendor") ||
		exc.ID != "CVE-2026-0002" || exc.By != "exception" || !exc.Expires.Equal(time.Date(2027, 1, 31, 0, 0, 0, 0, time.UTC)) {
		t.Errorf("suppressed %+v", r.Suppressed)
	}
	var text, html bytes.Buffer
	if err := r.Text(&text); err != nil {
		t.Fatal(err)
	}
	if err := r.HTML(&html); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(text.String(), "IMAGES ALLOWED WITH SUPPRESSED FINDINGS") || !strings.Contains(text.String(), "CVE-2026-0002  HIGH      zlib 1.2.13") {
		t.Errorf("text report:\n%s", text.String())
	}
	if !strings.Contains(html.String(), `<table id="suppressed">`) || !strings.Contains(html.String(), "<code>CVE-2026-0001</code>") {
		t.Errorf("the HTML report lacks the suppressed findings table")
	}
}

// logLine is a decision-log line of the log logID at t.
func logLine(t time.Time, logID, msg, rest string) string {
	return fmt.Sprintf(`{"time":%q,"level":"INFO","msg":%q,%s,"logId":%q}`, t.Format(time.RFC3339Nano), msg, rest, logID) + "\n"
}

func decisionLine(t time.Time, logID, decision, digest, rule, reason string) string {
	return logLine(t, logID, "decision", fmt.Sprintf(`"decision":%q,"image":"lab/app","reference":"v1","digest":%q,"upstream":"lab","rule":%q,"enforcement":"enforce","reasons":[%q],"verifiedBy":[],"cached":false,"client":{"addr":"10.0.0.1:4000"},"durationMs":1`, decision, digest, rule, reason))
}

func TestReportMergesReplicasAndFlagsOneThatWentQuiet(t *testing.T) {
	start := time.Date(2026, 8, 1, 10, 0, 0, 0, time.UTC)
	logs := map[string]string{}
	for _, r := range []struct {
		id       string
		until    time.Duration
		shutdown bool
	}{{"replica-a", 90 * time.Minute, false}, {"replica-b", 42 * time.Minute, false}, {"replica-c", 50 * time.Minute, true}} {
		var b strings.Builder
		for m := time.Duration(0); m <= r.until; m += time.Minute {
			b.WriteString(logLine(start.Add(m), r.id, "checkpoint", `"reason":"interval"`))
			b.WriteString(decisionLine(start.Add(m+time.Second), r.id, "allow", "sha256:"+strings.Repeat("a", 64), "acme", "signed"))
		}
		if r.shutdown {
			b.WriteString(logLine(start.Add(r.until+2*time.Second), r.id, "checkpoint", `"reason":"shutdown"`))
		}
		logs[r.id] = b.String()
	}
	var sources []report.Source
	for _, id := range []string{"replica-a", "replica-b", "replica-c"} {
		sources = append(sources, report.Source{Name: id + "/decisions.jsonl", R: strings.NewReader(logs[id])})
	}
	r, err := report.Build(sources, report.Window{})
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Replicas) != 3 || r.Replicas[0].Quiet || !r.Replicas[1].Quiet || r.Replicas[2].Quiet || !r.Replicas[2].Stopped || r.Replicas[0].Decisions != 91 {
		t.Errorf("replicas %+v; want replica-b alone quiet, replica-c stopped", r.Replicas)
	}
	var text bytes.Buffer
	if err := r.Text(&text); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"QUIET: replica replica-b: nothing since 2026-08-01T10:42:01Z (others until 2026-08-01T11:30:01Z)",
		"REPLICAS (3 logs merged)", "replica-c  2026-08-01T10:00:00Z  2026-08-01T10:50:02Z  51         stopped (its shutdown checkpoint)",
	} {
		if !strings.Contains(text.String(), want) {
			t.Errorf("the report lacks %q:\n%s", want, text.String())
		}
	}
}

func TestReportListsWhatWasAllowedBeforeAndIsDeniedNow(t *testing.T) {
	at := time.Date(2026, 8, 1, 9, 0, 0, 0, time.UTC)
	revoked, kept := "sha256:"+strings.Repeat("a", 64), "sha256:"+strings.Repeat("b", 64)
	log := decisionLine(at, "node-1", "allow", revoked, "acme", "signed by attestor ci") +
		decisionLine(at, "node-1", "allow", kept, "acme", "signed by attestor ci") +
		decisionLine(at.Add(4*time.Hour), "node-1", "revoked", revoked, "acme", "no cosign signature found")
	r, err := report.Build([]report.Source{{Name: "decisions.jsonl", R: strings.NewReader(log)}}, report.Window{})
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Revoked) != 1 {
		t.Fatalf("revoked %+v; want the one digest", r.Revoked)
	}
	if d := r.Revoked[0]; d.Digest != revoked || d.AllowedBy != "acme" || !d.Allowed.Equal(at) || !d.First.Equal(at.Add(4*time.Hour)) || d.Reason != "no cosign signature found" || d.Tags[0] != "v1" {
		t.Errorf("revoked %+v; want allowed by acme at 09:00, revoked at 13:00 for want of a signature", d)
	}
	if r.Clients[0].Decisions != 2 {
		t.Errorf("clients %+v; want the revoked line not counted as a pull", r.Clients)
	}
	var text, html bytes.Buffer
	if err := r.Text(&text); err != nil {
		t.Fatal(err)
	}
	if err := r.HTML(&html); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(text.String(), "ALLOWED BEFORE, DENIED NOW (revoked by re-validation: 1)") || !strings.Contains(text.String(), "lab/app  sha256:aaaaaaaaaaaa  v1    acme        2026-08-01T09:00:00Z") {
		t.Errorf("the text report does not list the revoked digest:\n%s", text.String())
	}
	if !strings.Contains(html.String(), `<table id="revoked">`) {
		t.Error("the HTML report has no table of revoked digests")
	}
}

func TestReportGroupsDecisionsByPrincipalWhateverAddressTheyCameFrom(t *testing.T) {
	at := time.Date(2026, 8, 1, 9, 0, 0, 0, time.UTC)
	line := func(addr, principal, decision string) string {
		p := ""
		if principal != "" {
			p = fmt.Sprintf(`,"principal":%q`, principal)
		}
		return fmt.Sprintf(`{"time":%q,"level":"INFO","msg":"decision","decision":%q,"image":"lab/app","reference":"v1","digest":"sha256:%s","upstream":"lab","rule":"acme","enforcement":"enforce","reasons":["r"],"verifiedBy":[],"cached":false,"client":{"addr":%q},"durationMs":1%s}`,
			at.Format(time.RFC3339), decision, strings.Repeat("a", 64), addr, p) + "\n"
	}
	log := line("10.0.0.1:4000", "k8s:system:serviceaccount:prod:api", "allow") +
		line("10.0.0.2:4000", "k8s:system:serviceaccount:prod:api", "deny") +
		line("10.0.0.1:4001", "user:ci", "allow") +
		line("10.0.0.3:4000", "", "allow")
	r, err := report.Build([]report.Source{{Name: "decisions.jsonl", R: strings.NewReader(log)}}, report.Window{})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string][2]int{}
	for _, c := range r.Clients {
		got[c.Client] = [2]int{c.Decisions, c.Denials}
	}
	want := map[string][2]int{"k8s:system:serviceaccount:prod:api": {2, 1}, "user:ci": {1, 0}, "10.0.0.3": {1, 0}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("clients (decisions, denials) %v; want %v", got, want)
	}
	if len(r.Denials.Pulls) != 1 || !slices.Equal(r.Denials.Pulls[0].Clients, []string{"k8s:system:serviceaccount:prod:api"}) {
		t.Errorf("denied %+v; want the principal as its client", r.Denials.Pulls)
	}
}
