// Package store is authz-proxy's content store: bytes by digest, kept on one
// of distribution's storage drivers (filesystem, s3, inmemory for tests).
//
// Content is written once per digest for all concurrent callers, streamed to
// each of them while it is written, checked against its digest while it
// streams, and made visible only after it verified (written under
// /uploads, then moved into place). The least recently used content is
// evicted under a size bound.
//
// Isolation holds by construction. Content is kept per upstream (one
// folder each, named by an injective encoding of the upstream's name) and
// per kind (what an upstream served as a blob and what it served as a
// manifest are separate objects): nothing one upstream supplied is read in
// another upstream's scope, whatever that upstream says, and bytes
// fetched as a blob are never read as a manifest. Within an upstream, a
// repository reads an object only when that upstream served it in that
// repository, confirms now that the repository holds it (a blob's HEAD),
// or it was named in a manifest of that repository through a field the
// registry validates at push (LinkBlobs: an image manifest's config and
// layers; LinkManifests: an index's or list's manifests).
//
// The store keeps no shared mutable state file: what it knows is in the
// names and modification times of its objects (one object per blob, per
// use marker, per link), so that replicas sharing one bucket stay correct,
// and any object may vanish at any time without serving wrong bytes: a
// store that fails, fills up or loses objects only costs upstream fetches.
//
// Layout, under the driver's root (<up> is upstreamDir of the upstream's
// name, <kind> blobs or manifests):
//
//	/content/<up>/<kind>/<alg>/<hex[:2]>/<hex>/data                   the verified bytes
//	/content/<up>/<kind>/<alg>/<hex[:2]>/<hex>/used                   empty; its modification time is the last use
//	/content/<up>/<kind>/<alg>/<hex[:2]>/<hex>/links/<repository>/_link   the repositories that may read it
//	/content/<up>/manifests/<alg>/<hex[:2]>/<hex>/notes/<repository>/_<key>  what the upstream said about it there
//	/content/<up>/tags/<repository>/_tags/<tag>                       the tag's last resolution
//	/uploads/<owner>/<alg>-<hex>-<random>                             fills in progress
//
// Manifests are content by digest like blobs (PutManifest, ReadManifest),
// with the same rules. The signatures and attestations a manifest was
// judged on are notes about its digest for the repository that asked,
// evicted with it. A tag's last resolution is one small object per
// (upstream, repository, tag), written by whichever replica resolved it
// last. None of it is a verdict: whoever reads it judges it again.
package store

import (
	"context"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"log/slog"
	"os"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/authz-proxy/authz-proxy/internal/oci"

	storagedriver "github.com/distribution/distribution/v3/registry/storage/driver"
	lru "github.com/hashicorp/golang-lru/v2"
)

// Errors a caller tells apart.
var (
	// ErrNotStored means the store cannot answer: the blob is not stored,
	// or the store is failing. The caller asks the upstream, as without a
	// store.
	ErrNotStored = errors.New("not in the store")
	// ErrDigestMismatch means the upstream sent bytes that do not hash to
	// the digest asked for. Nothing was stored; every client's stream was
	// cut before its end.
	ErrDigestMismatch = errors.New("the upstream's bytes do not match the digest")
	// ErrCorrupt means stored bytes no longer hash to their digest (a disk
	// or bucket fault). The stream was cut before its end and the blob
	// evicted; the next request fetches it again.
	ErrCorrupt = errors.New("stored bytes do not match their digest")
)

// Scope is where content is asked for: an upstream, by its configured
// name, and one of its repositories.
type Scope struct {
	Upstream   string
	Repository string
}

func (s Scope) String() string { return s.Upstream + "/" + s.Repository }

// Origin is the upstream as one scope sees it, for one digest.
type Origin interface {
	// Fetch GETs the blob from offset on: all of it when offset is 0,
	// else a Range request whose body must start exactly there (size, the
	// blob's whole size, is then known). It returns the body and its
	// length, -1 when unknown. An error is the upstream's answer (a 404,
	// a 429, a connection failure) and is returned to the callers as is.
	Fetch(ctx context.Context, offset, size int64) (io.ReadCloser, int64, error)
	// Confirm asks the upstream whether the scope holds the blob (a HEAD):
	// nil when it does.
	Confirm(ctx context.Context) error
}

