package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

func runCLI(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := run(append([]string{"serai"}, args...), &out, &errb)
	return code, out.String(), errb.String()
}

func TestRenderExample(t *testing.T) {
	code, out, errs := runCLI(t, "render", "../../examples/two-variants.hcl")
	if code != exitOK {
		t.Fatalf("exit %d: %s", code, errs)
	}
	var doc struct{ Job map[string]any }
	if err := json.Unmarshal([]byte(out), &doc); err != nil || doc.Job["ID"] != "serai-churn.g1" {
		t.Fatalf("render output is not {\"Job\":...}: %v %.200s", err, out)
	}
}

// TestMalformedSpecsFailCleanly: every bad spec exits non-zero, prints a
// positioned message (file:line,col) on stderr and nothing on stdout.
func TestMalformedSpecsFailCleanly(t *testing.T) {
	dir := t.TempDir()
	bad := map[string]string{
		"syntax.hcl":    "model \"m\" {\n  command = \n}\n",
		"unknown.hcl":   "model \"m\" {\n  command = \"/x\"\n  colour = 1\n}\n",
		"reference.hcl": "endpoint_config \"c\" {\n  variant \"a\" {\n    model = \"missing\"\n    instance_type = \"ml.m5.large\"\n  }\n}\n",
		"name.hcl":      "model \"bad_name\" {\n  command = \"/x\"\n}\n",
		"weights.hcl":   "model \"m\" {\n  command = \"/x\"\n}\nendpoint_config \"c\" {\n  variant \"a\" {\n    model = \"m\"\n    instance_type = \"ml.m5.large\"\n    weight = -3\n  }\n}\n",
	}
	pos := regexp.MustCompile(`on [^ ]+\.hcl line \d+`)
	for name, src := range bad {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(src), 0o644); err != nil {
			t.Fatal(err)
		}
		for _, cmd := range []string{"validate", "render"} {
			code, out, errs := runCLI(t, cmd, p)
			if code != exitValidation {
				t.Errorf("%s %s: exit %d, want %d", cmd, name, code, exitValidation)
			}
			if out != "" {
				t.Errorf("%s %s: wrote to stdout: %q", cmd, name, out)
			}
			if !pos.MatchString(errs) || !strings.Contains(errs, "Error: ") {
				t.Errorf("%s %s: no positioned error on stderr:\n%s", cmd, name, errs)
			}
		}
	}
}

func TestUsageErrors(t *testing.T) {
	if code, out, _ := runCLI(t, "render"); code != exitUsage || out != "" {
		t.Errorf("render without files: exit %d out %q", code, out)
	}
	if code, _, errs := runCLI(t, "render", "--endpoint", "nope", "../../examples/gpu.hcl"); code != exitUsage || !strings.Contains(errs, "nope") {
		t.Errorf("unknown endpoint: exit %d %s", code, errs)
	}
	if code, _, _ := runCLI(t, "render", "--no-such-flag", "../../examples/gpu.hcl"); code != exitUsage {
		t.Errorf("unknown flag: exit %d", code)
	}
	if code, _, errs := runCLI(t, "validate", "/nonexistent/spec.hcl"); code != exitValidation || !strings.Contains(errs, "/nonexistent/spec.hcl") {
		t.Errorf("missing file: exit %d %s", code, errs)
	}
}

func TestHelpAndVersion(t *testing.T) {
	if code, out, _ := runCLI(t, "--version"); code != exitOK || !strings.Contains(out, version) {
		t.Errorf("--version: %d %q", code, out)
	}
	for _, c := range newApp().Commands {
		code, out, errs := runCLI(t, c.Name, "--help")
		if code != exitOK || !strings.Contains(out, c.Name) {
			t.Errorf("%s --help: exit %d out %q err %q", c.Name, code, out, errs)
		}
	}
}

func TestInstanceTypes(t *testing.T) {
	code, out, _ := runCLI(t, "instance-types")
	if code != exitOK || !strings.Contains(out, "ml.m5.large") || !strings.Contains(out, "ml.g5.xlarge") {
		t.Fatalf("instance-types: %d\n%s", code, out)
	}
}
