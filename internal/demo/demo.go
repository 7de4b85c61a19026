// Package demo is the self-contained tour behind `authz-proxy demo`: an
// in-process upstream registry holding signed (cosign and notation),
// unsigned, forged, attested and multi-arch sample images, a configuration
// for it (with a content store), and a client that pulls each image through
// the proxy and tabulates what happened, then pulls again from the store
// and while the upstream is stopped. It needs no network beyond loopback.
package demo

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/sigstore/sigstore/pkg/cryptoutils"
	"github.com/sigstore/sigstore/pkg/signature"

	"github.com/authz-proxy/authz-proxy/internal/oci"
	"github.com/authz-proxy/authz-proxy/internal/sign"
)

// Lab is a running upstream registry with the sample images, and a
// configuration that points a proxy at it.
type Lab struct {
	// Dir holds the configuration and the attestor's public key.
	Dir string
	// ConfigPath is the proxy configuration for this lab.
	ConfigPath string
	// Upstream is the registry's host:port.
	Upstream string
	samples  []sample
	srv      *http.Server
	handler  http.Handler
	// never is a signed image that the tour never pulls; signed is the
	// digest of demo/app:signed.
	never, signed string
}

// sample is one image of the tour.
type sample struct {
	ref  string // repository:tag, under the upstream "lab"
	what string
}

const config = `# Written by authz-proxy demo.
listen:
  addr: 127.0.0.1:0
upstreams:
  - name: lab
    url: http://%s
    insecure: true
defaultUpstream: lab
store:                  # verified content: blobs, manifests, the evidence they were judged on, tags
  driver: filesystem
  rootdirectory: store  # beside this file
  maxSize: 1GiB
attestors:
  - name: ci
    publicKeys:
      - file: ci.pub
  - name: release
    notation:
      trustStore: [release-ca.crt]
      trustedIdentities: ["x509.subject: C=US, ST=WA, O=Acme, CN=release"]
policy:
  allowlist:
    - lab/tools/**
  rules:
    - name: vetted
      images: ["lab/vetted/**"]
      require:
        - signature:
            attestors: [ci]
        - attestation:
            predicateType: https://slsa.dev/provenance/v1
            attestors: [ci]
            condition: 'predicate.runDetails.builder.id == "https://ci.example/builder@v1"'
    - name: notary
      images: ["lab/notary/**"]
      require:
        - signature:
            attestors: [release]
    - name: demo-images
      images: ["lab/demo/**"]
      require:
        - signature:
            attestors: [ci]
  default:
    action: deny
`

// Start runs the upstream registry on a free loopback port, pushes and signs
// the sample images, and writes the configuration.
func Start(ctx context.Context) (*Lab, error) {
	dir, err := os.MkdirTemp("", "authz-proxy-demo-")
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	l := &Lab{
		Dir:      dir,
		Upstream: ln.Addr().String(),
		handler:  registry.New(registry.WithReferrersSupport(true), registry.Logger(log.New(io.Discard, "", 0))),
	}
	l.serve(ln)
	if err := l.populate(ctx); err != nil {
		l.Close()
		return nil, err
	}
	l.ConfigPath = filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(l.ConfigPath, fmt.Appendf(nil, config, l.Upstream), 0o600); err != nil {
		l.Close()
		return nil, err
	}
	return l, nil
}

func (l *Lab) serve(ln net.Listener) {
	l.srv = &http.Server{Handler: l.handler, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = l.srv.Serve(ln) }()
}

// StopUpstream stops the registry: connections to it are refused.
func (l *Lab) StopUpstream() { _ = l.srv.Close() }

// StartUpstream serves the registry again, on the same address, with the
// same images.
func (l *Lab) StartUpstream() error {
	ln, err := net.Listen("tcp", l.Upstream)
	if err != nil {
		return err
	}
	l.serve(ln)
	return nil
}

// Close stops the registry and removes the lab's files.
func (l *Lab) Close() {
	_ = l.srv.Close()
	_ = os.RemoveAll(l.Dir)
}

