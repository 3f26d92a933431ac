package router

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	consulapi "github.com/hashicorp/consul/api"

	"github.com/seraihq/serai/contract"
	"github.com/seraihq/serai/internal/testagents"
	"github.com/seraihq/serai/internal/tlsreload"
	"github.com/seraihq/serai/internal/tlsreload/tlstest"
)

// The bound for a Consul change to reach the routing table.
const followWithin = time.Second

func putRoutes(t *testing.T, c *consulapi.Client, r *Routes) {
	t.Helper()
	b, err := EncodeRoutes(r)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.KV().Put(&consulapi.KVPair{Key: contract.RoutesKey(r.Endpoint), Value: b}, nil); err != nil {
		t.Fatal(err)
	}
}

// registerModel registers a model instance the way Nomad does (service
// serai-<endpoint>, variant/generation/model tags, job meta) with a TTL check the test
// can flip.
func registerModel(t *testing.T, c *consulapi.Client, endpoint, id, addr, variant string, gen int) {
	t.Helper()
	host, port, _ := net.SplitHostPort(addr)
	p := 0
	for _, ch := range port {
		p = p*10 + int(ch-'0')
	}
	err := c.Agent().ServiceRegister(&consulapi.AgentServiceRegistration{
		ID:      id,
		Name:    ServiceName(endpoint),
		Address: host,
		Port:    p,
		Tags:    []string{contract.TagVariant + variant, contract.TagGeneration + itoa(gen), contract.TagModel + "m-" + variant},
		Meta:    contract.ServiceMeta(endpoint, gen),
		Check:   &consulapi.AgentServiceCheck{CheckID: "check-" + id, TTL: "10m", Status: consulapi.HealthPassing},
	})
	if err != nil {
		t.Fatal(err)
	}
}

func itoa(n int) string {
	if n == 0 {
		return "0"
	}
	var b []byte
	for ; n > 0; n /= 10 {
		b = append([]byte{byte('0' + n%10)}, b...)
	}
	return string(b)
}

// startDiscovery runs ConsulDiscovery into rt until the test ends.
func startDiscovery(t *testing.T, rt *Router, c *consulapi.Client, cfg ConsulConfig) {
	t.Helper()
	cfg.Client = c
	cfg.Logger = testLogger(t)
	d := NewConsulDiscovery(cfg)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		d.Run(ctx, rt)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
}

func slotAddrs(rt *Router, endpoint string) map[string][]string {
	ep := rt.table.Load().endpoints[endpoint]
	if ep == nil {
		return nil
	}
	out := map[string][]string{}
	for v, vc := range ep.byVariant {
		for _, s := range vc.slots {
			for _, in := range s.insts {
				out[v] = append(out[v], in.addr)
			}
		}
	}
	return out
}

// healthModes runs f with each way the router watches instance health: a
// blocking query per endpoint, and one shared query for all of them.
func healthModes(t *testing.T, f func(t *testing.T, watches int)) {
	t.Run("per-endpoint", func(t *testing.T) { f(t, 0) })
	t.Run("shared", func(t *testing.T) { f(t, -1) })
}

// TestConsulDiscoveryFollowsChanges registers real model servers in a real
// Consul agent and checks that each change reaches the routing table within
// a second: registration, health going critical and back, the node going
// into maintenance and back, KV weights, deregistration and removal of the
// table.
func TestConsulDiscoveryFollowsChanges(t *testing.T) {
	healthModes(t, testConsulDiscoveryFollowsChanges)
}

