package testagents

import (
	"strings"
	"testing"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"
)

// TestConsulPoliciesLeastPrivilege parses the shipped Consul policies and
// checks what each may write: the server only KV under serai/, sessions
// and its own service; the router only KV under serai/wake/ and its own
// service; Nomad only its own services and serai-* but not serai-router or
// serai-server. None grants acl, operator, keyring or mesh rights. Consul
// itself then accepts every file (policy create on an agent with ACLs).
func TestConsulPoliciesLeastPrivilege(t *testing.T) {
	pols, err := ConsulPolicies()
	if err != nil {
		t.Fatal(err)
	}
	type rule struct{ kind, name, policy string }
	parse := func(name, src string) []rule {
		f, diags := hclsyntax.ParseConfig([]byte(src), name, hcl.InitialPos)
		if diags.HasErrors() {
			t.Fatalf("%s: %v", name, diags)
		}
		body := f.Body.(*hclsyntax.Body)
		for a := range body.Attributes {
			t.Errorf("%s: top-level %q grants rights beyond services, nodes, keys and sessions", name, a)
		}
		var out []rule
		for _, b := range body.Blocks {
			if len(b.Labels) != 1 {
				t.Fatalf("%s: %s block with %d labels", name, b.Type, len(b.Labels))
			}
			attr := b.Body.Attributes["policy"]
			if attr == nil || len(b.Body.Attributes) != 1 || len(b.Body.Blocks) != 0 {
				t.Fatalf("%s: %s %q must hold exactly policy = ...", name, b.Type, b.Labels[0])
			}
			v, diags := attr.Expr.Value(nil)
			if diags.HasErrors() {
				t.Fatalf("%s: %v", name, diags)
			}
			out = append(out, rule{b.Type, b.Labels[0], v.AsString()})
		}
		return out
	}
	// writes lists what may be written, as kind + " " + name.
	writes := map[string][]string{
		"serai-server": {`key_prefix serai/`, `session_prefix `, `service serai-server`},
		"serai-router": {`key_prefix serai/wake/`, `service serai-router`},
		"nomad-agent":  {`service nomad`, `service nomad-client`, `service_prefix serai-`},
	}
	allowedKinds := map[string]bool{"key_prefix": true, "session_prefix": true, "service": true, "service_prefix": true, "node_prefix": true, "agent_prefix": true}
	for name, want := range writes {
		src, ok := pols[name]
		if !ok {
			t.Errorf("%s/%s.policy.hcl missing", ConsulPolicyDir, name)
			continue
		}
		var got []string
		rules := parse(name, src)
		for _, r := range rules {
			if !allowedKinds[r.kind] {
				t.Errorf("%s: %s rules are not needed by any part", name, r.kind)
			}
			switch r.policy {
			case "write":
				got = append(got, r.kind+" "+r.name)
			case "read", "deny":
			default:
				t.Errorf("%s: %s %q: policy %q", name, r.kind, r.name, r.policy)
			}
		}
		if strings.Join(got, ",") != strings.Join(want, ",") {
			t.Errorf("%s writes %q, want exactly %q", name, got, want)
		}
		if name == "nomad-agent" {
			exact := map[string]string{}
			for _, r := range rules {
				if r.kind == "service" {
					exact[r.name] = r.policy
				}
			}
			for _, own := range []string{"serai-router", "serai-server"} {
				if exact[own] != "read" {
					t.Errorf("nomad-agent: an exact rule must keep %s from Nomad jobs (exact wins over prefix), got %q", own, exact[own])
				}
			}
		}
	}
	if len(pols) != len(writes) {
		t.Errorf("%s holds %d policies, want %d", ConsulPolicyDir, len(pols), len(writes))
	}

	c := StartConsulWith(t, ConsulOptions{ACL: true})
	for name := range writes {
		p, _, err := c.Client.ACL().PolicyReadByName(name, nil)
		if err != nil || p == nil {
			t.Fatalf("policy %s not in Consul: %v", name, err)
		}
		if p.Rules != pols[name] {
			t.Errorf("policy %s in Consul differs from %s", name, ConsulPolicyDir)
		}
	}
	if c.Tokens.Server == "" || c.Tokens.Router == "" || c.Tokens.Nomad == "" {
		t.Errorf("tokens not made: %+v", c.Tokens)
	}
}
