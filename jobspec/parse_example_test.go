package jobspec

import (
	"os"
	"path/filepath"
	"testing"
)

func TestExamplesParse(t *testing.T) {
	paths, _ := filepath.Glob("../examples/*.hcl")
	if len(paths) < 3 {
		t.Fatalf("want at least 3 examples, found %v", paths)
	}
	for _, p := range paths {
		p := p
		t.Run(filepath.Base(p), func(t *testing.T) {
			parser := NewParser()
			spec, diags := parser.ParseFiles(p)
			if diags.HasErrors() {
				parser.WriteDiagnostics(os.Stderr, diags)
				t.Fatal("example does not validate")
			}
			if len(spec.Endpoints) == 0 {
				t.Fatal("example declares no endpoint")
			}
		})
	}
}
