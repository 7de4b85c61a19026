// Package trust keeps the Sigstore trusted roots that keyless attestors
// verify with current: a root is a trusted_root.json file, or the target of
// a TUF repository (Sigstore's public-good instance, GitHub's, a private
// one) fetched with go-tuf's client workflow, kept in a cache folder that
// survives restarts, refreshed in the background, and withdrawn when its
// metadata expires. It reports each root's state for metrics, /readyz and
// `authz-proxy trust status`, and writes the verified snapshots that
// air-gapped proxies read. Verification never waits on it: the roots in
// force are values that package verify holds.
package trust

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"reflect"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/authz-proxy/authz-proxy/internal/verify"
)

// Spec is one configured trust root: a File, or a TUF repository.
type Spec struct {
	Name string
	// Where names the root in the configuration ("config.yaml:12:
	// trustRoots[0]"), for errors.
	Where string
	// File is the path of a trusted_root.json; "" for a TUF root.
	File string
	TUF  *TUF
}

// TUF is a TUF repository whose target trusted_root.json is the root.
type TUF struct {
	// Mirror is the repository's URL, file:// for a folder.
	Mirror string
	// Root is the root.json trusted first, and RootSource where it came
	// from ("embedded", or its file), for status.
	Root       []byte
	RootSource string
	// Refresh is how often the repository is asked again.
	Refresh time.Duration
	// Cache is a folder that keeps the last verified state; "" for none.
	Cache string
}

// Options say how roots are fetched and reported.
type Options struct {
	Logger *slog.Logger
	// Now is the clock that expiry is judged by; default time.Now.
	Now func() time.Time
	// Client fetches from HTTP(S) mirrors; default one with a 30 s
	// timeout per request.
	Client    *http.Client
	UserAgent string
	// Offline loads TUF roots from their cache only, with no mirror
	// (validate): a root without a usable cache is pending, verifying
	// nothing, and a warning says so.
	Offline bool
	// OnChange is called, from a refresher's goroutine, when a root in
	// use changes what it trusts: a new trusted_root.json, or its
	// withdrawal at expiry (and its return).
	OnChange func()
}

// Timeouts and retries.
const (
	// fetchTimeout bounds the TUF client workflow against a mirror, at
	// start and at each refresh.
	fetchTimeout = 60 * time.Second
	// firstRetry is the wait after a refresh that failed, doubled at
	// each further failure up to maxRetry (and never past the refresh
	// interval).
	firstRetry = 30 * time.Second
	maxRetry   = time.Hour
	// warnBefore is how long before an expiry the log warns (and the
	// expiring metric holds) while nothing renews it.
	warnBefore = 7 * 24 * time.Hour
	// warnEvery is how often a warning is repeated.
	warnEvery = time.Hour
)

