package audit

import (
	"bytes"
	"crypto"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"
	"strconv"
	"time"
)

// Kinds of problem Verify finds.
const (
	// ProblemChanged: a line is not as the proxy wrote it.
	ProblemChanged = "changed"
	// ProblemRemoved: lines are missing between two lines, or before a
	// start whose run before is not in the files.
	ProblemRemoved = "removed"
	// ProblemInserted: a line is not part of the chain.
	ProblemInserted = "inserted"
	// ProblemReordered: lines are out of order.
	ProblemReordered = "reordered"
	// ProblemTruncated: a file or a line was cut short.
	ProblemTruncated = "truncated"
	// ProblemMalformed: a line is not a JSON object.
	ProblemMalformed = "malformed"
	// ProblemBroken: a new chain starts where the old one had not ended,
	// or a start says otherwise of the run before than the chain shows.
	ProblemBroken = "broken"
	// ProblemSignature: a checkpoint is not signed by a key given for its
	// time, or its signature does not verify.
	ProblemSignature = "signature"
)

// Finding is a problem or a note about one line of one file.
type Finding struct {
	File    string `json:"file"`
	Line    int    `json:"line"`
	Kind    string `json:"kind,omitempty"`
	Message string `json:"message"`
	// LogID is the log of the line.
	LogID string `json:"logId,omitempty"`
}

func (f Finding) String() string {
	if f.Kind == "" {
		return fmt.Sprintf("%s:%d: %s", f.File, f.Line, f.Message)
	}
	return fmt.Sprintf("%s:%d: %s: %s", f.File, f.Line, f.Kind, f.Message)
}

// FileReport summarises one file, in the order read.
type FileReport struct {
	Name  string `json:"name"`
	Lines int    `json:"lines"`
	// FirstSeq and LastSeq are the chain's sequence numbers in the file (0
	// when it has no chained line).
	FirstSeq uint64 `json:"firstSeq"`
	LastSeq  uint64 `json:"lastSeq"`
	// Ends is the reason of the checkpoint the file ends with (reopen,
	// shutdown), "" when it ends otherwise.
	Ends string `json:"ends,omitempty"`
}

// Position is a line of a file, with the time it carries.
type Position struct {
	File string    `json:"file"`
	Line int       `json:"line"`
	Seq  uint64    `json:"seq"`
	Time time.Time `json:"time"`
}

// Unvouched is a run of chained lines that no verified checkpoint vouched
// for when they were written: whoever could write the files could have cut
// lines from its end without a trace.
type Unvouched struct {
	// After is the checkpoint before them (nil: none).
	After *Position `json:"after,omitempty"`
	Lines int       `json:"lines"`
	// Until is the start checkpoint that followed them after the proxy
	// stopped without its shutdown checkpoint; nil for the log's end.
	Until *Position `json:"until,omitempty"`
}

// LogReport is one log (one replica's log id) across the files.
type LogReport struct {
	LogID string   `json:"logId"`
	Files []string `json:"files"`
	Lines int      `json:"lines"`
	// Decisions counts decision records, Starts the processes started
	// (start checkpoints), Unclean those after a stop without the
	// shutdown checkpoint.
	Decisions int `json:"decisions"`
	Starts    int `json:"starts"`
	Unclean   int `json:"unclean"`
	// FirstSeq, LastSeq, First and Last are the chain's first and last
	// sequence numbers and times in the files.
	FirstSeq uint64    `json:"firstSeq"`
	LastSeq  uint64    `json:"lastSeq"`
	First    time.Time `json:"first"`
	Last     time.Time `json:"last"`
	// Gaps are the problems of this log where lines are missing: removed,
	// truncated, or a chain broken. Problems counts all its problems.
	Gaps     []Finding `json:"gaps"`
	Problems int       `json:"problems"`
	// Unvouched are the runs of lines no verified checkpoint vouched for:
	// before each unclean restart, and at the end (Tail).
	Unvouched []Unvouched `json:"unvouched"`
	// LastCheckpoint, Tail and Closed are as in VerifyReport, for this log.
	LastCheckpoint *Position `json:"lastCheckpoint,omitempty"`
	Tail           int       `json:"tail"`
	Closed         bool      `json:"closed"`
}

