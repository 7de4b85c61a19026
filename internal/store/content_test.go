package store_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/authz-proxy/authz-proxy/internal/store"
)

// flush waits until the store's background writes are done.
func flush(t testing.TB, s *store.Store) {
	t.Helper()
	for deadline := time.Now().Add(time.Minute); s.Stats().WritesInFlight > 0; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("writes still running after a minute")
		}
	}
}

func TestManifestsAreStoredByDigestAndReadOnlyByTheirScope(t *testing.T) {
	root := t.TempDir()
	s := fsStore(t, root, store.Options{})
	m, d := blob(t, 2<<10)
	ctx := context.Background()
	if _, err := s.ReadManifest(ctx, app, d, 4<<20); !errors.Is(err, store.ErrNotStored) {
		t.Fatalf("Read before Put: %v", err)
	}
	s.PutManifest(app, d, m)
	flush(t, s)
	got, err := s.ReadManifest(ctx, app, d, 4<<20)
	if err != nil || !bytes.Equal(got, m) {
		t.Fatalf("Read after Put: %d bytes, %v", len(got), err)
	}
	if _, err := s.ReadManifest(ctx, other, d, 4<<20); !errors.Is(err, store.ErrNotStored) {
		t.Errorf("another repository read a manifest it never fetched: %v", err)
	}
	if _, err := s.ReadManifest(ctx, app, d, int64(len(m)-1)); !errors.Is(err, store.ErrNotStored) {
		t.Errorf("a manifest over the size asked for was read: %v", err)
	}

	// Bytes that are not the digest's are not stored.
	_, d2 := blob(t, 10)
	s.PutManifest(app, d2, m)
	flush(t, s)
	if _, err := s.ReadManifest(ctx, app, d2, 4<<20); !errors.Is(err, store.ErrNotStored) {
		t.Errorf("bytes put under another digest were read: %v", err)
	}

	// A replica on the same folder reads it; corrupted on disk, it is
	// refused and evicted.
	s.Close()
	replica := fsStore(t, root, store.Options{Owner: "b"})
	if got, err := replica.ReadManifest(ctx, app, d, 4<<20); err != nil || !bytes.Equal(got, m) {
		t.Fatalf("Read on a replica: %v", err)
	}
	data := filepath.Join(root, "content", "lab", "manifests", "sha256", d[7:9], d[7:], "data")
	bad := bytes.Clone(m)
	bad[0] ^= 1
	if err := os.WriteFile(data, bad, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := replica.ReadManifest(ctx, app, d, 4<<20); !errors.Is(err, store.ErrNotStored) {
		t.Fatalf("a corrupted manifest was read: %v", err)
	}
	if _, err := os.Stat(data); !os.IsNotExist(err) || replica.Stats().Corrupt != 1 {
		t.Errorf("the corrupted manifest was not evicted: %v, corrupt %d", err, replica.Stats().Corrupt)
	}
}

func TestNotesAreKeptPerScopeAndEvictedWithTheirDigest(t *testing.T) {
	root := t.TempDir()
	const size = 100 << 10
	s := fsStore(t, root, store.Options{MaxSize: 3 * size})
	ctx := context.Background()
	m, d := blob(t, size)
	s.PutManifest(app, d, m)
	note := bytes.Repeat([]byte("e"), size)
	s.PutNote(app, d, "evidence-1", note)
	s.PutNote(app, d, "bad key!", note)
	flush(t, s)
	if got, err := s.Note(ctx, app, d, "evidence-1", size); err != nil || !bytes.Equal(got, note) {
		t.Fatalf("Note: %d bytes, %v", len(got), err)
	}
	for _, tt := range []struct {
		scope store.Scope
		key   string
		max   int64
	}{{other, "evidence-1", size}, {app, "evidence-2", size}, {app, "evidence-1", size - 1}, {app, "bad key!", size}} {
		if _, err := s.Note(ctx, tt.scope, d, tt.key, tt.max); !errors.Is(err, store.ErrNotStored) {
			t.Errorf("Note %s %q (max %d): %v, want ErrNotStored", tt.scope, tt.key, tt.max, err)
		}
	}
	if err := s.Sweep(ctx); err != nil {
		t.Fatal(err)
	}
	if st := s.Stats(); st.Size != 2*size || st.Blobs != 1 {
		t.Fatalf("the note does not count in the size: %+v", st)
	}

	// Two more manifests, the first one used least recently: past
	// maxSize, it goes with its note.
	old := time.Now().Add(-time.Hour)
	for _, f := range []string{"data", "used"} {
		if err := os.Chtimes(filepath.Join(root, "content", "lab", "manifests", "sha256", d[7:9], d[7:], f), old, old); err != nil {
			t.Fatal(err)
		}
	}
	for range 2 {
		m, d := blob(t, size)
		s.PutManifest(app, d, m)
	}
	flush(t, s)
	if err := s.Sweep(ctx); err != nil {
		t.Fatal(err)
	}
	if st := s.Stats(); st.Evictions != 1 || st.Size != 2*size {
		t.Fatalf("after the sweep: %+v", st)
	}
	if _, err := os.Stat(filepath.Join(root, "content", "lab", "manifests", "sha256", d[7:9], d[7:])); !os.IsNotExist(err) {
		t.Errorf("the evicted manifest's note is left: %v", err)
	}
}

func TestTagRecordsAreOneObjectPerTagSharedByReplicas(t *testing.T) {
	root := t.TempDir()
	ctx := context.Background()
	a := fsStore(t, root, store.Options{Owner: "a"})
	b := fsStore(t, root, store.Options{Owner: "b"})
	_, d1 := blob(t, 10)
	_, d2 := blob(t, 10)
	resolved := time.Now().Add(-time.Minute).UTC().Truncate(time.Second)
	if _, err := b.Tag(ctx, app, "v1"); !errors.Is(err, store.ErrNotStored) {
		t.Fatalf("Tag before any resolution: %v", err)
	}
	a.SetTag(app, "v1", store.TagRecord{Digest: d1, Resolved: resolved})
	a.SetTag(other, "v1", store.TagRecord{Digest: d2, Resolved: resolved})
	a.SetTag(app, "../x", store.TagRecord{Digest: d2, Resolved: resolved})
	a.SetTag(app, "v2", store.TagRecord{Digest: "sha256:short", Resolved: resolved})
	flush(t, a)
	r, err := b.Tag(ctx, app, "v1")
	if err != nil || r.Digest != d1 || !r.Resolved.Equal(resolved) || time.Since(r.Written) > time.Minute {
		t.Fatalf("a replica reads %+v, %v", r, err)
	}
	if r, err := b.Tag(ctx, other, "v1"); err != nil || r.Digest != d2 {
		t.Errorf("the same tag of another repository: %+v, %v", r, err)
	}
	for _, tag := range []string{"../x", "v2"} {
		if _, err := b.Tag(ctx, app, tag); !errors.Is(err, store.ErrNotStored) {
			t.Errorf("tag %q: %v, want ErrNotStored", tag, err)
		}
	}

	// The replica resolves it anew: the last writer's record holds.
	b.SetTag(app, "v1", store.TagRecord{Digest: d2, Resolved: time.Now()})
	flush(t, b)
	if r, err := a.Tag(ctx, app, "v1"); err != nil || r.Digest != d2 {
		t.Errorf("after the replica's resolution: %+v, %v", r, err)
	}
	a.ForgetTag(app, "v1")
	flush(t, a)
	if _, err := b.Tag(ctx, app, "v1"); !errors.Is(err, store.ErrNotStored) {
		t.Errorf("a forgotten tag: %v", err)
	}

	// A record not written for 30 days is swept.
	path := filepath.Join(root, "content", "lab", "tags", "rival", "app", "_tags", "v1")
	long := time.Now().Add(-31 * 24 * time.Hour)
	if err := os.Chtimes(path, long, long); err != nil {
		t.Fatal(err)
	}
	if err := a.Sweep(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Errorf("a tag record unused for 31 days is kept: %v", err)
	}
}

func TestSmallContentWritesAreSkippedWhileTheStoreFails(t *testing.T) {
	root := t.TempDir()
	s := fsStore(t, root, store.Options{})
	ctx := context.Background()
	// A file where the content folder should be: every write fails.
	if err := os.WriteFile(filepath.Join(root, "content"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	m, d := blob(t, 100)
	s.PutManifest(app, d, m)
	flush(t, s)
	if _, err := s.ReadManifest(ctx, app, d, 1<<20); !errors.Is(err, store.ErrNotStored) {
		t.Fatalf("Read of a manifest the store could not write: %v", err)
	}
	// The link or the manifest fails first; the store is then skipped
	// for a moment.
	if errs := s.Stats().StoreErrors; errs["put"]+errs["link"] == 0 {
		t.Errorf("store errors %v, want a failed write", errs)
	}
}

// FuzzATagRecordReadFromTheStore feeds Tag whatever a bucket may hold in a
// tag's object: it answers a record naming a well-formed digest, or
// ErrNotStored.
func FuzzATagRecordReadFromTheStore(f *testing.F) {
	f.Add([]byte(`{"digest":"sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef","resolved":"2026-01-01T00:00:00Z","written":"2026-01-01T00:00:00Z"}`))
	f.Add([]byte(`{"digest":"sha256:../../x"}`))
	f.Add([]byte(`{"digest":"sha512:00"}`))
	f.Add([]byte(`not json`))
	d, err := store.NewDriver(context.Background(), store.InMemory, nil)
	if err != nil {
		f.Fatal(err)
	}
	s := open(f, d, store.Options{})
	f.Fuzz(func(t *testing.T, object []byte) {
		if err := d.PutContent(context.Background(), "/content/lab/tags/team/app/_tags/v1", object); err != nil {
			t.Fatal(err)
		}
		r, err := s.Tag(context.Background(), app, "v1")
		if err != nil {
			if !errors.Is(err, store.ErrNotStored) {
				t.Fatalf("Tag: %v, want ErrNotStored", err)
			}
			return
		}
		if !digestRE.MatchString(r.Digest) {
			t.Fatalf("Tag answered %q from %q", r.Digest, object)
		}
	})
}

var digestRE = regexp.MustCompile(`^(sha256:[a-f0-9]{64}|sha512:[a-f0-9]{128})$`)

func TestNoteKeysListTheNotesOfOneRepositoryOnly(t *testing.T) {
	s := fsStore(t, t.TempDir(), store.Options{})
	ctx := context.Background()
	m, d := blob(t, 100)
	nested := store.Scope{Upstream: app.Upstream, Repository: app.Repository + "/nested"}
	s.PutManifest(app, d, m)
	for _, k := range []string{"evidence-tags-b", "evidence-referrers-a", "other-1"} {
		s.PutNote(app, d, k, []byte("{}"))
	}
	s.PutNote(nested, d, "evidence-tags-c", []byte("{}"))
	s.PutNote(other, d, "evidence-tags-d", []byte("{}"))
	flush(t, s)
	got := s.NoteKeys(ctx, app, d, "evidence-")
	if want := []string{"evidence-referrers-a", "evidence-tags-b"}; !slices.Equal(got, want) {
		t.Errorf("NoteKeys = %q, want %q", got, want)
	}
	if got := s.NoteKeys(ctx, app, "sha256:"+strings.Repeat("0", 64), "evidence-"); len(got) != 0 {
		t.Errorf("the notes of a digest never noted: %q", got)
	}
}

func TestTheSweepRemovesTheLayoutThatDidNotKeepContentPerUpstream(t *testing.T) {
	root := t.TempDir()
	for _, f := range []string{"blobs/sha256/00/" + strings.Repeat("0", 64) + "/data", "tags/lab/team/app/_tags/v1"} {
		p := filepath.Join(root, f)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte("old"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	s := fsStore(t, root, store.Options{})
	if err := s.Sweep(context.Background()); err != nil {
		t.Fatal(err)
	}
	for _, dir := range []string{"blobs", "tags"} {
		if _, err := os.Stat(filepath.Join(root, dir)); !os.IsNotExist(err) {
			t.Errorf("%s of the old layout is left: %v", dir, err)
		}
	}
}
