package audit

import (
	"log/slog"
	"math"
	"strconv"
	"time"
	"unicode/utf8"
)

// appendDecision appends the decision line of r, logged at t and level, to
// b: byte for byte what slog's JSON handler writes for the attributes of
// Write (a test and a fuzz target hold the two equal), without its
// reflection over the evidence. It reports false, having appended nothing,
// for what only slog's path renders as slog does (a time whose year has
// not four digits).
func appendDecision(b []byte, t time.Time, level slog.Level, r *Record) ([]byte, bool) {
	if !fourDigitYear(t) {
		return b, false
	}
	for _, v := range r.VerifiedBy {
		if v.SignedAt != nil && !fourDigitYear(*v.SignedAt) {
			return b, false
		}
		for _, s := range v.Suppressed {
			if s.Expires != nil && !fourDigitYear(*s.Expires) {
				return b, false
			}
		}
	}
	b = append(b, `{"time":"`...)
	b = t.Round(0).AppendFormat(b, time.RFC3339Nano)
	b = append(b, `","level":`...)
	b = appendSlogString(b, level.String())
	b = append(b, `,"msg":"decision","decision":`...)
	b = appendSlogString(b, r.Decision)
	b = append(b, `,"image":`...)
	b = appendSlogString(b, r.Image)
	b = append(b, `,"reference":`...)
	b = appendSlogString(b, r.Reference)
	b = append(b, `,"digest":`...)
	b = appendSlogString(b, r.Digest)
	b = append(b, `,"mediaType":`...)
	b = appendSlogString(b, r.MediaType)
	b = append(b, `,"upstream":`...)
	b = appendSlogString(b, r.Upstream)
	b = append(b, `,"rule":`...)
	b = appendSlogString(b, r.Rule)
	b = append(b, `,"enforcement":`...)
	b = appendSlogString(b, r.Enforcement)
	b = append(b, `,"reasons":[`...)
	for i, reason := range r.Reasons {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendJSONString(b, reason)
	}
	b = append(b, `],"verifiedBy":[`...)
	for i := range r.VerifiedBy {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendVerification(b, &r.VerifiedBy[i])
	}
	b = append(b, `],"cached":`...)
	b = strconv.AppendBool(b, r.Cached)
	b = append(b, `,"client":{"addr":`...)
	b = appendJSONString(b, r.Client.Addr)
	if r.Client.Identity != "" {
		b = append(b, `,"identity":`...)
		b = appendJSONString(b, r.Client.Identity)
	}
	if r.Client.Environment != "" {
		b = append(b, `,"environment":`...)
		b = appendJSONString(b, r.Client.Environment)
	}
	b = append(b, `},"durationMs":`...)
	b = appendJSONFloat(b, float64(r.Duration.Microseconds())/1000)
	if r.Source != "" {
		b = append(b, `,"source":`...)
		b = appendSlogString(b, r.Source)
	}
	if r.Evidence != "" {
		b = append(b, `,"evidence":`...)
		b = appendSlogString(b, r.Evidence)
		b = append(b, `,"evidenceAgeSeconds":`...)
		b = strconv.AppendInt(b, int64(r.EvidenceAge/time.Second), 10)
	}
	if r.Principal != "" {
		b = append(b, `,"principal":`...)
		b = appendSlogString(b, r.Principal)
	}
	return append(b, "}\n"...), true
}

