// Package report summarises decision logs for auditors: what was denied,
// by image, rule, reason and environment; what enforcing the dryrun rules
// would have broken; every breakglass use with its reason and expiry; the
// images allowed with suppressed findings (by VEX or an exception); the
// pulls that failed closed, by upstream; the digests allowed before that
// re-validation found denied now; who pulled; and, the logs of several
// replicas merged, each replica's log, flagging one that went quiet. It renders the
// summary as text, JSON, or one self-contained HTML page with charts.
package report

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"regexp"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/authz-proxy/authz-proxy/internal/audit"
)

// Report is the summary of decision records within a time window.
type Report struct {
	// Files are the logs read.
	Files []string `json:"files"`
	// Since and Until bound the window (zero: unbounded); First and Last
	// are the times of the first and last record in it.
	Since time.Time `json:"since,omitzero"`
	Until time.Time `json:"until,omitzero"`
	First time.Time `json:"first,omitzero"`
	Last  time.Time `json:"last,omitzero"`
	// Records counts the decision records in the window; Unreadable the
	// lines that are not JSON (a line cut short, a collector's own).
	Records    int `json:"records"`
	Unreadable int `json:"unreadable"`
	// Decisions counts records by decision, in the order allow, deny,
	// dryrun-deny, breakglass, error.
	Decisions []Count `json:"decisions"`
	// Denials are the denied pulls grouped by what was denied and why.
	Denials Denials `json:"denials"`
	// DryRun is what enforcing the dryrun rules would have broken: each
	// image digest a dryrun rule let through although it would deny it.
	DryRun []Denied `json:"dryRun"`
	// Breakglass lists the pulls let through by a breakglass entry.
	Breakglass []BreakglassUse `json:"breakglass"`
	// Suppressed are the images allowed with suppressed findings: one row
	// per image digest and finding that VEX or an exception took off the
	// list of its vulnerability scan.
	Suppressed []SuppressedFinding `json:"suppressed"`
	// Errors are the pulls that failed closed (503), by upstream.
	Errors []UpstreamErrors `json:"errors"`
	// Revoked are the digests allowed before that re-validation found the
	// policy in force denies now (decision "revoked").
	Revoked []RevokedDigest `json:"revoked"`
	// Clients are who pulled, most decisions first.
	Clients []ClientRow `json:"clients"`
	// Replicas are the logs merged, one per log id, by id.
	Replicas []Replica `json:"replicas"`
	// Timeline counts decisions per Bucket, for the chart.
	Bucket   string   `json:"bucket"`
	Timeline []Period `json:"timeline"`
}

// Count is a number of records with one value of a field.
type Count struct {
	Key   string `json:"key"`
	Count int    `json:"count"`
}

// Denials are the denied pulls, by each field auditors ask about.
type Denials struct {
	Total         int      `json:"total"`
	ByImage       []Count  `json:"byImage"`
	ByRule        []Count  `json:"byRule"`
	ByReason      []Count  `json:"byReason"`
	ByEnvironment []Count  `json:"byEnvironment"`
	Pulls         []Denied `json:"pulls"`
}

// Denied is one image digest denied (or, for dryrun, that would have been)
// by one rule for one reason, however often it was pulled.
type Denied struct {
	Image   string    `json:"image"`
	Digest  string    `json:"digest"`
	Tags    []string  `json:"tags"`
	Rule    string    `json:"rule"`
	Reason  string    `json:"reason"`
	Pulls   int       `json:"pulls"`
	Clients []string  `json:"clients"`
	First   time.Time `json:"first"`
	Last    time.Time `json:"last"`
}

// BreakglassUse is one breakglass entry's use for one image digest.
type BreakglassUse struct {
	Entry   string    `json:"entry"`
	Expires time.Time `json:"expires,omitzero"`
	Reason  string    `json:"reason"`
	Image   string    `json:"image"`
	Digest  string    `json:"digest"`
	Pulls   int       `json:"pulls"`
	Clients []string  `json:"clients"`
	First   time.Time `json:"first"`
	Last    time.Time `json:"last"`
}

