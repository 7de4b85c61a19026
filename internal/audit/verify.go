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
	"time"
)

// Kinds of problem Verify finds.
const (
	// ProblemChanged: a line is not as the proxy wrote it.
	ProblemChanged = "changed"
	// ProblemRemoved: lines are missing between two lines.
	ProblemRemoved = "removed"
	// ProblemInserted: a line is not part of the chain.
	ProblemInserted = "inserted"
	// ProblemReordered: lines are out of order.
	ProblemReordered = "reordered"
	// ProblemTruncated: a file or a line was cut short.
	ProblemTruncated = "truncated"
	// ProblemMalformed: a line is not a JSON object.
	ProblemMalformed = "malformed"
	// ProblemBroken: a new chain starts where the old one had not ended.
	ProblemBroken = "broken"
	// ProblemSignature: a checkpoint's signature does not verify, or no
	// checkpoint is signed by the keys given.
	ProblemSignature = "signature"
)

// Finding is a problem or a note about one line of one file.
type Finding struct {
	File    string `json:"file"`
	Line    int    `json:"line"`
	Kind    string `json:"kind,omitempty"`
	Message string `json:"message"`
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
	// LastCheckpoint is the last checkpoint that vouches for the lines
	// before it: with keys, the last whose signature verified; without,
	// the last checkpoint line. Tail counts the chained lines after it,
	// which only the chain links (nil and all lines without one).
	LastCheckpoint *Position `json:"lastCheckpoint,omitempty"`
	Tail           int       `json:"tail"`
	// Closed: the last line is the checkpoint the proxy writes when it
	// stops, so nothing was cut from the end.
	Closed bool `json:"closed"`
}

// OK reports whether the log is as the proxy wrote it.
func (r *VerifyReport) OK() bool { return len(r.Problems) == 0 }

// maxProblems bounds the problems listed; beyond, the log is plainly not
// as written.
const maxProblems = 100

// lookAhead is how far Verify looks for where a line that does not link
// belongs.
const lookAhead = 256

