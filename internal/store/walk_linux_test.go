package store

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	storagedriver "github.com/distribution/distribution/v3/registry/storage/driver"
	"github.com/distribution/distribution/v3/registry/storage/driver/factory"
)

// TestTheFilesystemWalkSeesWhatDistributionsWalkSees walks a store's
// folders with the filesystem driver's own walk and with distribution's,
// from its root and below, skipping folders and stopping early, and wants
// the same entries in the same order.
func TestTheFilesystemWalkSeesWhatDistributionsWalkSees(t *testing.T) {
	ctx := context.Background()
	root := t.TempDir()
	local, err := NewDriver(ctx, Filesystem, map[string]any{"rootdirectory": root})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := local.(*localDriver); !ok {
		t.Fatalf("NewDriver(filesystem) is a %T, want its own walk", local)
	}
	plain, err := factory.Create(ctx, Filesystem, map[string]any{"rootdirectory": root})
	if err != nil {
		t.Fatal(err)
	}
	// What a store holds, as pulls leave it, and what else a folder may.
	scope := Scope{Upstream: "lab", Repository: "team/app"}
	for i := range 20 {
		o, _ := scope.object(blobKind, fmt.Sprintf("sha256:%02x%062d", i*13, i))
		for path, body := range map[string]string{o.dataPath(): "blob", o.usedPath(): "", o.linkPath("team/app"): "", o.linkPath("rival/app"): "", o.notesDir("team/app") + "/sig": "note"} {
			if i%3 == 0 && path == o.dataPath() {
				continue // linked, never stored
			}
			if err := local.PutContent(ctx, path, []byte(body)); err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, p := range []string{"/uploads/a/1", "/content/lab/tags/team/app/v1", "/top", "/content/lab/blobs/zz-not-an-object"} {
		if err := local.PutContent(ctx, p, []byte(p)); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.MkdirAll(filepath.Join(root, "content", "empty", "folder"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(root, "top"), filepath.Join(root, "content", "link-to-a-file")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(root, "nowhere"), filepath.Join(root, "content", "dangling")); err != nil {
		t.Fatal(err)
	}
	old := time.Now().Add(-time.Hour).Truncate(time.Second)
	if err := os.Chtimes(filepath.Join(root, "content", "lab"), old, old); err != nil {
		t.Fatal(err)
	}

	walk := func(d storagedriver.StorageDriver, from string, skip func(storagedriver.FileInfo) error) ([]string, error) {
		var seen []string
		err := d.Walk(ctx, from, func(fi storagedriver.FileInfo) error {
			seen = append(seen, fmt.Sprintf("%s dir=%v size=%d mod=%v", fi.Path(), fi.IsDir(), fi.Size(), fi.ModTime().UnixNano()))
			return skip(fi)
		})
		return seen, err
	}
	n := 0
	for _, tt := range []struct {
		name string
		from string
		skip func(storagedriver.FileInfo) error
	}{
		{"everything from the root", "/", func(storagedriver.FileInfo) error { return nil }},
		{"from a folder below", "/content/lab", func(storagedriver.FileInfo) error { return nil }},
		{"links skipped", "/content", func(fi storagedriver.FileInfo) error {
			if fi.IsDir() && filepath.Base(fi.Path()) == "links" {
				return storagedriver.ErrSkipDir
			}
			return nil
		}},
		{"stopped after 40 entries", "/", func(storagedriver.FileInfo) error {
			if n++; n%40 == 0 {
				return storagedriver.ErrFilledBuffer
			}
			return nil
		}},
		{"a folder that is not there", "/nothing", func(storagedriver.FileInfo) error { return nil }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			n = 0
			want, wantErr := walk(plain, tt.from, tt.skip)
			n = 0
			got, err := walk(local, tt.from, tt.skip)
			if (err == nil) != (wantErr == nil) || (wantErr != nil && !errors.As(err, new(storagedriver.PathNotFoundError))) {
				t.Fatalf("walk: %v, distribution's: %v", err, wantErr)
			}
			if len(got) != len(want) {
				t.Errorf("%d entries, distribution's walk %d", len(got), len(want))
			}
			for i := range min(len(got), len(want)) {
				if got[i] != want[i] {
					t.Fatalf("entry %d: %s\ndistribution's: %s", i, got[i], want[i])
				}
			}
			if tt.from == "/" && tt.name == "everything from the root" && len(got) < 150 {
				t.Errorf("only %d entries: the tree was not built", len(got))
			}
		})
	}
}
