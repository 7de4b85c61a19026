// Package replay re-judges past pulls under a candidate policy: it reads a
// decision log, gathers the distinct digests that were served or refused,
// fetches each manifest again and judges it the way the proxy would (the
// signatures are read from the upstreams as they are now), and reports the
// pulls whose decision would change. A team tightens a policy by replaying
// real traffic first; re-validation judges the pulls allowed of late under
// the policy in force the same way.
package replay

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"sort"
	"strings"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/authz-proxy/authz-proxy/internal/audit"
	"github.com/authz-proxy/authz-proxy/internal/oci"
	"github.com/authz-proxy/authz-proxy/internal/policy"
)

// Pull is one distinct thing pulled: a digest of an upstream repository,
// asked for by one tag (or by digest), by clients of one environment under
// the candidate policy.
type Pull struct {
	Upstream   string `json:"upstream"`
	Image      string `json:"image"`
	Repository string `json:"-"`
	// Tag is the tag asked for, "" when asked for by digest.
	Tag    string `json:"tag,omitempty"`
	Digest string `json:"digest"`
	// Environment is the pulling client's environment under the candidate
	// configuration, derived from the logged client identity and address.
	Environment string `json:"environment,omitempty"`
	// Principal is who pulled it (clients section), "" for nobody: a
	// condition over client.principal sees it (a token's claims are not
	// logged, so client.claims is empty in a replay).
	Principal string `json:"principal,omitempty"`
	// Client is the last client that pulled it.
	Client audit.Client `json:"client"`
	// Pulls counts the decision records of this pull.
	Pulls int `json:"pulls"`
	// LastPulled is the time of the last of them.
	LastPulled time.Time `json:"lastPulled"`
	// Was is the decision last logged for it.
	Was Decision `json:"was"`
	// Revoked is when re-validation last logged it revoked (zero: never).
	Revoked time.Time `json:"revoked,omitzero"`
}

// Decision is a decision with what made it.
type Decision struct {
	Decision    string   `json:"decision"`
	Rule        string   `json:"rule,omitempty"`
	Enforcement string   `json:"enforcement,omitempty"`
	Reasons     []string `json:"reasons,omitempty"`
}

// Result is one pull judged again.
type Result struct {
	Pull
	// MediaType is the manifest's, as fetched again.
	MediaType string `json:"mediaType,omitempty"`
	// Now is the candidate policy's decision; "error" when it could not be
	// made (the reasons say why).
	Now Decision `json:"now"`
}

// Changed reports whether the candidate policy decides otherwise.
func (r Result) Changed() bool { return r.Now.Decision != r.Was.Decision }

// Log is what was read from a decision log.
type Log struct {
	// Records counts the decision records read.
	Records int
	// Skipped counts records that cannot be replayed: errors (nothing was
	// decided), signature artifacts (served without policy) and records
	// without a digest or a repository.
	Skipped int
	// Unreadable counts lines that are not JSON (a log collector's own
	// lines, a line cut short), the first at line FirstUnreadable.
	Unreadable, FirstUnreadable int
	// Pulls are the distinct pulls, in the order first seen.
	Pulls []*Pull
}

// Environments maps a logged client to its environment under the
// candidate policy; *policy.Policy is one.
type Environments interface {
	Environment(policy.Client) string
}

// Read reads a decision log (JSON lines, as the proxy writes them; other
// JSON lines are ignored, lines that are not JSON counted) and groups its
// records into pulls.
func Read(r io.Reader, envs Environments) (*Log, error) {
	c := NewCollector(envs)
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), 4<<20)
	for n := 1; sc.Scan(); n++ {
		if len(strings.TrimSpace(sc.Text())) == 0 {
			continue
		}
		rec, err := audit.Parse(sc.Bytes())
		if errors.Is(err, audit.ErrNotDecision) {
			continue
		}
		if err != nil {
			if c.log.Unreadable++; c.log.FirstUnreadable == 0 {
				c.log.FirstUnreadable = n
			}
			continue
		}
		c.Add(rec)
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	return c.Log(), nil
}

