package source

import (
	"context"
	"errors"
	"path"
	"strings"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"

	"github.com/authz-proxy/authz-proxy/internal/oci"
	"github.com/authz-proxy/authz-proxy/internal/store"
	"github.com/authz-proxy/authz-proxy/internal/upstream"
)

// Tags say how the tags of one upstream are resolved when a store is
// configured.
type Tags struct {
	// Immutable are globs (path.Match, `*` within a tag) of tags that never
	// move, such as v*.*.*: served from their last resolution without
	// asking the upstream.
	Immutable []string
	// StaleIfError is how long after the upstream last confirmed a tag's
	// digest that digest is served when the upstream fails (connection,
	// timeout, 5xx, 429); 0: never.
	StaleIfError time.Duration
}

func (t Tags) immutable(tag string) bool {
	for _, g := range t.Immutable {
		if ok, _ := path.Match(g, tag); ok {
			return true
		}
	}
	return false
}

const (
	// tagRefresh: a tag's record is rewritten at most this often while its
	// digest stays the same, which is how stale a replica's view of its
	// last resolution may be.
	tagRefresh = time.Minute
	// tagTouch: an immutable tag's record is rewritten this often while it
	// is served, so that sweeps keep it.
	tagTouch = 24 * time.Hour
)

// tagBook remembers the last resolution of each tag: in memory, and in the
// store (one small object per tag) for restarts and replicas.
type tagBook struct {
	store *store.Store
	mem   *lru.Cache[tagKey, tagEntry]
}

type tagKey struct {
	scope store.Scope
	tag   string
}

type tagEntry struct {
	digest            string
	resolved, written time.Time
}

func newTagBook(st *store.Store) *tagBook {
	mem, _ := lru.New[tagKey, tagEntry](1 << 16)
	return &tagBook{store: st, mem: mem}
}

// last returns k's last resolution: from memory when it was resolved
// within maxAge (any age when maxAge < 0), else the newer of memory's and
// the store's, which a replica may have written since.
func (b *tagBook) last(ctx context.Context, k tagKey, maxAge time.Duration) (tagEntry, bool) {
	e, ok := b.mem.Get(k)
	if ok && (maxAge < 0 || time.Since(e.resolved) <= maxAge) {
		return e, true
	}
	r, err := b.store.Tag(ctx, k.scope, k.tag)
	if err != nil {
		return e, ok
	}
	if !ok || r.Resolved.After(e.resolved) {
		e = tagEntry{digest: r.Digest, resolved: r.Resolved, written: r.Written}
		b.mem.Add(k, e)
	}
	return e, true
}

// resolved records that the upstream just said k points at digest.
func (b *tagBook) resolved(k tagKey, digest string) {
	now := time.Now()
	prev, ok := b.mem.Get(k)
	e := tagEntry{digest: digest, resolved: now, written: prev.written}
	if !ok || prev.digest != digest || now.Sub(prev.written) > tagRefresh {
		e.written = now
		b.store.SetTag(k.scope, k.tag, store.TagRecord{Digest: digest, Resolved: now})
	}
	b.mem.Add(k, e)
}

// served notes that e, k's last resolution, was served without asking.
func (b *tagBook) served(k tagKey, e tagEntry) {
	if now := time.Now(); now.Sub(e.written) > tagTouch {
		e.written = now
		b.mem.Add(k, e)
		b.store.SetTag(k.scope, k.tag, store.TagRecord{Digest: e.digest, Resolved: e.resolved})
	}
}

// forget drops k, if it is known: the upstream says the tag does not
// exist (any more).
func (b *tagBook) forget(ctx context.Context, k tagKey) {
	if _, ok := b.mem.Get(k); ok {
		b.mem.Remove(k)
	} else if _, err := b.store.Tag(ctx, k.scope, k.tag); err != nil {
		return
	}
	b.store.ForgetTag(k.scope, k.tag)
}

// Resolve returns the digest that a request for ref in repo names before
// its manifest is fetched: ref's own digest when it is a sha256 one; for a
// tag, with a store, its resolution: an immutable tag's last resolution
// without asking; else the upstream's answer to a HEAD (Docker Hub does not
// count HEADs against its pull limit), recorded; else, when the upstream
// fails, the last known digest if the upstream confirmed it within
// staleIfError (stale). Without a store, a HEAD by tag (head) costs one
// upstream HEAD to learn the digest. "" with no error: unknown, or the
// upstream gave no usable digest; the manifest is then fetched.
func (s *Source) Resolve(ctx context.Context, repo string, ref oci.Reference, head bool) (digest string, stale bool, err error) {
	switch {
	case ref.Digest != "":
		if strings.HasPrefix(ref.Digest, "sha256:") {
			return ref.Digest, false, nil
		}
		return "", false, nil
	case s.book != nil:
		return s.resolveTag(ctx, repo, ref.Tag)
	case !head:
		return "", false, nil
	}
	d, err := s.head(ctx, repo, ref.Tag)
	if err != nil || !usable(d) {
		return "", false, nil // the GET path reports the error properly
	}
	return d, false, nil
}

// head asks the upstream which digest repo:tag points at.
func (s *Source) head(ctx context.Context, repo, tag string) (string, error) {
	start := time.Now()
	d, err := s.up.Head(ctx, repo, tag)
	s.done("head", start, err)
	return d, err
}

// usable reports whether d, a digest the upstream gave in a header, is a
// well-formed sha256 digest.
func usable(d string) bool {
	_, err := oci.ParseDigest(d)
	return err == nil && strings.HasPrefix(d, "sha256:")
}

// resolveTag is Resolve of a tag with a store.
func (s *Source) resolveTag(ctx context.Context, repo, tag string) (digest string, stale bool, err error) {
	k := tagKey{s.scope(repo), tag}
	if s.tags.immutable(tag) {
		if e, ok := s.book.last(ctx, k, -1); ok {
			s.book.served(k, e)
			return e.digest, false, nil
		}
	}
	if s.outage() {
		if e, ok := s.staleTag(ctx, k); ok {
			return e.digest, true, nil
		}
	}
	d, err := s.head(ctx, repo, tag)
	switch {
	case err == nil:
		if !usable(d) {
			return "", false, nil
		}
		s.book.resolved(k, d)
		return d, false, nil
	case errors.Is(err, upstream.ErrNotFound):
		s.book.forget(ctx, k)
		return "", false, err
	case !unavailable(err):
		return "", false, nil // the GET says what is wrong
	}
	s.outageBegins()
	if e, ok := s.staleTag(ctx, k); ok {
		return e.digest, true, nil
	}
	return "", false, err
}

// staleTag returns k's last resolution if the upstream confirmed it within
// staleIfError.
func (s *Source) staleTag(ctx context.Context, k tagKey) (tagEntry, bool) {
	if s.tags.StaleIfError <= 0 {
		return tagEntry{}, false
	}
	e, ok := s.book.last(ctx, k, s.tags.StaleIfError)
	if !ok || time.Since(e.resolved) > s.tags.StaleIfError {
		return tagEntry{}, false
	}
	return e, true
}
