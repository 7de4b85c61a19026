// Package audit defines the decision record, one per manifest decision, and
// writes it as a JSON line to standard output and, if configured, to a file
// that auditors keep. Records carry no secrets.
package audit

import (
	"context"
	"io"
	"log/slog"
	"os"
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
	// KeyID is "sha256:<hex>" of the attestor key that verified.
	KeyID string `json:"keyId"`
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
	Addr     string `json:"addr"`
	Identity string `json:"identity,omitempty"`
}

// Log writes records.
type Log struct {
	sinks []*slog.Logger
	file  *os.File
}

// New writes records to stdout and, when path is not empty, appends them to
// the file at path.
func New(stdout io.Writer, path string) (*Log, error) {
	l := &Log{}
	if stdout != nil {
		l.sinks = append(l.sinks, slog.New(slog.NewJSONHandler(stdout, nil)))
	}
	if path != "" {
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o640)
		if err != nil {
			return nil, err
		}
		l.file = f
		l.sinks = append(l.sinks, slog.New(slog.NewJSONHandler(f, nil)))
	}
	return l, nil
}

// Write logs r: allows at info level, denials at warn, errors at error.
// Each record is one Write to each sink, so lines never interleave.
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

// Close closes the audit file.
func (l *Log) Close() error {
	if l.file == nil {
		return nil
	}
	return l.file.Close()
}
