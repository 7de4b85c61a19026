package proxy_test

import (
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/authz-proxy/authz-proxy/internal/limits"
	"github.com/authz-proxy/authz-proxy/internal/oci"
	"github.com/authz-proxy/authz-proxy/internal/sign"
)

const (
	slsaV1 = "https://slsa.dev/provenance/v1"
	vuln   = "https://cosign.sigstore.dev/attestation/vuln/v1"
	review = "https://example.com/attestations/review/v1"
)

// attestationPolicy has one rule per attestation behaviour under test.
const attestationPolicy = `
attestors:
  - name: ci
    publicKeys: [{file: ci.pub}]
  - name: release
    publicKeys: [{file: release.pub}]
policy:
  rules:
    - name: trusted-builder
      images: ["lab/builder/**"]
      require:
        - attestation:
            predicateType: slsaprovenance1
            attestors: [ci]
            condition: 'predicate.runDetails.builder.id == "https://ci.example/builder@v1"'
    - name: broken-condition
      images: ["lab/broken/**"]
      require:
        - attestation:
            predicateType: slsaprovenance1
            attestors: [ci]
            condition: 'predicate.buildDefinition.resolvedDependencies[0].uri.startsWith("git+")'
    - name: one-reviewer
      images: ["lab/one/**"]
      require:
        - attestation:
            predicateType: ` + review + `
            attestors: [ci, release]
            threshold: 1
            select: any
            condition: 'predicate.approved == true'
    - name: two-reviewers
      images: ["lab/two/**"]
      require:
        - attestation:
            predicateType: ` + review + `
            attestors: [ci, release]
            threshold: 2
            condition: 'predicate.approved == true'
    - name: signed-and-scanned
      images: ["lab/full/**"]
      require:
        - signature:
            attestors: [ci]
        - attestation:
            predicateType: vuln
            attestors: [ci]
            condition: >-
              now - timestamp(predicate.metadata.scanFinishedOn) < duration("168h") &&
              !predicate.scanner.result.Results.exists(r, has(r.Vulnerabilities) &&
                r.Vulnerabilities.exists(v, v.Severity == "CRITICAL"))
        - attestation:
            predicateType: slsaprovenance1
            attestors: [ci]
`

func provenance(builder string) map[string]any {
	return map[string]any{
		"buildDefinition": map[string]any{"buildType": "https://ci.example/build/v1"},
		"runDetails":      map[string]any{"builder": map[string]any{"id": builder}},
	}
}

func scan(finished time.Time, severities ...string) map[string]any {
	var vulns []any
	for i, s := range severities {
		vulns = append(vulns, map[string]any{"VulnerabilityID": "CVE-2026-" + string(rune('0'+i)), "Severity": s})
	}
	result := map[string]any{"Target": "app"}
	if len(vulns) > 0 { // trivy leaves the field out when it found nothing
		result["Vulnerabilities"] = vulns
	}
	return map[string]any{
		"scanner":  map[string]any{"uri": "pkg:github/aquasecurity/trivy", "result": map[string]any{"Results": []any{result}}},
		"metadata": map[string]any{"scanStartedOn": finished.Add(-time.Minute).Format(time.RFC3339), "scanFinishedOn": finished.Format(time.RFC3339)},
	}
}