// Options configure a Store.
type Options struct {
	// Driver holds the content; see NewDriver.
	Driver storagedriver.StorageDriver
	// MaxSize bounds the bytes stored; past it the least recently used
	// blobs are evicted, down to 90% of it. Required.
	MaxSize int64
	// Owner names this process's folder of fills in progress, which it
	// clears when it starts: leftovers of a killed fill. Processes sharing
	// a bucket need distinct owners; a restarted process should keep its
	// own. Default: the host name.
	Owner string
	// Logger receives warnings about store failures (each kind at most
	// every 10 seconds) and evictions.
	Logger *slog.Logger
	// SweepInterval is how often the stored size is measured and the
	// least recently used blobs evicted; default 1m. A sweep also runs at
	// start and as soon as what this process stored passes MaxSize.
	SweepInterval time.Duration
	// StaleUploads is how long another owner's fill may go without a write
	// before a sweep deletes it as a leftover; default 1h.
	StaleUploads time.Duration
	// Window is the memory of one fill: the newest bytes received, from
	// which every waiting client is served. A client that falls further
	// behind continues from the store once the fill is stored. Default
	// 4 MiB.
	Window int64
	// FillIdleTimeout ends a fill whose upstream sent nothing for that
	// long; default 1m.
	FillIdleTimeout time.Duration
	// MaxFills bounds the fills in flight, and MaxFillsPerUpstream those
	// of one upstream (its share). A fill that would pass either bound
	// first cancels one that nobody reads any more (of that upstream, for
	// its share); when none can be, the blob is not stored this time
	// (ErrNotStored: the caller streams it from the upstream). Defaults 64
	// and half of MaxFills.
	MaxFills, MaxFillsPerUpstream int
	// MaxWindowBytes bounds the memory of every fill's window together:
	// past it, the oldest bytes of windows are dropped (a reader that falls
	// behind continues from the store). A fill nobody reads keeps no
	// window. Default 256 MiB.
	MaxWindowBytes int64
}

// Store is verified content by digest on a storage driver. Its methods are
// safe for concurrent use.
type Store struct {
	d   storagedriver.StorageDriver
	o   Options
	log *slog.Logger

	// ctx ends at Close: fills and background writes run on it, detached
	// from any one request.
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu    sync.Mutex
	fills map[objKey]*fill
	// fillsOf counts the fills in flight per upstream.
	fillsOf map[string]int
	closed  bool // no fill or background write starts once set

	// links are repositories known to see an object, manifests the
	// manifests whose references were linked (LinkBlobs, LinkManifests);
	// touched is when this process last marked an object used.
	links     *lru.Cache[link, struct{}]
	manifests *lru.Cache[link, struct{}]
	touched   *lru.Cache[objKey, time.Time]
	// held are objects this process stored or read whole lately:
	// PutManifest skips writing them again.
	held *lru.Cache[objKey, struct{}]
	// tagged are the chunk tags of blobs this process checked against
	// their digests, under mac's key, which lives in this process only
	// (chunks.go).
	tagged *lru.Cache[objKey, *chunkTags]
	mac    cipher.AEAD
	// background bounds the writes of links, use marks and small content
	// in flight; more wait their turn. pending counts the bytes of content
	// they hold.
	background chan struct{}
	pending    atomic.Int64

	chunks sync.Pool // of *chunk: the pieces of fills' windows
	// windowBytes are the bytes held in every fill's window.
	windowBytes atomic.Int64

	size     atomic.Int64 // bytes stored, as of the last sweep and since
	sweepNow chan struct{}
	sweeping sync.Mutex // one sweep at a time

	// readDown and writeDown (unix nanoseconds) skip the store for reads
	// or writes after it failed, so that a store that is down costs one
	// failure every few seconds, not one per request.
	readDown, writeDown atomic.Int64
	warned              sync.Map // kind -> *atomic.Int64, unix nanoseconds of the last warning

	stats counters
}

const (
	opTimeout    = 10 * time.Second // one small store operation
	chunkSize    = 256 << 10        // the unit of a fill's window
	breakerPause = 5 * time.Second  // how long a failing store is skipped
	warnEvery    = 10 * time.Second
	touchEvery   = 10 * time.Minute // how stale a use mark may get
)

