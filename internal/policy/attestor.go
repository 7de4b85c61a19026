package policy

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"

	"github.com/authz-proxy/authz-proxy/internal/audit"
	"github.com/authz-proxy/authz-proxy/internal/config"
	"github.com/authz-proxy/authz-proxy/internal/verify"
)

// attestor is a compiled attestor: keys, optionally with their
// transparency-log verifiers, a keyless identity, or a Notary Project
// signer.
type attestor struct {
	name string
	keys []*verify.PublicKey
	// logged holds, for a key-based attestor that requires a
	// transparency-log proof, the log verifier of each key in keys.
	logged []*verify.LogVerifier
	// keyless is set for a keyless attestor, keys is then empty.
	keyless *verify.Keyless
	// notation is set for a Notary Project signer, keys is then empty.
	notation *verify.Notation
	// warnings are problems of its configuration that do not stop it.
	warnings []string
}

// compileAttestor parses attestor i's keys or trusted root; errors carry
// the configuration's positions.
func compileAttestor(c *config.Config, i int, a config.Attestor, roots map[string]*verify.TrustedRoot, named map[string]*verify.TrustedRoot) (*attestor, []error) {
	at := &attestor{name: a.Name}
	var errs []error
	for j, k := range a.PublicKeys {
		path := []any{"attestors", i, "publicKeys", j}
		data := []byte(k.PEM)
		if k.File != "" {
			path = append(path, "file")
			b, err := os.ReadFile(c.Path(k.File))
			if err != nil {
				errs = append(errs, c.Errorf(path, "%v", err))
				continue
			}
			data = b
		}
		key, err := verify.ParsePublicKey(data)
		if err != nil {
			errs = append(errs, c.Errorf(path, "%v", err))
			continue
		}
		at.keys = append(at.keys, key)
	}
	if a.RequireTlog {
		var rs []*verify.TrustedRoot
		if a.TrustedRootFile != "" {
			r, err := trustedRoot(c, []any{"attestors", i, "trustedRootFile"}, a.TrustedRootFile, roots)
			if err != nil {
				return at, append(errs, err)
			}
			rs = append(rs, r)
		}
		nrs, err := namedRoots(c, []any{"attestors", i, "trustRoots"}, a.TrustRoots, named)
		if err != nil {
			return at, append(errs, err...)
		}
		rs = append(rs, nrs...)
		for _, k := range at.keys {
			lv, err := verify.NewLogVerifier(k, rs...)
			if err != nil {
				return at, append(errs, c.Errorf([]any{"attestors", i}, "%v", err))
			}
			at.logged = append(at.logged, lv)
		}
	}
	if k := a.Keyless; k != nil {
		path := []any{"attestors", i, "keyless"}
		var rs []*verify.TrustedRoot
		add := func(field []any, name string) {
			r, err := trustedRoot(c, slices.Concat(path, field), name, roots)
			if err != nil {
				errs = append(errs, err)
				return
			}
			rs = append(rs, r)
		}
		if k.TrustedRootFile != "" {
			add([]any{"trustedRootFile"}, k.TrustedRootFile)
		}
		for j, f := range k.TrustedRootFiles {
			add([]any{"trustedRootFiles", j}, f)
		}
		nrs, nerrs := namedRoots(c, slices.Concat(path, []any{"trustRoots"}), k.TrustRoots, named)
		rs, errs = append(rs, nrs...), append(errs, nerrs...)
		id, idErrs := keylessIdentity(c, path, k)
		if errs = append(errs, idErrs...); len(errs) > 0 {
			return at, errs
		}
		var err error
		if at.keyless, err = verify.NewKeyless(rs, id, verify.SigningTime{RequireTlog: k.RequireTlog, RequireTimestamp: k.RequireTimestamp}); err != nil {
			return at, append(errs, c.Errorf(path, "%v", err))
		}
	}
	if n := a.Notation; n != nil {
		errs = append(errs, compileNotation(c, i, n, at)...)
	}
	return at, errs
}

// compileNotation reads the certificates and parses the identities of the
// Notary Project signer of attestor i into at.
func compileNotation(c *config.Config, i int, n *config.Notation, at *attestor) []error {
	path := []any{"attestors", i, "notation"}
	var errs []error
	certs := func(field string, files []string) []*x509.Certificate {
		var out []*x509.Certificate
		for j, f := range files {
			fp := slices.Concat(path, []any{field, j})
			data, err := os.ReadFile(c.Path(f))
			if err != nil {
				errs = append(errs, c.Errorf(fp, "%v", err))
				continue
			}
			cs, err := verify.ParseCertificates(data)
			if err != nil {
				errs = append(errs, c.Errorf(fp, "%s: %v", f, err))
				continue
			}
			out = append(out, cs...)
		}
		return out
	}
	p := verify.NotationPolicy{
		TrustStore: certs("trustStore", n.TrustStore), TSARoots: certs("tsaRoots", n.TSARoots),
		Level: n.Level, VerifyTimestamp: n.VerifyTimestamp, Revocation: n.CheckRevocation,
	}
	for j, s := range n.TrustedIdentities {
		fp := slices.Concat(path, []any{"trustedIdentities", j})
		id, err := verify.ParseNotationIdentity(s)
		if err != nil {
			errs = append(errs, c.Errorf(fp, "%v", err))
			continue
		}
		if missing := id.MissingNotationAttributes(); len(missing) > 0 {
			at.warnings = append(at.warnings, c.Errorf(fp, "%q names no %s: notation itself requires C, ST and O in a trusted identity; this one trusts every certificate of the trust store whose subject has the attributes it names", s, strings.Join(missing, ", ")).Error())
		}
		p.Identities = append(p.Identities, id)
	}
	if len(errs) > 0 {
		return errs
	}
	var err error
	if at.notation, err = verify.NewNotation(p); err != nil {
		return []error{c.Errorf(path, "%v", err)}
	}
	return nil
}

