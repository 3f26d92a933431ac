package router

import (
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	consulapi "github.com/hashicorp/consul/api"

	"github.com/seraihq/serai/contract"
	"github.com/seraihq/serai/internal/testagents"
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
// serai-<endpoint>, variant/generation/model tags) with a TTL check the test
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

// TestConsulDiscoveryFollowsChanges registers real model servers in a real
// Consul agent and checks that each change reaches the routing table within
// a second: registration, health going critical and back, KV weights,
// deregistration and removal of the table.
func TestConsulDiscoveryFollowsChanges(t *testing.T) {
	agent := testagents.StartConsul(t)
	c := agent.Client
	a, b := model(t, "a", nil), model(t, "b", nil)
	e := newEnv(t, Config{})
	startDiscovery(t, e.rt, c, ConsulConfig{})

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
	startDiscovery(t, e.rt, viaProxy, ConsulConfig{RetryMin: 20 * time.Millisecond, RetryMax: 100 * time.Millisecond})
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