// Collector groups decision records into pulls, as they come. Not safe for
// concurrent use.
type Collector struct {
	envs  Environments
	log   Log
	byKey map[string]*Pull
}

// NewCollector groups records into pulls under envs' environments.
func NewCollector(envs Environments) *Collector {
	return &Collector{envs: envs, byKey: map[string]*Pull{}}
}

// Log is what was collected: the counts and the pulls, in the order first
// seen.
func (c *Collector) Log() *Log { return &c.log }

// Add counts rec and adds it to its pull: the last decision of a pull (by
// time) is the one it was. A revoked record (re-validation's, not a pull)
// marks the pull it names.
func (c *Collector) Add(rec audit.Record) {
	c.log.Records++
	repo, ok := strings.CutPrefix(rec.Image, rec.Upstream+"/")
	if rec.Decision == audit.Error || rec.Rule == policy.ArtifactRule || rec.Digest == "" || !ok || repo == "" {
		c.log.Skipped++
		return
	}
	ref, err := oci.ParseReference(rec.Reference)
	if err != nil {
		c.log.Skipped++
		return
	}
	tag := ref.Tag
	client := policy.Client{Principal: rec.Principal}
	if rec.Client.Identity != "" {
		client.Names = []string{rec.Client.Identity}
	}
	if ap, err := netip.ParseAddrPort(rec.Client.Addr); err == nil {
		client.Addr = ap.Addr()
	}
	env := c.envs.Environment(client)
	key := pullKey(rec.Upstream, repo, rec.Digest, tag, env, rec.Principal)
	p := c.byKey[key]
	if rec.Decision == audit.Revoked {
		c.log.Skipped++
		if p != nil && rec.Time.After(p.Revoked) {
			p.Revoked = rec.Time
		}
		return
	}
	if p == nil {
		p = &Pull{Upstream: rec.Upstream, Image: rec.Image, Repository: repo, Tag: tag, Digest: rec.Digest, Environment: env, Principal: rec.Principal}
		c.byKey[key] = p
		c.log.Pulls = append(c.log.Pulls, p)
	}
	p.Pulls++
	if !rec.Time.Before(p.LastPulled) {
		p.LastPulled, p.Client = rec.Time, rec.Client
		p.Was = Decision{Decision: rec.Decision, Rule: rec.Rule, Enforcement: rec.Enforcement, Reasons: rec.Reasons}
	}
}

// pullKey names a pull: what it pulled, by which tag, in which
// environment.
func pullKey(upstream, repo, digest, tag, env, principal string) string {
	return strings.Join([]string{upstream, repo, digest, tag, env, principal}, "\x00")
}

// Forget drops the pulls last pulled before t (the counts of records read
// stay), so that a collector fed for long holds a window of them.
func (c *Collector) Forget(t time.Time) {
	kept := c.log.Pulls[:0]
	for _, p := range c.log.Pulls {
		if p.LastPulled.Before(t) {
			delete(c.byKey, pullKey(p.Upstream, p.Repository, p.Digest, p.Tag, p.Environment, p.Principal))
			continue
		}
		kept = append(kept, p)
	}
	clear(c.log.Pulls[len(kept):])
	c.log.Pulls = kept
}

// Judge re-judges pulls under a candidate policy.
type Judge struct {
	Policy *policy.Policy
	// Registries are what the judge reads of the candidate
	// configuration's upstreams (their sources), by name.
	Registries map[string]policy.Registry
}

// Bounds on the work of a replay: pulls judged at once, and the time one
// pull may take.
const (
	concurrency = 4
	timeout     = time.Minute
)

