// Package config defines the YAML configuration of authz-proxy, its defaults,
// and strict loading: unknown fields, dangling references and out-of-range
// values are errors that name the file, the line and the field.
//
// It checks the shape of a configuration. Compiling keys and rules into a
// policy is the job of package policy, which reports its errors through
// Config.Errorf so that they carry the same positions.
package config

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/authz-proxy/authz-proxy/internal/limits"
	"gopkg.in/yaml.v3"
)

// Config is one whole configuration file.
type Config struct {
	Listen          Listen        `yaml:"listen"`
	Metrics         *Metrics      `yaml:"metrics"`
	Upstreams       []Upstream    `yaml:"upstreams"`
	DefaultUpstream string        `yaml:"defaultUpstream"`
	Audit           Audit         `yaml:"audit"`
	Environments    []Environment `yaml:"environments"`
	Clients         *Clients      `yaml:"clients"`
	Cache           Cache         `yaml:"cache"`
	Limits          limits.Limits `yaml:"limits"`
	Store           *Store        `yaml:"store"`
	TrustRoots      []TrustRoot   `yaml:"trustRoots"`
	Attestors       []Attestor    `yaml:"attestors"`
	Policy          Policy        `yaml:"policy"`
	Revalidate      *Revalidate   `yaml:"revalidate"`

	// File is the path the configuration was read from.
	File string `yaml:"-"`
	// Generation identifies this configuration's content, including the key
	// files it names. Verdicts cached under one generation are not used under
	// another.
	Generation string `yaml:"-"`
	// Warnings are problems that do not stop the configuration from loading,
	// each as "file:line: field: what": for example a breakglass entry that
	// has expired and is ignored.
	Warnings []string `yaml:"-"`

	root *yaml.Node
	dir  string
}

// Listen is the proxy's own listener.
type Listen struct {
	// Addr is host:port; default 127.0.0.1:5000.
	Addr string `yaml:"addr"`
	TLS  *TLS   `yaml:"tls"`
}

// TLS serves the listener over TLS; with ClientCAFile, clients must present a
// certificate issued by one of those CAs (mTLS).
type TLS struct {
	CertFile     string `yaml:"certFile"`
	KeyFile      string `yaml:"keyFile"`
	ClientCAFile string `yaml:"clientCAFile"`
}

// Metrics is the optional metrics listener: /metrics (Prometheus),
// /healthz and /readyz.
type Metrics struct {
	// Addr is host:port, e.g. 127.0.0.1:9090; required when metrics is set.
	Addr string `yaml:"addr"`
	// Pprof serves Go's profiler (net/http/pprof) under /debug/pprof/ on
	// this listener too. Default false: profiles reveal what the process
	// does, so turn it on only where the metrics listener is private.
	Pprof bool `yaml:"pprof"`
}

// Upstream is a registry that images are pulled from.
type Upstream struct {
	// Name is how clients (?ns= or the first path segment) and policies
	// (image patterns) address this upstream, e.g. docker.io.
	Name string `yaml:"name"`
	// URL is the registry's base URL: scheme and host, no path.
	URL  string `yaml:"url"`
	Auth *Auth  `yaml:"auth"`
	// Insecure allows plain http and unverified TLS. For tests and labs.
	Insecure bool `yaml:"insecure"`
	// ImmutableTags are tag globs (`*` matches any run of characters:
	// v*.*.*) of tags that never move: with a store, such a tag is served
	// from its last resolution without asking the upstream.
	ImmutableTags []string `yaml:"immutableTags"`
	// TagTTL is how long after the upstream confirmed a tag's digest that
	// digest is used, for GET and HEAD alike, without asking the upstream
	// again. Default 0: every pull by tag asks (concurrent pulls of one
	// tag share one round trip). It trades how soon a moved tag is seen for
	// upstream load, like the sync interval of a mirroring registry.
	TagTTL time.Duration `yaml:"tagTTL"`
	// StaleIfError is how long after the upstream last confirmed a tag's
	// digest that digest is still served when the upstream fails
	// (connection refused, timeout, 5xx, 429); with a store. Default 24h;
	// 0s turns it off.
	StaleIfError *time.Duration `yaml:"staleIfError"`
}

// DefaultStaleIfError is an upstream's staleIfError when it sets none.
const DefaultStaleIfError = 24 * time.Hour

// Auth is the proxy's own credential for an upstream.
type Auth struct {
	Username     string `yaml:"username"`
	PasswordFile string `yaml:"passwordFile"`
	PasswordEnv  string `yaml:"passwordEnv"`
}

