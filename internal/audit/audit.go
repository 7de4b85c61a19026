// Package audit defines the decision record, one per manifest decision, and
// writes it as a JSON line to standard output and, if configured, to a file
// that auditors keep. Records carry no secrets. The file can be reopened
// (after logrotate moved it away) without losing or splitting a line, and
// Parse reads records back, for replaying them.
package audit

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"os"
	"sync"
	"time"
)

// Decisions.
const (
	Allow      = "allow"
	Deny       = "deny"
	DryRunDeny = "dryrun-deny"
	Breakglass = "breakglass"
	Error      = "error"
)

// Record is one manifest decision.
type Record struct {
	// Time is when the decision was logged. Write stamps the current time;
	// Parse fills it in.
	Time     time.Time
	Decision string
	// Image is "<upstream>/<repository>".
	Image string
	// Reference is the tag or digest the client asked for.
	Reference   string
	Digest      string
	MediaType   string
	Upstream    string
	Rule        string
	Enforcement string
	Reasons     []string
	VerifiedBy  []Verification
	Cached      bool
	Client      Client
	Duration    time.Duration
}

// Verification names one piece of evidence that counted: a signature, or an
// attestation that satisfied an attestation requirement.
type Verification struct {
	Attestor string `json:"attestor"`
	// KeyID is "sha256:<hex>" of the attestor key that verified; empty for
	// a keyless attestor.
	KeyID string `json:"keyId,omitempty"`
	// Issuer and Subject are the OIDC issuer and subject alternative name
	// of the Fulcio certificate that signed, for a keyless attestor.
	Issuer  string `json:"issuer,omitempty"`
	Subject string `json:"subject,omitempty"`
	// LogIndex is the index of the verified transparency-log entry, when
	// one was verified.
	LogIndex *int64 `json:"logIndex,omitempty"`
	// SignedAt is the verified time of signing and TimeSource where it
	// came from ("tlog" or "timestamp authority"), when one was needed.
	SignedAt   *time.Time `json:"signedAt,omitempty"`
	TimeSource string     `json:"timeSource,omitempty"`
	// X509Subject is the subject of the certificate that made a Notary
	// Project signature.
	X509Subject string `json:"x509Subject,omitempty"`
	// Logged are the checks that failed but that the attestor's level
	// only logs (notation's permissive level).
	Logged []string `json:"logged,omitempty"`
	// Source is where the signature or attestation was found.
	Source string `json:"source"`
	// PredicateType is the attestation's predicate type; empty for a
	// signature.
	PredicateType string `json:"predicateType,omitempty"`
	// Attestation is the digest of the layer holding the attestation's
	// DSSE envelope (the envelope itself in the .att tag, a Sigstore
	// bundle in a referrer); empty for a signature.
	Attestation string `json:"attestation,omitempty"`
}

// Client is who asked.
type Client struct {
	Addr string `json:"addr"`
	// Identity is the verified client certificate's subject common name, or
	// its first DNS name when it has no common name.
	Identity string `json:"identity,omitempty"`
	// Environment is the environment the client belongs to.
	Environment string `json:"environment,omitempty"`
}

// Log writes records.
type Log struct {
	sinks []*slog.Logger
	file  *fileWriter // nil without a file
}

// New writes records to stdout and, when path is not empty, appends them to
// the file at path.
func New(stdout io.Writer, path string) (*Log, error) {
	l := &Log{}
	if stdout != nil {
		l.sinks = append(l.sinks, slog.New(slog.NewJSONHandler(stdout, nil)))
	}
	if path != "" {
		f, err := openFile(path)
		if err != nil {
			return nil, err
		}
		l.file = &fileWriter{f: f, path: path}
		l.sinks = append(l.sinks, slog.New(slog.NewJSONHandler(l.file, nil)))
	}
	return l, nil
}

func openFile(path string) (*os.File, error) {
	return os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o640)
}

// fileWriter is the audit file, which Reopen may swap for a new one between
// two records. Each record arrives as one Write.
type fileWriter struct {
	mu   sync.Mutex
	f    *os.File // nil once closed
	path string
}

func (w *fileWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.f == nil {
		return 0, os.ErrClosed
	}
	return w.f.Write(p)
}

