//go:build e2e

package e2e_test

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"path/filepath"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/partial"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// ociImage is a runnable OCI image: an OCI config for the platform and two
// tar+gzip layers of random content.
func ociImage(os, arch string) (v1.Image, error) {
	img := mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), types.OCIConfigJSON)
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = os, arch
	cf.Config.Cmd = []string{"/bin/true"}
	if img, err = mutate.ConfigFile(img, cf); err != nil {
		return nil, err
	}
	for range 2 {
		l, err := random.Layer(1024, types.OCILayer)
		if err != nil {
			return nil, err
		}
		if img, err = mutate.AppendLayers(img, l); err != nil {
			return nil, err
		}
	}
	return img, nil
}

// payloadFile is the file that the disguised image's layer holds.
const payloadFile = "bin/payload"

// disguisedImage is a runnable OCI image whose one layer, a tar+gzip holding
// payloadFile, is labelled application/octet-stream, with subject set.
func disguisedImage(subject *v1.Descriptor) (v1.Image, error) {
	var b bytes.Buffer
	zw := gzip.NewWriter(&b)
	tw := tar.NewWriter(zw)
	script := []byte("#!/bin/sh\necho payload ran\n")
	if err := tw.WriteHeader(&tar.Header{Name: payloadFile, Mode: 0o755, Size: int64(len(script)), Typeflag: tar.TypeReg}); err != nil {
		return nil, err
	}
	if _, err := tw.Write(script); err != nil {
		return nil, err
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	img := mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), types.OCIConfigJSON)
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", "amd64"
	cf.Config.Cmd = []string{"/" + payloadFile}
	if img, err = mutate.ConfigFile(img, cf); err != nil {
		return nil, err
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b.Bytes())), nil },
		tarball.WithMediaType("application/octet-stream"))
	if err != nil {
		return nil, err
	}
	if img, err = mutate.AppendLayers(img, layer); err != nil {
		return nil, err
	}
	return mutate.Subject(img, *subject).(v1.Image), nil
}

// ociIndex is a two-platform OCI image index of ociImages.
func ociIndex() (v1.ImageIndex, error) {
	idx := mutate.IndexMediaType(empty.Index, types.OCIImageIndex)
	for _, arch := range []string{"amd64", "arm64"} {
		img, err := ociImage("linux", arch)
		if err != nil {
			return nil, err
		}
		idx = mutate.AppendManifests(idx, mutate.IndexAddendum{
			Add:        img,
			Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: arch}},
		})
	}
	return idx, nil
}

// upstreamRef names repo:tag (or repo@digest) on the upstream registry.
func (w *world) upstreamRef(ref string) (name.Reference, error) {
	return name.ParseReference(w.reg+"/"+ref, name.Insecure)
}

// pushImage writes img at repo:tag on the upstream and returns its digest.
func (w *world) pushImage(ctx context.Context, img v1.Image, ref string) (v1.Hash, error) {
	r, err := w.upstreamRef(ref)
	if err != nil {
		return v1.Hash{}, err
	}
	if err := remote.Write(r, img, remote.WithContext(ctx)); err != nil {
		return v1.Hash{}, fmt.Errorf("pushing %s: %w", r, err)
	}
	return img.Digest()
}