// New opens the store: it clears the leftovers of this owner's killed
// fills, and starts the sweeper.
func New(ctx context.Context, o Options) (*Store, error) {
	if o.Driver == nil {
		return nil, errors.New("store: Driver is required")
	}
	if o.MaxSize <= 0 {
		return nil, errors.New("store: MaxSize must be positive")
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Owner == "" {
		o.Owner, _ = os.Hostname()
	}
	o.Owner = pathSafe(o.Owner)
	if o.Owner == "" {
		o.Owner = "authz-proxy"
	}
	if o.SweepInterval <= 0 {
		o.SweepInterval = time.Minute
	}
	if o.StaleUploads <= 0 {
		o.StaleUploads = time.Hour
	}
	if o.Window <= 0 {
		o.Window = 4 << 20
	}
	if o.FillIdleTimeout <= 0 {
		o.FillIdleTimeout = time.Minute
	}
	if o.MaxFills <= 0 {
		o.MaxFills = 64
	}
	if o.MaxFillsPerUpstream <= 0 {
		o.MaxFillsPerUpstream = max(1, o.MaxFills/2)
	}
	if o.MaxWindowBytes <= 0 {
		o.MaxWindowBytes = 256 << 20
	}
	links, _ := lru.New[link, struct{}](1 << 16)
	manifests, _ := lru.New[link, struct{}](1 << 14)
	touched, _ := lru.New[objKey, time.Time](1 << 16)
	held, _ := lru.New[objKey, struct{}](1 << 16)
	tagged, _ := lru.New[objKey, *chunkTags](1 << 16)
	s := &Store{
		d:          o.Driver,
		o:          o,
		log:        o.Logger,
		fills:      map[objKey]*fill{},
		fillsOf:    map[string]int{},
		links:      links,
		manifests:  manifests,
		touched:    touched,
		held:       held,
		tagged:     tagged,
		mac:        newMAC(),
		background: make(chan struct{}, 16),
		sweepNow:   make(chan struct{}, 1),
	}
	s.chunks.New = func() any { return &chunk{b: make([]byte, chunkSize)} }
	s.ctx, s.cancel = context.WithCancel(context.WithoutCancel(ctx))
	s.clearOwnUploads(ctx)
	s.wg.Add(1)
	go s.sweeper()
	return s, nil
}

// Close stops the sweeper and the fills still running, and waits for
// them and for the links and use marks being written.
func (s *Store) Close() error {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	s.cancel()
	s.wg.Wait()
	return nil
}

// digest is a parsed content digest: <alg>:<hex>.
type digest struct {
	alg, hex, str string
}

// parseDigest accepts the digests of the OCI image spec (oci.ValidDigest).
func parseDigest(s string) (digest, bool) {
	if !oci.ValidDigest(s) {
		return digest{}, false
	}
	alg, hx, _ := strings.Cut(s, ":")
	return digest{alg, hx, s}, true
}

func (d digest) String() string { return d.str }

func (d digest) hash() hash.Hash {
	if d.alg == "sha512" {
		return sha512.New()
	}
	return sha256.New()
}

// kind is one of an upstream's two namespaces of content: what it served
// from /blobs/ and what it served from /manifests/. The same digest in
// both is two objects: bytes fetched as a blob are never read as a
// manifest, nor a manifest as a blob.
type kind uint8

// The kinds of content.
const (
	blobKind kind = iota
	manifestKind
)

func (k kind) folder() string {
	if k == manifestKind {
		return "manifests"
	}
	return "blobs"
}

// object is one piece of content: a digest of one kind, supplied by one
// upstream. Nothing one upstream supplied is ever an object of another's.
type object struct {
	digest
	up   string // the upstream's folder, upstreamDir of its name
	kind kind
}

// root holds all content, one folder per upstream. The layout before
// content was kept per upstream (/blobs and /tags at the top) is removed
// by the sweep.
const root = "/content"

func (o object) dir() string {
	return root + "/" + o.up + "/" + o.kind.folder() + "/" + o.alg + "/" + o.hex[:2] + "/" + o.hex
}

// objKey names an object in the maps and caches of this process (a
// comparable value: looking one up allocates nothing).
type objKey struct {
	up, digest string
	kind       kind
}

func (o object) key() objKey      { return objKey{o.up, o.str, o.kind} }
func (o object) dataPath() string { return o.dir() + "/data" }
func (o object) usedPath() string { return o.dir() + "/used" }

// linkPath is the object that lets repo read o. Repository components
// start with a letter or digit, so "_link" is never one of them.
func (o object) linkPath(repo string) string { return o.dir() + "/links/" + repo + "/_link" }

// upstreamDir is an upstream's name as one path component, injectively:
// a-z, 0-9, '.' and '-' stand for themselves, and every other byte (the
// ':' of host:port, '_', upper case) is '_' and its two hex digits, so
// that registry.internal:5000 and registry.internal_5000 never share a
// folder.
func upstreamDir(name string) string {
	if !strings.ContainsFunc(name, func(r rune) bool { return !('a' <= r && r <= 'z' || '0' <= r && r <= '9' || r == '.' || r == '-') }) {
		return name // the everyday name stands for itself, with no copy
	}
	var b strings.Builder
	for i := 0; i < len(name); i++ {
		switch c := name[i]; {
		case 'a' <= c && c <= 'z', '0' <= c && c <= '9', c == '.', c == '-':
			b.WriteByte(c)
		default:
			fmt.Fprintf(&b, "_%02x", c)
		}
	}
	return b.String()
}

// repoRE is the distribution spec's grammar of repository names.
var repoRE = regexp.MustCompile(`^[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*)*$`)

func (s Scope) valid() bool {
	return s.Upstream != "" && len(s.Upstream) <= 80 && repoRE.MatchString(s.Repository) && len(s.Repository) <= 255
}

// object returns the object of kind and dgst supplied by scope's upstream;
// ok is false for a digest or a scope the store does not keep.
func (s Scope) object(k kind, dgst string) (object, bool) {
	d, ok := parseDigest(dgst)
	if !ok || !s.valid() {
		return object{}, false
	}
	return object{digest: d, up: upstreamDir(s.Upstream), kind: k}, true
}

// link is a repository's right to read an object.
type link struct {
	obj  objKey
	repo string
}

// pathSafe keeps the characters a driver path component may hold.
func pathSafe(s string) string {
	return strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '.', r == '_', r == '-':
			return r
		}
		return '-'
	}, s)
}

