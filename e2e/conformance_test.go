//go:build e2e

package e2e_test

import (
	"encoding/json"
	"regexp"
	"strings"
	"testing"
)

// TestOCIConformancePullSuite runs the OCI distribution-spec conformance
// suite (read side, no pushes) against the proxy, on a signed image and its
// cosign signature manifest, the latter asked for by digest: a genuine
// signature artifact is served however it is asked for.
func TestOCIConformancePullSuite(t *testing.T) {
	signed := lab.img.signed.String()
	sigDigest, err := crane(t, "digest", "--insecure", lab.reg+"/e2e/app:"+sigTag(lab.img.signed))
	mustSucceed(t, "crane digest of the .sig manifest", sigDigest, err)
	sigDigest = strings.TrimSpace(sigDigest)
	var blobs []string
	for _, ref := range []string{"e2e/app@" + signed, "e2e/app@" + sigDigest} {
		raw, err := crane(t, "manifest", "--insecure", lab.reg+"/"+ref)
		mustSucceed(t, "crane manifest "+ref, raw, err)
		var m struct {
			Config struct{ Digest string }   `json:"config"`
			Layers []struct{ Digest string } `json:"layers"`
		}
		if err := json.Unmarshal([]byte(raw), &m); err != nil {
			t.Fatal(err)
		}
		blobs = append(blobs, m.Config.Digest)
		for _, l := range m.Layers {
			blobs = append(blobs, l.Digest)
		}
	}
	results := t.TempDir()
	env := []string{
		"OCI_REGISTRY=" + lab.main.addr, "OCI_TLS=disabled",
		"OCI_REPO1=lab/e2e/app", "OCI_REPO2=lab/e2e/app",
		"OCI_VERSION=1.1", "OCI_RESULTS_DIR=" + results, "OCI_LOG=warn",
		"OCI_API_PUSH=false", "OCI_API_BLOBS_DELETE=false", "OCI_API_MANIFESTS_DELETE=false", "OCI_API_TAGS_DELETE=false",
		"OCI_RO_DATA_TAGS=signed",
		"OCI_RO_DATA_MANIFESTS=" + signed + " " + sigDigest,
		"OCI_RO_DATA_BLOBS=" + strings.Join(blobs, " "),
		"OCI_RO_DATA_REFERRERS=" + signed,
	}
	// This version of the suite panics while writing results.yaml after a
	// read-only run (a nil data entry in ReportResultsYAML), once the
	// summary is printed: the summary is what is checked.
	out, _ := lab.tool(t.Context(), env, "conformance")
	summary := regexp.MustCompile(`OCI Conformance Result: (\w+)[\s\S]*?Pass\.+:\s+(\d+)\s+FAIL\.+:\s+(\d+)\s+Error\.+:\s+(\d+)`).FindStringSubmatch(out)
	if summary == nil || summary[1] != "Pass" || summary[3] != "0" || summary[4] != "0" {
		t.Fatalf("the conformance suite did not pass through the proxy:\n%s", tail(out, 6000))
	}
	for _, api := range []string{"Manifest get by digest", "Manifest get by tag", "Manifest head by digest", "Manifest head by tag", "Blob get", "Blob head", "Referrers", "Tag listing"} {
		if !regexp.MustCompile(regexp.QuoteMeta(api) + `\.+:\s+Pass`).MatchString(out) {
			t.Errorf("%s did not pass:\n%s", api, tail(out, 3000))
		}
	}
	t.Logf("%s of the conformance suite's read tests passed through the proxy, the .sig manifest %s among the inputs", summary[2], sigDigest)
}
