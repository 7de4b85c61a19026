package report

import (
	"embed"
	"encoding/json"
	"fmt"
	"html/template"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/authz-proxy/authz-proxy/internal/audit"
)

// JSON writes the report as indented JSON.
func (r *Report) JSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// short names a digest by its first 12 hex digits, as registries do.
func short(d string) string {
	if len(d) > 19 && strings.HasPrefix(d, "sha256:") {
		return d[:19]
	}
	return d
}

func stamp(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format(time.RFC3339)
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// clip keeps a table cell to n runes.
func clip(s string, n int) string {
	if r := []rune(s); len(r) > n {
		return string(r[:n-1]) + "…"
	}
	return s
}

// Text writes the report for a terminal.
func (r *Report) Text(w io.Writer) error {
	fmt.Fprintf(w, "Decision log report: %s\n", strings.Join(r.Files, ", "))
	fmt.Fprintf(w, "Window: %s to %s; records from %s to %s\n", windowEnd(r.Since, "the beginning"), windowEnd(r.Until, "the end"), stamp(r.First), stamp(r.Last))
	var parts []string
	for _, c := range r.Decisions {
		parts = append(parts, fmt.Sprintf("%s %d", c.Key, c.Count))
	}
	fmt.Fprintf(w, "%d decision(s): %s\n", r.Records, strings.Join(parts, ", "))
	if r.Unreadable > 0 {
		fmt.Fprintf(w, "%d line(s) were not JSON and were skipped.\n", r.Unreadable)
	}
	for _, q := range r.Quiet() {
		fmt.Fprintln(w, "QUIET: "+q)
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	section := func(title string) { tw.Flush(); fmt.Fprintf(w, "\n%s\n", title) }

	section(fmt.Sprintf("DENIALS (%d)", r.Denials.Total))
	for _, g := range []struct {
		name string
		c    []Count
	}{{"by image", r.Denials.ByImage}, {"by rule", r.Denials.ByRule}, {"by environment", r.Denials.ByEnvironment}, {"by reason", r.Denials.ByReason}} {
		var items []string
		for i, c := range g.c {
			if i == 10 {
				items = append(items, fmt.Sprintf("… %d more", len(g.c)-10))
				break
			}
			items = append(items, fmt.Sprintf("%s (%d)", clip(c.Key, 100), c.Count))
		}
		fmt.Fprintf(tw, "  %s:\t%s\n", g.name, orDash(strings.Join(items, "; ")))
	}
	section("DENIED PULLS")
	deniedTable(tw, r.Denials.Pulls)
	section("WHAT ENFORCING THE DRYRUN RULES WOULD HAVE BROKEN (dryrun-deny)")
	deniedTable(tw, r.DryRun)
	section(fmt.Sprintf("ALLOWED BEFORE, DENIED NOW (revoked by re-validation: %d)", len(r.Revoked)))
	if len(r.Revoked) == 0 {
		fmt.Fprintln(tw, "  none")
	} else {
		fmt.Fprintln(tw, "  IMAGE\tDIGEST\tTAGS\tALLOWED BY\tLAST ALLOWED\tREVOKED\tRULE NOW\tCLIENTS\tREASON")
		for _, d := range r.Revoked {
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", d.Image, short(d.Digest), orDash(clip(strings.Join(d.Tags, ","), 30)), orDash(d.AllowedBy), stamp(d.Allowed),
				stamp(d.First), d.Rule, orDash(clip(strings.Join(d.Clients, ","), 40)), clip(d.Reason, 120))
		}
	}
	section("BREAKGLASS USES")
	if len(r.Breakglass) == 0 {
		fmt.Fprintln(tw, "  none")
	} else {
		fmt.Fprintln(tw, "  ENTRY\tEXPIRES\tREASON\tIMAGE\tDIGEST\tPULLS\tCLIENTS\tLAST")
		for _, b := range r.Breakglass {
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\t%d\t%s\t%s\n", b.Entry, stamp(b.Expires), clip(b.Reason, 60), b.Image, short(b.Digest), b.Pulls, clip(strings.Join(b.Clients, ","), 40), stamp(b.Last))
		}
	}
	section("IMAGES ALLOWED WITH SUPPRESSED FINDINGS")
	if len(r.Suppressed) == 0 {
		fmt.Fprintln(tw, "  none")
	} else {
		fmt.Fprintln(tw, "  IMAGE\tDIGEST\tFINDING\tSEVERITY\tPACKAGE\tBY\tDETAIL\tEXPIRES\tPULLS\tLAST")
		for _, f := range r.Suppressed {
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%d\t%s\n", f.Image, short(f.Digest), f.ID, f.Severity, orDash(strings.TrimSpace(f.Package+" "+f.Version)), f.By, clip(f.Detail, 80), stamp(f.Expires), f.Pulls, stamp(f.Last))
		}
	}
	section("ERRORS: PULLS THAT FAILED CLOSED (503), BY UPSTREAM")
	if len(r.Errors) == 0 {
		fmt.Fprintln(tw, "  none")
	} else {
		fmt.Fprintln(tw, "  UPSTREAM\tPULLS\tLAST\tMOST FREQUENT REASON")
		for _, e := range r.Errors {
			top := ""
			if len(e.Reasons) > 0 {
				top = fmt.Sprintf("%s (%d)", clip(e.Reasons[0].Key, 100), e.Reasons[0].Count)
			}
			fmt.Fprintf(tw, "  %s\t%d\t%s\t%s\n", orDash(e.Upstream), e.Count, stamp(e.Last), top)
		}
	}
	if len(r.Replicas) > 1 || len(r.Replicas) == 1 && r.Replicas[0].LogID != "" {
		section(fmt.Sprintf("REPLICAS (%d logs merged)", len(r.Replicas)))
		fmt.Fprintln(tw, "  LOG ID\tFIRST\tLAST\tDECISIONS\tSTATE")
		for _, p := range r.Replicas {
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%d\t%s\n", orDash(p.LogID), stamp(p.First), stamp(p.Last), p.Decisions, p.state())
		}
	}
	section("TOP CLIENTS")
	fmt.Fprintln(tw, "  CLIENT\tENVIRONMENT\tDECISIONS\tDENIALS\tERRORS")
	for i, c := range r.Clients {
		if i == 20 {
			fmt.Fprintf(tw, "  … %d more\t\t\t\t\n", len(r.Clients)-20)
			break
		}
		fmt.Fprintf(tw, "  %s\t%s\t%d\t%d\t%d\n", c.Client, orDash(c.Environment), c.Decisions, c.Denials, c.Errors)
	}
	return tw.Flush()
}

// Quiet says of each replica that went quiet, "replica <id>: nothing since
// <time> (others until <time>)".
func (r *Report) Quiet() []string {
	var latest time.Time
	for _, p := range r.Replicas {
		if p.Last.After(latest) {
			latest = p.Last
		}
	}
	var out []string
	for _, p := range r.Replicas {
		if p.Quiet {
			out = append(out, fmt.Sprintf("replica %s: nothing since %s (others until %s), and it did not stop with its shutdown checkpoint", orDash(p.LogID), stamp(p.Last), stamp(latest)))
		}
	}
	return out
}

func (p Replica) state() string {
	switch {
	case p.Quiet:
		return "QUIET: nothing since " + stamp(p.Last)
	case p.Stopped:
		return "stopped (its shutdown checkpoint)"
	}
	return "logging"
}

func windowEnd(t time.Time, open string) string {
	if t.IsZero() {
		return open
	}
	return stamp(t)
}

func deniedTable(tw io.Writer, rows []Denied) {
	if len(rows) == 0 {
		fmt.Fprintln(tw, "  none")
		return
	}
	fmt.Fprintln(tw, "  IMAGE\tDIGEST\tTAGS\tRULE\tPULLS\tCLIENTS\tLAST\tREASON")
	for _, d := range rows {
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%d\t%s\t%s\t%s\n", d.Image, short(d.Digest), orDash(clip(strings.Join(d.Tags, ","), 30)), d.Rule, d.Pulls, clip(strings.Join(d.Clients, ","), 40), stamp(d.Last), clip(d.Reason, 120))
	}
}

//go:embed report.html.tmpl
var templates embed.FS

var page = template.Must(template.New("report.html.tmpl").Funcs(template.FuncMap{
	"short":  short,
	"stamp":  stamp,
	"join":   strings.Join,
	"height": func(b []bar) int { return len(b) * 28 },
	"clip":   clip,
	"state":  Replica.state,
	"dict": func(kv ...any) map[string]any {
		m := map[string]any{}
		for i := 0; i+1 < len(kv); i += 2 {
			m[kv[i].(string)] = kv[i+1]
		}
		return m
	},
}).ParseFS(templates, "report.html.tmpl"))

// colors of the decisions in the charts.
var colors = map[string]string{
	audit.Allow:      "#2e7d32",
	audit.Deny:       "#c62828",
	audit.DryRunDeny: "#ef6c00",
	audit.Breakglass: "#6a1b9a",
	audit.Error:      "#546e7a",
	audit.Revoked:    "#ad1457",
}

// HTML writes the report as one self-contained page: styles and charts
// (SVG) inline, no script, nothing fetched when it is opened.
func (r *Report) HTML(w io.Writer) error {
	return page.Execute(w, struct {
		*Report
		Generated time.Time
		Legend    []bar
		Timeline  timelineChart
		ByRule    []bar
		ByImage   []bar
	}{r, time.Now(), legend(), r.timelineChart(), hbars(r.Denials.ByRule, colors[audit.Deny]), hbars(r.Denials.ByImage, colors[audit.Deny])})
}

// bar is one bar of a chart, in SVG user units.
type bar struct {
	X, Y, W, H float64
	Color      string
	Label      string
	Value      int
}

func legend() []bar {
	var out []bar
	for i, d := range decisionOrder {
		out = append(out, bar{X: float64(i) * 130, Color: colors[d], Label: d})
	}
	return out
}

// hbars lays out at most ten horizontal bars, longest first, their
// labels to the left (cut to fit; whole in the tooltip).
func hbars(counts []Count, color string) []bar {
	const left, width, height = 250.0, 300.0, 22.0
	var out []bar
	top := 0
	for i, c := range counts {
		if i == 10 {
			break
		}
		if i == 0 {
			top = c.Count
		}
		out = append(out, bar{X: left, Y: float64(i) * (height + 6), W: max(2, width*float64(c.Count)/float64(top)), H: height, Color: color, Label: c.Key, Value: c.Count})
	}
	return out
}

type timelineChart struct {
	Bars          []bar
	Width, Height float64
	Max           int
	From, To      string
}

// timelineChart stacks each period's decisions into one bar.
func (r *Report) timelineChart() timelineChart {
	const width, height = 900.0, 180.0
	c := timelineChart{Width: width, Height: height}
	for _, p := range r.Timeline {
		n := 0
		for _, v := range p.Counts {
			n += v
		}
		c.Max = max(c.Max, n)
	}
	if c.Max == 0 {
		return c
	}
	step := width / float64(len(r.Timeline))
	for i, p := range r.Timeline {
		y := height
		for _, d := range decisionOrder {
			n := p.Counts[d]
			if n == 0 {
				continue
			}
			h := height * float64(n) / float64(c.Max)
			y -= h
			c.Bars = append(c.Bars, bar{X: float64(i)*step + 1, Y: y, W: min(max(step-2, 1), 48), H: h, Color: colors[d],
				Label: fmt.Sprintf("%s %s: %d %s", r.Bucket, stamp(p.Start), n, d), Value: n})
		}
	}
	c.From, c.To = stamp(r.Timeline[0].Start), stamp(r.Timeline[len(r.Timeline)-1].Start)
	return c
}