// Run judges every pull as the proxy would, through one policy.Judge: the
// image indexes first, then the rest, so that a platform image inherits
// what an allowed index of the same repository that lists it proved (the
// runtime fetched it through that index). Results are in the order of
// pulls.
func (j *Judge) Run(ctx context.Context, pulls []*Pull) []Result {
	results := make([]Result, len(pulls))
	manifests := make([]*oci.Manifest, len(pulls))
	judge, err := policy.NewJudge(8*len(pulls)+1024, nil)
	if err != nil {
		for i, p := range pulls {
			results[i] = Result{Pull: *p, Now: failed(err)}
		}
		return results
	}
	each(ctx, pulls, func(ctx context.Context, i int, p *Pull) {
		results[i].Pull = *p
		up := j.Registries[p.Upstream]
		if up == nil {
			results[i].Now = failed(fmt.Errorf("upstream %q is not in the candidate configuration", p.Upstream))
			return
		}
		m, err := up.Manifest(ctx, p.Repository, p.Digest)
		if err != nil {
			results[i].Now = failed(fmt.Errorf("fetching the manifest again: %w", err))
			return
		}
		manifests[i], results[i].MediaType = m, m.MediaType
	})
	judgeAll := func(index bool) {
		each(ctx, pulls, func(ctx context.Context, i int, p *Pull) {
			m := manifests[i]
			if m == nil || m.IsIndex() != index {
				return
			}
			subj := policy.Subject{Upstream: p.Upstream, Repository: p.Repository, Tag: p.Tag, Environment: p.Environment, Client: policy.Client{Principal: p.Principal}}
			v, err := judge.Decide(ctx, j.Policy, j.Registries[p.Upstream], subj, m)
			if err != nil {
				results[i].Now = failed(err)
				return
			}
			results[i].Now = Decision{Decision: v.Decision(), Rule: v.Rule, Enforcement: v.Enforcement, Reasons: v.Reasons}
		})
	}
	judgeAll(true)
	judgeAll(false)
	return results
}

// each runs fn for every pull, a bounded number at a time, each with its
// own timeout.
func each(ctx context.Context, pulls []*Pull, fn func(ctx context.Context, i int, p *Pull)) {
	var g errgroup.Group
	g.SetLimit(concurrency)
	for i, p := range pulls {
		g.Go(func() error {
			ctx, cancel := context.WithTimeout(ctx, timeout)
			defer cancel()
			fn(ctx, i, p)
			return nil
		})
	}
	_ = g.Wait()
}

func failed(err error) Decision {
	return Decision{Decision: audit.Error, Reasons: []string{err.Error()}}
}

// Summary counts results.
type Summary struct {
	Records    int `json:"records"`
	Skipped    int `json:"skipped"`
	Unreadable int `json:"unreadableLines"`
	Judged     int `json:"judged"`
	Changed    int `json:"changed"`
	Errors     int `json:"errors"`
	// ByChange counts changed pulls by "was -> now", e.g. "allow -> deny".
	ByChange map[string]int `json:"byChange"`
}

// Summarize counts results of a log.
func Summarize(l *Log, results []Result) Summary {
	s := Summary{Records: l.Records, Skipped: l.Skipped, Unreadable: l.Unreadable, Judged: len(results), ByChange: map[string]int{}}
	for _, r := range results {
		if r.Now.Decision == audit.Error {
			s.Errors++
		}
		if r.Changed() {
			s.Changed++
			s.ByChange[r.Was.Decision+" -> "+r.Now.Decision]++
		}
	}
	return s
}

// Sort orders results for reading: changed ones first, newly refused
// before the rest, then by image, tag, digest and environment.
func Sort(results []Result) {
	rank := func(r Result) int {
		switch {
		case r.Changed() && refused(r.Now.Decision) && !refused(r.Was.Decision):
			return 0
		case r.Changed():
			return 1
		default:
			return 2
		}
	}
	sort.SliceStable(results, func(a, b int) bool {
		ra, rb := rank(results[a]), rank(results[b])
		if ra != rb {
			return ra < rb
		}
		x, y := results[a], results[b]
		if x.Image != y.Image {
			return x.Image < y.Image
		}
		if x.Tag != y.Tag {
			return x.Tag < y.Tag
		}
		if x.Digest != y.Digest {
			return x.Digest < y.Digest
		}
		return x.Environment < y.Environment
	})
}

// refused reports whether a decision keeps the image from the client.
func refused(decision string) bool { return decision == audit.Deny || decision == audit.Error }
