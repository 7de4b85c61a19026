// Command minproxy is the reference floor of bench/: the least a Go reverse
// proxy can cost, net/http/httputil with the same connection pooling as
// authz-proxy. It is a yardstick, not part of the product.
package main

import (
	"flag"
	"log"
	"net/http"
	"net/http/httputil"
	"net/url"
	"time"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:5002", "address to serve on")
	upstream := flag.String("upstream", "http://127.0.0.1:5001", "registry to forward to")
	flag.Parse()
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
	srv := &http.Server{Addr: *listen, Handler: rp, ReadHeaderTimeout: 10 * time.Second}
	log.Fatal(srv.ListenAndServe())
}
