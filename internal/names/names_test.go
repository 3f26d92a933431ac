package names

import (
	"regexp"
	"strings"
	"testing"
)

var re = regexp.MustCompile(Pattern)

func TestValidMatchesPattern(t *testing.T) {
	good := []string{"a", "A9", "a-b", "a--b", strings.Repeat("a", 63), "a" + strings.Repeat("-", 100) + "b"}
	bad := []string{"", "-a", "a-", "a_b", "a.b", "ä", strings.Repeat("a", 64), "a b", "a\x00"}
	for _, s := range good {
		if !Valid(s) || !re.MatchString(s) {
			t.Errorf("%q rejected", s)
		}
	}
	for _, s := range bad {
		if Valid(s) || re.MatchString(s) {
			t.Errorf("%q accepted", s)
		}
	}
}

// FuzzValid: the hand-written check and SageMaker's regular expression
// agree on every input.
func FuzzValid(f *testing.F) {
	for _, s := range []string{"a", "a-b", "-", "a_b", strings.Repeat("a", 64)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if Valid(s) != re.MatchString(s) {
			t.Fatalf("Valid(%q) = %v, pattern says %v", s, Valid(s), re.MatchString(s))
		}
	})
}

func BenchmarkValid(b *testing.B) {
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		Valid("churn-prediction-2026")
	}
}
