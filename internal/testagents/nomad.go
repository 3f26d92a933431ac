package testagents

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	nomadapi "github.com/hashicorp/nomad/api"
	vaultapi "github.com/hashicorp/vault/api"

	"github.com/seraihq/serai/internal/devstack"
)

const (
	// nomadReadyTimeout covers leader election plus the client's first
	// fingerprint round, which takes several seconds on a busy machine.
	nomadReadyTimeout = 120 * time.Second
	// nomadDrainTimeout bounds purging jobs and waiting for their
	// allocations to stop during cleanup.
	nomadDrainTimeout = 60 * time.Second

	// JWTAuthPath is where StartNomad mounts Vault's JWT auth method for
	// Nomad workload identities (docs/contracts.md).
	JWTAuthPath = devstack.JWTAuthPath
	// WorkloadIdentityAudience is the audience of the default Vault
	// workload identity Nomad agents started here sign.
	WorkloadIdentityAudience = devstack.WorkloadIdentityAudience
)

// NomadOptions wires a Nomad agent to other agents.
type NomadOptions struct {
	// Consul, when set, is the agent Nomad registers services in, with
	// Consul.Tokens.Nomad when it runs with ACLs. When nil
	// Nomad's Consul integration points at a closed port, so the test cannot
	// touch an unrelated agent on 127.0.0.1:8500.
	Consul *Consul
	// Vault, when set, enables Nomad's workload-identity Vault integration
	// and configures JWT auth at JWTAuthPath in that Vault to trust this
	// agent's JWKS. Roles are the test's business. nil = not wired.
	Vault *Vault
}

// Nomad is a Nomad agent (server and client in one) a test can use.
type Nomad struct {
	// Addr is the HTTP API address, "http://127.0.0.1:port".
	Addr string
	// Client talks to Addr.
	Client *nomadapi.Client
	// DataDir is the agent's data_dir ("" when reused).
	DataDir string
	// NodeID is the client node's ID ("" when reused).
	NodeID string
	// LogPath is the agent's log file ("" when reused).
	LogPath string
	// Reused is true when NOMAD_ADDR named an existing agent.
	Reused bool

	opts NomadOptions
	proc *process
}

// StartNomad starts `nomad agent -dev` (server and client) on free loopback
// ports with a generated config file, or reuses NOMAD_ADDR. It waits until a
// leader is elected and the client node is ready, eligible and has a healthy
// raw_exec driver (and, when wired, has fingerprinted Consul and Vault). It
// skips the test when no nomad binary is on PATH.
//
// On cleanup every job is purged and its allocations are waited for before
// the agent is interrupted; tests need not stop their own jobs.
func StartNomad(t testing.TB, opts NomadOptions) *Nomad {
	t.Helper()
	if addr := os.Getenv("NOMAD_ADDR"); addr != "" {
		return reuseNomad(t, addr, opts)
	}
	bin, _, ok := lookBinary("nomad")
	if !ok {
		t.Skip("nomad not on PATH: the Go module proxy does not serve Nomad; build it from its public repository and put it in ~/.cache/serai/bin (README: Agents for the integration suites)")
	}
	ports, err := freePorts(3)
	if err != nil {
		t.Fatalf("testagents: %v", err)
	}
	dir := newProcessDir(t, "nomad")
	n := &Nomad{
		Addr:    "http://127.0.0.1:" + strconv.Itoa(ports[0]),
		DataDir: filepath.Join(dir, "data"),
		opts:    opts,
	}
	cfgPath := filepath.Join(dir, "nomad.hcl")
	if err := os.WriteFile(cfgPath, []byte(nomadConfig(n.DataDir, ports, opts)), 0o600); err != nil {
		t.Fatalf("testagents: %v", err)
	}

	begin := time.Now()
	p := startProcess(t, "nomad", dir, bin, []string{"agent", "-dev", "-config", cfgPath}, ports)
	n.proc = p
	n.LogPath = p.logPath
	t.Cleanup(func() {
		n.drain(t)
		p.stop(t)
	})
	n.Client, err = nomadapi.NewClient(&nomadapi.Config{Address: n.Addr, Region: "global"})
	if err != nil {
		t.Fatalf("testagents: %v", err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), nomadReadyTimeout)
	defer cancel()
	if err := waitFor(ctx, p, "a Nomad leader and a ready client node with raw_exec", n.ready); err != nil {
		failStart(t, p, err)
	}
	if opts.Vault != nil {
		if err := configureJWTAuth(ctx, opts.Vault.Client, n.Addr); err != nil {
			failStart(t, p, fmt.Errorf("configuring %s auth in Vault: %w", JWTAuthPath, err))
		}
	}
	t.Logf("testagents: nomad ready at %s (node %s) in %s", n.Addr, n.NodeID, time.Since(begin).Round(time.Millisecond))
	return n
}

