package source

import (
	"context"

	"github.com/authz-proxy/authz-proxy/internal/oci"
)

// Recognize tells whether m, fetched from repo, positively is a signature
// or attestation artifact, served without policy (oci.Recognize): its
// layers are read from the upstream; with a store, when the upstream
// fails, from what the store holds for repo (where a client pulling the
// artifact through the proxy put them), checked the same way. An answer
// that follows from the bytes alone is kept per digest. An error means the
// layers could not be read.
func (s *Source) Recognize(ctx context.Context, repo string, m *oci.Manifest) (oci.Recognition, error) {
	if r, ok := s.recognized.Get(m.Digest); ok {
		return r, nil
	}
	if s.outage() {
		if r, err := s.recognize(ctx, m, s.storedLayer(repo)); err == nil {
			return r, nil
		}
	}
	r, err := s.recognize(ctx, m, func(ctx context.Context, l oci.Descriptor, max int64) ([]byte, error) {
		return s.up.Layer(ctx, repo, l, max)
	})
	if err == nil || s.store == nil || !unavailable(err) {
		return r, err
	}
	s.outageBegins()
	if r, serr := s.recognize(ctx, m, s.storedLayer(repo)); serr == nil {
		return r, nil
	}
	return r, err
}

// recognize is oci.Recognize within the upstream's limits, keeping an
// answer that follows from the bytes.
func (s *Source) recognize(ctx context.Context, m *oci.Manifest, read oci.LayerReader) (oci.Recognition, error) {
	l := s.up.Limits()
	r, final, err := oci.Recognize(ctx, m, l.MaxSignatures+l.MaxAttestations, l.MaxEnvelopeSize, read)
	if err != nil {
		return oci.Recognition{}, err
	}
	if final {
		s.recognized.Add(m.Digest, r)
	}
	return r, nil
}

// storedLayer reads layers from the store, as blobs of repo: a layer the
// store does not hold for repo cannot be read (the answer stays unknown).
func (s *Source) storedLayer(repo string) oci.LayerReader {
	return func(ctx context.Context, l oci.Descriptor, max int64) ([]byte, error) {
		sctx, cancel := storeContext(ctx)
		defer cancel()
		return s.store.Read(sctx, s.scope(repo), l.Digest, max)
	}
}
