package upstream_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/authz-proxy/authz-proxy/internal/oci"
	"github.com/authz-proxy/authz-proxy/internal/sign"
	"github.com/authz-proxy/authz-proxy/internal/sign/virtual"
)

const (
	slsa = "https://slsa.dev/provenance/v1"
	vuln = "https://cosign.sigstore.dev/attestation/vuln/v1"
)

// sources lists where each signature of ev was found, and what it holds.
func sources(ev *evidence) []string {
	var out []string
	for _, s := range ev.Signatures {
		kind := "simple-signing"
		switch {
		case s.Bundle != nil:
			kind = "bundle"
		case s.Notation != nil:
			kind = "notation " + s.NotationMediaType
		}
		out = append(out, s.Source+" ("+kind+")")
	}
	return out
}

func TestEvidenceFindsSignaturesWhereCosignAndNotationStoreThem(t *testing.T) {
	tests := []struct {
		name         string
		referrersAPI bool
		// store stores signatures of d in repo and returns the sources
		// that must be found.
		store func(w *world, repo string, d v1.Hash) []string
	}{
		{"cosign's .sig tag", true, func(w *world, repo string, d v1.Hash) []string {
			w.signTag(repo, d, 1)
			return []string{"tag " + fallbackTag(d) + ".sig (simple-signing)"}
		}},
		{"two signatures in the .sig tag, as cosign sign run twice leaves them", true, func(w *world, repo string, d v1.Hash) []string {
			w.signTag(repo, d, 2)
			return []string{"tag " + fallbackTag(d) + ".sig (simple-signing)", "tag " + fallbackTag(d) + ".sig (simple-signing)"}
		}},
		{"an OCI 1.1 referrer, through the referrers API", true, func(w *world, repo string, d v1.Hash) []string {
			return []string{"referrer " + w.signReferrer(repo, d, false).String() + " (simple-signing)"}
		}},
		{"a referrer in the fallback tag of a registry without the referrers API", false, func(w *world, repo string, d v1.Hash) []string {
			return []string{"referrer " + w.signReferrer(repo, d, true).String() + " (simple-signing)"}
		}},
		{"a cosign v3 bundle (message signature) as a referrer", true, func(w *world, repo string, d v1.Hash) []string {
			vs, err := virtual.New()
			if err != nil {
				t.Fatal(err)
			}
			b, err := vs.MessageBundle("ci@example.com", "https://issuer.example", []byte("image"), virtual.Options{})
			if err != nil {
				t.Fatal(err)
			}
			ref, err := sign.AttachBundle(context.Background(), w.repo(repo), w.describe(repo, d), b, "message-signature", "", false)
			if err != nil {
				t.Fatal(err)
			}
			return []string{"referrer " + ref.String() + " (bundle)"}
		}},
		{"a Notary Project JWS signature as a referrer", true, func(w *world, repo string, d v1.Hash) []string {
			return []string{"referrer " + w.notationSign(repo, d, oci.JWS, false) + " (notation application/jose+json)"}
		}},
		{"a Notary Project COSE signature in the fallback tag", false, func(w *world, repo string, d v1.Hash) []string {
			return []string{"referrer " + w.notationSign(repo, d, oci.COSE, true) + " (notation application/cose)"}
		}},
		{"the .sig tag and a referrer both count", true, func(w *world, repo string, d v1.Hash) []string {
			w.signTag(repo, d, 1)
			return []string{"tag " + fallbackTag(d) + ".sig (simple-signing)", "referrer " + w.signReferrer(repo, d, false).String() + " (simple-signing)"}
		}},
		{"an attestation is not a signature", true, func(w *world, repo string, d v1.Hash) []string {
			w.attestTag(repo, d, w.attestation(repo, d, slsa, "a"))
			w.attestReferrer(repo, d, w.attestation(repo, d, slsa, "b"), false)
			return nil
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := newWorld(t, tt.referrersAPI)
			d := w.push("acme/app", "v1")
			wantSources := tt.store(w, "acme/app", d)
			ev, err := w.client(bounds{}).Evidence(context.Background(), "acme/app", d.String(), signatures())
			if err != nil {
				t.Fatal(err)
			}
			got := sources(ev)
			slices.Sort(got)
			slices.Sort(wantSources)
			if !slices.Equal(got, wantSources) || len(ev.Problems) > 0 {
				t.Errorf("found %q with problems %q\nwant %q and no problem", got, ev.Problems, wantSources)
			}
			if len(ev.Attestations) > 0 {
				t.Errorf("attestations read when only signatures were asked for: %d", len(ev.Attestations))
			}
		})
	}
}

