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
	JWTAuthPath = "jwt-nomad"
	// WorkloadIdentityAudience is the audience of the default Vault
	// workload identity Nomad agents started here sign.
	WorkloadIdentityAudience = "vault.io"
)

// NomadOptions wires a Nomad agent to other agents.
type NomadOptions struct {
	// Consul, when set, is the agent Nomad registers services in. When nil
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

// nomadConfig renders the agent configuration. It is HCL rather than JSON
// because plugin blocks are only documented in HCL form.
func nomadConfig(dataDir string, ports []int, opts NomadOptions) string {
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
    "fingerprint.denylist" = "env_aws,env_gce,env_azure,env_digitalocean"
  }
}

plugin "raw_exec" {
  config {
    enabled = true
  }
}
`, q("serai-test-"+strconv.Itoa(ports[0])), q(dataDir),
		ports[0], ports[1], ports[2], ports[0], ports[1], ports[2])

	if opts.Consul != nil {
		fmt.Fprintf(&b, `
consul {
  address = %s
}
`, q(opts.Consul.Addr))
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
	if opts.Vault != nil {
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
`, q(opts.Vault.Addr), q(JWTAuthPath), q(WorkloadIdentityAudience))
	}
	return b.String()
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

// configureJWTAuth makes vc accept workload identities signed by the Nomad
// agent at nomadAddr, as Nomad's Vault integration guide describes. An
// existing mount is reconfigured, so several agents in a row can share one
// Vault (the last one started wins).
func configureJWTAuth(ctx context.Context, vc *vaultapi.Client, nomadAddr string) error {
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
