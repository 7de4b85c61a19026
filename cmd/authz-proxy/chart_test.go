package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"maps"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"gopkg.in/yaml.v3"

	"github.com/authz-proxy/authz-proxy/internal/config"
)

// The chart's values.schema.json is generated here: its config part from
// the configuration's own Go types (every field, no other: an unknown
// field is refused as validate refuses it), with the constraints below
// that JSON Schema can say; its other part from chartValuesSchema. Run
// `go test ./cmd/authz-proxy -run TestChartValuesSchema -update-chart-schema`
// after changing either.

var updateChartSchema = flag.Bool("update-chart-schema", false, "rewrite deploy/helm/authz-proxy/values.schema.json")

const chartDir = "deploy/helm/authz-proxy"

type schema = map[string]any

var (
	durationType = reflect.TypeFor[time.Duration]()
	timeType     = reflect.TypeFor[time.Time]()
)

// durationPattern is what time.ParseDuration takes (yaml.v3 reads a
// Duration with it).
const durationPattern = `^[-+]?(0|(([0-9]+(\.[0-9]*)?|\.[0-9]+)(ns|us|µs|μs|ms|s|m|h))+)$`

func enum(vs ...string) schema { return schema{"enum": vs} }

func required(fields ...string) schema { return schema{"required": fields} }

// exactlyOne is true of an object that sets exactly one of fields.
func exactlyOne(fields ...string) schema {
	var one []any
	for _, f := range fields {
		one = append(one, schema{"required": []string{f}})
	}
	return schema{"oneOf": one}
}

// configConstraints are what validate refuses that JSON Schema can say,
// by the path of the field (a list's items as []).
var configConstraints = map[string]schema{
	"upstreams":                                      {"minItems": 1},
	"upstreams[]":                                    {"required": []string{"name", "url"}, "if": schema{"not": schema{"required": []string{"insecure"}, "properties": schema{"insecure": schema{"const": true}}}}, "then": schema{"properties": schema{"url": schema{"pattern": "^https://"}}}},
	"upstreams[].name":                               {"pattern": `^[A-Za-z0-9][A-Za-z0-9._:-]*$`},
	"upstreams[].url":                                {"pattern": `^https?://[^/?#@]+/?$`},
	"upstreams[].auth":                               {"required": []string{"username"}, "oneOf": exactlyOne("passwordFile", "passwordEnv")["oneOf"]},
	"upstreams[].immutableTags[]":                    {"pattern": `^[A-Za-z0-9_*][A-Za-z0-9._*-]{0,127}$`, "not": schema{"pattern": `^\**$`}},
	"listen.tls":                                     required("certFile", "keyFile"),
	"metrics":                                        required("addr"),
	"audit.checkpoint":                               required("keyFile"),
	"environments[]":                                 required("name", "clients"),
	"environments[].clients":                         {"minItems": 1},
	"environments[].clients[]":                       {"minProperties": 1, "maxProperties": 1},
	"clients":                                        {"anyOf": []any{required("htpasswd"), required("tokens"), schema{"properties": schema{"certificates": schema{"const": true}}, "required": []string{"certificates"}}}},
	"clients.tokens[]":                               required("name", "issuer"),
	"cache.maxEntries":                               {"minimum": 0},
	"store":                                          required("driver", "maxSize"),
	"store.driver":                                   enum(config.StoreFilesystem, config.StoreS3, config.StoreInMemory),
	"store.maxSize":                                  {"pattern": `^\s*([0-9]+(\.[0-9]+)?)\s*([KMGT]i?B|B)?\s*$`},
	"attestors[]":                                    {"required": []string{"name"}, "oneOf": exactlyOne("publicKeys", "keyless", "notation")["oneOf"]},
	"attestors[].publicKeys":                         {"minItems": 1},
	"attestors[].publicKeys[]":                       exactlyOne("file", "pem"),
	"attestors[].keyless":                            {"not": required("subject", "subjectRegexp")},
	"attestors[].notation":                           required("trustStore", "trustedIdentities"),
	"attestors[].notation.level":                     enum(config.NotationStrict, config.NotationPermissive, config.NotationAudit),
	"attestors[].notation.verifyTimestamp":           enum(config.TimestampAlways, config.TimestampAfterCertExpiry),
	"policy.enforcement":                             enum(config.Enforce, config.DryRun),
	"policy.breakglass[]":                            required("image", "expires", "reason"),
	"policy.rules[]":                                 required("name", "images"),
	"policy.rules[].images":                          {"minItems": 1},
	"policy.rules[].enforcement":                     enum(config.Enforce, config.DryRun),
	"policy.rules[].action":                          enum(config.ActionAllow, config.ActionDeny, config.ActionVerify),
	"policy.rules[].require[]":                       {"minProperties": 1, "maxProperties": 1},
	"policy.rules[].require[].signature":             required("attestors"),
	"policy.rules[].require[].signature.attestors":   {"minItems": 1},
	"policy.rules[].require[].signature.threshold":   {"minimum": 1},
	"policy.rules[].require[].attestation":           required("predicateType", "attestors"),
	"policy.rules[].require[].attestation.attestors": {"minItems": 1},
	"policy.rules[].require[].attestation.threshold": {"minimum": 1},
	"policy.default.action":                          enum(config.ActionAllow, config.ActionDeny, config.ActionVerify),
	"policy.default.enforcement":                     enum(config.Enforce, config.DryRun),
}