func reuseNomad(t testing.TB, addr string, opts NomadOptions) *Nomad {
	t.Helper()
	cl, err := nomadapi.NewClient(nomadapi.DefaultConfig()) // honours NOMAD_TOKEN, TLS settings
	if err != nil {
		t.Fatalf("testagents: nomad client for NOMAD_ADDR: %v", err)
	}
	n := &Nomad{Addr: addr, Client: cl, Reused: true, opts: opts}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := waitFor(ctx, nil, "a Nomad leader", n.hasLeader); err != nil {
		t.Fatalf("testagents: NOMAD_ADDR=%s: %v", addr, err)
	}
	return n
}

// nomadConfig is the configuration serai dev gives its agent (devstack).
func nomadConfig(dataDir string, ports []int, opts NomadOptions) string {
	o := devstack.NomadConfigOptions{
		Name: "serai-test-" + strconv.Itoa(ports[0]), DataDir: dataDir,
		HTTP: ports[0], RPC: ports[1], Serf: ports[2],
	}
	if opts.Consul != nil {
		o.ConsulAddr = opts.Consul.Addr
		o.ConsulToken = opts.Consul.Tokens.Nomad
	}
	if opts.Vault != nil {
		o.VaultAddr = opts.Vault.Addr
	}
	return devstack.NomadConfig(o)
}

func (n *Nomad) hasLeader(ctx context.Context) error {
	leader, err := n.Client.Status().Leader()
	if err != nil {
		return err
	}
	if leader == "" {
		return errors.New("no leader yet")
	}
	return nil
}

func (n *Nomad) ready(ctx context.Context) error {
	if err := n.hasLeader(ctx); err != nil {
		return err
	}
	q := (&nomadapi.QueryOptions{}).WithContext(ctx)
	nodes, _, err := n.Client.Nodes().List(q)
	if err != nil {
		return err
	}
	if len(nodes) != 1 {
		return fmt.Errorf("%d client nodes registered, want 1", len(nodes))
	}
	stub := nodes[0]
	if stub.Status != "ready" || stub.SchedulingEligibility != "eligible" {
		return fmt.Errorf("node %s is %s/%s", stub.ID, stub.Status, stub.SchedulingEligibility)
	}
	node, _, err := n.Client.Nodes().Info(stub.ID, q)
	if err != nil {
		return err
	}
	d := node.Drivers["raw_exec"]
	if d == nil || !d.Detected || !d.Healthy {
		return fmt.Errorf("raw_exec driver not healthy on node %s: %+v", stub.ID, d)
	}
	// Jobs with Consul services or Vault blocks get implicit constraints
	// on these attributes; a node without them looks ready but places
	// nothing.
	if n.opts.Consul != nil && node.Attributes["consul.version"] == "" {
		return errors.New("node has not fingerprinted Consul yet")
	}
	if n.opts.Vault != nil && node.Attributes["vault.version"] == "" {
		return errors.New("node has not fingerprinted Vault yet")
	}
	n.NodeID = stub.ID
	return nil
}

