package store_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	storagedriver "github.com/distribution/distribution/v3/registry/storage/driver"

	"github.com/authz-proxy/authz-proxy/internal/store"
	"github.com/authz-proxy/authz-proxy/internal/testkit"
)

// origin is an upstream holding one blob, for one scope: it counts what it
// is asked, and can hold its answer half-way (gate) or misbehave.
type origin struct {
	blob []byte
	// serve, when set, replaces the bytes sent (a lying upstream).
	serve      []byte
	fetchErr   error
	confirmErr error
	// gate, when set, holds the body after its first gateAt bytes (64 KiB
	// when 0) until closed.
	gate   chan struct{}
	gateAt int

	fetches, confirms atomic.Int64
	offsets           sync.Map // offset -> true: where fetches started
}

var errNotFound = errors.New("upstream: blob unknown to this repository")

func (o *origin) Fetch(ctx context.Context, off, _ int64) (io.ReadCloser, int64, error) {
	o.fetches.Add(1)
	o.offsets.Store(off, true)
	if o.fetchErr != nil {
		return nil, 0, o.fetchErr
	}
	b := o.blob
	if o.serve != nil {
		b = o.serve
	}
	b = b[off:]
	at := o.gateAt
	if at == 0 {
		at = 64 << 10
	}
	if o.gate == nil || len(b) <= at {
		return io.NopCloser(bytes.NewReader(b)), int64(len(b)), nil
	}
	return io.NopCloser(io.MultiReader(bytes.NewReader(b[:at]), &gated{ctx: ctx, gate: o.gate, r: bytes.NewReader(b[at:])})), int64(len(b)), nil
}

func (o *origin) Confirm(context.Context) error {
	o.confirms.Add(1)
	return o.confirmErr
}

type gated struct {
	ctx  context.Context
	gate chan struct{}
	r    io.Reader
}

func (g *gated) Read(p []byte) (int, error) {
	select {
	case <-g.gate:
	case <-g.ctx.Done():
		return 0, g.ctx.Err()
	}
	return g.r.Read(p)
}

// blob returns n random bytes and their digest.
func blob(t testing.TB, n int) ([]byte, string) {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(b)
	return b, "sha256:" + hex.EncodeToString(sum[:])
}

// fsStore opens a store on the filesystem driver at root.
func fsStore(t testing.TB, root string, o store.Options) *store.Store {
	t.Helper()
	d, err := store.NewDriver(context.Background(), store.Filesystem, map[string]any{"rootdirectory": root})
	if err != nil {
		t.Fatal(err)
	}
	return open(t, d, o)
}

func open(t testing.TB, d storagedriver.StorageDriver, o store.Options) *store.Store {
	t.Helper()
	o.Driver = d
	if o.MaxSize == 0 {
		o.MaxSize = 1 << 30
	}
	if o.Owner == "" {
		o.Owner = "test"
	}
	if o.SweepInterval == 0 {
		o.SweepInterval = time.Hour // tests sweep by calling Sweep
	}
	s, err := store.New(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// manifestDigest names the manifest that lists the blobs linked in tests.
const manifestDigest = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

var (
	app   = store.Scope{Upstream: "lab", Repository: "team/app"}
	other = store.Scope{Upstream: "lab", Repository: "rival/app"}
)

// get reads dgst whole through s for scope.
func get(t testing.TB, s *store.Store, scope store.Scope, dgst string, o store.Origin) ([]byte, bool, error) {
	t.Helper()
	r, err := s.Get(context.Background(), scope, dgst, o)
	if err != nil {
		return nil, false, err
	}
	defer r.Close()
	var buf bytes.Buffer
	_, err = r.WriteTo(&buf)
	return buf.Bytes(), r.FromStore(), err
}

// mustGet reads dgst whole, checks the bytes, and waits for the fill (if
// any) to end: the last byte reaches the clients before the blob is moved
// into place. It reports whether the bytes came from the store.
func mustGet(t testing.TB, s *store.Store, scope store.Scope, dgst string, o *origin) bool {
	t.Helper()
	got, hit, err := get(t, s, scope, dgst, o)
	if err != nil {
		t.Fatalf("Get %s for %s: %v", dgst, scope, err)
	}
	if !bytes.Equal(got, o.blob) {
		t.Fatalf("Get %s for %s: %d bytes that differ from the blob's %d", dgst, scope, len(got), len(o.blob))
	}
	settle(t, s)
	return hit
}

// settle waits until no fill runs.
func settle(t testing.TB, s *store.Store) {
	t.Helper()
	for deadline := time.Now().Add(time.Minute); s.Stats().FillsInFlight > 0; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("fills still running after a minute")
		}
	}
}