func testConsulDiscoveryFollowsChanges(t *testing.T, watches int) {
	agent := testagents.StartConsul(t)
	c := agent.Client
	a, b := model(t, "a", nil), model(t, "b", nil)
	e := newEnv(t, Config{})
	startDiscovery(t, e.rt, c, ConsulConfig{EndpointWatches: watches})

	step := func(what string, cond func() bool) {
		t.Helper()
		took := waitFor(t, followWithin, what, cond)
		t.Logf("%-40s followed in %s", what, took.Round(time.Millisecond))
	}

	putRoutes(t, c, oneGen("demo", "a", 1, "b", 1))
	step("routing table appears", func() bool { return e.rt.table.Load().endpoints["demo"] != nil })

	registerModel(t, c, "demo", "demo-a-1", addrOf(a), "a", 1)
	step("instance of a registered", func() bool { return len(slotAddrs(e.rt, "demo")["a"]) == 1 })
	registerModel(t, c, "demo", "demo-b-1", addrOf(b), "b", 1)
	step("instance of b registered", func() bool { return len(slotAddrs(e.rt, "demo")["b"]) == 1 })

	// The "done" check: both variants answer through the router.
	seen := map[string]bool{}
	for i := 0; i < 200 && len(seen) < 2; i++ {
		resp, body := e.invoke("demo", []byte("payload"))
		mustStatus(t, resp, body, 200)
		if v := header(resp, "X-Amzn-Invoked-Production-Variant"); v != string(body) {
			t.Fatalf("variant header %q, model %q", v, body)
		}
		seen[string(body)] = true
	}
	if !seen["a"] || !seen["b"] {
		t.Fatalf("variants answering: %v", seen)
	}

	if err := c.Agent().UpdateTTL("check-demo-b-1", "failing", consulapi.HealthCritical); err != nil {
		t.Fatal(err)
	}
	step("b's health turns critical", func() bool { return len(slotAddrs(e.rt, "demo")["b"]) == 0 })
	for range 20 {
		resp, body := e.invoke("demo", []byte("x"))
		mustStatus(t, resp, body, 200)
		if string(body) != "a" {
			t.Fatalf("critical instance got traffic")
		}
	}
	if err := c.Agent().UpdateTTL("check-demo-b-1", "ok", consulapi.HealthPassing); err != nil {
		t.Fatal(err)
	}
	step("b's health passes again", func() bool { return len(slotAddrs(e.rt, "demo")["b"]) == 1 })

	// A node's own check fails its services without touching theirs.
	if err := c.Agent().EnableNodeMaintenance("test"); err != nil {
		t.Fatal(err)
	}
	step("node in maintenance", func() bool { return len(slotAddrs(e.rt, "demo")) == 0 })
	if err := c.Agent().DisableNodeMaintenance(); err != nil {
		t.Fatal(err)
	}
	step("node out of maintenance", func() bool {
		s := slotAddrs(e.rt, "demo")
		return len(s["a"]) == 1 && len(s["b"]) == 1
	})

	putRoutes(t, c, oneGen("demo", "a", 0, "b", 1))
	step("KV weights changed to a=0 b=1", func() bool {
		ep := e.rt.table.Load().endpoints["demo"]
		return ep != nil && len(ep.slots) == 1 && ep.slots[0].variant == "b"
	})
	for range 20 {
		resp, body := e.invoke("demo", []byte("x"))
		mustStatus(t, resp, body, 200)
		if string(body) != "b" {
			t.Fatalf("weight-0 variant got traffic")
		}
	}

	if err := c.Agent().ServiceDeregister("demo-b-1"); err != nil {
		t.Fatal(err)
	}
	step("b deregistered", func() bool { return len(slotAddrs(e.rt, "demo")["b"]) == 0 })
	resp, body := e.invoke("demo", []byte("x"))
	mustStatus(t, resp, body, 503)

	// An invalid table is refused and the previous one kept.
	if _, err := c.KV().Put(&consulapi.KVPair{Key: contract.RoutesKey("demo"), Value: []byte(`{"version":99}`)}, nil); err != nil {
		t.Fatal(err)
	}
	// A later valid write to the same prefix proves the invalid one was
	// seen (one watch reads the whole prefix in index order).
	putRoutes(t, c, oneGen("other", "a", 1))
	step("next table after an invalid one", func() bool { return e.rt.table.Load().endpoints["other"] != nil })
	if e.rt.table.Load().endpoints["demo"] == nil {
		t.Fatal("an invalid routing table removed the endpoint")
	}

	if _, err := c.KV().Delete(contract.RoutesKey("demo"), nil); err != nil {
		t.Fatal(err)
	}
	step("routing table deleted", func() bool { return e.rt.table.Load().endpoints["demo"] == nil })
	resp, body = e.invoke("demo", []byte("x"))
	mustStatus(t, resp, body, 400)
}

