package e2e

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	consulapi "github.com/hashicorp/consul/api"
	nomadapi "github.com/hashicorp/nomad/api"

	"github.com/seraihq/serai/contract"
	"github.com/seraihq/serai/internal/testagents"
)

// TestConsulACLs tries issue 17's "Consul trust" attacks against a real
// Consul running with ACLs on (default deny) and the policies of
// deploy/consul, exactly as shipped: nobody but the server writes
// routing tables or records, nobody but a router registers as serai-router,
// nobody but Nomad (the model tasks' registrar) registers an endpoint's
// instances, and Nomad, with the model tasks' policy, registers them but
// cannot pose as a router.
func TestConsulACLs(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	consul := testagents.StartConsulWith(t, testagents.ConsulOptions{ACL: true})
	if consul.Reused {
		t.Skip("CONSUL_HTTP_ADDR names an existing agent; this test needs its own with ACLs")
	}
	client := func(token string) *consulapi.Client {
		c, err := consul.NewClient(token)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	anon := client("")
	server := client(consul.Tokens.Server)
	router := client(consul.Tokens.Router)
	nomadTok := client(consul.Tokens.Nomad)

	// The genuine parts can do their jobs: the server registers itself and
	// writes a routing table; the router registers itself and writes a
	// wake key.
	mustOK := func(what string, err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	mustOK("server registers serai-server", server.Agent().ServiceRegister(&consulapi.AgentServiceRegistration{
		ID: "serai-server-a", Name: "serai-server", Port: 1,
		Check: &consulapi.AgentServiceCheck{CheckID: "serai-server-a-alive", TTL: "1m", Status: consulapi.HealthPassing},
	}))
	_, err := server.KV().Put(&consulapi.KVPair{Key: contract.RoutesKey("iris"), Value: []byte(`{}`)}, nil)
	mustOK("server writes a routing table", err)
	mustOK("router registers serai-router", router.Agent().ServiceRegister(&consulapi.AgentServiceRegistration{
		ID: "serai-router-1", Name: contract.RouterServiceName, Port: 2,
	}))
	_, err = router.KV().Put(&consulapi.KVPair{Key: contract.WakeKey("iris", 1, "a"), Value: []byte(`{}`)}, nil)
	mustOK("router writes a wake key", err)
	_, _, err = router.KV().Get(contract.RoutesKey("iris"), nil)
	mustOK("router reads a routing table", err)

	// Each attack must end in Consul's 403.
	denied := func(who, what string, err error) {
		t.Helper()
		if err == nil {
			t.Errorf("%s could %s", who, what)
			return
		}
		if !strings.Contains(err.Error(), "403") && !strings.Contains(strings.ToLower(err.Error()), "permission denied") {
			t.Errorf("%s %s: want a permission error, got %v", who, what, err)
			return
		}
		t.Logf("refused: %s %s (%v)", who, what, firstLine(err.Error()))
	}
	for _, a := range []struct {
		who string
		c   *consulapi.Client
	}{{"anonymous", anon}, {"model tasks (nomad-agent)", nomadTok}, {"router", router}} {
		_, err := a.c.KV().Put(&consulapi.KVPair{Key: contract.RoutesKey("iris"), Value: []byte(`{"version":1}`)}, nil)
		denied(a.who, "write a routing table", err)
		_, err = a.c.KV().Put(&consulapi.KVPair{Key: contract.EndpointsPrefix + "iris", Value: []byte(`{}`)}, nil)
		denied(a.who, "write an endpoint record", err)
		_, err = a.c.KV().Delete(contract.RoutesKey("iris"), nil)
		denied(a.who, "delete a routing table", err)
		_, err = a.c.KV().Put(&consulapi.KVPair{Key: contract.LeaderKey, Value: []byte("x")}, nil)
		denied(a.who, "write the leader key", err)
		denied(a.who, "deregister the server", a.c.Agent().ServiceDeregister("serai-server-a"))
		denied(a.who, "register as serai-server", a.c.Agent().ServiceRegister(&consulapi.AgentServiceRegistration{
			ID: "fake-server", Name: "serai-server", Port: 3,
		}))
	}
	for _, a := range []struct {
		who string
		c   *consulapi.Client
	}{{"anonymous", anon}, {"model tasks (nomad-agent)", nomadTok}, {"server", server}} {
		denied(a.who, "register as serai-router", a.c.Agent().ServiceRegister(&consulapi.AgentServiceRegistration{
			ID: "fake-router", Name: contract.RouterServiceName, Port: 4,
		}))
		denied(a.who, "deregister a router", a.c.Agent().ServiceDeregister("serai-router-1"))
	}
	for _, a := range []struct {
		who string
		c   *consulapi.Client
	}{{"anonymous", anon}, {"router", router}, {"server", server}} {
		denied(a.who, "register an endpoint instance", a.c.Agent().ServiceRegister(&consulapi.AgentServiceRegistration{
			ID: "fake-model", Name: contract.ServiceName("iris"), Port: 5,
			Tags: contract.InstanceTags{Variant: "a", Generation: 1, Model: "m"}.Format(), Meta: contract.ServiceMeta("iris", 1),
		}))
	}
	_, err = anon.KV().Put(&consulapi.KVPair{Key: contract.WakeKey("iris", 1, "a"), Value: []byte(`{}`)}, nil)
	denied("anonymous", "write a wake key", err)
	if _, _, err := anon.Session().Create(&consulapi.SessionEntry{Name: "x"}, nil); err == nil {
		t.Error("anonymous could create a session")
	}
	// Anonymous reads see nothing of serai.
	if p, _, err := anon.KV().Get(contract.RoutesKey("iris"), nil); err == nil && p != nil {
		t.Error("anonymous could read a routing table")
	}
	if svcs, _, err := anon.Catalog().Services(nil); err == nil && len(svcs) > 0 {
		t.Errorf("anonymous lists services: %v", svcs)
	}

	// Nomad with the model tasks' policy registers an endpoint's instance
	// and cannot register a job's service as serai-router.
	nomad := testagents.StartNomad(t, testagents.NomadOptions{Consul: consul})
	register := func(id, service string) {
		t.Helper()
		job := &nomadapi.Job{
			ID: &id, Name: &id, Type: ptr("service"), Datacenters: []string{"*"},
			TaskGroups: []*nomadapi.TaskGroup{{
				Name:     ptr("g"),
				Count:    ptr(1),
				Networks: []*nomadapi.NetworkResource{{DynamicPorts: []nomadapi.Port{{Label: "http"}}}},
				Services: []*nomadapi.Service{{
					Name: service, Provider: "consul", PortLabel: "http",
					Tags: contract.InstanceTags{Variant: "a", Generation: 1, Model: "m"}.Format(),
					Meta: contract.ServiceMeta("acl", 1),
				}},
				Tasks: []*nomadapi.Task{{
					Name: "t", Driver: "raw_exec",
					Config:    map[string]any{"command": "/bin/sleep", "args": []string{"600"}},
					Resources: &nomadapi.Resources{CPU: ptr(20), MemoryMB: ptr(16)},
				}},
			}},
		}
		if _, _, err := nomad.Client.Jobs().Register(job, nil); err != nil {
			t.Fatalf("register %s: %v", id, err)
		}
	}
	register(contract.JobID("acl", 1), contract.ServiceName("acl"))
	waitUntil(t, ctx, "Nomad registers the model task's service serai-acl", 2*time.Minute, func() bool {
		entries, _, err := consul.Client.Catalog().Service(contract.ServiceName("acl"), "", nil)
		return err == nil && len(entries) == 1
	})
	register("rogue", contract.RouterServiceName)
	waitUntil(t, ctx, "Consul refuses Nomad's serai-router registration", 2*time.Minute, func() bool {
		b, _ := os.ReadFile(nomad.LogPath)
		for _, l := range strings.Split(string(b), "\n") {
			if strings.Contains(l, "Permission denied") && strings.Contains(l, `service:write`) && strings.Contains(l, contract.RouterServiceName) {
				t.Logf("nomad: %s", strings.TrimSpace(l))
				return true
			}
		}
		return false
	})
	entries, _, err := consul.Client.Catalog().Service(contract.RouterServiceName, "", nil)
	mustOK("catalog", err)
	for _, e := range entries {
		if e.ServiceID != "serai-router-1" {
			t.Errorf("a Nomad job registered as %s: %s", contract.RouterServiceName, e.ServiceID)
		}
	}
}

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}

func ptr[T any](v T) *T { return &v }
