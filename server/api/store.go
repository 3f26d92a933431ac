package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/seraihq/serai/server/records"
)

// How references stay consistent without locks
//
// An endpoint refers to endpoint configs (the live one, the one being
// deployed, one per generation), and a config to models. Deletes are
// check-and-set on the deleted record alone, after checking that nothing
// that must keep it refers to it. Every write that creates a reference
// (CreateEndpointConfig, CreateEndpoint, UpdateEndpoint) is one
// transaction that also rewrites, unchanged, each record it refers to
// (a "touch"), which moves their modify indexes. So whichever of a
// reference-creating write and a delete commits second fails its
// check-and-set, re-reads and decides again: a delete never removes a
// record that a reference written concurrently relies on, and a reference
// is never written to a record deleted concurrently.

// maxAttempts bounds the re-read-and-retry loop of one request.
const maxAttempts = 16

// retry runs fn again while it fails with records.ErrConflict; each run
// must re-read what it decides on.
func retry(ctx context.Context, fn func() error) error {
	var err error
	for i := 0; i < maxAttempts; i++ {
		if err = fn(); !errors.Is(err, records.ErrConflict) {
			return err
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
	return err
}

// loaded is a record as read, with what a touch needs.
type loaded[T any] struct {
	v   *T
	key string
	raw []byte
	idx uint64
}

// touch rewrites the record unchanged, guarded by its index.
func (l loaded[T]) touch() records.TxnOp {
	return records.TxnOp{Verb: records.TxnTouch, Key: l.key, Value: l.raw, Index: l.idx}
}

// load reads one record; records.ErrNotFound when absent, a
// *records.CorruptError (with the key and index set) when it does not
// decode.
func load[T any](ctx context.Context, s records.Store, k records.Kind, name string) (loaded[T], error) {
	key := k.Key(name)
	raw, idx, err := s.KV.Get(ctx, key)
	if err != nil {
		return loaded[T]{}, err
	}
	v := new(T)
	if err := json.Unmarshal(raw, v); err != nil {
		// The key and index come back with the error, for a caller that
		// replaces the corrupt record (DeleteEndpoint).
		return loaded[T]{key: key, raw: raw, idx: idx}, &records.CorruptError{Key: key, Name: name, Err: err}
	}
	return loaded[T]{v: v, key: key, raw: raw, idx: idx}, nil
}

// create writes a new record (check-and-set on absence) together with
// touches of the records it refers to.
func (h *Handler) create(ctx context.Context, k records.Kind, name string, v any, touches ...records.TxnOp) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encode record: %w", err)
	}
	ops := append([]records.TxnOp{{Verb: records.TxnCAS, Key: k.Key(name), Value: b}}, touches...)
	return h.txn.Txn(ctx, ops)
}

// replace rewrites an existing record read at idx, with touches.
func (h *Handler) replace(ctx context.Context, k records.Kind, name string, v any, idx uint64, touches ...records.TxnOp) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encode record: %w", err)
	}
	ops := append([]records.TxnOp{{Verb: records.TxnCAS, Key: k.Key(name), Value: b, Index: idx}}, touches...)
	return h.txn.Txn(ctx, ops)
}

// nameTaken reports whether a record of kind k has name, ignoring case:
// SageMaker lower-cases names in ARNs, so two names that differ only in
// case would share one ARN.
// A corrupt record's name (from its key) counts as taken: one corrupt
// record must not stop every create.
func nameTaken[T any](ctx context.Context, s records.Store, k records.Kind, name string, nameOf func(*T) string) (bool, error) {
	all, err := records.ListAll[T](ctx, s, k)
	if err != nil {
		return false, err
	}
	for _, r := range all.Records {
		if strings.EqualFold(nameOf(r), name) {
			return true, nil
		}
	}
	for _, c := range all.Corrupt {
		if strings.EqualFold(c.Name, name) {
			return true, nil
		}
	}
	return false, nil
}

// endpointRefs lists the endpoint configs an endpoint record relies on:
// the live one, the one an operation deploys, and each generation's.
func endpointRefs(ep *records.Endpoint) []string {
	seen := map[string]bool{}
	var out []string
	add := func(n string) {
		if n != "" && !seen[n] {
			seen[n] = true
			out = append(out, n)
		}
	}
	add(ep.ConfigName)
	if ep.Op != nil {
		add(ep.Op.ConfigName)
	}
	for _, g := range ep.Generations {
		add(g.ConfigName)
	}
	return out
}

func modelNames(c *records.EndpointConfig) []string {
	seen := map[string]bool{}
	var out []string
	for _, v := range c.Spec.ProductionVariants {
		if !seen[v.ModelName] {
			seen[v.ModelName] = true
			out = append(out, v.ModelName)
		}
	}
	for _, v := range c.Spec.ShadowProductionVariants {
		if !seen[v.ModelName] {
			seen[v.ModelName] = true
			out = append(out, v.ModelName)
		}
	}
	return out
}