// Manager loads trust roots and keeps those in use current.
type Manager struct {
	o     Options
	fetch *fetcher

	mu     sync.Mutex
	inUse  *Set
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// New returns a Manager with no root in use.
func New(o Options) *Manager {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Client == nil {
		o.Client = &http.Client{Timeout: 30 * time.Second}
	}
	if o.UserAgent == "" {
		o.UserAgent = "authz-proxy"
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Manager{o: o, fetch: &fetcher{client: o.Client, userAgent: o.UserAgent}, ctx: ctx, cancel: cancel}
}

// Set is the trust roots of one configuration, in its order.
type Set struct {
	roots []*tracked
	// Warnings are problems that do not stop the roots from loading (a
	// start from the cache because the mirror failed, a pending root).
	Warnings []string
}

// tracked is one root and its state in force.
type tracked struct {
	spec Spec
	cur  atomic.Pointer[State]

	// refreshing serializes refreshes; snap, the verified state they
	// start from, is theirs.
	refreshing sync.Mutex
	snap       *snapshot
	// mu guards what follows, briefly: never across a refresh.
	mu           sync.Mutex
	refreshes    int
	failures     int // in a row
	failedTotal  int
	failingSince time.Time
	lastErr      string
	lastWarned   time.Time
	published    string // what OnChange last announced

	cancel context.CancelFunc
}

// State is a root in force.
type State struct {
	// Root is the trusted root, named; one that verifies nothing while
	// pending.
	Root *verify.TrustedRoot
	// Source is where it was read: the mirror, "cache DIR" or the file.
	Source string
	// Refreshed is when it was last verified (loaded, or refreshed).
	Refreshed time.Time
	// RootVersion and TargetsVersion are the TUF root.json and
	// targets.json versions; 0 for a file.
	RootVersion, TargetsVersion int64
	// Expires is when the first of its TUF metadata expires, ExpiresRole
	// which; zero for a file.
	Expires     time.Time
	ExpiresRole string
	// ExpiresSeen is when this proxy first verified metadata expiring
	// at Expires: Expires minus it is the life the repository gives it.
	ExpiresSeen time.Time
	// Pending says why a root is not loaded (offline, no cache).
	Pending string
}

// Load loads specs: a root whose spec is the same as one in use is kept as
// it is (with its refresher); any other is read now, a TUF root from its
// cache and then its mirror (unless Offline). It fails when a root cannot
// be had at all; each error is positioned by its Spec.Where.
func (m *Manager) Load(ctx context.Context, specs []Spec) (*Set, error) {
	m.mu.Lock()
	inUse := m.inUse
	m.mu.Unlock()
	s := &Set{}
	var errs []error
	for _, sp := range specs {
		if t := inUse.find(sp); t != nil {
			s.roots = append(s.roots, t)
			continue
		}
		t := &tracked{spec: sp}
		warning, err := m.first(ctx, t)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s (%s): %w", sp.Where, sp.Name, err))
			continue
		}
		if warning != "" {
			s.Warnings = append(s.Warnings, fmt.Sprintf("%s (%s): %s", sp.Where, sp.Name, warning))
		}
		t.published = t.key(m.o.Now())
		s.roots = append(s.roots, t)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return s, nil
}

func (s *Set) find(sp Spec) *tracked {
	if s == nil {
		return nil
	}
	for _, t := range s.roots {
		// Where it is written in the configuration does not matter.
		a, b := t.spec, sp
		a.Where, b.Where = "", ""
		if reflect.DeepEqual(a, b) {
			return t
		}
	}
	return nil
}

// startFromCache puts in force the state t's TUF cache holds, verified
// from its root as a mirror's answers are: what a failing mirror leaves in
// force, and what the mirror's next answers must not roll back.
func (m *Manager) startFromCache(ctx context.Context, t *tracked, now time.Time) (*snapshot, error) {
	tu := t.spec.TUF
	if _, err := os.Stat(tu.Cache); err != nil {
		return nil, fmt.Errorf("no cache yet (%s)", tu.Cache)
	}
	snap, err := update(ctx, m.fetch, FileURL(tu.Cache), tu.Root, nil)
	if err == nil {
		err = t.install(snap, "cache "+tu.Cache, now)
	}
	if err != nil {
		return nil, err
	}
	return snap, nil
}

// first loads t for the first time.
func (m *Manager) first(ctx context.Context, t *tracked) (warning string, err error) {
	now := m.o.Now()
	if t.spec.File != "" {
		data, err := os.ReadFile(t.spec.File)
		if err != nil {
			return "", err
		}
		r, err := verify.ParseTrustedRoot(data)
		if err != nil {
			return "", fmt.Errorf("%s: %w", t.spec.File, err)
		}
		t.cur.Store(&State{Root: r.WithOrigin(t.spec.Name, 0), Source: t.spec.File, Refreshed: now})
		return "", nil
	}
	tu := t.spec.TUF
	var fromCache *snapshot
	var cacheErr error
	if tu.Cache != "" {
		fromCache, cacheErr = m.startFromCache(ctx, t, now)
	}
	if m.o.Offline {
		if fromCache != nil {
			return "", nil
		}
		why := "no cache"
		if cacheErr != nil {
			why = cacheErr.Error()
		}
		t.cur.Store(&State{Pending: why, Root: verify.UnavailableRoot(fmt.Sprintf("trust root %s is not loaded (%s)", t.spec.Name, why))})
		return fmt.Sprintf("not fetched offline (%s): serve fetches it from %s", why, tu.Mirror), nil
	}
	err = m.refresh(ctx, t)
	switch {
	case err == nil:
		return "", nil
	case fromCache != nil:
		st := t.cur.Load()
		return fmt.Sprintf("the mirror %s failed (%v): starting from the cache, verified from %s, version %d, valid until %s; retrying", tu.Mirror, err, tu.RootSource, st.TargetsVersion, st.Expires.UTC().Format(time.RFC3339)), nil
	}
	msg := fmt.Sprintf("cannot start: the mirror %s failed: %v", tu.Mirror, err)
	switch {
	case tu.Cache == "":
		msg += "; and there is no cache (set tuf.cache to start from the last verified state when the mirror is down)"
	case cacheErr != nil:
		msg += fmt.Sprintf("; and the cache %s cannot be used: %v", tu.Cache, cacheErr)
	}
	if tu.RootSource == "embedded" {
		msg += "; this binary embeds the public-good root.json but no trusted_root.json to start from"
	}
	return "", errors.New(msg + " (where the mirror is reachable, `authz-proxy trust fetch --root " + t.spec.Name + " --out DIR` writes a snapshot to use as cache or as mirror: file://DIR)")
}

// refresh runs the TUF client workflow against t's mirror, from t's last
// verified state; on success the new state is in force and written to
// the cache. A failure leaves the state in force as it was.
func (m *Manager) refresh(ctx context.Context, t *tracked) error {
	t.refreshing.Lock()
	defer t.refreshing.Unlock()
	tu := t.spec.TUF
	ctx, cancel := context.WithTimeout(ctx, fetchTimeout)
	defer cancel()
	snap, err := update(ctx, m.fetch, tu.Mirror, tu.Root, t.snap)
	now := m.o.Now()
	if err == nil {
		err = t.install(snap, tu.Mirror, now)
	}
	t.mu.Lock()
	if err != nil {
		err = errors.New(describe(err))
		t.failures++
		t.failedTotal++
		if t.failingSince.IsZero() {
			t.failingSince = now
		}
		t.lastErr = err.Error()
		t.mu.Unlock()
		return err
	}
	t.refreshes++
	t.failures, t.failingSince, t.lastErr = 0, time.Time{}, ""
	t.mu.Unlock()
	if tu.Cache != "" {
		if err := snap.write(tu.Cache); err != nil {
			m.o.Logger.Warn("trust root: the cache could not be written; the root in force is unchanged", "root", t.spec.Name, "cache", tu.Cache, "err", err.Error())
		}
	}
	return nil
}

// install puts the verified snap in force, read from source at now;
// t.refreshing is held, or t is not shared yet.
func (t *tracked) install(snap *snapshot, source string, now time.Time) error {
	r, err := verify.ParseTrustedRoot(snap.target)
	if err != nil {
		return fmt.Errorf("the repository's %s: %w", targetName, err)
	}
	expires, role := snap.expires()
	st := &State{
		Root: r.WithOrigin(t.spec.Name, snap.tg.Signed.Version), Source: source, Refreshed: now,
		RootVersion: snap.root.Signed.Version, TargetsVersion: snap.tg.Signed.Version, Expires: expires, ExpiresRole: role, ExpiresSeen: now,
	}
	if old := t.cur.Load(); old != nil && old.Expires.Equal(expires) && !old.ExpiresSeen.IsZero() {
		st.ExpiresSeen = old.ExpiresSeen
	}
	t.snap = snap
	t.cur.Store(st)
	return nil
}

// key is what t trusts at now: its trusted_root.json and whether it is
// withdrawn. OnChange is called when it changes.
func (t *tracked) key(now time.Time) string {
	st := t.cur.Load()
	return fmt.Sprintf("%s %t %s", st.Root.Origin().Digest, st.expired(now), st.Pending)
}

func (st *State) expired(now time.Time) bool {
	return !st.Expires.IsZero() && !now.Before(st.Expires)
}

// Roots are the roots of s in force now, by name: a root whose TUF
// metadata has expired is withdrawn, verifying nothing.
func (s *Set) Roots(now time.Time) map[string]*verify.TrustedRoot {
	out := map[string]*verify.TrustedRoot{}
	for _, t := range s.roots {
		st := t.cur.Load()
		r := st.Root
		if st.expired(now) {
			r = r.Withdraw(t.withdrawal(st))
		}
		out[t.spec.Name] = r
	}
	return out
}

// withdrawal says why t, in state st, verifies nothing.
func (t *tracked) withdrawal(st *State) string {
	t.mu.Lock()
	defer t.mu.Unlock()
	why := fmt.Sprintf("trust root %s: its TUF metadata (%s, version %d) expired at %s and verifies nothing", t.spec.Name, st.ExpiresRole, st.TargetsVersion, st.Expires.UTC().Format(time.RFC3339))
	if t.lastErr != "" {
		why += fmt.Sprintf("; refreshing from %s fails since %s: %s", t.spec.TUF.Mirror, t.failingSince.UTC().Format(time.RFC3339), t.lastErr)
	}
	return why
}

// Observe makes m log to logger and call onChange (see Options.OnChange)
// from now on; call it before Use.
func (m *Manager) Observe(logger *slog.Logger, onChange func()) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.o.Logger, m.o.OnChange = logger, onChange
}

// Use puts s in use: its TUF roots are refreshed in the background, and
// the roots of the set in use before that s does not keep are stopped.
func (m *Manager) Use(s *Set) {
	m.mu.Lock()
	defer m.mu.Unlock()
	old := m.inUse
	m.inUse = s
	if old != nil {
		for _, t := range old.roots {
			if !slices.Contains(s.roots, t) && t.cancel != nil {
				t.cancel()
			}
		}
	}
	for _, t := range s.roots {
		if t.spec.TUF == nil || t.cancel != nil || t.cur.Load().Pending != "" {
			continue
		}
		ctx, cancel := context.WithCancel(m.ctx)
		t.cancel = cancel
		m.wg.Add(1)
		go func() {
			defer m.wg.Done()
			m.keepCurrent(ctx, t)
		}()
	}
}

// Close stops every refresher and waits for them.
func (m *Manager) Close() {
	m.cancel()
	m.wg.Wait()
}

// Refresh refreshes every TUF root in use now (SIGHUP), returning what
// failed.
func (m *Manager) Refresh(ctx context.Context) error {
	m.mu.Lock()
	s := m.inUse
	m.mu.Unlock()
	if s == nil {
		return nil
	}
	var errs []error
	for _, t := range s.roots {
		if t.spec.TUF == nil || t.cur.Load().Pending != "" {
			continue
		}
		if err := m.refreshLogged(ctx, t); err != nil {
			errs = append(errs, fmt.Errorf("trust root %s: %w", t.spec.Name, err))
		}
	}
	return errors.Join(errs...)
}

// keepCurrent refreshes t every refresh interval, sooner after a failure
// (with backoff), and announces its expiry; it warns while an expiry
// nears.
func (m *Manager) keepCurrent(ctx context.Context, t *tracked) {
	next := m.o.Now().Add(t.spec.TUF.Refresh)
	if t.failing() {
		next = m.o.Now().Add(t.retryAfter())
	}
	for {
		now := m.o.Now()
		m.warn(t, now)
		wake := min(next.Sub(now), warnEvery)
		st := t.cur.Load()
		if until := st.Expires.Sub(now); !st.expired(now) && until < wake {
			wake = until
		}
		timer := time.NewTimer(max(wake, 0))
		select {
		case <-ctx.Done():
			timer.Stop()
			return
		case <-timer.C:
		}
		if !m.o.Now().Before(next) {
			if m.refreshLogged(ctx, t) != nil {
				next = m.o.Now().Add(t.retryAfter())
			} else {
				next = m.o.Now().Add(t.spec.TUF.Refresh)
			}
		}
		m.announce(t)
	}
}

// refreshLogged is refresh with its outcome logged and announced.
func (m *Manager) refreshLogged(ctx context.Context, t *tracked) error {
	before := t.cur.Load()
	err := m.refresh(ctx, t)
	if err != nil {
		t.mu.Lock()
		since, n := t.failingSince, t.failures
		t.mu.Unlock()
		m.o.Logger.Warn("trust root refresh failed; the last verified root stays in force", "root", t.spec.Name, "mirror", t.spec.TUF.Mirror,
			"err", err.Error(), "failingSince", since.UTC().Format(time.RFC3339), "failures", n, "retryIn", t.retryAfter().String(),
			"valid until", before.Expires.UTC().Format(time.RFC3339))
		m.announce(t)
		return err
	}
	st := t.cur.Load()
	m.o.Logger.Info("trust root refreshed", "root", t.spec.Name, "mirror", t.spec.TUF.Mirror, "version", st.TargetsVersion, "rootVersion", st.RootVersion,
		"digest", st.Root.Origin().Digest, "changed", st.Root.Origin().Digest != before.Root.Origin().Digest, "valid until", st.Expires.UTC().Format(time.RFC3339))
	m.announce(t)
	return nil
}

// announce calls OnChange when what t trusts changed since the last call.
func (m *Manager) announce(t *tracked) {
	key := t.key(m.o.Now())
	t.mu.Lock()
	changed := key != t.published
	t.published = key
	t.mu.Unlock()
	if !changed {
		return
	}
	if st := t.cur.Load(); st.expired(m.o.Now()) {
		m.o.Logger.Error("trust root expired: keyless signatures it alone can judge are not verified (503) until a refresh succeeds", "root", t.spec.Name, "why", t.withdrawal(st))
	}
	if m.o.OnChange != nil {
		m.o.OnChange()
	}
}

func (t *tracked) failing() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.failures > 0
}