// pushIndex writes idx (and its images) at repo:tag on the upstream and
// returns its digest and its children's.
func (w *world) pushIndex(ctx context.Context, idx v1.ImageIndex, ref string) (v1.Hash, []v1.Hash, error) {
	r, err := w.upstreamRef(ref)
	if err != nil {
		return v1.Hash{}, nil, err
	}
	if err := remote.WriteIndex(r, idx, remote.WithContext(ctx)); err != nil {
		return v1.Hash{}, nil, fmt.Errorf("pushing %s: %w", r, err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		return v1.Hash{}, nil, err
	}
	var children []v1.Hash
	for _, m := range im.Manifests {
		children = append(children, m.Digest)
	}
	d, err := idx.Digest()
	return d, children, err
}

// push puts every test image on the upstream.
func (w *world) push(ctx context.Context) error {
	i := &w.img
	oci := func(ref string) func() (v1.Hash, error) {
		return func() (v1.Hash, error) {
			img, err := ociImage("linux", "amd64")
			if err != nil {
				return v1.Hash{}, err
			}
			return w.pushImage(ctx, img, ref)
		}
	}
	docker := func(ref string) func() (v1.Hash, error) {
		return func() (v1.Hash, error) {
			// random.Image: Docker schema 2 manifest, gzip tar layers.
			img, err := random.Image(1024, 2)
			if err != nil {
				return v1.Hash{}, err
			}
			return w.pushImage(ctx, img, ref)
		}
	}
	for _, p := range []struct {
		dst  *v1.Hash
		push func() (v1.Hash, error)
	}{
		{&i.signed, docker("e2e/app:signed")},
		{&i.unsigned, oci("e2e/app:unsigned")},
		{&i.rogue, oci("e2e/app:rogue")},
		{&i.copied, oci("e2e/app:copied")},
		{&i.referrer, oci("e2e/referrer:signed")},
		{&i.tool, oci("tools/debug:latest")},
		{&i.misc, oci("misc/app:v1")},
		{&i.trojanBase, oci("e2e/trojan:base")},
	} {
		d, err := p.push()
		if err != nil {
			return err
		}
		*p.dst = d
	}
	var err error
	for _, p := range []struct {
		dst      *v1.Hash
		children *[]v1.Hash
		ref      string
	}{
		{&i.index, &i.children, "e2e/multiarch:v1"},
		{&i.badIndex, &i.badChildren, "e2e/multiarch:unsigned"},
	} {
		idx, err := ociIndex()
		if err != nil {
			return err
		}
		if *p.dst, *p.children, err = w.pushIndex(ctx, idx, p.ref); err != nil {
			return err
		}
	}

	// Runnable images that carry a subject and sit under a cosign
	// signature tag: they must be judged like any other image.
	base, err := w.describe(ctx, "e2e/trojan:base")
	if err != nil {
		return err
	}
	trojan, err := ociImage("linux", "amd64")
	if err != nil {
		return err
	}
	if i.trojanOCI, err = w.pushImage(ctx, mutate.Subject(trojan, *base).(v1.Image), "e2e/trojan:"+sigTag(i.trojanBase)); err != nil {
		return err
	}
	dockerTrojan, err := random.Image(1024, 2)
	if err != nil {
		return err
	}
	if i.trojanDock, err = w.pushImage(ctx, mutate.Subject(dockerTrojan, *base).(v1.Image), "e2e/trojan2:"+sigTag(i.trojanBase)); err != nil {
		return err
	}

	// The same, labelled as no image layer: clients that unpack by content
	// (containers/image) would still run it.
	disguised, err := disguisedImage(base)
	if err != nil {
		return err
	}
	if i.disguised, err = w.pushImage(ctx, disguised, "e2e/disguised:"+sigTag(i.trojanBase)); err != nil {
		return err
	}

	// A tarball for crane push.
	img, err := random.Image(512, 1)
	if err != nil {
		return err
	}
	tag, err := name.NewTag("lab.example/e2e/pushed:v1")
	if err != nil {
		return err
	}
	i.tarball = filepath.Join(w.dir, "push.tar")
	return tarball.WriteToFile(i.tarball, tag, img)
}

// describe returns the descriptor of ref on the upstream.
func (w *world) describe(ctx context.Context, ref string) (*v1.Descriptor, error) {
	r, err := w.upstreamRef(ref)
	if err != nil {
		return nil, err
	}
	img, err := remote.Image(r, remote.WithContext(ctx))
	if err != nil {
		return nil, err
	}
	return partial.Descriptor(img)
}
