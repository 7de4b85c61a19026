// Command slowclients floods a running authz-proxy with clients that ask
// for distinct large manifests and never read the answers, and meanwhile
// pulls an everyday signed manifest: it prints the proxy's resident memory
// and the everyday pull's latency under the flood. bench/slowclients.sh
// runs it against the shared bench setup.
package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

func main() {
	registry := flag.String("registry", "", "the upstream registry, host:port (plain http)")
	proxy := flag.String("proxy", "", "authz-proxy, host:port; its upstream lab is -registry and lab/open/** is allowed")
	pid := flag.Int("pid", 0, "authz-proxy's process id, for its resident memory")
	clients := flag.Int("clients", 300, "slow clients")
	size := flag.Int("size", 4_000_000, "bytes of each large manifest")
	everyday := flag.String("everyday", "/v2/lab/bench/app/manifests/v1", "path of an everyday pull through the proxy")
	hold := flag.Duration("hold", 15*time.Second, "how long the slow clients hold on")
	direct := flag.Bool("direct", false, "aim the clients at the registry itself instead (-pid then names the registry)")
	flag.Parse()
	if *registry == "" || *proxy == "" || *pid == 0 {
		log.Fatal("slowclients: -registry, -proxy and -pid are required")
	}
	log.Printf("pushing %d manifests of %d bytes...", *clients, *size)
	if err := push(*registry, *clients, *size); err != nil {
		log.Fatal(err)
	}
	target, prefix := *proxy, "/v2/lab/"
	if *direct {
		target, prefix = *registry, "/v2/"
		*everyday = strings.Replace(*everyday, "/v2/lab/", "/v2/", 1)
	}
	pull("http://" + target + *everyday) // everyday: pulled before
	base := rss(*pid)
	for i := range *clients {
		if err := slowClient(target, fmt.Sprintf("%sopen/big/manifests/big-%d", prefix, i)); err != nil {
			log.Fatal(err)
		}
	}
	peak, worst := base, time.Duration(0)
	var failures int
	end := time.Now().Add(*hold)
	for time.Now().Before(end) {
		start := time.Now()
		status := pull("http://" + target + *everyday)
		if os.Getenv("SLOWCLIENTS_DEBUG") != "" {
			log.Printf("everyday pull: %d in %s, rss %d MiB", status, time.Since(start), rss(*pid)>>20)
		}
		worst = max(worst, time.Since(start))
		if status != http.StatusOK {
			failures++
		}
		peak = max(peak, rss(*pid))
		time.Sleep(200 * time.Millisecond)
	}
	fmt.Printf("%d slow clients asking for distinct %.1f MB manifests, held %s:\n", *clients, float64(*size)/1e6, *hold)
	fmt.Printf("  authz-proxy RSS: %d MiB before, %d MiB at peak (target < 512 MiB)\n", base>>20, peak>>20)
	fmt.Printf("  everyday pull meanwhile: slowest %s (target < 3s), %d failed\n", worst.Round(time.Millisecond), failures)
}

// push stores n distinct manifests of about size bytes (an annotation
// pads them) in open/big:big-<i>.
func push(registry string, n, size int) error {
	repo, err := name.NewRepository(registry+"/open/big", name.Insecure)
	if err != nil {
		return err
	}
	cfg := static.NewLayer([]byte("{}"), types.OCIConfigJSON)
	if err := remote.WriteLayer(repo, cfg); err != nil {
		return err
	}
	d, _ := cfg.Digest()
	pad := strings.Repeat("x", size)
	for i := range n {
		raw := fmt.Sprintf(`{"schemaVersion":2,"mediaType":%q,"config":{"mediaType":%q,"digest":%q,"size":2},"layers":[],"annotations":{"n":"%d","pad":%q}}`,
			types.OCIManifestSchema1, types.OCIConfigJSON, d, i, pad)
		if err := remote.Put(repo.Tag("big-"+strconv.Itoa(i)), rawManifest(raw)); err != nil {
			return fmt.Errorf("pushing big-%d: %w", i, err)
		}
	}
	return nil
}

type rawManifest string

func (r rawManifest) RawManifest() ([]byte, error)        { return []byte(r), nil }
func (r rawManifest) MediaType() (types.MediaType, error) { return types.OCIManifestSchema1, nil }

var _ remote.Taggable = rawManifest("")

// slowClient asks for path with a tiny receive buffer and never reads.
func slowClient(host, path string) error {
	d := net.Dialer{Control: func(_, _ string, c syscall.RawConn) error {
		return c.Control(func(fd uintptr) { _ = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096) })
	}}
	conn, err := d.DialContext(context.Background(), "tcp", host)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(conn, "GET %s HTTP/1.1\r\nHost: %s\r\nAccept: %s\r\n\r\n", path, host, types.OCIManifestSchema1)
	return err // the connection stays open, unread, until the process ends
}

func pull(url string) int {
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	req.Header.Set("Accept", strings.Join([]string{string(types.OCIManifestSchema1), string(types.DockerManifestSchema2)}, ", "))
	resp, err := (&http.Client{Timeout: 30 * time.Second}).Do(req)
	if err != nil {
		return 0
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode
}

// rss is the resident memory of process pid, in bytes.
func rss(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for line := range bytes.Lines(b) {
		if f := strings.Fields(string(line)); len(f) >= 2 && f[0] == "VmRSS:" {
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			return kb << 10
		}
	}
	return 0
}
