package main

import (
	"context"
	"log/slog"
	"net"
	"os"
	"reflect"
	"strings"

	"github.com/authz-proxy/authz-proxy/internal/config"
	"github.com/authz-proxy/authz-proxy/internal/store"
)

// storeSpec is what the content store opens with: its driver, the driver's
// parameters (the S3 credential among them: never logged) and maxSize.
type storeSpec struct {
	driver  string
	params  map[string]any
	maxSize int64
}

// storeSpecOf reads the store section of c and the files it names; nil
// when c has no store.
func storeSpecOf(c *config.Config) (*storeSpec, error) {
	st := c.Store
	if st == nil {
		return nil, nil
	}
	sp := &storeSpec{driver: st.Driver, maxSize: st.MaxBytes, params: map[string]any{}}
	switch st.Driver {
	case config.StoreFilesystem:
		sp.params["rootdirectory"] = c.Path(st.RootDirectory)
	case config.StoreS3:
		region := st.Region
		if region == "" {
			region = "us-east-1" // S3-compatible services ignore it, but it signs requests
		}
		for k, v := range map[string]string{"bucket": st.Bucket, "region": region, "regionendpoint": st.RegionEndpoint, "rootdirectory": st.RootDirectory} {
			if v != "" {
				sp.params[k] = v
			}
		}
		sp.params["forcepathstyle"] = st.ForcePathStyle
		for field, param := range map[string]string{"accesskeyFile": "accesskey", "secretkeyFile": "secretkey"} {
			name := map[string]string{"accesskeyFile": st.AccessKeyFile, "secretkeyFile": st.SecretKeyFile}[field]
			if name == "" {
				continue
			}
			b, err := os.ReadFile(c.Path(name))
			if err != nil {
				return nil, c.Errorf([]any{"store", field}, "%v", err)
			}
			sp.params[param] = strings.TrimSpace(string(b))
		}
	}
	return sp, nil
}

// same reports whether a and b open the same store.
func (a *storeSpec) same(b *storeSpec) bool { return reflect.DeepEqual(a, b) }

// openStore opens the content store of sp, or returns nil when there is
// none. Its fills in progress are named after this host and the port the
// proxy listens on, so that a restarted proxy clears what it left and
// replicas sharing a bucket keep apart.
func openStore(ctx context.Context, c *config.Config, sp *storeSpec, listen net.Addr, logger *slog.Logger) (*store.Store, error) {
	if sp == nil {
		return nil, nil
	}
	d, err := store.NewDriver(ctx, sp.driver, sp.params)
	if err != nil {
		return nil, c.Errorf([]any{"store"}, "%v", err)
	}
	host, _ := os.Hostname()
	owner := host
	if _, port, err := net.SplitHostPort(listen.String()); err == nil {
		owner += "-" + port
	}
	l := c.Limits
	st, err := store.New(ctx, store.Options{Driver: d, MaxSize: sp.maxSize, Owner: owner, Logger: logger,
		MaxFills: l.MaxFills, MaxFillsPerUpstream: l.MaxFillsPerUpstream, MaxWindowBytes: l.MaxFillWindowBytes})
	if err != nil {
		return nil, c.Errorf([]any{"store"}, "%v", err)
	}
	where := c.Store.RootDirectory
	if sp.driver == config.StoreS3 {
		where = "s3://" + c.Store.Bucket + "/" + strings.TrimPrefix(c.Store.RootDirectory, "/")
	}
	logger.Info("store", "driver", sp.driver, "at", where, "maxSize", sp.maxSize, "owner", owner)
	return st, nil
}
