// Package drivertest runs distribution's storage driver conformance suite
// against the drivers the store ships with, configured as the store
// configures them, and the store itself on S3 (versitygw, with the e2e
// build tag).
package drivertest

import (
	"context"
	"flag"
	"os"
	"testing"

	storagedriver "github.com/distribution/distribution/v3/registry/storage/driver"
	"github.com/distribution/distribution/v3/registry/storage/driver/testsuites"

	"github.com/authz-proxy/authz-proxy/internal/store"
)

// TestMain runs the suite in its short mode: otherwise it writes and
// reads a 5 GB stream, far past what CI time allows; the short mode
// covers every method with streams of up to 10 MB and many concurrent
// ones.
func TestMain(m *testing.M) {
	flag.Parse()
	if err := flag.Set("test.short", "true"); err != nil {
		panic(err)
	}
	os.Exit(m.Run())
}

func TestFilesystemDriverConformance(t *testing.T) {
	root := t.TempDir()
	testsuites.Driver(t, func() (storagedriver.StorageDriver, error) {
		return store.NewDriver(context.Background(), store.Filesystem, map[string]any{"rootdirectory": root})
	}, false)
}
