package trust_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	sgtuf "github.com/sigstore/sigstore-go/pkg/tuf"

	"github.com/authz-proxy/authz-proxy/internal/config"
	"github.com/authz-proxy/authz-proxy/internal/sign/virtual"
	"github.com/authz-proxy/authz-proxy/internal/testkit"
	"github.com/authz-proxy/authz-proxy/internal/trust"
)

// trustedRoot is a trusted_root.json listing a new test CA named name.
func trustedRoot(t *testing.T, name string) []byte {
	t.Helper()
	now := time.Now()
	ca, err := virtual.NewCA(name, now.Add(-time.Hour), now.Add(365*24*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	b, err := virtual.TrustedRoot(virtual.Parts{Authorities: []*virtual.CA{ca}})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// spec is the trust root named lab served by repo, cached in cache ("" for
// none).
func spec(repo *testkit.TUFRepo, cache string) trust.Spec {
	return trust.Spec{Name: "lab", Where: "config.yaml:3: trustRoots[0]", TUF: &trust.TUF{
		Mirror: repo.URL(), Root: repo.FirstRoot(), RootSource: "root.json", Refresh: time.Hour, Cache: cache,
	}}
}

// load loads specs with a new manager (options o) that the test closes.
func load(t *testing.T, o trust.Options, specs ...trust.Spec) (*trust.Manager, *trust.Set) {
	t.Helper()
	m := trust.New(o)
	t.Cleanup(m.Close)
	s, err := m.Load(context.Background(), specs)
	if err != nil {
		t.Fatalf("loading the trust roots: %v", err)
	}
	return m, s
}

func digestOf(t *testing.T, s *trust.Set, now time.Time) string {
	t.Helper()
	return s.Roots(now)["lab"].Origin().Digest
}

func TestTUFRootFollowsTheRepository(t *testing.T) {
	first, second := trustedRoot(t, "first CA"), trustedRoot(t, "second CA")
	for _, tt := range []struct {
		name string
		// change is what the repository publishes after the proxy
		// started.
		change          func(r *testkit.TUFRepo)
		wantRootVersion int64
	}{
		{"a new trusted_root.json", func(r *testkit.TUFRepo) { r.SetTarget(second) }, 1},
		{"a root rotation (every key new, signed by old and new root keys) with a new trusted_root.json", func(r *testkit.TUFRepo) {
			r.RotateRoot()
			r.SetTarget(second)
		}, 2},
		{"two root rotations at once", func(r *testkit.TUFRepo) {
			r.RotateRoot()
			r.RotateRoot()
			r.SetTarget(second)
		}, 3},
	} {
		t.Run(tt.name, func(t *testing.T) {
			repo := testkit.NewTUFRepo(t, first)
			var changes atomic.Int32
			m, s := load(t, trust.Options{OnChange: func() { changes.Add(1) }}, spec(repo, ""))
			m.Use(s)
			before := digestOf(t, s, time.Now())
			tt.change(repo)
			if err := m.Refresh(context.Background()); err != nil {
				t.Fatalf("refresh: %v", err)
			}
			st := s.Status(time.Now())[0]
			_, _, _, targets := repo.Versions()
			if st.RootVersion != tt.wantRootVersion || st.TargetsVersion != targets || st.Digest == before || st.Digest != digestOf(t, s, time.Now()) {
				t.Errorf("after the refresh: root v%d, targets v%d, digest %s (was %s); want root v%d, targets v%d, a new digest", st.RootVersion, st.TargetsVersion, st.Digest, before, tt.wantRootVersion, targets)
			}
			if got := s.Roots(time.Now())["lab"].Origin(); got.Name != "lab" || got.Version != targets {
				t.Errorf("the root in force is named %q version %d, want lab version %d", got.Name, got.Version, targets)
			}
			if changes.Load() != 1 {
				t.Errorf("OnChange was called %d times, want once", changes.Load())
			}
		})
	}
}

func TestTUFRefreshRefusesWhatTheClientWorkflowRefuses(t *testing.T) {
	first, second := trustedRoot(t, "first CA"), trustedRoot(t, "second CA")
	for _, tt := range []struct {
		name string
		// attack turns the repository, already trusted at second, into
		// what the refresh must refuse.
		attack  func(r *testkit.TUFRepo, older testkit.State)
		wantErr string
	}{
		{"rollback: an older snapshot and timestamp replayed", func(r *testkit.TUFRepo, older testkit.State) { r.Restore(older) }, "rollback"},
		{"freeze: a new timestamp that has expired", func(r *testkit.TUFRepo, _ testkit.State) { r.PublishTimestamp(time.Now().Add(-time.Minute)) }, "timestamp.json is expired"},
		{"a new trusted_root.json that is not the one targets names", func(r *testkit.TUFRepo, _ testkit.State) {
			third := trustedRoot(t, "third CA")
			r.SetTarget(third)
			for name, b := range r.Save() {
				if string(b) == string(third) {
					// Of the same length, one byte changed.
					if err := os.WriteFile(filepath.Join(r.Dir(), name), []byte(strings.Replace(string(b), "third", "fifth", 1)), 0o644); err != nil {
						t.Fatal(err)
					}
				}
			}
		}, "hash"},
		{"the mirror down", func(r *testkit.TUFRepo, _ testkit.State) { r.Stop() }, "connection refused"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			repo := testkit.NewTUFRepo(t, first)
			older := repo.Save()
			repo.SetTarget(second)
			var changes atomic.Int32
			m, s := load(t, trust.Options{OnChange: func() { changes.Add(1) }}, spec(repo, ""))
			m.Use(s)
			trusted := s.Status(time.Now())[0]
			tt.attack(repo, older)
			err := m.Refresh(context.Background())
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("refresh: %v, want an error with %q", err, tt.wantErr)
			}
			st := s.Status(time.Now())[0]
			if st.Digest != trusted.Digest || st.TargetsVersion != trusted.TargetsVersion {
				t.Errorf("the root in force moved to v%d %s, want v%d %s kept", st.TargetsVersion, st.Digest, trusted.TargetsVersion, trusted.Digest)
			}
			if st.Failures != 1 || st.FailedRefreshes != 1 || !strings.Contains(st.LastError, tt.wantErr) || st.FailingSince.IsZero() {
				t.Errorf("status after the failure: failures %d (total %d), since %v, last error %q", st.Failures, st.FailedRefreshes, st.FailingSince, st.LastError)
			}
			if changes.Load() != 0 {
				t.Errorf("OnChange was called %d times for a refused refresh", changes.Load())
			}
		})
	}
}

func TestExpiredMetadataVerifiesNothingAndIsAlarmedBefore(t *testing.T) {
	repo := testkit.NewTUFRepo(t, trustedRoot(t, "CA"))
	expires := time.Now().Add(10 * 24 * time.Hour).UTC().Truncate(time.Second)
	repo.SetExpires(expires)
	repo.PublishTimestamp(expires)
	m, s := load(t, trust.Options{}, spec(repo, ""))
	m.Use(s)
	now := time.Now()
	st := s.Status(now)[0]
	if st.ExpiresRole != "timestamp.json" || !st.Expires.Equal(expires) || st.Expiring != "" || st.Withdrawn != "" {
		t.Fatalf("fresh: expires %v (%s), expiring %q, withdrawn %q; want the timestamp's %v, nothing expiring", st.Expires, st.ExpiresRole, st.Expiring, st.Withdrawn, expires)
	}
	// The mirror freezes: what it serves has expired, nothing renews
	// the metadata in force.
	repo.PublishTimestamp(now.Add(-time.Minute))
	if err := m.Refresh(context.Background()); err == nil {
		t.Fatal("a frozen repository was accepted")
	}
	for _, tt := range []struct {
		name          string
		at            time.Time
		wantExpiring  string
		wantWithdrawn string
	}{
		{"eight days before the expiry", expires.Add(-8 * 24 * time.Hour), "", ""},
		{"six days before, the refresh failing", expires.Add(-6 * 24 * time.Hour), "its TUF metadata (timestamp.json) expires at", ""},
		{"past the expiry", expires.Add(time.Second), "", "trust root lab: its TUF metadata (timestamp.json, version 1) expired at " + expires.Format(time.RFC3339)},
	} {
		t.Run(tt.name, func(t *testing.T) {
			st := s.Status(tt.at)[0]
			if !strings.Contains(st.Expiring, tt.wantExpiring) || (tt.wantExpiring == "") != (st.Expiring == "") {
				t.Errorf("expiring %q, want %q", st.Expiring, tt.wantExpiring)
			}
			r := s.Roots(tt.at)["lab"]
			if !strings.Contains(st.Withdrawn, tt.wantWithdrawn) || (tt.wantWithdrawn == "") != (r.Withdrawal() == "") {
				t.Errorf("withdrawn %q (the root's: %q), want %q", st.Withdrawn, r.Withdrawal(), tt.wantWithdrawn)
			}
			if tt.wantWithdrawn != "" && !strings.Contains(r.Withdrawal(), "refreshing from "+repo.URL()+" fails since") {
				t.Errorf("the withdrawal does not say the refresh fails: %q", r.Withdrawal())
			}
		})
	}
}

func TestStartWithTheMirrorDown(t *testing.T) {
	for _, tt := range []struct {
		name string
		// cache says whether a proxy ran with a cache before; tamper
		// changes it before the start.
		cache   bool
		tamper  func(dir string)
		wantErr []string
		wantMsg string
	}{
		{name: "with a cache: starts from it", cache: true, wantMsg: "starting from the cache"},
		{name: "without a cache: a clear error", wantErr: []string{"config.yaml:3: trustRoots[0] (lab): cannot start: the mirror", "connection refused", "no cache", "authz-proxy trust fetch --root lab --out DIR"}},
		{name: "with a cache altered: refused, it is verified from the root", cache: true, tamper: func(dir string) {
			b, err := os.ReadFile(filepath.Join(dir, "timestamp.json"))
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dir, "timestamp.json"), []byte(strings.Replace(string(b), `"version": 1`, `"version": 7`, 1)), 0o644); err != nil {
				t.Fatal(err)
			}
		}, wantErr: []string{"cannot be used", "timestamp"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			repo := testkit.NewTUFRepo(t, trustedRoot(t, "CA"))
			cache := filepath.Join(t.TempDir(), "tuf")
			sp := spec(repo, cache)
			if tt.cache {
				_, s := load(t, trust.Options{}, sp)
				if got := s.Status(time.Now())[0].Source; got != repo.URL() {
					t.Fatalf("first start read from %q, want the mirror", got)
				}
			} else {
				sp.TUF.Cache = ""
			}
			if tt.tamper != nil {
				tt.tamper(cache)
			}
			repo.Stop()
			m := trust.New(trust.Options{})
			defer m.Close()
			s, err := m.Load(context.Background(), []trust.Spec{sp})
			if len(tt.wantErr) > 0 {
				if err == nil {
					t.Fatal("started")
				}
				for _, want := range tt.wantErr {
					if !strings.Contains(err.Error(), want) {
						t.Errorf("error %q, want it to contain %q", err, want)
					}
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			st := s.Status(time.Now())[0]
			if st.Source != "cache "+cache || st.Failures != 1 || len(s.Warnings) != 1 || !strings.Contains(s.Warnings[0], tt.wantMsg) {
				t.Errorf("started from %q with %d failure(s) and warnings %q", st.Source, st.Failures, s.Warnings)
			}
		})
	}
}

func TestSnapshotServesAsMirrorAndAsCacheWithoutNetwork(t *testing.T) {
	repo := testkit.NewTUFRepo(t, trustedRoot(t, "first CA"))
	repo.RotateRoot()
	repo.SetTarget(trustedRoot(t, "second CA"))
	m := trust.New(trust.Options{})
	defer m.Close()
	dir := filepath.Join(t.TempDir(), "snapshot")
	wrote, err := m.Fetch(context.Background(), spec(repo, ""), dir)
	if err != nil {
		t.Fatal(err)
	}
	_, _, _, targets := repo.Versions()
	if wrote.TargetsVersion != targets || wrote.RootVersion != 2 {
		t.Fatalf("fetched targets v%d root v%d, want v%d and 2", wrote.TargetsVersion, wrote.RootVersion, targets)
	}
	repo.Stop()
	asMirror := spec(repo, "")
	asMirror.TUF.Mirror = trust.FileURL(dir)
	asCache := spec(repo, dir)
	for name, sp := range map[string]trust.Spec{"as the mirror (file://)": asMirror, "as the cache, the mirror down": asCache} {
		t.Run(name, func(t *testing.T) {
			// Verified from root version 1, through the chain.
			_, s := load(t, trust.Options{}, sp)
			st := s.Status(time.Now())[0]
			if st.Digest != wrote.Digest || st.RootVersion != 2 {
				t.Errorf("loaded %s (root v%d), want %s (root v2)", st.Digest, st.RootVersion, wrote.Digest)
			}
		})
	}
}

func TestOfflineLoadReadsOnlyTheCache(t *testing.T) {
	repo := testkit.NewTUFRepo(t, trustedRoot(t, "CA"))
	cache := filepath.Join(t.TempDir(), "tuf")
	_, s := load(t, trust.Options{Offline: true}, spec(repo, cache))
	st := s.Status(time.Now())[0]
	if st.Pending == "" || len(s.Warnings) != 1 || !strings.Contains(s.Warnings[0], "not fetched offline") || repo.Served("/timestamp.json") != 0 {
		t.Fatalf("offline without a cache: pending %q, warnings %q, timestamp.json asked %d times", st.Pending, s.Warnings, repo.Served("/timestamp.json"))
	}
	if r := s.Roots(time.Now())["lab"]; r.Withdrawal() == "" {
		t.Error("a pending root verifies")
	}
	load(t, trust.Options{}, spec(repo, cache))
	asked := repo.Served("/timestamp.json")
	_, s = load(t, trust.Options{Offline: true}, spec(repo, cache))
	if st := s.Status(time.Now())[0]; st.Pending != "" || st.Source != "cache "+cache || repo.Served("/timestamp.json") != asked {
		t.Errorf("offline with a cache: pending %q, source %q, the mirror asked again: %v", st.Pending, st.Source, repo.Served("/timestamp.json") != asked)
	}
}

func TestFileRootsLoadAndAKeptSpecKeepsItsState(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "trusted_root.json")
	testkit.WriteFile(t, file, string(trustedRoot(t, "CA")))
	repo := testkit.NewTUFRepo(t, trustedRoot(t, "TUF CA"))
	fileSpec := trust.Spec{Name: "file", Where: "config.yaml:9: trustRoots[1]", File: file}
	m, s := load(t, trust.Options{}, spec(repo, ""), fileSpec)
	m.Use(s)
	if sts := s.Status(time.Now()); len(sts) != 2 || sts[0].Name != "lab" || sts[1].Name != "file" {
		t.Fatalf("roots %+v", sts)
	}
	if st := s.Status(time.Now())[1]; st.Kind != "file" || st.Source != file || st.Summary.CertificateAuthorities != 1 {
		t.Errorf("the file root: %+v", st)
	}
	asked := repo.Served("/timestamp.json")
	again, err := m.Load(context.Background(), []trust.Spec{spec(repo, "")})
	if err != nil {
		t.Fatal(err)
	}
	if repo.Served("/timestamp.json") != asked || digestOf(t, again, time.Now()) != digestOf(t, s, time.Now()) {
		t.Error("a reload with the same TUF root fetched it again")
	}
	if _, err := m.Load(context.Background(), []trust.Spec{{Name: "bad", Where: "config.yaml:12: trustRoots[2]", File: filepath.Join(dir, "missing.json")}}); err == nil || !strings.Contains(err.Error(), "config.yaml:12: trustRoots[2] (bad): open") {
		t.Errorf("a missing file: %v", err)
	}
}

func TestPublicGoodDefaultsAreSigstoreGos(t *testing.T) {
	if config.DefaultTUFMirror != sgtuf.DefaultMirror {
		t.Errorf("config's default mirror %s, sigstore-go's %s", config.DefaultTUFMirror, sgtuf.DefaultMirror)
	}
}