// retryAfter is the wait before the next attempt after t.failures
// failures in a row.
func (t *tracked) retryAfter() time.Duration {
	t.mu.Lock()
	n := t.failures
	t.mu.Unlock()
	d := firstRetry
	for i := 1; i < n && d < maxRetry; i++ {
		d *= 2
	}
	return min(d, maxRetry, t.spec.TUF.Refresh)
}

// warn logs, at most every warnEvery, what of t expires soon.
func (m *Manager) warn(t *tracked, now time.Time) {
	s := t.status(now)
	if s.Expiring == "" {
		return
	}
	t.mu.Lock()
	due := now.Sub(t.lastWarned) >= warnEvery
	if due {
		t.lastWarned = now
	}
	t.mu.Unlock()
	if due {
		m.o.Logger.Warn("trust root expires soon", "root", t.spec.Name, "what", s.Expiring)
	}
}

// Status is a root's state, for metrics, /readyz and `trust status`.
type Status struct {
	Name string
	// Kind is "tuf" or "file".
	Kind string
	// Mirror and RootSource are a TUF root's repository and where its
	// first root.json came from; Refresh its refresh interval.
	Mirror, RootSource string
	Refresh            time.Duration
	State
	// Digest is "sha256:<hex>" of the trusted_root.json in force.
	Digest string
	// Summary is what the root trusts.
	Summary verify.RootSummary
	// Refreshes and FailedRefreshes count refreshes since start;
	// Failures those failed in a row, FailingSince when the first of
	// them was, LastError the last one's error.
	Refreshes, FailedRefreshes, Failures int
	FailingSince                         time.Time
	LastError                            string
	// Withdrawn says why the root verifies nothing now (expired).
	Withdrawn string
	// Expiring says what expires soon: TUF metadata within warnBefore
	// that nothing renews (the refresh failing, or the repository not
	// re-signing it within half its life), or signing material (the
	// newest certificate authority, log or timestamp authority) ending
	// within warnBefore; "" when nothing does.
	Expiring string
}

