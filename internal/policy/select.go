package policy

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/authz-proxy/authz-proxy/internal/audit"
	"github.com/authz-proxy/authz-proxy/internal/verify"
	"github.com/authz-proxy/authz-proxy/internal/vuln"
)

// VulnPredicateType is cosign's vulnerability scan predicate (cosign
// attest --type vuln), which a vulnerabilities requirement reads.
const VulnPredicateType = "https://cosign.sigstore.dev/attestation/vuln/v1"

// predicateTimes are the fields that date a predicate, of every type
// known to carry one (ownTimes): a predicate is decoded into it once, which
// reads these fields and skips the rest.
type predicateTimes struct {
	Metadata struct {
		ScanFinishedOn  string `json:"scanFinishedOn"`  // vuln
		BuildFinishedOn string `json:"buildFinishedOn"` // SLSA v0.2
		Timestamp       string `json:"timestamp"`       // CycloneDX
	} `json:"metadata"`
	RunDetails struct {
		Metadata struct {
			FinishedOn string `json:"finishedOn"`
		} `json:"metadata"`
	} `json:"runDetails"` // SLSA v1
	Timestamp    string `json:"timestamp"` // OpenVEX
	CreationInfo struct {
		Created string `json:"created"`
	} `json:"creationInfo"` // SPDX
}

// timeField is where a predicate type keeps the time it gives itself: what
// dates an attestation when no log entry or timestamp does.
type timeField struct {
	field string
	get   func(*predicateTimes) string
}

var ownTimes = map[string]timeField{
	VulnPredicateType:                  {"metadata.scanFinishedOn", func(p *predicateTimes) string { return p.Metadata.ScanFinishedOn }},
	"https://slsa.dev/provenance/v1":   {"runDetails.metadata.finishedOn", func(p *predicateTimes) string { return p.RunDetails.Metadata.FinishedOn }},
	"https://slsa.dev/provenance/v0.2": {"metadata.buildFinishedOn", func(p *predicateTimes) string { return p.Metadata.BuildFinishedOn }},
	vuln.OpenVEXPredicateType:          {"timestamp", func(p *predicateTimes) string { return p.Timestamp }},
	vuln.OpenVEXPredicateTypeV020:      {"timestamp", func(p *predicateTimes) string { return p.Timestamp }},
	"https://spdx.dev/Document":        {"creationInfo.created", func(p *predicateTimes) string { return p.CreationInfo.Created }},
	"https://cyclonedx.org/bom":        {"metadata.timestamp", func(p *predicateTimes) string { return p.Metadata.Timestamp }},
}

// candidate is one attestation of the wanted type, verified as one of a
// requirement's attestors and about the digest judged.
type candidate struct {
	p        *parsedAttestation
	attestor *attestor
	// v is its verification, naming the predicate type and attestation.
	v      audit.Verification
	signer string
	// verified is its verified time of signing, if it has one.
	verified *dated
}

// made is when c was made, zero when that is unknown, and how it is known
// ("the log entry", "its RFC 3161 timestamp", or a predicate field, read
// only when asked: one candidate needs no order).
func (c *candidate) made() (time.Time, string) {
	if c.verified != nil {
		return c.verified.at, c.verified.from
	}
	return c.p.ownTime()
}

// when says in a reason when c was made.
func (c *candidate) when() string {
	at, from := c.made()
	if at.IsZero() {
		return "no time known"
	}
	return at.UTC().Format(time.RFC3339) + " by " + from
}