// Node returns the agent's client node, failing the test when it cannot.
func (n *Nomad) Node(t testing.TB) *nomadapi.Node {
	t.Helper()
	id := n.NodeID
	if id == "" {
		nodes, _, err := n.Client.Nodes().List(nil)
		if err != nil || len(nodes) == 0 {
			t.Fatalf("testagents: listing nomad nodes: %d nodes, %v", len(nodes), err)
		}
		id = nodes[0].ID
	}
	node, _, err := n.Client.Nodes().Info(id, nil)
	if err != nil {
		t.Fatalf("testagents: nomad node %s: %v", id, err)
	}
	return node
}

func configureJWTAuth(ctx context.Context, vc *vaultapi.Client, nomadAddr string) error {
	return devstack.ConfigureJWTAuth(ctx, vc, nomadAddr)
}

// drain purges every job and waits until no allocation runs any more, then
// asks the client to garbage-collect them so their tmpfs mounts go away.
// Interrupting the agent before that would orphan executors and logmons.
func (n *Nomad) drain(t testing.TB) {
	t.Helper()
	if done, _ := n.proc.exited(); done {
		t.Errorf("testagents: nomad exited before cleanup: %v", n.proc.waitErr)
		return
	}
	nodes := map[string]string{}
	if n.NodeID != "" {
		nodes[n.NodeID] = n.DataDir
	}
	drainNomad(t, n.Client, n.proc, nodes)
}

// drainNomad purges every job of the cluster cl talks to, waits until no
// allocation runs, then garbage-collects each client node (nodeID → its
// data dir) and waits for its allocation directories to go.
func drainNomad(t testing.TB, cl *nomadapi.Client, server *process, nodes map[string]string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), nomadDrainTimeout)
	defer cancel()
	all := &nomadapi.QueryOptions{Namespace: "*"}
	jobs, _, err := cl.Jobs().List(all.WithContext(ctx))
	if err != nil {
		t.Errorf("testagents: listing nomad jobs for cleanup: %v", err)
		return
	}
	for _, j := range jobs {
		w := (&nomadapi.WriteOptions{Namespace: j.Namespace}).WithContext(ctx)
		if _, _, err := cl.Jobs().DeregisterOpts(j.ID, &nomadapi.DeregisterOptions{Purge: true}, w); err != nil {
			t.Errorf("testagents: purging nomad job %s: %v", j.ID, err)
		}
	}
	err = waitFor(ctx, server, "nomad allocations to stop", func(ctx context.Context) error {
		allocs, _, err := cl.Allocations().List(all.WithContext(ctx))
		if err != nil {
			return err
		}
		var live []string
		for _, a := range allocs {
			switch a.ClientStatus {
			case nomadapi.AllocClientStatusComplete, nomadapi.AllocClientStatusFailed, nomadapi.AllocClientStatusLost:
			default:
				live = append(live, fmt.Sprintf("%s (%s/%s, %s)", a.ID[:8], a.JobID, a.TaskGroup, a.ClientStatus))
			}
		}
		if len(live) > 0 {
			return fmt.Errorf("still running: %s", strings.Join(live, ", "))
		}
		return nil
	})
	if err != nil {
		t.Errorf("testagents: %v", err)
		return
	}
	for id, dataDir := range nodes {
		// The endpoint answers with an empty body, which the API client
		// reports as io.EOF after the collection has happened.
		if err := cl.Nodes().GC(id, (&nomadapi.QueryOptions{}).WithContext(ctx)); err != nil && !errors.Is(err, io.EOF) {
			t.Logf("testagents: nomad client GC of node %s: %v", id, err)
			continue
		}
		// Client GC destroys allocation runners asynchronously; their
		// directories (and mounts) disappear last.
		allocRoot := filepath.Join(dataDir, "alloc")
		_ = waitFor(ctx, server, "allocation directories to be removed", func(context.Context) error {
			ents, err := os.ReadDir(allocRoot)
			if err != nil || len(ents) == 0 {
				return nil
			}
			return fmt.Errorf("%d left", len(ents))
		})
	}
}

// Pid is the agent's process ID (0 when reused), for tests that stop
// and continue it (SIGSTOP, SIGCONT) to play a hung Nomad.
func (n *Nomad) Pid() int {
	if n.proc == nil {
		return 0
	}
	return n.proc.cmd.Process.Pid
}
