package policy_test

import (
	"context"
	"fmt"
	"io"
	"log"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/authz-proxy/authz-proxy/internal/oci"
	"github.com/authz-proxy/authz-proxy/internal/policy"
	"github.com/authz-proxy/authz-proxy/internal/sign"
	"github.com/authz-proxy/authz-proxy/internal/testkit"
	"github.com/authz-proxy/authz-proxy/internal/upstream"
)

const rules = `
attestors:
  - name: ci
    publicKeys: [{file: ci.pub}]
policy:
  rules:
    - name: built
      images: ["lab/**"]
      require:
        - attestation:
            predicateType: slsaprovenance1
            attestors: [ci]
            condition: %s
`

// load writes the configuration (with one upstream at url) and a ci key
// into dir, and compiles it.
func loadAttestationPolicy(t testing.TB, dir, url, condition string) (*policy.Policy, error) {
	t.Helper()
	text := fmt.Sprintf("upstreams:\n  - name: lab\n    url: %s\n    insecure: true\n", url) + fmt.Sprintf(rules, condition)
	return policy.Compile(testkit.LoadConfig(t, dir, text, nil))
}

func TestConditionTypoIsAValidateErrorNamingRuleLineAndColumn(t *testing.T) {
	dir := t.TempDir()
	testkit.NewSigner(t, filepath.Join(dir, "ci.pub"))
	_, err := loadAttestationPolicy(t, dir, "http://127.0.0.1:1", `'predicate.runDetails.builder.id == "x" && predicat.buildDefinition != null'`)
	want := filepath.Join(dir, "config.yaml") + ":17: policy.rules[0].require[0].attestation.condition: CEL: column 43: undeclared reference to 'predicat'"
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("err = %v\nwant %s", err, want)
	}
}

// world is an in-process registry with one image attested by ci.
type world struct {
	client *upstream.Client
	subj   policy.Subject
	dir    string
}

func newWorld(t testing.TB) *world {
	t.Helper()
	srv := httptest.NewServer(registry.New(registry.WithReferrersSupport(true), registry.Logger(log.New(io.Discard, "", 0))))
	t.Cleanup(srv.Close)
	w := &world{dir: t.TempDir()}
	ci := testkit.NewSigner(t, filepath.Join(w.dir, "ci.pub"))
	host := strings.TrimPrefix(srv.URL, "http://")
	repo, _ := name.NewRepository(host+"/acme/app", name.Insecure)
	img, _ := random.Image(256, 1)
	if err := remote.Write(repo.Tag("v1"), img); err != nil {
		t.Fatal(err)
	}
	d, _ := img.Digest()
	predicate := map[string]any{
		"buildDefinition": map[string]any{"buildType": "https://ci.example/build/v1"},
		"runDetails": map[string]any{
			"builder":  map[string]any{"id": "https://ci.example/builder@v1"},
			"metadata": map[string]any{"finishedOn": time.Now().UTC().Format(time.RFC3339)},
		},
	}
	st, _ := sign.Statement(oci.StatementV01, repo.Name(), d.String(), "https://slsa.dev/provenance/v1", predicate)
	a, err := sign.Attest(ci, "https://slsa.dev/provenance/v1", st)
	if err != nil {
		t.Fatal(err)
	}
	if err := sign.AttachAttestationTag(context.Background(), repo, d.String(), []sign.Attestation{a}); err != nil {
		t.Fatal(err)
	}
	w.client, err = upstream.New(upstream.Options{Name: "lab", URL: srv.URL, Insecure: true})
	if err != nil {
		t.Fatal(err)
	}
	w.subj = policy.Subject{Upstream: "lab", Repository: "acme/app", Tag: "v1", Digest: d.String()}
	return w
}

const trustedBuilder = `'predicate.runDetails.builder.id == "https://ci.example/builder@v1" && now - timestamp(predicate.runDetails.metadata.finishedOn) < duration("720h")'`

func TestEvaluateNamesTheAttestationThatSatisfied(t *testing.T) {
	w := newWorld(t)
	p, err := loadAttestationPolicy(t, w.dir, "http://127.0.0.1:1", trustedBuilder)
	if err != nil {
		t.Fatal(err)
	}
	v, err := evaluate(context.Background(), p, w.client, w.subj)
	if err != nil {
		t.Fatal(err)
	}
	if !v.Allowed || len(v.VerifiedBy) != 1 {
		t.Fatalf("verdict %+v", v)
	}
	by := v.VerifiedBy[0]
	if by.Attestor != "ci" || by.PredicateType != "https://slsa.dev/provenance/v1" || !strings.HasPrefix(by.Attestation, "sha256:") || !strings.HasSuffix(by.Source, ".att") {
		t.Errorf("verified by %+v", by)
	}
	if !strings.Contains(v.Reasons[0], "satisfies the condition `predicate.runDetails.builder.id") {
		t.Errorf("reasons %q", v.Reasons)
	}
}

// fetched is a Source holding evidence fetched from the registry once: it
// leaves the verification and the condition alone in the measurement.
type fetched struct{ ev *oci.Evidence }

func (f fetched) Evidence(context.Context, string, string, oci.Want) (*oci.Evidence, error) {
	return f.ev, nil
}

// BenchmarkAttestationRequirement measures one attestation requirement
// (a SLSA provenance with a CEL condition) judged from scratch (discovery
// in an in-process registry over loopback HTTP, DSSE verification, the
// condition), the same without the discovery, and the decision with the
// outcome cached (the rule matched again, nothing verified).
func BenchmarkAttestationRequirement(b *testing.B) {
	w := newWorld(b)
	p, err := loadAttestationPolicy(b, w.dir, "http://127.0.0.1:1", trustedBuilder)
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	b.Run("uncached", func(b *testing.B) {
		for b.Loop() {
			if v, err := evaluate(ctx, p, w.client, w.subj); err != nil || !v.Allowed {
				b.Fatalf("%+v, %v", v, err)
			}
		}
	})
	b.Run("uncached, evidence already fetched", func(b *testing.B) {
		ev, err := w.client.Evidence(ctx, w.subj.Repository, w.subj.Digest, oci.Want{PredicateTypes: []string{"https://slsa.dev/provenance/v1"}})
		if err != nil {
			b.Fatal(err)
		}
		src := fetched{ev}
		for b.Loop() {
			if v, err := evaluate(ctx, p, src, w.subj); err != nil || !v.Allowed {
				b.Fatalf("%+v, %v", v, err)
			}
		}
	})
	b.Run("cached", func(b *testing.B) {
		j, err := policy.NewJudge(100, nil)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := j.Evaluate(ctx, p, w.client, w.subj); err != nil {
			b.Fatal(err)
		}
		b.ReportAllocs()
		for b.Loop() {
			d, err := j.Evaluate(ctx, p, w.client, w.subj)
			if err != nil || !d.Cached || !d.Allowed {
				b.Fatalf("%+v, %v", d, err)
			}
		}
	})
}

func TestEvaluationCutShortByTheDeadlineIsAnErrorNotADeny(t *testing.T) {
	w := newWorld(t)
	p, err := loadAttestationPolicy(t, w.dir, "http://127.0.0.1:1", trustedBuilder)
	if err != nil {
		t.Fatal(err)
	}
	ev, err := w.client.Evidence(context.Background(), w.subj.Repository, w.subj.Digest, oci.Want{PredicateTypes: []string{"https://slsa.dev/provenance/v1"}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	v, err := evaluate(ctx, p, fetched{ev}, w.subj)
	if err == nil {
		t.Fatalf("a cancelled evaluation gave a verdict, which would be cached: %+v", v)
	}
}
