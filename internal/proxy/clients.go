package proxy

import (
	"crypto/x509"
	"math"
	"net"
	"net/http"
	"strconv"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
	"golang.org/x/time/rate"

	"github.com/authz-proxy/authz-proxy/internal/budget"
	"github.com/distribution/distribution/v3/registry/api/errcode"
)

// clientKey names who sent r, for the shares of the bounds every client
// takes from: "cert:" and its verified mTLS identity when there is one,
// else its source address (without the port: one client, many
// connections), which never starts so.
func clientKey(r *http.Request) string {
	if r.TLS != nil && len(r.TLS.VerifiedChains) > 0 {
		if name := certificateName(r.TLS.VerifiedChains[0][0]); name != "" {
			return "cert:" + name
		}
	}
	return hostOf(r.RemoteAddr)
}

// certificateName names a client certificate's holder: its first URI
// subject alternative name (a SPIFFE ID), else its common name.
func certificateName(cert *x509.Certificate) string {
	if len(cert.URIs) > 0 {
		return cert.URIs[0].String()
	}
	return cert.Subject.CommonName
}

// hostOf is the address of host:port, or addr as it is.
func hostOf(addr string) string {
	if host, _, err := net.SplitHostPort(addr); err == nil {
		return host
	}
	return addr
}

// clientParty is r's client as a party of the manifest budget.
func clientParty(r *http.Request) budget.Party { return budget.ClientParty(clientKey(r)) }

// rateLimits holds one token bucket per client (limits.clientRate and
// clientBurst), the least recently seen forgotten first.
type rateLimits struct {
	rate    rate.Limit
	burst   int
	buckets *lru.Cache[string, *rate.Limiter]
}

// newRateLimits returns the buckets of rps requests per second, burst at
// once; nil when rps is 0 (no limit).
func newRateLimits(rps float64, burst int) *rateLimits {
	if rps <= 0 {
		return nil
	}
	buckets, _ := lru.New[string, *rate.Limiter](1 << 16)
	return &rateLimits{rate: rate.Limit(rps), burst: max(burst, 1), buckets: buckets}
}

// same reports whether l takes rps and burst, so that a reload keeps the
// buckets (and what clients spent of them).
func (l *rateLimits) same(rps float64, burst int) bool {
	return l != nil && l.rate == rate.Limit(rps) && l.burst == max(burst, 1)
}

// allow takes a token from r's client's bucket, or returns the 429 to
// answer, with how long until the next token.
func (l *rateLimits) allow(r *http.Request) error {
	if l == nil {
		return nil
	}
	key := clientKey(r)
	b, ok := l.buckets.Get(key)
	if !ok {
		b = rate.NewLimiter(l.rate, l.burst)
		if prev, found, _ := l.buckets.PeekOrAdd(key, b); found {
			b = prev
		}
	}
	now := time.Now()
	res := b.ReserveN(now, 1)
	delay := res.DelayFrom(now)
	if delay == 0 {
		return nil
	}
	res.CancelAt(now)
	e := errorf(errcode.ErrorCodeTooManyRequests, "%s sent more than its %g requests per second (limits.clientRate, burst %d): retry after %s", key, float64(l.rate), l.burst, delay.Round(time.Millisecond))
	e.retryAfter = strconv.Itoa(int(math.Ceil(delay.Seconds())))
	return e
}
