package jobspec

import (
	"fmt"
	"io"
	"os"
	"sort"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/gohcl"
	"github.com/hashicorp/hcl/v2/hclparse"
)

// Parser parses spec files and keeps their sources so diagnostics can be
// printed with snippets.
type Parser struct {
	p *hclparse.Parser
}

// NewParser returns an empty parser.
func NewParser() *Parser { return &Parser{p: hclparse.NewParser()} }

// Files returns the parsed sources by file name, for diagnostic writers.
func (p *Parser) Files() map[string]*hcl.File { return p.p.Files() }

// ParseFiles reads and parses every path, then validates the union. The Spec
// is nil whenever the diagnostics hold an error: callers never see a partly
// valid spec.
func (p *Parser) ParseFiles(paths ...string) (*Spec, hcl.Diagnostics) {
	srcs := make([]Source, 0, len(paths))
	var diags hcl.Diagnostics
	for _, path := range paths {
		b, err := os.ReadFile(path)
		if err != nil {
			diags = append(diags, &hcl.Diagnostic{
				Severity: hcl.DiagError,
				Summary:  "Cannot read spec file",
				Detail:   fmt.Sprintf("%s: %v", path, err),
			})
			continue
		}
		srcs = append(srcs, Source{Name: path, Bytes: b})
	}
	if diags.HasErrors() {
		return nil, diags
	}
	return p.Parse(srcs...)
}

// Source is one spec file's name and content.
type Source struct {
	Name  string
	Bytes []byte
}

// Parse parses and validates the given sources as one spec.
func (p *Parser) Parse(srcs ...Source) (*Spec, hcl.Diagnostics) {
	var diags hcl.Diagnostics
	var files []*file
	for _, src := range srcs {
		f, ds := p.p.ParseHCL(src.Bytes, src.Name)
		diags = append(diags, ds...)
		if ds.HasErrors() || f == nil {
			continue
		}
		var decoded file
		ds = gohcl.DecodeBody(f.Body, nil, &decoded)
		diags = append(diags, ds...)
		if ds.HasErrors() {
			continue
		}
		for _, v := range decoded.EndpointConfigs {
			for _, sv := range v.ShadowVariants {
				sv.Shadow = true
			}
		}
		files = append(files, &decoded)
	}
	if diags.HasErrors() {
		return nil, diags
	}
	spec, ds := assemble(files)
	diags = append(diags, ds...)
	diags = append(diags, validate(spec)...)
	if diags.HasErrors() {
		return nil, sortDiags(diags)
	}
	return spec, diags
}

// Parse is a convenience for one in-memory source.
func Parse(name string, src []byte) (*Spec, hcl.Diagnostics) {
	return NewParser().Parse(Source{Name: name, Bytes: src})
}

// WriteDiagnostics prints diagnostics in HCL's own format (file:line,col
// with a source snippet).
func (p *Parser) WriteDiagnostics(w io.Writer, diags hcl.Diagnostics) error {
	wr := hcl.NewDiagnosticTextWriter(w, p.Files(), 100, false)
	return wr.WriteDiagnostics(diags)
}

// assemble merges files into one Spec, reporting duplicate names.
func assemble(files []*file) (*Spec, hcl.Diagnostics) {
	s := &Spec{
		ArtifactStores:  map[string]*ArtifactStore{},
		Models:          map[string]*Model{},
		EndpointConfigs: map[string]*EndpointConfig{},
		Endpoints:       map[string]*Endpoint{},
	}
	var diags hcl.Diagnostics
	dup := func(kind, name string, first, again hcl.Range) {
		diags = append(diags, &hcl.Diagnostic{
			Severity: hcl.DiagError,
			Summary:  fmt.Sprintf("Duplicate %s name", kind),
			Detail:   fmt.Sprintf("A %s named %q is already declared at %s. Names must be unique across all spec files.", kind, name, first),
			Subject:  again.Ptr(),
		})
	}
	for _, f := range files {
		for _, o := range f.ArtifactStores {
			if prev, ok := s.ArtifactStores[o.Name]; ok {
				dup("artifact_store", o.Name, prev.DefRange, o.DefRange)
				continue
			}
			s.ArtifactStores[o.Name] = o
		}
		for _, o := range f.Models {
			if prev, ok := s.Models[o.Name]; ok {
				dup("model", o.Name, prev.DefRange, o.DefRange)
				continue
			}
			s.Models[o.Name] = o
		}
		for _, o := range f.EndpointConfigs {
			if prev, ok := s.EndpointConfigs[o.Name]; ok {
				dup("endpoint_config", o.Name, prev.DefRange, o.DefRange)
				continue
			}
			s.EndpointConfigs[o.Name] = o
		}
		for _, o := range f.Endpoints {
			if prev, ok := s.Endpoints[o.Name]; ok {
				dup("endpoint", o.Name, prev.DefRange, o.DefRange)
				continue
			}
			s.Endpoints[o.Name] = o
		}
	}
	return s, diags
}

// sortDiags orders diagnostics by file and position so output is stable
// whatever order map iteration visited the objects in.
func sortDiags(diags hcl.Diagnostics) hcl.Diagnostics {
	sort.SliceStable(diags, func(i, j int) bool {
		a, b := diags[i].Subject, diags[j].Subject
		switch {
		case a == nil && b == nil:
			return false
		case a == nil:
			return true
		case b == nil:
			return false
		case a.Filename != b.Filename:
			return a.Filename < b.Filename
		case a.Start.Byte != b.Start.Byte:
			return a.Start.Byte < b.Start.Byte
		}
		return diags[i].Summary < diags[j].Summary
	})
	return diags
}

// SortedNames returns a map's keys in order, for deterministic iteration.
func SortedNames[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// Validate checks a Spec built by other means than parsing (the control
// plane builds one from API records) with the same rules Parse applies.
// Diagnostics have no source position then; their Detail names the object
// and field.
func Validate(s *Spec) hcl.Diagnostics {
	return sortDiags(validate(s))
}

// Details lists the errors' texts without source positions, for callers
// whose input was not a file (the API): each Detail already names the
// object and field.
func Details(diags hcl.Diagnostics) []string {
	var out []string
	for _, d := range diags {
		if d.Severity != hcl.DiagError {
			continue
		}
		if d.Detail != "" {
			out = append(out, d.Detail)
		} else {
			out = append(out, d.Summary)
		}
	}
	return out
}
