package testagents

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"testing"
	"time"

	vaultapi "github.com/hashicorp/vault/api"
)

const vaultReadyTimeout = 60 * time.Second

// devRootToken is the root token of dev servers started here; dev servers
// keep everything in memory and die with the test, so a fixed value is fine
// and makes failures easy to reproduce by hand.
const devRootToken = "serai-dev-root"

// Vault is a Vault-API server (HashiCorp Vault or OpenBao) a test can use.
type Vault struct {
	// Addr is the API address, "http://127.0.0.1:port".
	Addr string
	// Token is a root token.
	Token string
	// Client talks to Addr with Token.
	Client *vaultapi.Client
	// Binary is "vault" or "bao" ("" when reused).
	Binary string
	// LogPath is the server's log file ("" when reused).
	LogPath string
	// Reused is true when VAULT_ADDR named an existing server.
	Reused bool

	proc *process
}

// StartVault starts `vault server -dev` (or `bao server -dev` when only
// OpenBao is on PATH) on a free loopback port with a known root token, or
// reuses VAULT_ADDR with VAULT_TOKEN. It waits until the server is unsealed
// and active and KV v2 is mounted at secret/. It skips the test when neither
// binary is on PATH.
func StartVault(t testing.TB) *Vault {
	t.Helper()
	if addr := os.Getenv("VAULT_ADDR"); addr != "" {
		return reuseVault(t, addr)
	}
	return startVault(t, "127.0.0.1")
}

// startVault starts a dev server listening on host (an address of this
// machine: loopback, or a cluster's bridge address).
func startVault(t testing.TB, host string) *Vault {
	t.Helper()
	bin, name, ok := lookBinary("vault", "bao")
	if !ok {
		t.Skip("neither vault nor bao on PATH: Vault does not build from the Go module proxy; build OpenBao (github.com/openbao/openbao, MPL, same HTTP API) from its repository into ~/.cache/serai/bin")
	}
	// Dev servers also open a cluster listener on the API port + 1.
	port, err := freePortPair()
	if err != nil {
		t.Fatalf("testagents: %v", err)
	}
	dir := newProcessDir(t, name)
	listen := net.JoinHostPort(host, strconv.Itoa(port))
	args := []string{
		"server", "-dev",
		"-dev-root-token-id=" + devRootToken,
		"-dev-listen-address=" + listen,
		"-dev-no-store-token",
		"-log-level=info",
	}
	begin := time.Now()
	p := startProcess(t, name, dir, bin, args, []int{port, port + 1})
	t.Cleanup(func() { p.stop(t) })

	v := &Vault{
		Addr:    "http://" + listen,
		Token:   devRootToken,
		Binary:  name,
		LogPath: p.logPath,
		proc:    p,
	}
	v.Client, err = newVaultClient(v.Addr, v.Token)
	if err != nil {
		t.Fatalf("testagents: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), vaultReadyTimeout)
	defer cancel()
	if err := waitFor(ctx, p, "an unsealed, active "+name+" with KV v2 at secret/", v.ready); err != nil {
		failStart(t, p, err)
	}
	t.Logf("testagents: %s ready at %s in %s", name, v.Addr, time.Since(begin).Round(time.Millisecond))
	return v
}

func reuseVault(t testing.TB, addr string) *Vault {
	t.Helper()
	token := os.Getenv("VAULT_TOKEN")
	if token == "" {
		t.Fatalf("testagents: VAULT_ADDR=%s is set but VAULT_TOKEN is not", addr)
	}
	cfg := vaultapi.DefaultConfig() // honours VAULT_CACERT and friends
	if cfg.Error != nil {
		t.Fatalf("testagents: vault config from environment: %v", cfg.Error)
	}
	cl, err := vaultapi.NewClient(cfg)
	if err != nil {
		t.Fatalf("testagents: vault client for VAULT_ADDR: %v", err)
	}
	cl.SetToken(token)
	v := &Vault{Addr: addr, Token: token, Client: cl, Reused: true}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := waitFor(ctx, nil, "an unsealed Vault with KV v2 at secret/", v.ready); err != nil {
		t.Fatalf("testagents: VAULT_ADDR=%s: %v", addr, err)
	}
	return v
}

func newVaultClient(addr, token string) (*vaultapi.Client, error) {
	// Built by hand, not from DefaultConfig: VAULT_* variables meant for
	// another server must not reach the test's own.
	cfg := vaultapi.DefaultConfig()
	cfg.Error = nil
	cfg.Address = addr
	cl, err := vaultapi.NewClient(cfg)
	if err != nil {
		return nil, err
	}
	cl.SetToken(token)
	cl.ClearNamespace()
	return cl, nil
}

func (v *Vault) ready(ctx context.Context) error {
	h, err := v.Client.Sys().HealthWithContext(ctx)
	if err != nil {
		return err
	}
	if !h.Initialized || h.Sealed || h.Standby {
		return fmt.Errorf("health: initialized=%t sealed=%t standby=%t", h.Initialized, h.Sealed, h.Standby)
	}
	mounts, err := v.Client.Sys().ListMountsWithContext(ctx)
	if err != nil {
		return err
	}
	m, ok := mounts["secret/"]
	if !ok {
		return errors.New("nothing mounted at secret/")
	}
	if m.Type != "kv" || m.Options["version"] != "2" {
		return fmt.Errorf("secret/ is %s with options %v, want kv version 2", m.Type, m.Options)
	}
	return nil
}
