// Package canary proves, on one node, that the node's container runtime
// pulls through the proxy and nowhere else: it asks the runtime (over CRI,
// as the kubelet does) to pull an image the policy allows and one it
// denies, checks the node's mirror files, and says whether enforcement
// holds there.
package canary

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/authz-proxy/authz-proxy/internal/nodeconfig"
)

// Puller pulls images the way the node's kubelet does.
type Puller interface {
	// Pull pulls image and returns the runtime's reference of what it got.
	Pull(ctx context.Context, image string) (string, error)
	// Remove deletes a pulled image from the node.
	Remove(ctx context.Context, ref string) error
}

// Config is one node's canary.
type Config struct {
	Node string
	// Allowed and Denied are the images the policy must allow and deny.
	Allowed, Denied string
	// Runtime, HostsDir and Server, when HostsDir is set, check that the
	// node's files send both images' registries to the proxy at Server
	// alone (nodeconfig.Configured).
	Runtime, HostsDir, Server string
	// Timeout bounds each pull.
	Timeout time.Duration
}

// Check is one check's outcome.
type Check struct {
	Name   string `json:"name"`
	OK     bool   `json:"ok"`
	Detail string `json:"detail"`
}

// Report is one run's outcome on one node.
type Report struct {
	Node string    `json:"node"`
	Time time.Time `json:"time"`
	// Enforced is false when the denied image was pulled, or when the
	// node's files do not send a registry to the proxy alone.
	Enforced bool    `json:"enforced"`
	Checks   []Check `json:"checks"`
}

// OK reports whether every check passed.
func (r Report) OK() bool {
	for _, c := range r.Checks {
		if !c.OK {
			return false
		}
	}
	return true
}

// Failed lists the checks that did not pass, in words.
func (r Report) Failed() []string {
	var out []string
	for _, c := range r.Checks {
		if !c.OK {
			out = append(out, c.Name+": "+c.Detail)
		}
	}
	return out
}

// proxyRefusal is how a runtime reports the proxy's 403: containerd's
// resolver gives the status of its HEAD ("403 Forbidden"), containers/image
// (CRI-O) the OCI error's message, which names the rule.
var proxyRefusal = regexp.MustCompile(`\b403 Forbidden\b|\bdenied by rule\b|\bstatus code 403\b`)

// Run runs the checks once.
func Run(ctx context.Context, p Puller, c Config, now time.Time) Report {
	r := Report{Node: c.Node, Time: now.UTC(), Enforced: true}
	if c.HostsDir != "" {
		var problems []string
		seen := map[string]bool{}
		for _, img := range []string{c.Allowed, c.Denied} {
			reg := Registry(img)
			if seen[reg] {
				continue
			}
			seen[reg] = true
			if err := nodeconfig.Configured(c.HostsDir, c.Runtime, reg, c.Server); err != nil {
				problems = append(problems, err.Error())
			}
		}
		ch := Check{Name: "mirror configured", OK: len(problems) == 0}
		if ch.OK {
			ch.Detail = fmt.Sprintf("the %s files send %s to %s only", c.Runtime, strings.Join(slices.Sorted(maps.Keys(seen)), " and "), c.Server)
		} else {
			ch.Detail = strings.Join(problems, "; ")
			r.Enforced = false
		}
		r.Checks = append(r.Checks, ch)
	}

	allowed := Check{Name: "allowed pull served"}
	if ref, err := pull(ctx, p, c.Allowed, c.Timeout); err != nil {
		allowed.Detail = fmt.Sprintf("%s was not pulled: %v", c.Allowed, err)
		if proxyRefusal.MatchString(err.Error()) {
			allowed.Detail += " (the proxy refused an image its policy must allow: check the policy)"
		}
	} else {
		allowed.OK = true
		allowed.Detail = fmt.Sprintf("%s pulled (%s)", c.Allowed, ref)
	}
	r.Checks = append(r.Checks, allowed)

	denied := Check{Name: "denied pull refused"}
	ref, err := pull(ctx, p, c.Denied, c.Timeout)
	switch {
	case err == nil:
		r.Enforced = false
		denied.Detail = fmt.Sprintf("NOT ENFORCED: %s, which the policy denies, was pulled (%s): this node's runtime reaches the registry without the proxy", c.Denied, ref)
		if rerr := p.Remove(ctx, ref); rerr != nil {
			denied.Detail += fmt.Sprintf("; removing it from the node failed: %v", rerr)
		} else {
			denied.Detail += "; removed from the node again"
		}
	case proxyRefusal.MatchString(err.Error()):
		denied.OK = true
		denied.Detail = fmt.Sprintf("%s refused with 403: %v", c.Denied, err)
	default:
		denied.Detail = fmt.Sprintf("%s was not pulled, but not refused with the proxy's 403 either (is the proxy down?): %v", c.Denied, err)
	}
	r.Checks = append(r.Checks, denied)
	return r
}

func pull(ctx context.Context, p Puller, image string, timeout time.Duration) (string, error) {
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	ref, err := p.Pull(ctx, image)
	if err != nil && errors.Is(ctx.Err(), context.DeadlineExceeded) {
		err = fmt.Errorf("%w (no answer within %s)", err, timeout)
	}
	return ref, err
}

// Registry is the registry host of an image reference as containerd and
// CRI-O read it: its first path segment (the kubelet passes references
// already normalised, docker.io/library/nginx:1.27 for nginx:1.27).
func Registry(image string) string {
	host, _, _ := strings.Cut(image, "/")
	return host
}

// WriteText writes the report as a person reads it.
func (r Report) WriteText(w io.Writer) {
	fmt.Fprintf(w, "node %s, %s:\n", r.Node, r.Time.Format(time.RFC3339))
	for _, c := range r.Checks {
		mark := "yes"
		if !c.OK {
			mark = "NO "
		}
		fmt.Fprintf(w, "  %-20s %s  %s\n", c.Name, mark, c.Detail)
	}
	switch {
	case !r.Enforced:
		fmt.Fprintln(w, "NOT ENFORCED on this node: images the policy denies can run here.")
	case !r.OK():
		fmt.Fprintln(w, "ENFORCED, but not every check passed: pulls through the proxy fail on this node.")
	default:
		fmt.Fprintln(w, "ENFORCED: this node pulls through the proxy, which refuses what the policy denies.")
	}
}

// WriteJSON writes the report as one JSON object.
func (r Report) WriteJSON(w io.Writer) error {
	return json.NewEncoder(w).Encode(r)
}
