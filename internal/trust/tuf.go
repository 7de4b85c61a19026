package trust

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/google/renameio/v2"
	"github.com/theupdateframework/go-tuf/v2/metadata"
	tufconfig "github.com/theupdateframework/go-tuf/v2/metadata/config"
	"github.com/theupdateframework/go-tuf/v2/metadata/updater"
)

// targetName is the TUF target that holds the Sigstore trusted root.
const targetName = "trusted_root.json"

// snapshot is verified TUF metadata and the trusted_root.json it
// delivered, as the bytes the repository served: what a refresh starts
// from (its rollback protection), what the cache and `trust fetch` write,
// and what a start reads back and verifies again.
type snapshot struct {
	// roots are every root.json version known, by version: the one the
	// client started from and each one after it, each verified by the
	// one before.
	roots                        map[int64][]byte
	timestamp, snapshot, targets []byte
	target                       []byte

	root      *metadata.Metadata[metadata.RootType]
	ts        *metadata.Metadata[metadata.TimestampType]
	sn        *metadata.Metadata[metadata.SnapshotType]
	tg        *metadata.Metadata[metadata.TargetsType]
	targetRef *metadata.TargetFiles
}

// newestRoot is the bytes of the newest root.json known.
func (s *snapshot) newestRoot() []byte {
	return s.roots[s.root.Signed.Version]
}

// expires is when the first of s's metadata expires, and which.
func (s *snapshot) expires() (time.Time, string) {
	at, role := s.root.Signed.Expires, "root.json"
	for _, e := range []struct {
		role string
		at   time.Time
	}{{"timestamp.json", s.ts.Signed.Expires}, {"snapshot.json", s.sn.Signed.Expires}, {"targets.json", s.tg.Signed.Expires}} {
		if e.at.Before(at) {
			at, role = e.at, e.role
		}
	}
	return at, role
}

// update runs the TUF client workflow (go-tuf's Updater) against the
// repository at mirror: the root.json chain from the newest root of prev
// (anchor when prev is nil), then timestamp, snapshot and targets, with
// go-tuf's checks of signatures, thresholds, versions (rollback: nothing
// older than prev), expiry (freeze) and lengths and hashes, and consistent
// snapshots; then the target trusted_root.json, checked against targets.
// Nothing of prev is changed.
func update(ctx context.Context, f *fetcher, mirror string, anchor []byte, prev *snapshot) (*snapshot, error) {
	dir, err := os.MkdirTemp("", "authz-proxy-tuf-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	trusted := anchor
	roots := map[int64][]byte{}
	if prev != nil {
		trusted = prev.newestRoot()
		maps.Copy(roots, prev.roots)
		// The metadata verified last: go-tuf reads it as its local copy,
		// refusing a repository that serves older versions.
		for name, b := range map[string][]byte{"timestamp.json": prev.timestamp, "snapshot.json": prev.snapshot, "targets.json": prev.targets} {
			if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
				return nil, err
			}
		}
	} else {
		first, err := metadata.Root().FromBytes(anchor)
		if err != nil {
			return nil, fmt.Errorf("the root.json trusted first: %w", err)
		}
		roots[first.Signed.Version] = anchor
	}
	cfg, err := tufconfig.New(mirror, trusted)
	if err != nil {
		return nil, err
	}
	cfg.LocalMetadataDir = dir
	cfg.LocalTargetsDir = filepath.Join(dir, "targets")
	rec := &recorder{ctx: ctx, f: f, roots: map[int64][]byte{}}
	cfg.Fetcher = rec
	up, err := updater.New(cfg)
	if err != nil {
		return nil, fmt.Errorf("the root.json trusted first: %w", err)
	}
	if err := up.Refresh(); err != nil {
		return nil, err
	}
	ti, err := up.GetTargetInfo(targetName)
	if err != nil {
		return nil, err
	}
	var target []byte
	if prev != nil && ti.VerifyLengthHashes(prev.target) == nil {
		target = prev.target
	} else if _, target, err = up.DownloadTarget(ti, "", ""); err != nil {
		return nil, err
	}
	// The refresh succeeded: every root.json it downloaded was verified.
	maps.Copy(roots, rec.newRoots())
	s := &snapshot{roots: roots, target: target, targetRef: ti}
	for name, dst := range map[string]*[]byte{"timestamp.json": &s.timestamp, "snapshot.json": &s.snapshot, "targets.json": &s.targets} {
		// What go-tuf kept: the copy it verified and persisted, or the
		// local one a newer repository did not replace.
		if *dst, err = os.ReadFile(filepath.Join(dir, name)); err != nil {
			return nil, err
		}
	}
	set := up.GetTrustedMetadataSet()
	s.root, s.ts, s.sn, s.tg = set.Root, set.Timestamp, set.Snapshot, set.Targets[metadata.TARGETS]
	if s.roots[s.root.Signed.Version] == nil {
		return nil, fmt.Errorf("root.json version %d was trusted but not kept", s.root.Signed.Version)
	}
	return s, nil
}