// Audit configures the decision log.
type Audit struct {
	// File, if set, receives every decision record as a JSON line, besides
	// standard output.
	File string `yaml:"file"`
	// Chain makes each line carry its sequence number and the hash of the
	// line before it, so that a line removed, inserted, changed or moved
	// shows (`authz-proxy audit verify`). Default true.
	Chain *bool `yaml:"chain"`
	// Checkpoint, if set, signs the chain at an interval.
	Checkpoint *Checkpoint `yaml:"checkpoint"`
	// Required refuses to answer a manifest request whose decision record
	// could not be written (503, and /readyz not ready) instead of serving
	// it unlogged. Default false: a failing write is logged and counted.
	Required bool `yaml:"required"`
	// LogID names this replica's log in every line, so that the logs of
	// several replicas are told apart, verified one by one and merged.
	// Default: the host name (the pod's name in Kubernetes) and the start
	// of the checkpoint key's ID, kept from the log's last checkpoint
	// across restarts and new keys once written.
	LogID string `yaml:"logId"`
}

// Chained reports whether decision-log lines are hash-chained.
func (a Audit) Chained() bool { return a.Chain == nil || *a.Chain }

// Checkpoint signs the decision log's chain: a checkpoint line, signed with
// the private key in KeyFile, is written every Every, when the proxy starts,
// before it leaves a file (SIGHUP) and when it stops.
type Checkpoint struct {
	// KeyFile is a PEM private key, Ed25519 or ECDSA P-256/384/521
	// (PKCS #8 "PRIVATE KEY" or SEC 1 "EC PRIVATE KEY", unencrypted);
	// required. Auditors verify with its public key.
	KeyFile string `yaml:"keyFile"`
	// Every is the interval between checkpoints; default 1m.
	Every time.Duration `yaml:"every"`
}

// Environment groups clients for per-environment rules. A client belongs to
// the first environment, in the order listed, that one of whose selectors
// matches it.
type Environment struct {
	Name    string      `yaml:"name"`
	Clients []ClientSel `yaml:"clients"`
}

// ClientSel selects clients by certificate name, source address range or
// principal; exactly one of its fields is set.
type ClientSel struct {
	// CN matches a verified mTLS client certificate whose subject common
	// name, or one of whose DNS, URI or e-mail subject alternative names,
	// equals it.
	CN string `yaml:"cn"`
	// CIDR matches the client's source address, e.g. 10.1.0.0/16.
	CIDR string `yaml:"cidr"`
	// Principal matches the authenticated principal (see Clients), a
	// glob in which * stands for any characters:
	// "k8s:system:serviceaccount:prod:*".
	Principal string `yaml:"principal"`
}

// Clients says who may pull: how clients authenticate, and which images
// each principal may pull. Absent: anyone who reaches the proxy pulls
// whatever its upstream credentials can read.
type Clients struct {
	// Htpasswd is a file of users and their bcrypt hashes (htpasswd -B);
	// principal "user:<name>".
	Htpasswd string `yaml:"htpasswd"`
	// Tokens are the issuers of bearer JWTs (OIDC, Kubernetes service
	// accounts, GitHub Actions); principal "<name>:<sub>".
	Tokens []TokenIssuer `yaml:"tokens"`
	// Certificates authenticates verified mTLS client certificates
	// (listen.tls.clientCAFile); principal "cert:<first URI SAN, else CN>".
	Certificates bool `yaml:"certificates"`
	// Anonymous are image patterns anyone may pull without a credential.
	Anonymous []string `yaml:"anonymous"`
	// Access lists who may pull what: a principal may pull an image when
	// an entry names both (and anyone, an anonymous image).
	Access []Access `yaml:"access"`
}

// TokenIssuer is one issuer of bearer tokens.
type TokenIssuer struct {
	// Name prefixes the principals of its tokens.
	Name string `yaml:"name"`
	// Issuer is the tokens' iss claim, exactly.
	Issuer string `yaml:"issuer"`
	// Audiences are accepted aud claims; a token must name one.
	Audiences []string `yaml:"audiences"`
	// JWKSFile is a JSON Web Key Set of the issuer's keys, read at load.
	JWKSFile string `yaml:"jwksFile"`
	// JWKSURL is where the issuer publishes its keys, fetched when a
	// token names a key not seen yet (rotation), and cached.
	JWKSURL string `yaml:"jwksURL"`
}

// Access grants the principals matching Principals (globs, * for any
// characters) the images matching Images (image patterns).
type Access struct {
	Principals []string `yaml:"principals"`
	Images     []string `yaml:"images"`
}

// Revalidate re-judges, every Interval, the digests allowed within Window
// under the policy in force, reading their evidence from the upstream
// again: a digest now denied is logged as decision "revoked". Off when
// absent.
type Revalidate struct {
	// Interval defaults to 4h; Window to 24h.
	Interval time.Duration `yaml:"interval"`
	Window   time.Duration `yaml:"window"`
}

// Defaults of revalidate.
const (
	DefaultRevalidateInterval = 4 * time.Hour
	DefaultRevalidateWindow   = 24 * time.Hour
)

// Cache bounds the verdict cache.
type Cache struct {
	// MaxEntries defaults to 10000.
	MaxEntries int `yaml:"maxEntries"`
	// AllowTTL defaults to 10m.
	AllowTTL time.Duration `yaml:"allowTTL"`
	// DenyTTL defaults to 30s.
	DenyTTL time.Duration `yaml:"denyTTL"`
}

