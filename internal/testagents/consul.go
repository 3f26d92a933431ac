package testagents

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	consulapi "github.com/hashicorp/consul/api"

	"github.com/seraihq/serai/internal/devstack"
)

// consulReadyTimeout is generous because tests run on small machines next to
// compilers; a dev agent is usually ready in well under two seconds.
const consulReadyTimeout = 60 * time.Second

// Consul is a Consul agent a test can talk to.
type Consul struct {
	// Addr is the HTTP API address, "127.0.0.1:port" (no scheme), the form
	// Nomad's consul block and CONSUL_HTTP_ADDR take.
	Addr string
	// Client talks to Addr.
	Client *consulapi.Client
	// NodeName is the agent's node name ("" when reused).
	NodeName string
	// LogPath is the agent's log file ("" when reused).
	LogPath string
	// Reused is true when CONSUL_HTTP_ADDR named an existing agent.
	Reused bool

	proc *process
}

// StartConsul starts a `consul agent -dev` on free loopback ports, or reuses
// the agent named by CONSUL_HTTP_ADDR, and waits until it has a leader and
// its own node is in the catalog (so service registrations are accepted). It
// skips the test when no consul binary is on PATH.
func StartConsul(t testing.TB) *Consul {
	t.Helper()
	return StartConsulWith(t, ConsulOptions{})
}

// ConsulOptions changes the dev agent StartConsul runs; ignored when an
// agent is reused.
type ConsulOptions struct {
	// HTTPMaxConnsPerClient raises limits.http_max_conns_per_client
	// (Consul's default 200). Every blocking query holds a connection, so
	// a client watching many services at once needs more.
	HTTPMaxConnsPerClient int
	// CheckCAFile is a PEM CA file the agent's HTTPS health checks trust
	// (tls.defaults.ca_file with enable_agent_tls_for_checks) instead of
	// the system's roots.
	CheckCAFile string
}

// StartConsulWith is StartConsul with options.
func StartConsulWith(t testing.TB, opts ConsulOptions) *Consul {
	t.Helper()
	if addr := os.Getenv("CONSUL_HTTP_ADDR"); addr != "" {
		return reuseConsul(t, addr)
	}
	return startConsul(t, "127.0.0.1", opts)
}

const consulMissing = "consul not on PATH: run .ci/run, which builds Consul v1.14.4 from the Go module proxy into ~/.cache/serai/bin"

// startConsul starts a dev agent (a server) bound to host, an address of
// this machine; its HTTP API also listens on 127.0.0.1.
func startConsul(t testing.TB, host string, opts ConsulOptions) *Consul {
	t.Helper()
	bin, _, ok := lookBinary("consul")
	if !ok {
		t.Skip(consulMissing)
	}

	ports, err := freePorts(5)
	if err != nil {
		t.Fatalf("testagents: %v", err)
	}
	httpPort, serverPort, serfLAN, serfWAN, grpcPort := ports[0], ports[1], ports[2], ports[3], ports[4]
	dir := newProcessDir(t, "consul")
	node := "serai-test-" + strconv.Itoa(httpPort)
	cfg := devstack.ConsulConfig(node, devstack.ConsulPorts{
		HTTP: httpPort, Server: serverPort, SerfLAN: serfLAN, SerfWAN: serfWAN, GRPC: grpcPort,
	})
	if host != "127.0.0.1" {
		// Another address of this machine (a test's network namespace
		// host); the HTTP API stays on loopback too.
		cfg["bind_addr"], cfg["advertise_addr"], cfg["advertise_addr_wan"] = host, host, host
		cfg["client_addr"] = "127.0.0.1 " + host
	}
	if opts.HTTPMaxConnsPerClient > 0 {
		cfg["limits"] = map[string]any{"http_max_conns_per_client": opts.HTTPMaxConnsPerClient}
	}
	if opts.CheckCAFile != "" {
		cfg["tls"] = map[string]any{"defaults": map[string]any{"ca_file": opts.CheckCAFile}}
		cfg["enable_agent_tls_for_checks"] = true
	}
	cfgPath := filepath.Join(dir, "consul.json")
	if err := writeJSON(cfgPath, cfg); err != nil {
		t.Fatalf("testagents: %v", err)
	}

	begin := time.Now()
	p := startProcess(t, "consul", dir, bin, []string{"agent", "-dev", "-config-file", cfgPath}, []int{httpPort, serverPort, serfLAN, serfWAN, grpcPort})
	t.Cleanup(func() { p.stop(t) })

	c := &Consul{
		Addr:     net.JoinHostPort(host, strconv.Itoa(httpPort)),
		NodeName: node,
		LogPath:  p.logPath,
		proc:     p,
	}
	c.Client, err = newConsulClient(c.Addr)
	if err != nil {
		t.Fatalf("testagents: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), consulReadyTimeout)
	defer cancel()
	if err := waitFor(ctx, p, "a Consul leader and catalog entry", c.ready); err != nil {
		failStart(t, p, err)
	}
	t.Logf("testagents: consul ready at %s in %s", c.Addr, time.Since(begin).Round(time.Millisecond))
	return c
}

func reuseConsul(t testing.TB, addr string) *Consul {
	t.Helper()
	addr = strings.TrimPrefix(strings.TrimPrefix(addr, "http://"), "https://")
	cfg := consulapi.DefaultConfig() // honours CONSUL_HTTP_TOKEN, TLS settings
	cl, err := consulapi.NewClient(cfg)
	if err != nil {
		t.Fatalf("testagents: consul client for CONSUL_HTTP_ADDR: %v", err)
	}
	c := &Consul{Addr: addr, Client: cl, Reused: true}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := waitFor(ctx, nil, "a Consul leader", c.hasLeader); err != nil {
		t.Fatalf("testagents: CONSUL_HTTP_ADDR=%s: %v", addr, err)
	}
	return c
}

func newConsulClient(addr string) (*consulapi.Client, error) {
	// Not DefaultConfig: CONSUL_* variables meant for some other agent
	// (token, TLS, namespace) must not leak into the test's own agent.
	return consulapi.NewClient(&consulapi.Config{Address: addr, Scheme: "http"})
}

func (c *Consul) hasLeader(ctx context.Context) error {
	q := (&consulapi.QueryOptions{}).WithContext(ctx)
	leader, err := c.Client.Status().LeaderWithQueryOptions(q)
	if err != nil {
		return err
	}
	if leader == "" {
		return errors.New("no leader yet")
	}
	return nil
}

func (c *Consul) ready(ctx context.Context) error {
	if err := c.hasLeader(ctx); err != nil {
		return err
	}
	q := (&consulapi.QueryOptions{}).WithContext(ctx)
	n, _, err := c.Client.Catalog().Node(c.NodeName, q)
	if err != nil {
		return err
	}
	if n == nil {
		return fmt.Errorf("node %s not in the catalog yet", c.NodeName)
	}
	return nil
}

func writeJSON(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, b, 0o600)
}