// SuppressedFinding is one finding of an allowed image digest's scan that
// did not count, however often the digest was pulled.
type SuppressedFinding struct {
	Image    string `json:"image"`
	Digest   string `json:"digest"`
	ID       string `json:"id"`
	Severity string `json:"severity"`
	Package  string `json:"package"`
	Version  string `json:"version"`
	// By is "vex" or "exception"; Detail the VEX statement's status and
	// attestor, or the exception's reason, which Expires ends.
	By      string    `json:"by"`
	Detail  string    `json:"detail"`
	Expires time.Time `json:"expires,omitzero"`
	// Scanner is the attestor that signed the scan.
	Scanner string    `json:"scanner"`
	Pulls   int       `json:"pulls"`
	First   time.Time `json:"first"`
	Last    time.Time `json:"last"`
}

// RevokedDigest is one image digest allowed before and denied now, as
// re-validation logged it.
type RevokedDigest struct {
	Image  string   `json:"image"`
	Digest string   `json:"digest"`
	Tags   []string `json:"tags"`
	// AllowedBy and Allowed are the rule and time of the last allow of the
	// digest in the logs read (zero when it is not in them).
	AllowedBy string    `json:"allowedBy,omitempty"`
	Allowed   time.Time `json:"allowed,omitzero"`
	// Rule and Reason are what denies it now; First and Last when
	// re-validation said so; Clients who pulled it.
	Rule    string    `json:"rule"`
	Reason  string    `json:"reason"`
	Times   int       `json:"times"`
	Clients []string  `json:"clients"`
	First   time.Time `json:"first"`
	Last    time.Time `json:"last"`
}

// Replica is one replica's log: its lines in the window.
type Replica struct {
	// LogID is the log id its lines carry, "" for lines without one.
	LogID     string    `json:"logId"`
	First     time.Time `json:"first"`
	Last      time.Time `json:"last"`
	Decisions int       `json:"decisions"`
	// Stopped: its last line is the shutdown checkpoint.
	Stopped bool `json:"stopped"`
	// Quiet: it logged nothing since Last, while another replica went on
	// for longer than three of its checkpoint intervals (an hour without
	// interval checkpoints) after it, without having stopped.
	Quiet bool `json:"quiet"`
}

// UpstreamErrors are the pulls of one upstream that failed closed.
type UpstreamErrors struct {
	Upstream string    `json:"upstream"`
	Count    int       `json:"count"`
	Reasons  []Count   `json:"reasons"`
	Last     time.Time `json:"last"`
}

// ClientRow is one client: the principal it authenticated as (clients
// section), else its certificate identity, else its address without the
// port.
type ClientRow struct {
	Client      string `json:"client"`
	Environment string `json:"environment,omitempty"`
	Decisions   int    `json:"decisions"`
	Denials     int    `json:"denials"`
	Errors      int    `json:"errors"`
}

// Period counts the decisions of one bucket of the timeline.
type Period struct {
	Start  time.Time      `json:"start"`
	Counts map[string]int `json:"counts"`
}

// Decisions in the order reports list them.
var decisionOrder = []string{audit.Allow, audit.Deny, audit.DryRunDeny, audit.Breakglass, audit.Error, audit.Revoked}

// quietAfter is how long a replica without interval checkpoints may log
// nothing while another goes on before it is flagged.
const quietAfter = time.Hour

// maxRows bounds each table: a report is read by people.
const maxRows = 500

// Window is the time range of records to report; zero ends are open.
type Window struct {
	Since, Until time.Time
}

func (w Window) contains(t time.Time) bool {
	return (w.Since.IsZero() || !t.Before(w.Since)) && (w.Until.IsZero() || t.Before(w.Until))
}

// Source is one decision log to read.
type Source struct {
	Name string
	R    io.Reader
}

// Build reads the decision logs and summarises the records in the window.
// Lines that are not decision records (checkpoints, operational lines) are
// skipped; lines that are not JSON are counted.
func Build(sources []Source, w Window) (*Report, error) {
	b := newBuilder()
	r := &Report{Since: w.Since, Until: w.Until}
	for _, s := range sources {
		r.Files = append(r.Files, s.Name)
		if err := b.read(s, w, r); err != nil {
			return nil, err
		}
	}
	b.finish(r)
	return r, nil
}

type builder struct {
	decisions                              map[string]int
	byImage, byRule, byReason, byEnv       map[string]int
	denied, dryrun                         map[string]*Denied
	breakglass                             map[string]*BreakglassUse
	suppressed                             map[string]*SuppressedFinding
	suppressedOrder                        []string
	errors                                 map[string]*UpstreamErrors
	errorReasons                           map[string]map[string]int
	clients                                map[string]*ClientRow
	records                                []timed
	tags, clientsOf                        map[string]map[string]bool
	deniedOrder, dryrunOrder, breakglassOr []string
	revoked                                map[string]*RevokedDigest
	revokedOrder                           []string
	// allowed is the last allow of each image digest: rule and time.
	allowed  map[string]timedRule
	replicas map[string]*replica
}

