// Package audit is the decision log: the record of each manifest decision,
// written as one JSON line to standard output and, if configured, to a file
// that auditors keep, and read back. Records carry no secrets.
//
// The log is tamper-evident: each line carries its sequence number and the
// SHA-256 of the line before it (a hash chain that continues across files
// when logrotate moves the file away and the proxy reopens it), and
// checkpoint lines signed with an Ed25519 or ECDSA key vouch for everything
// before them. Verify finds the first line removed, inserted, changed or
// moved, and a file cut short. A write that fails is never silent: it is
// logged, counted, retried, and the gap is recorded once the log can be
// written again.
package audit

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"time"
)

// Decisions.
const (
	Allow      = "allow"
	Deny       = "deny"
	DryRunDeny = "dryrun-deny"
	Breakglass = "breakglass"
	Error      = "error"
	// Revoked is written by re-validation, not for a pull: a digest
	// allowed before would be denied now (its reasons say why).
	Revoked = "revoked"
)

// Sources of the manifest judged (Record.Source).
const (
	// SourceUpstream: fetched from the upstream for this request.
	SourceUpstream = "upstream"
	// SourceStore: the proxy's verified copy (its content store, or
	// memory), the tag resolved by the upstream or, for an immutable tag,
	// by its last resolution.
	SourceStore = "store"
	// SourceStale: the upstream failed, and the tag's last known digest
	// was served (within the upstream's staleIfError).
	SourceStale = "stale"
	// EvidenceStored (Record.Evidence): the evidence judged is what the
	// store kept, the upstream failing.
	EvidenceStored = "stored"
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
	// Source is where the manifest judged came from: SourceUpstream,
	// SourceStore or SourceStale; "" when no manifest was read (an error,
	// or a refusal from the cache alone) unless the tag asked for was
	// stale.
	Source string
	// Evidence is EvidenceStored when the signatures and attestations
	// judged are what the store kept because the upstream failed, and
	// EvidenceAge how long before the decision the upstream last
	// confirmed them (to the second); "" and 0 otherwise.
	Evidence    string
	EvidenceAge time.Duration
	// Principal is who the client authenticated as (the clients
	// section); "" without one.
	Principal string
	// Seq and Prev are the record's place in the hash chain: its sequence
	// number, and "sha256:<hex>" of the line before it ("" for the first
	// line of a chain). Write assigns them; Parse fills them in (zero when
	// the line was written without a chain).
	Seq  uint64
	Prev string
	// LogID is the log that wrote the line (one per replica); "" when the
	// log had none. Write sets it from the log's own; Parse fills it in.
	LogID string
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
	// TrustRoot names the Sigstore trusted root that judged a keyless
	// signature, or a key's transparency-log proof: a trust root's name,
	// or the trustedRootFile as configured. TrustRootVersion is the TUF
	// targets version that delivered it (0 for a file), TrustRootDigest
	// "sha256:<hex>" of its trusted_root.json: what `authz-proxy trust
	// status` shows of the root in force.
	TrustRoot        string `json:"trustRoot,omitempty"`
	TrustRootVersion int64  `json:"trustRootVersion,omitempty"`
	TrustRootDigest  string `json:"trustRootDigest,omitempty"`
	// Suppressed are, for the vulnerability scan that a vulnerabilities
	// requirement judged, the findings that VEX or an exception took off
	// the list.
	Suppressed []Suppression `json:"suppressed,omitempty"`
}

// What suppressed a finding (Suppression.By).
const (
	SuppressedByVEX       = "vex"
	SuppressedByException = "exception"
)

// Suppression is one finding of a scan that did not count, and why.
type Suppression struct {
	ID       string `json:"id"`
	Severity string `json:"severity"`
	Package  string `json:"package"`
	Version  string `json:"version"`
	// By is SuppressedByVEX or SuppressedByException.
	By string `json:"by"`
	// Detail is, for VEX, the status, justification, attestor and
	// attestation; for an exception, its reason.
	Detail string `json:"detail"`
	// Expires is an exception's expiry.
	Expires *time.Time `json:"expires,omitempty"`
}

// Client is who asked.
type Client struct {
	Addr string `json:"addr"`
	// Identity is the verified client certificate's subject common name, or
	// its first DNS name when it has no common name.
	Identity string `json:"identity,omitempty"`
	// Environment is the environment the client belongs to.
	Environment string `json:"environment,omitempty"`
	// Party names the client as the shares of every shared bound do (the
	// proxy's client key), for its share of the decision log's queue;
	// not logged. Empty for lines no client asked for.
	Party string `json:"-"`
}

// Errors of Parse. ErrNotDecision is a log line that is valid JSON but not
// a decision record (operational log lines and checkpoints share the log's
// format): a reader skips it. ErrMalformed is a line that cannot be read
// as a decision (not JSON, a field of the wrong type, a duration out of
// range): a reader counts it as unreadable.
var (
	ErrNotDecision = errors.New("not a decision record")
	ErrMalformed   = errors.New("malformed decision-log line")
)

// maxDurationMs is the longest duration a record can carry, in
// milliseconds: what a time.Duration holds.
const maxDurationMs = float64(math.MaxInt64 / int64(time.Millisecond))

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
	Source      string         `json:"source"`
	Evidence    string         `json:"evidence"`
	EvidenceAge int64          `json:"evidenceAgeSeconds"`
	Principal   string         `json:"principal"`
	Seq         uint64         `json:"seq"`
	Prev        string         `json:"prev"`
	LogID       string         `json:"logId"`
}

// Parse reads one line of a decision log back into a Record. Its duration
// is read to the microsecond, as Write writes it, so that a record read,
// written and read again is the record first read.
func Parse(data []byte) (Record, error) {
	var l line
	if err := json.Unmarshal(data, &l); err != nil {
		return Record{}, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	if l.Msg != "decision" || l.Decision == "" {
		return Record{}, ErrNotDecision
	}
	if !(l.DurationMs >= 0 && l.DurationMs <= maxDurationMs) {
		return Record{}, fmt.Errorf("%w: durationMs %v is not a duration", ErrMalformed, l.DurationMs)
	}
	return Record{
		Time: l.Time, Decision: l.Decision, Image: l.Image, Reference: l.Reference, Digest: l.Digest,
		MediaType: l.MediaType, Upstream: l.Upstream, Rule: l.Rule, Enforcement: l.Enforcement,
		Reasons: l.Reasons, VerifiedBy: l.VerifiedBy, Cached: l.Cached, Client: l.Client,
		Duration: time.Duration(math.Round(l.DurationMs*1000)) * time.Microsecond, Source: l.Source,
		Evidence: l.Evidence, EvidenceAge: time.Duration(l.EvidenceAge) * time.Second, Principal: l.Principal, Seq: l.Seq, Prev: l.Prev,
		LogID: l.LogID,
	}, nil
}

// Header is what any line of a decision log says of itself: its time and
// message, the log that wrote it, and a checkpoint's reason.
type Header struct {
	Time   time.Time `json:"time"`
	Msg    string    `json:"msg"`
	LogID  string    `json:"logId"`
	Reason string    `json:"reason"`
}

// ParseHeader reads a line's Header; an error (ErrMalformed) when it is not
// a JSON object with a time of RFC 3339 or none.
func ParseHeader(data []byte) (Header, error) {
	var h Header
	if err := json.Unmarshal(data, &h); err != nil {
		return Header{}, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	return h, nil
}