func TestAttestationDecisions(t *testing.T) {
	const goodBuilder = "https://ci.example/builder@v1"
	tests := []struct {
		name       string
		setup      func(e *env) (repo string, digest v1.Hash)
		wantStatus int
		wantInMsg  string
		// wantBy are the attestors the decision log names, in order.
		wantBy []string
	}{
		{"AttestationSatisfiedInTheAttTag", func(e *env) (string, v1.Hash) {
			d := e.push("builder/app:v1")
			e.attestTag("builder/app", d, e.attestation("builder/app", "ci", d, slsaV1, provenance(goodBuilder)))
			return "builder/app", d
		}, 200, "", []string{"ci"}},
		{"AttestationSatisfiedByAStatementV1", func(e *env) (string, v1.Hash) {
			d := e.push("builder/app:v1")
			e.attestTag("builder/app", d, e.attestationOf(oci.StatementV1, "builder/app", "ci", d, slsaV1, provenance(goodBuilder)))
			return "builder/app", d
		}, 200, "", []string{"ci"}},
		{"AttestationSatisfiedAsASigstoreBundleReferrer", func(e *env) (string, v1.Hash) {
			d := e.push("builder/app:v1")
			e.attestReferrer("builder/app", "ci", d, e.attestation("builder/app", "ci", d, slsaV1, provenance(goodBuilder)), false)
			return "builder/app", d
		}, 200, "", []string{"ci"}},
		{"AttestationDeniedWhenMissing", func(e *env) (string, v1.Hash) {
			d := e.push("builder/app:v1")
			e.signTag("builder/app", "ci", d, d) // a signature is no attestation
			return "builder/app", d
		}, 403, "attestation https://slsa.dev/provenance/v1 not satisfied: ci: no attestation of this type found", nil},
		{"AttestationDeniedWhenOnlyAnotherPredicateTypeIsAttested", func(e *env) (string, v1.Hash) {
			d := e.push("builder/app:v1")
			e.attestTag("builder/app", d, e.attestation("builder/app", "ci", d, "https://slsa.dev/provenance/v0.2", provenance(goodBuilder)))
			return "builder/app", d
		}, 403, "ci: no attestation of this type found", nil},
		{"AttestationDeniedWhenSignedByAnotherKey", func(e *env) (string, v1.Hash) {
			d := e.push("builder/app:v1")
			e.attestTag("builder/app", d, e.attestation("builder/app", "nobody", d, slsaV1, provenance(goodBuilder)))
			return "builder/app", d
		}, 403, "ci: 1 attestation(s) of this type found, none signed by its keys", nil},
		{"AttestationDeniedWhenStatementIsForAnotherDigest", func(e *env) (string, v1.Hash) {
			a := e.push("builder/app:a")
			b := e.push("builder/app:b")
			// ci really attested a; the envelope is stored as b's.
			e.attestTag("builder/app", b, e.attestation("builder/app", "ci", a, slsaV1, provenance(goodBuilder)))
			return "builder/app", b
		}, 403, "is about sha256:", nil},
		{"AttestationDeniedWhenConditionIsFalse", func(e *env) (string, v1.Hash) {
			d := e.push("builder/app:v1")
			e.attestTag("builder/app", d, e.attestation("builder/app", "ci", d, slsaV1, provenance("https://laptop.example/me")))
			return "builder/app", d
		}, 403, "does not satisfy the condition `predicate.runDetails.builder.id == \"https://ci.example/builder@v1\"`", nil},
		{"AttestationDeniedWithTheErrorWhenConditionFails", func(e *env) (string, v1.Hash) {
			d := e.push("broken/app:v1")
			e.attestTag("broken/app", d, e.attestation("broken/app", "ci", d, slsaV1, provenance(goodBuilder)))
			return "broken/app", d
		}, 403, "failed on its attestation", nil},
		{"AttestationClosestMissIsReportedWhenSeveralMiss", func(e *env) (string, v1.Hash) {
			d := e.push("builder/app:v1")
			e.attestTag("builder/app", d,
				e.attestation("builder/app", "nobody", d, slsaV1, provenance(goodBuilder)),
				e.attestation("builder/app", "ci", d, slsaV1, provenance("https://laptop.example/me")))
			return "builder/app", d
		}, 403, "does not satisfy the condition", nil},
		{"AttestationSatisfiedByOneOfTwoAttestorsWithThreshold1", func(e *env) (string, v1.Hash) {
			d := e.push("one/app:v1")
			e.attestTag("one/app", d,
				e.attestation("one/app", "ci", d, review, map[string]any{"approved": false}),
				e.attestation("one/app", "release", d, review, map[string]any{"approved": true}))
			return "one/app", d
		}, 200, "", []string{"release"}},
		{"AttestationDeniedWhenOneOfTwoAttestorsSatisfiesThreshold2", func(e *env) (string, v1.Hash) {
			d := e.push("two/app:v1")
			e.attestTag("two/app", d,
				e.attestation("two/app", "ci", d, review, map[string]any{"approved": false}),
				e.attestation("two/app", "release", d, review, map[string]any{"approved": true}))
			return "two/app", d
		}, 403, "(1 of the 2 attestors required): ci: its attestation", nil},
		{"AttestationSatisfiedByTwoAttestorsWithThreshold2", func(e *env) (string, v1.Hash) {
			d := e.push("two/app:v1")
			e.attestTag("two/app", d, e.attestation("two/app", "ci", d, review, map[string]any{"approved": true}))
			e.attestReferrer("two/app", "release", d, e.attestation("two/app", "release", d, review, map[string]any{"approved": true}), false)
			return "two/app", d
		}, 200, "", []string{"ci", "release"}},
		{"AttestationsOfOneAttestorDoNotMakeAThresholdOf2", func(e *env) (string, v1.Hash) {
			d := e.push("two/app:v1")
			e.attestTag("two/app", d,
				e.attestation("two/app", "ci", d, review, map[string]any{"approved": true}),
				e.attestation("two/app", "ci", d, review, map[string]any{"approved": true}))
			return "two/app", d
		}, 403, "release: 2 attestation(s) of this type found, none signed by its keys", nil},
		{"SignatureAndAttestationsAllHold", func(e *env) (string, v1.Hash) {
			d := e.push("full/app:v1")
			e.signTag("full/app", "ci", d, d)
			e.attestTag("full/app", d,
				e.attestation("full/app", "ci", d, vuln, scan(time.Now().Add(-time.Hour), "LOW", "HIGH")),
				e.attestation("full/app", "ci", d, slsaV1, provenance(goodBuilder)))
			return "full/app", d
		}, 200, "", []string{"ci", "ci", "ci"}},
		{"AttestationDeniedWhenTheScanFoundACriticalVulnerability", func(e *env) (string, v1.Hash) {
			d := e.push("full/app:v1")
			e.signTag("full/app", "ci", d, d)
			e.attestTag("full/app", d,
				e.attestation("full/app", "ci", d, vuln, scan(time.Now().Add(-time.Hour), "LOW", "CRITICAL")),
				e.attestation("full/app", "ci", d, slsaV1, provenance(goodBuilder)))
			return "full/app", d
		}, 403, "attestation https://cosign.sigstore.dev/attestation/vuln/v1 not satisfied", nil},
		{"AttestationDeniedWhenTheScanIsStale", func(e *env) (string, v1.Hash) {
			d := e.push("full/app:v1")
			e.signTag("full/app", "ci", d, d)
			e.attestTag("full/app", d,
				e.attestation("full/app", "ci", d, vuln, scan(time.Now().Add(-30*24*time.Hour))),
				e.attestation("full/app", "ci", d, slsaV1, provenance(goodBuilder)))
			return "full/app", d
		}, 403, "does not satisfy the condition `now - timestamp(predicate.metadata.scanFinishedOn)", nil},
		{"AttestationsDoNotReplaceTheSignatureARuleRequires", func(e *env) (string, v1.Hash) {
			d := e.push("full/app:v1")
			e.attestTag("full/app", d,
				e.attestation("full/app", "ci", d, vuln, scan(time.Now())),
				e.attestation("full/app", "ci", d, slsaV1, provenance(goodBuilder)))
			return "full/app", d
		}, 403, "no cosign signature found", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, withPolicy(attestationPolicy))
			repo, d := tt.setup(e)
			path := "/v2/lab/" + repo + "/manifests/" + d.String()
			resp := e.get(http.MethodGet, path)
			if resp.StatusCode != tt.wantStatus {
				body, _ := io.ReadAll(resp.Body)
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, tt.wantStatus, body)
			}
			rec := e.lastDecision(d.String())
			if tt.wantStatus == 403 {
				msg := expectError(t, e.get(http.MethodGet, path), 403, "DENIED")
				if !strings.Contains(msg, tt.wantInMsg) {
					t.Errorf("message %q does not say %q", msg, tt.wantInMsg)
				}
				if rec.Decision != "deny" || !strings.Contains(strings.Join(rec.Reasons, "\n"), tt.wantInMsg) {
					t.Errorf("decision log: %+v", rec)
				}
				return
			}
			var by []string
			for _, v := range rec.VerifiedBy {
				by = append(by, v.Attestor)
				if v.PredicateType != "" && (!strings.HasPrefix(v.Attestation, "sha256:") || !strings.HasPrefix(v.KeyID, "sha256:") || v.Source == "") {
					t.Errorf("verifiedBy does not name the attestation: %+v", v)
				}
			}
			if rec.Decision != "allow" || strings.Join(by, ",") != strings.Join(tt.wantBy, ",") {
				t.Errorf("decision %s verified by %v, want allow by %v: %+v", rec.Decision, by, tt.wantBy, rec)
			}
			if !strings.Contains(strings.Join(rec.Reasons, "\n"), "attestation ") {
				t.Errorf("allow reasons do not name the attestation: %q", rec.Reasons)
			}
		})
	}
}

