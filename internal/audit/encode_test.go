package audit

import (
	"context"
	"log/slog"
	"testing"
	"time"
)

// slogLine is the decision line as slog's JSON handler writes it: what
// appendDecision must write, byte for byte.
func slogLine(t time.Time, level slog.Level, r *Record) string {
	buf := encode(context.Background(), t, level, "decision", decisionAttrs(r)...)
	defer linePool.Put(buf)
	return buf.String()
}

func fastLine(t time.Time, level slog.Level, r *Record) (string, bool) {
	b, ok := appendDecision(nil, t, level, r)
	return string(b), ok
}

func TestDecisionLineIsWhatSlogWrites(t *testing.T) {
	at := time.Date(2026, 11, 28, 6, 47, 2, 123456789, time.FixedZone("CET", 3600))
	signedAt := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	logIndex := int64(-7)
	for _, tt := range []struct {
		name  string
		level slog.Level
		r     Record
	}{
		{"an allow by key", slog.LevelInfo, Record{
			Decision: Allow, Image: "lab/bench/app", Reference: "sha256:6f5a", Digest: "sha256:6f5a", MediaType: "application/vnd.oci.image.manifest.v1+json",
			Upstream: "lab", Rule: "bench", Enforcement: "enforce", Reasons: []string{"signed by attestor ci (key sha256:8dad, tag sha256-957c.sig)"},
			VerifiedBy: []Verification{{Attestor: "ci", KeyID: "sha256:8dad", Source: "tag sha256-957c.sig"}},
			Client:     Client{Addr: "127.0.0.1:5555"}, Duration: 1234567 * time.Nanosecond, Source: SourceStore,
		}},
		{"a denial with nothing verified", slog.LevelWarn, Record{Decision: Deny, Reasons: []string{"no cosign signature found"}, VerifiedBy: []Verification{}, Cached: true, Duration: 0}},
		{"an allow on evidence the store kept", slog.LevelInfo, Record{Decision: Allow, Reasons: []string{}, VerifiedBy: []Verification{}, Source: SourceStore, Evidence: EvidenceStored, EvidenceAge: 3*time.Hour + 1500*time.Millisecond, Principal: "k8s:system:serviceaccount:prod:api"}},
		{"an error without reasons or verifications", slog.LevelError, Record{Decision: Error, Reasons: []string{}, VerifiedBy: []Verification{}, Duration: 3 * time.Microsecond}},
		{"every verification field", slog.LevelInfo, Record{Decision: Allow, Reasons: []string{"a", "b"}, VerifiedBy: []Verification{
			{Attestor: "release", Issuer: "https://token.actions.githubusercontent.com", Subject: "https://github.com/acme/app/.github/workflows/r.yml@refs/heads/main",
				LogIndex: &logIndex, SignedAt: &signedAt, TimeSource: "tlog", X509Subject: "CN=x,O=<acme> & co", Logged: []string{"revocation", "expiry"},
				Source: "referrer sha256:1", PredicateType: "https://slsa.dev/provenance/v1", Attestation: "sha256:2",
				TrustRoot: "public-good", TrustRootVersion: 142, TrustRootDigest: "sha256:3"},
			{Attestor: "lab", Issuer: "https://ci.acme.example", Subject: "release@acme.example", Source: "s", TrustRoot: "lab", TrustRootVersion: -1},
			{Attestor: "second", Source: "s", Logged: []string{}},
			{Attestor: "security", Source: "tag x.att", PredicateType: "https://cosign.sigstore.dev/attestation/vuln/v1", Attestation: "sha256:3", Suppressed: []Suppression{
				{ID: "CVE-2026-0001", Severity: "CRITICAL", Package: "openssl", Version: "3.0.1", By: SuppressedByVEX, Detail: "not_affected (<justification> & co), attestor vendor"},
				{ID: "CVE-2026-0002", Severity: "HIGH", Package: "", Version: "", By: SuppressedByException, Detail: "INC-77 \u2028\b", Expires: &signedAt},
			}},
		}, Client: Client{Addr: "[::1]:1", Identity: "node-1", Environment: "prod"}, Duration: 90 * time.Second}},
		{"strings that need escaping", slog.LevelWarn, Record{
			Decision: "deny\n", Image: "a\"b\\c", Reference: "\b\f\t\r\x00\x1f\x7f", Digest: "<script>&", MediaType: "\u2028\u2029é日本",
			Rule: "bad \xff utf-8 \xe2\x82", Reasons: []string{"\b\f\x01\"<>&\u2028", "\xc3"}, VerifiedBy: []Verification{{Attestor: "\b\f", Source: "\x00\u2029"}},
			Client: Client{Addr: "\n", Identity: "\b", Environment: "\xff"}, Source: "\b\u2028\"",
		}},
		{"a duration past a day", slog.LevelInfo, Record{Decision: Allow, Reasons: []string{}, VerifiedBy: []Verification{}, Duration: 100000 * time.Hour}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := fastLine(at, tt.level, &tt.r)
			if want := slogLine(at, tt.level, &tt.r); !ok || got != want {
				t.Errorf("appendDecision (ok %v):\n%s\nslog:\n%s", ok, got, want)
			}
		})
	}
}

