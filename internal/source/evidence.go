package source

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"slices"
	"time"

	"github.com/authz-proxy/authz-proxy/internal/limits"
	"github.com/authz-proxy/authz-proxy/internal/oci"
)

// Evidence finds what want asks for, stored for digest in repo, as the
// upstream answers (upstream.Client.Evidence). With a store, the answer is
// kept as notes about the digest, one per place and kind: what the tag
// schemes, or the referrers, held of its signatures, or of its
// attestations of one predicate type. When the upstream fails (or failed a
// moment ago), the question is answered from those notes: what the
// upstream said last of each kind asked for, in each place asked for. The
// notes hold what the upstream said, never a verdict; the judge verifies
// them again.
func (s *Source) Evidence(ctx context.Context, repo, digest string, want oci.Want) (*oci.Evidence, error) {
	if s.store == nil {
		return s.upstreamEvidence(ctx, repo, digest, want)
	}
	if s.outage() {
		if ev, ok := s.storedEvidence(ctx, repo, digest, want); ok {
			return ev, nil
		}
	}
	ev, err := s.keptEvidence(ctx, repo, digest, want)
	if err == nil {
		return ev, nil
	}
	if !unavailable(err) {
		return nil, err
	}
	s.outageBegins()
	if ev, ok := s.storedEvidence(ctx, repo, digest, want); ok {
		return ev, nil
	}
	return nil, err
}

func (s *Source) upstreamEvidence(ctx context.Context, repo, digest string, want oci.Want) (*oci.Evidence, error) {
	start := time.Now()
	ev, err := s.up.Evidence(ctx, repo, digest, want)
	s.done("evidence", start, err)
	return ev, err
}

// keptEvidence asks the upstream, one place at a time, and keeps each
// place's answer.
func (s *Source) keptEvidence(ctx context.Context, repo, digest string, want oci.Want) (*oci.Evidence, error) {
	var ev *oci.Evidence
	for _, p := range places(want.From) {
		w := want
		w.From = p
		if ev != nil {
			w.After = ev
		}
		got, err := s.upstreamEvidence(ctx, repo, digest, w)
		if err != nil {
			return nil, err
		}
		s.keep(repo, digest, p, w, got)
		if ev == nil {
			ev = got
		} else {
			ev.Add(got)
		}
	}
	return ev, nil
}

// places splits from into the places of evidence, in the order they are
// read; zero is everywhere.
func places(from oci.Places) []oci.Places {
	if from == 0 {
		from = oci.Everywhere
	}
	var ps []oci.Places
	for _, p := range []oci.Places{oci.TagSchemes, oci.Referrers} {
		if from&p != 0 {
			ps = append(ps, p)
		}
	}
	return ps
}

func placeName(p oci.Places) string {
	if p == oci.Referrers {
		return "referrers"
	}
	return "tags"
}

// signaturesKind is the kind of the note of a digest's signatures; the
// note of its attestations of one predicate type is of that type.
const signaturesKind = "signatures"

// kinds are the kinds of evidence w asks for.
func kinds(w oci.Want) []string {
	var ks []string
	if w.Signatures {
		ks = append(ks, signaturesKind)
	}
	return append(ks, w.PredicateTypes...)
}

// note is what the upstream answered, at one place, of one kind of
// evidence about a digest: nothing verified.
type note struct {
	Digest       string            `json:"digest"`
	Place        string            `json:"place"`
	Kind         string            `json:"kind"`
	Signatures   []oci.Signature   `json:"signatures,omitempty"`
	Attestations []oci.Attestation `json:"attestations,omitempty"`
	Problems     []string          `json:"problems,omitempty"`
}

// noteKey names the note of kind at place; the kind, a predicate type,
// is hashed into it.
func noteKey(place, kind string) string {
	sum := sha256.Sum256([]byte(kind))
	return "evidence-" + place + "-" + hex.EncodeToString(sum[:16])
}

