package jobspec

import (
	"os"
	"path/filepath"
	"testing"
)

// FuzzParse feeds arbitrary bytes to the parser and validator: they must
// return diagnostics, never panic, and never return a spec alongside errors.
// Run: go test ./jobspec -run '^$' -fuzz FuzzParse -fuzztime 60s -fuzzminimizetime 1s
// (the default minimisation budget, 60 s per new input, starves the run).
func FuzzParse(f *testing.F) {
	paths, _ := filepath.Glob("../examples/*.hcl")
	for _, p := range paths {
		if b, err := os.ReadFile(p); err == nil {
			f.Add(b)
		}
	}
	f.Add([]byte(baseStore + baseModel + cfg(oneVariant)))
	f.Add([]byte(`model "x" { command = "/x" environment = { "A-B" = 1 } }`))
	f.Add([]byte(`endpoint_config "c" { variant "a" { model = "m" instance_type = "ml.m5.large" instance_count = 1e400 } }`))
	f.Add([]byte("model \"\xff\" {}"))
	f.Fuzz(func(t *testing.T, src []byte) {
		spec, diags := Parse("fuzz.hcl", src)
		if diags.HasErrors() && spec != nil {
			t.Fatalf("spec returned alongside errors: %s", diags.Error())
		}
		if !diags.HasErrors() && spec == nil {
			t.Fatal("no spec and no error")
		}
	})
}
