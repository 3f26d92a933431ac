package testagents

import (
	"context"
	"crypto/rand"
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
	// ManagementToken is the ACL management token Client uses; "" when
	// the agent runs without ACLs.
	ManagementToken string
	// Tokens are the tokens of serai's parts, made from the policies in
	// deploy/consul; all "" when the agent runs without ACLs.
	Tokens ConsulTokens

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
	// ACL turns Consul's ACLs on with default_policy "deny", creates the
	// policies in deploy/consul (each named by its file, without
	// ".policy.hcl") and a token for each part (Consul.Tokens).
	ACL bool
}

// ConsulTokens are ACL tokens of serai's parts, each holding exactly the
// policy of the same name in deploy/consul.
type ConsulTokens struct {
	Server string // serai-server: CONSUL_HTTP_TOKEN of `serai server`
	Router string // serai-router: CONSUL_HTTP_TOKEN of `serai router`
	Nomad  string // nomad-agent: the Nomad agent's consul { token }
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
	mgmt := ""
	if opts.ACL {
		mgmt = newUUID(t)
		cfg["acl"] = map[string]any{
			"enabled":                  true,
			"default_policy":           "deny",
			"enable_token_persistence": true,
			// The agent's own token is the management one: what the
			// agent needs for itself is not what the tests examine.
			"tokens": map[string]string{"initial_management": mgmt, "agent": mgmt},
		}
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

		ManagementToken: mgmt,
	}
	c.Client, err = c.NewClient(mgmt)
	if err != nil {
		t.Fatalf("testagents: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), consulReadyTimeout)
	defer cancel()
	if err := waitFor(ctx, p, "a Consul leader and catalog entry", c.ready); err != nil {
		failStart(t, p, err)
	}
	if opts.ACL {
		if err := c.makeSeraiTokens(ctx); err != nil {
			failStart(t, p, err)
		}
	}
	t.Logf("testagents: consul ready at %s in %s (ACLs %v)", c.Addr, time.Since(begin).Round(time.Millisecond), opts.ACL)
	return c
}

// ConsulPolicyDir is where serai's Consul ACL policies live, relative to
// the repository root.
const ConsulPolicyDir = "deploy/consul"

// ConsulPolicies reads the policies in ConsulPolicyDir: name (the file
// name without ".policy.hcl") → rules.
func ConsulPolicies() (map[string]string, error) {
	root, err := repoRoot()
	if err != nil {
		return nil, err
	}
	files, err := filepath.Glob(filepath.Join(root, ConsulPolicyDir, "*.policy.hcl"))
	if err != nil {
		return nil, err
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("no *.policy.hcl in %s", ConsulPolicyDir)
	}
	out := map[string]string{}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, err
		}
		out[strings.TrimSuffix(filepath.Base(f), ".policy.hcl")] = string(b)
	}
	return out, nil
}

// makeSeraiTokens creates every policy of ConsulPolicyDir and one token
// per part holding its policy alone.
func (c *Consul) makeSeraiTokens(ctx context.Context) error {
	pols, err := ConsulPolicies()
	if err != nil {
		return err
	}
	w := (&consulapi.WriteOptions{}).WithContext(ctx)
	for name, rules := range pols {
		if _, _, err := c.Client.ACL().PolicyCreate(&consulapi.ACLPolicy{Name: name, Rules: rules}, w); err != nil {
			return fmt.Errorf("create Consul policy %s from %s: %w", name, ConsulPolicyDir, err)
		}
	}
	for _, tk := range []struct {
		dst    *string
		policy string
	}{{&c.Tokens.Server, "serai-server"}, {&c.Tokens.Router, "serai-router"}, {&c.Tokens.Nomad, "nomad-agent"}} {
		if _, ok := pols[tk.policy]; !ok {
			return fmt.Errorf("%s has no %s.policy.hcl", ConsulPolicyDir, tk.policy)
		}
		if *tk.dst, err = c.token(ctx, tk.policy); err != nil {
			return err
		}
	}
	return nil
}

func (c *Consul) token(ctx context.Context, policies ...string) (string, error) {
	tk := &consulapi.ACLToken{Description: "serai test: " + strings.Join(policies, ",")}
	for _, p := range policies {
		tk.Policies = append(tk.Policies, &consulapi.ACLTokenPolicyLink{Name: p})
	}
	out, _, err := c.Client.ACL().TokenCreate(tk, (&consulapi.WriteOptions{}).WithContext(ctx))
	if err != nil {
		return "", fmt.Errorf("create Consul token for %v: %w", policies, err)
	}
	return out.SecretID, nil
}

// NewClient is a client of the agent that sends token ("" for none: the
// anonymous token).
func (c *Consul) NewClient(token string) (*consulapi.Client, error) {
	// Not DefaultConfig: CONSUL_* variables meant for some other agent
	// (a token above all) must not stand in for "no token".
	return consulapi.NewClient(&consulapi.Config{Address: c.Addr, Scheme: "http", Token: token})
}

func newUUID(t testing.TB) string {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatalf("testagents: %v", err)
	}
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
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