// Status is the state of each root of s at now, in s's order.
func (s *Set) Status(now time.Time) []Status {
	out := make([]Status, 0, len(s.roots))
	for _, t := range s.roots {
		out = append(out, t.status(now))
	}
	return out
}

func (t *tracked) status(now time.Time) Status {
	st := t.cur.Load()
	s := Status{Name: t.spec.Name, Kind: "file", State: *st}
	if tu := t.spec.TUF; tu != nil {
		s.Kind, s.Mirror, s.RootSource, s.Refresh = "tuf", tu.Mirror, tu.RootSource, tu.Refresh
	}
	if st.Pending == "" {
		s.Digest, s.Summary = st.Root.Origin().Digest, st.Root.Summary()
	}
	t.mu.Lock()
	s.Refreshes, s.FailedRefreshes, s.Failures, s.FailingSince, s.LastError = t.refreshes, t.failedTotal, t.failures, t.failingSince, t.lastErr
	t.mu.Unlock()
	if st.expired(now) {
		s.Withdrawn = t.withdrawal(st)
	}
	var soon []string
	if left := st.Expires.Sub(now); !st.Expires.IsZero() && left < warnBefore && !st.expired(now) {
		life := st.Expires.Sub(st.ExpiresSeen)
		if s.Failures > 0 || t.spec.TUF == nil || left < life/2 {
			soon = append(soon, fmt.Sprintf("its TUF metadata (%s) expires at %s, in %s, and has not been renewed", st.ExpiresRole, st.Expires.UTC().Format(time.RFC3339), left.Round(time.Minute)))
		}
	}
	if u := s.Summary.SigningUntil; !u.IsZero() && u.Sub(now) < warnBefore {
		soon = append(soon, fmt.Sprintf("the last of its %s ends at %s: signatures made after that do not verify", s.Summary.SigningUntilWhat, u.UTC().Format(time.RFC3339)))
	}
	s.Expiring = strings.Join(soon, "; ")
	return s
}

// Fetch runs the TUF client workflow for sp against its mirror (or, when
// it has one and the mirror fails, nothing else: a snapshot is what the
// mirror serves now) and writes the verified snapshot to dir, laid out as
// a TUF repository: a proxy reads it as its cache, or as mirror:
// file://dir. It returns the state written.
func (m *Manager) Fetch(ctx context.Context, sp Spec, dir string) (Status, error) {
	if sp.TUF == nil {
		return Status{}, fmt.Errorf("trust root %s is a file, not a TUF repository: copy %s", sp.Name, sp.File)
	}
	t := &tracked{spec: sp}
	if sp.TUF.Cache != "" {
		_, _ = m.startFromCache(ctx, t, m.o.Now()) // without a usable cache, the mirror alone
	}
	if err := m.refresh(ctx, t); err != nil {
		return Status{}, fmt.Errorf("trust root %s: the mirror %s: %w", sp.Name, sp.TUF.Mirror, err)
	}
	if err := t.snap.write(dir); err != nil {
		return Status{}, err
	}
	return t.status(m.o.Now()), nil
}
