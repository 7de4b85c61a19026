package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/authz-proxy/authz-proxy/internal/audit"
)

// listFlag is a flag that may be given many times.
type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(s string) error { *l = append(*l, s); return nil }

// parseInterleaved parses flags that may come after positional arguments
// (`--log a b --key k`), and returns the positional ones.
func parseInterleaved(fs *flag.FlagSet, args []string) ([]string, error) {
	var rest []string
	for {
		if err := parse(fs, args); err != nil {
			return nil, err
		}
		if fs.NArg() == 0 {
			return rest, nil
		}
		rest = append(rest, fs.Arg(0))
		args = fs.Args()[1:]
	}
}

func auditCmd(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] != "verify" {
		return usageErr("audit: want `authz-proxy audit verify --log FILE... [--key PUB[@FROM..UNTIL]]...`")
	}
	fs := flags("audit verify", stderr)
	var logs, keys listFlag
	fs.Var(&logs, "log", "decision-log file (audit.file, rotated and gzipped ones too; any order) or a folder of them (several replicas' too); repeat, or list several")
	fs.Var(&keys, "key", "PEM public key of audit.checkpoint.keyFile: every checkpoint must be signed by one given; after a rotation, give each key with the time it signed, PUB@FROM..UNTIL (either end may be left out)")
	output := fs.String("output", "text", "text or json")
	rest, err := parseInterleaved(fs, args[1:])
	if err != nil {
		return err
	}
	logs = append(logs, rest...)
	if len(logs) == 0 {
		return usageErr("audit verify: --log FILE is required: the decision log (audit.file) and its rotated files")
	}
	if *output != "text" && *output != "json" {
		return usageErr("audit verify: --output %q: want text or json", *output)
	}
	var pubs []audit.Key
	for _, k := range keys {
		key, err := parseKeyFlag(k)
		if err != nil {
			return usageErr("audit verify: --key %s: %v", k, err)
		}
		pubs = append(pubs, key)
	}
	rep, err := audit.Verify(logs, pubs)
	if err != nil {
		return fmt.Errorf("audit verify: %w", err)
	}
	if *output == "json" {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(struct {
			OK bool `json:"ok"`
			*audit.VerifyReport
		}{rep.OK(), rep}); err != nil {
			return err
		}
	} else {
		printVerify(stdout, rep)
	}
	if !rep.OK() {
		return &exitError{code: 1}
	}
	return nil
}

// parseKeyFlag reads --key PUB[@FROM..UNTIL]: a public key, and the time
// it signed checkpoints, each end a date or an RFC 3339 time, either left
// out for an open end. A file whose name holds the @ is taken whole.
func parseKeyFlag(arg string) (audit.Key, error) {
	file, span, ranged := strings.Cut(arg, "@")
	if _, err := os.Stat(arg); err == nil || !ranged {
		file, span, ranged = arg, "", false
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return audit.Key{}, err
	}
	k := audit.Key{}
	if k.Public, err = audit.ParsePublicKey(b); err != nil {
		return audit.Key{}, err
	}
	if !ranged {
		return k, nil
	}
	from, until, ok := strings.Cut(span, "..")
	if !ok {
		return audit.Key{}, fmt.Errorf("after @, want FROM..UNTIL (2026-03-01..2026-09-01, or ..2026-03-01T12:00:00Z, or 2026-03-01..)")
	}
	for _, end := range []struct {
		text string
		t    *time.Time
	}{{from, &k.From}, {until, &k.Until}} {
		if end.text == "" {
			continue
		}
		if *end.t, err = time.Parse(time.RFC3339, end.text); err != nil {
			if *end.t, err = time.Parse(time.DateOnly, end.text); err != nil {
				return audit.Key{}, fmt.Errorf("%q: want a date (2026-03-01) or an RFC 3339 time (2026-03-01T12:00:00Z)", end.text)
			}
		}
	}
	if !k.Until.IsZero() && !k.Until.After(k.From) {
		return audit.Key{}, fmt.Errorf("the key's time ends (%s) before it begins (%s)", until, from)
	}
	return k, nil
}

