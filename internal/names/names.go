// Package names holds SageMaker's resource name rule, which serai applies to
// every model, endpoint config, endpoint, variant and artifact store. The
// spec validator, the Vault policy writer and the router (on its hot path,
// for the endpoint in each request URL) share this one implementation. It
// knows nothing else.
package names

// Pattern is the rule as SageMaker documents it.
const Pattern = `^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$`

// Valid reports whether s matches Pattern: letters, digits and hyphens,
// starting and ending with a letter or digit, at most 63 letters and digits
// (hyphens are unbounded, as in the pattern). It does not allocate, so the
// router can check request paths with it.
func Valid(s string) bool {
	if s == "" || s[0] == '-' || s[len(s)-1] == '-' {
		return false
	}
	alnum := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
			alnum++
		case c == '-':
		default:
			return false
		}
	}
	return alnum <= 63
}
