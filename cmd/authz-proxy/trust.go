package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/url"
	"os"
	"strings"
	"time"

	sgtuf "github.com/sigstore/sigstore-go/pkg/tuf"

	"github.com/authz-proxy/authz-proxy/internal/config"
	"github.com/authz-proxy/authz-proxy/internal/metrics"
	"github.com/authz-proxy/authz-proxy/internal/trust"
)

// publicGood is the trust root `trust fetch` knows without a
// configuration: Sigstore's public-good instance, from the root.json the
// binary embeds.
const publicGood = "public-good"

// trustSpecs are the trust roots of c as package trust takes them: files
// resolved, root.json read (or the embedded one).
func trustSpecs(c *config.Config) ([]trust.Spec, error) {
	var specs []trust.Spec
	for i, r := range c.TrustRoots {
		sp := trust.Spec{Name: r.Name, Where: c.Where([]any{"trustRoots", i}), File: c.Path(r.File)}
		if t := r.TUF; t != nil {
			tu := &trust.TUF{Mirror: t.Mirror, RootSource: t.Root, Refresh: *t.Refresh, Cache: c.Path(t.Cache)}
			if u, err := url.Parse(t.Mirror); err == nil && u.Scheme == "file" && u.Opaque != "" {
				tu.Mirror = trust.FileURL(c.Path(u.Opaque))
			}
			if t.Root == config.EmbeddedRoot {
				tu.Root = sgtuf.DefaultRoot()
			} else {
				b, err := os.ReadFile(c.Path(t.Root))
				if err != nil {
					return nil, c.Errorf([]any{"trustRoots", i, "tuf", "root"}, "%v", err)
				}
				tu.Root, tu.RootSource = b, c.Path(t.Root)
			}
			sp.TUF = tu
		}
		specs = append(specs, sp)
	}
	return specs, nil
}

// loadTrust loads the trust roots of c with m.
func loadTrust(ctx context.Context, c *config.Config, m *trust.Manager) (*trust.Set, error) {
	specs, err := trustSpecs(c)
	if err != nil {
		return nil, err
	}
	return m.Load(ctx, specs)
}

func trustCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return usageErr("trust: want a subcommand: fetch or status")
	}
	switch args[0] {
	case "fetch":
		return trustFetchCmd(ctx, args[1:], stdout, stderr)
	case "status":
		return trustStatusCmd(ctx, args[1:], stdout, stderr)
	}
	return usageErr("trust: unknown subcommand %q: want fetch or status", args[0])
}

// trustFetchCmd writes a verified snapshot of one TUF trust root, for a
// proxy without network to read as its cache or as mirror: file://DIR.
func trustFetchCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flags("trust fetch", stderr)
	path := fs.String("config", "", "configuration file naming the root (optional for public-good)")
	name := fs.String("root", "", "name of the trust root (a TUF one)")
	out := fs.String("out", "", "folder to write the snapshot to")
	if err := parse(fs, args); err != nil {
		return err
	}
	switch {
	case fs.NArg() > 0:
		return usageErr("trust fetch: unexpected argument %q", fs.Arg(0))
	case *name == "":
		return usageErr("trust fetch: --root NAME is required")
	case *out == "":
		return usageErr("trust fetch: --out DIR is required")
	}
	var spec *trust.Spec
	if *path != "" {
		c, err := config.Load(*path)
		if err != nil {
			return err
		}
		specs, err := trustSpecs(c)
		if err != nil {
			return err
		}
		for i := range specs {
			if specs[i].Name == *name {
				spec = &specs[i]
			}
		}
		if spec == nil {
			return usageErr("trust fetch: --root %q: %s has no such trust root", *name, c.File)
		}
	} else {
		if *name != publicGood {
			return usageErr("trust fetch: --root %q: without --config only %s (Sigstore's public-good instance) is known", *name, publicGood)
		}
		spec = &trust.Spec{Name: publicGood, TUF: &trust.TUF{Mirror: config.DefaultTUFMirror, Root: sgtuf.DefaultRoot(), RootSource: config.EmbeddedRoot, Refresh: config.DefaultTUFRefresh}}
	}
	m := trust.New(trust.Options{UserAgent: "authz-proxy/" + versionString()})
	defer m.Close()
	st, err := m.Fetch(ctx, *spec, *out)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%s: wrote %s: TUF root version %d, targets version %d, trusted_root.json %s, valid until %s (%s)\n",
		st.Name, *out, st.RootVersion, st.TargetsVersion, st.Digest, st.Expires.UTC().Format(time.RFC3339), st.ExpiresRole)
	fmt.Fprintf(stdout, "use it as the cache (tuf: {cache: %s}) or as the mirror (tuf: {mirror: %s}) of a proxy without network, with the same root\n", *out, trust.FileURL(*out))
	return nil
}

