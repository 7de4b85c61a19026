package source

import (
	"context"
	"errors"
	"strings"
	"time"

	"github.com/authz-proxy/authz-proxy/internal/limits"
	"github.com/authz-proxy/authz-proxy/internal/oci"
	"github.com/authz-proxy/authz-proxy/internal/upstream"
)

// Manifest fetches the manifest at repo:ref from the upstream, once for
// all concurrent callers, its digest computed from the bytes. With a store
// the bytes are stored for repo, and when the upstream fails, a manifest
// by digest comes from what the proxy holds for repo.
func (s *Source) Manifest(ctx context.Context, repo, ref string) (*oci.Manifest, error) {
	start := time.Now()
	m, err := s.up.Manifest(ctx, repo, ref)
	s.done("manifest", start, err)
	switch {
	case s.store == nil:
		return m, err
	case err == nil:
		s.store.PutManifest(s.scope(repo), m.Digest, m.Raw)
		return m, nil
	case oci.IsDigest(ref) && unavailable(err):
		s.failed(err)
		if held := s.Held(ctx, repo, ref); held != nil {
			return held, nil
		}
	}
	return nil, err
}

// Fetch gets the manifest a request for ref in repo asks for. For a tag,
// it asks by resolved, the digest the tag resolved to, when there is one
// (the bytes are checked against it, so the tag cannot move in between),
// falling back to the tag for a registry that has no manifest by that
// digest; the tag's resolution is recorded when the manifest came by tag.
func (s *Source) Fetch(ctx context.Context, repo string, ref oci.Reference, resolved string) (*oci.Manifest, error) {
	if ref.Tag == "" {
		return s.Manifest(ctx, repo, ref.String())
	}
	if resolved != "" {
		m, err := s.Manifest(ctx, repo, resolved)
		if !errors.Is(err, upstream.ErrNotFound) {
			return m, err
		}
	}
	m, err := s.Manifest(ctx, repo, ref.Tag)
	if err == nil {
		s.book.resolved(tagKey{s.scope(repo), ref.Tag}, m.Digest)
	}
	return m, err
}

// Held returns the verified bytes of the manifest with sha256 digest that
// the proxy holds for repo: fetched from this upstream in repo lately (in
// memory), or stored for repo (then kept in memory). nil when neither. A
// blob of that digest is never one: the store keeps manifests apart.
func (s *Source) Held(ctx context.Context, repo, digest string) *oci.Manifest {
	if m, ok := s.up.Cached(repo, digest); ok {
		if s.store != nil {
			// Fetched without the store, as evidence: kept from now on
			// (PutManifest writes once per process).
			s.store.PutManifest(s.scope(repo), digest, m.Raw)
		}
		return m
	}
	if s.store == nil || !strings.HasPrefix(digest, "sha256:") {
		return nil
	}
	raw, err := s.store.ReadManifest(ctx, s.scope(repo), digest, limits.MaxManifestSize)
	if err != nil {
		return nil
	}
	m, err := oci.ParseManifest(raw, "")
	if err != nil || m.Digest != digest {
		return nil
	}
	s.up.Hold(repo, m)
	return m
}

// Served notes that m was served to a client of repo. With a store, what
// m names through a field the registry validated in repo when m was
// pushed becomes readable in repo from the store: an image manifest's
// config and layers (blobs), an index's or manifest list's manifests.
// Nothing else m names is: not a list's config, not a subject, not
// annotations, which no registry checks.
func (s *Source) Served(repo string, m *oci.Manifest) {
	if s.store == nil {
		return
	}
	scope := s.scope(repo)
	if m.IsIndex() {
		digests := make([]string, len(m.Manifests))
		for i, d := range m.Manifests {
			digests[i] = d.Digest
		}
		s.store.LinkManifests(scope, m.Digest, digests...)
		return
	}
	digests := make([]string, 0, len(m.Layers)+1)
	if m.Config.Digest != "" {
		digests = append(digests, m.Config.Digest)
	}
	for _, l := range m.Layers {
		digests = append(digests, l.Digest)
	}
	s.store.LinkBlobs(scope, m.Digest, digests...)
}