// notationSign signs d as `notation sign` does, with a certificate of a
// fresh CA, in the given envelope format (and, with fallbackTag, in the
// sha256-<hex> index), and returns the referrer's digest.
func (w *world) notationSign(repo string, d v1.Hash, mediaType string, fallbackTag bool) string {
	w.t.Helper()
	now := time.Now()
	ca, err := virtual.NewCA("Acme", now.Add(-time.Hour), now.Add(time.Hour))
	if err != nil {
		w.t.Fatal(err)
	}
	leaf, err := ca.Issue(virtual.Leaf{NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour)})
	if err != nil {
		w.t.Fatal(err)
	}
	desc := w.describe(repo, d)
	env, err := sign.Notation(leaf.Key, leaf.Chain(), desc, sign.NotationOptions{MediaType: mediaType})
	if err != nil {
		w.t.Fatal(err)
	}
	ref, err := sign.AttachNotation(context.Background(), w.repo(repo), desc, env, mediaType, leaf.Chain(), fallbackTag)
	if err != nil {
		w.t.Fatal(err)
	}
	return ref.String()
}

func TestEvidenceOfTheTagSchemeIsTheSignedBytes(t *testing.T) {
	w := newWorld(t, true)
	d := w.push("acme/app", "v1")
	sig := w.signTag("acme/app", d, 1)[0]
	ev, err := w.client(bounds{}).Evidence(context.Background(), "acme/app", d.String(), signatures())
	if err != nil {
		t.Fatal(err)
	}
	if len(ev.Signatures) != 1 {
		t.Fatalf("%d signatures, want 1", len(ev.Signatures))
	}
	got := ev.Signatures[0]
	if !bytes.Equal(got.Payload, sig.Payload) || !bytes.Equal(got.Signature, sig.Sig) {
		t.Errorf("payload %q and signature %x; want the payload and signature cosign stored", got.Payload, got.Signature)
	}
	if len(got.Certificate) > 0 || len(got.RekorBundle) > 0 {
		t.Errorf("a key-based signature came with a certificate or a Rekor bundle: %+v", got)
	}
}

func TestEvidenceFindsAttestationsOfTheWantedPredicateTypesOnly(t *testing.T) {
	w := newWorld(t, true)
	d := w.push("acme/app", "v1")
	provenance, scan := w.attestation("acme/app", d, slsa, "tag"), w.attestation("acme/app", d, vuln, "tag")
	w.attestTag("acme/app", d, provenance, scan)
	bundle := w.attestReferrer("acme/app", d, w.attestation("acme/app", d, slsa, "referrer"), false)
	w.attestReferrer("acme/app", d, w.attestation("acme/app", d, vuln, "referrer"), false)
	w.signTag("acme/app", d, 1)

	ev, err := w.client(bounds{}).Evidence(context.Background(), "acme/app", d.String(), predicates(slsa))
	if err != nil {
		t.Fatal(err)
	}
	if len(ev.Signatures) > 0 || len(ev.Problems) > 0 || len(ev.AttestationProblems) > 0 {
		t.Errorf("signatures %d, problems %q %q: want none", len(ev.Signatures), ev.Problems, ev.AttestationProblems)
	}
	byDigest := map[string]string{}
	for _, a := range ev.Attestations {
		if sha256Of(a.Raw) != a.Digest {
			t.Errorf("attestation %s holds bytes of digest %s", a.Digest, sha256Of(a.Raw))
		}
		byDigest[a.Digest] = a.MediaType + " in " + strings.Fields(a.Source)[0]
	}
	wantDigests := map[string]string{
		sha256Of(provenance.Envelope): "application/vnd.dsse.envelope.v1+json in tag",
		sha256Of(bundle):              "application/vnd.dev.sigstore.bundle.v0.3+json in referrer",
	}
	if fmt.Sprint(byDigest) != fmt.Sprint(wantDigests) {
		t.Errorf("attestations found:\n%v\nwant the SLSA provenance of the .att tag and of the referrer:\n%v", byDigest, wantDigests)
	}
	if n := w.count("GET /v2/acme/app/blobs/" + sha256Of(scan.Envelope)); n != 0 {
		t.Errorf("the vulnerability scan, not wanted, was read %d times", n)
	}
}