// Store keeps verified content by digest on one of distribution's storage
// drivers: blobs, manifests with the signatures and attestations they were
// judged on, and the last resolution of each tag, so that a second pull is
// served without the upstream and pulls go on while it is down. Without a
// store, blobs stream from the upstream every time.
type Store struct {
	// Driver is filesystem, s3, or inmemory (tests: nothing survives the
	// process).
	Driver string `yaml:"driver"`
	// RootDirectory is the filesystem driver's folder (relative to the
	// configuration file's folder), or the s3 driver's key prefix in the
	// bucket.
	RootDirectory string `yaml:"rootdirectory"`
	// MaxSize bounds what is stored, e.g. 100GiB or 500MB (KiB, MiB, GiB,
	// TiB; KB, MB, GB, TB; or bytes); past it the least recently used
	// blobs are evicted. Required.
	MaxSize string `yaml:"maxSize"`
	// Bucket, Region, RegionEndpoint and ForcePathStyle place the s3
	// driver: any S3-compatible service. Region defaults to us-east-1 when
	// RegionEndpoint is set.
	Bucket         string `yaml:"bucket"`
	Region         string `yaml:"region"`
	RegionEndpoint string `yaml:"regionendpoint"`
	ForcePathStyle bool   `yaml:"forcepathstyle"`
	// AccessKeyFile and SecretKeyFile hold the s3 credential; without
	// them it comes from the environment (AWS_ACCESS_KEY_ID and
	// AWS_SECRET_ACCESS_KEY, a shared credentials file, or an instance
	// role). It is never written to the logs.
	AccessKeyFile string `yaml:"accesskeyFile"`
	SecretKeyFile string `yaml:"secretkeyFile"`

	// MaxBytes is MaxSize in bytes, set when the configuration loads.
	MaxBytes int64 `yaml:"-"`
}

// TrustRoot is a named Sigstore trusted root that keyless attestors name
// (Keyless.TrustRoots): a TUF repository that keeps it current, or a plain
// trusted_root.json file; exactly one of the two.
type TrustRoot struct {
	// Name is how attestors refer to it, e.g. public-good.
	Name string `yaml:"name"`
	TUF  *TUF   `yaml:"tuf"`
	// File is a trusted_root.json read at load, like trustedRootFile (a
	// change reloads the configuration); nothing is fetched.
	File string `yaml:"file"`
}

// TUF is a Sigstore TUF repository whose target trusted_root.json is the
// trusted root, fetched with the TUF client workflow and refreshed in the
// background.
type TUF struct {
	// Mirror is the repository's URL: https://, http:// (TUF metadata is
	// signed and expires, so the transport needs no trust), or
	// file:///DIR for a snapshot that `authz-proxy trust fetch` wrote
	// (relative: file:DIR, from the configuration's folder). Default
	// https://tuf-repo-cdn.sigstore.dev (Sigstore's public-good instance),
	// only with Root embedded.
	Mirror string `yaml:"mirror"`
	// Root is the TUF root.json the client starts trusting: "embedded"
	// (the public-good root that the binary ships, sigstore-go's) or a
	// file. Default embedded for the public-good mirror; required for any
	// other.
	Root string `yaml:"root"`
	// Refresh is how often the repository is asked for a new
	// trusted_root.json. Default 24h; at least 1s.
	Refresh *time.Duration `yaml:"refresh"`
	// Cache is a folder that keeps the last verified metadata and
	// trusted_root.json across restarts, in a TUF repository's layout: a
	// start verifies it from Root and starts from it when the mirror does
	// not answer. Optional; without it a start needs the mirror.
	Cache string `yaml:"cache"`
}

// EmbeddedRoot is TUF.Root's value for the public-good root.json that the
// binary ships.
const EmbeddedRoot = "embedded"

// DefaultTUFMirror is Sigstore's public-good TUF repository.
const DefaultTUFMirror = "https://tuf-repo-cdn.sigstore.dev"

// DefaultTUFRefresh is how often a TUF trust root is refreshed unless its
// refresh says otherwise.
const DefaultTUFRefresh = 24 * time.Hour

// Store drivers.
const (
	StoreFilesystem = "filesystem"
	StoreS3         = "s3"
	StoreInMemory   = "inmemory"
)