func TestAttestationFoundThroughReferrersTagFallback(t *testing.T) {
	e := newEnv(t, withPolicy(attestationPolicy), withoutReferrersAPI())
	d := e.push("builder/app:v1")
	e.signReferrer("builder/app", "ci", d, true) // shares the fallback index
	e.attestReferrer("builder/app", "ci", d, e.attestation("builder/app", "ci", d, slsaV1, provenance("https://ci.example/builder@v1")), true)
	if resp := e.get(http.MethodGet, "/v2/lab/builder/app/manifests/v1"); resp.StatusCode != 200 {
		body, _ := io.ReadAll(resp.Body)
		t.Fatalf("status %d: %s", resp.StatusCode, body)
	}
	rec := e.lastDecision(d.String())
	if len(rec.VerifiedBy) != 1 || !strings.HasPrefix(rec.VerifiedBy[0].Source, "referrer ") || rec.VerifiedBy[0].PredicateType != slsaV1 {
		t.Errorf("verified by %+v, want the bundle referrer", rec.VerifiedBy)
	}
}

func TestSignaturesAndAttestationsShareOneReferrersRequest(t *testing.T) {
	e := newEnv(t, withPolicy(attestationPolicy))
	d := e.push("full/app:v1")
	e.signReferrer("full/app", "ci", d, false)
	e.attestReferrer("full/app", "ci", d, e.attestation("full/app", "ci", d, vuln, scan(time.Now())), false)
	e.attestReferrer("full/app", "ci", d, e.attestation("full/app", "ci", d, slsaV1, provenance("x")), false)
	referrers := "/v2/full/app/referrers/" + d.String()
	before := e.count(http.MethodGet, referrers) // pushing a referrer asks too
	if resp := e.get(http.MethodGet, "/v2/lab/full/app/manifests/v1"); resp.StatusCode != 200 {
		body, _ := io.ReadAll(resp.Body)
		t.Fatalf("status %d: %s", resp.StatusCode, body)
	}
	if n := e.count(http.MethodGet, referrers) - before; n != 1 {
		t.Errorf("%d referrers requests for one decision, want 1", n)
	}
	if n := e.count(http.MethodGet, "/v2/full/app/manifests/"+tagOf(d)+".att"); n != 1 {
		t.Errorf("%d .att requests, want 1", n)
	}
}

