package devstack

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"github.com/hashicorp/go-version"
	install "github.com/hashicorp/hc-install"
	"github.com/hashicorp/hc-install/product"
	"github.com/hashicorp/hc-install/releases"
	"github.com/hashicorp/hc-install/src"
)

// CacheBinDir is serai's agent cache, ~/.cache/serai/bin (scripts/agents
// puts it on PATH; hc-install downloads land there).
func CacheBinDir() string {
	dir, err := os.UserCacheDir()
	if err != nil {
		return filepath.Join(os.TempDir(), "serai-bin")
	}
	return filepath.Join(dir, "serai", "bin")
}

// Agent names an agent binary: the names it may have and the HashiCorp
// product hc-install can fetch (nil when there is none, as for OpenBao).
type Agent struct {
	Names   []string
	Product *product.Product
	Version string
	// Hint is how to get it by hand.
	Hint string
}

// The agents a stack needs, with the versions serai is tested against.
var (
	ConsulAgent = Agent{Names: []string{"consul"}, Product: &product.Consul, Version: "1.14.4",
		Hint: "run `. scripts/agents` (builds Consul v1.14.4 from the Go module proxy into ~/.cache/serai/bin) or install it from https://releases.hashicorp.com/consul/"}
	VaultAgent = Agent{Names: []string{"vault", "bao"}, Product: &product.Vault, Version: "1.15.6",
		Hint: "install Vault from https://releases.hashicorp.com/vault/ or build OpenBao (github.com/openbao/openbao) into ~/.cache/serai/bin"}
	NomadAgent = Agent{Names: []string{"nomad"}, Product: &product.Nomad, Version: "1.9.7",
		Hint: "install Nomad from https://releases.hashicorp.com/nomad/ or build it from github.com/hashicorp/nomad into ~/.cache/serai/bin"}
)

// MissingError says which agent binary is missing and how to get it, in
// one line.
type MissingError struct {
	Agent Agent
	Err   error // why hc-install could not fetch it
}

func (e *MissingError) Error() string {
	why := ""
	if e.Err != nil {
		why = fmt.Sprintf(" (download failed: %v)", e.Err)
	}
	return fmt.Sprintf("%s not found on PATH or in %s%s: %s", e.Agent.Names[0], CacheBinDir(), why, e.Agent.Hint)
}

// Find returns the path of the agent's binary from PATH or the cache dir.
func Find(a Agent) (string, bool) {
	for _, n := range a.Names {
		if p, err := exec.LookPath(n); err == nil {
			return p, true
		}
	}
	for _, n := range a.Names {
		p := filepath.Join(CacheBinDir(), n)
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0 {
			return p, true
		}
	}
	return "", false
}

// Ensure finds the agent, or downloads it into the cache dir with
// hc-install (which verifies HashiCorp's signature and checksums), within
// timeout (0: do not try). It returns a *MissingError when neither works.
func Ensure(ctx context.Context, a Agent, timeout time.Duration) (string, error) {
	if p, ok := Find(a); ok {
		return p, nil
	}
	if a.Product == nil || timeout <= 0 {
		return "", &MissingError{Agent: a}
	}
	if err := os.MkdirAll(CacheBinDir(), 0o755); err != nil {
		return "", &MissingError{Agent: a, Err: err}
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	i := install.NewInstaller()
	p, err := i.Ensure(ctx, []src.Source{&releases.ExactVersion{
		Product:    *a.Product,
		Version:    version.Must(version.NewVersion(a.Version)),
		InstallDir: CacheBinDir(),
		Timeout:    timeout,
	}})
	if err != nil {
		// hc-install wraps the same cause several times; the innermost
		// error says it in one short line.
		for u := errors.Unwrap(err); u != nil; u = errors.Unwrap(u) {
			err = u
		}
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			err = fmt.Errorf("no answer from releases.hashicorp.com within %s", timeout)
		}
		return "", &MissingError{Agent: a, Err: err}
	}
	return p, nil
}