// trustStatusJSON is one root in `trust status --output json`.
type trustStatusJSON struct {
	Name           string     `json:"name"`
	Kind           string     `json:"kind"`
	Mirror         string     `json:"mirror,omitempty"`
	Root           string     `json:"root,omitempty"`
	Source         string     `json:"source,omitempty"`
	Pending        string     `json:"pending,omitempty"`
	Digest         string     `json:"digest,omitempty"`
	RootVersion    int64      `json:"rootVersion,omitempty"`
	TargetsVersion int64      `json:"version,omitempty"`
	Expires        *time.Time `json:"expires,omitempty"`
	ExpiresRole    string     `json:"expiresRole,omitempty"`
	Refreshed      *time.Time `json:"refreshed,omitempty"`
	LastError      string     `json:"lastError,omitempty"`
	Withdrawn      string     `json:"withdrawn,omitempty"`
	Expiring       string     `json:"expiring,omitempty"`
	Trusts         trustsJSON `json:"trusts"`
}

type trustsJSON struct {
	CertificateAuthorities int        `json:"certificateAuthorities"`
	TransparencyLogs       int        `json:"transparencyLogs"`
	CTLogs                 int        `json:"ctLogs"`
	TimestampAuthorities   int        `json:"timestampAuthorities"`
	SigningUntil           *time.Time `json:"signingUntil,omitempty"`
}

// trustStatusCmd prints each trust root of a configuration: where it was
// read, its version, expiry and what it trusts.
func trustStatusCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flags("trust status", stderr)
	path := fs.String("config", "", "configuration file")
	output := fs.String("output", "text", "text or json")
	offline := fs.Bool("offline", false, "read TUF roots from their cache only, asking no mirror")
	if err := parse(fs, args); err != nil {
		return err
	}
	switch {
	case fs.NArg() > 0:
		return usageErr("trust status: unexpected argument %q", fs.Arg(0))
	case *path == "":
		return usageErr("--config FILE is required")
	case *output != "text" && *output != "json":
		return usageErr("trust status: --output %q: want text or json", *output)
	}
	c, err := config.Load(*path)
	if err != nil {
		return err
	}
	m := trust.New(trust.Options{Offline: *offline, UserAgent: "authz-proxy/" + versionString()})
	defer m.Close()
	set, err := loadTrust(ctx, c, m)
	if err != nil {
		return err
	}
	for _, w := range set.Warnings {
		fmt.Fprintln(stderr, "warning:", w)
	}
	now := time.Now()
	statuses := set.Status(now)
	if *output == "json" {
		out := []trustStatusJSON{}
		for _, s := range statuses {
			out = append(out, statusJSON(s))
		}
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(out)
	}
	if len(statuses) == 0 {
		fmt.Fprintf(stdout, "%s names no trustRoots\n", c.File)
	}
	for _, s := range statuses {
		writeStatus(stdout, s, now)
	}
	return nil
}

func timePtr(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	u := t.UTC()
	return &u
}

