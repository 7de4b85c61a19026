package testkit

import (
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/authz-proxy/authz-proxy/internal/sign"
)

// TUFRepo is a TUF repository made in the test (sign.TUFRepo: go-tuf's
// metadata API, Sigstore's layout) in a folder that an httptest server
// serves until the test ends.
type TUFRepo struct {
	t   testing.TB
	dir string
	srv *httptest.Server

	mu   sync.Mutex
	repo *sign.TUFRepo
	// served counts the requests the server answered, by path.
	served map[string]int
}

// NewTUFRepo makes a repository whose one target, trusted_root.json, is
// trustedRoot, its metadata expiring in 30 days, and serves it.
func NewTUFRepo(t testing.TB, trustedRoot []byte) *TUFRepo {
	t.Helper()
	r := &TUFRepo{t: t, dir: t.TempDir(), served: map[string]int{}}
	var err error
	if r.repo, err = sign.NewTUFRepo(r.dir, trustedRoot, time.Now().Add(30*24*time.Hour)); err != nil {
		t.Fatal(err)
	}
	files := http.FileServer(http.Dir(r.dir))
	r.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		r.mu.Lock()
		r.served[req.URL.Path]++
		r.mu.Unlock()
		files.ServeHTTP(w, req)
	}))
	t.Cleanup(r.srv.Close)
	return r
}

// URL is the repository's base URL (the mirror).
func (r *TUFRepo) URL() string { return r.srv.URL }

// Dir is the folder the repository is served from.
func (r *TUFRepo) Dir() string { return r.dir }

// Stop makes the mirror unreachable: connections are refused from now on.
func (r *TUFRepo) Stop() { r.srv.Close() }

// FirstRoot is version 1 of root.json: what a client trusts first.
func (r *TUFRepo) FirstRoot() []byte { return r.repo.FirstRoot() }

// Served is how many requests for path the server answered.
func (r *TUFRepo) Served(path string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.served[path]
}

// Versions are the current versions of root, timestamp, snapshot and
// targets.
func (r *TUFRepo) Versions() (root, timestamp, snapshot, targets int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.repo.Versions()
}

// Expires is the expiry of the metadata published from now on.
func (r *TUFRepo) Expires() time.Time {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.repo.Expires
}

// SetExpires makes the metadata published from now on expire at t.
func (r *TUFRepo) SetExpires(t time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.repo.Expires = t.UTC().Truncate(time.Second)
}

// SetTarget publishes trustedRoot as the new trusted_root.json.
func (r *TUFRepo) SetTarget(trustedRoot []byte) {
	r.do(func() error { return r.repo.SetTarget(trustedRoot) })
}

// RotateRoot publishes the next root.json version, every key new, signed
// by the old and the new root key.
func (r *TUFRepo) RotateRoot() { r.do(r.repo.RotateRoot) }

// PublishTimestamp publishes a new timestamp version that expires at
// expires (in the past: a freeze).
func (r *TUFRepo) PublishTimestamp(expires time.Time) {
	r.do(func() error { return r.repo.PublishTimestamp(expires) })
}

func (r *TUFRepo) do(f func() error) {
	r.t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := f(); err != nil {
		r.t.Fatal(err)
	}
}

// State is the files a repository serves at one time.
type State map[string][]byte

// Save is what the repository serves now.
func (r *TUFRepo) Save() State {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := State{}
	err := filepath.WalkDir(r.dir, func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(r.dir, path)
		b, err := os.ReadFile(path)
		s[rel] = b
		return err
	})
	if err != nil {
		r.t.Fatal(err)
	}
	return s
}

// Restore makes the repository serve s again, as an attacker replaying an
// older repository (a rollback) or a mirror left behind would; its files
// newer than s are removed.
func (r *TUFRepo) Restore(s State) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := os.RemoveAll(r.dir); err != nil {
		r.t.Fatal(err)
	}
	for name, b := range s {
		path := filepath.Join(r.dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			r.t.Fatal(err)
		}
		if err := os.WriteFile(path, b, 0o644); err != nil {
			r.t.Fatal(err)
		}
	}
}
