package cluster

import (
	"context"
	"testing"

	consulapi "github.com/hashicorp/consul/api"

	"github.com/seraihq/serai/contract"
	"github.com/seraihq/serai/internal/testagents"
	"github.com/seraihq/serai/server/reconcile"
)

// TestPassingCountsOnlyTrustedInstances: the server judges a generation's
// health by the instances a router would use. Registrations under
// serai-<endpoint> without the job's meta, with another generation's
// meta, or with no health check (which Consul calls passing) do not make
// a generation look healthy on a real Consul.
func TestPassingCountsOnlyTrustedInstances(t *testing.T) {
	c := testagents.StartConsul(t)
	tags := func(gen int) []string {
		return contract.InstanceTags{Variant: "a", Generation: gen, Model: "m"}.Format()
	}
	check := func(id string) *consulapi.AgentServiceCheck {
		return &consulapi.AgentServiceCheck{CheckID: "c-" + id, TTL: "10m", Status: consulapi.HealthPassing}
	}
	for _, r := range []*consulapi.AgentServiceRegistration{
		{ID: "genuine", Tags: tags(1), Meta: contract.ServiceMeta("iris", 1), Check: check("genuine")},
		{ID: "no-meta", Tags: tags(2), Check: check("no-meta")},
		{ID: "other-gen", Tags: tags(2), Meta: contract.ServiceMeta("iris", 1), Check: check("other-gen")},
		{ID: "no-check", Tags: tags(2), Meta: contract.ServiceMeta("iris", 2)},
	} {
		r.Name, r.Address, r.Port = contract.ServiceName("iris"), "127.0.0.1", 9
		if err := c.Client.Agent().ServiceRegister(r); err != nil {
			t.Fatal(err)
		}
	}
	got, err := (&Consul{Client: c.Client}).Passing(context.Background(), "iris")
	if err != nil {
		t.Fatal(err)
	}
	want := map[reconcile.GV]int{{Generation: 1, Variant: "a"}: 1}
	if len(got) != len(want) || got[reconcile.GV{Generation: 1, Variant: "a"}] != 1 {
		t.Fatalf("passing = %v, want %v (generation 2 has only rogue instances)", got, want)
	}
}
