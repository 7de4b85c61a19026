// Package source is what authz-proxy reads of one upstream, with or
// without the content store: the one thing the policy judge reads (a
// policy.Registry: manifests, evidence, artifact recognition) and the one
// thing the HTTP edge asks for a tag's digest, a manifest held, a blob, or
// a tags/list or referrers answer to relay. serve, check and replay read
// through it alike.
//
// What it owns:
//
//   - Tag resolution with a store (Resolve): an immutable tag from its last
//     resolution, else a HEAD, else, the upstream failing, the last known
//     digest within staleIfError.
//   - Manifests (Manifest, Fetch, Held): fetched once and hashed by the
//     upstream client, written through to the store, and read back from it,
//     checked against their digest, when the upstream fails.
//   - Evidence (Evidence): the upstream's answer, kept in the store as one
//     note per (digest, place, kind) — the tag schemes or the referrers; the
//     signatures, or the attestations of one predicate type — so that with
//     the upstream down any question about a digest is answered from every
//     note kept for it, whatever order the judge asks in.
//   - One artifact recognizer (Recognize, over oci.Recognize): layers from
//     the upstream, or from the store when it fails.
//   - Blobs (Blob): from the store when it holds them for the repository,
//     else one fill per digest from the upstream, else streamed through.
//   - The outage breaker: after the upstream failed, the store answers
//     first for a moment, so that an upstream that hangs costs one timeout
//     per pause, not one per request.
//   - The metrics of every upstream call it makes.
//
// What it must never do: decide anything (it knows no policy; the judge
// verifies whatever it reads, and the store holds what the upstream said,
// never a verdict), render HTTP errors (the edge does), or serve in one
// scope what was stored for another. The store keeps content per upstream
// and per kind (blob or manifest), and a repository reads only what its
// own upstream served there, confirms there, or named in a manifest of that
// repository through a field the registry validates at push (Served links
// an image manifest's config and layers, an index's manifests, and nothing
// else). It imports neither internal/proxy nor internal/policy; the store
// and the upstream client know nothing of it.
package source