func TestAttestationCapsAreDenyReasons(t *testing.T) {
	t.Run("more attestations than the cap", func(t *testing.T) {
		e := newEnv(t, withPolicy(attestationPolicy), withLimits(limits.Limits{MaxAttestations: 2}, 10*time.Second))
		d := e.push("builder/app:v1")
		var atts []sign.Attestation
		for range 3 {
			atts = append(atts, e.attestation("builder/app", "nobody", d, slsaV1, provenance("x")))
		}
		e.attestTag("builder/app", d, atts...)
		msg := expectError(t, e.get(http.MethodGet, "/v2/lab/builder/app/manifests/v1"), 403, "DENIED")
		if !strings.Contains(msg, "more than 2 attestations of the required predicate types stored for this digest: the rest were not read") {
			t.Errorf("message %q does not name the cap", msg)
		}
	})
	t.Run("the newest attestations are the ones read", func(t *testing.T) {
		e := newEnv(t, withPolicy(attestationPolicy), withLimits(limits.Limits{MaxAttestations: 1}, 10*time.Second))
		d := e.push("builder/app:v1")
		e.attestTag("builder/app", d, e.attestation("builder/app", "nobody", d, slsaV1, provenance("x")))
		e.attestTag("builder/app", d, e.attestation("builder/app", "ci", d, slsaV1, provenance("https://ci.example/builder@v1")))
		if resp := e.get(http.MethodGet, "/v2/lab/builder/app/manifests/v1"); resp.StatusCode != 200 {
			body, _ := io.ReadAll(resp.Body)
			t.Fatalf("status %d: %s", resp.StatusCode, body)
		}
	})
	t.Run("an envelope over the size cap", func(t *testing.T) {
		e := newEnv(t, withPolicy(attestationPolicy), withLimits(limits.Limits{MaxEnvelopeSize: 4096}, 10*time.Second))
		d := e.push("builder/app:v1")
		p := provenance("https://ci.example/builder@v1")
		p["padding"] = strings.Repeat("x", 8192)
		e.attestTag("builder/app", d, e.attestation("builder/app", "ci", d, slsaV1, p))
		msg := expectError(t, e.get(http.MethodGet, "/v2/lab/builder/app/manifests/v1"), 403, "DENIED")
		if !strings.Contains(msg, "over the 4096-byte limit") {
			t.Errorf("message %q does not name the cap", msg)
		}
	})
}