func randomSuffix() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// Stat reports the size of blob dgst when the store holds it for scope's
// upstream and scope may read it. A stored blob that scope has not been
// linked to is confirmed with the upstream first (o.Confirm), and linked
// when it is; the upstream's answer is returned when it is not.
// ErrNotStored: ask the upstream.
func (s *Store) Stat(ctx context.Context, scope Scope, dgst string, o Origin) (int64, error) {
	obj, ok := scope.object(blobKind, dgst)
	if !ok {
		return 0, ErrNotStored
	}
	size, err := s.stored(ctx, obj)
	if err != nil {
		return 0, err
	}
	if err := s.visible(ctx, scope, obj, o); err != nil {
		return 0, err
	}
	return size, nil
}

// stored returns the size of o's data, or ErrNotStored.
func (s *Store) stored(ctx context.Context, o object) (int64, error) {
	if s.down(&s.readDown) {
		return 0, ErrNotStored
	}
	sctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	fi, err := s.d.Stat(sctx, o.dataPath())
	switch {
	case err == nil:
		return fi.Size(), nil
	case isNotFound(err):
		return 0, ErrNotStored
	case ctx.Err() != nil:
		return 0, ctx.Err() // the client left: not the store's fault
	default:
		s.failed(&s.readDown, "stat", err)
		return 0, ErrNotStored
	}
}

// visible returns nil when scope may read obj: linked already, or
// confirmed by the upstream now (and then linked). The upstream confirms
// only what it supplied itself: obj is of scope's upstream.
func (s *Store) visible(ctx context.Context, scope Scope, obj object, o Origin) error {
	if s.linked(ctx, scope.Repository, obj) {
		return nil
	}
	if err := o.Confirm(ctx); err != nil {
		return err
	}
	s.link(scope.Repository, obj)
	return nil
}

// linked reports whether a link of repo to obj is known or stored.
func (s *Store) linked(ctx context.Context, repo string, obj object) bool {
	key := link{obj.key(), repo}
	if s.links.Contains(key) {
		return true
	}
	if s.down(&s.readDown) {
		return false
	}
	sctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	_, err := s.d.Stat(sctx, obj.linkPath(repo))
	switch {
	case err == nil:
		s.links.Add(key, struct{}{})
		return true
	case !isNotFound(err) && ctx.Err() == nil:
		s.failed(&s.readDown, "stat", err)
	}
	return false
}

// LinkBlobs makes blobs readable by scope: the proxy served scope the
// image manifest with that digest, whose config and layers they are, each
// of which the registry checked was in the repository when the manifest
// was pushed. Nothing else a manifest names may be linked: the registry
// checks no other field (a manifest list's config, an index's layers, a
// subject, annotations). It returns at once; this process honours the
// links from now on, and they are written to the store in the background
// for other replicas and restarts. Content not stored yet may be linked.
// A manifest linked already costs one look-up.
func (s *Store) LinkBlobs(scope Scope, manifest string, blobs ...string) {
	s.linkAll(scope, blobKind, manifest, blobs)
}

// LinkManifests makes manifests readable by scope: the proxy served scope
// the index (or manifest list) with that digest, whose manifests they are,
// which the registry checked were in the repository when it was pushed.
func (s *Store) LinkManifests(scope Scope, index string, manifests ...string) {
	s.linkAll(scope, manifestKind, index, manifests)
}

