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

// Tags say how the tags of one upstream are resolved.
type Tags struct {
	// TTL is how long after the upstream confirmed a tag's digest that
	// digest is used without asking again: 0, ask on every request (the
	// concurrent requests for one tag share one round trip). It trades how
	// soon a moved tag is seen for upstream load.
	TTL time.Duration
	// Immutable are globs (path.Match, `*` within a tag) of tags that never
	// move, such as v*.*.*: with a store, served from their last resolution
	// without asking the upstream.
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

// tagBook remembers the last resolution of each tag: in memory, and, with
// a store, in the store (one small object per tag) for restarts and
// replicas.
type tagBook struct {
	store *store.Store // nil: memory only
	mem   *lru.Cache[tagKey, tagEntry]
	now   func() time.Time
}

type tagKey struct {
	scope store.Scope
	tag   string
}

type tagEntry struct {
	digest            string
	resolved, written time.Time
}

func newTagBook(st *store.Store, now func() time.Time) *tagBook {
	mem, _ := lru.New[tagKey, tagEntry](1 << 16)
	return &tagBook{store: st, mem: mem, now: now}
}

// known reports whether k was resolved before, as far as memory goes.
func (b *tagBook) known(k tagKey) bool { return b.mem.Contains(k) }

// fresh returns k's last resolution when the upstream confirmed it within
// ttl, from memory.
func (b *tagBook) fresh(k tagKey, ttl time.Duration) (tagEntry, bool) {
	e, ok := b.mem.Get(k)
	if !ok || b.now().Sub(e.resolved) >= ttl {
		return tagEntry{}, false
	}
	return e, true
}

// last returns k's last resolution: from memory when it was resolved
// within maxAge (any age when maxAge < 0), else the newer of memory's and
// the store's, which a replica may have written since.
func (b *tagBook) last(ctx context.Context, k tagKey, maxAge time.Duration) (tagEntry, bool) {
	e, ok := b.mem.Get(k)
	if ok && (maxAge < 0 || b.now().Sub(e.resolved) <= maxAge) || b.store == nil {
		return e, ok
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
	now := b.now()
	prev, ok := b.mem.Get(k)
	e := tagEntry{digest: digest, resolved: now, written: prev.written}
	if b.store != nil && (!ok || prev.digest != digest || now.Sub(prev.written) > tagRefresh) {
		e.written = now
		b.store.SetTag(k.scope, k.tag, store.TagRecord{Digest: digest, Resolved: now})
	}
	b.mem.Add(k, e)
}

// served notes that e, k's last resolution, was served without asking.
func (b *tagBook) served(k tagKey, e tagEntry) {
	if now := b.now(); b.store != nil && now.Sub(e.written) > tagTouch {
		e.written = now
		b.mem.Add(k, e)
		b.store.SetTag(k.scope, k.tag, store.TagRecord{Digest: e.digest, Resolved: e.resolved})
	}
}

// forget drops k, if it is known: the upstream says the tag does not
// exist (any more).
func (b *tagBook) forget(ctx context.Context, k tagKey) {
	ok := b.mem.Remove(k)
	if b.store == nil {
		return
	}
	if !ok {
		if _, err := b.store.Tag(ctx, k.scope, k.tag); err != nil {
			return
		}
	}
	b.store.ForgetTag(k.scope, k.tag)
}

// Resolve returns the digest that a request for ref in repo names before
// its manifest is fetched: ref's own digest when it is a sha256 one; for a
// tag, GET and HEAD alike, the digest the upstream confirmed within tagTTL,
// without asking; with a store, an immutable tag's last resolution without
// asking; else the upstream's answer to a HEAD (Docker Hub does not count
// HEADs against its pull limit; concurrent requests for one tag share it),
// recorded; else, with a store and the upstream failing, the last known
// digest if the upstream confirmed it within staleIfError (stale). "" with
// no error: a tag never resolved without a store (its manifest is fetched
// by the tag, which resolves it), or the upstream gave no usable digest.
func (s *Source) Resolve(ctx context.Context, repo string, ref oci.Reference) (digest string, stale bool, err error) {
	if ref.Digest != "" {
		if strings.HasPrefix(ref.Digest, "sha256:") {
			return ref.Digest, false, nil
		}
		return "", false, nil
	}
	return s.resolveTag(ctx, repo, ref.Tag)
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

// resolveTag is Resolve of a tag.
func (s *Source) resolveTag(ctx context.Context, repo, tag string) (digest string, stale bool, err error) {
	k := tagKey{s.scope(repo), tag}
	if s.tags.TTL > 0 {
		if e, ok := s.book.fresh(k, s.tags.TTL); ok {
			return e.digest, false, nil
		}
	}
	if s.store == nil && !s.book.known(k) {
		// Nothing is held for a tag never resolved: one GET by tag (shared
		// by concurrent requests) brings its digest and its bytes at once.
		return "", false, nil
	}
	if s.store != nil && s.tags.immutable(tag) {
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
	case s.store == nil:
		return "", false, err
	}
	s.failed(err)
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
	if !ok || s.book.now().Sub(e.resolved) > s.tags.StaleIfError {
		return tagEntry{}, false
	}
	return e, true
}