// keep writes what the upstream answered at place p to want as one note
// per kind asked for, unless this process wrote the same note last. An
// attestation whose descriptor announces no predicate type may be of any
// type asked for, and is kept with each.
func (s *Source) keep(repo, digest string, p oci.Places, want oci.Want, ev *oci.Evidence) {
	place := placeName(p)
	for _, kind := range kinds(want) {
		n := note{Digest: digest, Place: place, Kind: kind}
		if kind == signaturesKind {
			n.Signatures, n.Problems = ev.Signatures, ev.Problems
		} else {
			for _, a := range ev.Attestations {
				if a.PredicateType == kind || a.PredicateType == "" {
					n.Attestations = append(n.Attestations, a)
				}
			}
			n.Problems = ev.AttestationProblems
		}
		doc, err := json.Marshal(n)
		if err != nil {
			continue
		}
		key := noteKey(place, kind)
		sum := sha256.Sum256(doc)
		id := repo + "@" + digest + "/" + key
		if last, ok := s.kept.Get(id); ok && last == sum {
			continue
		}
		s.kept.Add(id, sum)
		s.store.PutNote(s.scope(repo), digest, key, doc)
	}
}

// storedEvidence answers want from the notes kept about digest in repo:
// for each kind asked for, what each place asked for held when the
// upstream last answered. ok is false when some kind asked for was never
// noted at any place: the question cannot be answered offline. A kind
// noted at another place than those asked for is answered as absent here:
// the judge asks the other place next when it needs to.
func (s *Source) storedEvidence(ctx context.Context, repo, digest string, want oci.Want) (*oci.Evidence, bool) {
	sctx, cancel := storeContext(ctx)
	defer cancel()
	noted := s.store.NoteKeys(sctx, s.scope(repo), digest, "evidence-")
	ks := kinds(want)
	for _, kind := range ks {
		if !slices.ContainsFunc(places(0), func(p oci.Places) bool {
			_, found := slices.BinarySearch(noted, noteKey(placeName(p), kind))
			return found
		}) {
			return nil, false
		}
	}
	ev := &oci.Evidence{}
	if want.After != nil {
		ev.SignatureLayers, ev.AttestationLayers = want.After.SignatureLayers, want.After.AttestationLayers
	}
	seen := map[string]bool{}
	for _, p := range places(want.From) {
		place := placeName(p)
		for _, kind := range ks {
			key := noteKey(place, kind)
			if _, found := slices.BinarySearch(noted, key); !found {
				continue
			}
			doc, err := s.store.Note(sctx, s.scope(repo), digest, key, maxNote(s.up.Limits()))
			if err != nil {
				return nil, false
			}
			var n note
			if err := json.Unmarshal(doc, &n); err != nil || n.Digest != digest || n.Place != place || n.Kind != kind {
				return nil, false
			}
			n.addTo(ev, seen)
		}
	}
	s.metrics.EvidenceFromStore(s.name)
	return ev, true
}

// addTo adds what n holds of its kind to ev, each signature, attestation
// and problem once (an attestation that announces no type is kept with
// every type): a note of signatures gives signatures only, a note of a
// predicate type attestations only.
func (n *note) addTo(ev *oci.Evidence, seen map[string]bool) {
	once := func(key string) bool {
		if seen[key] {
			return false
		}
		seen[key] = true
		return true
	}
	if n.Kind == signaturesKind {
		for _, sig := range n.Signatures {
			h := sha256.New()
			for _, b := range [][]byte{[]byte(sig.Source), sig.Payload, sig.Signature, sig.Bundle, sig.Notation} {
				h.Write(b)
				h.Write([]byte{0})
			}
			if once("sig\x00" + string(h.Sum(nil))) {
				ev.Signatures = append(ev.Signatures, sig)
				ev.SignatureLayers++
			}
		}
		for _, p := range n.Problems {
			if once("signature problem\x00" + p) {
				ev.Problems = append(ev.Problems, p)
			}
		}
		return
	}
	for _, a := range n.Attestations {
		if once("att\x00" + a.Source + "\x00" + a.Digest) {
			ev.Attestations = append(ev.Attestations, a)
			ev.AttestationLayers++
		}
	}
	for _, p := range n.Problems {
		if once("attestation problem\x00" + p) {
			ev.AttestationProblems = append(ev.AttestationProblems, p)
		}
	}
}

// maxNote bounds an evidence note: every signature and attestation layer
// the limits let the upstream client read, base64 in JSON, and room for
// the rest.
func maxNote(l limits.Limits) int64 {
	layers := int64(l.MaxSignatures)*max(l.MaxArtifactSize, l.MaxEnvelopeSize) + int64(l.MaxAttestations)*l.MaxEnvelopeSize
	return layers/3*4 + 1<<20
}
