package router

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/seraihq/serai/contract"
)

type memWakeKV struct {
	mu   sync.Mutex
	puts map[string][]byte
	n    int
	err  error
}

func (m *memWakeKV) Put(_ context.Context, key string, value []byte) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.err != nil {
		return m.err
	}
	if m.puts == nil {
		m.puts = map[string][]byte{}
	}
	m.puts[key] = value
	m.n++
	return nil
}

// One write per variant per interval; the value names the variant and the
// router; a failed write is retried by the next request.
func TestWakeSignal(t *testing.T) {
	kv := &memWakeKV{}
	now := time.Date(2026, 11, 30, 23, 0, 0, 0, time.UTC)
	w := &Waker{KV: kv, Router: "serai-router-a", Every: 5 * time.Second, Now: func() time.Time { return now }}
	ctx := context.Background()
	for i := 0; i < 10; i++ {
		if _, err := w.Wake(ctx, "iris", 3, "v1"); err != nil {
			t.Fatal(err)
		}
	}
	if kv.n != 1 {
		t.Fatalf("%d writes for one burst, want 1", kv.n)
	}
	key := contract.WakeKey("iris", 3, "v1")
	if key != "serai/wake/iris/g3/v1" {
		t.Errorf("key %q", key)
	}
	got, err := contract.DecodeWake(kv.puts[key])
	if err != nil || got.Endpoint != "iris" || got.Generation != 3 || got.Variant != "v1" || got.Router != "serai-router-a" || !got.Time.Equal(now) {
		t.Fatalf("value %+v, %v", got, err)
	}
	if wrote, _ := w.Wake(ctx, "iris", 3, "v2"); !wrote {
		t.Error("another variant shares the first one's interval")
	}
	now = now.Add(5 * time.Second)
	if wrote, _ := w.Wake(ctx, "iris", 3, "v1"); !wrote {
		t.Error("no write after the interval")
	}
	kv.err = errors.New("consul down")
	now = now.Add(5 * time.Second)
	if _, err := w.Wake(ctx, "iris", 3, "v1"); err == nil {
		t.Fatal("write error not reported")
	}
	kv.err = nil
	if wrote, err := w.Wake(ctx, "iris", 3, "v1"); !wrote || err != nil {
		t.Errorf("after a failed write the next request did not retry: %v %v", wrote, err)
	}
}
