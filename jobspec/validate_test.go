package jobspec

import (
	"fmt"
	"strings"
	"testing"

	"github.com/hashicorp/hcl/v2"
)

// base is a valid spec; each case appends or replaces text to break one rule.
const baseStore = `
artifact_store "st" {
  endpoint   = "http://127.0.0.1:9000"
  path_style = true
}
`

const baseModel = `
model "m" {
  artifact       = "s3://bucket/m.tar.gz"
  artifact_store = "st"
  command        = "/bin/server"
}
`

func cfg(variants string) string {
	return fmt.Sprintf(`
endpoint_config "c" {
%s
}
endpoint "e" {
  config = "c"
}
`, variants)
}

const oneVariant = `
  variant "a" {
    model         = "m"
    instance_type = "ml.m5.large"
  }`

func TestValidSpec(t *testing.T) {
	spec, diags := Parse("ok.hcl", []byte(baseStore+baseModel+cfg(oneVariant)))
	if diags.HasErrors() {
		t.Fatal(diags.Error())
	}
	if got := spec.Endpoints["e"].Config; got != "c" {
		t.Fatalf("config = %q", got)
	}
	if got := spec.ArtifactStores["st"].CredentialPath(); got != "secret/data/serai/stores/st" {
		t.Fatalf("credential path = %q", got)
	}
}