func TestEvidenceIgnoresAReferrerWhoseSubjectIsAnotherDigest(t *testing.T) {
	t.Run("in the fallback tag", func(t *testing.T) {
		w := newWorld(t, false)
		app, other := w.push("acme/app", "v1"), w.push("acme/app", "other")
		w.signReferrer("acme/app", other, true)
		// Someone copies other's referrers index under app's fallback tag.
		idx, err := remote.Index(w.repo("acme/app").Tag(fallbackTag(other)))
		if err != nil {
			t.Fatal(err)
		}
		if err := remote.WriteIndex(w.repo("acme/app").Tag(fallbackTag(app)), idx); err != nil {
			t.Fatal(err)
		}
		checkNoSignature(t, w, app)
	})
	t.Run("from a referrers API that lists it", func(t *testing.T) {
		w := newWorld(t, true)
		app, other := w.push("acme/app", "v1"), w.push("acme/app", "other")
		w.signReferrer("acme/app", other, false)
		w.intercept(func(rw http.ResponseWriter, r *http.Request) bool {
			if r.URL.Path != "/v2/acme/app/referrers/"+app.String() {
				return false
			}
			// The registry answers with other's referrers.
			resp, err := http.Get(w.srv.URL + "/v2/acme/app/referrers/" + other.String())
			if err != nil {
				t.Error(err)
				return false
			}
			defer resp.Body.Close()
			rw.Header().Set("Content-Type", resp.Header.Get("Content-Type"))
			_, _ = rw.Write(mustRead(t, resp))
			return true
		})
		checkNoSignature(t, w, app)
	})
}

func checkNoSignature(t *testing.T, w *world, d v1.Hash) {
	t.Helper()
	ev, err := w.client(bounds{}).Evidence(context.Background(), "acme/app", d.String(), signatures())
	if err != nil {
		t.Fatal(err)
	}
	if len(ev.Signatures) > 0 {
		t.Errorf("a signature whose referrer names another subject counted for %s: %q", d, sources(ev))
	}
}