func statusJSON(s trust.Status) trustStatusJSON {
	return trustStatusJSON{
		Name: s.Name, Kind: s.Kind, Mirror: s.Mirror, Root: s.RootSource, Source: s.Source, Pending: s.Pending, Digest: s.Digest,
		RootVersion: s.RootVersion, TargetsVersion: s.TargetsVersion, Expires: timePtr(s.Expires), ExpiresRole: s.ExpiresRole,
		Refreshed: timePtr(s.Refreshed), LastError: s.LastError, Withdrawn: s.Withdrawn, Expiring: s.Expiring,
		Trusts: trustsJSON{CertificateAuthorities: s.Summary.CertificateAuthorities, TransparencyLogs: s.Summary.TransparencyLogs,
			CTLogs: s.Summary.CTLogs, TimestampAuthorities: s.Summary.TimestampAuthorities, SigningUntil: timePtr(s.Summary.SigningUntil)},
	}
}

// writeStatus prints s, as of now, for a person.
func writeStatus(w io.Writer, s trust.Status, now time.Time) {
	if s.Kind == "tuf" {
		fmt.Fprintf(w, "%s: TUF repository %s (first root: %s, refresh %s)\n", s.Name, s.Mirror, s.RootSource, s.Refresh)
	} else {
		fmt.Fprintf(w, "%s: file %s\n", s.Name, s.Source)
	}
	if s.Pending != "" {
		fmt.Fprintf(w, "  not loaded: %s\n", s.Pending)
		return
	}
	if s.Kind == "tuf" {
		fmt.Fprintf(w, "  read from: %s at %s\n", s.Source, s.Refreshed.UTC().Format(time.RFC3339))
		fmt.Fprintf(w, "  version:   targets %d, root %d; trusted_root.json %s\n", s.TargetsVersion, s.RootVersion, s.Digest)
		fmt.Fprintf(w, "  expires:   %s (%s), in %s\n", s.Expires.UTC().Format(time.RFC3339), s.ExpiresRole, s.Expires.Sub(now).Round(time.Minute))
	} else {
		fmt.Fprintf(w, "  version:   trusted_root.json %s\n", s.Digest)
	}
	sum := s.Summary
	until := "no end of validity"
	if !sum.SigningUntil.IsZero() {
		until = fmt.Sprintf("signing material valid until %s (the last of its %s)", sum.SigningUntil.UTC().Format(time.RFC3339), sum.SigningUntilWhat)
	}
	fmt.Fprintf(w, "  trusts:    %d certificate authorit%s, %d transparency log(s), %d CT log(s), %d timestamp authorit%s; %s\n",
		sum.CertificateAuthorities, plural(sum.CertificateAuthorities, "y", "ies"), sum.TransparencyLogs, sum.CTLogs,
		sum.TimestampAuthorities, plural(sum.TimestampAuthorities, "y", "ies"), until)
	for _, line := range []struct{ label, text string }{{"failing", s.LastError}, {"WITHDRAWN", s.Withdrawn}, {"expiring", s.Expiring}} {
		if line.text != "" {
			fmt.Fprintf(w, "  %s: %s\n", line.label, strings.TrimSpace(line.text))
		}
	}
}

// trustMetrics are the trust roots' states as the metrics show them.
func trustMetrics(statuses []trust.Status) []metrics.TrustRoot {
	out := make([]metrics.TrustRoot, 0, len(statuses))
	for _, s := range statuses {
		out = append(out, metrics.TrustRoot{
			Name: s.Name, Kind: s.Kind, Digest: s.Digest, Version: s.TargetsVersion, Mirror: s.Mirror, Refresh: s.Refresh,
			Refreshed: s.Refreshed, Expires: s.Expires, SigningUntil: s.Summary.SigningUntil,
			Refreshes: s.Refreshes, FailedRefreshes: s.FailedRefreshes, Failures: s.Failures, FailingSince: s.FailingSince, LastError: s.LastError,
			Usable: s.Withdrawn == "" && s.Pending == "", Withdrawn: s.Withdrawn, Expiring: s.Expiring,
		})
	}
	return out
}
