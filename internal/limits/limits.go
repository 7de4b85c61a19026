// Package limits is the one place of authz-proxy's bounds and their
// defaults: the configuration's limits section, which the upstream clients
// and the HTTP edge take as they are.
package limits

import (
	"math"
	"time"
)

// MaxManifestSize is the largest manifest read from an upstream: a larger
// one is refused, never read past the limit.
const MaxManifestSize int64 = 4 << 20

// Limits bound the time and memory that upstreams, hostile artifacts and
// hostile clients can
// cost. The defaults are safe; raise them only for a known reason.
type Limits struct {
	// DialTimeout bounds connecting to an upstream; default 10s.
	DialTimeout time.Duration `yaml:"dialTimeout"`
	// ResponseTimeout bounds the wait for an upstream's response headers;
	// default 30s.
	ResponseTimeout time.Duration `yaml:"responseTimeout"`
	// VerifyTimeout bounds one whole verification, all its upstream calls
	// included; past it the pull fails closed with 503. Default 30s.
	VerifyTimeout time.Duration `yaml:"verifyTimeout"`
	// MaxSignatures is the most signature layers read per digest (and
	// referrer manifests followed); default 32.
	MaxSignatures int `yaml:"maxSignatures"`
	// MaxArtifactSize is the largest signature payload read, in bytes;
	// default 131072 (128 KiB).
	MaxArtifactSize int64 `yaml:"maxArtifactSize"`
	// MaxAttestations is the most attestations of the required predicate
	// types read per digest, newest first; default 32.
	MaxAttestations int `yaml:"maxAttestations"`
	// MaxEnvelopeSize is the largest attestation (DSSE envelope or Sigstore
	// bundle) read, in bytes; default 2097152 (2 MiB).
	MaxEnvelopeSize int64 `yaml:"maxEnvelopeSize"`
	// ManifestCacheBytes bounds the memory of recently fetched manifests;
	// default 67108864 (64 MiB).
	ManifestCacheBytes int64 `yaml:"manifestCacheBytes"`
	// MaxManifestBytesInFlight bounds the manifest and signature bytes
	// that requests hold at once (read from an upstream, judged, written
	// to a client); past it a request gets 503 with Retry-After. A request
	// for more than 64 KiB must leave an eighth of it free, so everyday
	// manifests are served while large ones are held. Default 134217728
	// (128 MiB).
	MaxManifestBytesInFlight int64 `yaml:"maxManifestBytesInFlight"`
	// MaxManifestBytesPerUpstream is the share of MaxManifestBytesInFlight
	// that the requests to one upstream may hold: one that hangs holds its
	// share, never another's. Default half of MaxManifestBytesInFlight.
	MaxManifestBytesPerUpstream int64 `yaml:"maxManifestBytesPerUpstream"`
	// MaxManifestBytesPerClient is the share of MaxManifestBytesInFlight
	// that the responses to one client (source address, or mTLS identity)
	// may hold. Default a quarter of MaxManifestBytesInFlight.
	MaxManifestBytesPerClient int64 `yaml:"maxManifestBytesPerClient"`
	// HeaderWait is how long a manifest of unknown size is counted at the
	// most it may be (4 MiB) while the upstream has sent no headers; then
	// at 64 KiB until it does (responseTimeout still bounds the wait), and
	// at the size it announces once it does. Default 1s.
	HeaderWait time.Duration `yaml:"headerWait"`
	// MaxConnections bounds the client connections open at once: near it,
	// idle connections are closed first, and past it further ones wait to
	// be accepted. Default 4096.
	MaxConnections int `yaml:"maxConnections"`
	// MaxConnectionsPerClient bounds the connections of one client (source
	// address, or mTLS identity): past it, its idle ones are closed first,
	// and a new one waits for one of its own to close (15 s at most).
	// Default an eighth of MaxConnections (512).
	MaxConnectionsPerClient int `yaml:"maxConnectionsPerClient"`
	// ClientRate is the requests per second one client may send on
	// average (a token bucket of ClientBurst): past it the answer is 429
	// with Retry-After. 0, the default: no limit.
	ClientRate float64 `yaml:"clientRate"`
	// ClientBurst is how many requests over ClientRate one client may send
	// at once. Default: ClientRate rounded up, at least 1.
	ClientBurst int `yaml:"clientBurst"`
	// WriteTimeout bounds writing one manifest response. Default 30s.
	WriteTimeout time.Duration `yaml:"writeTimeout"`
	// SendTimeout bounds each stretch of a response without progress: a
	// client that reads nothing for that long is let go, the bytes held
	// for it released and its connection closed; a slow reader that keeps
	// reading is kept. Default 10s.
	SendTimeout time.Duration `yaml:"sendTimeout"`
	// MaxFills bounds the store's fills in flight (blobs being fetched
	// and stored); past it, fills nobody reads any more are cancelled, and
	// else a blob streams from the upstream without being stored. Default
	// 64.
	MaxFills int `yaml:"maxFills"`
	// MaxFillsPerUpstream is the share of MaxFills of one upstream.
	// Default half of MaxFills.
	MaxFillsPerUpstream int `yaml:"maxFillsPerUpstream"`
	// MaxFillWindowBytes bounds the memory of every fill's window (the
	// newest bytes received, for the clients reading along): past it,
	// readers that fall behind continue from the store. A fill nobody
	// reads keeps no window. Default 268435456 (256 MiB).
	MaxFillWindowBytes int64 `yaml:"maxFillWindowBytes"`
}

