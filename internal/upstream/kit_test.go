package upstream_test

import (
	"context"
	"errors"
	"testing"

	"github.com/authz-proxy/authz-proxy/internal/limits"
	"github.com/authz-proxy/authz-proxy/internal/oci"
	"github.com/authz-proxy/authz-proxy/internal/upstream"
)

// Every reference of these tests to the evidence types (what the client
// finds and the policy judges) and to the client's options is in this
// file: moving those types to a package of their own changes this file
// alone.
type (
	evidence    = oci.Evidence
	want        = oci.Want
	recognition = oci.Recognition
	manifest    = oci.Manifest
)

// recognize is the proxy's artifact check of m, its layers read from repo
// through c (at most 8 layers of 1 MiB); final as oci.Recognize says.
func recognize(c *upstream.Client, repo string, m *manifest) (r recognition, final bool, err error) {
	return oci.Recognize(context.Background(), m, 8, 1<<20, func(ctx context.Context, l oci.Descriptor, max int64) ([]byte, error) {
		return c.Layer(ctx, repo, l, max)
	})
}

// bounds are the client limits a test sets; zero fields take the defaults.
type bounds struct {
	signatures, attestations int
	payload, envelope        int64
}

// newClient is a client of the upstream at url with limits l.
func newClient(t testing.TB, url string, b bounds) *upstream.Client {
	t.Helper()
	c, err := upstream.New(upstream.Options{Name: "lab", URL: url, Insecure: true, Limits: limits.Limits{
		MaxSignatures: b.signatures, MaxAttestations: b.attestations,
		MaxArtifactSize: b.payload, MaxEnvelopeSize: b.envelope,
	}})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// signatures asks for signatures only.
func signatures() want { return want{Signatures: true} }

// predicates asks for attestations of the predicate types pts only.
func predicates(pts ...string) want { return want{PredicateTypes: pts} }

// inTags and inReferrers ask w in the cosign tag schemes, or in the
// referrers (and their fallback tag), only.
func inTags(w want) want      { w.From = oci.TagSchemes; return w }
func inReferrers(w want) want { w.From = oci.Referrers; return w }

// upstreamStatus is the upstream's HTTP status that err reports, and
// whether err is an upstream failure ("could not verify") at all.
func upstreamStatus(err error) (int, bool) {
	var ue *upstream.Error
	if !errors.As(err, &ue) {
		return 0, false
	}
	return ue.Status, true
}
