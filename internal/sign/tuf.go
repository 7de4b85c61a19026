package sign

import (
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/sigstore/sigstore/pkg/signature"
	"github.com/theupdateframework/go-tuf/v2/metadata"
)

// TUFRepo writes a TUF repository with go-tuf's metadata API, laid out as
// Sigstore's (consistent snapshots: N.root.json, timestamp.json,
// N.snapshot.json, N.targets.json and targets/<sha256>.trusted_root.json)
// in a folder that a file server or a file:// mirror serves. Each role has
// an Ed25519 key of its own, threshold 1. For tests and the benchmark;
// not safe for concurrent use.
type TUFRepo struct {
	dir       string
	keys      map[string]ed25519.PrivateKey
	root      *metadata.Metadata[metadata.RootType]
	targets   *metadata.Metadata[metadata.TargetsType]
	snapshot  *metadata.Metadata[metadata.SnapshotType]
	timestamp *metadata.Metadata[metadata.TimestampType]
	target    []byte
	firstRoot []byte
	// Expires is the expiry that the metadata published from now on
	// gets.
	Expires time.Time
}

// NewTUFRepo writes in dir a repository whose one target,
// trusted_root.json, is trustedRoot, its metadata expiring at expires.
func NewTUFRepo(dir string, trustedRoot []byte, expires time.Time) (*TUFRepo, error) {
	r := &TUFRepo{dir: dir, keys: map[string]ed25519.PrivateKey{}, Expires: expires.UTC().Truncate(time.Second), target: trustedRoot}
	r.root = metadata.Root(r.Expires)
	for _, role := range []string{metadata.ROOT, metadata.TIMESTAMP, metadata.SNAPSHOT, metadata.TARGETS} {
		if err := r.newKey(role); err != nil {
			return nil, err
		}
	}
	r.targets = metadata.Targets(r.Expires)
	r.snapshot = metadata.Snapshot(r.Expires)
	r.timestamp = metadata.Timestamp(r.Expires)
	if err := r.writeRoot(r.keys[metadata.ROOT]); err != nil {
		return nil, err
	}
	var err error
	if r.firstRoot, err = os.ReadFile(filepath.Join(dir, "1.root.json")); err != nil {
		return nil, err
	}
	return r, r.publishTargets()
}

// FirstRoot is version 1 of root.json: what a client trusts first.
func (r *TUFRepo) FirstRoot() []byte { return r.firstRoot }

// Versions are the current versions of root, timestamp, snapshot and
// targets.
func (r *TUFRepo) Versions() (root, timestamp, snapshot, targets int64) {
	return r.root.Signed.Version, r.timestamp.Signed.Version, r.snapshot.Signed.Version, r.targets.Signed.Version
}

// SetTarget publishes trustedRoot as the new trusted_root.json: new
// targets, snapshot and timestamp versions.
func (r *TUFRepo) SetTarget(trustedRoot []byte) error {
	r.target = trustedRoot
	r.targets.Signed.Version++
	r.snapshot.Signed.Version++
	r.timestamp.Signed.Version++
	return r.publishTargets()
}

// RotateRoot publishes the next root.json version, in which every role
// has a new key: signed by the old root key and the new one, as the TUF
// specification asks; the other roles are re-signed with their new keys
// under new versions.
func (r *TUFRepo) RotateRoot() error {
	old := r.keys[metadata.ROOT]
	for _, role := range []string{metadata.ROOT, metadata.TIMESTAMP, metadata.SNAPSHOT, metadata.TARGETS} {
		for _, id := range slices.Clone(r.root.Signed.Roles[role].KeyIDs) {
			if err := r.root.Signed.RevokeKey(id, role); err != nil {
				return err
			}
		}
		if err := r.newKey(role); err != nil {
			return err
		}
	}
	r.root.Signed.Version++
	r.root.Signed.Expires = r.Expires
	if err := r.writeRoot(old, r.keys[metadata.ROOT]); err != nil {
		return err
	}
	r.targets.Signed.Version++
	r.snapshot.Signed.Version++
	r.timestamp.Signed.Version++
	return r.publishTargets()
}

// PublishTimestamp publishes a new timestamp version that expires at
// expires (in the past: a freeze).
func (r *TUFRepo) PublishTimestamp(expires time.Time) error {
	r.timestamp.Signed.Version++
	r.timestamp.Signed.Expires = expires.UTC().Truncate(time.Second)
	return r.writeTimestamp()
}

func (r *TUFRepo) newKey(role string) error {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return err
	}
	k, err := metadata.KeyFromPublicKey(pub)
	if err != nil {
		return err
	}
	if err := r.root.Signed.AddKey(k, role); err != nil {
		return err
	}
	r.keys[role] = priv
	return nil
}

// writeRoot signs the root with keys and writes N.root.json.
func (r *TUFRepo) writeRoot(keys ...ed25519.PrivateKey) error {
	r.root.ClearSignatures()
	for _, k := range keys {
		s, err := signature.LoadSigner(k, crypto.Hash(0))
		if err != nil {
			return err
		}
		if _, err := r.root.Sign(s); err != nil {
			return err
		}
	}
	b, err := r.root.ToBytes(true)
	if err != nil {
		return err
	}
	return r.writeFile(fmt.Sprintf("%d.root.json", r.root.Signed.Version), b)
}

// publishTargets writes the target, targets, snapshot and timestamp of
// the current versions.
func (r *TUFRepo) publishTargets() error {
	sum := sha256.Sum256(r.target)
	if err := r.writeFile(fmt.Sprintf("targets/%s.trusted_root.json", hex.EncodeToString(sum[:])), r.target); err != nil {
		return err
	}
	tf, err := metadata.TargetFile().FromBytes("trusted_root.json", r.target, "sha256")
	if err != nil {
		return err
	}
	r.targets.Signed.Targets = map[string]*metadata.TargetFiles{"trusted_root.json": tf}
	r.targets.Signed.Expires = r.Expires
	if err := r.sign(r.targets, metadata.TARGETS, fmt.Sprintf("%d.targets.json", r.targets.Signed.Version)); err != nil {
		return err
	}
	r.snapshot.Signed.Meta["targets.json"] = metadata.MetaFile(r.targets.Signed.Version)
	r.snapshot.Signed.Expires = r.Expires
	if err := r.sign(r.snapshot, metadata.SNAPSHOT, fmt.Sprintf("%d.snapshot.json", r.snapshot.Signed.Version)); err != nil {
		return err
	}
	r.timestamp.Signed.Expires = r.Expires
	return r.writeTimestamp()
}

func (r *TUFRepo) writeTimestamp() error {
	r.timestamp.Signed.Meta["snapshot.json"] = metadata.MetaFile(r.snapshot.Signed.Version)
	return r.sign(r.timestamp, metadata.TIMESTAMP, "timestamp.json")
}

// sign signs md with role's key and writes it as name.
func (r *TUFRepo) sign(md interface {
	ClearSignatures()
	Sign(signature.Signer) (*metadata.Signature, error)
	ToBytes(bool) ([]byte, error)
}, role, name string) error {
	md.ClearSignatures()
	s, err := signature.LoadSigner(r.keys[role], crypto.Hash(0))
	if err != nil {
		return err
	}
	if _, err := md.Sign(s); err != nil {
		return err
	}
	b, err := md.ToBytes(true)
	if err != nil {
		return err
	}
	return r.writeFile(name, b)
}

func (r *TUFRepo) writeFile(name string, b []byte) error {
	path := filepath.Join(r.dir, filepath.FromSlash(name))
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	return os.WriteFile(path, b, 0o644)
}