// Attestor is a party whose signatures vouch for images: holders of
// PublicKeys, a Sigstore Keyless identity, or a Notary Project (Notation)
// signer, exactly one of the three.
type Attestor struct {
	Name       string      `yaml:"name"`
	PublicKeys []PublicKey `yaml:"publicKeys"`
	Keyless    *Keyless    `yaml:"keyless"`
	Notation   *Notation   `yaml:"notation"`
	// RequireTlog, for a key-based attestor, demands a transparency-log
	// proof (a Rekor entry's signed timestamp or inclusion proof) verified
	// against TrustedRootFile or TrustRoots, as `cosign verify` does unless
	// told --insecure-ignore-tlog. Default false. A keyless attestor sets
	// it under keyless instead.
	RequireTlog bool `yaml:"requireTlog"`
	// TrustedRootFile is a Sigstore trusted root (trusted_root.json)
	// whose Rekor keys verify the transparency-log proofs of a key-based
	// attestor; with RequireTlog, it or TrustRoots is required.
	TrustedRootFile string `yaml:"trustedRootFile"`
	// TrustRoots names entries of the configuration's trustRoots whose
	// Rekor keys verify those proofs (kept current by TUF): a proof
	// counts when one of them, or TrustedRootFile, verifies it.
	TrustRoots []string `yaml:"trustRoots"`
}

// PublicKey is a PEM public key, inline or in a file.
type PublicKey struct {
	File string `yaml:"file"`
	PEM  string `yaml:"pem"`
}

// Keyless is a Sigstore keyless identity: whoever holds a short-lived
// certificate from a Fulcio CA of the trusted roots whose OIDC Issuer,
// subject alternative name and Fulcio extensions are the ones named here.
type Keyless struct {
	// Issuer is the OIDC issuer the certificate's Fulcio issuer extension
	// must name exactly, e.g. https://token.actions.githubusercontent.com.
	// Optional with GitHub, which implies GitHub Actions' issuer.
	Issuer string `yaml:"issuer"`
	// Subject is the certificate's subject alternative name (a URI or an
	// e-mail address), exactly; SubjectRegexp is a Go regular expression
	// it must match instead (anchor it with ^ and $). One of the two, or
	// GitHub (which implies the subject), is required.
	Subject       string `yaml:"subject"`
	SubjectRegexp string `yaml:"subjectRegexp"`
	// Certificate names Fulcio certificate extensions that must match, by
	// their names in Fulcio's documentation (sourceRepositoryURI,
	// buildTrigger, runnerEnvironment, ...): NAME for the exact value, or
	// NAMERegexp for a Go regular expression the value must match.
	Certificate map[string]string `yaml:"certificate"`
	// GitHub is GitHub Actions' identity in short; it adds to the other
	// fields, all of which must hold.
	GitHub *GitHub `yaml:"github"`
	// TrustedRootFile and TrustedRootFiles are Sigstore trusted roots
	// (trusted_root.json: the Fulcio CAs, Rekor keys, CT logs and timestamp
	// authorities), read at load; nothing is fetched from the network. A
	// signature counts when it verifies under any one of them (say,
	// Sigstore's public-good root and GitHub's). At least one of these
	// or of TrustRoots is required.
	TrustedRootFile  string   `yaml:"trustedRootFile"`
	TrustedRootFiles []string `yaml:"trustedRootFiles"`
	// TrustRoots names entries of the configuration's trustRoots (kept
	// current by TUF, or files); they add to the files above.
	TrustRoots []string `yaml:"trustRoots"`
	// RequireTlog demands a verified transparency-log proof, and
	// RequireTimestamp a verified RFC 3161 timestamp from a timestamp
	// authority of the trusted root. With neither, the certificate is
	// checked at the time a proof that is there gives or, without one, at
	// the current time, as `cosign verify --insecure-ignore-tlog` does for
	// the long-lived certificates of a private CA. Both default to false.
	RequireTlog      bool `yaml:"requireTlog"`
	RequireTimestamp bool `yaml:"requireTimestamp"`
}

// Notation levels (Notation.Level) and verifyTimestamp options.
const (
	NotationStrict           = "strict"
	NotationPermissive       = "permissive"
	NotationAudit            = "audit"
	TimestampAlways          = "always"
	TimestampAfterCertExpiry = "afterCertExpiry"
)

// Notation is a Notary Project signer, as notation's trust policy and
// trust store describe one: whoever signs (`notation sign`, or a signing
// plug-in such as Azure Key Vault's) with a certificate that chains to the
// trust store and whose subject is a trusted identity.
type Notation struct {
	// TrustStore are files of PEM (or DER) certificates: the CA
	// certificates, or self-signed signing certificates, that the
	// signature's certificate chain must include (notation's "ca" trust
	// store). At least one.
	TrustStore []string `yaml:"trustStore"`
	// TSARoots are files of the root certificates of the timestamp
	// authorities trusted for RFC 3161 timestamps (notation's "tsa" trust
	// store). With them a timestamp is verified and dates the signature,
	// which then stays valid after its certificate expires; without them
	// the certificate chain must be valid at the time of the pull.
	TSARoots []string `yaml:"tsaRoots"`
	// TrustedIdentities are "x509.subject: <distinguished name>" entries
	// (the signing certificate's subject must carry every attribute
	// named), or "*" for any signer of the trust store. At least one.
	TrustedIdentities []string `yaml:"trustedIdentities"`
	// Level is strict (default), permissive or audit, with notation's
	// meanings; audit logs without blocking, which here is a rule with
	// enforcement dryrun, so every rule that names the attestor must be
	// one.
	Level string `yaml:"level"`
	// VerifyTimestamp is always (default: with TSARoots, every signature
	// needs a timestamp) or afterCertExpiry (a timestamp is needed, and
	// verified, only once the certificate has expired). It needs TSARoots.
	VerifyTimestamp string `yaml:"verifyTimestamp"`
	// CheckRevocation asks the OCSP responders and CRL distribution points
	// that the certificates name, over the network, whether any is
	// revoked. Default false: revocation is not checked. When set, a
	// status that cannot be learnt fails the pull with 503 under strict
	// (it is only logged under permissive).
	CheckRevocation bool `yaml:"checkRevocation"`
}