type timedRule struct {
	rule string
	t    time.Time
}

// replica is what is known of one log id.
type replica struct {
	Replica
	lastMsg, lastReason string
	intervals           []time.Time // of its interval checkpoints
}

// timed is a record's time and decision, for the timeline.
type timed struct {
	t        time.Time
	decision string
}

func newBuilder() *builder {
	return &builder{
		decisions: map[string]int{}, byImage: map[string]int{}, byRule: map[string]int{}, byReason: map[string]int{}, byEnv: map[string]int{},
		denied: map[string]*Denied{}, dryrun: map[string]*Denied{}, breakglass: map[string]*BreakglassUse{}, suppressed: map[string]*SuppressedFinding{},
		errors: map[string]*UpstreamErrors{}, errorReasons: map[string]map[string]int{}, clients: map[string]*ClientRow{},
		tags: map[string]map[string]bool{}, clientsOf: map[string]map[string]bool{},
		revoked: map[string]*RevokedDigest{}, allowed: map[string]timedRule{}, replicas: map[string]*replica{},
	}
}

func (b *builder) read(s Source, w Window, r *Report) error {
	sc := bufio.NewScanner(s.R)
	sc.Buffer(make([]byte, 0, 64<<10), 16<<20)
	for sc.Scan() {
		line := sc.Bytes()
		if len(bytes.TrimSpace(line)) == 0 {
			continue
		}
		rec, err := audit.Parse(line)
		if errors.Is(err, audit.ErrNotDecision) {
			if h, err := audit.ParseHeader(line); err == nil && !h.Time.IsZero() && w.contains(h.Time) {
				b.seen(h)
			}
			continue
		}
		if err != nil {
			r.Unreadable++
			continue
		}
		if !w.contains(rec.Time) {
			continue
		}
		b.seen(audit.Header{Time: rec.Time, Msg: "decision", LogID: rec.LogID})
		r.Records++
		if r.Records == 1 || rec.Time.Before(r.First) {
			r.First = rec.Time
		}
		if r.Records == 1 || rec.Time.After(r.Last) {
			r.Last = rec.Time
		}
		b.add(rec)
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("%s: %w", s.Name, err)
	}
	return nil
}

// digests and their names in reasons make every reason unique; they are
// elided to group reasons.
var digestInText = regexp.MustCompile(`sha256[:-][0-9a-f]{64}`)

// Reason is how reasons are grouped: joined, with digests elided.
func Reason(reasons []string) string {
	return digestInText.ReplaceAllStringFunc(strings.Join(reasons, "; "), func(d string) string { return d[:7] + "…" })
}

// breakglassReason is how the policy words a breakglass decision.
var breakglassReason = regexp.MustCompile(`^breakglass (\S+) until (\S+): (.*)$`)

// clientName is who a record's client is: the principal it authenticated
// as, else its certificate identity, else its address without the
// (ephemeral) port.
func clientName(rec audit.Record) string {
	if rec.Principal != "" {
		return rec.Principal
	}
	c := rec.Client
	if c.Identity != "" {
		return c.Identity
	}
	if host, _, err := net.SplitHostPort(c.Addr); err == nil {
		return host
	}
	return c.Addr
}

// seen counts a line of a replica's log.
func (b *builder) seen(h audit.Header) {
	r := b.replicas[h.LogID]
	if r == nil {
		r = &replica{Replica: Replica{LogID: h.LogID, First: h.Time, Last: h.Time}}
		b.replicas[h.LogID] = r
	}
	if h.Msg == "decision" {
		r.Decisions++
	}
	if h.Msg == "checkpoint" && h.Reason == audit.CheckpointInterval {
		r.intervals = append(r.intervals, h.Time)
	}
	if h.Time.Before(r.First) {
		r.First = h.Time
	}
	if !h.Time.Before(r.Last) {
		r.Last, r.lastMsg, r.lastReason = h.Time, h.Msg, h.Reason
	}
}