// appendVerification appends v as encoding/json marshals it.
func appendVerification(b []byte, v *Verification) []byte {
	b = append(b, `{"attestor":`...)
	b = appendJSONString(b, v.Attestor)
	field := func(name, value string) {
		if value != "" {
			b = append(b, `,"`...)
			b = append(b, name...)
			b = append(b, `":`...)
			b = appendJSONString(b, value)
		}
	}
	field("keyId", v.KeyID)
	field("issuer", v.Issuer)
	field("subject", v.Subject)
	if v.LogIndex != nil {
		b = append(b, `,"logIndex":`...)
		b = strconv.AppendInt(b, *v.LogIndex, 10)
	}
	if v.SignedAt != nil {
		b = append(b, `,"signedAt":"`...)
		b = v.SignedAt.AppendFormat(b, time.RFC3339Nano)
		b = append(b, '"')
	}
	field("timeSource", v.TimeSource)
	field("x509Subject", v.X509Subject)
	if len(v.Logged) > 0 {
		b = append(b, `,"logged":[`...)
		for i, l := range v.Logged {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendJSONString(b, l)
		}
		b = append(b, ']')
	}
	b = append(b, `,"source":`...)
	b = appendJSONString(b, v.Source)
	field("predicateType", v.PredicateType)
	field("attestation", v.Attestation)
	field("trustRoot", v.TrustRoot)
	if v.TrustRootVersion != 0 {
		b = append(b, `,"trustRootVersion":`...)
		b = strconv.AppendInt(b, v.TrustRootVersion, 10)
	}
	field("trustRootDigest", v.TrustRootDigest)
	if len(v.Suppressed) > 0 {
		b = append(b, `,"suppressed":[`...)
		for i := range v.Suppressed {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendSuppression(b, &v.Suppressed[i])
		}
		b = append(b, ']')
	}
	return append(b, '}')
}

// appendSuppression appends s as encoding/json marshals it.
func appendSuppression(b []byte, s *Suppression) []byte {
	for i, f := range [...]struct{ name, value string }{
		{"id", s.ID}, {"severity", s.Severity}, {"package", s.Package}, {"version", s.Version}, {"by", s.By}, {"detail", s.Detail},
	} {
		if i == 0 {
			b = append(b, `{"`...)
		} else {
			b = append(b, `,"`...)
		}
		b = append(b, f.name...)
		b = append(b, `":`...)
		b = appendJSONString(b, f.value)
	}
	if s.Expires != nil {
		b = append(b, `,"expires":"`...)
		b = s.Expires.AppendFormat(b, time.RFC3339Nano)
		b = append(b, '"')
	}
	return append(b, '}')
}

func fourDigitYear(t time.Time) bool { y := t.Year(); return y >= 0 && y < 10000 }

const hexDigits = "0123456789abcdef"

// appendSlogString appends s quoted as slog's JSON handler quotes string
// attributes, and appendJSONString as encoding/json does without HTML
// escaping (slog's way for the values it marshals): they differ only in
// writing \b and \f as \u0008 and \u000c.
func appendSlogString(b []byte, s string) []byte { return appendQuoted(b, s, false) }

func appendJSONString(b []byte, s string) []byte { return appendQuoted(b, s, true) }

func appendQuoted(b []byte, s string, shortBF bool) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		if c := s[i]; c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch {
			case c == '"' || c == '\\':
				b = append(b, '\\', c)
			case c == '\n':
				b = append(b, '\\', 'n')
			case c == '\r':
				b = append(b, '\\', 'r')
			case c == '\t':
				b = append(b, '\\', 't')
			case c == '\b' && shortBF:
				b = append(b, '\\', 'b')
			case c == '\f' && shortBF:
				b = append(b, '\\', 'f')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xF])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hexDigits[r&0xF])
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}

// appendJSONFloat appends f as encoding/json writes a float64 (slog
// marshals floats with it).
func appendJSONFloat(b []byte, f float64) []byte {
	format := byte('f')
	if abs := math.Abs(f); abs != 0 && (abs < 1e-6 || abs >= 1e21) {
		format = 'e'
	}
	b = strconv.AppendFloat(b, f, format, -1, 64)
	if format == 'e' {
		// e-09 is written e-9
		if n := len(b); n >= 4 && b[n-4] == 'e' && b[n-3] == '-' && b[n-2] == '0' {
			b[n-2] = b[n-1]
			b = b[:n-1]
		}
	}
	return b
}
