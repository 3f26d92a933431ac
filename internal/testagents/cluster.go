package testagents

import (
	"context"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	nomadapi "github.com/hashicorp/nomad/api"
)

// A Cluster is several datacenters on one machine: one Consul server, one
// Nomad server (and optionally an OpenBao/Vault dev server) in the host's
// network namespace, and per datacenter a network namespace holding that
// datacenter's Consul client agent, Nomad client and (optionally) its own
// Docker daemon.
//
// Addressing: a bridge the cluster creates holds 10.231.N.1/24, the
// address every server agent listens on; each datacenter's namespace is
// joined to the bridge by a veth pair and has 10.231.N.(10+i)/24 and no
// other route, so nothing in it can reach beyond this machine (no default
// route, no NAT out of the host). N is chosen so that no address of the
// machine is already in the /24.
//
// Everything is torn down by the test's cleanup, in dependency order
// (jobs purged and allocations collected, Nomad clients, Nomad server,
// Docker daemons after checking they hold no container, Consul clients,
// Vault, Consul server), and then the namespaces, veths and bridge are
// deleted and checked gone.
type Cluster struct {
	// HostAddr is the bridge address in the host namespace, where the
	// servers (and whatever the test serves to the datacenters) listen.
	HostAddr string
	// Consul is the Consul server; Consul.Addr is HostAddr:port.
	Consul *Consul
	// Vault is the Vault dev server, when ClusterOptions.Vault was set.
	Vault *Vault
	// NomadAddr is the Nomad server's HTTP API, "http://HostAddr:port".
	NomadAddr string
	// Nomad talks to NomadAddr.
	Nomad *nomadapi.Client
	// Nodes are the datacenters' client hosts, in ClusterOptions order.
	Nodes []*ClusterNode

	id       string
	bridge   string
	rpcAddr  string
	subnet   int
	nomadSrv *process
}

// ClusterNode is one datacenter's host: a network namespace with a Consul
// client agent, a Nomad client and optionally a Docker daemon.
type ClusterNode struct {
	Datacenter string
	// Netns is the namespace's name (`ip netns exec NAME …`).
	Netns string
	// Addr is the namespace's address on the cluster bridge.
	Addr string
	// Link is the host end of the namespace's veth; CutLink takes it down.
	Link string
	// NodeID is the Nomad client's node ID.
	NodeID string
	// DataDir is the Nomad client's data_dir.
	DataDir string
	// Docker is the datacenter's own Docker daemon (nil without Docker).
	Docker *Docker
}

// ClusterOptions say what a cluster runs.
type ClusterOptions struct {
	// Datacenters are the Nomad datacenters, one client host each;
	// default dc1, dc2, dc3.
	Datacenters []string
	// Vault starts a Vault dev server on HostAddr and wires Nomad's
	// workload-identity integration to it, as StartNomad does.
	Vault bool
	// Docker starts a Docker daemon in each datacenter's namespace and
	// enables Nomad's docker driver there (images are never garbage
	// collected: nothing can be pulled again).
	Docker bool
	// ConsulACL runs Consul with ACLs on (default deny) as StartConsulWith
	// does: the server and every client agent, with the Nomad agents
	// holding Consul.Tokens.Nomad.
	ConsulACL bool
	// HeartbeatGrace is how long the Nomad server waits past a missed
	// client heartbeat before it considers the node gone; default 5s
	// (Nomad's own default is 10s with a 10s minimum TTL).
	HeartbeatGrace time.Duration
}

// DefaultClusterOptions is a three-datacenter cluster without Vault or
// Docker.
func DefaultClusterOptions() ClusterOptions {
	return ClusterOptions{Datacenters: []string{"dc1", "dc2", "dc3"}, HeartbeatGrace: 5 * time.Second}
}

func (o ClusterOptions) withDefaults() ClusterOptions {
	d := DefaultClusterOptions()
	if len(o.Datacenters) == 0 {
		o.Datacenters = d.Datacenters
	}
	if o.HeartbeatGrace == 0 {
		o.HeartbeatGrace = d.HeartbeatGrace
	}
	return o
}

