package policy

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/authz-proxy/authz-proxy/internal/audit"
	"github.com/authz-proxy/authz-proxy/internal/config"
	"github.com/authz-proxy/authz-proxy/internal/oci"
	"github.com/authz-proxy/authz-proxy/internal/verify"
	"github.com/authz-proxy/authz-proxy/internal/vuln"
)

// requirement is one compiled demand of a rule: signatures or an
// attestation. Rules that demand the same thing share one requirement, and
// so one cached outcome per digest.
type requirement struct {
	// key names what it demands, uniquely within a policy.
	key string
	// tagged is true when its outcome depends on the tag asked for (a
	// condition reads image.tag): the outcome is then kept per tag.
	tagged bool
	// client is true when its outcome depends on who asks (a condition
	// reads client): the outcome is then kept per principal and claims.
	client bool
	// group, when set, names the attestations the requirement chooses
	// the newest of (predicate type and attestors): requirements of one
	// group are judged together, so that they look at the same one.
	group string
	sig   *signatureRequirement
	att   *attestationRequirement
	vul   *vulnerabilitiesRequirement
}

// signatureRequirement is met by valid signatures over the digest from at
// least threshold listed attestors, each by a key no other counted
// attestor's signature was made with.
type signatureRequirement struct {
	attestors []*attestor
	threshold int
}

func compileRequirement(r config.Requirement, attestors map[string]*attestor) (*requirement, error) {
	if s := r.Signature; s != nil {
		q := &requirement{sig: &signatureRequirement{threshold: s.Threshold}}
		for _, name := range s.Attestors {
			q.sig.attestors = append(q.sig.attestors, attestors[name])
		}
		q.key = fmt.Sprintf("signature attestors=%s threshold=%d", strings.Join(s.Attestors, ","), s.Threshold)
		return q, nil
	}
	if v := r.Vulnerabilities; v != nil {
		vq, err := compileVulnerabilities(v, attestors)
		if err != nil {
			return nil, err
		}
		q := &requirement{vul: vq, key: vq.key(v), group: newestGroup(VulnPredicateType, v.Attestors)}
		if vq.condition != nil {
			q.tagged, q.client = vq.condition.readsTag, vq.condition.readsClient
		}
		return q, nil
	}
	a := r.Attestation
	q := &requirement{att: &attestationRequirement{predicateType: a.PredicateType, threshold: a.Threshold, selection: a.Select}}
	for _, name := range a.Attestors {
		q.att.attestors = append(q.att.attestors, attestors[name])
	}
	if strings.TrimSpace(a.Condition) != "" {
		cond, err := compileCondition(a.Condition)
		if err != nil {
			return nil, err
		}
		q.att.condition, q.tagged, q.client = cond, cond.readsTag, cond.readsClient
	}
	if a.Select == config.SelectNewest {
		q.group = newestGroup(a.PredicateType, a.Attestors)
	}
	q.key = fmt.Sprintf("attestation predicateType=%s attestors=%s threshold=%d select=%s condition=%s", a.PredicateType, strings.Join(a.Attestors, ","), a.Threshold, a.Select, strings.TrimSpace(a.Condition))
	return q, nil
}

// newestGroup names the newest attestation of predicateType from
// attestors, whatever their order.
func newestGroup(predicateType string, attestors []string) string {
	return "newest " + predicateType + " " + strings.Join(slices.Sorted(slices.Values(attestors)), ",")
}

// conditionField is the field of r that holds its condition.
func conditionField(r config.Requirement) []any {
	if r.Vulnerabilities != nil {
		return []any{"vulnerabilities", "condition"}
	}
	return []any{"attestation", "condition"}
}

// attestors lists whom q asks.
func (q *requirement) attestors() []*attestor {
	switch {
	case q.sig != nil:
		return q.sig.attestors
	case q.vul != nil:
		return q.vul.attestors
	}
	return q.att.attestors
}