func (s *Store) linkAll(scope Scope, k kind, manifest string, digests []string) {
	m, ok := scope.object(manifestKind, manifest)
	if !ok {
		return
	}
	if ok, _ := s.manifests.ContainsOrAdd(link{m.key(), scope.Repository}, struct{}{}); ok {
		return
	}
	for _, dg := range digests {
		if o, ok := scope.object(k, dg); ok {
			s.link(scope.Repository, o)
		}
	}
}

// link records that repo may read obj, and writes the link unless it is
// known to be written.
func (s *Store) link(repo string, obj object) {
	key := link{obj.key(), repo}
	if ok, _ := s.links.ContainsOrAdd(key, struct{}{}); ok {
		return
	}
	s.inBackground("link", func(ctx context.Context) error {
		return s.d.PutContent(ctx, obj.linkPath(repo), nil)
	})
}

// touch marks o used now, for least-recently-used eviction, at most every
// touchEvery per process.
func (s *Store) touch(o object) {
	key := o.key()
	if last, ok := s.touched.Get(key); ok && time.Since(last) < touchEvery {
		return
	}
	s.touched.Add(key, time.Now())
	s.inBackground("touch", func(ctx context.Context) error {
		return s.d.PutContent(ctx, o.usedPath(), nil)
	})
}

// inBackground runs a small store write off the request path; Close waits
// for it. While the store fails, writes are skipped: what the store keeps
// is a hint, which costs an upstream round trip, or an early eviction,
// when missing.
func (s *Store) inBackground(kind string, write func(ctx context.Context) error) {
	s.inBackgroundHolding(kind, 0, write)
}

// inBackgroundHolding is inBackground for a write that holds n bytes of
// content until it is done; it is skipped when the writes waiting hold
// too much already.
func (s *Store) inBackgroundHolding(kind string, n int64, write func(ctx context.Context) error) {
	if s.down(&s.writeDown) {
		return
	}
	if s.stats.writesInFlight.Add(1) > maxPendingWrites {
		s.stats.writesInFlight.Add(-1)
		s.stats.storeError("queue")
		return
	}
	if n > 0 && s.pending.Add(n) > maxPendingBytes {
		s.pending.Add(-n)
		s.stats.writesInFlight.Add(-1)
		s.stats.storeError("queue")
		return
	}
	if !s.started() {
		s.stats.writesInFlight.Add(-1)
		s.pending.Add(-n)
		return
	}
	go func() {
		defer s.wg.Done()
		defer s.stats.writesInFlight.Add(-1)
		defer s.pending.Add(-n)
		s.background <- struct{}{}
		defer func() { <-s.background }()
		if s.down(&s.writeDown) {
			return
		}
		ctx, cancel := context.WithTimeout(context.WithoutCancel(s.ctx), opTimeout)
		defer cancel()
		if err := write(ctx); err != nil {
			s.failed(&s.writeDown, kind, err)
		}
	}()
}

// started counts one more goroutine for Close to wait for, unless the
// store is closed.
func (s *Store) started() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.wg.Add(1)
	return true
}

func isNotFound(err error) bool {
	var nf storagedriver.PathNotFoundError
	return errors.As(err, &nf)
}

// down reports whether the store is being skipped after a failure.
func (s *Store) down(until *atomic.Int64) bool {
	return time.Now().UnixNano() < until.Load()
}

// failed counts a store failure of the given kind, warns (at most every
// warnEvery per kind), and skips the store's reads or writes (until) for
// a moment. The pull goes on without the store.
func (s *Store) failed(until *atomic.Int64, kind string, err error) {
	s.stats.storeError(kind)
	now := time.Now()
	if until != nil {
		until.Store(now.Add(breakerPause).UnixNano())
	}
	v, _ := s.warned.LoadOrStore(kind, new(atomic.Int64))
	last := v.(*atomic.Int64)
	if prev := last.Load(); now.UnixNano()-prev < int64(warnEvery) || !last.CompareAndSwap(prev, now.UnixNano()) {
		return
	}
	s.log.Warn("store failing, serving from the upstream without it", "op", kind, "driver", s.d.Name(), "err", err.Error())
}

// errorf wraps err with what the store was doing.
func errorf(format string, args ...any) error { return fmt.Errorf("store: "+format, args...) }

// closeQuietly closes rc; an error closing a reader changes nothing.
func closeQuietly(rc io.Closer) { _ = rc.Close() }