func TestEvidenceReadsNoMoreThanTheLimits(t *testing.T) {
	tests := []struct {
		name   string
		limits bounds
		// store stores evidence for d in repo.
		store func(w *world, repo string, d v1.Hash)
		want  want
		// wantSignatures and wantAttestations are the counts read;
		// wantProblem is in the problems.
		wantSignatures, wantAttestations int
		wantProblem                      string
		// wantBlobReads is the most layer reads allowed.
		wantBlobReads int64
	}{
		{
			name: "signatures past maxSignatures are not read", limits: bounds{signatures: 2},
			store:          func(w *world, repo string, d v1.Hash) { w.signTag(repo, d, 3) },
			want:           signatures(),
			wantSignatures: 2, wantProblem: "more than 2 signatures stored: the rest were not read", wantBlobReads: 2,
		},
		{
			name: "maxSignatures counts the tag and the referrers together", limits: bounds{signatures: 2},
			store: func(w *world, repo string, d v1.Hash) {
				w.signTag(repo, d, 2)
				w.signReferrer(repo, d, false)
			},
			want:           signatures(),
			wantSignatures: 2, wantProblem: "more than 2 signatures stored", wantBlobReads: 2,
		},
		{
			name: "attestations past maxAttestations are not read", limits: bounds{attestations: 2},
			store: func(w *world, repo string, d v1.Hash) {
				w.attestTag(repo, d, w.attestation(repo, d, slsa, "1"), w.attestation(repo, d, slsa, "2"), w.attestation(repo, d, slsa, "3"))
			},
			want:             predicates(slsa),
			wantAttestations: 2, wantProblem: "more than 2 attestations of the required predicate types stored for this digest", wantBlobReads: 2,
		},
		{
			name: "attestations of other predicate types do not count against maxAttestations", limits: bounds{attestations: 1},
			store: func(w *world, repo string, d v1.Hash) {
				w.attestTag(repo, d, w.attestation(repo, d, vuln, "1"), w.attestation(repo, d, slsa, "2"), w.attestation(repo, d, vuln, "3"))
			},
			want:             predicates(slsa),
			wantAttestations: 1, wantBlobReads: 1,
		},
		{
			name: "a payload over maxArtifactSize is not read", limits: bounds{payload: 64},
			store:       func(w *world, repo string, d v1.Hash) { w.signTag(repo, d, 1) },
			want:        signatures(),
			wantProblem: "over the 64-byte limit", wantBlobReads: 0,
		},
		{
			name: "an envelope over maxEnvelopeSize is not read", limits: bounds{envelope: 64},
			store:       func(w *world, repo string, d v1.Hash) { w.attestTag(repo, d, w.attestation(repo, d, slsa, "1")) },
			want:        predicates(slsa),
			wantProblem: "over the 64-byte limit", wantBlobReads: 0,
		},
		{
			name: "referrers past maxSignatures+maxAttestations are not fetched", limits: bounds{signatures: 1, attestations: 1},
			store: func(w *world, repo string, d v1.Hash) {
				for range 3 {
					w.signReferrer(repo, d, false)
				}
			},
			want:           signatures(),
			wantSignatures: 1, wantProblem: "more than 2 referrers stored for this digest: the rest were not read", wantBlobReads: 1,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := newWorld(t, true)
			d := w.push("acme/app", "v1")
			tt.store(w, "acme/app", d)
			before := w.count("GET /v2/acme/app/blobs/")
			ev, err := w.client(tt.limits).Evidence(context.Background(), "acme/app", d.String(), tt.want)
			if err != nil {
				t.Fatal(err)
			}
			problems := append(ev.Problems, ev.AttestationProblems...)
			if len(ev.Signatures) != tt.wantSignatures || len(ev.Attestations) != tt.wantAttestations {
				t.Errorf("%d signatures and %d attestations read, want %d and %d (problems %q)", len(ev.Signatures), len(ev.Attestations), tt.wantSignatures, tt.wantAttestations, problems)
			}
			if tt.wantProblem == "" && len(problems) > 0 || tt.wantProblem != "" && !strings.Contains(strings.Join(problems, "\n"), tt.wantProblem) {
				t.Errorf("problems %q, want one saying %q", problems, tt.wantProblem)
			}
			if n := w.count("GET /v2/acme/app/blobs/") - before; n > tt.wantBlobReads {
				t.Errorf("%d layers read from the upstream, want at most %d", n, tt.wantBlobReads)
			}
		})
	}
}

func TestEvidenceReadsTheNewestAttestationsFirst(t *testing.T) {
	w := newWorld(t, true)
	d := w.push("acme/app", "v1")
	var atts []v1.Hash
	for i := range 3 {
		a := w.attestation("acme/app", d, slsa, fmt.Sprint(i))
		w.attestTag("acme/app", d, a) // cosign attest appends to the .att manifest
		h, _ := v1.NewHash(sha256Of(a.Envelope))
		atts = append(atts, h)
	}
	ev, err := w.client(bounds{attestations: 2}).Evidence(context.Background(), "acme/app", d.String(), predicates(slsa))
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, a := range ev.Attestations {
		got = append(got, a.Digest)
	}
	if want := []string{atts[2].String(), atts[1].String()}; !slices.Equal(got, want) {
		t.Errorf("read %q, want the two newest, %q", got, want)
	}
}