func TestConcurrentCallersShareOneFetchAndAllGetTheBlob(t *testing.T) {
	for _, tt := range []struct {
		name   string
		window int64
	}{
		{"readers within the window", 64 << 20},
		{"readers that fall behind continue from the store", 1},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s := fsStore(t, t.TempDir(), store.Options{Window: tt.window})
			b, d := blob(t, 3<<20)
			o := &origin{blob: b, gate: make(chan struct{})}
			const callers = 32
			readers := make([]*store.Reader, callers)
			var wg sync.WaitGroup
			for i := range readers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					r, err := s.Get(context.Background(), app, d, o)
					if err != nil {
						t.Error(err)
						return
					}
					readers[i] = r
				}()
			}
			wg.Wait() // every caller joined while the upstream holds the rest
			if t.Failed() {
				t.FailNow()
			}
			close(o.gate)
			for i, r := range readers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					defer r.Close()
					if r.Size() != int64(len(b)) {
						t.Errorf("reader %d: size %d, want %d", i, r.Size(), len(b))
					}
					got, err := io.ReadAll(r)
					if err != nil || !bytes.Equal(got, b) {
						t.Errorf("reader %d: %d bytes, err %v", i, len(got), err)
					}
				}()
			}
			wg.Wait()
			settle(t, s)
			if n := o.fetches.Load(); n != 1 {
				t.Errorf("%d upstream fetches for %d concurrent callers, want 1", n, callers)
			}
			if !mustGet(t, s, app, d, o) {
				t.Error("the next Get was not served from the store")
			}
			if n := o.fetches.Load(); n != 1 {
				t.Errorf("%d upstream fetches after a Get from the store, want 1", n)
			}
			st := s.Stats()
			if st.Misses != callers || st.Hits != 1 || st.FillsStored != 1 || st.Size != int64(len(b)) {
				t.Errorf("stats: %+v", st)
			}
		})
	}
}

func TestBytesThatDoNotMatchTheDigestAreNeverStoredNorServedWhole(t *testing.T) {
	s := fsStore(t, t.TempDir(), store.Options{})
	b, d := blob(t, 1<<20)
	lie := bytes.Clone(b)
	lie[len(lie)-1] ^= 0xff // only the last byte differs
	o := &origin{blob: b, serve: lie}
	got, _, err := get(t, s, app, d, o)
	if !errors.Is(err, store.ErrDigestMismatch) {
		t.Fatalf("Get of lying bytes: err %v, want ErrDigestMismatch", err)
	}
	if len(got) >= len(b) {
		t.Fatalf("the client got %d of %d bytes: a whole body of wrong bytes", len(got), len(b))
	}
	if _, err := s.Stat(context.Background(), app, d, o); !errors.Is(err, store.ErrNotStored) {
		t.Fatalf("Stat after the mismatch: %v, want ErrNotStored", err)
	}
	o.serve = nil // the upstream mends its ways
	if mustGet(t, s, app, d, o) {
		t.Error("served from the store: it stored the lie")
	}
	if n := o.fetches.Load(); n != 2 {
		t.Errorf("%d fetches, want 2: the next pull fetches again", n)
	}
	if st := s.Stats(); st.FillErrors["digest"] != 1 || st.FillsStored != 1 {
		t.Errorf("stats: %+v", st)
	}
}

func TestStoredBlobIsServedOnlyToScopesEntitledToIt(t *testing.T) {
	s := fsStore(t, t.TempDir(), store.Options{})
	b, d := blob(t, 100<<10)
	mustGet(t, s, app, d, &origin{blob: b})

	// Another repository whose upstream does not have it: refused, with
	// the upstream's answer, and nothing fetched.
	denied := &origin{blob: b, confirmErr: errNotFound}
	if _, _, err := get(t, s, other, d, denied); !errors.Is(err, errNotFound) {
		t.Fatalf("Get for a repository the upstream does not give it to: %v, want the upstream's answer", err)
	}
	if _, err := s.Stat(context.Background(), other, d, denied); !errors.Is(err, errNotFound) {
		t.Fatalf("Stat for a repository the upstream does not give it to: %v", err)
	}
	if denied.fetches.Load() != 0 || denied.confirms.Load() != 2 {
		t.Errorf("fetches %d, confirms %d: want 0 and 2", denied.fetches.Load(), denied.confirms.Load())
	}

	// Another repository whose upstream holds it: confirmed once, then
	// linked.
	confirmed := &origin{blob: b}
	if !mustGet(t, s, other, d, confirmed) || confirmed.confirms.Load() != 1 || confirmed.fetches.Load() != 0 {
		t.Errorf("confirmed scope: confirms %d, fetches %d; want 1 and 0, from the store", confirmed.confirms.Load(), confirmed.fetches.Load())
	}
	mustGet(t, s, other, d, confirmed)
	if confirmed.confirms.Load() != 1 {
		t.Error("a confirmed scope was asked again")
	}

	// A manifest of the repository served by the proxy lists it: linked,
	// no upstream asked.
	third := store.Scope{Upstream: "lab", Repository: "third/app"}
	listed := &origin{blob: b, confirmErr: errNotFound}
	s.LinkBlobs(third, manifestDigest, d)
	if !mustGet(t, s, third, d, listed) || listed.confirms.Load() != 0 {
		t.Errorf("linked scope: confirms %d, want 0", listed.confirms.Load())
	}
}

