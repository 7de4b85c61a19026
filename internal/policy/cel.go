package policy

import (
	"cmp"
	"context"
	"fmt"
	"maps"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"time"

	"cel.dev/cel-go/cel"
	celast "cel.dev/cel-go/common/ast"
	"cel.dev/cel-go/common/types"
	"cel.dev/cel-go/common/types/ref"
	"cel.dev/cel-go/ext"

	"github.com/authz-proxy/authz-proxy/internal/audit"
	"github.com/authz-proxy/authz-proxy/internal/vuln"
)

// ConditionCostLimit bounds the work of one condition evaluation on one
// attestation, in CEL cost units (about one per value visited). A condition
// that needs more is an error, and so a deny.
const ConditionCostLimit = 1_000_000

// ImageVars is the `image` variable of a condition: the image being judged.
type ImageVars struct {
	Upstream   string `cel:"upstream"`
	Repository string `cel:"repository"`
	Digest     string `cel:"digest"`
	// Tag is the tag the client asked for, "" when it asked by digest.
	Tag string `cel:"tag"`
}

// CertificateVars is the `certificate` variable of a condition: the
// certificate that signed the attestation, verified, by the field names of
// a keyless attestor's `certificate` (Fulcio's names). A field the
// certificate does not carry, and every field of an attestation signed
// with a key, is "".
type CertificateVars struct {
	Issuer                              string `cel:"issuer"`
	Subject                             string `cel:"subject"`
	GithubWorkflowTrigger               string `cel:"githubWorkflowTrigger"`
	GithubWorkflowSHA                   string `cel:"githubWorkflowSHA"`
	GithubWorkflowName                  string `cel:"githubWorkflowName"`
	GithubWorkflowRepository            string `cel:"githubWorkflowRepository"`
	GithubWorkflowRef                   string `cel:"githubWorkflowRef"`
	BuildSignerURI                      string `cel:"buildSignerURI"`
	BuildSignerDigest                   string `cel:"buildSignerDigest"`
	RunnerEnvironment                   string `cel:"runnerEnvironment"`
	SourceRepositoryURI                 string `cel:"sourceRepositoryURI"`
	SourceRepositoryDigest              string `cel:"sourceRepositoryDigest"`
	SourceRepositoryRef                 string `cel:"sourceRepositoryRef"`
	SourceRepositoryIdentifier          string `cel:"sourceRepositoryIdentifier"`
	SourceRepositoryOwnerURI            string `cel:"sourceRepositoryOwnerURI"`
	SourceRepositoryOwnerIdentifier     string `cel:"sourceRepositoryOwnerIdentifier"`
	BuildConfigURI                      string `cel:"buildConfigURI"`
	BuildConfigDigest                   string `cel:"buildConfigDigest"`
	BuildTrigger                        string `cel:"buildTrigger"`
	RunInvocationURI                    string `cel:"runInvocationURI"`
	SourceRepositoryVisibilityAtSigning string `cel:"sourceRepositoryVisibilityAtSigning"`
	DeploymentEnvironment               string `cel:"deploymentEnvironment"`
}

// FindingVars is one element of the `findings` and `suppressed`
// variables of a condition: a finding of a vulnerability scan, the same
// whatever scanner (Trivy, Grype, SARIF) reported it.
type FindingVars struct {
	ID      string   `cel:"id"`
	Aliases []string `cel:"aliases"`
	// Severity is NONE, LOW, MEDIUM, HIGH, CRITICAL or UNKNOWN.
	Severity     string `cel:"severity"`
	Package      string `cel:"package"`
	Version      string `cel:"version"`
	PURL         string `cel:"purl"`
	FixedVersion string `cel:"fixedVersion"`
	Fixable      bool   `cel:"fixable"`
	// SuppressedBy is "vex" or "exception" for a suppressed finding, ""
	// otherwise; Note says what a vulnerabilities requirement made of it.
	SuppressedBy string `cel:"suppressedBy"`
	Note         string `cel:"note"`
}

// findingVars is f, judged as row, for a condition.
func findingVars(f *vuln.Finding, row FindingRow) FindingVars {
	v := FindingVars{ID: f.ID, Aliases: f.Aliases, Severity: f.Severity.String(), Package: f.Package, Version: f.Version,
		PURL: f.PURL, FixedVersion: f.FixedVersion, Fixable: f.Fixable, Note: row.Note}
	if v.Aliases == nil {
		v.Aliases = []string{}
	}
	switch row.Status {
	case StatusSuppressed:
		v.SuppressedBy = audit.SuppressedByVEX
	case StatusExcepted:
		v.SuppressedBy = audit.SuppressedByException
	}
	return v
}