func (l *Lab) ref(s string) (name.Reference, error) {
	return name.ParseReference(l.Upstream+"/"+s, name.Insecure)
}

// push writes a random image at ref and records it as a sample.
func (l *Lab) push(ctx context.Context, ref, what string) (name.Reference, v1.Hash, error) {
	img, err := random.Image(1024, 2)
	if err != nil {
		return nil, v1.Hash{}, err
	}
	r, err := l.ref(ref)
	if err != nil {
		return nil, v1.Hash{}, err
	}
	if err := remote.Write(r, img, remote.WithContext(ctx)); err != nil {
		return nil, v1.Hash{}, err
	}
	l.samples = append(l.samples, sample{ref: ref, what: what})
	d, err := img.Digest()
	return r, d, err
}

// signTag signs digest (in r's repository) with s and stores the signature
// in the .sig tag.
func signTag(ctx context.Context, r name.Reference, digest v1.Hash, s signature.Signer) error {
	sig, err := sign.New(s, r.Context(), digest.String())
	if err != nil {
		return err
	}
	return sign.AttachTag(ctx, r.Context(), digest.String(), []sign.Signature{sig})
}

func (l *Lab) populate(ctx context.Context) error {
	ci, err := newKey(filepath.Join(l.Dir, "ci.pub"))
	if err != nil {
		return err
	}
	rogue, err := newKey("")
	if err != nil {
		return err
	}
	r, signed, err := l.push(ctx, "demo/app:signed", "signed by the ci key (.sig tag)")
	if err == nil {
		l.signed = signed.String()
		err = signTag(ctx, r, signed, ci)
	}
	if err == nil {
		_, _, err = l.push(ctx, "demo/app:unsigned", "not signed")
	}
	if err == nil {
		var d v1.Hash
		if r, d, err = l.push(ctx, "demo/app:forged", "signed by a key of no attestor"); err == nil {
			err = signTag(ctx, r, d, rogue)
		}
	}
	if err == nil {
		err = l.pushCopied(ctx, ci, signed)
	}
	if err == nil {
		err = l.pushReferrer(ctx, ci)
	}
	if err == nil {
		err = l.pushIndex(ctx, "demo/multiarch:v1", ci)
	}
	if err == nil {
		err = l.pushNotation(ctx)
	}
	if err == nil {
		err = l.pushVetted(ctx, ci, "vetted/app:ci-built", "signed; SLSA provenance: built by the CI builder", "https://ci.example/builder@v1")
	}
	if err == nil {
		err = l.pushVetted(ctx, ci, "vetted/app:laptop-built", "signed; SLSA provenance: built on a laptop", "https://laptop.example/alice")
	}
	if err == nil {
		_, _, err = l.push(ctx, "tools/debug:latest", "not signed, but allowlisted")
	}
	if err == nil {
		var d v1.Hash
		if r, d, err = l.push(ctx, "demo/app:never", ""); err == nil {
			l.samples = l.samples[:len(l.samples)-1] // not in the tour
			l.never = "demo/app:never"
			err = signTag(ctx, r, d, ci)
		}
	}
	return err
}

// pushVetted pushes a signed image with a SLSA provenance v1 attestation,
// signed by ci, saying which builder built it.
func (l *Lab) pushVetted(ctx context.Context, ci signature.Signer, ref, what, builder string) error {
	r, d, err := l.push(ctx, ref, what)
	if err != nil {
		return err
	}
	if err := signTag(ctx, r, d, ci); err != nil {
		return err
	}
	const slsa = "https://slsa.dev/provenance/v1"
	statement, err := sign.Statement(oci.StatementV1, r.Context().Name(), d.String(), slsa, map[string]any{
		"buildDefinition": map[string]any{"buildType": "https://ci.example/build/v1"},
		"runDetails":      map[string]any{"builder": map[string]any{"id": builder}},
	})
	if err != nil {
		return err
	}
	att, err := sign.Attest(ci, slsa, statement)
	if err != nil {
		return err
	}
	return sign.AttachAttestationTag(ctx, r.Context(), d.String(), []sign.Attestation{att})
}