func TestContentIsKeptPerUpstreamWhateverAnotherUpstreamSays(t *testing.T) {
	s := fsStore(t, t.TempDir(), store.Options{})
	b, d := blob(t, 100<<10)
	// Upstream names that a lossy encoding would fold together.
	private := store.Scope{Upstream: "registry.internal:5000", Repository: "team/app"}
	mustGet(t, s, private, d, &origin{blob: b})
	s.LinkBlobs(private, manifestDigest, d)
	for _, up := range []string{"registry.internal_5000", "Registry.internal:5000", "hub.example"} {
		// The other upstream claims to hold it (its HEAD answers 200) and
		// its manifest lists it: its own bytes are fetched all the same.
		hostile := &origin{blob: b}
		scope := store.Scope{Upstream: up, Repository: "team/app"}
		s.LinkBlobs(scope, manifestDigest, d)
		if fromStore := mustGet(t, s, scope, d, hostile); fromStore || hostile.fetches.Load() != 1 {
			t.Errorf("%s: served from the store %v, upstream fetches %d; want its own fetch", up, fromStore, hostile.fetches.Load())
		}
	}
}

func TestABlobIsNeverReadAsAManifestNorAManifestAsABlob(t *testing.T) {
	s := fsStore(t, t.TempDir(), store.Options{})
	ctx := context.Background()
	// Fetched as a blob by the repository: not a manifest of it.
	b, d := blob(t, 2<<10)
	mustGet(t, s, app, d, &origin{blob: b})
	flush(t, s)
	if _, err := s.ReadManifest(ctx, app, d, 4<<20); !errors.Is(err, store.ErrNotStored) {
		t.Errorf("a blob was read as a manifest: %v", err)
	}
	// Served as a manifest to the repository: not a blob of it.
	m, dm := blob(t, 2<<10)
	s.PutManifest(app, dm, m)
	flush(t, s)
	if got, err := s.ReadManifest(ctx, app, dm, 4<<20); err != nil || !bytes.Equal(got, m) {
		t.Fatalf("the manifest: %v", err)
	}
	o := &origin{blob: m}
	if fromStore := mustGet(t, s, app, dm, o); fromStore || o.fetches.Load() != 1 {
		t.Errorf("a manifest was served as a blob: from the store %v, fetches %d", fromStore, o.fetches.Load())
	}
}

func TestLinksOutliveTheProcessAndAreSharedByReplicas(t *testing.T) {
	root := t.TempDir()
	b, d := blob(t, 10<<10)
	a := fsStore(t, root, store.Options{Owner: "a"})
	mustGet(t, a, app, d, &origin{blob: b})
	a.LinkBlobs(other, manifestDigest, d)
	a.Close() // waits for the links to be written

	replica := fsStore(t, root, store.Options{Owner: "b"})
	for _, scope := range []store.Scope{app, other} {
		o := &origin{blob: b, confirmErr: errNotFound}
		if !mustGet(t, replica, scope, d, o) || o.confirms.Load() != 0 || o.fetches.Load() != 0 {
			t.Errorf("%s on a replica: from store, confirms %d, fetches %d", scope, o.confirms.Load(), o.fetches.Load())
		}
	}
}