const clusterReadyTimeout = 180 * time.Second

// StartCluster starts a multi-datacenter cluster and waits until every
// Nomad client is ready in its datacenter (drivers healthy, Consul and,
// when wired, Vault fingerprinted) and every Consul client is a member. It
// skips the test, saying what is missing, when not root or when a binary
// (ip, nsenter, consul, nomad, and vault/bao or dockerd when asked for) is
// not on PATH.
func StartCluster(t testing.TB, opts ClusterOptions) *Cluster {
	t.Helper()
	opts = opts.withDefaults()
	if os.Geteuid() != 0 {
		t.Skip("a multi-datacenter cluster needs root (network namespaces, veths, a bridge)")
	}
	for _, b := range []struct{ bin, why string }{
		{"ip", "ip not on PATH: install Debian's iproute2"},
		{"nsenter", "nsenter not on PATH: install Debian's util-linux"},
		{"consul", consulMissing},
		{"nomad", "nomad not on PATH: see README, Agents for the integration suites"},
	} {
		if _, _, ok := lookBinary(b.bin); !ok {
			t.Skip(b.why)
		}
	}
	if opts.Docker {
		if _, _, ok := lookBinary("dockerd"); !ok {
			t.Skip(dockerMissing)
		}
		if _, _, ok := lookBinary("docker"); !ok {
			t.Skip("docker CLI not on PATH (scripts/images needs it): install Debian's docker.io")
		}
	}
	if opts.Vault {
		if _, _, ok := lookBinary("vault", "bao"); !ok {
			t.Skip("neither vault nor bao on PATH: see README, Agents for the integration suites")
		}
	}
	begin := time.Now()
	c := &Cluster{id: randomID()[:6]}
	c.network(t, opts.Datacenters)

	c.Consul = startConsul(t, c.HostAddr, ConsulOptions{ACL: opts.ConsulACL})
	if opts.Vault {
		c.Vault = startVault(t, c.HostAddr)
	}
	for _, n := range c.Nodes {
		c.startConsulClient(t, n)
	}
	if opts.Docker {
		for _, n := range c.Nodes {
			n.Docker = startDockerd(t, "dockerd-"+n.Datacenter, "/run/netns/"+n.Netns)
		}
	}
	c.startNomadServer(t, opts)
	for _, n := range c.Nodes {
		c.startNomadClient(t, n, opts)
	}
	// Registered last, so it runs first: jobs purged and allocations
	// collected while every agent is still up.
	t.Cleanup(func() {
		if done, err := c.nomadSrv.exited(); done {
			t.Errorf("testagents: nomad server exited before cleanup: %v", err)
			return
		}
		for _, n := range c.Nodes {
			c.RestoreLink(t, n.Datacenter)
		}
		nodes := map[string]string{}
		for _, n := range c.Nodes {
			if n.NodeID != "" {
				nodes[n.NodeID] = n.DataDir
			}
		}
		drainNomad(t, c.Nomad, c.nomadSrv, nodes)
	})

	ctx, cancel := context.WithTimeout(context.Background(), clusterReadyTimeout)
	defer cancel()
	if err := waitFor(ctx, c.nomadSrv, "every datacenter's Nomad client to be ready", func(ctx context.Context) error {
		return c.ready(ctx, opts)
	}); err != nil {
		failStart(t, c.nomadSrv, err)
	}
	if err := waitFor(ctx, nil, "every datacenter's Consul client to be a member", c.consulMembers); err != nil {
		t.Fatalf("testagents: %v", err)
	}
	if c.Vault != nil {
		if err := configureJWTAuth(ctx, c.Vault.Client, c.NomadAddr); err != nil {
			t.Fatalf("testagents: configuring %s auth in Vault: %v", JWTAuthPath, err)
		}
	}
	t.Logf("testagents: cluster %s ready in %s: servers on %s, datacenters %s", c.id, time.Since(begin).Round(time.Millisecond), c.HostAddr, strings.Join(opts.Datacenters, ", "))
	return c
}