// sharedKeyWarnings reports the attestors of q, at path, that hold the same
// key: a signature by it counts for one of them only.
func sharedKeyWarnings(c *config.Config, path []any, q *requirement) []string {
	var warnings []string
	holders := map[string]string{}
	for _, a := range q.attestors() {
		for _, k := range a.keys {
			if first, ok := holders[k.ID]; ok && first != a.name {
				warnings = append(warnings, c.Errorf(path, "attestors %s and %s share the key %s: a signature by it counts once toward the threshold", first, a.name, short(k.ID)).Error())
				continue
			}
			holders[k.ID] = a.name
		}
	}
	return warnings
}

// want is the evidence that reqs need.
func want(reqs []*requirement) oci.Want {
	var w oci.Want
	add := func(types ...string) {
		for _, t := range types {
			if !slices.Contains(w.PredicateTypes, t) {
				w.PredicateTypes = append(w.PredicateTypes, t)
			}
		}
	}
	for _, q := range reqs {
		switch {
		case q.sig != nil:
			w.Signatures = true
		case q.vul != nil:
			add(VulnPredicateType)
			if len(q.vul.vexAttestors) > 0 {
				add(vuln.OpenVEXPredicateTypes...)
			}
		default:
			add(q.att.predicateType)
		}
	}
	return w
}

// outcome is what one requirement came to for one digest: verified, with
// who vouched and why it holds, or not, with the reasons a person can act
// on.
type outcome struct {
	ok      bool
	by      []audit.Verification
	reasons []string
	// mediaType is the judged manifest's, for decisions answered from
	// outcomes alone.
	mediaType string
	// storedAt, when set, says the outcome rests on evidence the store
	// kept while the upstream failed, last confirmed then: it is cached
	// for storedOutcomeTTL at most.
	storedAt time.Time
	// until, when set, is when the outcome stops holding (a scan gets
	// older than maxAge, an exception expires): it is kept no longer.
	until time.Time
	// scans are the scans a vulnerabilities requirement judged, finding
	// by finding (kept only by a judge that keeps findings).
	scans []ScanReport
}

// check judges reqs against the evidence found for s: each signature and
// attestation is parsed once, whatever the number of requirements.
func check(ctx context.Context, s Subject, ev *oci.Evidence, reqs []*requirement) ([]outcome, error) {
	outs := make([]outcome, len(reqs))
	var sigs []signature
	var as *attestations
	for i, q := range reqs {
		var o outcome
		if q.sig != nil {
			if sigs == nil {
				sigs = parseSignatures(ev)
			}
			var err error
			if o, err = q.sig.check(ctx, sigs, s); err != nil {
				return nil, fmt.Errorf("verifying the signatures of %s@%s: %w", s.Image(), s.Digest, err)
			}
			if !o.ok {
				o.reasons = append(o.reasons, ev.Problems...)
			}
		} else {
			if as == nil {
				as = newAttestations(ev, s, time.Now())
			}
			var err error
			if q.vul != nil {
				o, err = q.vul.check(ctx, as)
			} else {
				o, err = q.att.check(ctx, as)
			}
			// A condition interrupted because time ran out failed for
			// want of time, not on its merits: that is no outcome to keep.
			if err == nil {
				err = ctx.Err()
			}
			if err != nil {
				return nil, fmt.Errorf("judging the attestations of %s@%s: %w", s.Image(), s.Digest, err)
			}
			if !o.ok {
				o.reasons = append(o.reasons, ev.AttestationProblems...)
			}
		}
		o.mediaType, o.storedAt = s.MediaType, ev.StoredAt
		outs[i] = o
	}
	return outs, nil
}