// Files lists the certificate files of n, the trust store first.
func (n *Notation) Files() []string {
	return append(append([]string{}, n.TrustStore...), n.TSARoots...)
}

// TrustedRoots lists the trusted root files of k, trustedRootFile first.
func (k *Keyless) TrustedRoots() []string {
	var files []string
	if k.TrustedRootFile != "" {
		files = append(files, k.TrustedRootFile)
	}
	return append(files, k.TrustedRootFiles...)
}

// GitHub is the identity of a GitHub Actions workflow run, with the meaning
// of `gh attestation verify --repo --signer-workflow
// --deny-self-hosted-runners` (see the README for where cosign's
// --certificate-github-workflow-* flags differ).
type GitHub struct {
	// Repository is owner/name, the repository that was built
	// (sourceRepositoryURI and its owner, any case). Required.
	Repository string `yaml:"repository"`
	// Workflow is the signer workflow: a path in Repository
	// (.github/workflows/release.yml) or, for a reusable workflow of
	// another repository, owner/name/.github/workflows/build.yml. Without
	// it, any workflow of Repository.
	Workflow string `yaml:"workflow"`
	// Ref is the git ref that was built (sourceRepositoryRef), exactly or
	// as a glob: * within one path segment, ** across, e.g. refs/tags/v*.
	Ref string `yaml:"ref"`
	// Runner is github-hosted or self-hosted (runnerEnvironment); default:
	// either.
	Runner string `yaml:"runner"`
	// Host is the GitHub host, default github.com; a GHE.com tenant
	// (acme.ghe.com) has its own OIDC issuer.
	Host string `yaml:"host"`
}

// Enforcement modes.
const (
	Enforce = "enforce"
	DryRun  = "dryrun"
)

// Rule actions.
const (
	ActionAllow  = "allow"
	ActionDeny   = "deny"
	ActionVerify = "verify"
)

// Policy says what each image needs.
type Policy struct {
	// Enforcement is the default for every rule: enforce (default) or dryrun.
	Enforcement string       `yaml:"enforcement"`
	Allowlist   []string     `yaml:"allowlist"`
	Breakglass  []Breakglass `yaml:"breakglass"`
	Rules       []Rule       `yaml:"rules"`
	// Default applies to images that no rule matches; its action defaults to
	// deny.
	Default Rule `yaml:"default"`
}

// Breakglass is a temporary, audited exception: it allows the images its
// pattern matches (a digest when it names one) until Expires, whatever the
// rules say. All three fields are required.
type Breakglass struct {
	Image   string    `yaml:"image"`
	Expires time.Time `yaml:"expires"`
	// Reason is written into every decision the entry makes.
	Reason string `yaml:"reason"`
}

// Rule is one policy rule; the first rule whose images match decides.
type Rule struct {
	Name         string        `yaml:"name"`
	Images       []string      `yaml:"images"`
	Environments []string      `yaml:"environments"`
	Enforcement  string        `yaml:"enforcement"`
	Action       string        `yaml:"action"`
	Require      []Requirement `yaml:"require"`
}

// Requirement is one thing a rule demands; all of a rule's must hold.
// Exactly one of its fields is set.
type Requirement struct {
	Signature       *SignatureRequirement       `yaml:"signature"`
	Attestation     *AttestationRequirement     `yaml:"attestation"`
	Vulnerabilities *VulnerabilitiesRequirement `yaml:"vulnerabilities"`
}

// SignatureRequirement is met by valid signatures over the image digest from
// at least Threshold distinct listed attestors.
type SignatureRequirement struct {
	Attestors []string `yaml:"attestors"`
	// Threshold defaults to 1.
	Threshold int `yaml:"threshold"`
}

// AttestationRequirement is met by verified in-toto attestations: each of
// at least Threshold distinct listed attestors must have signed an
// attestation of PredicateType about the image digest whose Condition
// holds.
type AttestationRequirement struct {
	// PredicateType is the statement's predicate type URI, or one of
	// cosign's --type names (see PredicateTypeAliases), which loading
	// replaces with its URI.
	PredicateType string   `yaml:"predicateType"`
	Attestors     []string `yaml:"attestors"`
	// Threshold defaults to 1.
	Threshold int `yaml:"threshold"`
	// Condition is an optional CEL expression over the attestation that
	// must evaluate to true; package policy compiles it.
	Condition string `yaml:"condition"`
	// Select says which attestations decide: newest (default: the newest
	// verified attestation of the type from the attestors, so that a
	// newer scan or provenance replaces an older one), any (any one whose
	// condition holds, for predicates where any one proof is enough) or
	// all (every one must satisfy).
	Select string `yaml:"select"`
}