// TestValidationRules: one malformed spec per rule; each must fail with a
// message naming the field at the right line and column.
func TestValidationRules(t *testing.T) {
	cases := []struct {
		name    string
		src     string
		summary string // diagnostic summary must contain this
		detail  string // and the detail this
		line    int    // 1-based line of the subject
		col     int
	}{
		{"unknown attribute", baseStore + baseModel + cfg(oneVariant) + "\nmodel \"x\" {\n  colour = \"red\"\n  command = \"/x\"\n}\n",
			"Unsupported argument", `"colour"`, 25, 3},
		{"unknown block", baseStore + baseModel + cfg(oneVariant) + "\nwidget \"x\" {}\n",
			"Unsupported block type", `"widget"`, 24, 1},
		{"bad model name", baseStore + strings.Replace(baseModel, `model "m"`, `model "-m"`, 1) + cfg(strings.Replace(oneVariant, `"m"`, `"-m"`, 1)),
			"Invalid model name", `"-m"`, 7, 1},
		{"name too long", baseStore + baseModel + strings.Replace(cfg(oneVariant), `"e"`, `"`+strings.Repeat("e", 64)+`"`, 1),
			"Invalid endpoint name", "at most 63", 20, 1},
		{"bad variant name", baseStore + baseModel + cfg(strings.Replace(oneVariant, `variant "a"`, `variant "a_b"`, 1)),
			"Invalid variant name", `"a_b"`, 15, 3},
		{"store for a file artifact", baseStore + strings.Replace(baseModel, "s3://bucket/m.tar.gz", "file:///secrets/store.env", 1) + cfg(oneVariant),
			"Invalid artifact_store", "s3:// artifacts only", 9, 20},
		{"store for an https artifact", baseStore + strings.Replace(baseModel, "s3://bucket/m.tar.gz", "https://example.test/m.tar.gz", 1) + cfg(oneVariant),
			"Invalid artifact_store", "s3:// artifacts only", 9, 20},
		{"bad allowed principal", strings.Replace(baseStore, "path_style = true", "path_style = true\n  allowed_principals = [\"a b\"]", 1) + baseModel + cfg(oneVariant),
			"Invalid allowed_principals", `"a b"`, 5, 24},
		{"duplicate model", baseStore + baseModel + baseModel + cfg(oneVariant),
			"Duplicate model name", `already declared at ok.hcl:7`, 13, 1},
		{"duplicate variant", baseStore + baseModel + cfg(oneVariant+oneVariant),
			"Duplicate variant name", `"a"`, 19, 3},
		{"unknown model reference", baseStore + baseModel + cfg(strings.Replace(oneVariant, `model         = "m"`, `model         = "nope"`, 1)),
			"Unknown model", `"nope"`, 16, 21},
		{"unknown config reference", baseStore + baseModel + strings.Replace(cfg(oneVariant), `config = "c"`, `config = "zz"`, 1),
			"Unknown config", `"zz"`, 21, 12},
		{"unknown store reference", baseStore + strings.Replace(baseModel, `artifact_store = "st"`, `artifact_store = "nostore"`, 1) + cfg(oneVariant),
			"Unknown artifact_store", `"nostore"`, 9, 20},
		{"negative weight", baseStore + baseModel + cfg(strings.Replace(oneVariant, "ml.m5.large\"", "ml.m5.large\"\n    weight = -1", 1)),
			"Invalid weight", "must not be negative", 18, 14},
		{"all weights zero", baseStore + baseModel + cfg(strings.Replace(oneVariant, "ml.m5.large\"", "ml.m5.large\"\n    weight = 0", 1)),
			"Invalid weight", "all production variants are zero", 18, 14},
		{"instance count zero", baseStore + baseModel + cfg(strings.Replace(oneVariant, "ml.m5.large\"", "ml.m5.large\"\n    instance_count = 0", 1)),
			"Invalid instance_count", "only with autoscaling min_capacity = 0", 18, 22},
		{"instance count negative", baseStore + baseModel + cfg(strings.Replace(oneVariant, "ml.m5.large\"", "ml.m5.large\"\n    instance_count = -2", 1)),
			"Invalid instance_count", "at least 1", 18, 22},
		{"min greater than max", baseStore + baseModel + cfg(strings.Replace(oneVariant, "ml.m5.large\"", "ml.m5.large\"\n    autoscaling {\n      min_capacity = 5\n      max_capacity = 2\n      target_invocations_per_instance = 10\n    }", 1)),
			"Invalid min_capacity", "greater than max_capacity 2", 19, 22},
		{"count outside autoscaling", baseStore + baseModel + cfg(strings.Replace(oneVariant, "ml.m5.large\"", "ml.m5.large\"\n    instance_count = 9\n    autoscaling {\n      min_capacity = 1\n      max_capacity = 2\n      target_invocations_per_instance = 10\n    }", 1)),
			"Invalid instance_count", "outside autoscaling", 18, 22},
		{"unknown instance type", baseStore + baseModel + cfg(strings.Replace(oneVariant, "ml.m5.large", "ml.m5.huge", 1)),
			"Unknown instance_type", `"ml.m5.huge"`, 17, 21},
		{"malformed duration", baseStore + strings.Replace(baseModel, `command        = "/bin/server"`, "command = \"/bin/server\"\n  download_timeout = \"ten minutes\"", 1) + cfg(oneVariant),
			"Invalid download_timeout", `"ten minutes"`, 11, 22},
		{"malformed deployment duration", baseStore + baseModel + strings.Replace(cfg(oneVariant), `config = "c"`, "config = \"c\"\n  deployment {\n    wait_interval = \"5 min\"\n  }", 1),
			"Invalid wait_interval", `"5 min"`, 23, 21},
		{"bad url scheme", baseStore + strings.Replace(baseModel, "s3://bucket/m.tar.gz", "ftp://host/m.tar.gz", 1) + cfg(oneVariant),
			"Invalid artifact", "s3://, https:// or file://", 8, 20},
		{"s3 url without key", baseStore + strings.Replace(baseModel, "s3://bucket/m.tar.gz", "s3://bucket", 1) + cfg(oneVariant),
			"Invalid artifact", "s3://bucket/key", 8, 20},
		{"relative file url", baseStore + strings.Replace(baseModel, "s3://bucket/m.tar.gz", "file://models/m.tar.gz", 1) + cfg(oneVariant),
			"Invalid artifact", "file:///absolute/path", 8, 20},
		{"too many variants", baseStore + baseModel + cfg(manyVariants(11)),
			"Too many variants", "at most 10", 13, 1},
		{"bad sha256", baseStore + strings.Replace(baseModel, `command        = "/bin/server"`, "command = \"/bin/server\"\n  sha256 = \"abc\"", 1) + cfg(oneVariant),
			"Invalid sha256", "64 lower-case hex", 11, 12},
		{"image and command", baseStore + strings.Replace(baseModel, `command        = "/bin/server"`, "command = \"/bin/server\"\n  image = \"x:1\"", 1) + cfg(oneVariant),
			"Conflicting image and command", `model "m"`, 10, 13},
		{"credentials in environment", baseStore + strings.Replace(baseModel, `command        = "/bin/server"`, "command = \"/bin/server\"\n  environment = { AWS_SECRET_ACCESS_KEY = \"x\" }", 1) + cfg(oneVariant),
			"Invalid environment", "reserved", 11, 17},
		{"canary without size", baseStore + baseModel + strings.Replace(cfg(oneVariant), `config = "c"`, "config = \"c\"\n  deployment {\n    strategy = \"canary\"\n  }", 1),
			"Missing canary_size", "canary_size", 23, 16},
		{"unknown strategy", baseStore + baseModel + strings.Replace(cfg(oneVariant), `config = "c"`, "config = \"c\"\n  deployment {\n    strategy = \"yolo\"\n  }", 1),
			"Invalid strategy", `"yolo"`, 23, 16},
		{"wrong type", baseStore + baseModel + cfg(strings.Replace(oneVariant, "ml.m5.large\"", "ml.m5.large\"\n    instance_count = \"many\"", 1)),
			"Unsuitable value type", "a number is required", 18, 23},
		{"missing required attribute", baseStore + baseModel + cfg(strings.Replace(oneVariant, `    instance_type = "ml.m5.large"`+"\n", "", 1)),
			"Missing required argument", `"instance_type"`, 15, 15},
		{"syntax error", baseStore + baseModel + "model \"x\" {\n  command = \n}\n",
			"Invalid expression", "", 13, 13},
		{"variables not allowed", baseStore + strings.Replace(baseModel, `"/bin/server"`, `var.server`, 1) + cfg(oneVariant),
			"Variables not allowed", "", 10, 20},
		{"weight on shadow", baseStore + baseModel + cfg(oneVariant+"\n  shadow_variant \"s\" {\n    model = \"m\"\n    instance_type = \"ml.m5.large\"\n    weight = 1\n  }"),
			"Invalid weight", "sampling_percent", 22, 14},
		{"capture mode", baseStore + baseModel + cfg(oneVariant+"\n  data_capture {\n    destination = \"file:///tmp/cap\"\n    capture = [\"headers\"]\n  }"),
			"Invalid capture", `"headers"`, 21, 15},
		{"reserved endpoint name", baseStore + baseModel + strings.Replace(cfg(oneVariant), `endpoint "e"`, `endpoint "router"`, 1),
			"Reserved endpoint name", "serai-router", 20, 1},
		{"reserved endpoint name server", baseStore + baseModel + strings.Replace(cfg(oneVariant), `endpoint "e"`, `endpoint "Server"`, 1),
			"Reserved endpoint name", "serai-server", 20, 1},
		{"store endpoint", strings.Replace(baseStore, "http://127.0.0.1:9000", "127.0.0.1:9000", 1) + baseModel + cfg(oneVariant),
			"Invalid endpoint", "http:// or https://", 3, 16},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			spec, diags := Parse("ok.hcl", []byte(tc.src))
			if !diags.HasErrors() {
				t.Fatalf("want an error, got none")
			}
			if spec != nil {
				t.Fatalf("a spec with errors must not be returned")
			}
			d := find(diags, tc.summary)
			if d == nil {
				t.Fatalf("no diagnostic with summary %q; got:\n%s", tc.summary, diags.Error())
			}
			if !strings.Contains(d.Detail, tc.detail) {
				t.Errorf("detail %q does not contain %q", d.Detail, tc.detail)
			}
			if d.Subject == nil {
				t.Fatalf("diagnostic has no position: %s", d.Error())
			}
			if d.Subject.Filename != "ok.hcl" || d.Subject.Start.Line != tc.line || d.Subject.Start.Column != tc.col {
				t.Errorf("position = %s:%d,%d; want ok.hcl:%d,%d (%s)", d.Subject.Filename, d.Subject.Start.Line, d.Subject.Start.Column, tc.line, tc.col, d.Error())
			}
		})
	}
}

