package policies

import (
	"context"
	"fmt"
	"slices"
	"strings"
)

// jwtAlgs are the algorithms Nomad signs workload identities with (RS256
// by default; EdDSA when configured). A function, so no caller can change
// the list another sees.
func jwtAlgs() []string { return []string{"RS256", "EdDSA"} }

// JWTAuthSettings is what `serai setup vault` wants the JWT auth method to
// look like.
type JWTAuthSettings struct {
	// NomadAddr is the Nomad HTTP API address Vault can reach,
	// e.g. https://nomad.service.consul:4646.
	NomadAddr string
	// CACertPEM validates Nomad's TLS certificate when it is not publicly
	// trusted; empty uses Vault's system roots.
	CACertPEM string
	// KVMounts are checked (not changed) to be KV v2 mounts.
	KVMounts []string
}

// JWKSURL is where Nomad publishes the keys that sign workload identities.
func (s JWTAuthSettings) JWKSURL() string {
	return strings.TrimRight(s.NomadAddr, "/") + "/.well-known/jwks.json"
}

// Change is one step of a plan: a write to path with data.
type Change struct {
	// Summary is one line for a person: what changes, and from what to what.
	Summary string
	Path    string
	Data    map[string]any
}

// JWTAuthPlan lists what must change, and what was checked and found fine
// or wrong but outside serai's remit (Notes).
type JWTAuthPlan struct {
	Mount   string
	Changes []Change
	OK      []string
	Notes   []string
}

// Empty reports that Vault is already set up.
func (p *JWTAuthPlan) Empty() bool { return len(p.Changes) == 0 }

// String renders the plan as `serai setup vault` prints it.
func (p *JWTAuthPlan) String() string {
	var b strings.Builder
	for _, ok := range p.OK {
		fmt.Fprintf(&b, "  ok      %s\n", ok)
	}
	for _, c := range p.Changes {
		fmt.Fprintf(&b, "  change  %s\n", c.Summary)
	}
	for _, n := range p.Notes {
		fmt.Fprintf(&b, "  note    %s\n", n)
	}
	return b.String()
}