// pushNotation makes a release CA (its root written as release-ca.crt)
// and pushes an image signed with notation by its release certificate,
// and one signed by a certificate of the same name from another CA.
func (l *Lab) pushNotation(ctx context.Context) error {
	key, chain, err := notationSigner(filepath.Join(l.Dir, "release-ca.crt"))
	if err != nil {
		return err
	}
	alienKey, alienChain, err := notationSigner("")
	if err != nil {
		return err
	}
	for _, s := range []struct {
		ref, what string
		key       *ecdsa.PrivateKey
		chain     []*x509.Certificate
	}{
		{"notary/app:signed", "signed with notation by the release certificate (Notary Project)", key, chain},
		{"notary/app:forged", "signed with notation, by another CA's \"release\"", alienKey, alienChain},
	} {
		r, _, err := l.push(ctx, s.ref, s.what)
		if err != nil {
			return err
		}
		desc, err := sign.Describe(ctx, r)
		if err != nil {
			return err
		}
		env, err := sign.Notation(s.key, s.chain, desc, sign.NotationOptions{})
		if err != nil {
			return err
		}
		if _, err := sign.AttachNotation(ctx, r.Context(), desc, env, sign.NotationJWS, s.chain, false); err != nil {
			return err
		}
	}
	return nil
}

// notationSigner makes a root CA and a code-signing certificate it issues
// to C=US, ST=WA, O=Acme, CN=release, and writes the root's PEM to
// rootPath when given.
func notationSigner(rootPath string) (*ecdsa.PrivateKey, []*x509.Certificate, error) {
	now := time.Now()
	rootKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	rootTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{Organization: []string{"Acme"}, CommonName: "Acme release CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	root, err := certificate(rootTmpl, rootTmpl, &rootKey.PublicKey, rootKey)
	if err != nil {
		return nil, nil, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	leaf, err := certificate(&x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject:      pkix.Name{Country: []string{"US"}, Province: []string{"WA"}, Organization: []string{"Acme"}, CommonName: "release"},
		NotBefore:    now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageCodeSigning},
	}, root, &key.PublicKey, rootKey)
	if err != nil {
		return nil, nil, err
	}
	if rootPath != "" {
		pem, err := cryptoutils.MarshalCertificateToPEM(root)
		if err != nil {
			return nil, nil, err
		}
		if err := os.WriteFile(rootPath, pem, 0o644); err != nil {
			return nil, nil, err
		}
	}
	return key, []*x509.Certificate{leaf, root}, nil
}

func certificate(tmpl, parent *x509.Certificate, pub *ecdsa.PublicKey, priv *ecdsa.PrivateKey) (*x509.Certificate, error) {
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, priv)
	if err != nil {
		return nil, err
	}
	return x509.ParseCertificate(der)
}

// pushCopied pushes an image whose .sig tag holds a genuine ci signature of
// another image: a replayed signature.
func (l *Lab) pushCopied(ctx context.Context, ci signature.Signer, signed v1.Hash) error {
	r, d, err := l.push(ctx, "demo/app:copied", "carries the ci signature of demo/app:signed")
	if err != nil {
		return err
	}
	stolen, err := sign.New(ci, r.Context(), signed.String())
	if err != nil {
		return err
	}
	return sign.AttachTag(ctx, r.Context(), d.String(), []sign.Signature{stolen})
}

// pushReferrer pushes an image signed in OCI 1.1 referrers mode.
func (l *Lab) pushReferrer(ctx context.Context, ci signature.Signer) error {
	r, d, err := l.push(ctx, "demo/referrer:signed", "signed by the ci key (OCI 1.1 referrer)")
	if err != nil {
		return err
	}
	desc, err := sign.Describe(ctx, r)
	if err != nil {
		return err
	}
	sig, err := sign.New(ci, r.Context(), d.String())
	if err != nil {
		return err
	}
	_, err = sign.AttachReferrer(ctx, r.Context(), desc, sig, false)
	return err
}