func (b *builder) add(rec audit.Record) {
	b.decisions[rec.Decision]++
	b.records = append(b.records, timed{rec.Time, rec.Decision})
	digest := rec.Image + "\x00" + rec.Digest
	switch rec.Decision {
	case audit.Allow:
		if last, ok := b.allowed[digest]; !ok || !rec.Time.Before(last.t) {
			b.allowed[digest] = timedRule{rec.Rule, rec.Time}
		}
	case audit.Revoked: // re-validation's, not a client's pull
		b.revoke(rec)
		return
	}
	client := clientName(rec)
	c := b.clients[client]
	if c == nil {
		c = &ClientRow{Client: client}
		b.clients[client] = c
	}
	c.Decisions++
	if rec.Client.Environment != "" {
		c.Environment = rec.Client.Environment
	}
	reason := Reason(rec.Reasons)
	key := strings.Join([]string{rec.Image, rec.Digest, rec.Rule, reason}, "\x00")
	switch rec.Decision {
	case audit.Allow:
		b.addSuppressed(rec)
	case audit.Deny:
		c.Denials++
		b.byImage[rec.Image]++
		b.byRule[rec.Rule]++
		b.byReason[reason]++
		env := rec.Client.Environment
		if env == "" {
			env = "(none)"
		}
		b.byEnv[env]++
		b.group(b.denied, &b.deniedOrder, key, rec, reason, client)
	case audit.DryRunDeny:
		b.group(b.dryrun, &b.dryrunOrder, key, rec, reason, client)
	case audit.Breakglass:
		u := b.breakglass[key]
		if u == nil {
			u = &BreakglassUse{Image: rec.Image, Digest: rec.Digest, Reason: reason, First: rec.Time}
			for _, r := range rec.Reasons {
				if m := breakglassReason.FindStringSubmatch(r); m != nil {
					u.Entry, u.Reason = m[1], m[3]
					u.Expires, _ = time.Parse(time.RFC3339, m[2])
				}
			}
			b.breakglass[key] = u
			b.breakglassOr = append(b.breakglassOr, key)
		}
		u.Pulls++
		u.Last = rec.Time
		u.Clients = b.addClient(key, u.Clients, client)
	case audit.Error:
		c.Errors++
		e := b.errors[rec.Upstream]
		if e == nil {
			e = &UpstreamErrors{Upstream: rec.Upstream}
			b.errors[rec.Upstream] = e
			b.errorReasons[rec.Upstream] = map[string]int{}
		}
		e.Count++
		e.Last = rec.Time
		b.errorReasons[rec.Upstream][reason]++
	}
}

// addSuppressed counts the findings that rec's scans had suppressed.
func (b *builder) addSuppressed(rec audit.Record) {
	for _, v := range rec.VerifiedBy {
		for _, s := range v.Suppressed {
			key := strings.Join([]string{rec.Image, rec.Digest, s.ID, s.Package, s.Version, s.By, s.Detail}, "\x00")
			f := b.suppressed[key]
			if f == nil {
				f = &SuppressedFinding{Image: rec.Image, Digest: rec.Digest, ID: s.ID, Severity: s.Severity, Package: s.Package, Version: s.Version,
					By: s.By, Detail: s.Detail, Scanner: v.Attestor, First: rec.Time}
				if s.Expires != nil {
					f.Expires = *s.Expires
				}
				b.suppressed[key] = f
				b.suppressedOrder = append(b.suppressedOrder, key)
			}
			f.Pulls++
			f.Last = rec.Time
		}
	}
}

// revoke counts a revoked line in the row of its digest, rule and reason.
func (b *builder) revoke(rec audit.Record) {
	reason := Reason(rec.Reasons)
	key := strings.Join([]string{rec.Image, rec.Digest, rec.Rule, reason}, "\x00")
	d := b.revoked[key]
	if d == nil {
		d = &RevokedDigest{Image: rec.Image, Digest: rec.Digest, Rule: rec.Rule, Reason: reason, First: rec.Time, Tags: []string{}}
		b.revoked[key] = d
		b.revokedOrder = append(b.revokedOrder, key)
	}
	d.Times++
	if rec.Time.Before(d.First) {
		d.First = rec.Time
	}
	if !rec.Time.Before(d.Last) {
		d.Last = rec.Time
	}
	// Its own rows: a later deny of the digest, by the same rule for the
	// same reason, has the same key and lists its own tags and clients.
	key = "revoked\x00" + key
	d.Tags = b.addTag(key, d.Tags, rec.Reference)
	if rec.Client.Addr != "" || rec.Client.Identity != "" || rec.Principal != "" {
		d.Clients = b.addClient(key, d.Clients, clientName(rec))
	}
}