// candidates lists, for each of attestors, the attestations of
// predicateType it verified about the digest, and for each the closest
// miss among the others (or that there are none): what a requirement
// chooses from. undecided is set when an attestation of the type could be
// neither counted nor ruled out because a trusted root it needs is
// withdrawn.
func (as *attestations) candidates(predicateType string, attestors []*attestor) (cands [][]candidate, misses []miss, undecided error) {
	ofType := 0
	for _, p := range as.list {
		if p.err == nil && p.env.Statement.PredicateType == predicateType {
			ofType++
		}
	}
	cands = make([][]candidate, len(attestors))
	misses = make([]miss, len(attestors))
	for i, a := range attestors {
		best := miss{kind: missNone, reason: "no attestation of this type found (.att tag or referrers)"}
		for _, p := range as.list {
			if p.err != nil {
				best = best.closer(miss{missUnusable, fmt.Sprintf("attestation %s is unusable: %v", p.name(), p.err)})
				continue
			}
			if p.env.Statement.PredicateType != predicateType {
				continue
			}
			v, err := p.check(a, as.img.Digest)
			var mismatch *verify.DigestMismatchError
			var failed *verify.CheckError
			switch {
			case errors.Is(err, verify.ErrTrustRootUnavailable):
				undecided = cmp.Or(undecided, err)
				continue
			case errors.As(err, &mismatch):
				best = best.closer(miss{missSubject, fmt.Sprintf("its attestation %s is about %s, not this digest: an attestation does not carry over to another image", p.name(), mismatch.Signed)})
				continue
			case errors.As(err, &failed) && !errors.Is(err, verify.ErrBadSignature):
				best = best.closer(miss{missCheck, fmt.Sprintf("its attestation %s does not count: %v", p.name(), err)})
				continue
			case err != nil:
				best = best.closer(miss{missBadSig, fmt.Sprintf("%d attestation(s) of this type found, none signed by %s", ofType, a.kind())})
				continue
			}
			c := candidate{p: p, attestor: a, v: *v, signer: signerOf(v, signature{signed: p.signed})}
			c.v.PredicateType, c.v.Attestation = predicateType, p.Digest
			switch {
			case v.SignedAt != nil && v.TimeSource == verify.TimeTlog:
				c.verified = &dated{*v.SignedAt, "the log entry"}
			case v.SignedAt != nil && v.TimeSource == verify.TimeAuthority:
				c.verified = &dated{*v.SignedAt, "its RFC 3161 timestamp"}
			}
			cands[i] = append(cands[i], c)
		}
		misses[i] = best
	}
	return cands, misses, undecided
}

// pooled is every candidate of cands once, in the attestors' order.
func pooled(cands [][]candidate) []candidate {
	var pool []candidate
	seen := map[*parsedAttestation]bool{}
	for _, cs := range cands {
		for _, c := range cs {
			if !seen[c.p] {
				seen[c.p] = true
				pool = append(pool, c)
			}
		}
	}
	return pool
}

// newest returns the candidates that decide among cs: the newest, or,
// when no order can be known between it and others (they carry no time,
// or the same), each of those, which must then all satisfy (fail safe).
// unordered says why there is more than one.
func newest(cs []candidate) (decisive []candidate, unordered string) {
	if len(cs) < 2 {
		return cs, ""
	}
	var latest time.Time
	undated := 0
	at := make([]time.Time, len(cs))
	for i := range cs {
		at[i], _ = cs[i].made()
		if at[i].IsZero() {
			undated++
		} else if at[i].After(latest) {
			latest = at[i]
		}
	}
	for i, c := range cs {
		if at[i].IsZero() || at[i].Equal(latest) {
			decisive = append(decisive, c)
		}
	}
	switch {
	case len(decisive) < 2:
	case undated > 0:
		unordered = fmt.Sprintf("no order is known between %d of its attestations (%d carry no log entry, timestamp or, for this predicate type, a time of their own): each must satisfy", len(decisive), undated)
	default:
		unordered = fmt.Sprintf("%d of its attestations are equally new (%s): each must satisfy", len(decisive), latest.UTC().Format(time.RFC3339))
	}
	return decisive, unordered
}

// ownTime is the time the attestation's predicate gives itself, for the
// predicate types known to carry one (ownTimes); zero when it has none. A
// field of another type, or not an RFC 3339 time, is none. It is read
// once.
func (p *parsedAttestation) ownTime() (time.Time, string) {
	if p.own == nil {
		p.own = &dated{}
		if own, ok := ownTimes[p.env.Statement.PredicateType]; ok {
			// A field of another type fails alone: the others are read.
			var fields predicateTimes
			_ = json.Unmarshal(p.env.Statement.Predicate, &fields)
			// cosign writes the zero time for a time the predicate left out.
			if t, err := time.Parse(time.RFC3339Nano, own.get(&fields)); err == nil && t.Year() > 1 {
				p.own.at, p.own.from = t, "its "+own.field
			}
		}
	}
	return p.own.at, p.own.from
}

// dated is a time and how it is known.
type dated struct {
	at   time.Time
	from string
}