// tcpProxy stands between the router and Consul so a test can make Consul
// unreachable and bring it back on the same address.
type tcpProxy struct {
	t      *testing.T
	addr   string
	target string
	mu     sync.Mutex
	ln     net.Listener
	conns  map[net.Conn]bool
	wg     sync.WaitGroup
}

func startProxy(t *testing.T, target string) *tcpProxy {
	p := &tcpProxy{t: t, target: target, conns: map[net.Conn]bool{}}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p.addr = ln.Addr().String()
	p.serve(ln)
	t.Cleanup(func() { p.cut(); p.wg.Wait() })
	return p
}

func (p *tcpProxy) serve(ln net.Listener) {
	p.mu.Lock()
	p.ln = ln
	p.mu.Unlock()
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			u, err := net.Dial("tcp", p.target)
			if err != nil {
				c.Close()
				continue
			}
			p.mu.Lock()
			p.conns[c], p.conns[u] = true, true
			p.mu.Unlock()
			p.wg.Add(2)
			go func() { defer p.wg.Done(); io.Copy(u, c); u.Close() }()
			go func() { defer p.wg.Done(); io.Copy(c, u); c.Close() }()
		}
	}()
}

func (p *tcpProxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ln != nil {
		p.ln.Close()
		p.ln = nil
	}
	for c := range p.conns {
		c.Close()
	}
	clear(p.conns)
}

func (p *tcpProxy) restore() {
	ln, err := net.Listen("tcp", p.addr)
	if err != nil {
		p.t.Fatalf("re-listening on %s: %v", p.addr, err)
	}
	p.serve(ln)
}

// TestConsulOutageKeepsLastTable cuts the router off from Consul and checks
// that it keeps routing from the last table, reports the outage in its
// metrics, and recovers when Consul is back.
func TestConsulOutageKeepsLastTable(t *testing.T) {
	healthModes(t, testConsulOutageKeepsLastTable)
}

func testConsulOutageKeepsLastTable(t *testing.T, watches int) {
	agent := testagents.StartConsul(t)
	a := model(t, "a", nil)
	putRoutes(t, agent.Client, oneGen("demo", "a", 1))
	registerModel(t, agent.Client, "demo", "demo-a-1", addrOf(a), "a", 1)

	proxy := startProxy(t, agent.Addr)
	viaProxy, err := consulapi.NewClient(&consulapi.Config{Address: proxy.addr, Scheme: "http"})
	if err != nil {
		t.Fatal(err)
	}
	e := newEnv(t, Config{})
	startDiscovery(t, e.rt, viaProxy, ConsulConfig{RetryMin: 20 * time.Millisecond, RetryMax: 100 * time.Millisecond, EndpointWatches: watches})
	waitFor(t, 5*time.Second, "initial sync", func() bool { return len(slotAddrs(e.rt, "demo")["a"]) == 1 })

	proxy.cut()
	waitFor(t, 5*time.Second, "outage noticed", func() bool { return !e.rt.InSync() })
	for range 20 {
		resp, body := e.invoke("demo", []byte("x"))
		mustStatus(t, resp, body, 200)
	}
	if len(slotAddrs(e.rt, "demo")["a"]) != 1 {
		t.Fatal("table changed during the outage")
	}
	waitFor(t, 5*time.Second, "staleness grows", func() bool { return e.rt.staleness() > 0.05 })
	resp, err := e.client.Get(e.srv.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	mb, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(mb), "serai_router_discovery_up 0") {
		t.Error("/metrics does not show the outage")
	}

	proxy.restore()
	waitFor(t, 5*time.Second, "recovery", func() bool { return e.rt.InSync() })
	if e.rt.staleness() != 0 {
		t.Error("staleness not reset after recovery")
	}
	// And it follows changes again.
	putRoutes(t, agent.Client, oneGen("demo", "a", 1, "b", 1))
	waitFor(t, followWithin, "change after recovery", func() bool {
		_, ok := e.rt.table.Load().endpoints["demo"].byVariant["b"]
		return ok
	})
}

