package store

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"regexp"
	"strings"
	"time"
)

// Small content: manifests by digest, the notes kept about a digest for a
// scope (the signatures and attestations it was judged on), and the last
// resolution of each tag. Each is written in the background, off the
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

var (
	noteKeyRE = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,63}$`)
	tagRE     = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$`)
)

// Put stores data, the bytes of dgst (a manifest fetched for scope), and
// lets scope read it. It returns at once; the write happens in the
// background. Data that does not hash to dgst is not stored.
func (s *Store) Put(scope Scope, dgst string, data []byte) {
	d, ok := parseDigest(dgst)
	if !ok {
		return
	}
	// The everyday case, a manifest served again: stored, linked.
	if s.held.Contains(d.String()) && s.links.Contains(link{scope, d.String()}) {
		s.touch(d)
		return
	}
	if !scope.valid() || int64(len(data)) > s.o.MaxSize {
		return
	}
	s.link(scope, d)
	if s.held.Contains(d.String()) {
		s.touch(d)
		return
	}
	h := d.hash()
	h.Write(data)
	if hex.EncodeToString(h.Sum(nil)) != d.hex {
		return
	}
	size := int64(len(data))
	s.inBackgroundHolding("put", size, func(ctx context.Context) error {
		if fi, err := s.d.Stat(ctx, d.dataPath()); err == nil && fi.Size() == size {
			s.held.Add(d.String(), struct{}{})
			return s.d.PutContent(ctx, d.usedPath(), nil)
		}
		if err := s.d.PutContent(ctx, d.dataPath(), data); err != nil {
			return err
		}
		s.held.Add(d.String(), struct{}{})
		s.touched.Add(d.String(), time.Now())
		if s.size.Add(size) > s.o.MaxSize {
			s.sweepSoon()
		}
		return s.d.PutContent(ctx, d.usedPath(), nil)
	})
}

// Read returns the bytes of dgst, at most max of them, when the store holds
// them and scope may read them (it fetched them, or served a manifest that
// lists them), checked against the digest. ErrNotStored: not stored, not
// for scope, larger than max, or found corrupt (then evicted); ask the
// upstream.
func (s *Store) Read(ctx context.Context, scope Scope, dgst string, max int64) ([]byte, error) {
	d, ok := parseDigest(dgst)
	if !ok || !scope.valid() || !s.linked(ctx, scope, d) || s.down(&s.readDown) {
		return nil, ErrNotStored
	}
	rc, err := s.d.Reader(ctx, d.dataPath(), 0)
	if err != nil {
		s.held.Remove(d.String())
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
	h := d.hash()
	h.Write(b)
	if got := hex.EncodeToString(h.Sum(nil)); got != d.hex {
		// Logged and counted there; to the caller it is not stored, and
		// the upstream is asked.
		_ = s.evictCorrupt(d, "the bytes hash to "+d.alg+":"+got)
		return nil, ErrNotStored
	}
	s.held.Add(d.String(), struct{}{})
	s.touch(d)
	s.stats.reads.Add(1)
	return b, nil
}

// notePath is where the note key about d for scope is kept: with d, so
// that it is counted in d's size and evicted with it.
func (d digest) notePath(scope Scope, key string) string {
	return d.dir() + "/notes/" + strings.ReplaceAll(scope.Upstream, ":", "_") + "/" + scope.Repository + "/_" + key
}

// PutNote keeps doc, a small document about dgst for scope (what the
// upstream answered about its signatures and attestations), under key
// (lower-case letters, digits and '-'). It returns at once; the write
// happens in the background. A note is evicted with dgst.
func (s *Store) PutNote(scope Scope, dgst, key string, doc []byte) {
	d, ok := parseDigest(dgst)
	if !ok || !scope.valid() || !noteKeyRE.MatchString(key) {
		return
	}
	size := int64(len(doc))
	s.inBackgroundHolding("note", size, func(ctx context.Context) error {
		if err := s.d.PutContent(ctx, d.notePath(scope, key), doc); err != nil {
			return err
		}
		if s.size.Add(size) > s.o.MaxSize {
			s.sweepSoon()
		}
		return nil
	})
}

// Note returns the note key about dgst for scope, at most max bytes;
// ErrNotStored when there is none.
func (s *Store) Note(ctx context.Context, scope Scope, dgst, key string, max int64) ([]byte, error) {
	d, ok := parseDigest(dgst)
	if !ok || !scope.valid() || !noteKeyRE.MatchString(key) {
		return nil, ErrNotStored
	}
	return s.small(ctx, d.notePath(scope, key), max)
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
	return "/tags/" + strings.ReplaceAll(scope.Upstream, ":", "_") + "/" + scope.Repository + "/_tags/" + tag
}

// Tag returns the last resolution of tag in scope stored by any process
// sharing the store; ErrNotStored when there is none.
func (s *Store) Tag(ctx context.Context, scope Scope, tag string) (TagRecord, error) {
	if !scope.valid() || !tagRE.MatchString(tag) {
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
	if _, ok := parseDigest(r.Digest); !ok || !scope.valid() || !tagRE.MatchString(tag) {
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
	if !scope.valid() || !tagRE.MatchString(tag) {
		return
	}
	s.inBackground("tag", func(ctx context.Context) error {
		if err := s.d.Delete(ctx, tagPath(scope, tag)); err != nil && !isNotFound(err) {
			return err
		}
		return nil
	})
}

// evictCorrupt reports stored bytes of d that do not match d and deletes
// them; the next request fetches them again.
func (s *Store) evictCorrupt(d digest, why string) error {
	s.stats.corrupt.Add(1)
	s.log.Error("stored content does not match its digest: evicted, never served whole", "digest", d.String(), "driver", s.d.Name(), "why", why)
	s.touched.Remove(d.String())
	s.held.Remove(d.String())
	ctx, cancel := context.WithTimeout(context.WithoutCancel(s.ctx), opTimeout)
	defer cancel()
	// Its links and use mark stay: they are still true.
	if err := s.d.Delete(ctx, d.dataPath()); err != nil && !isNotFound(err) {
		s.failed(&s.writeDown, "evict", err)
	}
	return fmt.Errorf("%w: %s: %s", ErrCorrupt, d, why)
}