// Attestation selections (AttestationRequirement.Select).
const (
	SelectNewest = "newest"
	SelectAny    = "any"
	SelectAll    = "all"
)

// VulnerabilitiesRequirement is Binary Authorization's vulnerability check
// over signed scans: the newest vuln attestation (cosign's
// https://cosign.sigstore.dev/attestation/vuln/v1, Trivy JSON, Grype JSON
// or SARIF in scanner.result) from Attestors may hold no finding above the
// maximum severities, other than the exceptions and those that OpenVEX
// statements from the VEX attestors say do not affect the image, and
// none of BlockedCves.
type VulnerabilitiesRequirement struct {
	// Attestors are who sign scans; the newest scan of theirs decides.
	Attestors []string `yaml:"attestors"`
	// MaxAge, when set, is how old the newest scan may be (by its
	// metadata.scanFinishedOn, else its verified signing time).
	MaxAge time.Duration `yaml:"maxAge"`
	// MaximumFixableSeverity and MaximumUnfixableSeverity are the worst
	// severities (NONE, LOW, MEDIUM, HIGH, CRITICAL) allowed for a finding
	// with a fix available and one without. Both are required.
	MaximumFixableSeverity   string `yaml:"maximumFixableSeverity"`
	MaximumUnfixableSeverity string `yaml:"maximumUnfixableSeverity"`
	// UnknownSeverity is the severity that a finding whose scanner gave
	// none counts as; default HIGH.
	UnknownSeverity string `yaml:"unknownSeverity"`
	// AllowedCves are exceptions, each until its expiry: warned about
	// when it is near, ignored after.
	AllowedCves []AllowedCVE `yaml:"allowedCves"`
	// BlockedCves deny whatever their severity, exception or VEX.
	BlockedCves []string `yaml:"blockedCves"`
	// VEX names who may suppress findings with OpenVEX attestations.
	VEX *VEXSources `yaml:"vex"`
	// Condition is an optional CEL expression that must also hold; it
	// sees findings (what remains after VEX and exceptions) and
	// suppressed (what they took off).
	Condition string `yaml:"condition"`
}

// AllowedCVE is one exception to a vulnerabilities requirement. All three
// fields are required.
type AllowedCVE struct {
	// ID is a CVE id (CVE-2024-1234) or a GitHub advisory id
	// (GHSA-xxxx-xxxx-xxxx); a finding that has it as its id or an alias
	// is excepted.
	ID      string    `yaml:"id"`
	Expires time.Time `yaml:"expires"`
	Reason  string    `yaml:"reason"`
}

// AllowedCVEWarning is how long before its expiry an exception is warned
// about, at load and in the decisions it makes.
const AllowedCVEWarning = 14 * 24 * time.Hour

// DefaultUnknownSeverity is what a finding without a severity counts as
// unless unknownSeverity says otherwise.
const DefaultUnknownSeverity = "HIGH"

// VEXSources are the attestors whose OpenVEX attestations (cosign attest
// --type openvex, vexctl attest) may suppress findings.
type VEXSources struct {
	Attestors []string `yaml:"attestors"`
}

// PredicateTypeAliases are cosign's `attest --type` names and the predicate
// type URIs they stand for (cosign v2).
var PredicateTypeAliases = map[string]string{
	"custom":           "https://cosign.sigstore.dev/attestation/v1",
	"slsaprovenance":   "https://slsa.dev/provenance/v0.2",
	"slsaprovenance02": "https://slsa.dev/provenance/v0.2",
	"slsaprovenance1":  "https://slsa.dev/provenance/v1",
	"spdx":             "https://spdx.dev/Document",
	"spdxjson":         "https://spdx.dev/Document",
	"cyclonedx":        "https://cyclonedx.org/bom",
	"link":             "https://in-toto.io/Link/v1",
	"vuln":             "https://cosign.sigstore.dev/attestation/vuln/v1",
	"openvex":          "https://openvex.dev/ns",
}

