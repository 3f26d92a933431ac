package reconcile

import (
	"context"
	"sort"
	"strings"
	"testing"

	"github.com/seraihq/serai/contract"
)

type memWakes struct{ m map[string]contract.Wake }

func (k *memWakes) Wakes(context.Context) (map[string]contract.Wake, error) {
	out := map[string]contract.Wake{}
	for key, w := range k.m {
		out[key] = w
	}
	return out, nil
}

func (k *memWakes) DeleteWake(_ context.Context, key string) error {
	delete(k.m, key)
	return nil
}

func TestHandleWakes(t *testing.T) {
	c := newFakeCluster()
	c.autoUp = false
	c.jobs[contract.JobID("iris", 2)] = &fakeJob{running: true, groups: map[string]int{"v1": 0, "v2": 3}}
	c.passing[GV{2, "v2"}] = 3
	wake := func(ep string, gen int, v string) (string, contract.Wake) {
		return contract.WakeKey(ep, gen, v), contract.Wake{Endpoint: ep, Generation: gen, Variant: v, Router: "r1"}
	}
	kv := &memWakes{m: map[string]contract.Wake{}}
	for _, x := range []struct {
		ep  string
		gen int
		v   string
	}{{"iris", 2, "v1"}, {"iris", 2, "v2"}, {"gone", 1, "v1"}} {
		k, w := wake(x.ep, x.gen, x.v)
		kv.m[k] = w
	}
	kv.m["serai/wake/garbage"] = contract.Wake{}
	ctx := context.Background()
	n, err := HandleWakes(ctx, kv, c, c)
	if err != nil || n != 1 {
		t.Fatalf("scaled %d, %v; want 1 (v1 from zero)", n, err)
	}
	if strings.Join(c.scaled, ",") != "serai-iris.g2/v1=1" {
		t.Errorf("scaled %v", c.scaled)
	}
	var left []string
	for k := range kv.m {
		left = append(left, k)
	}
	sort.Strings(left)
	if strings.Join(left, ",") != contract.WakeKey("iris", 2, "v1") {
		t.Errorf("keys left %v, want only v1's until it passes", left)
	}
	// Repeated signal while starting: no second scale.
	if n, _ := HandleWakes(ctx, kv, c, c); n != 0 || len(c.scaled) != 1 {
		t.Errorf("repeated wake scaled again: %v", c.scaled)
	}
	// The instance passes: the key goes.
	c.passing[GV{2, "v1"}] = 1
	if _, err := HandleWakes(ctx, kv, c, c); err != nil || len(kv.m) != 0 {
		t.Errorf("after the instance passes: keys %v, %v", kv.m, err)
	}
}
