package store

import (
	"context"

	storagedriver "github.com/distribution/distribution/v3/registry/storage/driver"
	"github.com/distribution/distribution/v3/registry/storage/driver/factory"

	// The drivers a store may be configured with register themselves.
	_ "github.com/distribution/distribution/v3/registry/storage/driver/filesystem"
	_ "github.com/distribution/distribution/v3/registry/storage/driver/inmemory"
	_ "github.com/distribution/distribution/v3/registry/storage/driver/s3-aws"
)

// Driver names, as configured.
const (
	Filesystem = "filesystem"
	S3         = "s3"
	InMemory   = "inmemory"
)

// NewDriver returns the storage driver of the given name (filesystem, s3,
// inmemory), created by distribution's factory from its parameters (for
// example rootdirectory; bucket, region, regionendpoint, forcepathstyle,
// accesskey, secretkey). s3 without accesskey and secretkey takes its
// credentials from the environment (AWS_ACCESS_KEY_ID and
// AWS_SECRET_ACCESS_KEY, a shared credentials file, or an instance role).
// The filesystem driver walks its folders with a walk of its own (on
// Linux; see localDriver).
func NewDriver(ctx context.Context, name string, params map[string]any) (storagedriver.StorageDriver, error) {
	if name == S3 {
		name = "s3aws"
	}
	d, err := factory.Create(ctx, name, params)
	if root, ok := params["rootdirectory"].(string); ok && root != "" && name == Filesystem && err == nil {
		return newLocalDriver(d, root), nil
	}
	return d, err
}