// VerifyReport is what Verify found.
type VerifyReport struct {
	// Files in the order they were read: by the time of their first line.
	Files     []FileReport `json:"files"`
	Lines     int          `json:"lines"`
	Decisions int          `json:"decisions"`
	// Unchained counts the lines before the chain began (written by a
	// proxy without audit.chain): nothing vouches for them.
	Unchained int `json:"unchained"`
	// Checkpoints counts checkpoint lines; Signed those that carry a
	// signature; Verified those whose signature verified with a key given.
	Checkpoints int `json:"checkpoints"`
	Signed      int `json:"signed"`
	Verified    int `json:"verified"`
	// Keys are the IDs of the keys given.
	Keys []string `json:"keys"`
	// First and Last are the times of the first and last lines.
	First time.Time `json:"first"`
	Last  time.Time `json:"last"`
	// Problems are what the proxy did not write as it stands; Notes are
	// what an auditor should know, such as lines the proxy could not
	// write while its log was failing.
	Problems []Finding `json:"problems"`
	Notes    []Finding `json:"notes"`
	// Logs are the logs found, one per log id (replica), in the order
	// first seen.
	Logs []*LogReport `json:"logs"`
	// LastCheckpoint is the last checkpoint that vouches for the lines
	// before it: with keys, the last whose signature verified; without,
	// the last checkpoint line; of the log that wrote last when there are
	// several. Tail counts the chained lines after the last such
	// checkpoint of each log, which only the chain links (nil and all
	// lines without one).
	LastCheckpoint *Position `json:"lastCheckpoint,omitempty"`
	Tail           int       `json:"tail"`
	// Closed: each log's last line is the checkpoint the proxy writes when
	// it stops, so nothing was cut from its end.
	Closed bool `json:"closed"`
}

// OK reports whether the log is as the proxy wrote it.
func (r *VerifyReport) OK() bool { return len(r.Problems) == 0 }

// Key is a public key that verifies the checkpoints written from From
// until Until (zero: unbounded), as a checkpoint's own time says: after a
// key rotation, each key is given for the time it signed.
type Key struct {
	Public      crypto.PublicKey
	From, Until time.Time
}

func (k Key) covers(t time.Time) bool {
	return (k.From.IsZero() || !t.Before(k.From)) && (k.Until.IsZero() || t.Before(k.Until))
}

func (k Key) span() string {
	switch {
	case k.From.IsZero() && k.Until.IsZero():
		return "any time"
	case k.From.IsZero():
		return "until " + k.Until.UTC().Format(time.RFC3339)
	case k.Until.IsZero():
		return "from " + k.From.UTC().Format(time.RFC3339)
	}
	return "from " + k.From.UTC().Format(time.RFC3339) + " until " + k.Until.UTC().Format(time.RFC3339)
}

// maxProblems bounds the problems listed; beyond, the log is plainly not
// as written.
const maxProblems = 100

// lookAhead is how far Verify looks for where a line that does not link
// belongs.
const lookAhead = 256

// Verify checks the decision-log files at paths (gzipped or not, in any
// order: they are read by the time of their first line; a folder stands
// for the files in it) against their hash chains, one per log id, and
// their checkpoints' signatures against keys: with keys, every checkpoint
// must be signed by one given for its time. It finds lines removed,
// inserted, changed or reordered, files cut short, and runs missing
// between the files (a start checkpoint names the run before it), each at
// its line. An error means the files could not be read, or hold no chain
// at all.
func Verify(paths []string, keys []Key) (*VerifyReport, error) {
	files, err := Files(paths)
	if err != nil {
		return nil, err
	}
	ordered, err := chronological(files)
	if err != nil {
		return nil, err
	}
	v := &verifier{
		rep:      &VerifyReport{Keys: []string{}, Problems: []Finding{}, Notes: []Finding{}, Logs: []*LogReport{}},
		keys:     map[string][]Key{},
		logs:     map[string]*chain{},
		reported: map[[2]int]bool{},
	}
	for _, k := range keys {
		id, err := KeyID(k.Public)
		if err != nil {
			return nil, err
		}
		if v.keys[id] == nil {
			v.rep.Keys = append(v.rep.Keys, id)
		}
		v.keys[id] = append(v.keys[id], k)
	}
	for _, p := range ordered {
		v.rep.Files = append(v.rep.Files, FileReport{Name: p})
	}
	s := &stream{paths: ordered}
	defer s.close()
	for {
		e, err := s.next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, err
		}
		v.step(e, s)
	}
	if !v.started() {
		return nil, fmt.Errorf("no line carries the chain (seq and prev): the log was written with audit.chain: false, or is not a decision log; nothing can be verified")
	}
	v.finish()
	return v.rep, nil
}

// chronological orders paths by the time of their first line, so that
// `--log decisions.jsonl*` reads logrotate's files oldest first.
func chronological(paths []string) ([]string, error) {
	type file struct {
		path  string
		first time.Time
	}
	files := make([]file, len(paths))
	for i, p := range paths {
		files[i].path = p
		if p == "-" {
			if len(paths) > 1 {
				return nil, errors.New("standard input (-) can only be read alone")
			}
			return paths, nil
		}
		rc, err := Open(p)
		if err != nil {
			return nil, err
		}
		line, _, err := newLineReader(rc).next()
		rc.Close()
		if err != nil && err != io.EOF {
			return nil, fmt.Errorf("%s: %w", p, err)
		}
		var h struct {
			Time string `json:"time"`
		}
		if json.Unmarshal(line, &h) == nil {
			files[i].first, _ = time.Parse(time.RFC3339Nano, h.Time)
		}
	}
	sort.SliceStable(files, func(i, j int) bool { return files[i].first.Before(files[j].first) })
	out := make([]string, len(files))
	for i, f := range files {
		out[i] = f.path
	}
	return out, nil
}