func TestJoiningAFillOfAnotherScopeNeedsTheUpstreamsConfirmation(t *testing.T) {
	s := fsStore(t, t.TempDir(), store.Options{})
	b, d := blob(t, 1<<20)
	first := &origin{blob: b, gate: make(chan struct{})}
	r, err := s.Get(context.Background(), app, d, first)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	denied := &origin{blob: b, confirmErr: errNotFound}
	if _, err := s.Get(context.Background(), other, d, denied); !errors.Is(err, errNotFound) {
		t.Fatalf("joining another scope's fill unconfirmed: %v", err)
	}
	allowed := &origin{blob: b}
	r2, err := s.Get(context.Background(), other, d, allowed)
	if err != nil {
		t.Fatal(err)
	}
	defer r2.Close()
	close(first.gate)
	for _, r := range []*store.Reader{r, r2} {
		if got, err := io.ReadAll(r); err != nil || !bytes.Equal(got, b) {
			t.Fatalf("%d bytes, %v", len(got), err)
		}
	}
	if first.fetches.Load()+allowed.fetches.Load() != 1 || allowed.confirms.Load() != 1 {
		t.Errorf("fetches %d+%d, confirms %d: want one fetch, one confirmation", first.fetches.Load(), allowed.fetches.Load(), allowed.confirms.Load())
	}
}

func TestUpstreamErrorsReachEveryCallerAndAreNotRemembered(t *testing.T) {
	s := fsStore(t, t.TempDir(), store.Options{})
	b, d := blob(t, 1<<10)
	o := &origin{blob: b, fetchErr: errNotFound}
	if _, _, err := get(t, s, app, d, o); !errors.Is(err, errNotFound) {
		t.Fatalf("Get: %v, want the upstream's error", err)
	}
	o.fetchErr = nil
	mustGet(t, s, app, d, o)
	if st := s.Stats(); st.FillErrors["upstream"] != 1 || st.FillsStored != 1 {
		t.Errorf("stats: %+v", st)
	}
}

func TestAFillThatStallsEndsAfterTheIdleTimeout(t *testing.T) {
	s := fsStore(t, t.TempDir(), store.Options{FillIdleTimeout: 50 * time.Millisecond})
	b, d := blob(t, 1<<20)
	o := &origin{blob: b, gate: make(chan struct{})} // never opened
	_, _, err := get(t, s, app, d, o)
	if err == nil || !strings.Contains(err.Error(), "no bytes from the upstream") {
		t.Fatalf("stalled fill: %v", err)
	}
}

func TestAFillGoesOnWhenItsClientsHangUp(t *testing.T) {
	s := fsStore(t, t.TempDir(), store.Options{})
	b, d := blob(t, 1<<20)
	o := &origin{blob: b, gate: make(chan struct{})}
	ctx, cancel := context.WithCancel(context.Background())
	r, err := s.Get(ctx, app, d, o)
	if err != nil {
		t.Fatal(err)
	}
	cancel()
	if _, err := io.ReadAll(r); !errors.Is(err, context.Canceled) {
		t.Errorf("read after hanging up: %v", err)
	}
	r.Close()
	close(o.gate)
	settle(t, s)
	if st := s.Stats(); st.FillsStored != 1 {
		t.Errorf("the fill did not store the blob after its client left: %+v", st)
	}
}

func TestRangesAreServedFromTheStore(t *testing.T) {
	const chunk = store.ChunkSize
	for _, restarted := range []bool{false, true} {
		name := "checked chunk by chunk (this process checked the blob when it stored it)"
		if restarted {
			name = "unchecked (a restarted proxy that has not read the blob whole yet)"
		}
		t.Run(name, func(t *testing.T) {
			root := t.TempDir()
			s := fsStore(t, root, store.Options{})
			b, d := blob(t, 4*chunk+12345)
			o := &origin{blob: b}
			if _, err := s.Stat(context.Background(), app, d, o); !errors.Is(err, store.ErrNotStored) {
				t.Fatalf("Stat before any fill: %v", err)
			}
			mustGet(t, s, app, d, o)
			if restarted {
				s.Close()
				s = fsStore(t, root, store.Options{})
			}
			size, err := s.Stat(context.Background(), app, d, o)
			if err != nil || size != int64(len(b)) {
				t.Fatalf("Stat: %d, %v", size, err)
			}
			for _, rg := range []struct {
				name     string
				off, len int64
			}{
				{"the first bytes", 0, 10},
				{"within a chunk", 1000, 4096},
				{"across a chunk boundary", chunk - 100, 200},
				{"across several chunks", chunk/2 + 7, 2*chunk + 1},
				{"a whole chunk", chunk, chunk},
				{"into the last, partial chunk", 3*chunk + 5, chunk + 100},
				{"the last byte", int64(len(b)) - 1, 1},
				{"all of it", 0, int64(len(b))},
			} {
				rc, err := s.ReadRange(context.Background(), app, d, rg.off, rg.len)
				if err != nil {
					t.Fatal(err)
				}
				for _, read := range []struct {
					how string
					all func(io.Reader) ([]byte, error)
				}{
					{"read", func(r io.Reader) ([]byte, error) { return io.ReadAll(struct{ io.Reader }{r}) }},
					{"written to", func(r io.Reader) ([]byte, error) {
						var buf bytes.Buffer
						_, err := r.(io.WriterTo).WriteTo(&buf)
						return buf.Bytes(), err
					}},
				} {
					if read.how == "written to" {
						rc.Close()
						if rc, err = s.ReadRange(context.Background(), app, d, rg.off, rg.len); err != nil {
							t.Fatal(err)
						}
					}
					got, err := read.all(rc)
					if err != nil || !bytes.Equal(got, b[rg.off:rg.off+rg.len]) {
						t.Errorf("%s (%d bytes from %d), %s: %d bytes, %v; want the blob's", rg.name, rg.len, rg.off, read.how, len(got), err)
					}
				}
				rc.Close()
			}
		})
	}
}