// withFindings is a copy of vars with findings and suppressed set.
func withFindings(vars map[string]any, findings, suppressed []FindingVars) map[string]any {
	out := maps.Clone(vars)
	out["findings"], out["suppressed"] = nonNil(findings), nonNil(suppressed)
	return out
}

func nonNil(fs []FindingVars) []FindingVars {
	if fs == nil {
		return []FindingVars{}
	}
	return fs
}

// certificateVars fills CertificateVars from the fields verify reads.
func certificateVars(fields map[string]string) CertificateVars {
	var c CertificateVars
	v := reflect.ValueOf(&c).Elem()
	for i := range v.NumField() {
		v.Field(i).SetString(fields[v.Type().Field(i).Tag.Get("cel")])
	}
	return c
}

// conditionEnv is the CEL environment of attestation conditions, built once.
var conditionEnv = sync.OnceValues(func() (*cel.Env, error) {
	return cel.NewEnv(
		ext.NativeTypes(reflect.TypeFor[ImageVars](), reflect.TypeFor[CertificateVars](), reflect.TypeFor[FindingVars](), ext.ParseStructTags(true)),
		cel.Variable("predicate", cel.DynType),
		cel.Variable("predicateType", cel.StringType),
		cel.Variable("subject", cel.ListType(cel.MapType(cel.StringType, cel.DynType))),
		cel.Variable("image", cel.ObjectType("policy.ImageVars")),
		cel.Variable("certificate", cel.ObjectType("policy.CertificateVars")),
		cel.Variable("now", cel.TimestampType),
		cel.Variable("client", cel.MapType(cel.StringType, cel.DynType)),
		cel.Variable("findings", cel.ListType(cel.ObjectType("policy.FindingVars"))),
		cel.Variable("suppressed", cel.ListType(cel.ObjectType("policy.FindingVars"))),
		cel.OptionalTypes(), ext.Strings(), ext.Lists(), ext.Sets(), ext.Math(),
		cel.Function("semverCompare",
			cel.Overload("semverCompare_string_string", []*cel.Type{cel.StringType, cel.StringType}, cel.IntType,
				cel.BinaryBinding(semverCompareBinding))),
	)
})

// condition is one compiled attestation condition.
type condition struct {
	text    string
	program cel.Program
	// readsTag is true when the condition may read image.tag: its value
	// then depends on how the image was asked for.
	readsTag bool
	// readsClient is true when it reads client: its value then depends on
	// who asks.
	readsClient bool
}

// compileCondition type-checks text in the condition environment. Its
// errors name the column (and the line, for a condition of several lines).
func compileCondition(text string) (*condition, error) {
	env, err := conditionEnv()
	if err != nil {
		return nil, err
	}
	ast, iss := env.Compile(text)
	if iss.Err() != nil {
		var msgs []string
		for _, e := range iss.Errors() {
			where := fmt.Sprintf("column %d", e.Location.Column()+1)
			if e.Location.Line() > 1 {
				where = fmt.Sprintf("line %d, column %d", e.Location.Line(), e.Location.Column()+1)
			}
			msgs = append(msgs, where+": "+e.Message)
		}
		return nil, fmt.Errorf("CEL: %s", strings.Join(msgs, "; "))
	}
	if t := ast.OutputType(); !t.IsExactType(cel.BoolType) && !t.IsExactType(cel.DynType) {
		return nil, fmt.Errorf("CEL: the condition is a %s; it must be true or false", t)
	}
	prg, err := env.Program(ast, cel.CostLimit(ConditionCostLimit), cel.InterruptCheckFrequency(100))
	if err != nil {
		return nil, fmt.Errorf("CEL: %v", err)
	}
	return &condition{text: strings.TrimSpace(text), program: prg, readsTag: readsTag(ast), readsClient: readsIdent(ast, "client")}, nil
}

// readsTag reports whether a checked condition may read image.tag: it does
// unless every use of the variable image selects one of its other fields.
func readsTag(checked *cel.Ast) bool {
	uses, otherFields := 0, 0
	celast.PreOrderVisit(checked.NativeRep().Expr(), celast.NewExprVisitor(func(e celast.Expr) {
		switch e.Kind() {
		case celast.IdentKind:
			if e.AsIdent() == "image" {
				uses++
			}
		case celast.SelectKind:
			sel := e.AsSelect()
			if op := sel.Operand(); op.Kind() == celast.IdentKind && op.AsIdent() == "image" && sel.FieldName() != "tag" {
				otherFields++
			}
		}
	}))
	return uses > otherFields
}

