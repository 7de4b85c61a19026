//go:build e2e

package drivertest

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	storagedriver "github.com/distribution/distribution/v3/registry/storage/driver"
	"github.com/distribution/distribution/v3/registry/storage/driver/testsuites"

	"github.com/authz-proxy/authz-proxy/internal/store"
)

// s3Params starts versitygw over a fresh folder, with one bucket, and
// returns the s3 driver's parameters for it under prefix, as authz-proxy
// configures them (store: {driver: s3, bucket, regionendpoint,
// forcepathstyle: true, accesskeyFile, secretkeyFile, rootdirectory}).
func s3Params(t *testing.T, prefix string) map[string]any {
	t.Helper()
	tools := os.Getenv("AUTHZ_E2E_TOOLS")
	if tools == "" {
		t.Fatal("AUTHZ_E2E_TOOLS is not set: run `bash scripts/tools.sh` and set it to the folder it prints")
	}
	dir := t.TempDir()
	if err := os.Mkdir(filepath.Join(dir, "cache"), 0o755); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	var out bytes.Buffer
	cmd := exec.Command(filepath.Join(tools, "versitygw"), "--quiet", "--access", "AKIAAUTHZPROXY", "--secret", "test-secret-key", "--port", addr, "posix", dir)
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("versitygw output:\n%s", out.String())
		}
	})
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if resp, err := http.Get("http://" + addr + "/"); err == nil {
			resp.Body.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("versitygw did not come up on %s:\n%s", addr, out.String())
		}
	}
	return map[string]any{
		"bucket": "cache", "region": "us-east-1", "regionendpoint": "http://" + addr, "forcepathstyle": true,
		"accesskey": "AKIAAUTHZPROXY", "secretkey": "test-secret-key", "rootdirectory": prefix,
	}
}

func s3Driver(t *testing.T, params map[string]any) storagedriver.StorageDriver {
	t.Helper()
	d, err := store.NewDriver(context.Background(), store.S3, params)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func TestS3DriverConformanceOnVersitygw(t *testing.T) {
	params := s3Params(t, "/suite")
	testsuites.Driver(t, func() (storagedriver.StorageDriver, error) {
		return store.NewDriver(context.Background(), store.S3, params)
	}, false)
}

// TestTwoStoresOnOneBucket is two replicas sharing a bucket: both fill the
// same blob at once, and each serves what the other stored.
func TestTwoStoresOnOneBucket(t *testing.T) {
	params := s3Params(t, "/authz-proxy")
	// Both drivers first: with AWS_CA_BUNDLE set, making an S3 session
	// changes http.DefaultClient, which a running driver uses.
	drivers := []storagedriver.StorageDriver{s3Driver(t, params), s3Driver(t, params)}
	var stores []*store.Store
	for i, owner := range []string{"replica-a", "replica-b"} {
		s, err := store.New(context.Background(), store.Options{Driver: drivers[i], MaxSize: 1 << 30, Owner: owner, SweepInterval: time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		stores = append(stores, s)
	}
	scope := store.Scope{Upstream: "lab", Repository: "team/app"}
	shared := newBlob(t, 40<<20) // several S3 parts, and a multipart copy into place
	own := []*blob{newBlob(t, 3<<20), newBlob(t, 3<<20)}

	var wg sync.WaitGroup
	for i, s := range stores {
		for range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if got := read(t, s, scope, shared); !bytes.Equal(got, shared.bytes) {
					t.Errorf("replica %d: the shared blob came back as %d other bytes", i, len(got))
				}
			}()
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			read(t, s, scope, own[i])
		}()
	}
	wg.Wait()
	for _, s := range stores {
		settle(t, s)
	}
	if n := shared.fetches.Load(); n < 1 || n > 2 {
		t.Errorf("the shared blob was fetched %d times by two replicas, want 1 or 2", n)
	}
	for i, s := range stores {
		for _, b := range []*blob{own[1-i], shared} {
			before := b.fetches.Load()
			r, err := s.Get(context.Background(), scope, b.digest, b)
			if err != nil {
				t.Fatal(err)
			}
			got, err := io.ReadAll(r)
			r.Close()
			if err != nil || !bytes.Equal(got, b.bytes) || !r.FromStore() || b.fetches.Load() != before {
				t.Errorf("replica %d reading %s: %d bytes, %v, from the store %v", i, b.digest, len(got), err, r.FromStore())
			}
		}
	}
	if err := stores[0].Sweep(context.Background()); err != nil {
		t.Fatal(err)
	}
	if st := stores[0].Stats(); st.Blobs != 3 || st.Size != int64(len(shared.bytes)+len(own[0].bytes)+len(own[1].bytes)) {
		t.Errorf("a sweep of the shared bucket: %+v", st)
	}
}

// blob is an upstream of one blob for the store.
type blob struct {
	bytes   []byte
	digest  string
	fetches atomic.Int64
}

func newBlob(t *testing.T, n int) *blob {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(b)
	return &blob{bytes: b, digest: "sha256:" + hex.EncodeToString(sum[:])}
}

func (b *blob) Fetch(_ context.Context, off, _ int64) (io.ReadCloser, int64, error) {
	b.fetches.Add(1)
	return io.NopCloser(bytes.NewReader(b.bytes[off:])), int64(len(b.bytes)) - off, nil
}

func (b *blob) Confirm(context.Context) error { return nil }

func read(t *testing.T, s *store.Store, scope store.Scope, b *blob) []byte {
	t.Helper()
	r, err := s.Get(context.Background(), scope, b.digest, b)
	if err != nil {
		t.Error(err)
		return nil
	}
	defer r.Close()
	got, err := io.ReadAll(r)
	if err != nil {
		t.Error(fmt.Errorf("reading %s: %w", b.digest, err))
	}
	return got
}

func settle(t *testing.T, s *store.Store) {
	t.Helper()
	for deadline := time.Now().Add(time.Minute); s.Stats().FillsInFlight > 0; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("fills still running after a minute")
		}
	}
}