// Node returns the datacenter's host, failing the test for an unknown one.
func (c *Cluster) Node(t testing.TB, dc string) *ClusterNode {
	t.Helper()
	for _, n := range c.Nodes {
		if n.Datacenter == dc {
			return n
		}
	}
	t.Fatalf("testagents: cluster has no datacenter %q", dc)
	return nil
}

// CutLink takes the datacenter's veth down: its hosts keep running but
// nothing reaches them and they reach nothing, as when a datacenter's
// uplink fails.
func (c *Cluster) CutLink(t testing.TB, dc string) {
	t.Helper()
	if err := ip("link", "set", c.Node(t, dc).Link, "down"); err != nil {
		t.Fatalf("testagents: cutting %s's link: %v", dc, err)
	}
}

// RestoreLink brings a cut datacenter back.
func (c *Cluster) RestoreLink(t testing.TB, dc string) {
	t.Helper()
	if err := ip("link", "set", c.Node(t, dc).Link, "up"); err != nil {
		t.Errorf("testagents: restoring %s's link: %v", dc, err)
	}
}

func ip(args ...string) error {
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// pickSubnet returns N such that no address of this machine lies in
// 10.231.N.0/24.
func pickSubnet() (int, error) {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return 0, err
	}
	used := map[int]bool{}
	for _, a := range addrs {
		if ipn, ok := a.(*net.IPNet); ok {
			if v4 := ipn.IP.To4(); v4 != nil && v4[0] == 10 && v4[1] == 231 {
				used[int(v4[2])] = true
			}
		}
	}
	for range 100 {
		n := 1 + mrand.IntN(250)
		if !used[n] {
			return n, nil
		}
	}
	return 0, errors.New("no free 10.231.N.0/24 subnet")
}

// network creates the bridge, the namespaces and their veths, and registers
// their removal (which runs after every agent has stopped).
func (c *Cluster) network(t testing.TB, dcs []string) {
	t.Helper()
	n, err := pickSubnet()
	if err != nil {
		t.Fatalf("testagents: %v", err)
	}
	c.subnet = n
	c.bridge = "srb" + c.id
	c.HostAddr = fmt.Sprintf("10.231.%d.1", n)
	t.Cleanup(func() { c.removeNetwork(t) })
	steps := [][]string{
		// Frames between the datacenters cross this bridge; with
		// br_netfilter loaded (dockerd loads it) they would also pass the
		// host's iptables FORWARD chain, which a system Docker sets to
		// DROP. The cluster's own bridge opts out.
		{"link", "add", c.bridge, "type", "bridge", "nf_call_iptables", "0", "nf_call_ip6tables", "0", "nf_call_arptables", "0"},
		{"addr", "add", c.HostAddr + "/24", "dev", c.bridge},
		{"link", "set", c.bridge, "up"},
	}
	for i, dc := range dcs {
		node := &ClusterNode{
			Datacenter: dc,
			Netns:      fmt.Sprintf("serai-%s-%s", c.id, dc),
			Addr:       fmt.Sprintf("10.231.%d.%d", n, 10+i),
			Link:       fmt.Sprintf("srv%s%d", c.id, i),
		}
		c.Nodes = append(c.Nodes, node)
		steps = append(steps,
			[]string{"netns", "add", node.Netns},
			[]string{"link", "add", node.Link, "type", "veth", "peer", "name", "eth0", "netns", node.Netns},
			[]string{"link", "set", node.Link, "master", c.bridge, "up"},
			[]string{"-n", node.Netns, "addr", "add", node.Addr + "/24", "dev", "eth0"},
			[]string{"-n", node.Netns, "link", "set", "eth0", "up"},
			[]string{"-n", node.Netns, "link", "set", "lo", "up"},
		)
	}
	for _, s := range steps {
		if err := ip(s...); err != nil {
			t.Fatalf("testagents: %v", err)
		}
	}
}

