package cluster

import (
	"context"
	"testing"

	"github.com/seraihq/serai/contract"
	"github.com/seraihq/serai/internal/testagents"
	"github.com/seraihq/serai/router"
)

// A router's wake write is what the server reads back, on real Consul.
func TestConsulWakes(t *testing.T) {
	c := testagents.StartConsul(t)
	ctx := context.Background()
	w := &router.Waker{KV: router.ConsulWakeKV{Client: c.Client}, Router: "r1"}
	if _, err := w.Wake(ctx, "iris", 2, "v1"); err != nil {
		t.Fatal(err)
	}
	kv := ConsulWakes{Client: c.Client}
	got, err := kv.Wakes(ctx)
	key := contract.WakeKey("iris", 2, "v1")
	if err != nil || len(got) != 1 || got[key].Variant != "v1" || got[key].Router != "r1" {
		t.Fatalf("wakes %+v, %v", got, err)
	}
	if err := kv.DeleteWake(ctx, key); err != nil {
		t.Fatal(err)
	}
	if got, _ := kv.Wakes(ctx); len(got) != 0 {
		t.Fatalf("after delete: %+v", got)
	}
}