// typeSchema is the schema of values of t, the field at path.
func typeSchema(t reflect.Type, path string, used map[string]bool) schema {
	var s schema
	switch t {
	case durationType:
		s = schema{"type": "string", "pattern": durationPattern}
	case timeType:
		s = schema{"type": "string", "pattern": `^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$`}
	default:
		switch t.Kind() {
		case reflect.Pointer:
			return typeSchema(t.Elem(), path, used)
		case reflect.Struct:
			props := schema{}
			for i := range t.NumField() {
				f := t.Field(i)
				name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
				if !f.IsExported() || name == "-" || name == "" {
					continue
				}
				props[name] = typeSchema(f.Type, strings.TrimPrefix(path+"."+name, "."), used)
			}
			s = schema{"type": "object", "additionalProperties": false, "properties": props}
		case reflect.Slice:
			s = schema{"type": "array", "items": typeSchema(t.Elem(), path+"[]", used)}
		case reflect.Map:
			s = schema{"type": "object", "additionalProperties": typeSchema(t.Elem(), path+"{}", used)}
		case reflect.String:
			s = schema{"type": "string"}
		case reflect.Bool:
			s = schema{"type": "boolean"}
		case reflect.Int, reflect.Int64, reflect.Int32:
			s = schema{"type": "integer"}
		case reflect.Float64:
			s = schema{"type": "number"}
		default:
			panic("no schema for " + t.String() + " at " + path)
		}
	}
	if c, ok := configConstraints[path]; ok {
		used[path] = true
		maps.Copy(s, c)
	}
	return s
}

func obj(props schema) schema {
	return schema{"type": "object", "additionalProperties": false, "properties": props}
}

var (
	str     = schema{"type": "string"}
	boolean = schema{"type": "boolean"}
	integer = schema{"type": "integer"}
	// anyObject and anyList are Kubernetes fields passed through as given
	// (resources, tolerations, affinity, env): the API server checks them.
	anyObject = schema{"type": "object"}
	anyList   = schema{"type": "array"}
	duration  = schema{"type": "string", "pattern": durationPattern}
	quantity  = schema{"type": "string", "pattern": `^[0-9]+(\.[0-9]+)?([KMGTPE]i?|[mkMGTPE])?$`}
)