func TestEvidenceDropsLayersThatCannotCount(t *testing.T) {
	tests := []struct {
		name string
		// bend answers requests for the payload blob at path.
		bend        func(rw http.ResponseWriter, payload []byte)
		unsigned    bool
		wantProblem string
	}{
		{name: "a payload whose bytes do not match its digest", bend: func(rw http.ResponseWriter, p []byte) {
			_, _ = rw.Write(bytes.Replace(p, []byte("cosign"), []byte("COSIGN"), 1))
		}, wantProblem: "signature payload does not match its digest"},
		{name: "a payload longer than its descriptor declares", bend: func(rw http.ResponseWriter, p []byte) {
			_, _ = rw.Write(append(p, ' '))
		}, wantProblem: "is larger than the"},
		{name: "a payload missing upstream", bend: func(rw http.ResponseWriter, p []byte) {
			http.Error(rw, `{"errors":[{"code":"BLOB_UNKNOWN"}]}`, http.StatusNotFound)
		}, wantProblem: "is missing upstream"},
		{name: "a layer without its signature annotation", unsigned: true, wantProblem: "has no valid dev.cosignproject.cosign/signature annotation"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := newWorld(t, true)
			d := w.push("acme/app", "v1")
			// Signed under another name, so that the payload is read (the
			// one cosign writes by default for this repository is known
			// without reading it).
			sig := w.signature("acme/mirror", d)
			if tt.unsigned {
				sig.Sig = nil
			}
			if err := sign.AttachTag(context.Background(), w.repo("acme/app"), d.String(), []sign.Signature{sig}); err != nil {
				t.Fatal(err)
			}
			if tt.bend != nil {
				w.intercept(func(rw http.ResponseWriter, r *http.Request) bool {
					if r.URL.Path != "/v2/acme/app/blobs/"+sha256Of(sig.Payload) {
						return false
					}
					tt.bend(rw, sig.Payload)
					return true
				})
			}
			ev, err := w.client(bounds{}).Evidence(context.Background(), "acme/app", d.String(), signatures())
			if err != nil {
				t.Fatalf("a layer that cannot count made the evidence fail: %v", err)
			}
			if len(ev.Signatures) != 0 || len(ev.Problems) != 1 || !strings.Contains(ev.Problems[0], tt.wantProblem) {
				t.Errorf("%d signatures, problems %q; want none and one saying %q", len(ev.Signatures), ev.Problems, tt.wantProblem)
			}
		})
	}
}

func TestEvidenceFailsWhenTheUpstreamCannotAnswer(t *testing.T) {
	tests := []struct {
		name string
		// path is what fails, given the digest and the signature payload.
		path func(d v1.Hash, payload []byte) string
		want want
	}{
		{"the .sig tag", func(d v1.Hash, _ []byte) string { return "/v2/acme/app/manifests/" + fallbackTag(d) + ".sig" }, signatures()},
		{"the .att tag", func(d v1.Hash, _ []byte) string { return "/v2/acme/app/manifests/" + fallbackTag(d) + ".att" }, predicates(slsa)},
		{"the referrers API", func(d v1.Hash, _ []byte) string { return "/v2/acme/app/referrers/" + d.String() }, signatures()},
		{"a signature payload", func(_ v1.Hash, p []byte) string { return "/v2/acme/app/blobs/" + sha256Of(p) }, signatures()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := newWorld(t, true)
			d := w.push("acme/app", "v1")
			// Signed under another name: the payload is not the one cosign
			// writes for this repository by default, which the reader
			// knows without asking, so it must be read.
			sig := w.signature("acme/mirror", d)
			if err := sign.AttachTag(context.Background(), w.repo("acme/app"), d.String(), []sign.Signature{sig}); err != nil {
				t.Fatal(err)
			}
			failing := tt.path(d, sig.Payload)
			w.intercept(func(rw http.ResponseWriter, r *http.Request) bool {
				if r.URL.Path != failing {
					return false
				}
				http.Error(rw, "upstream is down", http.StatusServiceUnavailable)
				return true
			})
			ev, err := w.client(bounds{}).Evidence(context.Background(), "acme/app", d.String(), tt.want)
			if status, ok := upstreamStatus(err); !ok || status != http.StatusServiceUnavailable {
				t.Fatalf("evidence %+v, err %v; want an upstream error with status 503: could not verify is not \"nothing found\"", ev, err)
			}
		})
	}
}

func TestEvidenceKnowsThePayloadCosignWritesWithoutReadingIt(t *testing.T) {
	w := newWorld(t, true)
	d := w.push("acme/app", "v1")
	sig := w.signTag("acme/app", d, 1)[0]
	// Were it read, the upstream's failure would fail the evidence.
	w.intercept(func(rw http.ResponseWriter, r *http.Request) bool {
		if r.URL.Path != "/v2/acme/app/blobs/"+sha256Of(sig.Payload) {
			return false
		}
		http.Error(rw, "upstream is down", http.StatusServiceUnavailable)
		return true
	})
	ev, err := w.client(bounds{}).Evidence(context.Background(), "acme/app", d.String(), signatures())
	if err != nil {
		t.Fatalf("the default payload was read: %v", err)
	}
	if len(ev.Signatures) != 1 || !bytes.Equal(ev.Signatures[0].Payload, sig.Payload) || len(ev.Problems) != 0 {
		t.Errorf("signatures %+v, problems %q; want the signed payload, byte for byte", ev.Signatures, ev.Problems)
	}
}

