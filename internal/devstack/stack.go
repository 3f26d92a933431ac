package devstack

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	consulapi "github.com/hashicorp/consul/api"
	nomadapi "github.com/hashicorp/nomad/api"
	vaultapi "github.com/hashicorp/vault/api"
)

// Binaries are the agent binaries a stack runs.
type Binaries struct {
	Consul, Vault, Nomad string
}

// Stack is a running Consul, Vault/OpenBao and Nomad on loopback, wired
// together. Stop it to leave nothing behind.
type Stack struct {
	// Dir is the runtime directory (agent data, logs); Stop removes it.
	Dir string
	// Session marks every process the stack started (SessionVar).
	Session string

	ConsulAddr string // "127.0.0.1:port"
	VaultAddr  string // "http://127.0.0.1:port"
	VaultToken string
	NomadAddr  string // "http://127.0.0.1:port"

	Consul *consulapi.Client
	Vault  *vaultapi.Client
	Nomad  *nomadapi.Client

	nomadDataDir string
	nomadNode    string
	procs        []*Process // in start order
	extra        []*Process
}

// Start starts the agents in a new directory under os.TempDir and waits
// until they are ready and wired: Consul with a leader, Vault unsealed with
// KV v2 at secret/, Nomad with a ready client that fingerprinted both and
// runs raw_exec, and Vault's JWT auth trusting Nomad's workload
// identities. On error it stops what it started.
func Start(ctx context.Context, bins Binaries, nomadPath string) (s *Stack, err error) {
	dir, err := os.MkdirTemp("", "serai-dev-")
	if err != nil {
		return nil, err
	}
	if real, err := filepath.EvalSymlinks(dir); err == nil {
		dir = real
	}
	s = &Stack{Dir: dir, Session: filepath.Base(dir)}
	defer func() {
		if err != nil {
			_ = s.Stop(context.Background())
		}
	}()

	// Consul.
	cp, err := FreePorts(5)
	if err != nil {
		return s, err
	}
	s.ConsulAddr = "127.0.0.1:" + strconv.Itoa(cp[0])
	cfg, _ := json.Marshal(ConsulConfig("serai-dev", ConsulPorts{HTTP: cp[0], Server: cp[1], SerfLAN: cp[2], SerfWAN: cp[3], GRPC: cp[4]}))
	consulDir := s.sub("consul")
	if err := os.WriteFile(filepath.Join(consulDir, "consul.json"), cfg, 0o600); err != nil {
		return s, err
	}
	if err := s.start("consul", consulDir, bins.Consul, []string{"agent", "-dev", "-config-file", filepath.Join(consulDir, "consul.json")}, nil); err != nil {
		return s, err
	}
	if s.Consul, err = consulapi.NewClient(&consulapi.Config{Address: s.ConsulAddr, Scheme: "http"}); err != nil {
		return s, err
	}

	// Vault / OpenBao: dev servers also listen on the API port + 1.
	vp, err := FreePortPair()
	if err != nil {
		return s, err
	}
	s.VaultAddr = "http://127.0.0.1:" + strconv.Itoa(vp)
	s.VaultToken = "serai-dev-" + randomHex(8)
	vaultDir := s.sub("vault")
	if err := s.start(filepath.Base(bins.Vault), vaultDir, bins.Vault, []string{
		"server", "-dev", "-dev-root-token-id=" + s.VaultToken,
		"-dev-listen-address=127.0.0.1:" + strconv.Itoa(vp), "-dev-no-store-token", "-log-level=info",
	}, nil); err != nil {
		return s, err
	}
	vc := vaultapi.DefaultConfig()
	vc.Error = nil
	vc.Address = s.VaultAddr
	if s.Vault, err = vaultapi.NewClient(vc); err != nil {
		return s, err
	}
	s.Vault.SetToken(s.VaultToken)
	s.Vault.ClearNamespace()

	// Nomad, once Consul and Vault answer (it fingerprints both at start).
	if err := s.waitFor(ctx, "a Consul leader", s.consulReady); err != nil {
		return s, err
	}
	if err := s.waitFor(ctx, "an unsealed Vault with KV v2 at secret/", s.vaultReady); err != nil {
		return s, err
	}
	np, err := FreePorts(3)
	if err != nil {
		return s, err
	}
	s.NomadAddr = "http://127.0.0.1:" + strconv.Itoa(np[0])
	nomadDir := s.sub("nomad")
	s.nomadDataDir = filepath.Join(nomadDir, "data")
	ncfg := NomadConfig(NomadConfigOptions{
		Name: "serai-dev", DataDir: s.nomadDataDir, HTTP: np[0], RPC: np[1], Serf: np[2],
		ConsulAddr: s.ConsulAddr, VaultAddr: s.VaultAddr,
	})
	if err := os.WriteFile(filepath.Join(nomadDir, "nomad.hcl"), []byte(ncfg), 0o600); err != nil {
		return s, err
	}
	var nenv []string
	if nomadPath != "" {
		// raw_exec tasks inherit the agent's environment and find their
		// commands on its PATH.
		nenv = append(nenv, "PATH="+nomadPath+":"+os.Getenv("PATH")+":"+CacheBinDir())
	}
	if err := s.start("nomad", nomadDir, bins.Nomad, []string{"agent", "-dev", "-config", filepath.Join(nomadDir, "nomad.hcl")}, nenv); err != nil {
		return s, err
	}
	if s.Nomad, err = nomadapi.NewClient(&nomadapi.Config{Address: s.NomadAddr, Region: "global"}); err != nil {
		return s, err
	}
	if err := s.waitFor(ctx, "a Nomad leader and a ready client with raw_exec", s.nomadReady); err != nil {
		return s, err
	}
	if err := ConfigureJWTAuth(ctx, s.Vault, s.NomadAddr); err != nil {
		return s, fmt.Errorf("configuring %s auth in Vault: %w", JWTAuthPath, err)
	}
	return s, nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func (s *Stack) sub(name string) string {
	d := filepath.Join(s.Dir, name)
	_ = os.MkdirAll(d, 0o700)
	return d
}

func (s *Stack) start(name, dir, bin string, args, env []string) error {
	p, err := StartProcess(name, dir, s.Session, bin, args, env)
	if err != nil {
		return err
	}
	s.procs = append(s.procs, p)
	return nil
}

// Run starts one more process (serai's server, router) in the stack's
// session; Stop ends these first, in reverse order.
func (s *Stack) Run(name, bin string, args, env []string) (*Process, error) {
	p, err := StartProcess(name, s.sub(name), s.Session, bin, args, env)
	if err != nil {
		return nil, err
	}
	s.extra = append(s.extra, p)
	return p, nil
}

// Env is the environment a shell needs to talk to the stack.
func (s *Stack) Env() []string {
	return []string{
		"CONSUL_HTTP_ADDR=" + s.ConsulAddr,
		"NOMAD_ADDR=" + s.NomadAddr,
		"VAULT_ADDR=" + s.VaultAddr,
		"VAULT_TOKEN=" + s.VaultToken,
	}
}

func (s *Stack) waitFor(ctx context.Context, what string, check func(context.Context) error) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	var last error
	for {
		for _, p := range s.procs {
			if done, err := p.Exited(); done {
				return fmt.Errorf("%s exited while waiting for %s: %v; its log ends:\n%s", p.Name, what, err, p.Tail(2000))
			}
		}
		if last = check(ctx); last == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for %s: %w (last: %v)", what, ctx.Err(), last)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func (s *Stack) consulReady(ctx context.Context) error {
	q := (&consulapi.QueryOptions{}).WithContext(ctx)
	leader, err := s.Consul.Status().LeaderWithQueryOptions(q)
	if err != nil {
		return err
	}
	if leader == "" {
		return errors.New("no leader yet")
	}
	n, _, err := s.Consul.Catalog().Node("serai-dev", q)
	if err != nil {
		return err
	}
	if n == nil {
		return errors.New("node not in the catalog yet")
	}
	return nil
}

func (s *Stack) vaultReady(ctx context.Context) error {
	h, err := s.Vault.Sys().HealthWithContext(ctx)
	if err != nil {
		return err
	}
	if !h.Initialized || h.Sealed || h.Standby {
		return fmt.Errorf("initialized=%t sealed=%t standby=%t", h.Initialized, h.Sealed, h.Standby)
	}
	mounts, err := s.Vault.Sys().ListMountsWithContext(ctx)
	if err != nil {
		return err
	}
	if m, ok := mounts["secret/"]; !ok || m.Type != "kv" || m.Options["version"] != "2" {
		return errors.New("no KV v2 at secret/ yet")
	}
	return nil
}

func (s *Stack) nomadReady(ctx context.Context) error {
	leader, err := s.Nomad.Status().Leader()
	if err != nil {
		return err
	}
	if leader == "" {
		return errors.New("no leader yet")
	}
	q := (&nomadapi.QueryOptions{}).WithContext(ctx)
	nodes, _, err := s.Nomad.Nodes().List(q)
	if err != nil {
		return err
	}
	if len(nodes) != 1 || nodes[0].Status != "ready" || nodes[0].SchedulingEligibility != "eligible" {
		return errors.New("client node not ready")
	}
	node, _, err := s.Nomad.Nodes().Info(nodes[0].ID, q)
	if err != nil {
		return err
	}
	if d := node.Drivers["raw_exec"]; d == nil || !d.Detected || !d.Healthy {
		return errors.New("raw_exec not healthy")
	}
	// Jobs with services or Vault blocks are constrained on these.
	if node.Attributes["consul.version"] == "" || node.Attributes["vault.version"] == "" {
		return errors.New("node has not fingerprinted Consul and Vault yet")
	}
	s.nomadNode = node.ID
	return nil
}

// Stop ends everything the stack started: the extra processes (newest
// first), then every Nomad job (purged, allocations waited for and garbage
// collected so their mounts go away — killing Nomad first would orphan
// executors), then Nomad, Vault and Consul; leftover processes of the
// session are killed, and the runtime directory is unmounted and removed.
// The problems it met are returned joined; it always does all of it.
func (s *Stack) Stop(ctx context.Context) error {
	var errs []error
	for i := len(s.extra) - 1; i >= 0; i-- {
		if err := s.extra[i].Stop(20 * time.Second); err != nil {
			errs = append(errs, err)
		}
	}
	if s.Nomad != nil {
		if err := s.drainNomad(ctx); err != nil {
			errs = append(errs, fmt.Errorf("stopping Nomad jobs: %w", err))
		}
	}
	for i := len(s.procs) - 1; i >= 0; i-- {
		if err := s.procs[i].Stop(20 * time.Second); err != nil {
			errs = append(errs, err)
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		left := Leftovers(s.Session)
		if len(left) == 0 {
			break
		}
		if time.Now().After(deadline) {
			errs = append(errs, fmt.Errorf("killed leftover processes %v", left))
			for _, pid := range left {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
			time.Sleep(200 * time.Millisecond)
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err := RemoveAll(s.Dir); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

func (s *Stack) drainNomad(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	for _, p := range s.procs {
		if p.Name == "nomad" {
			if done, _ := p.Exited(); done {
				return errors.New("nomad exited early")
			}
		}
	}
	all := (&nomadapi.QueryOptions{Namespace: "*"}).WithContext(ctx)
	jobs, _, err := s.Nomad.Jobs().List(all)
	if err != nil {
		return err
	}
	for _, j := range jobs {
		w := (&nomadapi.WriteOptions{Namespace: j.Namespace}).WithContext(ctx)
		if _, _, err := s.Nomad.Jobs().DeregisterOpts(j.ID, &nomadapi.DeregisterOptions{Purge: true}, w); err != nil {
			return fmt.Errorf("purging %s: %w", j.ID, err)
		}
	}
	err = s.waitFor(ctx, "allocations to stop", func(ctx context.Context) error {
		allocs, _, err := s.Nomad.Allocations().List((&nomadapi.QueryOptions{Namespace: "*"}).WithContext(ctx))
		if err != nil {
			return err
		}
		var live []string
		for _, a := range allocs {
			switch a.ClientStatus {
			case nomadapi.AllocClientStatusComplete, nomadapi.AllocClientStatusFailed, nomadapi.AllocClientStatusLost:
			default:
				live = append(live, a.JobID+"/"+a.TaskGroup)
			}
		}
		if len(live) > 0 {
			return fmt.Errorf("still running: %s", strings.Join(live, ", "))
		}
		return nil
	})
	if err != nil || s.nomadNode == "" {
		return err
	}
	// Empty answer body: the client reports io.EOF after the collection.
	if err := s.Nomad.Nodes().GC(s.nomadNode, (&nomadapi.QueryOptions{}).WithContext(ctx)); err != nil && !errors.Is(err, io.EOF) {
		return err
	}
	allocRoot := filepath.Join(s.nomadDataDir, "alloc")
	return s.waitFor(ctx, "allocation directories to be removed", func(context.Context) error {
		ents, err := os.ReadDir(allocRoot)
		if err != nil || len(ents) == 0 {
			return nil
		}
		return fmt.Errorf("%d left", len(ents))
	})
}