// chartValuesSchema is the schema of the chart's own values, config aside.
func chartValuesSchema() schema {
	secretRef := obj(schema{"secretName": str})
	return obj(schema{
		"mode": enum("service", "sidecar"),
		"image": obj(schema{
			"registry":   schema{"type": "string", "minLength": 1},
			"repository": schema{"type": "string", "minLength": 1},
			"tag":        str,
			"digest":     schema{"type": "string", "pattern": `^(sha256:[a-f0-9]{64})?$`},
			"pullPolicy": enum("Always", "IfNotPresent", "Never"),
		}),
		"imagePullSecrets": anyList,
		"config":           schema{"$ref": "#/$defs/config"},
		"files":            schema{"type": "object", "additionalProperties": str, "propertyNames": schema{"pattern": `^[^/.][^\\]*$`, "not": schema{"pattern": `(^|/)\.\.(/|$)`}}},
		"secretFiles": schema{"type": "array", "items": schema{
			"type": "object", "additionalProperties": false, "required": []string{"secretName", "items"},
			"properties": schema{"secretName": str, "items": schema{"type": "array", "minItems": 1, "items": schema{
				"type": "object", "additionalProperties": false, "required": []string{"key", "path"},
				"properties": schema{"key": str, "path": str, "mode": integer}}}},
		}},
		"env":                       anyList,
		"replicas":                  schema{"type": "integer", "minimum": 1},
		"podDisruptionBudget":       obj(schema{"enabled": boolean, "minAvailable": schema{"type": []string{"integer", "string"}}}),
		"topologySpreadConstraints": anyList,
		"resources":                 anyObject,
		"nodeSelector":              anyObject,
		"tolerations":               anyList,
		"affinity":                  anyObject,
		"podAnnotations":            anyObject,
		"priorityClassName":         str,
		"service": obj(schema{
			"type":        enum("ClusterIP", "NodePort", "LoadBalancer"),
			"clusterIP":   str,
			"port":        schema{"type": "integer", "minimum": 1, "maximum": 65535},
			"annotations": anyObject,
		}),
		"tls": obj(schema{
			"enabled":    boolean,
			"secretName": str,
			"certManager": obj(schema{
				"enabled":     boolean,
				"issuerRef":   obj(schema{"name": str, "kind": enum("Issuer", "ClusterIssuer")}),
				"dnsNames":    schema{"type": "array", "items": str},
				"ipAddresses": schema{"type": "array", "items": str},
				"duration":    duration,
			}),
			"clientCA": secretRef,
		}),
		"auditLog": obj(schema{"volume": obj(schema{
			"type":             enum("", "emptyDir", "persistentVolumeClaim"),
			"size":             quantity,
			"storageClassName": str,
		})}),
		"persistence": obj(schema{
			"enabled": boolean, "size": quantity, "storageClassName": str,
			"accessModes": schema{"type": "array", "items": enum("ReadWriteOnce", "ReadWriteMany", "ReadWriteOncePod")},
		}),
		"trustCache":    obj(schema{"enabled": boolean, "sizeLimit": quantity}),
		"networkPolicy": obj(schema{"enabled": boolean, "metricsFrom": anyList, "egress": anyList}),
		"metrics": obj(schema{
			"serviceMonitor":   obj(schema{"enabled": boolean, "interval": duration, "labels": anyObject}),
			"prometheusRule":   obj(schema{"enabled": boolean, "labels": anyObject}),
			"grafanaDashboard": obj(schema{"enabled": boolean, "labels": anyObject}),
		}),
		"nodes": obj(schema{
			"enabled":           boolean,
			"runtime":           enum("containerd", "cri-o"),
			"server":            schema{"type": "string", "pattern": `^(https?://[^/?#@]+/?)?$`},
			"hostDir":           schema{"type": "string", "pattern": `^(/.*)?$`},
			"criSocket":         schema{"type": "string", "pattern": `^(/.*)?$`},
			"ca":                obj(schema{"secretName": str, "key": str}),
			"clientCertSecret":  str,
			"tolerations":       anyList,
			"nodeSelector":      anyObject,
			"priorityClassName": str,
			"resources":         anyObject,
			"canary": obj(schema{
				"enabled":      boolean,
				"every":        duration,
				"allowedImage": str,
				"deniedImage":  schema{"type": "string", "minLength": 1},
				"port":         schema{"type": "integer", "minimum": 1, "maximum": 65535},
			}),
		}),
		"sidecar": obj(schema{"job": obj(schema{"backoffLimit": schema{"type": "integer", "minimum": 0}, "containers": anyList})}),
	})
}

func generatedChartSchema(t *testing.T) []byte {
	t.Helper()
	used := map[string]bool{}
	s := chartValuesSchema()
	s["$schema"] = "https://json-schema.org/draft/2020-12/schema"
	s["title"] = "authz-proxy chart values (generated by cmd/authz-proxy/chart_test.go)"
	s["$defs"] = schema{"config": typeSchema(reflect.TypeFor[config.Config](), "", used)}
	for path := range configConstraints {
		if !used[path] {
			t.Errorf("configConstraints[%q] names no field of the configuration", path)
		}
	}
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	return append(b, '\n')
}

