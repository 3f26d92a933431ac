package cluster

import (
	"context"
	"errors"
	"testing"
	"time"

	consulapi "github.com/hashicorp/consul/api"

	"github.com/seraihq/serai/contract"
	"github.com/seraihq/serai/internal/testagents"
)

// A fenced routing-table write holds only while its session holds the
// leader lock, on real Consul: after the lock passes to another session
// the old leader's writes and deletes are refused and the successor's
// table stays.
func TestFencedRoutesWrites(t *testing.T) {
	c := testagents.StartConsul(t)
	ctx := context.Background()
	session := func() string {
		id, _, err := c.Client.Session().Create(&consulapi.SessionEntry{TTL: "30s", LockDelay: time.Millisecond, Behavior: consulapi.SessionBehaviorRelease}, nil)
		if err != nil {
			t.Fatal(err)
		}
		return id
	}
	acquire := func(sid string) {
		ok, _, err := c.Client.KV().Acquire(&consulapi.KVPair{Key: contract.LeaderKey, Value: []byte(sid), Session: sid}, nil)
		if err != nil || !ok {
			t.Fatalf("acquire by %s: %v %v", sid, ok, err)
		}
	}
	table := func(weight float64) *contract.Routes {
		return &contract.Routes{Version: contract.RoutesVersion, Endpoint: "iris",
			Generations: []contract.Generation{{Generation: 1, Weight: 1, Variants: []contract.Variant{{Name: "v1", Weight: weight}}}}}
	}
	stored := func() float64 {
		p, _, err := c.Client.KV().Get(contract.RoutesKey("iris"), nil)
		if err != nil || p == nil {
			t.Fatalf("routing table: %v %v", p, err)
		}
		r, err := contract.DecodeRoutes(p.Value)
		if err != nil {
			t.Fatal(err)
		}
		return r.Generations[0].Variants[0].Weight
	}

	old, next := session(), session()
	acquire(old)
	oldLeader := (&Consul{Client: c.Client}).Fenced(old)
	if err := oldLeader.Put(ctx, table(1)); err != nil {
		t.Fatalf("leader's fenced write: %v", err)
	}
	if _, err := c.Client.Session().Destroy(old, nil); err != nil {
		t.Fatal(err)
	}
	time.Sleep(10 * time.Millisecond) // lock-delay
	acquire(next)
	newLeader := (&Consul{Client: c.Client}).Fenced(next)
	if err := newLeader.Put(ctx, table(2)); err != nil {
		t.Fatalf("new leader's write: %v", err)
	}
	if err := oldLeader.Put(ctx, table(3)); !errors.Is(err, ErrNotLeader) {
		t.Fatalf("old leader's late write: %v, want ErrNotLeader", err)
	}
	if err := oldLeader.Delete(ctx, "iris"); !errors.Is(err, ErrNotLeader) {
		t.Fatalf("old leader's late delete: %v, want ErrNotLeader", err)
	}
	if w := stored(); w != 2 {
		t.Fatalf("routing table weight %v, want the new leader's 2", w)
	}
	// Unfenced (tools, tests) still writes.
	if err := (&Consul{Client: c.Client}).Put(ctx, table(4)); err != nil || stored() != 4 {
		t.Fatalf("unfenced write: %v", err)
	}
	if err := newLeader.Delete(ctx, "iris"); err != nil {
		t.Fatal(err)
	}
	if p, _, _ := c.Client.KV().Get(contract.RoutesKey("iris"), nil); p != nil {
		t.Fatal("delete left the table")
	}
}
