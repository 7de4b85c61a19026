package policy

import (
	"context"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/authz-proxy/authz-proxy/internal/verify"
)

func TestSemverCompare(t *testing.T) {
	tests := []struct {
		a, b string
		want int
	}{
		{"1.2.3", "1.2.3", 0},
		{"v1.2.3", "1.2.3", 0},
		{"1.2", "1.2.0", 0},
		{"1.10.0", "1.9.9", 1},
		{"2", "10", -1},
		{"1.0.0-rc.1", "1.0.0", -1},
		{"1.0.0-alpha", "1.0.0-alpha.1", -1},
		{"1.0.0-alpha.1", "1.0.0-alpha.beta", -1},
		{"1.0.0-beta.11", "1.0.0-beta.2", 1},
		{"1.0.0+build.5", "1.0.0+build.9", 0},
	}
	for _, tt := range tests {
		a, err := parseSemver(tt.a)
		if err != nil {
			t.Fatal(err)
		}
		b, err := parseSemver(tt.b)
		if err != nil {
			t.Fatal(err)
		}
		if got := a.compare(b); got != tt.want {
			t.Errorf("compare(%s, %s) = %d, want %d", tt.a, tt.b, got, tt.want)
		}
	}
	for _, bad := range []string{"", "x.y", "1.2.3.4", "1.-2", "1.0.0-"} {
		if _, err := parseSemver(bad); err == nil {
			t.Errorf("parseSemver(%q) accepted", bad)
		}
	}
}

func TestConditionHelpers(t *testing.T) {
	now := time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)
	predicate := map[string]any{
		"metadata": map[string]any{"buildFinishedOn": "2026-05-30T12:00:00Z"},
		"scanner":  map[string]any{"version": "0.50.1"},
		"items":    []any{"a", "b"},
		"count":    3.0, // JSON numbers are doubles
	}
	subject := []map[string]any{{"name": "r/app", "digest": map[string]string{"sha256": "ab"}}}
	img := ImageVars{Upstream: "lab", Repository: "acme/app", Digest: "sha256:ab", Tag: "v1"}
	cert := certificateVars(map[string]string{
		"issuer":              "https://token.actions.githubusercontent.com",
		"sourceRepositoryURI": "https://github.com/acme/app",
		"sourceRepositoryRef": "refs/tags/v1.2.3",
		"runnerEnvironment":   "github-hosted",
	})
	vars := conditionVars(predicate, "https://slsa.dev/provenance/v1", subject, img, cert, clientVars(Client{}), now)
	tests := []struct {
		condition string
		want      bool
		wantErr   string
	}{
		{`now - timestamp(predicate.metadata.buildFinishedOn) < duration("72h")`, true, ""},
		{`now - timestamp(predicate.metadata.buildFinishedOn) < duration("24h")`, false, ""},
		{`semverCompare(predicate.scanner.version, "0.50.0") > 0`, true, ""},
		{`semverCompare(predicate.scanner.version, "v0.51") >= 0`, false, ""},
		{`image.repository.startsWith("acme/") && image.tag == "v1" && image.upstream == "lab"`, true, ""},
		{`subject.exists(s, "sha256:" + s.digest.sha256 == image.digest)`, true, ""},
		{`predicateType.endsWith("/v1")`, true, ""},
		{`predicate.?metadata.?buildStartedOn.orValue("") == ""`, true, ""},
		{`predicate.items.size() == 2 && "a" in predicate.items`, true, ""},
		{`predicate.count >= 2 && predicate.count == 3`, true, ""},
		{`predicate.metadata.buildStartedOn == ""`, false, "no such key"},
		{`semverCompare(predicate.scanner.version, "latest") > 0`, false, "is not a version"},
		{`predicate.items`, false, "not true or false"},
		{`certificate.sourceRepositoryURI == "https://github.com/acme/app" && certificate.sourceRepositoryRef.startsWith("refs/tags/v")`, true, ""},
		{`certificate.runnerEnvironment == "github-hosted" && certificate.deploymentEnvironment == ""`, true, ""},
		{`semverCompare(certificate.sourceRepositoryRef.substring(10), "1.2.0") > 0`, true, ""},
	}
	for _, tt := range tests {
		c, err := compileCondition(tt.condition)
		if err != nil {
			t.Fatalf("%s: %v", tt.condition, err)
		}
		got, err := c.eval(context.Background(), vars)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("%s: err = %v, want %q", tt.condition, err, tt.wantErr)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("%s = %v, %v; want %v", tt.condition, got, err, tt.want)
		}
	}
}

func TestConditionOverTheCostLimitIsAnError(t *testing.T) {
	items := make([]any, 3000)
	for i := range items {
		items[i] = float64(i)
	}
	c, err := compileCondition(`predicate.items.all(a, predicate.items.all(b, a == b || a != b))`)
	if err != nil {
		t.Fatal(err)
	}
	vars := conditionVars(map[string]any{"items": items}, "p", nil, ImageVars{}, CertificateVars{}, clientVars(Client{}), time.Now())
	// The cost limit stops the evaluation by counting its steps, not by a
	// clock: the error is the proof it stopped.
	_, err = c.eval(context.Background(), vars)
	if err == nil || !strings.Contains(err.Error(), "cost limit") {
		t.Fatalf("err = %v, want the cost limit exceeded", err)
	}
}

func TestConditionCompileErrorsNameTheColumn(t *testing.T) {
	tests := []struct{ condition, want string }{
		{`predicat.builder.id == "x"`, `CEL: column 1: undeclared reference to 'predicat'`},
		{`image.repositry == "x"`, `CEL: column 6: undefined field 'repositry'`},
		{"predicate.a == 1 &&\n  predicate.b ==", "CEL: line 2, column"},
		{`predicate.builder.id`, ""}, // dyn: checked when it runs
		{`"text"`, "CEL: the condition is a string; it must be true or false"},
		{`timestamp(1, 2)`, "found no matching overload"},
	}
	for _, tt := range tests {
		_, err := compileCondition(tt.condition)
		switch {
		case tt.want == "" && err != nil:
			t.Errorf("%q: %v", tt.condition, err)
		case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
			t.Errorf("%q: err = %v, want %q", tt.condition, err, tt.want)
		}
	}
}

// TestConditionsSeeEveryCertificateFieldVerifyReads keeps the `certificate`
// variable in step with the fields package verify reads and the keyless
// attestor's `certificate` accepts.
func TestConditionsSeeEveryCertificateFieldVerifyReads(t *testing.T) {
	want := []string{verify.FieldIssuer, verify.FieldSubject}
	for _, e := range verify.Extensions {
		want = append(want, e.Name)
	}
	var got []string
	for f := range reflect.TypeFor[CertificateVars]().Fields() {
		got = append(got, f.Tag.Get("cel"))
	}
	if !slices.Equal(got, want) {
		t.Fatalf("CertificateVars fields %v, want %v", got, want)
	}
	for _, name := range want {
		if _, err := compileCondition(`certificate.` + name + ` != ""`); err != nil {
			t.Errorf("certificate.%s: %v", name, err)
		}
	}
	if _, err := compileCondition(`certificate.sourceRepository == "x"`); err == nil || !strings.Contains(err.Error(), "undefined field 'sourceRepository'") {
		t.Errorf("a misspelled certificate field compiled: %v", err)
	}
}
