package api

import (
	"regexp"
	"strings"

	"github.com/seraihq/serai/internal/names"
	"github.com/seraihq/serai/jobspec"
	"github.com/seraihq/serai/server/smapi"
	"github.com/seraihq/serai/server/translate"
)

const namePatternMsg = "Member must satisfy regular expression pattern: " + names.Pattern

// name checks a required resource name member.
func (f *fieldErrors) name(path, v string) {
	switch {
	case v == "":
		f.null(path)
	case !names.Valid(v):
		f.bad(path, v, namePatternMsg)
	}
}

// optName checks an optional name member.
func (f *fieldErrors) optName(path, v string) {
	if v != "" && !names.Valid(v) {
		f.bad(path, v, namePatternMsg)
	}
}

// tagRE is SageMaker's pattern for tag keys and values.
var tagRE = regexp.MustCompile(`^([\p{L}\p{Z}\p{N}_.:/=+\-@]*)$`)

func (f *fieldErrors) tags(path string, tags []smapi.Tag) {
	if len(tags) > smapi.MaxTagsPerResource {
		f.bad(path, len(tags), "Member must have length less than or equal to 50")
	}
	seen := map[string]bool{}
	for i, t := range tags {
		p := member(path, i)
		switch {
		case t.Key == "":
			f.bad(p+".key", t.Key, "Member must have length greater than or equal to 1")
		case len(t.Key) > smapi.MaxTagKeyLength:
			f.bad(p+".key", t.Key, "Member must have length less than or equal to 128")
		case !tagRE.MatchString(t.Key):
			f.bad(p+".key", t.Key, `Member must satisfy regular expression pattern: ^([\p{L}\p{Z}\p{N}_.:/=+\-@]*)$`)
		case strings.HasPrefix(strings.ToLower(t.Key), "aws:"):
			f.bad(p+".key", t.Key, "Member must not start with the reserved prefix aws:")
		case seen[t.Key]:
			f.bad(p+".key", t.Key, "Member must be unique within the list")
		}
		seen[t.Key] = true
		switch {
		case len(t.Value) > smapi.MaxTagValueLength:
			f.bad(p+".value", t.Value, "Member must have length less than or equal to 256")
		case !tagRE.MatchString(t.Value):
			f.bad(p+".value", t.Value, `Member must satisfy regular expression pattern: ^([\p{L}\p{Z}\p{N}_.:/=+\-@]*)$`)
		}
	}
}

// semantic validates records-to-be with jobspec's rules, through the one
// translation the reconciler compiles with, so the API accepts exactly
// what a spec file may say. The error lists each problem; each names the
// object and field.
func semantic(in translate.Input) *apiError {
	spec, err := translate.ToSpec(in)
	if err != nil {
		return validationf("%s", err.Error())
	}
	diags := jobspec.Validate(spec)
	if !diags.HasErrors() {
		return nil
	}
	d := jobspec.Details(diags)
	if len(d) == 1 {
		return validationf("1 validation error detected: %s", d[0])
	}
	return validationf("%d validation errors detected: %s", len(d), strings.Join(d, "; "))
}
