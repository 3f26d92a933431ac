package records

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/seraihq/serai/internal/testagents"
)

// TestConsulKV: ConsulKV on a real agent has the check-and-set semantics
// MemKV models, and transactions are all or nothing.
func TestConsulKV(t *testing.T) {
	agent := testagents.StartConsul(t)
	kv := ConsulKV{KV: agent.Client.KV()}
	prefix := fmt.Sprintf("serai-test/records-%d/", time.Now().UnixNano())
	t.Cleanup(func() { _, _ = agent.Client.KV().DeleteTree(prefix, nil) })
	testKVSemantics(t, kv, prefix)
}

func TestMemKV(t *testing.T) {
	testKVSemantics(t, NewMemKV(), "serai-test/")
}

func testKVSemantics(t *testing.T, kv interface {
	KV
	Txner
}, prefix string) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	key := prefix + "a"

	// Concurrent creates of one key: exactly one wins.
	const n = 8
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			errs[i] = kv.CAS(ctx, key, []byte(fmt.Sprint(i)), 0)
		}(i)
	}
	wg.Wait()
	wins := 0
	for _, err := range errs {
		switch {
		case err == nil:
			wins++
		case !errors.Is(err, ErrConflict):
			t.Fatalf("create: %v", err)
		}
	}
	if wins != 1 {
		t.Fatalf("%d of %d concurrent creates won", wins, n)
	}
	_, idx, err := kv.Get(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	// A stale writer loses.
	if err := kv.CAS(ctx, key, []byte("x"), idx); err != nil {
		t.Fatal(err)
	}
	if err := kv.CAS(ctx, key, []byte("y"), idx); !errors.Is(err, ErrConflict) {
		t.Fatalf("stale CAS: %v", err)
	}
	if err := kv.DeleteCAS(ctx, key, idx); !errors.Is(err, ErrConflict) {
		t.Fatalf("stale DeleteCAS: %v", err)
	}
	v, idx2, _ := kv.Get(ctx, key)
	if string(v) != "x" {
		t.Fatalf("value %q", v)
	}

	// Concurrent read-modify-write increments lose nothing.
	store := Store{KV: kv}
	type counter struct{ N int }
	if err := store.Put(ctx, Kind(prefix), "n", counter{}, 0); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := 0; j < 5; j++ {
				if _, err := Update(ctx, store, Kind(prefix), "n", func(c *counter) error { c.N++; return nil }); err != nil {
					t.Error(err)
				}
			}
		}()
	}
	wg.Wait()
	var c counter
	if _, err := store.Get(ctx, Kind(prefix), "n", &c); err != nil || c.N != n*5 {
		t.Fatalf("counter %d (want %d): %v", c.N, n*5, err)
	}

	// A transaction with one stale operation writes nothing.
	other := prefix + "b"
	err = kv.Txn(ctx, []TxnOp{
		{Verb: TxnCAS, Key: other, Value: []byte("new")},
		{Verb: TxnCAS, Key: key, Value: []byte("z"), Index: idx}, // stale
	})
	if !errors.Is(err, ErrConflict) {
		t.Fatalf("stale txn: %v", err)
	}
	if _, _, err := kv.Get(ctx, other); !errors.Is(err, ErrNotFound) {
		t.Fatalf("a rolled-back transaction wrote %s: %v", other, err)
	}
	// A good one writes all, and moves the touched key's index.
	if err := kv.Txn(ctx, []TxnOp{
		{Verb: TxnCheckIndex, Key: key, Index: idx2},
		{Verb: TxnCAS, Key: other, Value: []byte("new")},
		{Verb: TxnTouch, Key: key, Value: []byte("x"), Index: idx2},
	}); err != nil {
		t.Fatal(err)
	}
	if _, idx3, _ := kv.Get(ctx, key); idx3 == idx2 {
		t.Fatal("a touch did not move the modify index")
	}
	_, bi, _ := kv.Get(ctx, other)
	if err := kv.Txn(ctx, []TxnOp{{Verb: TxnDeleteCAS, Key: other, Index: bi}}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := kv.Get(ctx, other); !errors.Is(err, ErrNotFound) {
		t.Fatalf("txn delete: %v", err)
	}
}
