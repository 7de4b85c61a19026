// Package limits is the one place of authz-proxy's bounds and their
// defaults: the configuration's limits section, which the upstream clients
// and the HTTP edge take as they are.
package limits

import "time"

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
	// MaxConnections bounds the client connections open at once; further
	// ones wait to be accepted. Default 4096.
	MaxConnections int `yaml:"maxConnections"`
	// WriteTimeout bounds writing one manifest response, and each stretch
	// of a blob response without progress: a client that stops reading
	// lets go. Default 30s.
	WriteTimeout time.Duration `yaml:"writeTimeout"`
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
		MaxConnections:           4096,
		WriteTimeout:             30 * time.Second,
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
	setN(&l.MaxArtifactSize, d.MaxArtifactSize)
	setN(&l.MaxEnvelopeSize, d.MaxEnvelopeSize)
	setN(&l.ManifestCacheBytes, d.ManifestCacheBytes)
	setN(&l.MaxManifestBytesInFlight, d.MaxManifestBytesInFlight)
	if l.MaxSignatures == 0 {
		l.MaxSignatures = d.MaxSignatures
	}
	if l.MaxAttestations == 0 {
		l.MaxAttestations = d.MaxAttestations
	}
	if l.MaxConnections == 0 {
		l.MaxConnections = d.MaxConnections
	}
	return l
}
