package main

import (
	"context"
	"fmt"
	"os"
	"strings"
	"time"

	vaultapi "github.com/hashicorp/vault/api"
	"github.com/seraihq/serai/policies"
	"github.com/urfave/cli/v2"
)

// setupCommand checks, and on request prepares, the agents serai depends on.
func setupCommand() *cli.Command {
	return &cli.Command{
		Name:        "setup",
		Usage:       "check and prepare the agents serai depends on",
		Subcommands: []*cli.Command{setupVaultCommand()},
	}
}

func setupVaultCommand() *cli.Command {
	return &cli.Command{
		Name:  "vault",
		Usage: "check (and with --apply create) the JWT auth method Nomad workload identities log in with",
		Description: `Compares Vault with what serai's fetch tasks need: a jwt auth method at
--jwt-mount that trusts the keys Nomad publishes at <nomad-addr>/.well-known/jwks.json,
and KV v2 mounts for the stores' keys. It prints every change before making any;
without --apply it changes nothing. The Vault token comes from VAULT_TOKEN only.`,
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "apply", Usage: "make the changes (after printing them)"},
			&cli.StringFlag{Name: "vault-addr", EnvVars: []string{"VAULT_ADDR"}, Value: "http://127.0.0.1:8200", Usage: "Vault (or OpenBao) API address"},
			&cli.StringFlag{Name: "nomad-addr", EnvVars: []string{"NOMAD_ADDR"}, Value: "http://127.0.0.1:4646", Usage: "Nomad API address as Vault reaches it (Vault fetches the JWKS from there)"},
			&cli.StringFlag{Name: "nomad-ca-cert", Usage: "PEM `FILE` Vault uses to verify Nomad's TLS certificate"},
			&cli.StringFlag{Name: "jwt-mount", Value: policies.JWTAuthMount, Usage: "path of the jwt auth method (docs/contracts.md: jwt-nomad)"},
			&cli.StringSliceFlag{Name: "kv-mount", Value: cli.NewStringSlice(policies.DefaultKVMount), Usage: "KV v2 mount(s) holding store keys, checked only"},
			&cli.DurationFlag{Name: "timeout", Value: 30 * time.Second, Usage: "give up on Vault after this long"},
			&cli.BoolFlag{Name: "print-server-policy", Usage: "also print the Vault policy the serai server's token needs"},
		},
		Action: setupVault,
	}
}

func setupVault(c *cli.Context) error {
	if c.NArg() > 0 {
		return cli.Exit(fmt.Sprintf("serai setup vault: unexpected arguments %q", c.Args().Slice()), exitUsage)
	}
	fail := func(format string, args ...any) error {
		return cli.Exit("serai setup vault: "+fmt.Sprintf(format, args...), exitError)
	}
	settings := policies.JWTAuthSettings{NomadAddr: c.String("nomad-addr"), KVMounts: c.StringSlice("kv-mount")}
	if p := c.String("nomad-ca-cert"); p != "" {
		pem, err := os.ReadFile(p)
		if err != nil {
			return cli.Exit(fmt.Sprintf("serai setup vault: --nomad-ca-cert: %v", err), exitUsage)
		}
		settings.CACertPEM = string(pem)
	}
	if !strings.HasPrefix(settings.NomadAddr, "http://") && !strings.HasPrefix(settings.NomadAddr, "https://") {
		return cli.Exit(fmt.Sprintf("serai setup vault: --nomad-addr %q must start with http:// or https://", settings.NomadAddr), exitUsage)
	}

	// DefaultConfig reads VAULT_CACERT, VAULT_NAMESPACE and friends, so
	// serai talks to Vault exactly as the vault CLI would.
	cfg := vaultapi.DefaultConfig()
	if cfg.Error != nil {
		return fail("Vault settings from the environment: %v", cfg.Error)
	}
	cfg.Address = c.String("vault-addr")
	client, err := vaultapi.NewClient(cfg)
	if err != nil {
		return fail("Vault client: %v", err)
	}
	if os.Getenv("VAULT_TOKEN") == "" && client.Token() == "" {
		return cli.Exit("serai setup vault: no Vault token: set VAULT_TOKEN to a token that may manage auth methods (sys/auth) and their config", exitUsage)
	}
	w := policies.NewVaultWriter(client)
	w.Mount = c.String("jwt-mount")

	ctx, cancel := context.WithTimeout(c.Context, c.Duration("timeout"))
	defer cancel()
	out := c.App.Writer
	plan, err := w.PlanJWTAuth(ctx, settings)
	if err != nil {
		return fail("%v", err)
	}
	fmt.Fprintf(out, "Vault %s, Nomad workload identities at auth/%s:\n%s", cfg.Address, plan.Mount, plan)
	switch {
	case plan.Empty():
		fmt.Fprintln(out, "Nothing to change.")
	case !c.Bool("apply"):
		fmt.Fprintf(out, "%d change(s) needed; run again with --apply to make them.\n", len(plan.Changes))
	default:
		if err := w.ApplyJWTAuth(ctx, plan); err != nil {
			return fail("%v", err)
		}
		fmt.Fprintf(out, "Applied %d change(s).\n", len(plan.Changes))
	}
	fmt.Fprintf(out, `
Nomad servers must issue workload identities for Vault; in their agent config:
  vault {
    enabled = true
    address = %q
    jwt_auth_backend_path = %q
    default_identity {
      aud = [%q]
      ttl = "1h"
    }
  }
`, cfg.Address, plan.Mount, policies.WorkloadAudience)
	if c.Bool("print-server-policy") {
		fmt.Fprintf(out, "\nPolicy for the serai server's Vault token:\n%s", policies.ServerPolicy(plan.Mount))
	}
	return nil
}