// printLogs lists each log (replica) when the lines name one: its files,
// seq and time, starts, gaps and the lines no checkpoint vouched for.
func printLogs(w io.Writer, r *audit.VerifyReport) {
	if len(r.Logs) == 1 && r.Logs[0].LogID == "" {
		return
	}
	fmt.Fprintf(w, "Logs (%d, one per replica):\n", len(r.Logs))
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	for _, l := range r.Logs {
		id := l.LogID
		if id == "" {
			id = "(no log id)"
		}
		state := "ends without its shutdown checkpoint"
		if l.Closed {
			state = "ends with its shutdown checkpoint"
		}
		fmt.Fprintf(tw, "  %s\t%d file(s)\tseq %d-%d\t%s to %s\t%d start(s), %d unclean\t%d gap(s)\t%s\n", id, len(l.Files), l.FirstSeq, l.LastSeq,
			l.First.UTC().Format(time.RFC3339), l.Last.UTC().Format(time.RFC3339), l.Starts, l.Unclean, len(l.Gaps), state)
	}
	tw.Flush()
	for _, l := range r.Logs {
		for _, g := range l.Gaps {
			fmt.Fprintf(w, "  %s: gap at %s:%d\n", l.LogID, g.File, g.Line)
		}
		for _, u := range l.Unvouched {
			after := "the log's beginning"
			if u.After != nil {
				after = fmt.Sprintf("the checkpoint at %s:%d", u.After.File, u.After.Line)
			}
			until := "its end"
			if u.Until != nil {
				until = fmt.Sprintf("the restart at %s:%d", u.Until.File, u.Until.Line)
			}
			fmt.Fprintf(w, "  %s: %d line(s) after %s until %s were vouched for by no checkpoint\n", l.LogID, u.Lines, after, until)
		}
	}
}

func printVerify(w io.Writer, r *audit.VerifyReport) {
	fmt.Fprintf(w, "Read %d file(s), oldest first:\n", len(r.Files))
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	for _, f := range r.Files {
		ends := "ends without a closing checkpoint"
		switch f.Ends {
		case audit.CheckpointReopen:
			ends = "ends with the reopen checkpoint (rotated)"
		case audit.CheckpointShutdown:
			ends = "ends with the shutdown checkpoint"
		}
		fmt.Fprintf(tw, "  %s\t%d line(s)\tseq %d-%d\t%s\n", f.Name, f.Lines, f.FirstSeq, f.LastSeq, ends)
	}
	tw.Flush()
	switch {
	case len(r.Keys) > 0:
		fmt.Fprintf(w, "Checkpoints: %d, %d signed, %d verified with %s.\n", r.Checkpoints, r.Signed, r.Verified, strings.Join(r.Keys, ", "))
	case r.Signed > 0:
		fmt.Fprintf(w, "Checkpoints: %d, %d signed; signatures not checked (give --key).\n", r.Checkpoints, r.Signed)
	default:
		fmt.Fprintf(w, "Checkpoints: %d, none signed (no audit.checkpoint key): the chain alone vouches for the lines.\n", r.Checkpoints)
	}
	if r.Unchained > 0 {
		fmt.Fprintf(w, "%d line(s) before the chain begins carry no chain (written without audit.chain): nothing vouches for them.\n", r.Unchained)
	}
	printLogs(w, r)
	if len(r.Notes) > 0 {
		fmt.Fprintln(w, "Notes:")
		for _, n := range r.Notes {
			fmt.Fprintln(w, "  "+n.String())
		}
	}
	if !r.OK() {
		fmt.Fprintf(w, "Problems (%d):\n", len(r.Problems))
		for _, p := range r.Problems {
			fmt.Fprintln(w, "  "+p.String())
		}
		fmt.Fprintf(w, "FAIL: the log is not as the proxy wrote it.\n")
		return
	}
	fmt.Fprintf(w, "OK: %d decision(s) in %d line(s) from %s to %s: no line removed, inserted, changed or reordered, no file cut short.\n",
		r.Decisions, r.Lines, r.First.UTC().Format(time.RFC3339), r.Last.UTC().Format(time.RFC3339))
	switch cp := r.LastCheckpoint; {
	case r.Closed && len(r.Logs) > 1:
		fmt.Fprintf(w, "Each of the %d logs ends with its proxy's shutdown checkpoint: nothing was cut from their ends.\n", len(r.Logs))
	case r.Closed:
		fmt.Fprintln(w, "The log ends with the proxy's shutdown checkpoint: nothing was cut from its end.")
	case cp == nil:
		fmt.Fprintf(w, "No checkpoint vouches for these lines: the chain links all %d, but lines cut from the end would not show.\n", r.Tail)
	case r.Tail > 0:
		fmt.Fprintf(w, "The last %d line(s) follow the last checkpoint (%s:%d, %s): the chain links them, but lines cut from the end after it would not show.\n",
			r.Tail, cp.File, cp.Line, cp.Time.UTC().Format(time.RFC3339))
	default:
		fmt.Fprintf(w, "The log ends with a checkpoint (%s:%d, %s).\n", cp.File, cp.Line, cp.Time.UTC().Format(time.RFC3339))
	}
}
