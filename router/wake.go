package router

import (
	"context"
	"sync"
	"time"

	consulapi "github.com/hashicorp/consul/api"

	"github.com/seraihq/serai/contract"
)

// WakeKV is where the wake signal goes: Consul KV in production.
type WakeKV interface {
	Put(ctx context.Context, key string, value []byte) error
}

// ConsulWakeKV writes wake keys with a Consul client.
type ConsulWakeKV struct{ Client *consulapi.Client }

// Put implements WakeKV.
func (c ConsulWakeKV) Put(ctx context.Context, key string, value []byte) error {
	_, err := c.Client.KV().Put(&consulapi.KVPair{Key: key, Value: value}, (&consulapi.WriteOptions{}).WithContext(ctx))
	return err
}

// Waker sends the wake signal for a variant with no instance, at most once
// per Every per variant however many requests are held, so a burst costs
// Consul one write.
type Waker struct {
	KV     WakeKV
	Router string // this router's service ID, recorded in the value
	Every  time.Duration
	Now    func() time.Time

	mu   sync.Mutex
	last map[string]time.Time
}

// Signal is Wake without waiting: when the variant's interval has passed
// it writes in the background (bounded by timeout) and reports a failed
// write to onErr; otherwise it returns at once. The request path calls it
// for every request that wants a sleeping variant.
func (w *Waker) Signal(endpoint string, generation int, variant string, timeout time.Duration, onErr func(error)) {
	now := time.Now
	if w.Now != nil {
		now = w.Now
	}
	key := contract.WakeKey(endpoint, generation, variant)
	w.mu.Lock()
	last, ok := w.last[key]
	due := !ok || now().Sub(last) >= w.Every
	w.mu.Unlock()
	if !due {
		return
	}
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		if _, err := w.Wake(ctx, endpoint, generation, variant); err != nil && onErr != nil {
			onErr(err)
		}
	}()
}

// Wake writes the variant's wake key unless it was written less than Every
// ago; it reports whether it wrote.
func (w *Waker) Wake(ctx context.Context, endpoint string, generation int, variant string) (bool, error) {
	now := time.Now
	if w.Now != nil {
		now = w.Now
	}
	key := contract.WakeKey(endpoint, generation, variant)
	t := now()
	w.mu.Lock()
	if w.last == nil {
		w.last = map[string]time.Time{}
	}
	if last, ok := w.last[key]; ok && t.Sub(last) < w.Every {
		w.mu.Unlock()
		return false, nil
	}
	w.last[key] = t
	w.mu.Unlock()
	b, err := contract.EncodeWake(contract.Wake{Endpoint: endpoint, Generation: generation, Variant: variant, Router: w.Router, Time: t.UTC()})
	if err != nil {
		return false, err
	}
	if err := w.KV.Put(ctx, key, b); err != nil {
		// Let the next held request try again.
		w.mu.Lock()
		delete(w.last, key)
		w.mu.Unlock()
		return false, err
	}
	return true, nil
}