// Files lists, resolved, every file the configuration reads: key, trusted
// root, TLS, password and checkpoint key files. A change to any of them is a change of
// configuration.
func (c *Config) Files() []string {
	var files []string
	add := func(name string) {
		if name != "" {
			files = append(files, c.Path(name))
		}
	}
	if cp := c.Audit.Checkpoint; cp != nil {
		add(cp.KeyFile)
	}
	if t := c.Listen.TLS; t != nil {
		add(t.CertFile)
		add(t.KeyFile)
		add(t.ClientCAFile)
	}
	for _, u := range c.Upstreams {
		if u.Auth != nil {
			add(u.Auth.PasswordFile)
		}
	}
	if st := c.Store; st != nil {
		add(st.AccessKeyFile)
		add(st.SecretKeyFile)
	}
	if cl := c.Clients; cl != nil {
		add(cl.Htpasswd)
		for _, t := range cl.Tokens {
			add(t.JWKSFile)
		}
	}
	for _, r := range c.TrustRoots {
		add(r.File)
		if r.TUF != nil && r.TUF.Root != EmbeddedRoot {
			add(r.TUF.Root)
		}
	}
	for _, a := range c.Attestors {
		for _, k := range a.PublicKeys {
			add(k.File)
		}
		add(a.TrustedRootFile)
		if a.Keyless != nil {
			for _, f := range a.Keyless.TrustedRoots() {
				add(f)
			}
		}
		if a.Notation != nil {
			for _, f := range a.Notation.Files() {
				add(f)
			}
		}
	}
	return files
}

// ReferencedFiles is Files for the configuration at path, read leniently: it
// lists what a configuration names even when it would not load, so that a
// watcher notices when a missing file appears. It returns nil when path
// cannot be read or decoded at all.
func ReferencedFiles(path string) []string {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil
	}
	c := &Config{dir: filepath.Dir(path)}
	var te *yaml.TypeError // fields of the wrong type: the rest is decoded
	if err := yaml.Unmarshal(data, c); err != nil && !errors.As(err, &te) {
		return nil
	}
	return c.Files()
}

// Load reads, decodes strictly, defaults and validates the file at path.
// Every problem found is reported, one per line, each as
// "file:line: field: what is wrong".
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	return Parse(path, data)
}

var yamlLine = regexp.MustCompile(`line (\d+): `)

// Parse is Load for bytes already read; path names them in errors and is the
// base for relative file names inside.
func Parse(path string, data []byte) (*Config, error) {
	c := &Config{File: path, dir: filepath.Dir(path)}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(c); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("%s: the file is empty", path)
		}
		return nil, decodeError(path, err)
	}
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		return nil, decodeError(path, err)
	}
	c.root = &root
	c.setDefaults()
	if err := c.validate(); err != nil {
		return nil, err
	}
	c.Warnings = c.warnings(time.Now())
	gen, err := c.generation(data)
	if err != nil {
		return nil, err
	}
	c.Generation = gen
	return c, nil
}

// decodeError rewrites yaml.v3's messages into "file:line: message" lines.
func decodeError(path string, err error) error {
	var te *yaml.TypeError
	if errors.As(err, &te) {
		lines := make([]string, 0, len(te.Errors))
		for _, e := range te.Errors {
			lines = append(lines, path+":"+yamlLine.ReplaceAllString(tidy(e), "$1: "))
		}
		return errors.New(strings.Join(lines, "\n"))
	}
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	return fmt.Errorf("%s:%s", path, yamlLine.ReplaceAllString(msg, "$1: "))
}

var unknownField = regexp.MustCompile(`field (\S+) not found in type config\.\w+`)

// tidy says "unknown field" the way a config author reads it, not in Go
// type names.
func tidy(e string) string {
	return unknownField.ReplaceAllString(e, `unknown field "$1" (see config.example.yaml for the schema)`)
}

// Path resolves a file name from the configuration: relative names are
// relative to the configuration file's folder.
func (c *Config) Path(name string) string {
	if name == "" || filepath.IsAbs(name) {
		return name
	}
	return filepath.Join(c.dir, name)
}

// Errorf returns an error positioned at the field that path names, for
// example Errorf([]any{"attestors", 0, "publicKeys", 1}, "bad key: %v", err)
// gives "config.yaml:12: attestors[0].publicKeys[1]: bad key: ...".
func (c *Config) Errorf(path []any, format string, args ...any) error {
	return fmt.Errorf("%s: %s", c.Where(path), fmt.Sprintf(format, args...))
}

// Where names the field that path names, as Errorf does:
// "config.yaml:12: trustRoots[0]".
func (c *Config) Where(path []any) string {
	return fmt.Sprintf("%s:%d: %s", c.File, c.line(path), fieldName(path))
}

func fieldName(path []any) string {
	var b strings.Builder
	for _, p := range path {
		switch p := p.(type) {
		case int:
			fmt.Fprintf(&b, "[%d]", p)
		default:
			if b.Len() > 0 {
				b.WriteByte('.')
			}
			fmt.Fprint(&b, p)
		}
	}
	return b.String()
}

// line finds the line of the deepest node along path that exists.
func (c *Config) line(path []any) int {
	if c.root == nil || len(c.root.Content) == 0 {
		return 0
	}
	n := c.root.Content[0]
	line := n.Line
	for _, p := range path {
		var next *yaml.Node
		switch p := p.(type) {
		case string:
			if n.Kind == yaml.MappingNode {
				for i := 0; i+1 < len(n.Content); i += 2 {
					if n.Content[i].Value == p {
						line = n.Content[i].Line
						next = n.Content[i+1]
					}
				}
			}
		case int:
			if n.Kind == yaml.SequenceNode && p < len(n.Content) {
				next = n.Content[p]
			}
		}
		if next == nil {
			return line
		}
		n = next
		if n.Kind != yaml.MappingNode {
			line = n.Line
		}
	}
	return line
}