// The router switches between per-endpoint and shared health watches as
// endpoints come and go past EndpointWatches, and follows changes
// throughout, with no instance lost in the hand-over.
func TestConsulHealthWatchModeSwitch(t *testing.T) {
	agent := testagents.StartConsul(t)
	c := agent.Client
	m := model(t, "a", nil)
	e := newEnv(t, Config{})
	eps := []string{"e1", "e2", "e3"}
	for _, ep := range eps[:2] {
		putRoutes(t, c, oneGen(ep, "a", 1))
		registerModel(t, c, ep, ep+"-a-1", addrOf(m), "a", 1)
	}
	startDiscovery(t, e.rt, c, ConsulConfig{EndpointWatches: 2})
	all := func(eps ...string) func() bool {
		return func() bool {
			for _, ep := range eps {
				if len(slotAddrs(e.rt, ep)["a"]) != 1 {
					return false
				}
			}
			return true
		}
	}
	waitFor(t, 5*time.Second, "two endpoints, a watch each", all("e1", "e2"))

	// A third endpoint: one shared watch from now on.
	putRoutes(t, c, oneGen("e3", "a", 1))
	registerModel(t, c, "e3", "e3-a-1", addrOf(m), "a", 1)
	waitFor(t, followWithin, "the third endpoint", all("e1", "e2", "e3"))
	if err := c.Agent().UpdateTTL("check-e1-a-1", "failing", consulapi.HealthCritical); err != nil {
		t.Fatal(err)
	}
	waitFor(t, followWithin, "e1 critical, shared", func() bool { return len(slotAddrs(e.rt, "e1")["a"]) == 0 })
	if !all("e2", "e3")() {
		t.Fatal("the others lost their instances")
	}

	// Back to two: a watch each again.
	if _, err := c.KV().Delete(contract.RoutesKey("e3"), nil); err != nil {
		t.Fatal(err)
	}
	waitFor(t, followWithin, "e3 removed", func() bool { return e.rt.table.Load().endpoints["e3"] == nil })
	if err := c.Agent().UpdateTTL("check-e1-a-1", "ok", consulapi.HealthPassing); err != nil {
		t.Fatal(err)
	}
	waitFor(t, followWithin, "e1 passing, per endpoint", all("e1", "e2"))
	resp, body := e.invoke("e2", []byte("x"))
	mustStatus(t, resp, body, 200)
}

// More endpoints than Consul lets one address hold connections
// (limits.http_max_conns_per_client, 200 by default): the router loads
// them all and follows a change, on an agent left at its defaults. With a
// blocking query per endpoint (EndpointWatches: 1000) the endpoints past
// the limit never load.
func TestConsulManyEndpointsDefaultLimits(t *testing.T) {
	agent := testagents.StartConsul(t)
	c := agent.Client
	m := model(t, "a", nil)
	const n = 300
	ep := func(i int) string { return "ep" + itoa(i) }
	for i := range n {
		putRoutes(t, c, oneGen(ep(i), "a", 1))
		registerModel(t, c, ep(i), ep(i)+"-a-1", addrOf(m), "a", 1)
	}
	e := newEnv(t, Config{})
	start := time.Now()
	startDiscovery(t, e.rt, c, ConsulConfig{})
	loaded := func() int {
		k := 0
		for i := range n {
			if len(slotAddrs(e.rt, ep(i))["a"]) == 1 {
				k++
			}
		}
		return k
	}
	waitFor(t, 30*time.Second, "all endpoints loaded", func() bool { return loaded() == n })
	t.Logf("%d endpoints loaded in %s", n, time.Since(start).Round(time.Millisecond))
	if err := c.Agent().UpdateTTL("check-"+ep(n-1)+"-a-1", "failing", consulapi.HealthCritical); err != nil {
		t.Fatal(err)
	}
	took := waitFor(t, followWithin, "the last endpoint's instance critical", func() bool { return len(slotAddrs(e.rt, ep(n-1))["a"]) == 0 })
	t.Logf("a check flip among %d endpoints followed in %s", n, took.Round(time.Millisecond))
	if loaded() != n-1 {
		t.Errorf("%d endpoints with their instance, want %d", loaded(), n-1)
	}
	resp, body := e.invoke(ep(0), []byte("x"))
	mustStatus(t, resp, body, 200)
}