// entry is one line read back.
type entry struct {
	file     int
	name     string
	line     int
	complete bool // ended with a newline
	json     bool // is a JSON object
	chained  bool // carries seq and prev
	last     bool // the last line of its file
	hash     string
	seq      uint64
	prev     string
	time     time.Time
	msg      string
	// logID is the line's log, or for a line without one the log of the
	// line before it in its file.
	logID string
	// A checkpoint's reason, key, signature, and what the signature
	// covers; lost and since for a resume checkpoint.
	reason    string
	keyID     string
	signature []byte
	signed    []byte
	verified  bool
	lost      int
	since     string
	// A start checkpoint's previous: PreviousNone, PreviousUnclean (with
	// found), a link to the run before (previousLink), or "" when the
	// line has none (written by an older version).
	previous     string
	previousLink *Link
	found        *Found
}

func (e *entry) checkpoint() bool { return e.chained && e.msg == "checkpoint" }

func (e *entry) start() bool { return e.checkpoint() && e.reason == CheckpointStart }

func (e *entry) pos() Position { return Position{File: e.name, Line: e.line, Seq: e.seq, Time: e.time} }

func (e *entry) String() string { return fmt.Sprintf("%s:%d", e.name, e.line) }

// previousLink is a start's previous given as a link.
const previousLink = "link"

var signatureField = []byte(`,"signature":"`)

// parseEntry reads what Verify needs from one line.
func parseEntry(raw []byte, complete bool, file int, name string, line int) *entry {
	e := &entry{file: file, name: name, line: line, complete: complete, hash: lineHash(raw)}
	if !decisionLine(raw, e) {
		decodeEntry(raw, e)
	}
	return e
}

// decodeEntry reads what Verify needs from one line, decoded whole.
func decodeEntry(raw []byte, e *entry) {
	var h struct {
		Time      string          `json:"time"`
		Msg       string          `json:"msg"`
		LogID     string          `json:"logId"`
		Seq       *uint64         `json:"seq"`
		Prev      *string         `json:"prev"`
		Reason    string          `json:"reason"`
		KeyID     string          `json:"keyId"`
		Signature string          `json:"signature"`
		Lost      int             `json:"lost"`
		Since     string          `json:"since"`
		Previous  json.RawMessage `json:"previous"`
		Found     *Found          `json:"found"`
	}
	if json.Unmarshal(raw, &h) != nil {
		return
	}
	e.json = true
	e.time, _ = time.Parse(time.RFC3339Nano, h.Time)
	e.msg, e.logID = h.Msg, h.LogID
	if h.Seq == nil || h.Prev == nil {
		return
	}
	e.chained, e.seq, e.prev = true, *h.Seq, *h.Prev
	if h.Msg != "checkpoint" {
		return
	}
	e.reason, e.keyID, e.lost, e.since = h.Reason, h.KeyID, h.Lost, h.Since
	if len(h.Previous) > 0 {
		var link Link
		switch {
		case json.Unmarshal(h.Previous, &e.previous) == nil:
		case json.Unmarshal(h.Previous, &link) == nil:
			e.previous, e.previousLink = previousLink, &link
		default:
			e.previous = string(h.Previous)
		}
	}
	if e.previous == PreviousUnclean {
		e.found = h.Found
		if e.found == nil {
			e.found = &Found{}
		}
	}
	// The signature covers the line as it was before the signature was
	// added: everything up to the signature field, closed.
	if i := bytes.LastIndex(raw, signatureField); i > 0 && bytes.HasSuffix(raw, []byte(`"}`)) {
		if sig, err := base64.StdEncoding.DecodeString(string(raw[i+len(signatureField) : len(raw)-2])); err == nil {
			e.signature = sig
			e.signed = append(bytes.Clone(raw[:i]), '}')
		}
	}
	if e.signature == nil && h.Signature != "" {
		e.signature = []byte{} // present, but not where the proxy puts it
	}
}

// Parts of a decision line as the proxy writes it.
var (
	timeField     = []byte(`{"time":"`)
	levelField    = []byte(`","level":"`)
	decisionField = []byte(`","msg":"decision","decision":`)
	logIDField    = []byte(`,"logId":"`)
	seqField      = []byte(`,"seq":`)
	prevField     = []byte(`,"prev":"`)
)

