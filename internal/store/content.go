package store

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/authz-proxy/authz-proxy/internal/oci"
)

// Small content: manifests by digest, the notes kept about a manifest for
// a scope (the signatures and attestations it was judged on), small blobs
// read whole, and the last resolution of each tag. Each is written in the background, off the
// request path: a write that is lost costs an upstream request later,
// nothing else.

const (
	// maxPendingBytes and maxPendingWrites bound the content held in
	// memory by background writes waiting their turn, and their number;
	// past either, further writes are skipped.
	maxPendingBytes  = 64 << 20
	maxPendingWrites = 4096
	// tagRecordTTL: a sweep deletes tag records written longer ago.
	tagRecordTTL = 30 * 24 * time.Hour
)

var noteKeyRE = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,63}$`)

// PutManifest stores data, the bytes of manifest dgst that scope's
// upstream served in scope's repository, and lets that repository read it.
// It returns at once; the write happens in the background. Data that does
// not hash to dgst is not stored.
func (s *Store) PutManifest(scope Scope, dgst string, data []byte) {
	o, ok := scope.object(manifestKind, dgst)
	if !ok {
		return
	}
	// The everyday case, a manifest served again: stored, linked.
	if s.held.Contains(o.key()) && s.links.Contains(link{o.key(), scope.Repository}) {
		s.touch(o)
		return
	}
	if int64(len(data)) > s.o.MaxSize {
		return
	}
	h := o.hash()
	h.Write(data)
	if hex.EncodeToString(h.Sum(nil)) != o.hex {
		return
	}
	s.link(scope.Repository, o)
	if s.held.Contains(o.key()) {
		s.touch(o)
		return
	}
	size := int64(len(data))
	s.inBackgroundHolding("put", size, func(ctx context.Context) error {
		if fi, err := s.d.Stat(ctx, o.dataPath()); err == nil && fi.Size() == size {
			s.held.Add(o.key(), struct{}{})
			return s.d.PutContent(ctx, o.usedPath(), nil)
		}
		if err := s.d.PutContent(ctx, o.dataPath(), data); err != nil {
			return err
		}
		s.held.Add(o.key(), struct{}{})
		s.touched.Add(o.key(), time.Now())
		if s.size.Add(size) > s.o.MaxSize {
			s.sweepSoon()
		}
		return s.d.PutContent(ctx, o.usedPath(), nil)
	})
}

// ReadManifest returns the bytes of manifest dgst, at most max of them,
// when the store holds them for scope's upstream and scope's repository
// may read them (its upstream served them there, or they are listed in an
// index served there), checked against the digest. ErrNotStored: not
// stored, not for scope, larger than max, or found corrupt (then
// evicted); ask the upstream.
func (s *Store) ReadManifest(ctx context.Context, scope Scope, dgst string, max int64) ([]byte, error) {
	return s.readWhole(ctx, scope, manifestKind, dgst, max)
}

// Read returns the whole of blob dgst, at most max bytes, as ReadManifest
// does for manifests: for the small blobs that are read whole (the layers
// of a signature artifact), never for a blob streamed to a client.
func (s *Store) Read(ctx context.Context, scope Scope, dgst string, max int64) ([]byte, error) {
	return s.readWhole(ctx, scope, blobKind, dgst, max)
}

func (s *Store) readWhole(ctx context.Context, scope Scope, k kind, dgst string, max int64) ([]byte, error) {
	o, ok := scope.object(k, dgst)
	if !ok || !s.linked(ctx, scope.Repository, o) || s.down(&s.readDown) {
		return nil, ErrNotStored
	}
	rc, err := s.d.Reader(ctx, o.dataPath(), 0)
	if err != nil {
		s.held.Remove(o.key())
		if !isNotFound(err) && ctx.Err() == nil {
			s.failed(&s.readDown, "read", err)
		}
		return nil, ErrNotStored
	}
	defer closeQuietly(rc)
	b, err := io.ReadAll(io.LimitReader(rc, max+1))
	switch {
	case err != nil:
		if ctx.Err() == nil {
			s.failed(&s.readDown, "read", err)
		}
		return nil, ErrNotStored
	case int64(len(b)) > max:
		return nil, ErrNotStored
	}
	h := o.hash()
	h.Write(b)
	if got := hex.EncodeToString(h.Sum(nil)); got != o.hex {
		// Logged and counted there; to the caller it is not stored, and
		// the upstream is asked.
		_ = s.evictCorrupt(o, "the bytes hash to "+o.alg+":"+got)
		return nil, ErrNotStored
	}
	s.held.Add(o.key(), struct{}{})
	s.touch(o)
	s.stats.reads.Add(1)
	return b, nil
}

// notesDir is where the notes about manifest o for repo are kept: with
// o, so that they are counted in its size and evicted with it.
func (o object) notesDir(repo string) string { return o.dir() + "/notes/" + repo }

// PutNote keeps doc, a small document about manifest dgst for scope (what
// the upstream answered there about its signatures and attestations),
// under key (lower-case letters, digits and '-'), replacing the note of
// that key. It returns at once; the write happens in the background. A
// note is evicted with its manifest.
func (s *Store) PutNote(scope Scope, dgst, key string, doc []byte) {
	o, ok := scope.object(manifestKind, dgst)
	if !ok || !noteKeyRE.MatchString(key) {
		return
	}
	size := int64(len(doc))
	s.inBackgroundHolding("note", size, func(ctx context.Context) error {
		if err := s.d.PutContent(ctx, o.notesDir(scope.Repository)+"/_"+key, doc); err != nil {
			return err
		}
		if s.size.Add(size) > s.o.MaxSize {
			s.sweepSoon()
		}
		return nil
	})
}

// Note returns the note key about manifest dgst for scope, at most max
// bytes; ErrNotStored when there is none.
func (s *Store) Note(ctx context.Context, scope Scope, dgst, key string, max int64) ([]byte, error) {
	o, ok := scope.object(manifestKind, dgst)
	if !ok || !noteKeyRE.MatchString(key) {
		return nil, ErrNotStored
	}
	return s.small(ctx, o.notesDir(scope.Repository)+"/_"+key, max)
}

// NoteKeys lists the keys of the notes kept about manifest dgst for scope
// that begin with prefix, sorted; none when the store cannot tell.
func (s *Store) NoteKeys(ctx context.Context, scope Scope, dgst, prefix string) []string {
	o, ok := scope.object(manifestKind, dgst)
	if !ok || s.down(&s.readDown) {
		return nil
	}
	sctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	dir := o.notesDir(scope.Repository)
	paths, err := s.d.List(sctx, dir)
	if err != nil {
		if !isNotFound(err) && ctx.Err() == nil {
			s.failed(&s.readDown, "list", err)
		}
		return nil
	}
	var keys []string
	for _, p := range paths {
		// The notes of repositories nested in this one are folders
		// beside them; a note's name starts with '_'.
		if k, ok := strings.CutPrefix(p, dir+"/_"); ok && strings.HasPrefix(k, prefix) && noteKeyRE.MatchString(k) {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	return keys
}

// small reads a small object whole, at most max bytes; ErrNotStored when
// it is absent, larger, or the store fails.
func (s *Store) small(ctx context.Context, path string, max int64) ([]byte, error) {
	if s.down(&s.readDown) {
		return nil, ErrNotStored
	}
	rc, err := s.d.Reader(ctx, path, 0)
	if err != nil {
		if !isNotFound(err) && ctx.Err() == nil {
			s.failed(&s.readDown, "read", err)
		}
		return nil, ErrNotStored
	}
	defer closeQuietly(rc)
	b, err := io.ReadAll(io.LimitReader(rc, max+1))
	if err != nil {
		if ctx.Err() == nil {
			s.failed(&s.readDown, "read", err)
		}
		return nil, ErrNotStored
	}
	if int64(len(b)) > max {
		return nil, ErrNotStored
	}
	return b, nil
}

// TagRecord is the last resolution of a tag of one scope.
type TagRecord struct {
	// Digest is what the tag pointed at.
	Digest string `json:"digest"`
	// Resolved is when the upstream last said so.
	Resolved time.Time `json:"resolved"`
	// Written is when the record was written; a sweep deletes records not
	// written for 30 days.
	Written time.Time `json:"written"`
}

// tagPath is the one object of a tag of scope. Repository components
// start with a letter or digit, so "_tags" is never one of them.
func tagPath(scope Scope, tag string) string {
	return root + "/" + upstreamDir(scope.Upstream) + "/tags/" + scope.Repository + "/_tags/" + tag
}

// Tag returns the last resolution of tag in scope stored by any process
// sharing the store; ErrNotStored when there is none.
func (s *Store) Tag(ctx context.Context, scope Scope, tag string) (TagRecord, error) {
	if !scope.valid() || !oci.ValidTag(tag) {
		return TagRecord{}, ErrNotStored
	}
	b, err := s.small(ctx, tagPath(scope, tag), 4096)
	if err != nil {
		return TagRecord{}, err
	}
	var r TagRecord
	if err := json.Unmarshal(b, &r); err != nil {
		return TagRecord{}, ErrNotStored
	}
	if _, ok := parseDigest(r.Digest); !ok {
		return TagRecord{}, ErrNotStored
	}
	return r, nil
}

// SetTag records r, stamped with the time of writing, as the last
// resolution of tag in scope. It returns at once; the write happens in the
// background.
func (s *Store) SetTag(scope Scope, tag string, r TagRecord) {
	if _, ok := parseDigest(r.Digest); !ok || !scope.valid() || !oci.ValidTag(tag) {
		return
	}
	r.Written = time.Now().UTC()
	r.Resolved = r.Resolved.UTC()
	b, err := json.Marshal(r)
	if err != nil {
		return
	}
	s.inBackground("tag", func(ctx context.Context) error {
		return s.d.PutContent(ctx, tagPath(scope, tag), b)
	})
}

// ForgetTag deletes the record of tag in scope: the upstream said the tag
// is gone.
func (s *Store) ForgetTag(scope Scope, tag string) {
	if !scope.valid() || !oci.ValidTag(tag) {
		return
	}
	s.inBackground("tag", func(ctx context.Context) error {
		if err := s.d.Delete(ctx, tagPath(scope, tag)); err != nil && !isNotFound(err) {
			return err
		}
		return nil
	})
}

// evictCorrupt reports stored bytes of o that do not match its digest
// and deletes them; the next request fetches them again.
func (s *Store) evictCorrupt(o object, why string) error {
	s.stats.corrupt.Add(1)
	s.log.Error("stored content does not match its digest: evicted, never served whole", "digest", o.String(), "kind", o.kind.folder(), "driver", s.d.Name(), "why", why)
	s.touched.Remove(o.key())
	s.held.Remove(o.key())
	s.tagged.Remove(o.key())
	ctx, cancel := context.WithTimeout(context.WithoutCancel(s.ctx), opTimeout)
	defer cancel()
	// Its links and use mark stay: they are still true.
	if err := s.d.Delete(ctx, o.dataPath()); err != nil && !isNotFound(err) {
		s.failed(&s.writeDown, "evict", err)
	}
	return fmt.Errorf("%w: %s: %s", ErrCorrupt, o, why)
}