func TestEvidenceLooksOnlyWhereAsked(t *testing.T) {
	w := newWorld(t, true)
	d := w.push("acme/app", "v1")
	w.signTag("acme/app", d, 1)
	ref := w.signReferrer("acme/app", d, false)
	tests := []struct {
		name string
		want want
		// wantSources are the sources found, in order.
		wantSources []string
	}{
		{"everywhere, by default", signatures(), []string{"tag " + fallbackTag(d) + ".sig (simple-signing)", "referrer " + ref.String() + " (simple-signing)"}},
		{"the tag schemes only", inTags(signatures()), []string{"tag " + fallbackTag(d) + ".sig (simple-signing)"}},
		{"the referrers only", inReferrers(signatures()), []string{"referrer " + ref.String() + " (simple-signing)"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ev, err := w.client(bounds{}).Evidence(context.Background(), "acme/app", d.String(), tt.want)
			if err != nil {
				t.Fatal(err)
			}
			if got := sources(ev); !slices.Equal(got, tt.wantSources) {
				t.Errorf("found %q, want %q", got, tt.wantSources)
			}
		})
	}
	t.Run("nothing asked, nothing read", func(t *testing.T) {
		before := w.count("")
		ev, err := w.client(bounds{}).Evidence(context.Background(), "acme/app", d.String(), want{})
		if err != nil || len(ev.Signatures)+len(ev.Attestations) > 0 {
			t.Fatalf("%+v, %v", ev, err)
		}
		if n := w.count("") - before; n != 0 {
			t.Errorf("%d upstream requests for no evidence", n)
		}
	})
}

func TestEvidenceAsksARegistryWithoutTheReferrersAPIOnlyOnce(t *testing.T) {
	w := newWorld(t, false)
	c := w.client(bounds{})
	var asked int64
	for _, tag := range []string{"v1", "v2", "v3"} {
		d := w.push("acme/app", tag)
		ref := w.signReferrer("acme/app", d, true)
		before := w.count("GET /v2/acme/app/referrers/")
		ev, err := c.Evidence(context.Background(), "acme/app", d.String(), signatures())
		if err != nil {
			t.Fatal(err)
		}
		if got := sources(ev); !slices.Equal(got, []string{"referrer " + ref.String() + " (simple-signing)"}) {
			t.Errorf("%s: found %q, want the referrer of its fallback tag", tag, got)
		}
		asked += w.count("GET /v2/acme/app/referrers/") - before
	}
	if asked != 1 {
		t.Errorf("the referrers API, which this registry lacks, was asked %d times for 3 digests; want once", asked)
	}
}

func TestReferrersFallbackIsAnIndexOfTheFallbackTag(t *testing.T) {
	w := newWorld(t, false)
	signed, unsigned := w.push("acme/app", "v1"), w.push("acme/app", "v2")
	ref := w.signReferrer("acme/app", signed, true)
	c := w.client(bounds{})
	tests := []struct {
		name string
		d    v1.Hash
		want []string
	}{
		{"a digest with a referrer", signed, []string{ref.String()}},
		{"a digest without any: an empty index", unsigned, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			raw, err := c.ReferrersFallback(context.Background(), "acme/app", tt.d.String())
			if err != nil {
				t.Fatal(err)
			}
			var idx v1.IndexManifest
			if err := json.Unmarshal(raw, &idx); err != nil || idx.MediaType != "application/vnd.oci.image.index.v1+json" || idx.SchemaVersion != 2 {
				t.Fatalf("not an OCI image index (%v): %s", err, raw)
			}
			var got []string
			for _, m := range idx.Manifests {
				got = append(got, m.Digest.String())
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("lists %q, want %q", got, tt.want)
			}
		})
	}
}
