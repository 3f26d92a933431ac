// Package devstack starts and stops a local Consul, Vault/OpenBao and Nomad
// (dev agents on loopback) and wires them together as serai needs: Nomad's
// workload identities trusted by Vault's JWT auth method, Nomad registering
// services in Consul, cloud fingerprinters denied and update checks off.
//
// It is the one place that knows how to configure agents for a single
// machine: `serai dev` runs a stack for users, and internal/testagents uses
// the same configuration and clean-up helpers for tests, so what the tests
// exercise is what users get. It owns agent processes and their
// configuration only; it never talks to serai's own API, router or store.
//
// Everything listens on 127.0.0.1 and nothing leaves loopback: the Nomad
// client denies the env_* fingerprinters (which probe cloud metadata
// addresses) and every agent has update checks disabled.
package devstack

import (
	"context"
	"fmt"
	"strconv"
	"strings"

	vaultapi "github.com/hashicorp/vault/api"
)

const (
	// JWTAuthPath is where Vault's JWT auth method for Nomad workload
	// identities is mounted (docs/contracts.md).
	JWTAuthPath = "jwt-nomad"
	// WorkloadIdentityAudience is the audience of the default Vault
	// workload identity the Nomad agents configured here sign.
	WorkloadIdentityAudience = "vault.io"
	// FingerprintDenylist keeps a Nomad client from probing cloud metadata
	// addresses.
	FingerprintDenylist = "env_aws,env_gce,env_azure,env_digitalocean"
)

// ConsulPorts are a Consul dev agent's ports.
type ConsulPorts struct {
	HTTP, Server, SerfLAN, SerfWAN, GRPC int
}

// ConsulConfig is a Consul agent configuration (JSON form) for a dev agent
// on loopback named node.
func ConsulConfig(node string, p ConsulPorts) map[string]any {
	return map[string]any{
		"node_name":                   node,
		"bind_addr":                   "127.0.0.1",
		"client_addr":                 "127.0.0.1",
		"advertise_addr":              "127.0.0.1",
		"advertise_addr_wan":          "127.0.0.1",
		"disable_update_check":        true,
		"disable_anonymous_signature": true,
		"log_level":                   "INFO",
		"ports": map[string]int{
			"http":     p.HTTP,
			"https":    -1,
			"dns":      -1,
			"server":   p.Server,
			"serf_lan": p.SerfLAN,
			"serf_wan": p.SerfWAN,
			// gRPC only serves Connect/Envoy, which serai does not use, but
			// dev mode would otherwise claim the fixed port 8502.
			"grpc":     p.GRPC,
			"grpc_tls": -1,
		},
	}
}

// NomadConfigOptions describe one Nomad dev agent.
type NomadConfigOptions struct {
	Name    string
	DataDir string
	// HTTP, RPC and Serf ports.
	HTTP, RPC, Serf int
	// ConsulAddr is "127.0.0.1:port"; empty points Nomad's Consul
	// integration at a closed port so it cannot find an unrelated agent
	// on 127.0.0.1:8500.
	ConsulAddr string
	// ConsulToken, when set, is the token Nomad registers services with
	// (a Consul with ACLs on; deploy/consul/nomad-agent.policy.hcl).
	ConsulToken string
	// VaultAddr, when set, enables the workload-identity Vault integration
	// with the JWT auth method at JWTAuthPath.
	VaultAddr string
}

// NomadConfig renders the agent configuration. It is HCL rather than JSON
// because plugin blocks are only documented in HCL form.
func NomadConfig(o NomadConfigOptions) string {
	q := strconv.Quote
	var b strings.Builder
	fmt.Fprintf(&b, `name                 = %s
data_dir             = %s
bind_addr            = "127.0.0.1"
log_level            = "INFO"
disable_update_check = true

ports {
  http = %d
  rpc  = %d
  serf = %d
}

advertise {
  http = "127.0.0.1:%d"
  rpc  = "127.0.0.1:%d"
  serf = "127.0.0.1:%d"
}

server {
  enabled          = true
  bootstrap_expect = 1
}

client {
  enabled           = true
  network_interface = "lo"
  # dev mode binds allocation ports on 0.0.0.0; keep them on loopback.
  bind_wildcard_default_host_network = false
  options {
    # Without this the client probes cloud metadata addresses.
    "fingerprint.denylist" = %s
  }
}

plugin "raw_exec" {
  config {
    enabled = true
  }
}
`, q(o.Name), q(o.DataDir), o.HTTP, o.RPC, o.Serf, o.HTTP, o.RPC, o.Serf, q(FingerprintDenylist))

	if o.ConsulAddr != "" {
		token := ""
		if o.ConsulToken != "" {
			token = "\n  token   = " + q(o.ConsulToken)
		}
		fmt.Fprintf(&b, `
consul {
  address = %s%s
}
`, q(o.ConsulAddr), token)
	} else {
		// Port 1 (tcpmux) is closed on any sane machine: the integration
		// stays inert instead of finding whatever listens on :8500.
		b.WriteString(`
consul {
  address          = "127.0.0.1:1"
  auto_advertise   = false
  server_auto_join = false
  client_auto_join = false
}
`)
	}
	if o.VaultAddr != "" {
		fmt.Fprintf(&b, `
vault {
  enabled               = true
  address               = %s
  jwt_auth_backend_path = %s
  default_identity {
    aud = [%s]
    ttl = "1h"
  }
}
`, q(o.VaultAddr), q(JWTAuthPath), q(WorkloadIdentityAudience))
	}
	return b.String()
}

// ConfigureJWTAuth makes vc accept workload identities signed by the Nomad
// agent at nomadAddr, as Nomad's Vault integration guide describes. An
// existing mount is reconfigured, so several agents in a row can share one
// Vault (the last one configured wins).
func ConfigureJWTAuth(ctx context.Context, vc *vaultapi.Client, nomadAddr string) error {
	auths, err := vc.Sys().ListAuthWithContext(ctx)
	if err != nil {
		return err
	}
	if m, ok := auths[JWTAuthPath+"/"]; !ok {
		if err := vc.Sys().EnableAuthWithOptionsWithContext(ctx, JWTAuthPath, &vaultapi.EnableAuthOptions{Type: "jwt"}); err != nil {
			return err
		}
	} else if m.Type != "jwt" {
		return fmt.Errorf("%s/ is a %s auth mount, want jwt", JWTAuthPath, m.Type)
	}
	_, err = vc.Logical().WriteWithContext(ctx, "auth/"+JWTAuthPath+"/config", map[string]any{
		"jwks_url":           nomadAddr + "/.well-known/jwks.json",
		"jwt_supported_algs": []string{"RS256", "EdDSA"},
		"default_role":       "",
	})
	return err
}