// group counts rec in the Denied row for key.
func (b *builder) group(rows map[string]*Denied, order *[]string, key string, rec audit.Record, reason, client string) {
	d := rows[key]
	if d == nil {
		d = &Denied{Image: rec.Image, Digest: rec.Digest, Rule: rec.Rule, Reason: reason, First: rec.Time, Tags: []string{}}
		rows[key] = d
		*order = append(*order, key)
	}
	d.Pulls++
	d.Last = rec.Time
	d.Tags = b.addTag(key, d.Tags, rec.Reference)
	d.Clients = b.addClient(key, d.Clients, client)
}

// addTag adds the tag ref asked for to the row of key, once; a digest
// reference is no tag.
func (b *builder) addTag(key string, list []string, ref string) []string {
	if ref == "" || strings.HasPrefix(ref, "sha256:") {
		return list
	}
	if b.tags[key] == nil {
		b.tags[key] = map[string]bool{}
	}
	if b.tags[key][ref] {
		return list
	}
	b.tags[key][ref] = true
	return append(list, ref)
}

func (b *builder) addClient(key string, list []string, client string) []string {
	if b.clientsOf[key] == nil {
		b.clientsOf[key] = map[string]bool{}
	}
	if b.clientsOf[key][client] {
		return list
	}
	b.clientsOf[key][client] = true
	return append(list, client)
}

func (b *builder) finish(r *Report) {
	for _, d := range decisionOrder {
		r.Decisions = append(r.Decisions, Count{d, b.decisions[d]})
	}
	r.Denials = Denials{
		Total:         b.decisions[audit.Deny],
		ByImage:       counts(b.byImage),
		ByRule:        counts(b.byRule),
		ByReason:      counts(b.byReason),
		ByEnvironment: counts(b.byEnv),
		Pulls:         rows(b.denied, b.deniedOrder),
	}
	r.DryRun = rows(b.dryrun, b.dryrunOrder)
	r.Revoked = []RevokedDigest{}
	for _, k := range b.revokedOrder {
		d := *b.revoked[k]
		if a, ok := b.allowed[d.Image+"\x00"+d.Digest]; ok {
			d.AllowedBy, d.Allowed = a.rule, a.t
		}
		if d.Clients == nil {
			d.Clients = []string{}
		}
		r.Revoked = append(r.Revoked, d)
	}
	sort.SliceStable(r.Revoked, func(i, j int) bool { return r.Revoked[i].Last.After(r.Revoked[j].Last) })
	if len(r.Revoked) > maxRows {
		r.Revoked = r.Revoked[:maxRows]
	}
	r.Replicas = b.replicaRows()
	r.Breakglass = []BreakglassUse{}
	for _, k := range b.breakglassOr {
		r.Breakglass = append(r.Breakglass, *b.breakglass[k])
	}
	sort.SliceStable(r.Breakglass, func(i, j int) bool { return r.Breakglass[i].Last.After(r.Breakglass[j].Last) })
	r.Suppressed = []SuppressedFinding{}
	for _, k := range b.suppressedOrder {
		r.Suppressed = append(r.Suppressed, *b.suppressed[k])
	}
	// Most recently pulled first; an image's findings together.
	sort.SliceStable(r.Suppressed, func(i, j int) bool { return r.Suppressed[i].Last.After(r.Suppressed[j].Last) })
	if len(r.Suppressed) > maxRows {
		r.Suppressed = r.Suppressed[:maxRows]
	}
	r.Errors = []UpstreamErrors{}
	for up, e := range b.errors {
		e.Reasons = counts(b.errorReasons[up])
		r.Errors = append(r.Errors, *e)
	}
	sort.Slice(r.Errors, func(i, j int) bool {
		if r.Errors[i].Count != r.Errors[j].Count {
			return r.Errors[i].Count > r.Errors[j].Count
		}
		return r.Errors[i].Upstream < r.Errors[j].Upstream
	})
	r.Clients = []ClientRow{}
	for _, c := range b.clients {
		r.Clients = append(r.Clients, *c)
	}
	sort.Slice(r.Clients, func(i, j int) bool {
		if r.Clients[i].Decisions != r.Clients[j].Decisions {
			return r.Clients[i].Decisions > r.Clients[j].Decisions
		}
		return r.Clients[i].Client < r.Clients[j].Client
	})
	if len(r.Clients) > maxRows {
		r.Clients = r.Clients[:maxRows]
	}
	r.Bucket, r.Timeline = timeline(b.records, r.First, r.Last)
}

