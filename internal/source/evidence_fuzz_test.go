package source

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/authz-proxy/authz-proxy/internal/oci"
	"github.com/authz-proxy/authz-proxy/internal/store"
	"github.com/authz-proxy/authz-proxy/internal/upstream"
)

// FuzzAnEvidenceNoteReadFromTheStore feeds the offline answer whatever a
// store may hold as a note: it answers with what a note of the digest,
// place and kind asked for holds, or not at all; it never panics, and
// every layer it answers with is counted.
func FuzzAnEvidenceNoteReadFromTheStore(f *testing.F) {
	const digest = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	good, _ := json.Marshal(note{Digest: digest, Place: "tags", Kind: signaturesKind,
		Signatures: []oci.Signature{{Source: "tag x.sig", Payload: []byte("{}"), Signature: []byte("sig")}}, Problems: []string{"p"}})
	for _, seed := range [][]byte{good, []byte(`{"digest":"` + digest + `","place":"referrers","kind":"signatures"}`), []byte(`null`), []byte(`{"signatures":[{"Payload":"!!"}]}`)} {
		f.Add(seed)
	}
	d, err := store.NewDriver(context.Background(), store.InMemory, nil)
	if err != nil {
		f.Fatal(err)
	}
	st, err := store.New(context.Background(), store.Options{Driver: d, MaxSize: 1 << 30, Owner: "fuzz", SweepInterval: time.Hour})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { st.Close() })
	c, err := upstream.New(upstream.Options{Name: "lab", URL: "http://127.0.0.1:1", Insecure: true})
	if err != nil {
		f.Fatal(err)
	}
	src, err := New(Options{Upstream: c, Store: st})
	if err != nil {
		f.Fatal(err)
	}
	ctx := context.Background()
	want := oci.Want{Signatures: true, From: oci.TagSchemes}
	f.Fuzz(func(t *testing.T, doc []byte) {
		st.PutNote(src.scope("acme/app"), digest, noteKey("tags", signaturesKind), doc)
		for deadline := time.Now().Add(time.Minute); st.Stats().WritesInFlight > 0; time.Sleep(10 * time.Microsecond) {
			if time.Now().After(deadline) {
				t.Fatal("the note was not written")
			}
		}
		ev, ok := src.storedEvidence(ctx, "acme/app", digest, want)
		if !ok {
			return
		}
		var n note
		if err := json.Unmarshal(doc, &n); err != nil || n.Digest != digest || n.Place != "tags" || n.Kind != signaturesKind {
			t.Fatalf("answered from a note of another digest, place or kind: %q", doc)
		}
		if ev.SignatureLayers != len(ev.Signatures) || len(ev.Attestations) != 0 {
			t.Fatalf("answered %d signatures counting %d layers, %d attestations", len(ev.Signatures), ev.SignatureLayers, len(ev.Attestations))
		}
	})
}