// decisionLine reads, from a decision line laid out as the proxy writes it
// (slog's time, level and msg first, the log id and the chain last), what
// Verify needs of it, without decoding the record between: nine lines in
// ten of a log, and encoding/json would take most of the time verify
// takes. It reports false, having set nothing, for any other line, which
// is then decoded whole. Such a line is not checked to be JSON: what it
// holds is vouched for by the chain and the checkpoints, not by its
// syntax, and a line the proxy did not write breaks the chain.
func decisionLine(raw []byte, e *entry) bool {
	rest, ok := bytes.CutPrefix(raw, timeField)
	if !ok {
		return false
	}
	i := bytes.IndexByte(rest, '"')
	if i < 0 {
		return false
	}
	at, err := time.Parse(time.RFC3339Nano, string(rest[:i]))
	if err != nil {
		return false
	}
	if rest, ok = bytes.CutPrefix(rest[i:], levelField); !ok {
		return false
	}
	if i = bytes.IndexByte(rest, '"'); i < 0 || !bytes.HasPrefix(rest[i:], decisionField) {
		return false
	}
	body, ok := bytes.CutSuffix(raw, []byte(`"}`))
	if !ok {
		return false
	}
	p := bytes.LastIndex(body, prevField)
	if p < 0 {
		return false
	}
	prev := body[p+len(prevField):]
	if len(prev) != 0 && (len(prev) != len("sha256:")+64 || !bytes.HasPrefix(prev, []byte("sha256:")) || bytes.ContainsAny(prev[7:], `"\`)) {
		return false
	}
	q := bytes.LastIndex(body[:p], seqField)
	if q < 0 {
		return false
	}
	seq, err := strconv.ParseUint(string(body[q+len(seqField):p]), 10, 64)
	if err != nil {
		return false
	}
	var logID string
	if before := body[:q]; bytes.HasSuffix(before, []byte(`"`)) {
		if l := bytes.LastIndex(before, logIDField); l >= 0 {
			id := before[l+len(logIDField) : len(before)-1]
			if bytes.ContainsAny(id, `"\`) {
				return false // escaped: decoded whole
			}
			logID = string(id)
		}
	}
	e.json, e.chained, e.time, e.msg, e.logID, e.seq, e.prev = true, true, at, "decision", logID, seq, string(prev)
	return true
}

// stream reads the files' lines in order, with a look-ahead.
type stream struct {
	paths  []string
	fi     int
	rc     io.ReadCloser
	lr     *lineReader
	lineNo int
	logID  string // of the last line of the current file that named one
	buf    []*entry
}

// fill reads until n lines are buffered or every file is read. The last
// line of a file is marked once the file's end is seen.
func (s *stream) fill(n int) error {
	for len(s.buf) < n && s.fi < len(s.paths) {
		if s.lr == nil {
			rc, err := Open(s.paths[s.fi])
			if err != nil {
				return err
			}
			s.rc, s.lr, s.lineNo, s.logID = rc, newLineReader(rc), 0, ""
		}
		raw, complete, err := s.lr.next()
		if err == io.EOF {
			if k := len(s.buf); k > 0 && s.buf[k-1].file == s.fi {
				s.buf[k-1].last = true
			}
			s.rc.Close()
			s.lr = nil
			s.fi++
			continue
		}
		if err != nil {
			return fmt.Errorf("%s: %w", s.paths[s.fi], err)
		}
		s.lineNo++
		if len(raw) == 0 && complete {
			continue // a blank line holds nothing to vouch for
		}
		e := parseEntry(raw, complete, s.fi, s.paths[s.fi], s.lineNo)
		if e.logID == "" {
			e.logID = s.logID
		}
		s.logID = e.logID
		s.buf = append(s.buf, e)
	}
	return nil
}

// next returns the next line, having read one further so that the last
// line of a file is known as such.
func (s *stream) next() (*entry, error) {
	if err := s.fill(2); err != nil {
		return nil, err
	}
	if len(s.buf) == 0 {
		return nil, io.EOF
	}
	e := s.buf[0]
	s.buf = s.buf[1:]
	return e, nil
}

// ahead returns the chained lines of the log id after the last one next
// returned, at most lookAhead of them, among the next 4×lookAhead lines.
func (s *stream) ahead(logID string) []*entry {
	var out []*entry
	for i := 0; i < 4*lookAhead && len(out) < lookAhead; i++ {
		if s.fill(i+1) != nil || i >= len(s.buf) {
			break
		}
		if a := s.buf[i]; a.chained && a.logID == logID {
			out = append(out, a)
		}
	}
	return out
}

func (s *stream) close() {
	if s.lr != nil {
		s.rc.Close()
	}
}

// verifier walks the chains line by line.
type verifier struct {
	rep      *VerifyReport
	keys     map[string][]Key
	logs     map[string]*chain
	reported map[[2]int]bool
}

// chain is the walk along one log's chain.
type chain struct {
	rep     *LogReport
	started bool
	head    *entry // the last line accepted into the chain
	// recent are the last lines accepted, by hash, in order (window).
	recent map[string]*entry
	window []*entry
	// skip lines are accepted without checks (already explained by a
	// problem), then the chain resumes from resume if set; drop lines are
	// left out of the chain (reported as inserted); resync accepts the
	// next chained line as it comes, after a line that could not be read.
	skip   int
	resume *entry
	drop   int
	resync bool

	vouched *entry // the last checkpoint that vouches for the lines before it
	tail    int    // chained lines accepted after it
	file    int    // the last file it had a line in, +1 (0: none yet)
}

func (v *verifier) chainOf(e *entry) *chain {
	c := v.logs[e.logID]
	if c == nil {
		c = &chain{rep: &LogReport{LogID: e.logID, Files: []string{}, Gaps: []Finding{}, Unvouched: []Unvouched{}}, recent: map[string]*entry{}}
		v.logs[e.logID] = c
		v.rep.Logs = append(v.rep.Logs, c.rep)
	}
	return c
}

func (v *verifier) started() bool {
	for _, c := range v.logs {
		if c.started {
			return true
		}
	}
	return false
}

func (v *verifier) problem(e *entry, kind, format string, args ...any) {
	key := [2]int{e.file, e.line}
	if v.reported[key] {
		return
	}
	v.reported[key] = true
	if c := v.logs[e.logID]; c != nil {
		c.rep.Problems++
	}
	if len(v.rep.Problems) == maxProblems {
		v.rep.Problems = append(v.rep.Problems, Finding{File: e.name, Line: e.line, Message: "more problems follow; fix or explain the ones above first"})
	}
	if len(v.rep.Problems) > maxProblems {
		return
	}
	f := Finding{File: e.name, Line: e.line, Kind: kind, Message: fmt.Sprintf(format, args...), LogID: e.logID}
	v.rep.Problems = append(v.rep.Problems, f)
	if c := v.logs[e.logID]; c != nil && (kind == ProblemRemoved || kind == ProblemTruncated || kind == ProblemBroken) {
		c.rep.Gaps = append(c.rep.Gaps, f)
	}
}

func (v *verifier) note(e *entry, format string, args ...any) {
	v.rep.Notes = append(v.rep.Notes, Finding{File: e.name, Line: e.line, Message: fmt.Sprintf(format, args...), LogID: e.logID})
}

// step judges one line.
func (v *verifier) step(e *entry, s *stream) {
	c := v.chainOf(e)
	v.count(e, c)
	defer v.endOfFile(e, c)
	switch {
	case !e.complete:
		v.problem(e, ProblemTruncated, "the line is cut short (no newline at its end): the file was truncated here, or the proxy stopped while writing it")
		c.resync = c.started
		return
	case !e.json:
		v.problem(e, ProblemMalformed, "not a JSON object: damaged, or inserted")
		c.resync = c.started
		return
	case !e.chained && !c.started:
		v.rep.Unchained++
		return
	case !e.chained:
		v.problem(e, ProblemInserted, "not part of the chain (no seq and prev): inserted, or written while audit.chain was false")
		return
	case c.drop > 0:
		c.drop-- // reported with the first inserted line
		return
	}
	if e.checkpoint() {
		v.checkSignature(e)
	}
	if c.skip == 0 && c.head != nil && e.file != c.head.file {
		v.leftFile(c, e)
	}
	switch {
	case c.skip > 0:
		c.skip--
		v.accept(c, e)
		if c.skip == 0 && c.resume != nil {
			c.head, c.resume = c.resume, nil
		}
		return
	case !c.started:
		c.started = true
		v.begin(e)
	case c.resync:
		c.resync = false // re-anchored after a line that could not be read
	case e.prev == "":
		v.newChain(c, e)
	case e.prev == c.head.hash && e.seq == c.head.seq+1:
		if e.start() {
			v.restart(c, e)
		}
	case e.prev == c.head.hash:
		v.problem(e, ProblemChanged, "this line was changed: its seq is %d, but it follows seq %d (%s)", e.seq, c.head.seq, c.head)
	case e.start() && v.runMissing(c, e):
	default:
		if !v.broken(c, e, s) {
			return
		}
	}
	v.accept(c, e)
}

// clean reports whether e is the shutdown checkpoint of a run, verified
// when keys are given.
func (v *verifier) clean(e *entry) bool {
	return e.checkpoint() && e.reason == CheckpointShutdown && (len(v.keys) == 0 || e.verified)
}

// begin notes what an auditor should know of the first line of a log.
func (v *verifier) begin(e *entry) {
	if e.prev == "" {
		return
	}
	if l := e.previousLink; l != nil && l.LogID != e.logID {
		if other := v.logs[l.LogID]; other != nil && other.head != nil && other.head.hash == l.Hash && e.prev == l.Hash {
			v.note(e, "log %q continues log %q here, from its shutdown checkpoint at %s: its log id changed at this restart", e.logID, l.LogID, other.head)
			return
		}
	}
	v.note(e, "the chain begins before this line (seq %d): earlier lines are in files not given", e.seq)
	if e.found != nil {
		v.note(e, "the proxy started here after a stop without its shutdown checkpoint: %s", e.found.Why)
	}
}

// newChain judges a new chain starting in a log: accepted after a verified
// shutdown checkpoint, or from a start that declares the unclean stop.
func (v *verifier) newChain(c *chain, e *entry) {
	switch {
	case e.start() && e.previous == PreviousUnclean:
		c.rep.Unclean++
		v.note(e, "a new chain starts after a stop without the shutdown checkpoint (the chain before ends at %s, seq %d): %s", c.head, c.head.seq, e.found.Why)
		v.unvouched(c, e)
	case v.clean(c.head):
		v.note(e, "a new chain starts: the proxy started on a new or empty file after it stopped at %s", c.head)
		if l := e.previousLink; l != nil && l.Hash != c.head.hash {
			v.problem(e, ProblemBroken, "the start says the run before ended with checkpoint seq %d (%s), but the chain before ends with %s (seq %d)", l.Seq, l.Hash, c.head, c.head.seq)
		}
	default:
		v.problem(e, ProblemBroken, "a new chain starts here, but the chain before it (last line %s, seq %d) did not end with the proxy's verified shutdown checkpoint, and the start does not declare an unclean stop: lines after it may have been removed, or its file replaced", c.head, c.head.seq)
		v.unvouched(c, e)
	}
}

// restart judges a start checkpoint that continues the chain: what it says
// of the run before must be what the chain shows.
func (v *verifier) restart(c *chain, e *entry) {
	h := c.head
	switch e.previous {
	case previousLink:
		if l := e.previousLink; l.Hash != h.hash || l.Seq != h.seq || !v.clean(h) {
			v.problem(e, ProblemBroken, "the start says the run before ended with its shutdown checkpoint seq %d (%s), but it follows %s (seq %d), which is not that verified checkpoint", l.Seq, l.Hash, h, h.seq)
		}
	case PreviousUnclean:
		c.rep.Unclean++
		if e.found.Checkpoint == nil {
			// Its state, beside the log, was deleted: so would be the
			// trace of lines cut from the end of the run before.
			v.problem(e, ProblemBroken, "the proxy restarted here with no record of its last checkpoint, after %s (seq %d), which is not its shutdown checkpoint: whether lines were cut from the end of the run before cannot be told (%s)", h, h.seq, e.found.Why)
		} else {
			v.note(e, "the proxy restarted here after a stop without its shutdown checkpoint: %s", e.found.Why)
		}
		v.unvouched(c, e)
	case PreviousNone:
		v.problem(e, ProblemBroken, "the start says nothing came before it, yet it continues the chain of %s (seq %d)", h, h.seq)
	default:
		if !v.clean(h) { // written by a version that did not say how the run before ended
			v.note(e, "the proxy restarted here after %s (seq %d), which is not its verified shutdown checkpoint: lines after its last checkpoint may have been cut before the restart", h, h.seq)
			v.unvouched(c, e)
		}
	}
}

// runMissing reports, for a start that does not follow the line before it,
// whether the checkpoint it names as the run before's last is missing from
// the files: then that is the problem, and the start joins the chain.
func (v *verifier) runMissing(c *chain, e *entry) bool {
	named, what := e.previousLink, "the run before ended with its shutdown checkpoint"
	if e.found != nil && e.found.Checkpoint != nil {
		named, what = e.found.Checkpoint, "the proxy's last checkpoint before this start was"
	}
	if named == nil || named.Hash != e.prev || c.recent[named.Hash] != nil {
		return false
	}
	msg := fmt.Sprintf("%s seq %d (%s), which is not in the files given: the chain before ends at %s (seq %d)", what, named.Seq, named.Hash, c.head, c.head.seq)
	if named.Seq > c.head.seq {
		msg += fmt.Sprintf("; seq %d to %d are missing", c.head.seq+1, named.Seq)
	}
	if e.file != c.head.file {
		msg += fmt.Sprintf(": lines were cut from the end of %s, or a file between the two was not given", c.head.name)
	} else {
		msg += ": lines were cut from the end of the run before"
	}
	if e.found != nil {
		msg += "; the start found: " + e.found.Why
		c.rep.Unclean++
	}
	v.problem(e, ProblemRemoved, "%s", msg)
	v.unvouched(c, e)
	return true
}

// leftFile checks, at the first line of a log in a file after another,
// that the proxy ended the other file: with the checkpoint it writes
// before reopening or stopping, or that the start in this one says it
// stopped without. A file cut short lacks it.
func (v *verifier) leftFile(c *chain, e *entry) {
	h := c.head
	if h.checkpoint() && (h.reason == CheckpointReopen || h.reason == CheckpointShutdown) || e.start() && e.previous == PreviousUnclean {
		return
	}
	v.problem(h, ProblemTruncated, "%s ends here without the checkpoint the proxy writes when it leaves a file (reopen or shutdown): lines after its last checkpoint may have been cut off", h.name)
}

// unvouched records the lines accepted since the last vouching checkpoint
// as a run no checkpoint vouched for, ended by the start e.
func (v *verifier) unvouched(c *chain, e *entry) {
	if c.tail == 0 {
		return
	}
	u := Unvouched{Lines: c.tail}
	if c.vouched != nil {
		p := c.vouched.pos()
		u.After = &p
	}
	if e != nil {
		p := e.pos()
		u.Until = &p
	}
	c.rep.Unvouched = append(c.rep.Unvouched, u)
	c.tail = 0
}

// broken explains a line that does not link to the one before it, and
// reports whether it joins the chain.
func (v *verifier) broken(c *chain, e *entry, s *stream) bool {
	if prior, ok := c.recent[e.hash]; ok {
		v.problem(e, ProblemInserted, "a copy of %s (seq %d)", prior, prior.seq)
		return false
	}
	ahead := s.ahead(e.logID)
	// Reordered: the line it follows comes later.
	for i, a := range ahead {
		if a.hash == e.prev {
			v.problem(e, ProblemReordered, "seq %d is out of order: it follows seq %d, which comes after it, at %s", e.seq, a.seq, a)
			// Take the lines up to a as they come, then go on from the
			// one with the highest seq, which the next line follows.
			top := e
			for _, x := range ahead[:i+1] {
				if x.seq > top.seq {
					top = x
				}
			}
			c.skip, c.resume = i+1, top
			return true
		}
	}
	// Inserted: a later line continues from the last good one.
	for i, a := range ahead {
		if a.prev == c.head.hash {
			v.problem(e, ProblemInserted, "not part of the chain: %s continues from %s (seq %d), skipping %d line(s) from here", a, c.head, c.head.seq, i+1)
			c.drop = i
			return false
		}
	}
	// It follows an earlier line: those accepted since are not in the chain.
	if b, ok := c.recent[e.prev]; ok {
		for k, w := range c.window {
			if w == b && k+1 < len(c.window) {
				x := c.window[k+1]
				v.problem(x, ProblemInserted, "not part of the chain: %s (seq %d) follows %s (seq %d), and the %d line(s) from here to it are extra", e, e.seq, b, b.seq, len(c.window)-k-1)
				break
			}
		}
		return true
	}
	// What it follows is nowhere.
	if e.seq > c.head.seq+1 {
		msg := fmt.Sprintf("%d line(s) removed before this line: seq %d to %d are missing after %s", e.seq-c.head.seq-1, c.head.seq+1, e.seq-1, c.head)
		if e.file != c.head.file {
			msg += fmt.Sprintf("; the end of %s was cut off, or a file between the two was not given", c.head.name)
		}
		v.problem(e, ProblemRemoved, "%s", msg)
		return true
	}
	// Either the line before changed, or this one (and with it the next
	// line's link): the next line tells which, unless its own link is
	// explained by lines removed after this one.
	var next *entry
	if len(ahead) > 0 {
		next = ahead[0]
	}
	switch {
	case e.verified || next != nil && (next.prev == e.hash || next.seq != e.seq+1):
		v.problem(c.head, ProblemChanged, "this line was changed: it is not the line that %s (seq %d) follows", e, e.seq)
	case next != nil:
		v.problem(e, ProblemChanged, "this line was changed: it links neither to %s before it nor to %s after it", c.head, next)
		c.skip = 1 // the next line's link to this one is broken by the same change
	default:
		v.problem(c.head, ProblemChanged, "this line, or %s after it, was changed: they do not link", e)
	}
	return true
}

// accept makes e the head of its chain.
func (v *verifier) accept(c *chain, e *entry) {
	c.head = e
	c.recent[e.hash] = e
	c.window = append(c.window, e)
	if len(c.window) > lookAhead {
		delete(c.recent, c.window[0].hash)
		c.window = c.window[1:]
	}
	f := &v.rep.Files[e.file]
	if f.FirstSeq == 0 {
		f.FirstSeq = e.seq
	}
	if c.rep.FirstSeq == 0 {
		c.rep.FirstSeq = e.seq
	}
	f.LastSeq, c.rep.LastSeq = e.seq, e.seq
	if !e.checkpoint() {
		c.tail++
		return
	}
	if e.reason == CheckpointResume {
		since := e.since
		if t, err := time.Parse(time.RFC3339Nano, e.since); err == nil {
			since = t.UTC().Format(time.RFC3339)
		}
		v.note(e, "the proxy could not write its decision log from %s until this line: %d line(s) were lost (with audit.required, those pulls were refused with 503; without, served unlogged)", since, e.lost)
	}
	if len(v.keys) == 0 || e.verified {
		c.vouched, c.tail = e, 0
	} else {
		c.tail++
	}
}

// checkSignature verifies a checkpoint's signature with the keys given.
func (v *verifier) checkSignature(e *entry) {
	if e.signature != nil {
		v.rep.Signed++
	}
	if len(v.keys) == 0 {
		return // unsigned without keys: the proxy has none; it only marks its starts and stops
	}
	keys, ok := v.keys[e.keyID]
	switch {
	case e.signature == nil:
		v.problem(e, ProblemSignature, "the checkpoint is not signed, but --key was given: it was written without a checkpoint key, or its signature was stripped")
		return
	case !ok:
		v.problem(e, ProblemSignature, "the checkpoint names key %s, which is not one given with --key", e.keyID)
		return
	}
	var spans []string
	for _, k := range keys {
		if !k.covers(e.time) {
			spans = append(spans, k.span())
			continue
		}
		if verifyCheckpoint(k.Public, e.signed, e.signature) {
			e.verified = true
			v.rep.Verified++
			return
		}
		v.problem(e, ProblemSignature, "the checkpoint's signature does not verify with key %s: the line was changed or forged", e.keyID)
		return
	}
	v.problem(e, ProblemSignature, "the checkpoint, of %s, is signed by key %s, which is given for %v only: a key used after the time it was given for", e.time.UTC().Format(time.RFC3339), e.keyID, spans)
}

func (v *verifier) count(e *entry, c *chain) {
	v.rep.Lines++
	v.rep.Files[e.file].Lines++
	c.rep.Lines++
	if c.file != e.file+1 {
		c.file = e.file + 1
		c.rep.Files = append(c.rep.Files, e.name)
	}
	if e.msg == "decision" {
		v.rep.Decisions++
		c.rep.Decisions++
	}
	if e.checkpoint() {
		v.rep.Checkpoints++
		if e.start() {
			c.rep.Starts++
		}
	}
	if !e.time.IsZero() {
		widen(&v.rep.First, &v.rep.Last, e.time)
		widen(&c.rep.First, &c.rep.Last, e.time)
	}
}

// widen makes first and last span t.
func widen(first, last *time.Time, t time.Time) {
	if first.IsZero() || t.Before(*first) {
		*first = t
	}
	if t.After(*last) {
		*last = t
	}
}

// endOfFile records, at the last line of a file, the checkpoint its log's
// lines in it end with, when the proxy left the file or stopped there.
func (v *verifier) endOfFile(e *entry, c *chain) {
	if !e.last || c.head == nil || c.head.file != e.file {
		return
	}
	if h := c.head; h.checkpoint() && (h.reason == CheckpointReopen || h.reason == CheckpointShutdown) {
		v.rep.Files[e.file].Ends = h.reason
	}
}

func (v *verifier) finish() {
	r := v.rep
	logs := r.Logs[:0] // a log of unreadable lines only is none
	for _, lr := range r.Logs {
		if v.logs[lr.LogID].started {
			logs = append(logs, lr)
		}
	}
	r.Logs = logs
	for _, lr := range r.Logs {
		c := v.logs[lr.LogID]
		if len(v.keys) > 0 && c.vouched == nil {
			v.problem(c.head, ProblemSignature, "no checkpoint up to this line is signed by the key(s) given: nothing in these files is vouched for by them")
		}
		lr.Tail = c.tail
		v.unvouched(c, nil)
		if c.vouched != nil {
			p := c.vouched.pos()
			lr.LastCheckpoint = &p
			if r.LastCheckpoint == nil || p.Time.After(r.LastCheckpoint.Time) {
				r.LastCheckpoint = &p
			}
		}
		r.Tail += lr.Tail
		if c.head.checkpoint() && c.head.reason == CheckpointReopen {
			v.note(c.head, "the proxy left this file for a new one here: the log continues in a file not given")
		}
		lr.Closed = v.clean(c.head)
	}
	r.Closed = true
	for _, lr := range r.Logs {
		r.Closed = r.Closed && lr.Closed
	}
}