// write lays s out in dir as a TUF repository that serves it (consistent
// snapshot names when the root asks for them): every root.json version,
// timestamp.json, snapshot, targets and trusted_root.json. Each file is
// replaced atomically and timestamp.json last, so that a reader meets the
// old state or the new one; files of older states are removed after.
func (s *snapshot) write(dir string) error {
	if err := os.MkdirAll(filepath.Join(dir, "targets"), 0o755); err != nil {
		return err
	}
	consistent := s.root.Signed.ConsistentSnapshot
	keep := map[string]bool{}
	put := func(name string, b []byte) error {
		keep[name] = true
		path := filepath.Join(dir, filepath.FromSlash(name))
		if old, err := os.ReadFile(path); err == nil && string(old) == string(b) {
			return nil
		}
		return renameio.WriteFile(path, b, 0o644) // synced before it replaces the old
	}
	for _, v := range slices.Sorted(maps.Keys(s.roots)) {
		if err := put(fmt.Sprintf("%d.root.json", v), s.roots[v]); err != nil {
			return err
		}
	}
	names := []string{"targets/" + targetName}
	if consistent {
		names = nil
		for _, h := range s.targetRef.Hashes {
			names = append(names, fmt.Sprintf("targets/%x.%s", []byte(h), targetName))
		}
	}
	for _, n := range names {
		if err := put(n, s.target); err != nil {
			return err
		}
	}
	role := func(name string, version int64) string {
		if consistent {
			return fmt.Sprintf("%d.%s", version, name)
		}
		return name
	}
	for _, f := range []struct {
		name string
		b    []byte
	}{
		{role("targets.json", s.tg.Signed.Version), s.targets},
		{role("snapshot.json", s.sn.Signed.Version), s.snapshot},
		{"timestamp.json", s.timestamp},
	} {
		if err := put(f.name, f.b); err != nil {
			return err
		}
	}
	// What an older state left: its snapshot, targets and target files.
	for _, pattern := range []string{"*.snapshot.json", "*.targets.json", "snapshot.json", "targets.json", "targets/*" + targetName} {
		matches, _ := filepath.Glob(filepath.Join(dir, pattern))
		for _, m := range matches {
			rel, _ := filepath.Rel(dir, m)
			if !keep[filepath.ToSlash(rel)] {
				os.Remove(m)
			}
		}
	}
	return nil
}

// fetcher downloads TUF metadata and targets: over HTTP(S) with a bounded
// client, or from a folder (file://) that `trust fetch` or a cache wrote.
// A file that is not there is a 404, as a repository answers for the
// next root.json version.
type fetcher struct {
	client    *http.Client
	userAgent string
}

// download reads at most maxLength bytes of rawURL.
func (f *fetcher) download(ctx context.Context, rawURL string, maxLength int64) ([]byte, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, err
	}
	if u.Scheme == "file" {
		return readFile(u, rawURL, maxLength)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, rawURL, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("User-Agent", f.userAgent)
	res, err := f.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		return nil, &metadata.ErrDownloadHTTP{StatusCode: res.StatusCode, URL: rawURL}
	}
	return readAtMost(res.Body, rawURL, maxLength)
}

func readFile(u *url.URL, rawURL string, maxLength int64) ([]byte, error) {
	path := u.Path
	if path == "" {
		path = u.Opaque
	}
	fh, err := os.Open(filepath.FromSlash(path))
	if errors.Is(err, os.ErrNotExist) {
		return nil, &metadata.ErrDownloadHTTP{StatusCode: http.StatusNotFound, URL: rawURL}
	}
	if err != nil {
		return nil, err
	}
	defer fh.Close()
	return readAtMost(fh, rawURL, maxLength)
}

func readAtMost(r io.Reader, what string, maxLength int64) ([]byte, error) {
	b, err := io.ReadAll(io.LimitReader(r, maxLength+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > maxLength {
		return nil, &metadata.ErrDownloadLengthMismatch{Msg: fmt.Sprintf("%s is longer than %d bytes", what, maxLength)}
	}
	return b, nil
}

// recorder is the fetcher of one update, as go-tuf's Fetcher: it keeps
// the root.json versions it downloaded, for the root chain kept.
type recorder struct {
	ctx context.Context
	f   *fetcher
	mu  sync.Mutex
	// roots are the root.json versions downloaded, by version.
	roots map[int64][]byte
}

var rootFile = regexp.MustCompile(`/(\d+)\.root\.json$`)

// DownloadFile implements go-tuf's fetcher.Fetcher.
func (r *recorder) DownloadFile(urlPath string, maxLength int64, _ time.Duration) ([]byte, error) {
	b, err := r.f.download(r.ctx, urlPath, maxLength)
	if err != nil {
		return nil, err
	}
	if m := rootFile.FindStringSubmatch(urlPath); m != nil {
		if v, err := strconv.ParseInt(m[1], 10, 64); err == nil {
			r.mu.Lock()
			r.roots[v] = b
			r.mu.Unlock()
		}
	}
	return b, nil
}

func (r *recorder) newRoots() map[int64][]byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.roots
}

// FileURL is the file:// URL of folder dir, as a mirror names a snapshot.
func FileURL(dir string) string {
	abs, err := filepath.Abs(dir)
	if err != nil {
		abs = dir
	}
	return (&url.URL{Scheme: "file", Path: filepath.ToSlash(abs)}).String()
}

// describe says in a few words what a failed update found wrong.
func describe(err error) string {
	msg := err.Error()
	var expired *metadata.ErrExpiredMetadata
	var version *metadata.ErrBadVersionNumber
	switch {
	case errors.As(err, &expired):
		return "expired metadata (a freeze, or a repository not re-signed in time): " + expired.Msg
	case errors.As(err, &version):
		return "a version check failed (a rollback to older metadata, or an inconsistent repository): " + version.Msg
	case strings.Contains(msg, "context deadline exceeded"):
		return "no answer in time: " + msg
	}
	return msg
}