func TestChartValuesSchemaIsGeneratedFromTheConfiguration(t *testing.T) {
	want := generatedChartSchema(t)
	path := filepath.Join(repoRoot, chartDir, "values.schema.json")
	if *updateChartSchema {
		if err := os.WriteFile(path, want, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s is not what the configuration's types give: run go test ./cmd/authz-proxy -run TestChartValuesSchema -update-chart-schema", path)
	}
}

func compileChartSchema(t *testing.T) *jsonschema.Schema {
	t.Helper()
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(readRepoFile(t, chartDir+"/values.schema.json")))
	if err != nil {
		t.Fatal(err)
	}
	c := jsonschema.NewCompiler()
	if err := c.AddResource("values.schema.json", doc); err != nil {
		t.Fatal(err)
	}
	s, err := c.Compile("values.schema.json")
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// asJSON is YAML as Helm hands it to the schema: JSON's types.
func asJSON(t *testing.T, y []byte) any {
	t.Helper()
	var v any
	if err := yaml.Unmarshal(y, &v); err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	out, err := jsonschema.UnmarshalJSON(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestChartValuesSchemaTakesTheShippedValuesAndConfigurations(t *testing.T) {
	s := compileChartSchema(t)
	files := []string{chartDir + "/values.yaml"}
	ci, _ := filepath.Glob(filepath.Join(repoRoot, chartDir, "ci", "*.yaml"))
	for _, f := range ci {
		rel, _ := filepath.Rel(repoRoot, f)
		files = append(files, rel)
	}
	for _, f := range files {
		if err := s.Validate(asJSON(t, readRepoFile(t, f))); err != nil {
			t.Errorf("%s: %v", f, err)
		}
	}
	// config.example.yaml, the complete configuration, as config.
	var example any
	if err := yaml.Unmarshal(readRepoFile(t, "config.example.yaml"), &example); err != nil {
		t.Fatal(err)
	}
	values, _ := yaml.Marshal(map[string]any{"config": example})
	if err := s.Validate(asJSON(t, values)); err != nil {
		t.Errorf("config.example.yaml as config: %v", err)
	}
}

// TestChartValuesSchemaRefusesWhatValidateRefuses gives the schema and
// validate the same broken configurations: each must refuse it.
func TestChartValuesSchemaRefusesWhatValidateRefuses(t *testing.T) {
	s := compileChartSchema(t)
	base := "upstreams: [{name: docker.io, url: https://registry-1.docker.io}]\n"
	for _, tc := range []struct{ name, config string }{
		{"an unknown field", base + "polcy: {}\n"},
		{"an unknown field of an upstream", "upstreams: [{name: docker.io, url: https://registry-1.docker.io, insecur: true}]\n"},
		{"no upstream", "upstreams: []\n"},
		{"an upstream name with a slash", "upstreams: [{name: docker.io/library, url: https://registry-1.docker.io}]\n"},
		{"plain http without insecure", "upstreams: [{name: lab, url: http://registry.lab:5000}]\n"},
		{"an upstream URL with a path", "upstreams: [{name: lab, url: https://registry.lab/v2}]\n"},
		{"a password from a file and the environment", "upstreams: [{name: lab, url: https://r.lab, auth: {username: u, passwordFile: p, passwordEnv: P}}]\n"},
		{"an enforcement that is neither", base + "policy: {enforcement: audit}\n"},
		{"a rule without images", base + "policy: {rules: [{name: r, action: allow}]}\n"},
		{"a rule action that does not exist", base + "policy: {rules: [{name: r, images: ['docker.io/**'], action: permit}]}\n"},
		{"a requirement of two kinds", base + "attestors: [{name: ci, publicKeys: [{pem: x}]}]\npolicy: {rules: [{name: r, images: ['docker.io/**'], require: [{signature: {attestors: [ci]}, attestation: {predicateType: vuln, attestors: [ci]}}]}]}\n"},
		{"a threshold of 0", base + "attestors: [{name: ci, publicKeys: [{pem: x}]}]\npolicy: {rules: [{name: r, images: ['docker.io/**'], require: [{signature: {attestors: [ci], threshold: 0}}]}]}\n"},
		{"an attestor of two kinds", base + "attestors: [{name: ci, publicKeys: [{pem: x}], keyless: {issuer: https://i, subject: s}}]\n"},
		{"a store of an unknown driver", base + "store: {driver: gcs, maxSize: 1GiB}\n"},
		{"a store without maxSize", base + "store: {driver: inmemory}\n"},
		{"a store size in furlongs", base + "store: {driver: inmemory, maxSize: 10 furlongs}\n"},
		{"a duration without a unit", base + "cache: {allowTTL: ten}\n"},
		{"a breakglass entry without a reason", base + "policy: {breakglass: [{image: docker.io/x, expires: '2030-01-01T00:00:00Z'}]}\n"},
		{"an environment client of two kinds", base + "environments: [{name: prod, clients: [{cn: a, cidr: 10.0.0.0/8}]}]\n"},
		{"every tag immutable", "upstreams: [{name: docker.io, url: https://registry-1.docker.io, immutableTags: ['*']}]\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var cfg any
			if err := yaml.Unmarshal([]byte(tc.config), &cfg); err != nil {
				t.Fatal(err)
			}
			values, _ := yaml.Marshal(map[string]any{"config": cfg})
			if err := s.Validate(asJSON(t, values)); err == nil {
				t.Errorf("the chart's schema takes it")
			}
			path := filepath.Join(t.TempDir(), "config.yaml")
			if err := os.WriteFile(path, []byte(tc.config), 0o600); err != nil {
				t.Fatal(err)
			}
			if out, _, code := runCmd(t, "validate", "--config", path); code == 0 {
				t.Errorf("validate takes it: %s", out)
			}
		})
	}
}