// verdict completes v, the verdict of rule r, with the outcomes of its
// requirements: allowed when every one holds.
func verdict(v Verdict, outs []outcome) Verdict {
	v.Allowed = true
	for _, o := range outs {
		v.VerifiedBy = append(v.VerifiedBy, o.by...)
		v.Allowed = v.Allowed && o.ok
		if !o.storedAt.IsZero() && (v.EvidenceStoredAt.IsZero() || o.storedAt.Before(v.EvidenceStoredAt)) {
			v.EvidenceStoredAt = o.storedAt
		}
		v.Scans = append(v.Scans, o.scans...)
	}
	for _, o := range outs {
		if o.ok == v.Allowed {
			for _, r := range o.reasons {
				if !slices.Contains(v.Reasons, r) {
					v.Reasons = append(v.Reasons, r)
				}
			}
		}
	}
	return v
}

// signature is one signature found, parsed once for every requirement:
// a cosign or Sigstore signature (signed), or a Notary Project one
// (notation).
type signature struct {
	source   string
	signed   *verify.Signed
	notation *verify.NotationSignature
	err      error // why it cannot be used at all
}

// parseSignatures parses the signatures of ev: cosign simple-signing
// layers (with their keyless and log annotations), Sigstore bundles and
// Notary Project envelopes. Bundles of attestations other than cosign's
// signature statement are not signatures and are left out.
func parseSignatures(ev *oci.Evidence) []signature {
	out := []signature{}
	for _, sig := range ev.Signatures {
		var s signature
		s.source = sig.Source
		if sig.Notation != nil {
			s.notation, s.err = verify.ParseNotation(sig.NotationMediaType, sig.Notation)
			out = append(out, s)
			continue
		}
		if sig.Bundle != nil {
			s.signed, s.err = verify.ParseBundle(sig.Bundle)
			if s.err == nil && !s.signed.IsImageSignature() {
				continue
			}
		} else {
			s.signed, s.err = verify.ParseCosignSignature(sig.Payload, sig.Signature, sig.Certificate, sig.RekorBundle, sig.Timestamp)
		}
		out = append(out, s)
	}
	return out
}

// hit is one verification that counts for an attestor, with the key that
// made it.
type hit struct {
	v      audit.Verification
	signer string
}

// signerOf names the key that made sig, verified as v: the attestor's key,
// or the key of the signing certificate (keyless or Notary Project).
func signerOf(v *audit.Verification, sig signature) string {
	switch {
	case v.KeyID != "":
		return v.KeyID
	case sig.notation != nil:
		return sig.notation.KeyID()
	}
	return sig.signed.CertificateKeyID()
}