// Verify checks the decision-log files at paths (gzipped or not, in any
// order: they are read by the time of their first line) against their hash
// chain, and their checkpoints' signatures against keys. It finds lines
// removed, inserted, changed or reordered, and files cut short, each at its
// line. An error means the files could not be read, or hold no chain at
// all.
func Verify(paths []string, keys []crypto.PublicKey) (*VerifyReport, error) {
	if len(paths) == 0 {
		return nil, errors.New("no decision-log file given")
	}
	ordered, err := chronological(paths)
	if err != nil {
		return nil, err
	}
	v := &verifier{
		rep:      &VerifyReport{Keys: []string{}, Problems: []Finding{}, Notes: []Finding{}},
		keys:     map[string]crypto.PublicKey{},
		recent:   map[string]*entry{},
		reported: map[[2]int]bool{},
		files:    len(ordered),
	}
	for _, k := range keys {
		id, err := KeyID(k)
		if err != nil {
			return nil, err
		}
		v.keys[id] = k
		v.rep.Keys = append(v.rep.Keys, id)
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
	if !v.started {
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
	// A checkpoint's reason, key, signature, and what the signature
	// covers; lost and since for a resume checkpoint.
	reason    string
	keyID     string
	signature []byte
	signed    []byte
	verified  bool
	lost      int
	since     string
}

func (e *entry) checkpoint() bool { return e.chained && e.msg == "checkpoint" }

func (e *entry) pos() Position { return Position{File: e.name, Line: e.line, Seq: e.seq, Time: e.time} }

func (e *entry) String() string { return fmt.Sprintf("%s:%d", e.name, e.line) }

var signatureField = []byte(`,"signature":"`)

// parseEntry reads what Verify needs from one line.
func parseEntry(raw []byte, complete bool, file int, name string, line int) *entry {
	e := &entry{file: file, name: name, line: line, complete: complete, hash: lineHash(raw)}
	var h struct {
		Time      string  `json:"time"`
		Msg       string  `json:"msg"`
		Seq       *uint64 `json:"seq"`
		Prev      *string `json:"prev"`
		Reason    string  `json:"reason"`
		KeyID     string  `json:"keyId"`
		Signature string  `json:"signature"`
		Lost      int     `json:"lost"`
		Since     string  `json:"since"`
	}
	if json.Unmarshal(raw, &h) != nil {
		return e
	}
	e.json = true
	e.time, _ = time.Parse(time.RFC3339Nano, h.Time)
	e.msg = h.Msg
	if h.Seq == nil || h.Prev == nil {
		return e
	}
	e.chained, e.seq, e.prev = true, *h.Seq, *h.Prev
	if h.Msg != "checkpoint" {
		return e
	}
	e.reason, e.keyID, e.lost, e.since = h.Reason, h.KeyID, h.Lost, h.Since
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
	return e
}

// stream reads the files' lines in order, with a look-ahead.
type stream struct {
	paths  []string
	fi     int
	rc     io.ReadCloser
	lr     *lineReader
	lineNo int
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
			s.rc, s.lr, s.lineNo = rc, newLineReader(rc), 0
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
		s.buf = append(s.buf, parseEntry(raw, complete, s.fi, s.paths[s.fi], s.lineNo))
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

// peek returns the i-th line after the last one next returned, nil past
// the end (or on a read error, which next then returns).
func (s *stream) peek(i int) *entry {
	if s.fill(i+1) != nil || i >= len(s.buf) {
		return nil
	}
	return s.buf[i]
}

func (s *stream) close() {
	if s.lr != nil {
		s.rc.Close()
	}
}

// verifier walks the chain line by line.
type verifier struct {
	rep   *VerifyReport
	keys  map[string]crypto.PublicKey
	files int

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

	reported map[[2]int]bool
	vouched  *entry // the last checkpoint that vouches for the lines before it
	tail     int    // chained lines accepted after it
}

func (v *verifier) problem(e *entry, kind, format string, args ...any) {
	key := [2]int{e.file, e.line}
	if v.reported[key] {
		return
	}
	v.reported[key] = true
	if len(v.rep.Problems) == maxProblems {
		v.rep.Problems = append(v.rep.Problems, Finding{File: e.name, Line: e.line, Message: "more problems follow; fix or explain the ones above first"})
	}
	if len(v.rep.Problems) > maxProblems {
		return
	}
	v.rep.Problems = append(v.rep.Problems, Finding{File: e.name, Line: e.line, Kind: kind, Message: fmt.Sprintf(format, args...)})
}

func (v *verifier) note(e *entry, format string, args ...any) {
	v.rep.Notes = append(v.rep.Notes, Finding{File: e.name, Line: e.line, Message: fmt.Sprintf(format, args...)})
}

// step judges one line.
func (v *verifier) step(e *entry, s *stream) {
	v.count(e)
	defer v.endOfFile(e)
	switch {
	case !e.complete:
		v.problem(e, ProblemTruncated, "the line is cut short (no newline at its end): the file was truncated here, or the proxy stopped while writing it")
		v.resync = v.started
		return
	case !e.json:
		v.problem(e, ProblemMalformed, "not a JSON object: damaged, or inserted")
		v.resync = v.started
		return
	case !e.chained && !v.started:
		v.rep.Unchained++
		return
	case !e.chained:
		v.problem(e, ProblemInserted, "not part of the chain (no seq and prev): inserted, or written while audit.chain was false")
		return
	case v.drop > 0:
		v.drop-- // reported with the first inserted line
		return
	}
	if e.checkpoint() {
		v.checkSignature(e)
	}
	switch {
	case v.skip > 0:
		v.skip--
		v.accept(e)
		if v.skip == 0 && v.resume != nil {
			v.head, v.resume = v.resume, nil
		}
		return
	case !v.started:
		v.started = true
		if e.prev != "" {
			v.note(e, "the chain begins before this line (seq %d): earlier lines are in files not given", e.seq)
		}
	case v.resync:
		v.resync = false // re-anchored after a line that could not be read
	case e.prev == "":
		if v.head.checkpoint() && v.head.reason == CheckpointShutdown {
			v.note(e, "a new chain starts: the proxy started on a new or empty file after it stopped at %s", v.head)
		} else {
			v.problem(e, ProblemBroken, "a new chain starts here, but the chain before it (last line %s, seq %d) did not end with the proxy's shutdown checkpoint: lines after it may have been removed, or the proxy was killed and its file replaced", v.head, v.head.seq)
		}
	case e.prev == v.head.hash && e.seq == v.head.seq+1:
	case e.prev == v.head.hash:
		v.problem(e, ProblemChanged, "this line was changed: its seq is %d, but it follows seq %d (%s)", e.seq, v.head.seq, v.head)
	default:
		if !v.broken(e, s) {
			return
		}
	}
	v.accept(e)
}

// broken explains a line that does not link to the one before it, and
// reports whether it joins the chain.
func (v *verifier) broken(e *entry, s *stream) bool {
	if prior, ok := v.recent[e.hash]; ok {
		v.problem(e, ProblemInserted, "a copy of %s (seq %d)", prior, prior.seq)
		return false
	}
	// Reordered: the line it follows comes later.
	for i := 0; i < lookAhead; i++ {
		a := s.peek(i)
		if a == nil {
			break
		}
		if a.chained && a.hash == e.prev {
			v.problem(e, ProblemReordered, "seq %d is out of order: it follows seq %d, which comes after it, at %s", e.seq, a.seq, a)
			// Take the lines up to a as they come, then go on from the
			// one with the highest seq, which the next line follows.
			top := e
			for j := 0; j <= i; j++ {
				if x := s.peek(j); x.chained && x.seq > top.seq {
					top = x
				}
			}
			v.skip, v.resume = i+1, top
			return true
		}
	}
	// Inserted: a later line continues from the last good one.
	for i := 0; i < lookAhead; i++ {
		a := s.peek(i)
		if a == nil {
			break
		}
		if a.chained && a.prev == v.head.hash {
			v.problem(e, ProblemInserted, "not part of the chain: %s continues from %s (seq %d), skipping %d line(s) from here", a, v.head, v.head.seq, i+1)
			v.drop = i
			return false
		}
	}
	// It follows an earlier line: those accepted since are not in the chain.
	if b, ok := v.recent[e.prev]; ok {
		for k, w := range v.window {
			if w == b && k+1 < len(v.window) {
				x := v.window[k+1]
				v.problem(x, ProblemInserted, "not part of the chain: %s (seq %d) follows %s (seq %d), and the %d line(s) from here to it are extra", e, e.seq, b, b.seq, len(v.window)-k-1)
				break
			}
		}
		return true
	}
	// What it follows is nowhere.
	if e.seq > v.head.seq+1 {
		msg := fmt.Sprintf("%d line(s) removed before this line: seq %d to %d are missing after %s", e.seq-v.head.seq-1, v.head.seq+1, e.seq-1, v.head)
		if e.file != v.head.file {
			msg += fmt.Sprintf("; the end of %s was cut off, or a file between the two was not given", v.head.name)
		}
		v.problem(e, ProblemRemoved, "%s", msg)
		return true
	}
	// Either the line before changed, or this one (and with it the next
	// line's link): the next line tells which, unless its own link is
	// explained by lines removed after this one.
	next := s.peek(0)
	switch {
	case e.verified || next != nil && next.chained && (next.prev == e.hash || next.seq != e.seq+1):
		v.problem(v.head, ProblemChanged, "this line was changed: it is not the line that %s (seq %d) follows", e, e.seq)
	case next != nil && next.chained:
		v.problem(e, ProblemChanged, "this line was changed: it links neither to %s before it nor to %s after it", v.head, next)
		v.skip = 1 // the next line's link to this one is broken by the same change
	default:
		v.problem(v.head, ProblemChanged, "this line, or %s after it, was changed: they do not link", e)
	}
	return true
}

// accept makes e the head of the chain.
func (v *verifier) accept(e *entry) {
	v.head = e
	v.recent[e.hash] = e
	v.window = append(v.window, e)
	if len(v.window) > lookAhead {
		delete(v.recent, v.window[0].hash)
		v.window = v.window[1:]
	}
	f := &v.rep.Files[e.file]
	if f.FirstSeq == 0 {
		f.FirstSeq = e.seq
	}
	f.LastSeq = e.seq
	if !e.checkpoint() {
		v.tail++
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
		v.vouched, v.tail = e, 0
	} else {
		v.tail++
	}
}

// checkSignature verifies a checkpoint's signature with the keys given.
func (v *verifier) checkSignature(e *entry) {
	if e.signature == nil {
		return // unsigned: the proxy has no key; it only marks its starts and stops
	}
	v.rep.Signed++
	if len(v.keys) == 0 {
		return
	}
	key, ok := v.keys[e.keyID]
	switch {
	case !ok:
		v.problem(e, ProblemSignature, "the checkpoint names key %s, which is not one given with --key", e.keyID)
	case !verifyCheckpoint(key, e.signed, e.signature):
		v.problem(e, ProblemSignature, "the checkpoint's signature does not verify with key %s: the line was changed or forged", e.keyID)
	default:
		e.verified = true
		v.rep.Verified++
	}
}

func (v *verifier) count(e *entry) {
	v.rep.Lines++
	v.rep.Files[e.file].Lines++
	if e.msg == "decision" {
		v.rep.Decisions++
	}
	if e.checkpoint() {
		v.rep.Checkpoints++
	}
	if !e.time.IsZero() {
		if v.rep.First.IsZero() || e.time.Before(v.rep.First) {
			v.rep.First = e.time
		}
		if e.time.After(v.rep.Last) {
			v.rep.Last = e.time
		}
	}
}

// endOfFile checks, at the last line of a file that another follows, that
// the proxy ended it: with the checkpoint it writes before reopening or
// stopping. A file cut short lacks it.
func (v *verifier) endOfFile(e *entry) {
	if !e.last || v.head == nil || v.head.file != e.file {
		return
	}
	ended := v.head.checkpoint() && (v.head.reason == CheckpointReopen || v.head.reason == CheckpointShutdown)
	if ended {
		v.rep.Files[e.file].Ends = v.head.reason
	}
	if ended || e.file == v.files-1 {
		return
	}
	v.problem(e, ProblemTruncated, "%s ends here without the checkpoint the proxy writes when it leaves a file (reopen or shutdown): lines after its last checkpoint may have been cut off", e.name)
}

func (v *verifier) finish() {
	r := v.rep
	if len(v.keys) > 0 && r.Verified == 0 {
		r.Problems = append(r.Problems, Finding{File: v.head.name, Line: v.head.line, Kind: ProblemSignature,
			Message: "no checkpoint up to this line is signed by the key(s) given: nothing in these files is vouched for by them"})
	}
	if v.vouched != nil {
		p := v.vouched.pos()
		r.LastCheckpoint = &p
	}
	r.Tail = v.tail
	if v.head.checkpoint() && v.head.reason == CheckpointReopen {
		v.note(v.head, "the proxy left this file for a new one here: the log continues in a file not given")
	}
	r.Closed = v.head.checkpoint() && v.head.reason == CheckpointShutdown && (len(v.keys) == 0 || v.head.verified)
}