// replicaRows lists the replicas by log id, flagging those that went
// quiet while another went on.
func (b *builder) replicaRows() []Replica {
	out := []Replica{}
	var latest time.Time
	for _, r := range b.replicas {
		if r.Last.After(latest) {
			latest = r.Last
		}
	}
	for _, r := range b.replicas {
		r.Stopped = r.lastMsg == "checkpoint" && r.lastReason == audit.CheckpointShutdown
		r.Quiet = len(b.replicas) > 1 && !r.Stopped && latest.Sub(r.Last) > r.quietAfter()
		out = append(out, r.Replica)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].LogID < out[j].LogID })
	return out
}

// quietAfter is how long r may log nothing before it is flagged: three of
// its checkpoint intervals (the median gap between its interval
// checkpoints), or quietAfter without two of them.
func (r *replica) quietAfter() time.Duration {
	if len(r.intervals) < 2 {
		return quietAfter
	}
	slices.SortFunc(r.intervals, func(a, b time.Time) int { return a.Compare(b) })
	gaps := make([]time.Duration, len(r.intervals)-1)
	for i := range gaps {
		gaps[i] = r.intervals[i+1].Sub(r.intervals[i])
	}
	slices.Sort(gaps)
	return 3 * gaps[len(gaps)/2]
}

// counts sorts a tally, most first, then by key, at most maxRows.
func counts(m map[string]int) []Count {
	out := make([]Count, 0, len(m))
	for k, n := range m {
		out = append(out, Count{k, n})
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Count != out[j].Count {
			return out[i].Count > out[j].Count
		}
		return out[i].Key < out[j].Key
	})
	if len(out) > maxRows {
		out = out[:maxRows]
	}
	return out
}

// rows lists denied pulls, most pulled first, then most recent.
func rows(m map[string]*Denied, order []string) []Denied {
	out := make([]Denied, 0, len(order))
	for _, k := range order {
		out = append(out, *m[k])
	}
	sort.SliceStable(out, func(i, j int) bool {
		if out[i].Pulls != out[j].Pulls {
			return out[i].Pulls > out[j].Pulls
		}
		return out[i].Last.After(out[j].Last)
	})
	if len(out) > maxRows {
		out = out[:maxRows]
	}
	return out
}

// timeline counts decisions per bucket: five minutes, an hour, a day, a
// week, 30 days or a year, the shortest that gives the span at most 60
// bars. Times are taken in whole seconds, so that any span fits.
func timeline(records []timed, first, last time.Time) (string, []Period) {
	if len(records) == 0 {
		return "", []Period{}
	}
	const bars = 60
	span := last.Unix() - first.Unix()
	name, size := "", int64(0)
	for _, b := range []struct {
		name string
		size int64
	}{{"5 minutes", 300}, {"hour", 3600}, {"day", 86400}, {"week", 7 * 86400}, {"30 days", 30 * 86400}, {"year", 365 * 86400}} {
		if span/b.size < bars {
			name, size = b.name, b.size
			break
		}
	}
	if size == 0 {
		size = (span/bars + 1) / 86400 * 86400
		name = fmt.Sprintf("%d days", size/86400)
	}
	// Buckets are aligned on the Unix epoch; the many-day ones on the first
	// record's day.
	origin := int64(0)
	if size > 365*86400 {
		origin = first.Unix() - mod(first.Unix(), 86400)
	}
	floor := func(t time.Time) int64 { // the start of t's bucket, in Unix seconds
		return t.Unix() - mod(t.Unix()-origin, size)
	}
	start := floor(first)
	out := make([]Period, (floor(last)-start)/size+1)
	for i := range out {
		out[i] = Period{Start: time.Unix(start+int64(i)*size, 0).UTC(), Counts: map[string]int{}}
	}
	for _, r := range records {
		out[(floor(r.t)-start)/size].Counts[r.decision]++
	}
	return name, out
}

// mod is a modulo that is never negative.
func mod(a, b int64) int64 {
	m := a % b
	if m < 0 {
		m += b
	}
	return m
}