// removeNetwork deletes what network created and checks it is gone.
// Deleting a namespace deletes its veth end, and with it the pair.
func (c *Cluster) removeNetwork(t testing.TB) {
	t.Helper()
	for _, n := range c.Nodes {
		if err := ip("netns", "del", n.Netns); err != nil && !strings.Contains(err.Error(), "No such file") {
			t.Errorf("testagents: %v", err)
		}
	}
	// The kernel destroys a deleted namespace's devices (and with them
	// the host ends of the veths) asynchronously; give it a moment before
	// deleting a host end by hand.
	deadline := time.Now().Add(5 * time.Second)
	for _, n := range c.Nodes {
		for time.Now().Before(deadline) {
			if _, err := net.InterfaceByName(n.Link); err != nil {
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
		if _, err := net.InterfaceByName(n.Link); err == nil {
			if err := ip("link", "del", n.Link); err != nil && !strings.Contains(err.Error(), "Cannot find device") {
				t.Errorf("testagents: %v", err)
			}
		}
	}
	if _, err := net.InterfaceByName(c.bridge); err == nil {
		if err := ip("link", "del", c.bridge); err != nil {
			t.Errorf("testagents: %v", err)
		}
	}
	// Check: no interface or namespace of this cluster is left.
	ifs, _ := net.Interfaces()
	for _, i := range ifs {
		if strings.Contains(i.Name, c.id) {
			t.Errorf("testagents: interface %s left behind", i.Name)
		}
	}
	if ents, err := os.ReadDir("/run/netns"); err == nil {
		for _, e := range ents {
			if strings.Contains(e.Name(), c.id) {
				t.Errorf("testagents: network namespace %s left behind", e.Name())
			}
		}
	}
}

// startInNetns starts an agent inside a datacenter's namespace. Its ports
// live in that namespace, so the loopback port check after stop does not
// apply; the marker-based leftover check does.
func startInNetns(t testing.TB, name, dir string, n *ClusterNode, bin string, args []string) *process {
	t.Helper()
	nsenter, _, _ := lookBinary("nsenter")
	full := append([]string{"--net=/run/netns/" + n.Netns, "--", bin}, args...)
	return startProcess(t, name, dir, nsenter, full, nil)
}

// startConsulClient starts a Consul client agent in the datacenter's
// namespace, joined to the server. It serves HTTP on 127.0.0.1:8500 inside
// the namespace, where that datacenter's Nomad client finds it.
func (c *Cluster) startConsulClient(t testing.TB, n *ClusterNode) {
	t.Helper()
	bin, _, _ := lookBinary("consul")
	dir := newProcessDir(t, "consul-"+n.Datacenter)
	serfLAN := consulSerfLAN(t, c.Consul)
	cfg := map[string]any{
		"node_name":                   c.nodeName(n),
		"data_dir":                    filepath.Join(dir, "data"),
		"bind_addr":                   n.Addr,
		"advertise_addr":              n.Addr,
		"client_addr":                 "127.0.0.1",
		"retry_join":                  []string{net.JoinHostPort(c.HostAddr, strconv.Itoa(serfLAN))},
		"disable_update_check":        true,
		"disable_anonymous_signature": true,
		"log_level":                   "INFO",
		"node_meta":                   map[string]string{"datacenter": n.Datacenter},
		"ports": map[string]int{
			"http": 8500, "https": -1, "dns": -1, "grpc": -1, "grpc_tls": -1,
		},
	}
	if tok := c.Consul.ManagementToken; tok != "" {
		// The agent's own token: what a client agent needs for itself
		// is not what the tests examine.
		cfg["acl"] = map[string]any{
			"enabled": true, "default_policy": "deny", "enable_token_persistence": true,
			"tokens": map[string]string{"agent": tok},
		}
	}
	cfgPath := filepath.Join(dir, "consul.json")
	if err := writeJSON(cfgPath, cfg); err != nil {
		t.Fatalf("testagents: %v", err)
	}
	p := startInNetns(t, "consul-"+n.Datacenter, dir, n, bin, []string{"agent", "-config-file", cfgPath})
	t.Cleanup(func() { p.stop(t) })
}

func (c *Cluster) nodeName(n *ClusterNode) string {
	return fmt.Sprintf("serai-%s-%s", c.id, n.Datacenter)
}

// consulSerfLAN asks the server agent for its LAN gossip port.
func consulSerfLAN(t testing.TB, cs *Consul) int {
	t.Helper()
	self, err := cs.Client.Agent().Self()
	if err != nil {
		t.Fatalf("testagents: consul agent self: %v", err)
	}
	if m, ok := self["Member"]; ok {
		if p, ok := m["Port"].(float64); ok {
			return int(p)
		}
	}
	t.Fatalf("testagents: consul agent self: no member port in %v", self["Member"])
	return 0
}

func (c *Cluster) consulMembers(ctx context.Context) error {
	members, err := c.Consul.Client.Agent().Members(false)
	if err != nil {
		return err
	}
	alive := map[string]bool{}
	for _, m := range members {
		if m.Status == 1 { // serf.StatusAlive
			alive[m.Name] = true
		}
	}
	for _, n := range c.Nodes {
		if !alive[c.nodeName(n)] {
			return fmt.Errorf("consul client %s is not an alive member", c.nodeName(n))
		}
	}
	return nil
}

func (c *Cluster) startNomadServer(t testing.TB, opts ClusterOptions) {
	t.Helper()
	bin, _, _ := lookBinary("nomad")
	ports, err := freePorts(3)
	if err != nil {
		t.Fatalf("testagents: %v", err)
	}
	dir := newProcessDir(t, "nomad-server")
	q := strconv.Quote
	grace := opts.HeartbeatGrace.String()
	var b strings.Builder
	fmt.Fprintf(&b, `name                 = %s
data_dir             = %s
bind_addr            = %s
datacenter           = %s
log_level            = "INFO"
disable_update_check = true

ports {
  http = %d
  rpc  = %d
  serf = %d
}

server {
  enabled           = true
  bootstrap_expect  = 1
  heartbeat_grace   = %s
  min_heartbeat_ttl = %s
}

consul {
  address          = %s
  token            = %s
  server_auto_join = false
  client_auto_join = false
}
`, q("serai-"+c.id+"-server"), q(filepath.Join(dir, "data")), q(c.HostAddr), q(c.Nodes[0].Datacenter),
		ports[0], ports[1], ports[2], q(grace), q(grace), q(c.Consul.Addr), q(c.Consul.Tokens.Nomad))
	if c.Vault != nil {
		b.WriteString(c.vaultBlock())
	}
	cfgPath := filepath.Join(dir, "nomad.hcl")
	if err := os.WriteFile(cfgPath, []byte(b.String()), 0o600); err != nil {
		t.Fatalf("testagents: %v", err)
	}
	p := startProcess(t, "nomad-server", dir, bin, []string{"agent", "-config", cfgPath}, nil)
	t.Cleanup(func() { p.stop(t) })
	c.nomadSrv = p
	c.NomadAddr = "http://" + net.JoinHostPort(c.HostAddr, strconv.Itoa(ports[0]))
	c.Nomad, err = nomadapi.NewClient(&nomadapi.Config{Address: c.NomadAddr, Region: "global"})
	if err != nil {
		t.Fatalf("testagents: %v", err)
	}
	c.rpcAddr = net.JoinHostPort(c.HostAddr, strconv.Itoa(ports[1]))
}

func (c *Cluster) vaultBlock() string {
	q := strconv.Quote
	return fmt.Sprintf(`
vault {
  enabled               = true
  address               = %s
  jwt_auth_backend_path = %s
  default_identity {
    aud = [%s]
    ttl = "1h"
  }
}
`, q(c.Vault.Addr), q(JWTAuthPath), q(WorkloadIdentityAudience))
}

func (c *Cluster) startNomadClient(t testing.TB, n *ClusterNode, opts ClusterOptions) {
	t.Helper()
	bin, _, _ := lookBinary("nomad")
	// Short: Nomad's task API socket lives deep below the data dir, and
	// unix socket paths end at 108 bytes.
	dir := newProcessDir(t, "n"+n.Datacenter)
	n.DataDir = filepath.Join(dir, "data")
	q := strconv.Quote
	var b strings.Builder
	fmt.Fprintf(&b, `name                 = %s
data_dir             = %s
bind_addr            = %s
datacenter           = %s
log_level            = "INFO"
disable_update_check = true

server {
  enabled = false
}

client {
  enabled           = true
  servers           = [%s]
  network_interface = "eth0"
  options {
    # Without this the client probes cloud metadata addresses.
    "fingerprint.denylist" = "env_aws,env_gce,env_azure,env_digitalocean"
  }
}

consul {
  address          = "127.0.0.1:8500"
  token            = %s
  server_auto_join = false
  client_auto_join = false
}

plugin "raw_exec" {
  config {
    enabled = true
  }
}
`, q(c.nodeName(n)), q(n.DataDir), q(n.Addr), q(n.Datacenter), q(c.rpcAddr), q(c.Consul.Tokens.Nomad))
	if n.Docker != nil {
		fmt.Fprintf(&b, `
plugin "docker" {
  config {
    endpoint = %s
    # Images are built locally and cannot be pulled again.
    gc {
      image     = false
      container = true
    }
    volumes {
      enabled = false
    }
    allow_privileged = false
  }
}
`, q(n.Docker.Host))
	}
	if c.Vault != nil {
		b.WriteString(c.vaultBlock())
	}
	cfgPath := filepath.Join(dir, "nomad.hcl")
	if err := os.WriteFile(cfgPath, []byte(b.String()), 0o600); err != nil {
		t.Fatalf("testagents: %v", err)
	}
	p := startInNetns(t, "nomad-"+n.Datacenter, dir, n, bin, []string{"agent", "-config", cfgPath})
	t.Cleanup(func() { p.stop(t) })
}

// ready: every datacenter has exactly one ready, eligible node with the
// drivers and fingerprints the cluster promises.
func (c *Cluster) ready(ctx context.Context, opts ClusterOptions) error {
	q := (&nomadapi.QueryOptions{}).WithContext(ctx)
	leader, err := c.Nomad.Status().Leader()
	if err != nil {
		return err
	}
	if leader == "" {
		return errors.New("no Nomad leader yet")
	}
	stubs, _, err := c.Nomad.Nodes().List(q)
	if err != nil {
		return err
	}
	byDC := map[string]*nomadapi.NodeListStub{}
	for _, s := range stubs {
		byDC[s.Datacenter] = s
	}
	for _, n := range c.Nodes {
		s := byDC[n.Datacenter]
		if s == nil {
			return fmt.Errorf("no Nomad node in %s yet", n.Datacenter)
		}
		if s.Status != "ready" || s.SchedulingEligibility != "eligible" {
			return fmt.Errorf("node %s in %s is %s/%s", s.Name, n.Datacenter, s.Status, s.SchedulingEligibility)
		}
		node, _, err := c.Nomad.Nodes().Info(s.ID, q)
		if err != nil {
			return err
		}
		drivers := []string{"raw_exec"}
		if opts.Docker {
			drivers = append(drivers, "docker")
		}
		for _, d := range drivers {
			if di := node.Drivers[d]; di == nil || !di.Detected || !di.Healthy {
				return fmt.Errorf("%s driver not healthy on %s: %+v", d, n.Datacenter, di)
			}
		}
		if node.Attributes["consul.version"] == "" {
			return fmt.Errorf("node in %s has not fingerprinted Consul yet", n.Datacenter)
		}
		if c.Vault != nil && node.Attributes["vault.version"] == "" {
			return fmt.Errorf("node in %s has not fingerprinted Vault yet", n.Datacenter)
		}
		if got := node.Attributes["unique.network.ip-address"]; got != n.Addr {
			return fmt.Errorf("node in %s fingerprinted address %q, want %s", n.Datacenter, got, n.Addr)
		}
		n.NodeID = s.ID
	}
	return nil
}