// namedRoots are the trust roots that names, at path, name.
func namedRoots(c *config.Config, path []any, names []string, named map[string]*verify.TrustedRoot) ([]*verify.TrustedRoot, []error) {
	var rs []*verify.TrustedRoot
	var errs []error
	for j, name := range names {
		r, ok := named[name]
		if !ok {
			errs = append(errs, c.Errorf(slices.Concat(path, []any{j}), "trust root %q is not loaded", name))
			continue
		}
		rs = append(rs, r)
	}
	return rs, errs
}

// trustedRoot reads and parses a trusted root file once per Compile.
func trustedRoot(c *config.Config, path []any, name string, roots map[string]*verify.TrustedRoot) (*verify.TrustedRoot, error) {
	file := c.Path(name)
	if r, ok := roots[file]; ok {
		return r, nil
	}
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, c.Errorf(path, "%v", err)
	}
	r, err := verify.ParseTrustedRoot(data)
	if err != nil {
		return nil, c.Errorf(path, "%s: %v", name, err)
	}
	r = r.WithOrigin(name, 0)
	roots[file] = r
	return r, nil
}

// errNotMine is a signature that this attestor did not make: by another
// key, or with a key where a certificate is wanted and the reverse.
var errNotMine = errors.New("not signed by this attestor")

// verify checks sig for the subject s as this attestor. It returns what
// verified, or why not: errNotMine, a *verify.DigestMismatchError (a
// genuine signature for another digest), a *verify.CheckError (a keyless,
// log or notation check that failed), an error wrapping
// verify.ErrRevocationUnavailable (it could not be decided), or another
// error (an unusable payload).
func (a *attestor) verify(ctx context.Context, sig signature, s Subject) (*audit.Verification, error) {
	if (a.notation != nil) != (sig.notation != nil) {
		return nil, errNotMine // a signature of the other ecosystem
	}
	if a.notation != nil {
		res, err := a.notation.Verify(ctx, sig.notation, verify.Target{MediaType: s.MediaType, Digest: s.Digest, Size: s.Size})
		if err != nil {
			return nil, err
		}
		return verification(a.name, "", sig.source, res), nil
	}
	return a.verifySigned(sig.signed, s.Digest, sig.source)
}

// verifySigned checks the cosign or Sigstore signature s for digest.
func (a *attestor) verifySigned(s *verify.Signed, digest, source string) (*audit.Verification, error) {
	if a.keyless != nil {
		if !s.HasCertificate() {
			return nil, errNotMine
		}
		res, err := a.keyless.Verify(s, digest)
		if err != nil {
			return nil, err
		}
		return verification(a.name, "", source, res), nil
	}
	var mismatch error
	for i, k := range a.keys {
		err := k.VerifySigned(s, digest)
		switch {
		case errors.Is(err, verify.ErrBadSignature):
			continue
		case errors.As(err, new(*verify.DigestMismatchError)):
			mismatch = err
			continue
		case err != nil:
			return nil, err
		case a.logged == nil:
			return &audit.Verification{Attestor: a.name, KeyID: k.ID, Source: source}, nil
		}
		res, err := a.logged[i].Verify(s, digest)
		if err != nil {
			return nil, err
		}
		return verification(a.name, k.ID, source, res), nil
	}
	if mismatch != nil {
		return nil, mismatch
	}
	return nil, errNotMine
}

func verification(name, keyID, source string, res *verify.Result) *audit.Verification {
	v := &audit.Verification{Attestor: name, KeyID: keyID, Source: source, Issuer: res.Issuer, Subject: res.Subject, TimeSource: res.TimeSource,
		X509Subject: res.X509Subject, Logged: res.Logged,
		TrustRoot: res.Root.Name, TrustRootVersion: res.Root.Version, TrustRootDigest: res.Root.Digest}
	if res.LogIndex >= 0 {
		v.LogIndex = &res.LogIndex
	}
	if !res.SignedAt.IsZero() {
		t := res.SignedAt.UTC()
		v.SignedAt = &t
	}
	return v
}

// describe says in a decision log who signed, as v records it.
func describe(v *audit.Verification) string {
	var parts []string
	if v.KeyID != "" {
		parts = append(parts, "key "+short(v.KeyID))
	}
	if v.Subject != "" {
		parts = append(parts, fmt.Sprintf("keyless: issuer %s, subject %s", v.Issuer, v.Subject))
	}
	if v.X509Subject != "" {
		parts = append(parts, fmt.Sprintf("Notary Project signature: x509.subject %q", v.X509Subject))
	}
	if v.LogIndex != nil {
		parts = append(parts, fmt.Sprintf("log index %d", *v.LogIndex))
	}
	switch {
	case v.SignedAt == nil || v.TimeSource == verify.TimeTlog:
	case v.TimeSource == verify.TimeCurrent:
		parts = append(parts, "certificate valid now (no proof of the signing time)")
	default:
		parts = append(parts, fmt.Sprintf("signed at %s by the %s", v.SignedAt.Format("2006-01-02T15:04:05Z"), v.TimeSource))
	}
	parts = append(parts, v.Logged...)
	return strings.Join(append(parts, v.Source), ", ")
}

// kind says what the attestor checks, for deny reasons.
func (a *attestor) kind() string {
	switch {
	case a.keyless != nil:
		return "its keyless identity"
	case a.notation != nil:
		return "its Notary Project trust store and identities"
	case a.logged != nil:
		return "its keys (with a transparency-log proof)"
	}
	return "its keys"
}