// Write logs r: allows at info level, denials and breakglass at warn, errors
// at error. Each record is one Write to each sink, so lines never
// interleave.
func (l *Log) Write(ctx context.Context, r Record) {
	level := slog.LevelInfo
	switch r.Decision {
	case Deny, DryRunDeny, Breakglass:
		level = slog.LevelWarn
	case Error:
		level = slog.LevelError
	}
	if r.Reasons == nil {
		r.Reasons = []string{}
	}
	if r.VerifiedBy == nil {
		r.VerifiedBy = []Verification{}
	}
	attrs := []slog.Attr{
		slog.String("decision", r.Decision),
		slog.String("image", r.Image),
		slog.String("reference", r.Reference),
		slog.String("digest", r.Digest),
		slog.String("mediaType", r.MediaType),
		slog.String("upstream", r.Upstream),
		slog.String("rule", r.Rule),
		slog.String("enforcement", r.Enforcement),
		slog.Any("reasons", r.Reasons),
		slog.Any("verifiedBy", r.VerifiedBy),
		slog.Bool("cached", r.Cached),
		slog.Any("client", r.Client),
		slog.Float64("durationMs", float64(r.Duration.Microseconds())/1000),
	}
	for _, s := range l.sinks {
		s.LogAttrs(ctx, level, "decision", attrs...)
	}
}

// Path is the audit file's path, "" without one.
func (l *Log) Path() string {
	if l.file == nil {
		return ""
	}
	return l.file.path
}

// Reopen opens the audit file at its path anew and writes to it from the
// next record on: after logrotate renamed the old file, records go to a new
// one. A record is never split between the two. When the file cannot be
// opened, the old one is kept and the error returned.
func (l *Log) Reopen() error {
	if l.file == nil {
		return nil
	}
	f, err := openFile(l.file.path)
	if err != nil {
		return err
	}
	l.file.mu.Lock()
	old := l.file.f
	l.file.f = f
	l.file.mu.Unlock()
	if old == nil {
		return nil
	}
	return old.Close()
}

// Close flushes the audit file to stable storage and closes it; records
// written after Close go to stdout only.
func (l *Log) Close() error {
	if l.file == nil {
		return nil
	}
	l.file.mu.Lock()
	defer l.file.mu.Unlock()
	if l.file.f == nil {
		return nil
	}
	err := errors.Join(l.file.f.Sync(), l.file.f.Close())
	l.file.f = nil
	return err
}

// ErrNotDecision is returned by Parse for a log line that is valid JSON but
// not a decision record (operational log lines share stdout's format).
var ErrNotDecision = errors.New("not a decision record")

// line is a decision record as written.
type line struct {
	Time        time.Time      `json:"time"`
	Msg         string         `json:"msg"`
	Decision    string         `json:"decision"`
	Image       string         `json:"image"`
	Reference   string         `json:"reference"`
	Digest      string         `json:"digest"`
	MediaType   string         `json:"mediaType"`
	Upstream    string         `json:"upstream"`
	Rule        string         `json:"rule"`
	Enforcement string         `json:"enforcement"`
	Reasons     []string       `json:"reasons"`
	VerifiedBy  []Verification `json:"verifiedBy"`
	Cached      bool           `json:"cached"`
	Client      Client         `json:"client"`
	DurationMs  float64        `json:"durationMs"`
}

// Parse reads one line of a decision log back into a Record.
func Parse(data []byte) (Record, error) {
	var l line
	if err := json.Unmarshal(data, &l); err != nil {
		return Record{}, err
	}
	if l.Msg != "decision" || l.Decision == "" {
		return Record{}, ErrNotDecision
	}
	return Record{
		Time: l.Time, Decision: l.Decision, Image: l.Image, Reference: l.Reference, Digest: l.Digest,
		MediaType: l.MediaType, Upstream: l.Upstream, Rule: l.Rule, Enforcement: l.Enforcement,
		Reasons: l.Reasons, VerifiedBy: l.VerifiedBy, Cached: l.Cached, Client: l.Client,
		Duration: time.Duration(l.DurationMs * float64(time.Millisecond)),
	}, nil
}
