package testkit

import (
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/sigstore/sigstore/pkg/signature"
	"github.com/theupdateframework/go-tuf/v2/metadata"
)

// TUFRepo is a TUF repository made in the test with go-tuf's metadata
// API, laid out as Sigstore's (consistent snapshots: N.root.json,
// timestamp.json, N.snapshot.json, N.targets.json and
// targets/<sha256>.trusted_root.json) in a folder that an httptest server
// serves. Each role has an Ed25519 key of its own, threshold 1.
type TUFRepo struct {
	t   testing.TB
	dir string
	srv *httptest.Server

	mu        sync.Mutex
	keys      map[string]ed25519.PrivateKey
	root      *metadata.Metadata[metadata.RootType]
	targets   *metadata.Metadata[metadata.TargetsType]
	snapshot  *metadata.Metadata[metadata.SnapshotType]
	timestamp *metadata.Metadata[metadata.TimestampType]
	target    []byte
	firstRoot []byte
	// Expires is the expiry that the metadata published from now on
	// gets; default 30 days from the repository's making.
	Expires time.Time
	// served counts the requests the server answered, by path.
	served map[string]int
}

// NewTUFRepo makes a repository whose one target, trusted_root.json, is
// trustedRoot, and serves it until the test ends.
func NewTUFRepo(t testing.TB, trustedRoot []byte) *TUFRepo {
	t.Helper()
	r := &TUFRepo{t: t, dir: t.TempDir(), keys: map[string]ed25519.PrivateKey{}, Expires: time.Now().Add(30 * 24 * time.Hour).UTC().Truncate(time.Second), served: map[string]int{}}
	r.root = metadata.Root(r.Expires)
	for _, role := range []string{metadata.ROOT, metadata.TIMESTAMP, metadata.SNAPSHOT, metadata.TARGETS} {
		r.newKey(role)
	}
	r.targets = metadata.Targets(r.Expires)
	r.snapshot = metadata.Snapshot(r.Expires)
	r.timestamp = metadata.Timestamp(r.Expires)
	r.target = trustedRoot
	r.writeRoot(r.keys[metadata.ROOT])
	r.firstRoot = r.read("1.root.json")
	r.publishTargets()
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
func (r *TUFRepo) FirstRoot() []byte { return r.firstRoot }

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
	return r.root.Signed.Version, r.timestamp.Signed.Version, r.snapshot.Signed.Version, r.targets.Signed.Version
}

// SetTarget publishes trustedRoot as the new trusted_root.json: new
// targets, snapshot and timestamp versions.
func (r *TUFRepo) SetTarget(trustedRoot []byte) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.target = trustedRoot
	r.targets.Signed.Version++
	r.snapshot.Signed.Version++
	r.timestamp.Signed.Version++
	r.publishTargets()
}

// RotateRoot publishes the next root.json version, in which every role
// has a new key: signed by the old root key and the new one, as the TUF
// specification asks; the other roles are re-signed with their new keys
// under new versions.
func (r *TUFRepo) RotateRoot() {
	r.mu.Lock()
	defer r.mu.Unlock()
	old := r.keys[metadata.ROOT]
	for _, role := range []string{metadata.ROOT, metadata.TIMESTAMP, metadata.SNAPSHOT, metadata.TARGETS} {
		for _, id := range slices.Clone(r.root.Signed.Roles[role].KeyIDs) {
			if err := r.root.Signed.RevokeKey(id, role); err != nil {
				r.t.Fatal(err)
			}
		}
		r.newKey(role)
	}
	r.root.Signed.Version++
	r.root.Signed.Expires = r.Expires
	r.writeRoot(old, r.keys[metadata.ROOT])
	r.targets.Signed.Version++
	r.snapshot.Signed.Version++
	r.timestamp.Signed.Version++
	r.publishTargets()
}

// PublishTimestamp publishes a new timestamp version that expires at
// expires (in the past: a freeze).
func (r *TUFRepo) PublishTimestamp(expires time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.timestamp.Signed.Version++
	r.timestamp.Signed.Expires = expires.UTC().Truncate(time.Second)
	r.writeTimestamp()
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
		r.writeFile(name, b)
	}
}

func (r *TUFRepo) newKey(role string) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		r.t.Fatal(err)
	}
	k, err := metadata.KeyFromPublicKey(pub)
	if err != nil {
		r.t.Fatal(err)
	}
	if err := r.root.Signed.AddKey(k, role); err != nil {
		r.t.Fatal(err)
	}
	r.keys[role] = priv
}

func (r *TUFRepo) signer(k ed25519.PrivateKey) signature.Signer {
	s, err := signature.LoadSigner(k, crypto.Hash(0))
	if err != nil {
		r.t.Fatal(err)
	}
	return s
}

// writeRoot signs the root with keys and writes N.root.json.
func (r *TUFRepo) writeRoot(keys ...ed25519.PrivateKey) {
	r.root.ClearSignatures()
	for _, k := range keys {
		if _, err := r.root.Sign(r.signer(k)); err != nil {
			r.t.Fatal(err)
		}
	}
	b, err := r.root.ToBytes(true)
	if err != nil {
		r.t.Fatal(err)
	}
	r.writeFile(fmt.Sprintf("%d.root.json", r.root.Signed.Version), b)
}

// publishTargets writes the target, targets, snapshot and timestamp of
// the current versions.
func (r *TUFRepo) publishTargets() {
	sum := sha256.Sum256(r.target)
	r.writeFile(fmt.Sprintf("targets/%s.trusted_root.json", hex.EncodeToString(sum[:])), r.target)
	tf, err := metadata.TargetFile().FromBytes("trusted_root.json", r.target, "sha256")
	if err != nil {
		r.t.Fatal(err)
	}
	r.targets.Signed.Targets = map[string]*metadata.TargetFiles{"trusted_root.json": tf}
	r.targets.Signed.Expires = r.Expires
	r.sign(r.targets, metadata.TARGETS, fmt.Sprintf("%d.targets.json", r.targets.Signed.Version))
	r.snapshot.Signed.Meta["targets.json"] = metadata.MetaFile(r.targets.Signed.Version)
	r.snapshot.Signed.Expires = r.Expires
	r.sign(r.snapshot, metadata.SNAPSHOT, fmt.Sprintf("%d.snapshot.json", r.snapshot.Signed.Version))
	r.timestamp.Signed.Expires = r.Expires
	r.writeTimestamp()
}

func (r *TUFRepo) writeTimestamp() {
	r.timestamp.Signed.Meta["snapshot.json"] = metadata.MetaFile(r.snapshot.Signed.Version)
	r.sign(r.timestamp, metadata.TIMESTAMP, "timestamp.json")
}

// sign signs md with role's key and writes it as name.
func (r *TUFRepo) sign(md interface {
	ClearSignatures()
	Sign(signature.Signer) (*metadata.Signature, error)
	ToBytes(bool) ([]byte, error)
}, role, name string) {
	md.ClearSignatures()
	if _, err := md.Sign(r.signer(r.keys[role])); err != nil {
		r.t.Fatal(err)
	}
	b, err := md.ToBytes(true)
	if err != nil {
		r.t.Fatal(err)
	}
	r.writeFile(name, b)
}

func (r *TUFRepo) writeFile(name string, b []byte) {
	path := filepath.Join(r.dir, filepath.FromSlash(name))
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		r.t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		r.t.Fatal(err)
	}
}

func (r *TUFRepo) read(name string) []byte {
	b, err := os.ReadFile(filepath.Join(r.dir, name))
	if err != nil {
		r.t.Fatal(err)
	}
	return b
}
