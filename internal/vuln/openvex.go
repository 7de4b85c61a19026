package vuln

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"
)

// The predicate types of OpenVEX attestations: `cosign attest --type
// openvex` writes the first, `vexctl attest` the second.
const (
	OpenVEXPredicateType     = "https://openvex.dev/ns"
	OpenVEXPredicateTypeV020 = "https://openvex.dev/ns/v0.2.0"
)

// OpenVEXPredicateTypes lists them.
var OpenVEXPredicateTypes = []string{OpenVEXPredicateType, OpenVEXPredicateTypeV020}

// Status is a VEX statement's status.
type Status string

// The statuses of OpenVEX v0.2.0.
const (
	NotAffected        Status = "not_affected"
	Affected           Status = "affected"
	Fixed              Status = "fixed"
	UnderInvestigation Status = "under_investigation"
)

// Suppresses reports whether a statement of this status takes a finding
// off the list: not_affected and fixed do.
func (s Status) Suppresses() bool { return s == NotAffected || s == Fixed }

var justifications = []string{
	"component_not_present", "vulnerable_code_not_present", "vulnerable_code_not_in_execute_path",
	"vulnerable_code_cannot_be_controlled_by_adversary", "inline_mitigations_already_exist",
}

// VEX is an OpenVEX v0.2.0 document.
type VEX struct {
	ID, Author string
	Timestamp  time.Time
	Statements []Statement
}

// Statement is one VEX statement: the status of one vulnerability in the
// products it lists.
type Statement struct {
	// Vulnerability is vulnerability.name; Aliases its @id and aliases.
	Vulnerability string
	Aliases       []string
	// Products are what it is about; none means the subjects of the
	// attestation that carries it.
	Products []Product
	Status   Status
	// Justification and ImpactStatement say why a not_affected holds.
	Justification, ImpactStatement string
	// Timestamp is the statement's own time, else the document's.
	Timestamp time.Time
}

// Component names software: by an IRI (@id, often a package URL), by
// identifiers (purl, cpe22, cpe23) or by hashes.
type Component struct {
	ID          string            `json:"@id"`
	Identifiers map[string]string `json:"identifiers"`
	Hashes      map[string]string `json:"hashes"`
}

// Product is a component with, optionally, the subcomponents (packages in
// it) a statement is restricted to.
type Product struct {
	Component
	Subcomponents []Component `json:"subcomponents"`
}

// ParseOpenVEX reads an OpenVEX v0.2.0 document (the predicate of an
// OpenVEX attestation) strictly in what a decision rests on: its
// @context, its timestamp, and each statement's vulnerability, products,
// status and, for not_affected, its justification or impact statement.
// Errors wrap ErrMalformed.
func ParseOpenVEX(raw []byte) (*VEX, error) {
	var d struct {
		Context    string     `json:"@context"`
		ID         string     `json:"@id"`
		Author     string     `json:"author"`
		Timestamp  *time.Time `json:"timestamp"`
		Statements []struct {
			Vulnerability *struct {
				ID      string   `json:"@id"`
				Name    string   `json:"name"`
				Aliases []string `json:"aliases"`
			} `json:"vulnerability"`
			Products        []Product  `json:"products"`
			Status          Status     `json:"status"`
			Justification   string     `json:"justification"`
			ImpactStatement string     `json:"impact_statement"`
			Timestamp       *time.Time `json:"timestamp"`
		} `json:"statements"`
	}
	if err := json.Unmarshal(raw, &d); err != nil {
		return nil, fmt.Errorf("%w: OpenVEX: %v", ErrMalformed, err)
	}
	switch {
	case d.Context != OpenVEXPredicateTypeV020 && d.Context != OpenVEXPredicateType:
		return nil, fmt.Errorf("%w: OpenVEX @context %q: only %s documents are read", ErrMalformed, d.Context, OpenVEXPredicateTypeV020)
	case d.Timestamp == nil || d.Timestamp.IsZero():
		return nil, fmt.Errorf("%w: OpenVEX document has no timestamp", ErrMalformed)
	}
	v := &VEX{ID: d.ID, Author: d.Author, Timestamp: *d.Timestamp}
	for i, s := range d.Statements {
		bad := func(format string, args ...any) error {
			return fmt.Errorf("%w: OpenVEX statements[%d]%s", ErrMalformed, i, fmt.Sprintf(format, args...))
		}
		if s.Vulnerability == nil || strings.TrimSpace(s.Vulnerability.Name) == "" {
			return nil, bad(" has no vulnerability.name")
		}
		switch s.Status {
		case NotAffected:
			if s.Justification == "" && s.ImpactStatement == "" {
				return nil, bad(": status not_affected needs a justification or an impact_statement")
			}
		case Affected, Fixed, UnderInvestigation:
		default:
			return nil, bad(": status %q: want not_affected, affected, fixed or under_investigation", s.Status)
		}
		if s.Justification != "" && !slices.Contains(justifications, s.Justification) {
			return nil, bad(": justification %q: want one of %s", s.Justification, strings.Join(justifications, ", "))
		}
		for j, p := range s.Products {
			if p.empty() {
				return nil, bad(".products[%d] names nothing (no @id, identifiers or hashes)", j)
			}
			for k, sc := range p.Subcomponents {
				if sc.empty() {
					return nil, bad(".products[%d].subcomponents[%d] names nothing (no @id, identifiers or hashes)", j, k)
				}
			}
		}
		st := Statement{
			Vulnerability: strings.TrimSpace(s.Vulnerability.Name), Products: s.Products, Status: s.Status,
			Justification: s.Justification, ImpactStatement: s.ImpactStatement, Timestamp: v.Timestamp,
		}
		if s.Vulnerability.ID != "" {
			st.Aliases = append(st.Aliases, s.Vulnerability.ID)
		}
		st.Aliases = append(st.Aliases, s.Vulnerability.Aliases...)
		if s.Timestamp != nil && !s.Timestamp.IsZero() {
			st.Timestamp = *s.Timestamp
		}
		v.Statements = append(v.Statements, st)
	}
	return v, nil
}