// Defaults are the limits of a configuration that sets none.
func Defaults() Limits {
	return Limits{
		DialTimeout:              10 * time.Second,
		ResponseTimeout:          30 * time.Second,
		VerifyTimeout:            30 * time.Second,
		MaxSignatures:            32,
		MaxArtifactSize:          128 << 10,
		MaxAttestations:          32,
		MaxEnvelopeSize:          2 << 20,
		ManifestCacheBytes:       64 << 20,
		MaxManifestBytesInFlight: 128 << 20,
		HeaderWait:               time.Second,
		MaxConnections:           4096,
		MaxConnectionsPerClient:  512,
		WriteTimeout:             30 * time.Second,
		SendTimeout:              10 * time.Second,
		MaxFills:                 64,
		MaxFillWindowBytes:       256 << 20,
	}
}

// WithDefaults is l with every zero field set to its default.
func (l Limits) WithDefaults() Limits {
	d := Defaults()
	set := func(v *time.Duration, def time.Duration) {
		if *v == 0 {
			*v = def
		}
	}
	setN := func(v *int64, def int64) {
		if *v == 0 {
			*v = def
		}
	}
	set(&l.DialTimeout, d.DialTimeout)
	set(&l.ResponseTimeout, d.ResponseTimeout)
	set(&l.VerifyTimeout, d.VerifyTimeout)
	set(&l.WriteTimeout, d.WriteTimeout)
	set(&l.SendTimeout, d.SendTimeout)
	set(&l.HeaderWait, d.HeaderWait)
	setN(&l.MaxArtifactSize, d.MaxArtifactSize)
	setN(&l.MaxEnvelopeSize, d.MaxEnvelopeSize)
	setN(&l.ManifestCacheBytes, d.ManifestCacheBytes)
	setN(&l.MaxManifestBytesInFlight, d.MaxManifestBytesInFlight)
	// A share holds at least one manifest of the largest size.
	setN(&l.MaxManifestBytesPerUpstream, min(l.MaxManifestBytesInFlight, max(l.MaxManifestBytesInFlight/2, MaxManifestSize)))
	setN(&l.MaxManifestBytesPerClient, min(l.MaxManifestBytesInFlight, max(l.MaxManifestBytesInFlight/4, MaxManifestSize)))
	setN(&l.MaxFillWindowBytes, d.MaxFillWindowBytes)
	if l.MaxSignatures == 0 {
		l.MaxSignatures = d.MaxSignatures
	}
	if l.MaxAttestations == 0 {
		l.MaxAttestations = d.MaxAttestations
	}
	setI := func(v *int, def int) {
		if *v == 0 {
			*v = def
		}
	}
	setI(&l.MaxConnections, d.MaxConnections)
	setI(&l.MaxConnectionsPerClient, max(1, l.MaxConnections/8))
	setI(&l.MaxFills, d.MaxFills)
	setI(&l.MaxFillsPerUpstream, max(1, l.MaxFills/2))
	if l.ClientBurst == 0 && l.ClientRate > 0 {
		l.ClientBurst = max(1, int(math.Ceil(l.ClientRate)))
	}
	return l
}
