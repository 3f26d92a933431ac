package jobspec

import (
	"testing"
)

// FuzzParse feeds arbitrary bytes to the parser and validator: they must
// return diagnostics, never panic, and never return a spec alongside errors.
// Run: go test ./jobspec -run '^$' -fuzz FuzzParse -fuzztime 60s
func FuzzParse(f *testing.F) {
	// Seeds stay small: the fuzzer minimises every new interesting input,
	// and with the multi-kilobyte examples as seeds it spent whole runs
	// minimising instead of executing. The examples are parsed by their own
	// tests.
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