func (c *Component) empty() bool { return c.ID == "" && len(c.Identifiers) == 0 && len(c.Hashes) == 0 }

// Names reports whether the statement is about f's vulnerability: its
// name, @id or an alias is f's id or one of f's aliases.
func (s *Statement) Names(f *Finding) bool {
	return f.Names(s.Vulnerability) || slices.ContainsFunc(s.Aliases, f.Names)
}

// Covers reports whether the statement applies to f in the image of
// digest ("sha256:<hex>"), carried in an attestation about that digest:
// it lists no product (the attestation's subject is the product), or a
// product that names the digest — as pkg:oci/<name>@sha256:<hex>, an
// image reference or the digest itself, or by its sha-256 hash — and,
// when that product lists subcomponents, one of them is f's package. A
// product that names the image without a digest names no particular
// image and does not count.
func (s *Statement) Covers(digest string, f *Finding) bool {
	if len(s.Products) == 0 {
		return true
	}
	for i := range s.Products {
		p := &s.Products[i]
		if !p.namesDigest(digest) {
			continue
		}
		if len(p.Subcomponents) == 0 || slices.ContainsFunc(p.Subcomponents, func(c Component) bool { return c.namesPackage(f) }) {
			return true
		}
	}
	return false
}

func (c *Component) ids() []string {
	ids := []string{c.ID}
	for _, id := range c.Identifiers {
		ids = append(ids, id)
	}
	return ids
}

func (c *Component) namesDigest(digest string) bool {
	_, hex, _ := strings.Cut(digest, ":")
	for alg, h := range c.Hashes {
		if (alg == "sha-256" || alg == "sha256") && strings.EqualFold(h, hex) {
			return true
		}
	}
	for _, id := range c.ids() {
		if p, ok := parsePURL(id); ok {
			if p.typ == "oci" && strings.EqualFold(p.version, digest) {
				return true
			}
			continue
		}
		if strings.EqualFold(id, digest) || strings.HasSuffix(strings.ToLower(id), "@"+strings.ToLower(digest)) {
			return true
		}
	}
	return false
}

// namesPackage reports whether the component is f's package: a package
// URL of the same package (and version, when it names one), or f's name.
func (c *Component) namesPackage(f *Finding) bool {
	fp, hasPURL := parsePURL(f.PURL)
	for _, id := range c.ids() {
		if id == "" {
			continue
		}
		p, ok := parsePURL(id)
		switch {
		case ok && hasPURL:
			if p.samePackage(fp) {
				return true
			}
		case ok:
			if p.name == f.Package && (p.version == "" || p.version == f.Version) {
				return true
			}
		case id == f.Package || id == f.PURL:
			return true
		}
	}
	return false
}
