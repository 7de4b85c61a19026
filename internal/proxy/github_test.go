package proxy_test

import (
	"context"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/authz-proxy/authz-proxy/internal/oci"
	"github.com/authz-proxy/authz-proxy/internal/sign"
	"github.com/authz-proxy/authz-proxy/internal/sign/virtual"
)

// githubPolicy trusts GitHub Actions as `gh attestation verify` would:
// release is acme/app's release workflow on a version tag on a
// GitHub-hosted runner, under Sigstore's public-good root (public
// repositories) or GitHub's (private ones); private-builds is any
// workflow of acme/app run on push in a private repository, dated by
// GitHub's timestamp authority.
const githubPolicy = `
attestors:
  - name: release
    keyless:
      github:
        repository: acme/app
        workflow: .github/workflows/release.yml
        ref: "refs/tags/v*"
        runner: github-hosted
      trustedRootFiles: [{{public}}, {{github}}]
  - name: private-builds
    keyless:
      github: {repository: acme/app}
      certificate:
        buildTrigger: push
        sourceRepositoryVisibilityAtSigningRegexp: '^(private|internal)$'
      trustedRootFiles: [{{github}}]
      requireTimestamp: true
  - name: shared-builder
    keyless:
      github: {repository: acme/app, workflow: acme/shared/.github/workflows/build.yml}
      trustedRootFile: {{public}}
policy:
  rules:
    - name: release
      images: ["lab/release/**"]
      require:
        - signature: {attestors: [release]}
    - name: provenance
      images: ["lab/provenance/**"]
      require:
        - attestation:
            predicateType: slsaprovenance1
            attestors: [release]
            condition: 'certificate.sourceRepositoryRef == "refs/tags/" + image.tag'
    - name: shared
      images: ["lab/shared/**"]
      require:
        - signature: {attestors: [shared-builder]}
    - name: private
      images: ["lab/private/**"]
      require:
        - attestation: {predicateType: slsaprovenance1, attestors: [private-builds]}
`

// githubWorld is Sigstore's public-good instance (a Fulcio CA and a Rekor
// log) and GitHub's (a Fulcio CA and a timestamp authority), as tests.
type githubWorld struct {
	sigstore             *virtual.Sigstore // the log and timestamp authority
	publicGood, githubCA *virtual.CA
	stranger             *virtual.CA
}

func newGitHubWorld(t *testing.T) *githubWorld {
	t.Helper()
	vs, err := virtual.New()
	if err != nil {
		t.Fatal(err)
	}
	w := &githubWorld{sigstore: vs}
	for _, ca := range []**virtual.CA{&w.publicGood, &w.githubCA, &w.stranger} {
		if *ca, err = virtual.NewCA("fulcio", time.Now().Add(-time.Hour), time.Now().Add(time.Hour)); err != nil {
			t.Fatal(err)
		}
	}
	return w
}

func (w *githubWorld) env(t *testing.T, opts ...envOption) *env {
	t.Helper()
	dir := t.TempDir()
	pol := githubPolicy
	for name, parts := range map[string]virtual.Parts{
		"public": {Log: w.sigstore, Authorities: []*virtual.CA{w.publicGood}},
		"github": {TSA: w.sigstore, Authorities: []*virtual.CA{w.githubCA}},
	} {
		raw, err := virtual.TrustedRoot(parts)
		if err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(dir, name+".json")
		if err := os.WriteFile(path, raw, 0o600); err != nil {
			t.Fatal(err)
		}
		pol = strings.ReplaceAll(pol, "{{"+name+"}}", path)
	}
	return newEnv(t, append([]envOption{withPolicy(pol)}, opts...)...)
}

// releaseRun is acme/app's release workflow building v1.2.3 on a
// GitHub-hosted runner in a public repository.
var releaseRun = virtual.GitHubRun{
	Repository: "acme/app", Workflow: ".github/workflows/release.yml", Ref: "refs/tags/v1.2.3",
	SHA: "5f1e4c0b6a", Event: "push", Runner: "github-hosted", Visibility: "public",
}