func TestDecisionLineOfAYearPast9999IsLeftToSlog(t *testing.T) {
	r := Record{Decision: Allow, Reasons: []string{}, VerifiedBy: []Verification{}}
	if _, ok := fastLine(time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC), slog.LevelInfo, &r); ok {
		t.Error("a year of five digits was encoded: slog writes an error for it")
	}
	far := time.Date(-1, 1, 1, 0, 0, 0, 0, time.UTC)
	r.VerifiedBy = []Verification{{Attestor: "a", SignedAt: &far}}
	if _, ok := fastLine(time.Now(), slog.LevelInfo, &r); ok {
		t.Error("a signedAt before year 0 was encoded: encoding/json refuses it")
	}
}

func FuzzDecisionLineIsWhatSlogWrites(f *testing.F) {
	f.Add("allow", "lab/app", "\b\f\x00", "\u2028<&>", "\xff\xc3", int64(1234567), int64(5), true)
	f.Add("", "", "", "", "", int64(0), int64(-1), false)
	f.Fuzz(func(t *testing.T, decision, image, reason, source, env string, duration, logIndex int64, cached bool) {
		at := time.Unix(1_800_000_000, duration%1_000_000_000)
		r := Record{Decision: decision, Image: image, Reference: reason, Digest: source, Rule: env, Cached: cached,
			Reasons: []string{reason, source}, VerifiedBy: []Verification{{Attestor: image, KeyID: reason, LogIndex: &logIndex, Source: source, Logged: []string{env},
				TrustRoot: reason, TrustRootVersion: logIndex, TrustRootDigest: env,
				Suppressed: []Suppression{{ID: reason, Severity: env, Package: image, Version: source, By: decision, Detail: reason, Expires: &at}}}},
			Client: Client{Addr: env, Identity: decision, Environment: reason}, Duration: time.Duration(duration), Source: env,
			Evidence: reason, EvidenceAge: time.Duration(logIndex), Principal: image}
		got, ok := fastLine(at, slog.LevelWarn, &r)
		if want := slogLine(at, slog.LevelWarn, &r); !ok || got != want {
			t.Fatalf("appendDecision (ok %v):\n%s\nslog:\n%s", ok, got, want)
		}
	})
}

// BenchmarkDecisionLine compares encoding one decision line with slog's
// JSON handler and with appendDecision.
func BenchmarkDecisionLine(b *testing.B) {
	r := Record{Decision: Allow, Image: "lab/bench/app", Reference: "sha256:6f5a52cbe0a5ca52cb4dcb2da0595ae58b5e75e05029f57be3f2bf6811007234",
		Digest: "sha256:6f5a52cbe0a5ca52cb4dcb2da0595ae58b5e75e05029f57be3f2bf6811007234", MediaType: "application/vnd.oci.image.manifest.v1+json",
		Upstream: "lab", Rule: "bench", Enforcement: "enforce",
		Reasons:    []string{"signed by attestor ci (key sha256:8dad5d038e0d, tag sha256-957c2411d94cc9f263aa69a8e5f9aa58e7315ec5e379fc939c2401f357b366a5.sig)"},
		VerifiedBy: []Verification{{Attestor: "ci", KeyID: "sha256:8dad5d038e0dd3b8b416ae00a912851a1106ebc28ed18f649392e1e8db53f4c1", Source: "tag sha256-957c2411d94cc9f263aa69a8e5f9aa58e7315ec5e379fc939c2401f357b366a5.sig"}},
		Client:     Client{Addr: "127.0.0.1:40000"}, Duration: 1234 * time.Microsecond}
	now := time.Now()
	b.Run("slog", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			linePool.Put(encode(context.Background(), now, slog.LevelInfo, "decision", decisionAttrs(&r)...))
		}
	})
	b.Run("appendDecision", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			linePool.Put(encodeDecision(context.Background(), now, slog.LevelInfo, &r))
		}
	})
}
