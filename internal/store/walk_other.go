//go:build !linux

package store

import storagedriver "github.com/distribution/distribution/v3/registry/storage/driver"

// newLocalDriver is distribution's filesystem driver as it is: the walk of
// its own is Linux's.
func newLocalDriver(d storagedriver.StorageDriver, _ string) storagedriver.StorageDriver { return d }
