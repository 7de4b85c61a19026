package virtual

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"io"
	"math/big"
	"net/http"
	"time"

	"github.com/digitorus/timestamp"
	"github.com/notaryproject/tspclient-go"
	"github.com/sigstore/sigstore-go/pkg/root"
)

// TSA is an RFC 3161 timestamp authority for tests: a root and a
// timestamping leaf certificate, answering timestamp requests over HTTP as
// `cosign sign --timestamp-server-url` sends them.
type TSA struct {
	root, leaf *x509.Certificate
	key        *ecdsa.PrivateKey
	start, end time.Time
}

var oidTimeStamping = asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 3, 8}

// NewTSA makes a timestamp authority valid from start to end.
func NewTSA(name string, start, end time.Time) (*TSA, error) {
	rootKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	rootTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name + " root", Organization: []string{name}},
		NotBefore: start, NotAfter: end, IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	rootCert, err := create(rootTmpl, rootTmpl, &rootKey.PublicKey, rootKey)
	if err != nil {
		return nil, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	eku, err := asn1.Marshal([]asn1.ObjectIdentifier{oidTimeStamping})
	if err != nil {
		return nil, err
	}
	leafTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: name, Organization: []string{name}},
		NotBefore: start, NotAfter: end, KeyUsage: x509.KeyUsageDigitalSignature,
		// RFC 3161 2.3: the only extended key usage, and critical.
		ExtraExtensions: []pkix.Extension{{Id: asn1.ObjectIdentifier{2, 5, 29, 37}, Critical: true, Value: eku}},
	}
	leaf, err := create(leafTmpl, rootCert, &key.PublicKey, rootKey)
	if err != nil {
		return nil, err
	}
	return &TSA{root: rootCert, leaf: leaf, key: key, start: start, end: end}, nil
}

// Authority is t as a trusted root lists it.
func (t *TSA) Authority() root.TimestampingAuthority {
	return &root.SigstoreTimestampingAuthority{
		Root: t.root, Leaf: t.leaf, ValidityPeriodStart: t.start, ValidityPeriodEnd: t.end,
	}
}

// Respond answers the DER timestamp request req, stamping the current
// time; the response always carries t's certificate.
func (t *TSA) Respond(req []byte) ([]byte, error) { return t.RespondAt(req, time.Now()) }

// RespondAt is Respond stamping the time at: a timestamp made then.
func (t *TSA) RespondAt(req []byte, at time.Time) ([]byte, error) {
	r, err := timestamp.ParseRequest(req)
	if err != nil {
		return nil, err
	}
	ts := timestamp.Timestamp{
		HashAlgorithm: r.HashAlgorithm, HashedMessage: r.HashedMessage, Nonce: r.Nonce,
		Time: at, Policy: asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 57264, 2},
		AddTSACertificate: true, ExtraExtensions: r.Extensions,
	}
	return ts.CreateResponseWithOpts(t.leaf, t.key, crypto.SHA256)
}

// TimestampResponse stamps sig, as a client asking for a SHA-256
// timestamp of it would have t do.
func (t *TSA) TimestampResponse(sig []byte) ([]byte, error) {
	return t.At(time.Now()).TimestampResponse(sig)
}

// At is t stamping the time at (BundleOptions.TSA): a timestamp made then.
func (t *TSA) At(at time.Time) Timestamper { return tsaAt{t, at} }

type tsaAt struct {
	t  *TSA
	at time.Time
}

func (s tsaAt) TimestampResponse(sig []byte) ([]byte, error) {
	req, err := timestamp.CreateRequest(bytes.NewReader(sig), &timestamp.RequestOptions{Hash: crypto.SHA256})
	if err != nil {
		return nil, err
	}
	return s.t.RespondAt(req, s.at)
}

// Root is t's root certificate, what a verifier trusts.
func (t *TSA) Root() *x509.Certificate { return t.root }

// Timestamper is t as notation's signing asks a timestamp authority (a
// tspclient.Timestamper), stamping the time at (zero: the current time).
func (t *TSA) Timestamper(at time.Time) tspclient.Timestamper { return tspStamper{t, at} }

type tspStamper struct {
	t  *TSA
	at time.Time
}

func (s tspStamper) Timestamp(_ context.Context, req *tspclient.Request) (*tspclient.Response, error) {
	der, err := req.MarshalBinary()
	if err != nil {
		return nil, err
	}
	at := s.at
	if at.IsZero() {
		at = time.Now()
	}
	raw, err := s.t.RespondAt(der, at)
	if err != nil {
		return nil, err
	}
	resp := &tspclient.Response{}
	if err := resp.UnmarshalBinary(raw); err != nil {
		return nil, err
	}
	return resp, resp.Validate(req)
}

// ServeHTTP answers a POST of an RFC 3161 request (application/timestamp-query)
// with the response (application/timestamp-reply).
func (t *TSA) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		http.Error(w, "POST a timestamp request", http.StatusMethodNotAllowed)
		return
	}
	req, err := io.ReadAll(io.LimitReader(r.Body, 1<<16))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	resp, err := t.Respond(req)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	w.Header().Set("Content-Type", "application/timestamp-reply")
	_, _ = w.Write(resp)
}