// PlanJWTAuth compares Vault with what Nomad workload identities need: a
// JWT auth method at the writer's mount, validating tokens against Nomad's
// JWKS. It changes nothing.
func (w *VaultWriter) PlanJWTAuth(ctx context.Context, want JWTAuthSettings) (*JWTAuthPlan, error) {
	if want.NomadAddr == "" {
		return nil, fmt.Errorf("no Nomad address: Vault needs it to fetch Nomad's signing keys")
	}
	if !strings.HasPrefix(want.NomadAddr, "http://") && !strings.HasPrefix(want.NomadAddr, "https://") {
		return nil, fmt.Errorf("Nomad address %q must start with http:// or https://", want.NomadAddr)
	}
	mount := w.mount()
	plan := &JWTAuthPlan{Mount: mount}

	auths, err := w.Vault.ReadWithContext(ctx, "sys/auth")
	if err != nil {
		return nil, vaultErr("listing auth methods", err)
	}
	var mounted map[string]any
	if auths != nil {
		mounted, _ = auths.Data[mount+"/"].(map[string]any)
	}
	switch {
	case mounted == nil:
		plan.Changes = append(plan.Changes, Change{
			Summary: fmt.Sprintf("enable auth method jwt at %s/", mount),
			Path:    "sys/auth/" + mount,
			Data:    map[string]any{"type": "jwt", "description": "Nomad workload identities (managed by serai setup vault)"},
		})
	case mounted["type"] != "jwt":
		return nil, fmt.Errorf("auth path %s/ already holds a %v auth method; serai needs a jwt method there (use another --jwt-mount, or move that one)", mount, mounted["type"])
	default:
		plan.OK = append(plan.OK, fmt.Sprintf("auth method jwt is enabled at %s/", mount))
	}

	current := map[string]any{}
	if mounted != nil {
		s, err := w.Vault.ReadWithContext(ctx, "auth/"+mount+"/config")
		if err != nil && !isNotFound(err) {
			return nil, vaultErr("reading auth/"+mount+"/config", err)
		}
		if s != nil {
			current = s.Data
		}
	}
	desired := map[string]any{
		"jwks_url":           want.JWKSURL(),
		"jwt_supported_algs": jwtAlgs(),
		"jwks_ca_pem":        want.CACertPEM,
	}
	var diffs []string
	if got, _ := current["jwks_url"].(string); got != want.JWKSURL() {
		diffs = append(diffs, fmt.Sprintf("jwks_url %q -> %q", got, want.JWKSURL()))
	}
	if got := stringList(current["jwt_supported_algs"]); !sameSet(got, jwtAlgs()) {
		diffs = append(diffs, fmt.Sprintf("jwt_supported_algs %v -> %v", got, jwtAlgs()))
	}
	if got, _ := current["jwks_ca_pem"].(string); strings.TrimSpace(got) != strings.TrimSpace(want.CACertPEM) {
		diffs = append(diffs, "jwks_ca_pem (certificate changes)")
	}
	for _, k := range []string{"oidc_discovery_url", "jwt_validation_pubkeys"} {
		if v := current[k]; v != nil && v != "" && len(stringList(v)) > 0 {
			// Only one key source may be set; writing jwks_url clears the others.
			desired[k] = ""
			if k == "jwt_validation_pubkeys" {
				desired[k] = []string{}
			}
			diffs = append(diffs, k+" (cleared: Nomad's JWKS replaces it)")
		}
	}
	if len(diffs) > 0 {
		plan.Changes = append(plan.Changes, Change{
			Summary: fmt.Sprintf("configure auth/%s/config: %s", mount, strings.Join(diffs, "; ")),
			Path:    "auth/" + mount + "/config",
			Data:    desired,
		})
	} else {
		plan.OK = append(plan.OK, fmt.Sprintf("auth/%s/config trusts %s", mount, want.JWKSURL()))
	}

	if len(want.KVMounts) > 0 {
		mounts, err := w.Vault.ReadWithContext(ctx, "sys/mounts")
		if err != nil {
			plan.Notes = append(plan.Notes, fmt.Sprintf("could not list secrets engines to check KV mounts: %v", err))
		} else {
			for _, kv := range want.KVMounts {
				plan.checkKV(mounts.Data, strings.Trim(kv, "/"))
			}
		}
	}
	return plan, nil
}

func (p *JWTAuthPlan) checkKV(mounts map[string]any, kv string) {
	m, _ := mounts[kv+"/"].(map[string]any)
	if m == nil {
		p.Notes = append(p.Notes, fmt.Sprintf("no secrets engine at %s/: store keys cannot be kept there (vault secrets enable -path=%s kv-v2)", kv, kv))
		return
	}
	opts, _ := m["options"].(map[string]any)
	if m["type"] != "kv" || opts["version"] != "2" {
		p.Notes = append(p.Notes, fmt.Sprintf("%s/ is %v (options %v), not KV version 2: serai's templates read <mount>/data/<path>", kv, m["type"], opts))
		return
	}
	p.OK = append(p.OK, fmt.Sprintf("%s/ is a KV v2 mount", kv))
}

// ApplyJWTAuth makes the plan's changes, in order.
func (w *VaultWriter) ApplyJWTAuth(ctx context.Context, plan *JWTAuthPlan) error {
	for i, c := range plan.Changes {
		if _, err := w.Vault.WriteWithContext(ctx, c.Path, c.Data); err != nil {
			done := fmt.Sprintf(" (%d of %d changes made; plan again to see what is left)", i, len(plan.Changes))
			if strings.Contains(err.Error(), "error checking jwks") {
				return fmt.Errorf("%s: Vault could not fetch Nomad's keys from %v; Vault itself must reach Nomad at that address (check --nomad-addr and, for TLS, --nomad-ca-cert)%s: %w", c.Summary, c.Data["jwks_url"], done, err)
			}
			return vaultErr(c.Summary+done, err)
		}
		w.log().Info("vault changed", "change", c.Summary)
	}
	return nil
}

func sameSet(a, b []string) bool {
	x, y := slices.Clone(a), slices.Clone(b)
	slices.Sort(x)
	slices.Sort(y)
	return slices.Equal(x, y)
}
