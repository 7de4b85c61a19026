package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"strings"
	"text/tabwriter"

	"github.com/authz-proxy/authz-proxy/internal/replay"
)

// replayReport is replay's JSON output.
type replayReport struct {
	Config     string          `json:"config"`
	Generation string          `json:"generation"`
	Summary    replay.Summary  `json:"summary"`
	Results    []replay.Result `json:"results"`
}

func replayCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flags("replay", stderr)
	path := fs.String("config", "", "candidate configuration file")
	logPath := fs.String("log", "", "decision log (JSON lines, as in audit.file or the proxy's stdout); - for standard input")
	output := fs.String("output", "text", "text or json")
	all := fs.Bool("all", false, "list every pull judged, not only those whose decision changes")
	if err := parse(fs, args); err != nil {
		return err
	}
	switch {
	case *output != "text" && *output != "json":
		return usageErr("replay: --output %q: want text or json", *output)
	case *logPath == "":
		return usageErr("replay: --log FILE is required: a decision log, e.g. the audit.file of the proxy in production")
	case fs.NArg() > 0:
		return usageErr("replay: unexpected argument %q", fs.Arg(0))
	}
	l, err := load(*path)
	if err != nil {
		return err
	}
	var in io.Reader = os.Stdin
	if *logPath != "-" {
		f, err := os.Open(*logPath)
		if err != nil {
			return usageErr("replay: --log: %v", err)
		}
		defer f.Close()
		in = f
	}
	log, err := replay.Read(in, l.policy)
	if err != nil {
		return fmt.Errorf("replay: reading %s: %w", *logPath, err)
	}
	if err := l.withSources(nil, nil, nil, nil); err != nil {
		return err
	}
	judge := &replay.Judge{Policy: l.policy, Registries: l.registries()}
	results := judge.Run(ctx, log.Pulls)
	summary := replay.Summarize(log, results)
	replay.Sort(results)
	shown := results
	if !*all {
		shown = shown[:0:0]
		for _, r := range results {
			if r.Changed() {
				shown = append(shown, r)
			}
		}
	}
	if *output == "json" {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if shown == nil {
			shown = []replay.Result{}
		}
		if err := enc.Encode(replayReport{Config: l.cfg.File, Generation: l.cfg.Generation, Summary: summary, Results: shown}); err != nil {
			return err
		}
	} else {
		printReplay(stdout, l.cfg.File, log, summary, shown)
	}
	switch {
	case summary.Errors > 0:
		return &exitError{code: 2}
	case summary.Changed > 0:
		return &exitError{code: 1}
	}
	return nil
}

func printReplay(w io.Writer, config string, log *replay.Log, s replay.Summary, shown []replay.Result) {
	fmt.Fprintf(w, "Replayed %d decision record(s) under %s: %d distinct pull(s) judged again", s.Records, config, s.Judged)
	if s.Skipped > 0 {
		fmt.Fprintf(w, ", %d record(s) skipped (errors, signature artifacts)", s.Skipped)
	}
	fmt.Fprintln(w, ".")
	if s.Unreadable > 0 {
		fmt.Fprintf(w, "%d line(s) were not JSON and were ignored, the first at line %d.\n", s.Unreadable, log.FirstUnreadable)
	}
	switch s.Changed {
	case 0:
		fmt.Fprintln(w, "No decision would change.")
	default:
		var parts []string
		for _, change := range slices.Sorted(maps.Keys(s.ByChange)) {
			parts = append(parts, fmt.Sprintf("%d %s", s.ByChange[change], change))
		}
		fmt.Fprintf(w, "%d decision(s) would change: %s.\n", s.Changed, strings.Join(parts, ", "))
	}
	if s.Errors > 0 {
		fmt.Fprintf(w, "%d pull(s) could not be judged again (decision error below): the replay is incomplete.\n", s.Errors)
	}
	if len(shown) == 0 {
		return
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "IMAGE\tDIGEST\tENVIRONMENT\tPULLS\tWAS\tNOW\tRULE\tREASON")
	for _, r := range shown {
		img := r.Image
		if r.Tag != "" {
			img += ":" + r.Tag
		}
		env := r.Environment
		if env == "" {
			env = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\t%s\t%s\n", img, shortDigest(r.Digest), env, r.Pulls, r.Was.Decision, r.Now.Decision, r.Now.Rule, strings.Join(r.Now.Reasons, "; "))
	}
	tw.Flush()
}
