// Command minproxy is the reference floor of bench/: the least a Go reverse
// proxy can cost, net/http/httputil with the same connection pooling as
// authz-proxy. With -static it is the floor of any Go HTTP server instead:
// net/http answering every request with one file's bytes from memory, as
// a manifest (no upstream, no policy, no log). It is a yardstick, not part
// of the product.
package main

import (
	"crypto/sha256"
	"encoding/hex"
	"flag"
	"log"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"strconv"
	"time"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:5002", "address to serve on")
	upstream := flag.String("upstream", "http://127.0.0.1:5001", "registry to forward to")
	static := flag.String("static", "", "answer every request with this file's bytes, as an OCI image manifest, instead of forwarding")
	flag.Parse()
	var h http.Handler
	if *static != "" {
		body, err := os.ReadFile(*static)
		if err != nil {
			log.Fatal(err)
		}
		h = staticManifest(body)
	} else {
		u, err := url.Parse(*upstream)
		if err != nil {
			log.Fatal(err)
		}
		rp := httputil.NewSingleHostReverseProxy(u)
		rp.Transport = &http.Transport{
			MaxIdleConns:        256,
			MaxIdleConnsPerHost: 64, // Go's default of 2 would make this floor needlessly low
			IdleConnTimeout:     90 * time.Second,
		}
		h = rp
	}
	srv := &http.Server{Addr: *listen, Handler: h, ReadHeaderTimeout: 10 * time.Second}
	log.Fatal(srv.ListenAndServe())
}

// staticManifest answers body with the headers a registry sends with a
// manifest.
func staticManifest(body []byte) http.HandlerFunc {
	sum := sha256.Sum256(body)
	digest, length := "sha256:"+hex.EncodeToString(sum[:]), strconv.Itoa(len(body))
	return func(w http.ResponseWriter, _ *http.Request) {
		hd := w.Header()
		hd.Set("Content-Type", "application/vnd.oci.image.manifest.v1+json")
		hd.Set("Content-Length", length)
		hd.Set("Docker-Content-Digest", digest)
		_, _ = w.Write(body)
	}
}