// TestServeRegistersAndShutsDownGracefully runs the whole server: it
// registers in Consul with a passing check, finishes an in-flight request
// after shutdown starts, deregisters, and leaks no goroutines.
func TestServeRegistersAndShutsDownGracefully(t *testing.T) {
	agent := testagents.StartConsul(t)
	c := agent.Client
	check := goroutineCheck(t)
	t.Run("scenario", func(t *testing.T) {
		started := make(chan struct{}, 1)
		slow := model(t, "slow", func(w http.ResponseWriter, r *http.Request) {
			started <- struct{}{}
			time.Sleep(500 * time.Millisecond)
			w.Write([]byte("done"))
		})
		putRoutes(t, c, oneGen("demo", "a", 1))
		registerModel(t, c, "demo", "demo-a-1", addrOf(slow), "a", 1)

		rt, err := New(Config{Logger: testLogger(t)})
		if err != nil {
			t.Fatal(err)
		}
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		served := make(chan error, 1)
		go func() {
			served <- Serve(ctx, rt, NewConsulDiscovery(ConsulConfig{Client: c, Logger: testLogger(t)}), ServerConfig{
				Listener: ln, Consul: c, Register: true, Logger: testLogger(t), ShutdownTimeout: 10 * time.Second,
			})
		}()
		base := "http://" + ln.Addr().String()

		waitFor(t, 5*time.Second, "router registered and passing", func() bool {
			entries, _, err := c.Health().Service(RouterServiceName, "", true, nil)
			return err == nil && len(entries) == 1
		})
		waitFor(t, 5*time.Second, "endpoint routable", func() bool { return len(slotAddrs(rt, "demo")["a"]) == 1 })

		tr := &http.Transport{}
		defer tr.CloseIdleConnections()
		hc := &http.Client{Transport: tr}
		result := make(chan string, 1)
		go func() {
			resp, err := hc.Post(base+"/endpoints/demo/invocations", "text/plain", strings.NewReader("x"))
			if err != nil {
				result <- err.Error()
				return
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			result <- resp.Status + " " + string(b)
		}()
		<-started
		cancel() // SIGTERM
		if got := <-result; got != "200 OK done" {
			t.Errorf("in-flight request during shutdown: %s", got)
		}
		select {
		case err := <-served:
			if err != nil {
				t.Errorf("Serve: %v", err)
			}
		case <-time.After(15 * time.Second):
			t.Fatal("Serve did not return")
		}
		entries, _, err := c.Health().Service(RouterServiceName, "", false, nil)
		if err != nil || len(entries) != 0 {
			t.Errorf("still registered after shutdown: %d entries, %v", len(entries), err)
		}
		if _, err := net.DialTimeout("tcp", ln.Addr().String(), time.Second); err == nil {
			t.Error("still accepting connections after shutdown")
		}
	})
	check()
}

// What changes an endpoint's fingerprint: its checks' status, set and
// tags, and its nodes' own checks; nothing of other endpoints, other
// nodes or other services.
func TestSharedHealthFingerprints(t *testing.T) {
	base := func() consulapi.HealthChecks {
		return consulapi.HealthChecks{
			{Node: "n1", CheckID: "serfHealth", Status: "passing"},
			{Node: "n2", CheckID: "serfHealth", Status: "passing"},
			{Node: "n1", CheckID: "c1", ServiceID: "s1", ServiceName: "serai-a", Status: "passing", ServiceTags: []string{"v=x"}},
			{Node: "n2", CheckID: "c2", ServiceID: "s2", ServiceName: "serai-b", Status: "passing"},
			{Node: "n1", CheckID: "c3", ServiceID: "s3", ServiceName: "web", Status: "passing"},
		}
	}
	before := fingerprints(base())
	if len(before) != 2 || before["a"] == "" || before["b"] == "" {
		t.Fatalf("prints %q", before)
	}
	for _, tc := range []struct {
		what    string
		change  func(consulapi.HealthChecks) consulapi.HealthChecks
		changed string // endpoints whose print must change
	}{
		{"a's check critical", func(cs consulapi.HealthChecks) consulapi.HealthChecks { cs[2].Status = "critical"; return cs }, "a"},
		{"a's tags", func(cs consulapi.HealthChecks) consulapi.HealthChecks { cs[2].ServiceTags = []string{"v=y"}; return cs }, "a"},
		{"n2 fails", func(cs consulapi.HealthChecks) consulapi.HealthChecks { cs[1].Status = "critical"; return cs }, "b"},
		{"n1 into maintenance", func(cs consulapi.HealthChecks) consulapi.HealthChecks {
			return append(cs, &consulapi.HealthCheck{Node: "n1", CheckID: "_node_maintenance", Status: "critical"})
		}, "a"},
		{"another service's check", func(cs consulapi.HealthChecks) consulapi.HealthChecks { cs[4].Status = "critical"; return cs }, ""},
		{"b's instance gone", func(cs consulapi.HealthChecks) consulapi.HealthChecks { return append(cs[:3], cs[4]) }, "b"},
		{"order only", func(cs consulapi.HealthChecks) consulapi.HealthChecks {
			slices.Reverse(cs)
			return cs
		}, ""},
	} {
		after := fingerprints(tc.change(base()))
		for _, ep := range []string{"a", "b"} {
			if got, want := after[ep] != before[ep], strings.Contains(tc.changed, ep); got != want {
				t.Errorf("%s: %s's print changed %v, want %v", tc.what, ep, got, want)
			}
		}
	}
}

// In the shared watch, an instance fetch that fails is reported and
// retried with back-off although no check changes again: the router is
// out of sync until the fetch succeeds, then holds the instances.
func TestSharedHealthFetchFailureIsRetried(t *testing.T) {
	agent := testagents.StartConsul(t)
	c := agent.Client
	m := model(t, "a", nil)
	putRoutes(t, c, oneGen("demo", "a", 1))

	// Consul as the router sees it: instance fetches fail while failing
	// is set; everything else passes through to the real agent.
	var failing atomic.Bool
	target, err := url.Parse("http://" + agent.Addr)
	if err != nil {
		t.Fatal(err)
	}
	rp := httputil.NewSingleHostReverseProxy(target)
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if failing.Load() && strings.HasPrefix(r.URL.Path, "/v1/health/service/") {
			http.Error(w, "injected", http.StatusInternalServerError)
			return
		}
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(front.Close)
	viaFront, err := consulapi.NewClient(&consulapi.Config{Address: strings.TrimPrefix(front.URL, "http://"), Scheme: "http"})
	if err != nil {
		t.Fatal(err)
	}
	e := newEnv(t, Config{})
	startDiscovery(t, e.rt, viaFront, ConsulConfig{EndpointWatches: -1, RetryMin: 20 * time.Millisecond, RetryMax: 100 * time.Millisecond})
	waitFor(t, 5*time.Second, "the table", func() bool { return e.rt.table.Load().endpoints["demo"] != nil })

	failing.Store(true)
	registerModel(t, c, "demo", "demo-a-1", addrOf(m), "a", 1)
	waitFor(t, 5*time.Second, "the failed fetch reported", func() bool { return !e.rt.InSync() })
	if len(slotAddrs(e.rt, "demo")["a"]) != 0 {
		t.Fatal("instances set from a failed fetch")
	}
	failing.Store(false)
	waitFor(t, 5*time.Second, "the retried fetch", func() bool { return len(slotAddrs(e.rt, "demo")["a"]) == 1 })
	waitFor(t, 5*time.Second, "back in sync", func() bool { return e.rt.InSync() })
	resp, body := e.invoke("demo", []byte("x"))
	mustStatus(t, resp, body, 200)
}

// TestServeRegistersHTTPS: a router serving TLS registers with service
// meta scheme=https and an HTTPS check that Consul verifies (server name
// from the certificate, no TLSSkipVerify), which passes with an agent that
// trusts the router's CA; after a reload to a certificate from a CA the
// agent does not trust (an impostor's), the check fails.
func TestServeRegistersHTTPS(t *testing.T) {
	ca, impostor := tlstest.NewCA(t, "router CA"), tlstest.NewCA(t, "impostor CA")
	agent := testagents.StartConsulWith(t, testagents.ConsulOptions{CheckCAFile: ca.File})
	if agent.Reused {
		t.Skip("needs its own Consul agent trusting the test CA; unset CONSUL_HTTP_ADDR")
	}
	c := agent.Client
	certFile, keyFile := tlstest.Pair(t)
	ca.Write(t, certFile, keyFile, tlstest.Leaf{CommonName: "router", Hosts: []string{"router.test", "127.0.0.1"}})
	cert, err := tlsreload.Load(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	rt, err := New(Config{Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	cfg := ServerConfig{Listener: ln, TLS: cert, Consul: c, Register: true, Logger: testLogger(t), ShutdownTimeout: 5 * time.Second}
	go func() { served <- Serve(ctx, rt, nil, cfg) }()
	defer func() {
		cancel()
		if err := <-served; err != nil {
			t.Errorf("Serve: %v", err)
		}
	}()

	reg, err := newRegistration(cfg, ln.Addr(), "https")
	if err != nil {
		t.Fatal(err)
	}
	if ck := reg.svc.Check; ck.TLSServerName != "127.0.0.1" || ck.TLSSkipVerify || !strings.HasPrefix(ck.HTTP, "https://") {
		t.Fatalf("check %s server name %q skip verify %v", ck.HTTP, ck.TLSServerName, ck.TLSSkipVerify)
	}
	status := func() string {
		entries, _, err := c.Health().Service(RouterServiceName, "", false, nil)
		if err != nil || len(entries) != 1 {
			return ""
		}
		if s := entries[0].Service.Meta[contract.RouterMetaScheme]; s != "https" {
			t.Fatalf("service meta %s = %q, want https", contract.RouterMetaScheme, s)
		}
		return entries[0].Checks.AggregatedStatus()
	}
	// Registered passing; wait for a check run that verified the
	// certificate (its output names the status code). The agent's own
	// view: the catalog gets output-only changes minutes later.
	waitFor(t, 20*time.Second, "the HTTPS check to pass after a run", func() bool {
		checks, _ := c.Agent().Checks()
		for _, ck := range checks {
			if ck.ServiceName == RouterServiceName {
				return ck.Status == consulapi.HealthPassing && strings.Contains(ck.Output, "200")
			}
		}
		return false
	})
	if s := status(); s != consulapi.HealthPassing {
		t.Fatalf("status %q", s)
	}

	impostor.Write(t, certFile, keyFile, tlstest.Leaf{CommonName: "impostor", Hosts: []string{"127.0.0.1"}})
	if err := cert.Reload(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "the HTTPS check to fail on an untrusted certificate", func() bool {
		return status() == consulapi.HealthCritical
	})
}