func (c *Config) setDefaults() {
	if c.Listen.Addr == "" {
		c.Listen.Addr = "127.0.0.1:5000"
	}
	if c.Cache.MaxEntries == 0 {
		c.Cache.MaxEntries = 10000
	}
	if c.Cache.AllowTTL == 0 {
		c.Cache.AllowTTL = 10 * time.Minute
	}
	if c.Cache.DenyTTL == 0 {
		c.Cache.DenyTTL = 30 * time.Second
	}
	c.Limits = c.Limits.WithDefaults()
	for i := range c.Upstreams {
		if c.Upstreams[i].StaleIfError == nil {
			d := DefaultStaleIfError
			c.Upstreams[i].StaleIfError = &d
		}
	}
	for _, r := range c.TrustRoots {
		t := r.TUF
		if t == nil {
			continue
		}
		if t.Mirror == "" {
			t.Mirror = DefaultTUFMirror
		}
		if t.Root == "" && t.Mirror == DefaultTUFMirror {
			t.Root = EmbeddedRoot
		}
		if t.Refresh == nil {
			d := DefaultTUFRefresh
			t.Refresh = &d
		}
	}
	if cp := c.Audit.Checkpoint; cp != nil && cp.Every == 0 {
		cp.Every = time.Minute
	}
	if r := c.Revalidate; r != nil {
		if r.Interval == 0 {
			r.Interval = DefaultRevalidateInterval
		}
		if r.Window == 0 {
			r.Window = DefaultRevalidateWindow
		}
	}
	if c.Policy.Enforcement == "" {
		c.Policy.Enforcement = Enforce
	}
	if c.Policy.Default.Action == "" && len(c.Policy.Default.Require) == 0 {
		c.Policy.Default.Action = ActionDeny
	}
	for i := range c.Policy.Rules {
		setRuleDefaults(&c.Policy.Rules[i])
	}
	setRuleDefaults(&c.Policy.Default)
}

func setRuleDefaults(r *Rule) {
	if r.Action == "" && len(r.Require) > 0 {
		r.Action = ActionVerify
	}
	for _, req := range r.Require {
		if req.Signature != nil && req.Signature.Threshold == 0 {
			req.Signature.Threshold = 1
		}
		if a := req.Attestation; a != nil {
			if a.Threshold == 0 {
				a.Threshold = 1
			}
			if uri, ok := PredicateTypeAliases[a.PredicateType]; ok {
				a.PredicateType = uri
			}
			if a.Select == "" {
				a.Select = SelectNewest
			}
		}
		if v := req.Vulnerabilities; v != nil && v.UnknownSeverity == "" {
			v.UnknownSeverity = DefaultUnknownSeverity
		}
	}
}

// generation hashes the configuration and every file it names whose content
// changes verdicts: key files, trusted roots and certificates.
func (c *Config) generation(data []byte) (string, error) {
	h := sha256.New()
	h.Write(data)
	hashFile := func(path []any, name string) error {
		if name == "" {
			return nil
		}
		b, err := os.ReadFile(c.Path(name))
		if err != nil {
			return c.Errorf(path, "%v", err)
		}
		h.Write(b)
		return nil
	}
	for i, r := range c.TrustRoots {
		if err := hashFile([]any{"trustRoots", i, "file"}, r.File); err != nil {
			return "", err
		}
		if t := r.TUF; t != nil && t.Root != EmbeddedRoot {
			if err := hashFile([]any{"trustRoots", i, "tuf", "root"}, t.Root); err != nil {
				return "", err
			}
		}
	}
	for i, a := range c.Attestors {
		for j, k := range a.PublicKeys {
			if err := hashFile([]any{"attestors", i, "publicKeys", j, "file"}, k.File); err != nil {
				return "", err
			}
		}
		if err := hashFile([]any{"attestors", i, "trustedRootFile"}, a.TrustedRootFile); err != nil {
			return "", err
		}
		if k := a.Keyless; k != nil {
			if err := hashFile([]any{"attestors", i, "keyless", "trustedRootFile"}, k.TrustedRootFile); err != nil {
				return "", err
			}
			for j, f := range k.TrustedRootFiles {
				if err := hashFile([]any{"attestors", i, "keyless", "trustedRootFiles", j}, f); err != nil {
					return "", err
				}
			}
		}
		if n := a.Notation; n != nil {
			for _, set := range []struct {
				field string
				files []string
			}{{"trustStore", n.TrustStore}, {"tsaRoots", n.TSARoots}} {
				for j, f := range set.files {
					if err := hashFile([]any{"attestors", i, "notation", set.field, j}, f); err != nil {
						return "", err
					}
				}
			}
		}
	}
	return hex.EncodeToString(h.Sum(nil))[:16], nil
}
