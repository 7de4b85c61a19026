package oci

import (
	"context"
	"errors"
	"fmt"
	"strings"
)

// LayerReader reads layer l of a manifest being recognised: its bytes, at
// most max of them, checked against l.Digest. A *LayerProblem says why the
// layer cannot be read as one; any other error means it could not be read
// now (the answer is then unknown).
type LayerReader func(ctx context.Context, l Descriptor, max int64) ([]byte, error)

// LayerProblem is a layer that cannot count: over the size limit, not
// matching its digest, or absent where it was read.
type LayerProblem struct {
	// Why says it of the layer, for a reason a person reads.
	Why string
	// Missing is true when the layer is absent where it was read: that
	// depends on the repository, not on the bytes.
	Missing bool
}

func (p *LayerProblem) Error() string { return p.Why }

// Recognize tells whether m positively is a signature or attestation
// artifact, the one check for the proxy with or without its store: m
// passes CheckArtifactManifest, has at most maxLayers layers, and every
// layer, read through read (at most maxLayerSize bytes each), passes
// CheckArtifactLayer. final reports whether the answer follows from the
// bytes alone, and so holds for the digest wherever it is asked (a layer
// missing where it was read does not). An error means a layer could not
// be read.
func Recognize(ctx context.Context, m *Manifest, maxLayers int, maxLayerSize int64, read LayerReader) (r Recognition, final bool, err error) {
	if err := CheckArtifactManifest(m); err != nil {
		return Recognition{Why: why(err)}, true, nil
	}
	if len(m.Layers) > maxLayers {
		return Recognition{Why: fmt.Sprintf("it has %d layers, more than the %d read of an artifact", len(m.Layers), maxLayers)}, true, nil
	}
	for i, l := range m.Layers {
		if l.Size > maxLayerSize {
			return Recognition{Why: fmt.Sprintf("layer %d %s is %d bytes, over the %d-byte limit", i, l.Digest, l.Size, maxLayerSize)}, true, nil
		}
		data, err := read(ctx, l, maxLayerSize)
		var p *LayerProblem
		switch {
		case errors.As(err, &p):
			return Recognition{Why: fmt.Sprintf("layer %d: %s", i, p.Why)}, !p.Missing, nil
		case err != nil:
			return Recognition{}, false, err
		}
		if err := CheckArtifactLayer(l.MediaType, data); err != nil {
			return Recognition{Why: fmt.Sprintf("layer %d: %s", i, why(err))}, true, nil
		}
	}
	return Recognition{Artifact: true}, true, nil
}

// why is the reason an ErrNotArtifact error gives.
func why(err error) string {
	return strings.TrimPrefix(err.Error(), ErrNotArtifact.Error()+": ")
}