// pushIndex pushes a two-platform index and signs the index only, as
// `cosign sign` without --recursive does.
func (l *Lab) pushIndex(ctx context.Context, ref string, s signature.Signer) error {
	idx, err := random.Index(512, 1, 2)
	if err != nil {
		return err
	}
	r, err := l.ref(ref)
	if err != nil {
		return err
	}
	if err := remote.WriteIndex(r, idx, remote.WithContext(ctx)); err != nil {
		return err
	}
	d, err := idx.Digest()
	if err != nil {
		return err
	}
	l.samples = append(l.samples, sample{ref: ref, what: "multi-arch index signed by ci; its images are not"})
	return signTag(ctx, r, d, s)
}

// Tour pulls every sample through the proxy at proxyAddr with
// go-containerregistry, as a runtime would (manifest, then config and layer
// blobs; for an index, each platform image too), and prints a table.
func (l *Lab) Tour(ctx context.Context, proxyAddr string, out io.Writer) {
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "IMAGE (through the proxy)\tWHAT IT IS\tRESULT")
	for _, s := range l.samples {
		ref := proxyAddr + "/lab/" + s.ref
		fmt.Fprintf(tw, "%s\t%s\t%s\n", ref, s.what, pull(ctx, ref))
	}
	tw.Flush()
}

// pull fetches ref completely and says how it went.
func pull(ctx context.Context, ref string) string {
	r, err := name.ParseReference(ref, name.Insecure)
	if err != nil {
		return err.Error()
	}
	opts := []remote.Option{remote.WithContext(ctx)}
	desc, err := remote.Get(r, opts...)
	if err != nil {
		return outcome(err)
	}
	if !desc.MediaType.IsIndex() {
		if err := pullImage(r, opts); err != nil {
			return outcome(err)
		}
		return "pulled"
	}
	idx, err := desc.ImageIndex()
	if err != nil {
		return outcome(err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		return outcome(err)
	}
	for _, child := range im.Manifests {
		if err := pullImage(r.Context().Digest(child.Digest.String()), opts); err != nil {
			return fmt.Sprintf("index pulled, but platform image %s: %s", child.Digest.String()[:19], outcome(err))
		}
	}
	return fmt.Sprintf("pulled: the index and its %d platform images", len(im.Manifests))
}

func pullImage(r name.Reference, opts []remote.Option) error {
	img, err := remote.Image(r, opts...)
	if err != nil {
		return err
	}
	if _, err := img.RawConfigFile(); err != nil {
		return err
	}
	layers, err := img.Layers()
	if err != nil {
		return err
	}
	for _, layer := range layers {
		rc, err := layer.Compressed()
		if err != nil {
			return err
		}
		_, err = io.Copy(io.Discard, rc)
		rc.Close()
		if err != nil {
			return err
		}
	}
	return nil
}

// outcome renders a pull error the way a person reads it: the registry's
// status, error code and message.
func outcome(err error) string {
	var te *transport.Error
	if errors.As(err, &te) && len(te.Errors) > 0 {
		msg := te.Errors[0].Message
		if _, after, ok := strings.Cut(msg, ": "); ok && te.Errors[0].Code == transport.DeniedErrorCode {
			msg = after // the table already names the image
		}
		return fmt.Sprintf("%d %s: %s", te.StatusCode, te.Errors[0].Code, msg)
	}
	return err.Error()
}

// newKey makes an ECDSA P-256 key, as cosign generate-key-pair does, and
// writes its public half to pubPath when given.
func newKey(pubPath string) (signature.Signer, error) {
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	if pubPath != "" {
		pem, err := cryptoutils.MarshalPublicKeyToPEM(priv.Public())
		if err != nil {
			return nil, err
		}
		if err := os.WriteFile(pubPath, pem, 0o644); err != nil {
			return nil, err
		}
	}
	return sign.NewSigner(priv)
}
