package policy_test

import (
	"bytes"
	"context"
	"io"
	"log"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/authz-proxy/authz-proxy/internal/oci"
	"github.com/authz-proxy/authz-proxy/internal/policy"
	"github.com/authz-proxy/authz-proxy/internal/sign"
	"github.com/authz-proxy/authz-proxy/internal/source"
	"github.com/authz-proxy/authz-proxy/internal/testkit"
	"github.com/authz-proxy/authz-proxy/internal/upstream"
)

func TestInheritedOutcomesLiveNoLongerThanTheIndexs(t *testing.T) {
	idx, _ := random.Index(64, 1, 2)
	lab := newSignedLab(t, "multi/app", "cache: {allowTTL: 10m, denyTTL: 30s}\n", idx)
	p, up, d := lab.policy, lab.up, lab.digest
	clk := testkit.NewClock(time.Now())
	j, err := policy.NewJudge(100, clk.Now)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	decide := func(ref string) policy.Decision {
		t.Helper()
		m, err := up.Manifest(ctx, "multi/app", ref)
		if err != nil {
			t.Fatal(err)
		}
		dec, err := j.Decide(ctx, p, up, policy.Subject{Upstream: "lab", Repository: "multi/app"}, m)
		if err != nil {
			t.Fatal(err)
		}
		return dec
	}
	im, _ := idx.IndexManifest()
	child := im.Manifests[0].Digest.String()
	if dec := decide(child); dec.Allowed {
		t.Fatalf("a child alone passed: %+v", dec)
	}
	clk.Advance(5 * time.Minute)
	if dec := decide(d); !dec.Allowed {
		t.Fatalf("the signed index: %+v", dec)
	}
	if dec := decide(child); !dec.Allowed || !strings.Contains(dec.Reasons[0], "listed in allowed index "+d) {
		t.Fatalf("the child after its index: %+v", dec)
	}
	// The index's outcome was verified at 5m and holds for 10m; its
	// child's inherited one ends with it, not 10m after it was passed on.
	clk.Advance(10*time.Minute - time.Second)
	if dec := decide(child); !dec.Allowed || !dec.Cached {
		t.Fatalf("the child just before the index's outcome expires: %+v", dec)
	}
	clk.Advance(2 * time.Second)
	if dec := decide(child); dec.Allowed {
		t.Fatalf("the child after the index's outcome expired: %+v", dec)
	}
}

// counting is a registry that counts its evidence look-ups, and tells of
// each on called.
type counting struct {
	policy.Registry
	evidence *atomic.Int64
	called   chan<- struct{}
}

func (c counting) Evidence(ctx context.Context, repo, digest string, want oci.Want) (*oci.Evidence, error) {
	c.evidence.Add(1)
	c.called <- struct{}{}
	return c.Registry.Evidence(ctx, repo, digest, want)
}

func TestAReadAheadIsTakenByItsVerificationOnlyWhileItIsHeld(t *testing.T) {
	for _, tt := range []struct {
		name string
		// released: the pull gave up before Decide (its manifest failed).
		released bool
		// want is the evidence look-ups of the read ahead and the
		// verification together.
		want int64
	}{
		{"held until Decide: the verification takes the read", false, 1},
		{"released unused: the verification reads again", true, 2},
	} {
		t.Run(tt.name, func(t *testing.T) {
			img, _ := random.Image(64, 1)
			lab := newSignedLab(t, "signed/app", "", img)
			p, up, d := lab.policy, lab.up, lab.digest
			var n atomic.Int64
			called := make(chan struct{}, 4)
			reg := counting{up, &n, called}
			j, err := policy.NewJudge(100, nil)
			if err != nil {
				t.Fatal(err)
			}
			ctx := context.Background()
			s := policy.Subject{Upstream: "lab", Repository: "signed/app", Digest: d}
			release := j.Prefetch(ctx, p, reg, s)
			<-called // the read ahead has started
			if tt.released {
				release()
			}
			m, err := up.Manifest(ctx, "signed/app", d)
			if err != nil {
				t.Fatal(err)
			}
			dec, err := j.Decide(ctx, p, reg, s, m)
			if err != nil {
				t.Fatal(err)
			}
			if !tt.released {
				release()
			}
			if !dec.Allowed {
				t.Errorf("not allowed: %+v", dec)
			}
			if got := n.Load(); got != tt.want {
				t.Errorf("%d evidence look-ups, want %d", got, tt.want)
			}
		})
	}
}

// signedLab is a registry with one manifest signed by ci in its .sig tag,
// the upstream client for it (as "lab") and the policy that lab/**
// needs ci's signature, with cache TTLs.
type signedLab struct {
	policy *policy.Policy
	up     *source.Source
	digest string
}

// newSignedLab pushes m (an image or an index, with its images) as
// repoName:v1 and signs it by digest.
func newSignedLab(t *testing.T, repoName, cache string, m remote.Taggable) signedLab {
	t.Helper()
	srv := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	t.Cleanup(srv.Close)
	dir := t.TempDir()
	ci := testkit.NewSigner(t, filepath.Join(dir, "ci.pub"))
	p, err := policy.Compile(testkit.LoadConfig(t, dir, "upstreams: [{name: lab, url: '"+srv.URL+"', insecure: true}]\n"+cache+`
attestors: [{name: ci, publicKeys: [{file: ci.pub}]}]
policy:
  rules: [{name: signed, images: ["lab/**"], require: [{signature: {attestors: [ci]}}]}]
`, nil))
	if err != nil {
		t.Fatal(err)
	}
	repo, _ := name.NewRepository(strings.TrimPrefix(srv.URL, "http://")+"/"+repoName, name.Insecure)
	switch m := m.(type) {
	case v1.ImageIndex:
		err = remote.WriteIndex(repo.Tag("v1"), m)
	case v1.Image:
		err = remote.Write(repo.Tag("v1"), m)
	}
	if err != nil {
		t.Fatal(err)
	}
	raw, err := m.RawManifest()
	if err != nil {
		t.Fatal(err)
	}
	d, _, _ := v1.SHA256(bytes.NewReader(raw))
	sig, err := sign.New(ci, repo, d.String())
	if err != nil {
		t.Fatal(err)
	}
	if err := sign.AttachTag(context.Background(), repo, d.String(), []sign.Signature{sig}); err != nil {
		t.Fatal(err)
	}
	c, err := upstream.New(upstream.Options{Name: "lab", URL: srv.URL, Insecure: true})
	if err != nil {
		t.Fatal(err)
	}
	up, err := source.New(source.Options{Upstream: c})
	if err != nil {
		t.Fatal(err)
	}
	return signedLab{policy: p, up: up, digest: d.String()}
}
