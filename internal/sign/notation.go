package sign

import (
	"context"
	"crypto"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"time"

	"github.com/authz-proxy/authz-proxy/internal/oci"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/notaryproject/notation-core-go/signature"
	"github.com/notaryproject/notation-core-go/signature/cose"
	"github.com/notaryproject/notation-core-go/signature/jws"
	"github.com/notaryproject/tspclient-go"
)

// Media types and annotations of Notary Project (notation) signatures.
const (
	// NotationJWS and NotationCOSE are the envelope formats, the media
	// type of the manifest's one layer.
	NotationJWS  = jws.MediaTypeEnvelope
	NotationCOSE = cose.MediaTypeEnvelope
	// NotationPayloadType is the content type of the signed payload, a
	// JSON object naming the target artifact's descriptor.
	NotationPayloadType = "application/vnd.cncf.notary.payload.v1+json"
	// NotationThumbprintAnnotation lists the SHA-256 thumbprints of the
	// signing certificate chain, leaf first, on the signature manifest.
	NotationThumbprintAnnotation = "io.cncf.notary.x509chain.thumbprint#S256"
)

// NotationOptions say how Notation signs.
type NotationOptions struct {
	// MediaType is the envelope format: NotationJWS (the default) or
	// NotationCOSE.
	MediaType string
	// SigningTime is the signing time the envelope states; zero is now.
	// The certificate chain must be valid then.
	SigningTime time.Time
	// Expiry is the signature's own expiry ("best by"); zero is none.
	Expiry time.Time
	// Timestamper, when set, countersigns the signature with an RFC 3161
	// timestamp, which is checked against TSARoots.
	Timestamper tspclient.Timestamper
	TSARoots    *x509.CertPool
}

// notationPayload is what a notation signature signs: the descriptor of
// the target manifest.
type notationPayload struct {
	TargetArtifact notationDescriptor `json:"targetArtifact"`
}

type notationDescriptor struct {
	MediaType string `json:"mediaType"`
	Digest    string `json:"digest"`
	Size      int64  `json:"size"`
}

// Notation signs target, the descriptor of an image manifest, with key,
// whose certificate chain (the signing certificate first, the root last)
// is chain: the envelope that `notation sign` writes, in the notary.x509
// signing scheme.
func Notation(key crypto.PrivateKey, chain []*x509.Certificate, target v1.Descriptor, o NotationOptions) ([]byte, error) {
	if o.MediaType == "" {
		o.MediaType = NotationJWS
	}
	if o.SigningTime.IsZero() {
		o.SigningTime = time.Now()
	}
	payload, err := json.Marshal(notationPayload{notationDescriptor{string(target.MediaType), target.Digest.String(), target.Size}})
	if err != nil {
		return nil, err
	}
	signer, err := signature.NewLocalSigner(chain, key)
	if err != nil {
		return nil, err
	}
	env, err := signature.NewEnvelope(o.MediaType)
	if err != nil {
		return nil, err
	}
	return env.Sign(&signature.SignRequest{
		Payload:       signature.Payload{ContentType: NotationPayloadType, Content: payload},
		Signer:        signer,
		SigningTime:   o.SigningTime,
		Expiry:        o.Expiry,
		SigningScheme: signature.SigningSchemeX509,
		SigningAgent:  "authz-proxy/sign",
		Timestamper:   o.Timestamper,
		TSARootCAs:    o.TSARoots,
	})
}

// AttachNotation stores a notation signature envelope of mediaType as an
// OCI 1.1 referrer of subject, the manifest notation writes: its config
// the empty JSON typed oci.NotationSignature, no artifactType of its own,
// one layer holding the envelope, and the thumbprints of chain. With
// fallbackTag it also records the referrer in the `sha256-<hex>` index, as
// notation does on registries without the referrers API.
func AttachNotation(ctx context.Context, repo name.Repository, subject v1.Descriptor, envelope []byte, mediaType string, chain []*x509.Certificate, fallbackTag bool, opts ...remote.Option) (v1.Hash, error) {
	if len(chain) == 0 {
		return v1.Hash{}, errors.New("notation signature without a certificate chain")
	}
	thumbprints := make([]string, len(chain))
	for i, c := range chain {
		sum := sha256.Sum256(c.Raw)
		thumbprints[i] = hex.EncodeToString(sum[:])
	}
	list, err := json.Marshal(thumbprints)
	if err != nil {
		return v1.Hash{}, err
	}
	return putReferrer(ctx, repo, subject, referrer{
		layer: envelope, layerMediaType: mediaType,
		annotations: map[string]string{
			NotationThumbprintAnnotation:       string(list),
			"org.opencontainers.image.created": time.Now().UTC().Format(time.RFC3339),
		},
		configMediaType: oci.NotationSignature, indexArtifactType: types.MediaType(oci.NotationSignature),
	}, fallbackTag, opts...)
}
