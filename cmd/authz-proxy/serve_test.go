package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/authz-proxy/authz-proxy/internal/demo"
)

// pki is a throwaway CA with a server and a client certificate.
type pki struct {
	pool               *x509.CertPool
	serverCert, server string // file paths
	clientCA           string
	client             tls.Certificate
	untrustedClient    tls.Certificate
	ca                 *x509.Certificate
	caKey              *ecdsa.PrivateKey
}

// issue makes a client certificate signed by the CA, with the common name
// and DNS subject alternative names given.
func (p pki) issue(t *testing.T, cn string, dnsNames ...string) tls.Certificate {
	t.Helper()
	now := time.Now()
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	_, _, certPEM, keyPEM := newCert(t, &x509.Certificate{SerialNumber: serial, Subject: pkix.Name{CommonName: cn}, DNSNames: dnsNames,
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour), ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}, p.ca, p.caKey)
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

func newCert(t *testing.T, tmpl *x509.Certificate, parent *x509.Certificate, parentKey *ecdsa.PrivateKey) (*x509.Certificate, *ecdsa.PrivateKey, []byte, []byte) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if parent == nil {
		parent, parentKey = tmpl, key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, key.Public(), parentKey)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	keyDER, _ := x509.MarshalECPrivateKey(key)
	return cert, key, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER})
}

func newPKI(t *testing.T, dir string) pki {
	t.Helper()
	now := time.Now()
	ca, caKey, caPEM, _ := newCert(t, &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign}, nil, nil)
	_, _, srvPEM, srvKey := newCert(t, &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "authz-proxy"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour), IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}, ca, caKey)
	_, _, cliPEM, cliKey := newCert(t, &x509.Certificate{SerialNumber: big.NewInt(3), Subject: pkix.Name{CommonName: "node-1.prod"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour), ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}, ca, caKey)
	_, _, rogPEM, rogKey := newCert(t, &x509.Certificate{SerialNumber: big.NewInt(4), Subject: pkix.Name{CommonName: "intruder"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour), ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}, nil, nil)
	p := pki{ca: ca, caKey: caKey, pool: x509.NewCertPool(), serverCert: filepath.Join(dir, "server.crt"), server: filepath.Join(dir, "server.key"), clientCA: filepath.Join(dir, "ca.crt")}
	p.pool.AddCert(ca)
	for path, b := range map[string][]byte{p.serverCert: srvPEM, p.server: srvKey, p.clientCA: caPEM} {
		if err := os.WriteFile(path, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	var err error
	if p.client, err = tls.X509KeyPair(cliPEM, cliKey); err != nil {
		t.Fatal(err)
	}
	if p.untrustedClient, err = tls.X509KeyPair(rogPEM, rogKey); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestServeOverMutualTLSRecordsTheClientIdentity(t *testing.T) {
	lab, err := demo.Start(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer lab.Close()
	dir := t.TempDir()
	p := newPKI(t, dir)
	in := startServe(t, dir, fmt.Sprintf(`listen:
  addr: 127.0.0.1:0
  tls: {certFile: %s, keyFile: %s, clientCAFile: %s}
upstreams: [{name: lab, url: "http://%s", insecure: true}]
attestors: [{name: ci, publicKeys: [{file: %s}]}]
policy:
  rules: [{name: demo, images: ["lab/demo/**"], require: [{signature: {attestors: [ci]}}]}]
`, p.serverCert, p.server, p.clientCA, lab.Upstream, filepath.Join(lab.Dir, "ci.pub")), 0)

	get := func(cert *tls.Certificate) (*http.Response, error) {
		tc := &tls.Config{RootCAs: p.pool}
		if cert != nil {
			tc.Certificates = []tls.Certificate{*cert}
		}
		c := &http.Client{Transport: &http.Transport{TLSClientConfig: tc, ForceAttemptHTTP2: true}, Timeout: 10 * time.Second}
		return c.Get("https://" + in.addr + "/v2/lab/demo/app/manifests/signed")
	}
	resp, err := get(&p.client)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("with a trusted client certificate: %d", resp.StatusCode)
	}
	if resp.ProtoMajor != 2 {
		t.Errorf("served over HTTP/%d, want HTTP/2 over TLS", resp.ProtoMajor)
	}
	for _, cert := range []*tls.Certificate{nil, &p.untrustedClient} {
		if resp, err := get(cert); err == nil {
			resp.Body.Close()
			t.Errorf("a client without a trusted certificate got %d", resp.StatusCode)
		}
	}
	if err := in.stop(); err != nil {
		t.Fatalf("serve returned %v after a graceful stop", err)
	}
	if log := in.decisions.String(); !strings.Contains(log, `"identity":"node-1.prod"`) {
		t.Errorf("the decision does not name the client certificate:\n%s", log)
	}
}
