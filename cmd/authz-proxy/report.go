package main

import (
	"fmt"
	"io"
	"os"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/authz-proxy/authz-proxy/internal/audit"
	"github.com/authz-proxy/authz-proxy/internal/report"
)

func reportCmd(args []string, stdout, stderr io.Writer, now time.Time) error {
	fs := flags("report", stderr)
	var logs listFlag
	fs.Var(&logs, "log", "decision log (audit.file or the proxy's stdout; rotated and gzipped files too; - for standard input), or a folder of them (several replicas' logs are merged); repeat, or list several")
	since := fs.String("since", "", "only records from then on: a duration back from now (24h, 7d) or a time (2026-08-01, 2026-08-01T00:00:00Z)")
	until := fs.String("until", "", "only records before then: a duration back from now or a time")
	output := fs.String("output", "text", "text, json or html (one self-contained page)")
	out := fs.String("out", "", "write the report to this file instead of standard output")
	rest, err := parseInterleaved(fs, args)
	if err != nil {
		return err
	}
	logs = append(logs, rest...)
	if len(logs) == 0 {
		return usageErr("report: --log FILE is required: the decision log (audit.file) and its rotated files")
	}
	if *output != "text" && *output != "json" && *output != "html" {
		return usageErr("report: --output %q: want text, json or html", *output)
	}
	var w report.Window
	if w.Since, err = when(*since, now); err != nil {
		return usageErr("report: --since %q: %v", *since, err)
	}
	if w.Until, err = when(*until, now); err != nil {
		return usageErr("report: --until %q: %v", *until, err)
	}
	files, err := audit.Files(logs)
	if err != nil {
		return fmt.Errorf("report: %w", err)
	}
	var sources []report.Source
	for _, path := range files {
		rc, err := audit.Open(path)
		if err != nil {
			return fmt.Errorf("report: %w", err)
		}
		defer rc.Close()
		sources = append(sources, report.Source{Name: path, R: rc})
	}
	r, err := report.Build(sources, w)
	if err != nil {
		return fmt.Errorf("report: %w", err)
	}
	dst := stdout
	if *out != "" {
		f, err := os.Create(*out)
		if err != nil {
			return fmt.Errorf("report: %w", err)
		}
		defer f.Close()
		dst = f
	}
	switch *output {
	case "json":
		err = r.JSON(dst)
	case "html":
		err = r.HTML(dst)
	default:
		err = r.Text(dst)
	}
	if err != nil {
		return fmt.Errorf("report: %w", err)
	}
	if f, ok := dst.(*os.File); ok && f != os.Stdout {
		return f.Close()
	}
	return nil
}

var days = regexp.MustCompile(`^(\d+)d$`)

// when reads a window end: "" (open), a duration back from now (Go's, or
// whole days such as 7d), a date or an RFC 3339 time.
func when(s string, now time.Time) (time.Time, error) {
	switch {
	case s == "":
		return time.Time{}, nil
	case days.MatchString(s):
		n, _ := strconv.Atoi(strings.TrimSuffix(s, "d"))
		return now.AddDate(0, 0, -n), nil
	}
	if d, err := time.ParseDuration(s); err == nil {
		return now.Add(-d), nil
	}
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t, nil
	}
	if t, err := time.Parse(time.DateOnly, s); err == nil {
		return t, nil
	}
	return time.Time{}, fmt.Errorf("want a duration back from now (24h, 7d), a date (2026-08-01) or a time (2026-08-01T00:00:00Z)")
}