// readsIdent reports whether a checked condition names the variable name.
func readsIdent(checked *cel.Ast, name string) bool {
	found := false
	celast.PreOrderVisit(checked.NativeRep().Expr(), celast.NewExprVisitor(func(e celast.Expr) {
		if e.Kind() == celast.IdentKind && e.AsIdent() == name {
			found = true
		}
	}))
	return found
}

// clientVars is the `client` variable of a condition: who asks for the
// image (principal, "" for nobody) and the claims of the token it
// authenticated with (empty for other credentials).
func clientVars(c Client) map[string]any {
	claims := c.Claims
	if claims == nil {
		claims = map[string]any{}
	}
	return map[string]any{"principal": c.Principal, "claims": claims}
}

// eval runs the condition on vars. A result other than true or false, an
// exceeded cost limit, or any runtime error is an error.
func (c *condition) eval(ctx context.Context, vars map[string]any) (bool, error) {
	out, _, err := c.program.ContextEval(ctx, vars)
	if err != nil {
		return false, err
	}
	b, ok := out.Value().(bool)
	if !ok {
		return false, fmt.Errorf("the condition gave %s %v, not true or false", out.Type().TypeName(), out.Value())
	}
	return b, nil
}

func semverCompareBinding(a, b ref.Val) ref.Val {
	x, err := parseSemver(string(a.(types.String)))
	if err != nil {
		return types.NewErr("semverCompare: %v", err)
	}
	y, err := parseSemver(string(b.(types.String)))
	if err != nil {
		return types.NewErr("semverCompare: %v", err)
	}
	return types.Int(x.compare(y))
}

// semver is a version MAJOR[.MINOR[.PATCH]][-PRERELEASE][+BUILD], with an
// optional leading v: semantic versioning, lenient about missing parts.
type semver struct {
	nums [3]uint64
	pre  []string
}

func parseSemver(s string) (semver, error) {
	var v semver
	rest, _, _ := strings.Cut(strings.TrimPrefix(s, "v"), "+")
	core, pre, hasPre := strings.Cut(rest, "-")
	parts := strings.Split(core, ".")
	if len(parts) > 3 || core == "" {
		return v, fmt.Errorf("%q is not a version MAJOR.MINOR.PATCH", s)
	}
	for i, p := range parts {
		n, err := strconv.ParseUint(p, 10, 64)
		if err != nil {
			return v, fmt.Errorf("%q is not a version MAJOR.MINOR.PATCH", s)
		}
		v.nums[i] = n
	}
	if hasPre {
		if pre == "" {
			return v, fmt.Errorf("%q has an empty pre-release", s)
		}
		v.pre = strings.Split(pre, ".")
	}
	return v, nil
}

// compare is -1, 0 or 1 by semantic-versioning precedence: a pre-release
// sorts before its release.
func (v semver) compare(w semver) int {
	for i := range v.nums {
		if c := cmp.Compare(v.nums[i], w.nums[i]); c != 0 {
			return c
		}
	}
	switch {
	case len(v.pre) == 0 && len(w.pre) == 0:
		return 0
	case len(v.pre) == 0:
		return 1
	case len(w.pre) == 0:
		return -1
	}
	for i := 0; i < len(v.pre) && i < len(w.pre); i++ {
		a, b := v.pre[i], w.pre[i]
		an, aErr := strconv.ParseUint(a, 10, 64)
		bn, bErr := strconv.ParseUint(b, 10, 64)
		var c int
		switch {
		case aErr == nil && bErr == nil:
			c = cmp.Compare(an, bn)
		case aErr == nil: // numeric identifiers sort first
			c = -1
		case bErr == nil:
			c = 1
		default:
			c = cmp.Compare(a, b)
		}
		if c != 0 {
			return c
		}
	}
	return cmp.Compare(len(v.pre), len(w.pre))
}

// conditionVars is the activation of a condition for one attestation.
func conditionVars(predicate any, predicateType string, subject []map[string]any, img ImageVars, cert CertificateVars, client map[string]any, now time.Time) map[string]any {
	return map[string]any{
		"client":        client,
		"predicate":     predicate,
		"predicateType": predicateType,
		"subject":       subject,
		"image":         img,
		"certificate":   cert,
		"now":           now,
		"findings":      []FindingVars{},
		"suppressed":    []FindingVars{},
	}
}