// githubBundle is run's bundle of statement, its certificate from ca.
func githubBundle(t *testing.T, ca *virtual.CA, run virtual.GitHubRun, statement []byte, o virtual.BundleOptions) []byte {
	t.Helper()
	s, err := ca.Issue(run.Leaf())
	if err != nil {
		t.Fatal(err)
	}
	b, err := s.DSSEBundle(statement, o)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// pushToRegistry stores an attestation bundle for digest as
// actions/attest-build-provenance does with push-to-registry: true.
func (e *env) pushToRegistry(repo string, digest v1.Hash, bundle []byte, mediaType string, fallbackTag bool) {
	e.t.Helper()
	desc, err := sign.Describe(context.Background(), e.repo(repo).Digest(digest.String()))
	if err != nil {
		e.t.Fatal(err)
	}
	if _, err := sign.AttachGitHubAttestation(context.Background(), e.repo(repo), desc, bundle, mediaType, slsaV1, fallbackTag); err != nil {
		e.t.Fatal(err)
	}
}

func TestGitHubActionsIdentities(t *testing.T) {
	w := newGitHubWorld(t)
	run := func(edit func(*virtual.GitHubRun)) virtual.GitHubRun {
		r := releaseRun
		edit(&r)
		return r
	}
	// signed is a cosign v3 signature of the image by run, logged in the
	// public-good Rekor.
	signed := func(run virtual.GitHubRun) func(e *env) (string, string) {
		return func(e *env) (string, string) {
			d := e.push("release/app:v1.2.3")
			e.attachBundle("release/app", d, githubBundle(t, w.publicGood, run, virtual.CosignStatement(d.String()), virtual.BundleOptions{Log: w.sigstore}),
				"dsse-envelope", oci.CosignSignPredicateType, false)
			return "release/app", d.String()
		}
	}
	// attested is run's provenance of the image, stored as
	// push-to-registry does.
	attested := func(run virtual.GitHubRun, ca *virtual.CA, tag string, o virtual.BundleOptions, fallbackTag bool) func(e *env) (string, string) {
		return func(e *env) (string, string) {
			repo := "provenance/app"
			if ca == w.githubCA {
				repo = "private/app"
			}
			d := e.push(repo + ":" + tag)
			st, err := virtual.Statement(d.String(), slsaV1, provenance("https://github.com/actions/runner"))
			if err != nil {
				t.Fatal(err)
			}
			mt := oci.BundleV03
			if o.V02 {
				mt = oci.Bundle02
			}
			e.pushToRegistry(repo, d, githubBundle(t, ca, run, st, o), mt, fallbackTag)
			return repo, tag
		}
	}
	private := run(func(r *virtual.GitHubRun) { r.Visibility = "private" })
	reusable := func(signerRepo string) func(e *env) (string, string) {
		return func(e *env) (string, string) {
			r := run(func(r *virtual.GitHubRun) {
				r.SignerRepository, r.SignerRef, r.Workflow = signerRepo, "refs/heads/main", ".github/workflows/build.yml"
			})
			d := e.push("shared/app:v1")
			e.attachBundle("shared/app", d, githubBundle(t, w.publicGood, r, virtual.CosignStatement(d.String()), virtual.BundleOptions{Log: w.sigstore}),
				"dsse-envelope", oci.CosignSignPredicateType, false)
			return "shared/app", d.String()
		}
	}
	tests := []struct {
		name           string
		noReferrersAPI bool
		setup          func(e *env) (repo, reference string)
		wantStatus     int
		wantInMsg      []string
	}{
		{name: "ReleaseWorkflowOnATag", setup: signed(releaseRun), wantStatus: 200},
		{name: "RepositoryNamesAreCaseInsensitive", setup: signed(run(func(r *virtual.GitHubRun) { r.Repository = "Acme/App" })), wantStatus: 200},
		{name: "AFork", setup: signed(run(func(r *virtual.GitHubRun) { r.Repository = "mallory/app" })), wantStatus: 403, wantInMsg: []string{
			`sourceRepositoryURI is "https://github.com/mallory/app", want "https://github.com/acme/app" in any case (github.repository)`,
			`subject is "https://github.com/mallory/app/.github/workflows/release.yml@refs/tags/v1.2.3", want the workflow https://github.com/acme/app/.github/workflows/release.yml at any ref (github.workflow)`,
		}},
		{name: "ABranch", setup: signed(run(func(r *virtual.GitHubRun) { r.Ref = "refs/heads/main" })), wantStatus: 403, wantInMsg: []string{
			`identity: sourceRepositoryRef is "refs/heads/main", want a ref matching refs/tags/v* (github.ref)`,
		}},
		{name: "ASelfHostedRunner", setup: signed(run(func(r *virtual.GitHubRun) { r.Runner = "self-hosted" })), wantStatus: 403, wantInMsg: []string{
			`identity: runnerEnvironment is "self-hosted", want "github-hosted" (github.runner)`,
		}},
		{name: "AnotherWorkflow", setup: signed(run(func(r *virtual.GitHubRun) { r.Workflow = ".github/workflows/nightly.yml" })), wantStatus: 403, wantInMsg: []string{
			`identity: subject is "https://github.com/acme/app/.github/workflows/nightly.yml@refs/tags/v1.2.3", want the workflow https://github.com/acme/app/.github/workflows/release.yml at any ref (github.workflow)`,
		}},
		{name: "AWorkflowWhoseNameExtendsTheRightOne", setup: signed(run(func(r *virtual.GitHubRun) { r.Workflow = ".github/workflows/release.yml.bak" })), wantStatus: 403, wantInMsg: []string{
			`(github.workflow)`,
		}},
		{name: "AnotherIssuer", setup: func(e *env) (string, string) {
			d := e.push("release/app:v1.2.3")
			leaf := releaseRun.Leaf()
			leaf.Issuer = "https://token.actions.example"
			s, err := w.publicGood.Issue(leaf)
			if err != nil {
				t.Fatal(err)
			}
			b, err := s.DSSEBundle(virtual.CosignStatement(d.String()), virtual.BundleOptions{Log: w.sigstore})
			if err != nil {
				t.Fatal(err)
			}
			e.attachBundle("release/app", d, b, "dsse-envelope", oci.CosignSignPredicateType, false)
			return "release/app", d.String()
		}, wantStatus: 403, wantInMsg: []string{`identity: issuer is "https://token.actions.example", want "` + virtual.GitHubIssuer + `"`}},
		{name: "ACertificateOfNeitherRoot", setup: func(e *env) (string, string) {
			d := e.push("release/app:v1.2.3")
			e.attachBundle("release/app", d, githubBundle(t, w.stranger, releaseRun, virtual.CosignStatement(d.String()), virtual.BundleOptions{Log: w.sigstore}),
				"dsse-envelope", oci.CosignSignPredicateType, false)
			return "release/app", d.String()
		}, wantStatus: 403, wantInMsg: []string{"does not chain to a certificate authority of any of the 2 trusted roots"}},
		{name: "ReusableWorkflowOfAnotherRepository", setup: reusable("acme/shared"), wantStatus: 200},
		{name: "ReusableWorkflowOfTheWrongRepository", setup: reusable("acme/app"), wantStatus: 403, wantInMsg: []string{
			`subject is "https://github.com/acme/app/.github/workflows/build.yml@refs/heads/main", want the workflow https://github.com/acme/shared/.github/workflows/build.yml at any ref (github.workflow)`,
		}},
		{name: "PushToRegistryProvenanceOfAPublicRepository", setup: attested(releaseRun, w.publicGood, "v1.2.3", virtual.BundleOptions{Log: w.sigstore}, false), wantStatus: 200},
		{name: "PushToRegistryProvenanceThroughTheFallbackTag", noReferrersAPI: true,
			setup: attested(releaseRun, w.publicGood, "v1.2.3", virtual.BundleOptions{Log: w.sigstore}, true), wantStatus: 200},
		{name: "ConditionOnTheCertificateRefAgainstTheTagAskedFor", setup: attested(releaseRun, w.publicGood, "v9.9.9", virtual.BundleOptions{Log: w.sigstore}, false),
			wantStatus: 403, wantInMsg: []string{"does not satisfy the condition `certificate.sourceRepositoryRef == \"refs/tags/\" + image.tag`"}},
		{name: "PrivateRepositoryDatedByGitHubsTimestampAuthority", setup: attested(private, w.githubCA, "v1", virtual.BundleOptions{TSA: w.sigstore}, false), wantStatus: 200},
		{name: "PrivateRepositoryV02Bundle", setup: attested(private, w.githubCA, "v1", virtual.BundleOptions{TSA: w.sigstore, V02: true}, false), wantStatus: 200},
		{name: "PrivateRepositoryWithoutATimestamp", setup: attested(private, w.githubCA, "v1", virtual.BundleOptions{}, false), wantStatus: 403, wantInMsg: []string{
			"no RFC 3161 timestamp: the signature carries no RFC 3161 timestamp, and one is required (requireTimestamp)",
		}},
		{name: "PublicRepositoryWhereAPrivateOneIsWanted", setup: attested(releaseRun, w.githubCA, "v1", virtual.BundleOptions{TSA: w.sigstore}, false), wantStatus: 403, wantInMsg: []string{
			`sourceRepositoryVisibilityAtSigning is "public", want matching ^(private|internal)$ (certificate.sourceRepositoryVisibilityAtSigningRegexp)`,
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var opts []envOption
			if tt.noReferrersAPI {
				opts = append(opts, withoutReferrersAPI())
			}
			e := w.env(t, opts...)
			repo, ref := tt.setup(e)
			resp := e.get(http.MethodGet, "/v2/lab/"+repo+"/manifests/"+ref)
			if tt.wantStatus != http.StatusOK {
				msg := expectError(t, resp, tt.wantStatus, "DENIED")
				for _, want := range tt.wantInMsg {
					if !strings.Contains(msg, want) {
						t.Errorf("message %q\ndoes not contain %q", msg, want)
					}
				}
				if strings.Contains(msg, "%!") {
					t.Errorf("message carries a formatting artefact: %q", msg)
				}
				return
			}
			if resp.StatusCode != http.StatusOK {
				body := expectError(t, resp, http.StatusForbidden, "DENIED")
				t.Fatalf("status %d: %s", resp.StatusCode, body)
			}
		})
	}
}