func find(diags hcl.Diagnostics, summary string) *hcl.Diagnostic {
	for _, d := range diags {
		if strings.Contains(d.Summary, summary) {
			return d
		}
	}
	return nil
}

func manyVariants(n int) string {
	var b strings.Builder
	for i := 0; i < n; i++ {
		fmt.Fprintf(&b, "  variant \"v%d\" {\n    model = \"m\"\n    instance_type = \"ml.m5.large\"\n  }\n", i)
	}
	return b.String()
}

func TestDuplicateAcrossFiles(t *testing.T) {
	p := NewParser()
	_, diags := p.Parse(
		Source{Name: "a.hcl", Bytes: []byte(baseStore + baseModel + cfg(oneVariant))},
		Source{Name: "b.hcl", Bytes: []byte(baseModel)},
	)
	d := find(diags, "Duplicate model name")
	if d == nil || d.Subject.Filename != "b.hcl" || !strings.Contains(d.Detail, "a.hcl:7") {
		t.Fatalf("want duplicate reported in b.hcl pointing at a.hcl:7, got %v", diags)
	}
}

func TestReferenceAcrossFiles(t *testing.T) {
	p := NewParser()
	spec, diags := p.Parse(
		Source{Name: "models.hcl", Bytes: []byte(baseStore + baseModel)},
		Source{Name: "endpoints.hcl", Bytes: []byte(cfg(oneVariant))},
	)
	if diags.HasErrors() {
		t.Fatal(diags.Error())
	}
	if len(spec.Models) != 1 || len(spec.Endpoints) != 1 {
		t.Fatalf("spec = %+v", spec)
	}
}

func TestZeroCountWithAutoscalingMinZero(t *testing.T) {
	src := baseStore + baseModel + cfg(strings.Replace(oneVariant, "ml.m5.large\"", "ml.m5.large\"\n    instance_count = 0\n    autoscaling {\n      min_capacity = 0\n      max_capacity = 3\n      target_invocations_per_instance = 100\n    }", 1))
	if _, diags := Parse("ok.hcl", []byte(src)); diags.HasErrors() {
		t.Fatal(diags.Error())
	}
}