func TestACorruptChunkInARangeStopsItBeforeItsBytes(t *testing.T) {
	const chunk = store.ChunkSize
	root := t.TempDir()
	s := fsStore(t, root, store.Options{})
	b, d := blob(t, 4*chunk)
	o := &origin{blob: b}
	mustGet(t, s, app, d, o)
	data := filepath.Join(root, "content", "lab", "blobs", "sha256", d[7:9], d[7:], "data")
	corrupted := bytes.Clone(b)
	corrupted[2*chunk+10] ^= 1
	if err := os.WriteFile(data, corrupted, 0o644); err != nil {
		t.Fatal(err)
	}
	rc, err := s.ReadRange(context.Background(), app, d, chunk/2, 3*chunk)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	var buf bytes.Buffer
	_, err = rc.(io.WriterTo).WriteTo(&buf)
	if !errors.Is(err, store.ErrCorrupt) {
		t.Fatalf("a range over a corrupt chunk: %v, want ErrCorrupt", err)
	}
	if want := b[chunk/2 : 2*chunk]; !bytes.Equal(buf.Bytes(), want) {
		t.Errorf("the client got %d bytes, want the %d before the corrupt chunk and none of it", buf.Len(), len(want))
	}
}

func TestAPrefetchStoresTheBlobInTheBackground(t *testing.T) {
	s := fsStore(t, t.TempDir(), store.Options{})
	b, d := blob(t, 1<<20)
	o := &origin{blob: b}
	s.Prefetch(app, d, o)
	s.Prefetch(app, d, o)
	settle(t, s)
	if st := s.Stats(); st.FillsStored != 1 || o.fetches.Load() != 1 {
		t.Errorf("stored %d, fetches %d; want 1 and 1", st.FillsStored, o.fetches.Load())
	}
}

