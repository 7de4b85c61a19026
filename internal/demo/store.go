package demo

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

// StoreTour shows the content store of the proxy at proxyAddr, whose
// metrics are at metricsAddr, after Tour: an image pulled a second time
// comes from the store; with the upstream stopped, what was pulled before
// still pulls (a tag by its last known digest), judged as before, and what
// was never pulled gets 503. The upstream is started again at the end.
func (l *Lab) StoreTour(ctx context.Context, proxyAddr, metricsAddr string, out io.Writer) {
	m := meter{addr: metricsAddr}
	m.settle(ctx)
	fmt.Fprintf(out, "\nThe content store (filesystem, %s): blobs, manifests with the signatures they were judged on, tags.\n", filepath.Join(l.Dir, "store"))
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "PULL (through the proxy)\tUPSTREAM\tRESULT")
	row := func(ref, upstream string) {
		before := m.read(ctx)
		res := pull(ctx, proxyAddr+"/lab/"+ref)
		if strings.HasPrefix(res, "pulled") {
			res += ": " + m.read(ctx).since(before)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\n", proxyAddr+"/lab/"+ref, upstream, res)
	}
	row("demo/app:signed", "up, second pull")
	l.StopUpstream()
	for _, ref := range []string{"demo/app:signed", "demo/app@" + l.signed, "vetted/app:ci-built", "demo/multiarch:v1", "demo/app:unsigned", l.never} {
		row(ref, "stopped")
	}
	tw.Flush()
	if err := l.StartUpstream(); err != nil {
		fmt.Fprintf(out, "restarting the upstream: %v\n", err)
	}
}

// meter reads the proxy's metrics.
type meter struct{ addr string }

// counters are the metrics the tour reports, by series.
type counters map[string]float64

func (m meter) read(ctx context.Context) counters {
	s := counters{}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+m.addr+"/metrics", nil)
	if err != nil {
		return s
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return s
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "authz_proxy_") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if v, err := strconv.ParseFloat(line[i+1:], 64); err == nil {
			s[line[:i]] = v
		}
	}
	return s
}

// settle waits until the store has written what the tour pulled.
func (m meter) settle(ctx context.Context) {
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline) && ctx.Err() == nil; time.Sleep(10 * time.Millisecond) {
		s := m.read(ctx)
		if s["authz_proxy_store_fills_in_flight"] == 0 && s["authz_proxy_store_writes_in_flight"] == 0 {
			return
		}
	}
}

// since says where the manifests and blobs of a pull came from.
func (s counters) since(before counters) string {
	d := func(series string) int { return int(s[series] - before[series]) }
	var parts []string
	stale := d(`authz_proxy_manifests_total{source="stale",upstream="lab"}`)
	if n := stale + d(`authz_proxy_manifests_total{source="store",upstream="lab"}`); n > 0 {
		parts = append(parts, fmt.Sprintf("%d manifest%s from the store", n, plural(n)))
	}
	if stale > 0 {
		parts = append(parts, "the tag by its last known digest (stale)")
	}
	if n := d(`authz_proxy_manifests_total{source="upstream",upstream="lab"}`); n > 0 {
		parts = append(parts, fmt.Sprintf("%d manifest%s from the upstream", n, plural(n)))
	}
	if n := d(`authz_proxy_store_requests_total{result="hit"}`); n > 0 {
		parts = append(parts, fmt.Sprintf("%d blob%s from the store", n, plural(n)))
	}
	if n := d(`authz_proxy_evidence_from_store_total{upstream="lab"}`); n > 0 {
		parts = append(parts, "signatures verified again from the store")
	}
	parts = append(parts, fmt.Sprintf("%d bytes of blobs from the upstream", d(`authz_proxy_store_bytes_total{source="upstream"}`)))
	return strings.Join(parts, ", ")
}

func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}