// check verifies the signatures as each listed attestor, and counts toward
// the threshold at most one attestor per signing key. An error means that
// the threshold is not met without a signature whose outcome could not be
// decided (an online revocation check that got no answer).
func (req *signatureRequirement) check(ctx context.Context, sigs []signature, s Subject) (outcome, error) {
	hits := make([][]hit, len(req.attestors))
	var unusable []string // genuine signatures that still do not count
	var undecided error
	var mismatch *verify.DigestMismatchError
	var failed *verify.CheckError
	for i, a := range req.attestors {
		for _, sig := range sigs {
			if sig.err != nil {
				continue
			}
			v, err := a.verify(ctx, sig, s)
			switch {
			case err == nil:
				hits[i] = append(hits[i], hit{*v, signerOf(v, sig)})
			case errors.Is(err, verify.ErrRevocationUnavailable), errors.Is(err, verify.ErrTrustRootUnavailable):
				undecided = cmp.Or(undecided, err)
			case errors.Is(err, errNotMine), errors.Is(err, verify.ErrBadSignature):
			case errors.As(err, &mismatch):
				unusable = append(unusable, fmt.Sprintf("a signature by attestor %s was made for %s, not for this digest: a signature does not carry over to another image", a.name, mismatch.Signed))
			case errors.As(err, &failed):
				unusable = append(unusable, fmt.Sprintf("a signature (%s) does not count for attestor %s: %v", sig.source, a.name, err))
			default:
				unusable = append(unusable, fmt.Sprintf("a signature by attestor %s (%s) has an unusable payload: %v", a.name, sig.source, err))
			}
			if len(hits[i]) > 0 && req.threshold == 1 {
				break // one will do
			}
		}
	}
	by, spare := count(req.attestors, hits)
	o := outcome{by: by}
	if len(by) >= req.threshold {
		o.ok = true
		for _, b := range by {
			o.reasons = append(o.reasons, fmt.Sprintf("signed by attestor %s (%s)", b.Attestor, describe(&b)))
		}
		return o, nil
	}
	if undecided != nil {
		return outcome{}, undecided
	}
	names := make([]string, len(req.attestors))
	for i, a := range req.attestors {
		names[i] = a.name
	}
	notation := slices.ContainsFunc(req.attestors, func(a *attestor) bool { return a.notation != nil })
	switch {
	case len(sigs) == 0:
		r := fmt.Sprintf("no cosign signature found (.sig tag or referrers); need one from attestor %s", orList(names))
		if notation {
			r = fmt.Sprintf("no signature found (cosign's .sig tag, or referrers: cosign, Sigstore bundle or Notary Project); need one from attestor %s", orList(names))
		}
		switch {
		case s.IsIndex:
		case notation:
			r += " (a platform image passes when its signed index is pulled through the proxy first, or when it is signed itself)"
		default:
			r += " (a platform image passes when its signed index is pulled through the proxy first, or when signed with cosign sign --recursive)"
		}
		o.reasons = append(o.reasons, r)
	case len(by) == 0 && len(unusable) > 0:
		o.reasons = append(o.reasons, unusable...)
	case len(by) == 0:
		what := "with a key of"
		if notation || slices.ContainsFunc(req.attestors, func(a *attestor) bool { return a.keyless != nil }) {
			what = "as"
		}
		o.reasons = append(o.reasons, fmt.Sprintf("%d signature(s) found, none verifies %s attestor %s", len(sigs), what, orList(names)))
		for _, sig := range sigs {
			if sig.err != nil {
				o.reasons = append(o.reasons, fmt.Sprintf("signature %s is unusable: %v", sig.source, sig.err))
			}
		}
	default:
		var missing []string
		for _, n := range names {
			if !slices.ContainsFunc(by, func(b audit.Verification) bool { return b.Attestor == n }) {
				missing = append(missing, n)
			}
		}
		o.reasons = append(o.reasons, fmt.Sprintf("signed by %d of the %d attestors required; missing: %s", len(by), req.threshold, strings.Join(missing, ", ")))
		o.reasons = append(o.reasons, spare...)
	}
	return o, nil
}

// count pairs attestors with the keys that made their hits so that no key
// counts twice (a maximum bipartite matching: an attestor takes another of
// its keys when that frees one for another attestor). It returns the
// verification of each paired attestor, in the attestors' order, and a
// reason for each attestor that verified but could not be paired.
func count(attestors []*attestor, hits [][]hit) (by []audit.Verification, spare []string) {
	owner := map[string]int{} // key -> attestor paired with it
	paired := make([]int, len(attestors))
	var augment func(i int, seen map[string]bool) bool
	augment = func(i int, seen map[string]bool) bool {
		for j, h := range hits[i] {
			if seen[h.signer] {
				continue
			}
			seen[h.signer] = true
			if o, taken := owner[h.signer]; !taken || augment(o, seen) {
				owner[h.signer], paired[i] = i, j
				return true
			}
		}
		return false
	}
	ok := make([]bool, len(attestors))
	for i := range attestors {
		ok[i] = augment(i, map[string]bool{})
	}
	for i, a := range attestors {
		switch {
		case ok[i] && owner[hits[i][paired[i]].signer] == i:
			by = append(by, hits[i][paired[i]].v)
		case len(hits[i]) > 0:
			other := attestors[owner[hits[i][0].signer]].name
			spare = append(spare, fmt.Sprintf("attestor %s verified only with key %s, which already counts for attestor %s: a key counts once toward the threshold", a.name, short(hits[i][0].signer), other))
		}
	}
	return by, spare
}
