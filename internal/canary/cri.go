package canary

import (
	"context"
	"fmt"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// CRI pulls through a runtime's CRI image service (containerd's or CRI-O's
// socket): the very call the kubelet makes, so the runtime's own
// configuration (hosts.toml, registries.conf) decides where it goes.
type CRI struct {
	conn   *grpc.ClientConn
	images runtimeapi.ImageServiceClient
}

// DialCRI connects to the runtime's socket, such as
// unix:///run/containerd/containerd.sock or unix:///var/run/crio/crio.sock
// (a bare path is taken as a unix socket).
func DialCRI(endpoint string) (*CRI, error) {
	if strings.HasPrefix(endpoint, "/") {
		endpoint = "unix://" + endpoint
	}
	conn, err := grpc.NewClient(endpoint, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, fmt.Errorf("CRI %s: %w", endpoint, err)
	}
	return &CRI{conn: conn, images: runtimeapi.NewImageServiceClient(conn)}, nil
}

// Close closes the connection.
func (c *CRI) Close() error { return c.conn.Close() }

// Pull asks the runtime to pull image, without credentials (the proxy
// holds the upstreams'), and returns the runtime's image reference.
func (c *CRI) Pull(ctx context.Context, image string) (string, error) {
	resp, err := c.images.PullImage(ctx, &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: image}})
	if err != nil {
		return "", err
	}
	return resp.GetImageRef(), nil
}

// Remove deletes the image from the node.
func (c *CRI) Remove(ctx context.Context, ref string) error {
	_, err := c.images.RemoveImage(ctx, &runtimeapi.RemoveImageRequest{Image: &runtimeapi.ImageSpec{Image: ref}})
	return err
}
