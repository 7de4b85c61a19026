package vuln_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/authz-proxy/authz-proxy/internal/vuln"
)

const (
	digest = "sha256:1111111111111111111111111111111111111111111111111111111111111111"
	other  = "sha256:2222222222222222222222222222222222222222222222222222222222222222"
)

func vexDoc(products string) string {
	return `{"@context": "https://openvex.dev/ns/v0.2.0", "@id": "https://acme.example/vex/1", "author": "Acme",
	  "timestamp": "2026-05-01T00:00:00Z", "version": 1,
	  "statements": [{"vulnerability": {"name": "CVE-2026-0001", "aliases": ["GHSA-2222-3333-4444"]}, ` + products + `
	    "status": "not_affected", "justification": "vulnerable_code_not_in_execute_path"}]}`
}

func TestAVEXStatementCoversAFindingOnlyInTheImageItNames(t *testing.T) {
	openssl := &vuln.Finding{ID: "CVE-2026-0001", Package: "openssl", Version: "3.0.1", PURL: "pkg:deb/debian/openssl@3.0.1?distro=debian-12"}
	for _, tt := range []struct {
		name, products string
		covers         bool
	}{
		{"no product: the attestation's subject", ``, true},
		{"pkg:oci purl with this digest", `"products": [{"@id": "pkg:oci/app@sha256%3A1111111111111111111111111111111111111111111111111111111111111111?repository_url=ghcr.io/acme/app"}],`, true},
		{"image reference by this digest", `"products": [{"@id": "ghcr.io/acme/app@` + digest + `"}],`, true},
		{"purl identifier with this digest", `"products": [{"identifiers": {"purl": "pkg:oci/app@` + digest + `"}}],`, true},
		{"sha-256 hash of this digest", `"products": [{"hashes": {"sha-256": "1111111111111111111111111111111111111111111111111111111111111111"}}],`, true},
		{"subcomponent that is the finding's package", `"products": [{"@id": "pkg:oci/app@` + digest + `", "subcomponents": [{"@id": "pkg:deb/debian/openssl"}]}],`, true},
		{"another digest", `"products": [{"@id": "pkg:oci/app@` + other + `"}],`, false},
		{"the image without a digest", `"products": [{"@id": "pkg:oci/app?repository_url=ghcr.io/acme/app"}],`, false},
		{"a subcomponent that is another package", `"products": [{"@id": "pkg:oci/app@` + digest + `", "subcomponents": [{"@id": "pkg:deb/debian/zlib"}]}],`, false},
		{"a subcomponent of another version", `"products": [{"@id": "pkg:oci/app@` + digest + `", "subcomponents": [{"@id": "pkg:deb/debian/openssl@3.0.2"}]}],`, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			v, err := vuln.ParseOpenVEX([]byte(vexDoc(tt.products)))
			if err != nil {
				t.Fatal(err)
			}
			s := &v.Statements[0]
			if !s.Names(openssl) || !s.Names(&vuln.Finding{ID: "GHSA-2222-3333-4444"}) || s.Names(&vuln.Finding{ID: "CVE-2026-0002"}) {
				t.Errorf("Names is wrong for %+v", s)
			}
			if got := s.Covers(digest, openssl); got != tt.covers {
				t.Errorf("Covers = %v, want %v", got, tt.covers)
			}
		})
	}
}

func TestABadVEXDocumentIsAnErrorThatSaysWhatIsWrong(t *testing.T) {
	good := vexDoc("")
	for _, tt := range []struct{ name, input, want string }{
		{"not JSON", `{"@context": `, "OpenVEX"},
		{"an older version", strings.Replace(good, "ns/v0.2.0", "ns/v0.0.2", 1), `@context "https://openvex.dev/ns/v0.0.2": only https://openvex.dev/ns/v0.2.0 documents are read`},
		{"no timestamp", strings.Replace(good, `"timestamp": "2026-05-01T00:00:00Z",`, "", 1), "has no timestamp"},
		{"an unknown status", strings.Replace(good, `"not_affected"`, `"fine"`, 1), `statements[0]: status "fine"`},
		{"not_affected without a justification", strings.Replace(good, `, "justification": "vulnerable_code_not_in_execute_path"`, "", 1), "needs a justification or an impact_statement"},
		{"an unknown justification", strings.Replace(good, "vulnerable_code_not_in_execute_path", "trust_me", 1), `justification "trust_me"`},
		{"no vulnerability name", strings.Replace(good, `"name": "CVE-2026-0001", `, "", 1), "statements[0] has no vulnerability.name"},
		{"a product that names nothing", vexDoc(`"products": [{"supplier": "x"}],`), "statements[0].products[0] names nothing"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := vuln.ParseOpenVEX([]byte(tt.input))
			if !errors.Is(err, vuln.ErrMalformed) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("err = %v, want %q", err, tt.want)
			}
		})
	}
}
