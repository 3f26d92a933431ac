package router

import (
	"net"
	"strconv"
	"testing"

	consulapi "github.com/hashicorp/consul/api"

	"github.com/seraihq/serai/contract"
	"github.com/seraihq/serai/internal/testagents"
)

// untrustedGauge reads serai_router_untrusted_instances{endpoint} from
// the router's registry; -1 when the series does not exist.
func untrustedGauge(t *testing.T, rt *Router, endpoint string) float64 {
	t.Helper()
	mfs, err := rt.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != MetricUntrustedInstances {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == contract.LabelEndpoint && l.GetValue() == endpoint {
					return m.GetGauge().GetValue()
				}
			}
		}
	}
	return -1
}

// TestConsulRogueInstancesTakeNoTraffic tries the attack of issue 17's
// "Consul trust" without relying on ACLs: services registered by hand in
// a real Consul agent as serai-<endpoint>, with the right tags but no
// meta, with the meta of another job, with the meta of another
// generation, with meta that does not match its own tags, and with the
// right meta but no health check at all. Each points at a real model
// server that answers "rogue". Every invocation through the router is
// answered by the one genuine instance, and the router counts the rogues.
func TestConsulRogueInstancesTakeNoTraffic(t *testing.T) {
	healthModes(t, testConsulRogueInstancesTakeNoTraffic)
}

func testConsulRogueInstancesTakeNoTraffic(t *testing.T, watches int) {
	agent := testagents.StartConsul(t)
	c := agent.Client
	real, rogue := model(t, "a", nil), model(t, "rogue", nil)
	e := newEnv(t, Config{})
	startDiscovery(t, e.rt, c, ConsulConfig{EndpointWatches: watches})

	// Generations 1 and 2 both take traffic, so meta naming generation 2
	// on an instance tagged 1 names a job the table does list.
	routes := oneGen("demo", "a", 1)
	routes.Generations = append(routes.Generations, Generation{Generation: 2, Weight: 0, Variants: []Variant{{Name: "a", Weight: 1}}})
	putRoutes(t, c, routes)
	waitFor(t, followWithin, "routing table", func() bool { return e.rt.table.Load().endpoints["demo"] != nil })

	host, portS, _ := net.SplitHostPort(addrOf(rogue))
	port, _ := strconv.Atoi(portS)
	tags := contract.InstanceTags{Variant: "a", Generation: 1, Model: "m-a"}.Format()
	otherJob := contract.ServiceMeta("demo", 1)
	otherJob[contract.ServiceMetaJobID] = contract.JobID("demo-x", 1)
	otherEndpoint := contract.ServiceMeta("other", 1)
	check := func(id string) *consulapi.AgentServiceCheck {
		return &consulapi.AgentServiceCheck{CheckID: "check-" + id, TTL: "10m", Status: consulapi.HealthPassing}
	}
	rogues := []*consulapi.AgentServiceRegistration{
		{ID: "rogue-no-meta", Tags: tags, Check: check("rogue-no-meta")},
		{ID: "rogue-other-job", Tags: tags, Meta: otherJob, Check: check("rogue-other-job")},
		{ID: "rogue-other-endpoint", Tags: tags, Meta: otherEndpoint, Check: check("rogue-other-endpoint")},
		{ID: "rogue-other-generation", Tags: tags, Meta: contract.ServiceMeta("demo", 2), Check: check("rogue-other-generation")},
		{ID: "rogue-no-check", Tags: tags, Meta: contract.ServiceMeta("demo", 1)},
	}
	for _, r := range rogues {
		r.Name, r.Address, r.Port = ServiceName("demo"), host, port
		if err := c.Agent().ServiceRegister(r); err != nil {
			t.Fatal(err)
		}
	}
	// Consul itself calls the check-less rogue passing: that is the hole.
	entries, _, err := c.Health().Service(ServiceName("demo"), "", true, nil)
	if err != nil {
		t.Fatal(err)
	}
	passing := map[string]bool{}
	for _, en := range entries {
		passing[en.Service.ID] = true
	}
	if !passing["rogue-no-check"] {
		t.Fatalf("Consul no longer reports a check-less service passing (%v); the test no longer tries that attack", passing)
	}

	// The genuine instance comes last: in the shared mode its check is
	// the change that makes the router fetch the endpoint.
	registerModel(t, c, "demo", "demo-a-1", addrOf(real), "a", 1)
	waitFor(t, followWithin, "genuine instance routed", func() bool { return len(slotAddrs(e.rt, "demo")["a"]) == 1 })
	waitFor(t, followWithin, "rogues counted", func() bool { return untrustedGauge(t, e.rt, "demo") == float64(len(rogues)) })

	for i := range 200 {
		resp, body := e.invoke("demo", []byte("x"))
		mustStatus(t, resp, body, 200)
		if string(body) != "a" {
			t.Fatalf("invocation %d answered by %q: a rogue instance got traffic", i, body)
		}
	}
	// Targeting the variant, or the generation the forged meta names,
	// reaches no rogue either.
	for range 50 {
		resp, body := e.invoke("demo", []byte("x"), "X-Amzn-SageMaker-Target-Variant", "a")
		mustStatus(t, resp, body, 200)
		if string(body) != "a" {
			t.Fatalf("targeted invocation answered by %q", body)
		}
	}

	// Without the genuine instance the endpoint has nothing to route to,
	// rather than falling back on a rogue.
	if err := c.Agent().ServiceDeregister("demo-a-1"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, followWithin, "genuine instance gone", func() bool { return len(slotAddrs(e.rt, "demo")["a"]) == 0 })
	resp, body := e.invoke("demo", []byte("x"))
	mustStatus(t, resp, body, 503)

	// Removing the endpoint clears its count.
	if _, err := c.KV().Delete(contract.RoutesKey("demo"), nil); err != nil {
		t.Fatal(err)
	}
	waitFor(t, followWithin, "count cleared", func() bool { return untrustedGauge(t, e.rt, "demo") == -1 })
}
