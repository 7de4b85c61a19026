package verify

import (
	"crypto/x509"
	"encoding/asn1"
	"fmt"
	"regexp"
	"strconv"
	"strings"

	"github.com/sigstore/sigstore-go/pkg/fulcio/certificate"
)

// An Extension is a Fulcio certificate extension, by the name Fulcio's
// documentation (docs/oid-info.md) gives it.
type Extension struct {
	Name string
	OID  asn1.ObjectIdentifier
	// Raw: the deprecated extensions (.1.1 to .1.6) hold the value's bytes
	// as they are; the others a DER UTF8String.
	Raw bool
}

func fulcioOID(n int) asn1.ObjectIdentifier {
	return asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 57264, 1, n}
}

// Extensions are the Fulcio extensions that policies may match, in OID
// order: 1.3.6.1.4.1.57264.1.2 to .1.6 (deprecated, still in older and
// current GitHub certificates), and .1.9 to .1.23. The issuer (.1.1 and
// .1.8) is the attestor's issuer field.
var Extensions = []Extension{
	{"githubWorkflowTrigger", fulcioOID(2), true},
	{"githubWorkflowSHA", fulcioOID(3), true},
	{"githubWorkflowName", fulcioOID(4), true},
	{"githubWorkflowRepository", fulcioOID(5), true},
	{"githubWorkflowRef", fulcioOID(6), true},
	{"buildSignerURI", fulcioOID(9), false},
	{"buildSignerDigest", fulcioOID(10), false},
	{"runnerEnvironment", fulcioOID(11), false},
	{"sourceRepositoryURI", fulcioOID(12), false},
	{"sourceRepositoryDigest", fulcioOID(13), false},
	{"sourceRepositoryRef", fulcioOID(14), false},
	{"sourceRepositoryIdentifier", fulcioOID(15), false},
	{"sourceRepositoryOwnerURI", fulcioOID(16), false},
	{"sourceRepositoryOwnerIdentifier", fulcioOID(17), false},
	{"buildConfigURI", fulcioOID(18), false},
	{"buildConfigDigest", fulcioOID(19), false},
	{"buildTrigger", fulcioOID(20), false},
	{"runInvocationURI", fulcioOID(21), false},
	{"sourceRepositoryVisibilityAtSigning", fulcioOID(22), false},
	{"deploymentEnvironment", fulcioOID(23), false},
}

// The certificate fields besides the extensions.
const (
	FieldIssuer  = "issuer"
	FieldSubject = "subject"
)

// IsCertificateField reports whether name is a field that
// CertificateFields gives: issuer, subject or an extension's name.
func IsCertificateField(name string) bool {
	if name == FieldIssuer || name == FieldSubject {
		return true
	}
	for _, e := range Extensions {
		if e.Name == name {
			return true
		}
	}
	return false
}

// CertificateFields reads a Fulcio certificate's issuer (the OIDC issuer
// extension), subject (its subject alternative name) and each extension of
// Extensions that it carries, by name. An extension that cannot be decoded
// is an error: a certificate that says something unreadable says nothing.
func CertificateFields(c *x509.Certificate) (map[string]string, error) {
	sum, err := certificate.SummarizeCertificate(c)
	if err != nil {
		return nil, err
	}
	out := map[string]string{FieldIssuer: sum.Issuer, FieldSubject: sum.SubjectAlternativeName}
	for _, ext := range c.Extensions {
		for _, e := range Extensions {
			if !ext.Id.Equal(e.OID) {
				continue
			}
			if e.Raw {
				out[e.Name] = string(ext.Value)
				break
			}
			var v string
			if err := certificate.ParseDERString(ext.Value, &v); err != nil {
				return nil, fmt.Errorf("certificate extension %s (%s): %v", e.Name, e.OID, err)
			}
			out[e.Name] = v
		}
	}
	return out, nil
}

// FieldMatch is one condition on a certificate field.
type FieldMatch struct {
	// Field is issuer, subject or an extension name (IsCertificateField).
	Field string
	// From names the configuration that asks for it, for reasons: e.g.
	// "github.ref"; empty when it is the field itself.
	From string
	// Want says what is wanted, for reasons.
	Want  string
	match func(string) bool
	re    *regexp.Regexp // when made by Matching
}

// Exact is the field equal to value.
func Exact(field, from, value string) FieldMatch {
	return FieldMatch{Field: field, From: from, Want: strconv.Quote(value), match: func(s string) bool { return s == value }}
}

// ExactFold is the field equal to value in any letter case (GitHub's
// owner and repository names are case-insensitive).
func ExactFold(field, from, value string) FieldMatch {
	return FieldMatch{Field: field, From: from, Want: strconv.Quote(value) + " in any case", match: func(s string) bool { return strings.EqualFold(s, value) }}
}

// Matching is the field matching re; want says what re means when that is
// clearer than re itself ("" shows re).
func Matching(field, from string, re *regexp.Regexp, want string) FieldMatch {
	if want == "" {
		want = "matching " + re.String()
	}
	return FieldMatch{Field: field, From: from, Want: want, match: re.MatchString, re: re}
}

// check returns "" when fields satisfy m, else what differs. A field the
// certificate does not carry satisfies nothing.
func (m FieldMatch) check(fields map[string]string) string {
	got, ok := fields[m.Field]
	if ok && m.match(got) {
		return ""
	}
	found := strconv.Quote(got)
	if !ok {
		found = "absent"
	}
	s := fmt.Sprintf("%s is %s, want %s", m.Field, found, m.Want)
	if m.From != "" {
		s += " (" + m.From + ")"
	}
	return s
}

// mismatches lists, in the order of ms, what in fields does not satisfy
// them.
func mismatches(ms []FieldMatch, fields map[string]string) []string {
	var out []string
	for _, m := range ms {
		if d := m.check(fields); d != "" {
			out = append(out, d)
		}
	}
	return out
}