func TestStoredBlobCorruptedOnDiskIsCutBeforeItsEndAndEvicted(t *testing.T) {
	const size, chunk = 1 << 20, store.ChunkSize
	for _, tt := range []struct {
		name    string
		corrupt func(path string) error
		// at is the first byte changed, -1 when the size changed (and the
		// blob is hashed whole).
		at int
	}{
		{"a byte flipped", func(p string) error {
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			b[len(b)/2] ^= 1
			return os.WriteFile(p, b, 0o644)
		}, size / 2},
		{"truncated", func(p string) error { return os.Truncate(p, 1000) }, -1},
		{"emptied", func(p string) error { return os.Truncate(p, 0) }, -1},
		{"its last byte changed", func(p string) error {
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			b[len(b)-1] ^= 1
			return os.WriteFile(p, b, 0o644)
		}, size - 1},
	} {
		for _, restarted := range []bool{false, true} {
			name := tt.name + ", checked chunk by chunk"
			if restarted {
				name = tt.name + ", after a restart: hashed whole"
			}
			t.Run(name, func(t *testing.T) {
				root := t.TempDir()
				var logs testkit.Buffer
				s := fsStore(t, root, store.Options{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
				b, d := blob(t, size)
				o := &origin{blob: b}
				mustGet(t, s, app, d, o)
				if restarted {
					s.Close()
					s = fsStore(t, root, store.Options{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
				}
				data := filepath.Join(root, "content", "lab", "blobs", "sha256", d[7:9], d[7:], "data")
				if err := tt.corrupt(data); err != nil {
					t.Fatal(err)
				}
				got, hit, err := get(t, s, app, d, o)
				if !hit || !errors.Is(err, store.ErrCorrupt) {
					t.Fatalf("corrupted blob: from store %v, err %v; want ErrCorrupt", hit, err)
				}
				if len(got) >= len(b) {
					t.Fatalf("the client got %d bytes of a %d-byte blob: served whole", len(got), len(b))
				}
				if before := tt.at - tt.at%chunk; !restarted && tt.at >= 0 && (len(got) > before || !bytes.Equal(got, b[:len(got)])) {
					t.Fatalf("the client got %d bytes, want at most the %d of the chunks before the one changed", len(got), before)
				}
				if _, err := os.Stat(data); !os.IsNotExist(err) {
					t.Errorf("the corrupted data is still there: %v", err)
				}
				if !strings.Contains(logs.String(), "does not match its digest") {
					t.Errorf("no error logged: %s", logs.String())
				}
				if mustGet(t, s, app, d, o) || o.fetches.Load() != 2 {
					t.Errorf("after the eviction: fetches %d, want 2", o.fetches.Load())
				}
				if st := s.Stats(); st.Corrupt != 1 {
					t.Errorf("stats: %+v", st)
				}
			})
		}
	}
}

func TestLeastRecentlyUsedBlobsAreEvictedPastMaxSize(t *testing.T) {
	root := t.TempDir()
	const size = 100 << 10
	s := fsStore(t, root, store.Options{MaxSize: 5 * size})
	var digests []string
	var origins []*origin
	for i := range 5 {
		b, d := blob(t, size)
		o := &origin{blob: b}
		mustGet(t, s, app, d, o)
		digests, origins = append(digests, d), append(origins, o)
		// Last used i hours ago, oldest first: 0 is the least recent.
		used := time.Now().Add(-time.Duration(10-i) * time.Hour)
		for _, f := range []string{"data", "used"} {
			if err := os.Chtimes(filepath.Join(root, "content", "lab", "blobs", "sha256", d[7:9], d[7:], f), used, used); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := s.Sweep(context.Background()); err != nil {
		t.Fatal(err)
	}
	if st := s.Stats(); st.Evictions != 0 || st.Size != 5*size || st.Blobs != 5 {
		t.Fatalf("at maxSize: %+v", st)
	}
	s.Close()

	// A new process reads blob 0: it is the most recently used now.
	s = fsStore(t, root, store.Options{MaxSize: 5 * size})
	if !mustGet(t, s, app, digests[0], origins[0]) {
		t.Fatal("blob 0 not served from the store")
	}
	s.Close() // the use mark is written
	s = fsStore(t, root, store.Options{MaxSize: 5 * size})
	b, d := blob(t, size)
	mustGet(t, s, app, d, &origin{blob: b}) // one too many
	if err := s.Sweep(context.Background()); err != nil {
		t.Fatal(err)
	}
	// Past maxSize it evicts down to 90% of it: the two least recently used.
	st := s.Stats()
	if st.Evictions != 2 || st.Size != 4*size {
		t.Fatalf("after the sweep: %+v", st)
	}
	for i, d := range digests {
		_, err := s.Stat(context.Background(), app, d, origins[i])
		if evicted := errors.Is(err, store.ErrNotStored); evicted != (i == 1 || i == 2) {
			t.Errorf("blob %d (last used %dh ago, blob 0 read since): evicted %v", i, 10-i, evicted)
		}
	}
}

func TestASweepKeepsTheLinksOfStoredBlobsAndDeletesThoseOfBlobsNeverStoredADayOn(t *testing.T) {
	root := t.TempDir()
	s := fsStore(t, root, store.Options{})
	b, stored := blob(t, 1<<10)
	mustGet(t, s, app, stored, &origin{blob: b})
	_, never := blob(t, 1<<10)
	// The manifest served to app names both: the client had the second.
	s.LinkBlobs(app, manifestDigest, stored, never)
	testkit.WaitFor(t, "the links written", func() bool { return s.Stats().WritesInFlight == 0 })
	dir := func(d string) string { return filepath.Join(root, "content", "lab", "blobs", "sha256", d[7:9], d[7:]) }
	twoDaysAgo := time.Now().Add(-48 * time.Hour)
	for _, d := range []string{stored, never} {
		if err := filepath.Walk(dir(d), func(p string, _ os.FileInfo, err error) error {
			if err != nil {
				return err
			}
			return os.Chtimes(p, twoDaysAgo, twoDaysAgo)
		}); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Sweep(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dir(never)); !os.IsNotExist(err) {
		t.Errorf("the link of a blob never stored, written two days ago, after a sweep: %v, want it deleted", err)
	}
	s.Close()

	// Another process serves the stored blob to app by its link alone.
	s = fsStore(t, root, store.Options{})
	o := &origin{blob: b, confirmErr: errNotFound}
	if !mustGet(t, s, app, stored, o) || o.confirms.Load() != 0 || o.fetches.Load() != 0 {
		t.Errorf("the stored blob after a sweep: upstream asked %d times to confirm, %d to fetch; want it served from the store by its link", o.confirms.Load(), o.fetches.Load())
	}
}

func TestLeftoversOfAKilledFillAreClearedAtStart(t *testing.T) {
	root := t.TempDir()
	b, d := blob(t, 1<<20)
	// What a fill of owner "a" killed half-way leaves, and a fill of owner
	// "b" (another replica) in progress, and one of "c" abandoned long ago.
	for owner, age := range map[string]time.Duration{"a": 0, "b": 0, "c": 2 * time.Hour} {
		p := filepath.Join(root, "uploads", owner, "sha256-"+d[7:]+"-0011223344556677")
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, b[:len(b)/2], 0o644); err != nil {
			t.Fatal(err)
		}
		then := time.Now().Add(-age)
		if err := os.Chtimes(p, then, then); err != nil {
			t.Fatal(err)
		}
	}
	var logs testkit.Buffer
	s := fsStore(t, root, store.Options{Owner: "a", Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if _, err := os.Stat(filepath.Join(root, "uploads", "a")); !os.IsNotExist(err) {
		t.Errorf("owner a's leftovers are still there after its restart: %v", err)
	}
	if !strings.Contains(logs.String(), "removed the leftovers") {
		t.Errorf("not logged: %s", logs.String())
	}
	if err := s.Sweep(context.Background()); err != nil {
		t.Fatal(err)
	}
	left, _ := filepath.Glob(filepath.Join(root, "uploads", "*", "*"))
	if len(left) != 1 || !strings.Contains(left[0], "/b/") {
		t.Errorf("uploads after a sweep: %v; want only replica b's fill in progress", left)
	}
	o := &origin{blob: b}
	if _, err := s.Stat(context.Background(), app, d, o); !errors.Is(err, store.ErrNotStored) {
		t.Errorf("a partial fill is visible: %v", err)
	}
	mustGet(t, s, app, d, o)
}

func TestTwoStoresOnOneBucketFillConcurrentlyAndServeEachOthersContent(t *testing.T) {
	root := t.TempDir()
	a := fsStore(t, root, store.Options{Owner: "replica-a"})
	b := fsStore(t, root, store.Options{Owner: "replica-b"})
	blobA, dA := blob(t, 2<<20)
	blobB, dB := blob(t, 2<<20)
	shared, dS := blob(t, 2<<20)
	oS := &origin{blob: shared, gate: make(chan struct{})}
	var wg sync.WaitGroup
	for _, s := range []*store.Store{a, b} {
		for range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				r, err := s.Get(context.Background(), app, dS, oS)
				if err != nil {
					t.Error(err)
					return
				}
				defer r.Close()
				if got, err := io.ReadAll(r); err != nil || !bytes.Equal(got, shared) {
					t.Errorf("shared blob: %d bytes, %v", len(got), err)
				}
			}()
		}
	}
	close(oS.gate)
	mustGet(t, a, app, dA, &origin{blob: blobA})
	mustGet(t, b, app, dB, &origin{blob: blobB})
	wg.Wait()
	settle(t, a)
	settle(t, b)
	for _, c := range []struct {
		s    *store.Store
		d    string
		blob []byte
	}{{a, dB, blobB}, {b, dA, blobA}, {a, dS, shared}, {b, dS, shared}} {
		o := &origin{blob: c.blob}
		if !mustGet(t, c.s, app, c.d, o) || o.fetches.Load() != 0 {
			t.Errorf("%s: not served from the store filled by the other replica", c.d)
		}
	}
}

// failing is a storage driver whose writes fail as a full disk's do, after
// room bytes.
type failing struct {
	storagedriver.StorageDriver
	room int64
}

var errNoSpace = errors.New("no space left on device")

func (f *failing) Writer(ctx context.Context, path string, append bool) (storagedriver.FileWriter, error) {
	w, err := f.StorageDriver.Writer(ctx, path, append)
	if err != nil {
		return nil, err
	}
	return &fullWriter{FileWriter: w, room: f.room}, nil
}

func (f *failing) PutContent(context.Context, string, []byte) error { return errNoSpace }

type fullWriter struct {
	storagedriver.FileWriter
	room int64
}

func (w *fullWriter) Write(p []byte) (int, error) {
	if int64(len(p)) > w.room {
		return 0, errNoSpace
	}
	w.room -= int64(len(p))
	return w.FileWriter.Write(p)
}

func TestStoreFailuresServeFromTheUpstreamWithAWarning(t *testing.T) {
	notADir := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(notADir, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	fsDriver := func(root string) storagedriver.StorageDriver {
		d, err := store.NewDriver(context.Background(), store.Filesystem, map[string]any{"rootdirectory": root})
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	for _, tt := range []struct {
		name   string
		driver storagedriver.StorageDriver
	}{
		{"disk full in the middle of a fill", &failing{StorageDriver: fsDriver(t.TempDir()), room: 1 << 20}},
		{"root not a directory", fsDriver(notADir)},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var logs testkit.Buffer
			s := open(t, tt.driver, store.Options{Logger: slog.New(slog.NewTextHandler(&logs, nil)), Window: 1})
			b, d := blob(t, 3<<20)
			o := &origin{blob: b, gate: make(chan struct{})}
			// One reader keeps up; one falls behind and must catch up from
			// the upstream, the store having failed.
			fast, err := s.Get(context.Background(), app, d, o)
			if err != nil {
				t.Fatal(err)
			}
			slow, err := s.Get(context.Background(), app, d, o)
			if err != nil {
				t.Fatal(err)
			}
			close(o.gate)
			for _, r := range []*store.Reader{fast, slow} {
				got, err := io.ReadAll(r)
				r.Close()
				if err != nil || !bytes.Equal(got, b) {
					t.Fatalf("%d bytes, %v: the pull failed with the store", len(got), err)
				}
			}
			if _, err := s.Stat(context.Background(), app, d, o); !errors.Is(err, store.ErrNotStored) {
				t.Errorf("Stat: %v", err)
			}
			st := s.Stats()
			if len(st.StoreErrors) == 0 || st.FillErrors["store"] == 0 {
				t.Errorf("stats: %+v", st)
			}
			if !strings.Contains(logs.String(), "level=WARN") || !strings.Contains(logs.String(), "store failing") {
				t.Errorf("no warning: %s", logs.String())
			}
			if o.fetches.Load() < 2 {
				t.Errorf("fetches %d: want the fill's, and the slow reader's catching up", o.fetches.Load())
			}
		})
	}
}

func TestDigestsAndScopesTheStoreDoesNotKeepAreLeftToTheUpstream(t *testing.T) {
	s := fsStore(t, t.TempDir(), store.Options{})
	b, d := blob(t, 10)
	for _, c := range []struct {
		scope store.Scope
		d     string
	}{
		{app, "md5:" + strings.Repeat("0", 32)},
		{app, strings.ToUpper(d)},
		{store.Scope{Upstream: "lab", Repository: "../etc"}, d},
		{store.Scope{Upstream: "", Repository: "app"}, d},
	} {
		if _, err := s.Get(context.Background(), c.scope, c.d, &origin{blob: b}); !errors.Is(err, store.ErrNotStored) {
			t.Errorf("Get %s %s: %v, want ErrNotStored", c.scope, c.d, err)
		}
	}
}

func TestAnEmptyBlobIsStoredAndServed(t *testing.T) {
	s := fsStore(t, t.TempDir(), store.Options{})
	b, d := blob(t, 0)
	o := &origin{blob: b}
	if mustGet(t, s, app, d, o) || !mustGet(t, s, app, d, o) || o.fetches.Load() != 1 {
		t.Errorf("fetches %d: the empty blob was not stored", o.fetches.Load())
	}
}

func TestAClosedStoreLeavesEveryBlobToTheUpstream(t *testing.T) {
	s := fsStore(t, t.TempDir(), store.Options{})
	b, d := blob(t, 1<<10)
	o := &origin{blob: b}
	s.Close()
	if _, err := s.Get(context.Background(), app, d, o); !errors.Is(err, store.ErrNotStored) {
		t.Errorf("Get after Close: %v, want ErrNotStored", err)
	}
	s.Prefetch(app, d, o)
	s.LinkBlobs(app, manifestDigest, d)
	if o.fetches.Load() != 0 {
		t.Error("a closed store fetched")
	}
}
