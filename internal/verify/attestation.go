package verify

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/authz-proxy/authz-proxy/internal/oci"
	"github.com/secure-systems-lab/go-securesystemslib/dsse"
)

// MaxEnvelopeSignatures bounds the signatures of one DSSE envelope that are
// tried against a key; cosign writes one.
const MaxEnvelopeSignatures = 8

// ErrMalformedAttestation: the bytes are not a DSSE envelope (or a Sigstore
// bundle holding one) of an in-toto statement.
var ErrMalformedAttestation = errors.New("malformed attestation")

// Envelope is a parsed DSSE envelope of an in-toto statement. Its statement
// is read before any signature is checked: nothing in it counts until
// Check has verified the envelope under a key.
type Envelope struct {
	// Statement is the envelope's payload, parsed but not yet verified.
	Statement  *Statement
	payload    []byte
	signatures [][]byte
}

// Statement is an in-toto Statement, v0.1 or v1.
type Statement struct {
	Type          string    `json:"_type"`
	PredicateType string    `json:"predicateType"`
	Subject       []Subject `json:"subject"`
	// Predicate is the predicate's JSON, null when the statement has none.
	Predicate json.RawMessage `json:"predicate"`
}

// Subject is one artifact a statement is about.
type Subject struct {
	Name string `json:"name"`
	// Digest maps an algorithm name (sha256) to the lower-case hex digest.
	Digest map[string]string `json:"digest"`
}

// Covers reports whether one of the statement's subjects carries digest
// ("sha256:<hex>").
func (s *Statement) Covers(digest string) bool {
	alg, hex, ok := strings.Cut(digest, ":")
	if !ok {
		return false
	}
	for _, sub := range s.Subject {
		if v, ok := sub.Digest[alg]; ok && strings.EqualFold(v, hex) {
			return true
		}
	}
	return false
}

// Digests lists the subjects' digests as "alg:hex", for messages.
func (s *Statement) Digests() []string {
	var out []string
	for _, sub := range s.Subject {
		for alg, hex := range sub.Digest {
			out = append(out, alg+":"+hex)
		}
	}
	slices.Sort(out)
	return out
}

// ParseEnvelope parses an attestation layer of the given media type: a DSSE
// envelope (oci.DSSE) or a Sigstore bundle whose content is a DSSE
// envelope. The envelope's payload must be an in-toto statement. Errors
// wrap ErrMalformedAttestation.
func ParseEnvelope(mediaType string, raw []byte) (*Envelope, error) {
	var env dsse.Envelope
	if strings.HasPrefix(mediaType, oci.BundlePrefix) {
		var b struct {
			DSSEEnvelope *dsse.Envelope `json:"dsseEnvelope"`
		}
		if err := json.Unmarshal(raw, &b); err != nil {
			return nil, fmt.Errorf("%w: Sigstore bundle is not JSON: %v", ErrMalformedAttestation, err)
		}
		if b.DSSEEnvelope == nil {
			return nil, fmt.Errorf("%w: Sigstore bundle holds no DSSE envelope (a message signature is not an attestation)", ErrMalformedAttestation)
		}
		env = *b.DSSEEnvelope
	} else if err := json.Unmarshal(raw, &env); err != nil {
		return nil, fmt.Errorf("%w: DSSE envelope is not JSON: %v", ErrMalformedAttestation, err)
	}
	if env.PayloadType != oci.InToto {
		return nil, fmt.Errorf("%w: payload type %q, want %q", ErrMalformedAttestation, env.PayloadType, oci.InToto)
	}
	payload, err := env.DecodeB64Payload()
	if err != nil {
		return nil, fmt.Errorf("%w: payload: %v", ErrMalformedAttestation, err)
	}
	switch n := len(env.Signatures); {
	case n == 0:
		return nil, fmt.Errorf("%w: envelope has no signature", ErrMalformedAttestation)
	case n > MaxEnvelopeSignatures:
		return nil, fmt.Errorf("%w: envelope has %d signatures, over the limit of %d", ErrMalformedAttestation, n, MaxEnvelopeSignatures)
	}
	e := &Envelope{payload: payload}
	for _, s := range env.Signatures {
		sig, err := base64.StdEncoding.DecodeString(s.Sig)
		if err != nil {
			sig, err = base64.URLEncoding.DecodeString(s.Sig)
		}
		if err != nil || len(sig) == 0 {
			return nil, fmt.Errorf("%w: a signature is not base64", ErrMalformedAttestation)
		}
		e.signatures = append(e.signatures, sig)
	}
	if e.Statement, err = ParseStatement(payload); err != nil {
		return nil, err
	}
	return e, nil
}

// ParseStatement decodes an in-toto Statement v0.1 or v1. It needs a
// predicate type and at least one subject with a digest.
func ParseStatement(payload []byte) (*Statement, error) {
	var s Statement
	dec := json.NewDecoder(bytes.NewReader(payload))
	if err := dec.Decode(&s); err != nil {
		return nil, fmt.Errorf("%w: statement is not JSON: %v", ErrMalformedAttestation, err)
	}
	if dec.More() {
		return nil, fmt.Errorf("%w: data after the statement", ErrMalformedAttestation)
	}
	switch {
	case s.Type != oci.StatementV01 && s.Type != oci.StatementV1:
		return nil, fmt.Errorf("%w: statement _type %q, want %s or %s", ErrMalformedAttestation, s.Type, oci.StatementV1, oci.StatementV01)
	case s.PredicateType == "":
		return nil, fmt.Errorf("%w: statement has no predicateType", ErrMalformedAttestation)
	case len(s.Subject) == 0:
		return nil, fmt.Errorf("%w: statement has no subject", ErrMalformedAttestation)
	}
	for i, sub := range s.Subject {
		if len(sub.Digest) == 0 {
			return nil, fmt.Errorf("%w: statement subject %d has no digest", ErrMalformedAttestation, i)
		}
	}
	if len(s.Predicate) == 0 {
		s.Predicate = json.RawMessage("null")
	}
	return &s, nil
}

// VerifiedBy reports whether one of the envelope's signatures verifies
// under key over the DSSE pre-authentication encoding (PAE) of its payload
// type and payload; otherwise it returns ErrBadSignature.
func (e *Envelope) VerifiedBy(key *PublicKey) error {
	pae := dsse.PAE(oci.InToto, e.payload)
	for _, sig := range e.signatures {
		if key.Verify(sig, pae) == nil {
			return nil
		}
	}
	return ErrBadSignature
}

// Check verifies the envelope under key and then that its statement is
// about digest. The signature is checked first, so a *DigestMismatchError
// means a genuine attestation of key that was made for another artifact.
func (e *Envelope) Check(key *PublicKey, digest string) error {
	if err := e.VerifiedBy(key); err != nil {
		return err
	}
	if !e.Statement.Covers(digest) {
		return &DigestMismatchError{Signed: strings.Join(e.Statement.Digests(), ", ")}
	}
	return nil
}
