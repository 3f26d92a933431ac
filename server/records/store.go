package records

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"

	consulapi "github.com/hashicorp/consul/api"

	"github.com/seraihq/serai/contract"
)

// ErrNotFound: no record under that name.
var ErrNotFound = errors.New("record not found")

// ErrConflict: the record changed (or appeared) since it was read; re-read
// and retry.
var ErrConflict = errors.New("record changed concurrently")

// ErrCorrupt matches (errors.Is) every CorruptError.
var ErrCorrupt = errors.New("record is corrupt")

// CorruptError: the value under Key does not decode. Retrying will not
// help; only a person rewriting or deleting the key will. Readers that
// serve many records (the reconciler's pass, the List APIs) set such a
// record aside and go on with the others.
type CorruptError struct {
	Key string
	// Name is the record's name as the key spells it (the key after its
	// kind's prefix).
	Name string
	Err  error
}

func (e *CorruptError) Error() string { return fmt.Sprintf("record %s is corrupt: %v", e.Key, e.Err) }

// Unwrap returns the decode error.
func (e *CorruptError) Unwrap() error { return e.Err }

// Is makes errors.Is(err, ErrCorrupt) true.
func (e *CorruptError) Is(target error) bool { return target == ErrCorrupt }

// KV is the slice of a key-value store the records need: versioned reads
// and check-and-set writes. ConsulKV is the real one; MemKV serves unit
// tests of logic.
type KV interface {
	// Get returns the value and its modify index, or ErrNotFound.
	Get(ctx context.Context, key string) ([]byte, uint64, error)
	// List returns every key under prefix with value and modify index,
	// sorted by key.
	List(ctx context.Context, prefix string) ([]Pair, error)
	// CAS writes value if the key's modify index is still index (0: only
	// if the key does not exist), else ErrConflict.
	CAS(ctx context.Context, key string, value []byte, index uint64) error
	// DeleteCAS deletes the key if its modify index is still index, else
	// ErrConflict.
	DeleteCAS(ctx context.Context, key string, index uint64) error
}

// Pair is one listed key.
type Pair struct {
	Key   string
	Value []byte
	Index uint64
}

// Kinds of record and their KV prefixes.
type Kind string

const (
	KindModel          Kind = contract.ModelsPrefix
	KindEndpointConfig Kind = contract.EndpointConfigsPrefix
	KindEndpoint       Kind = contract.EndpointsPrefix
	KindStore          Kind = contract.StoresPrefix
)

// Key is the KV key of a record.
func (k Kind) Key(name string) string { return string(k) + name }

// Store reads and writes typed records through a KV.
type Store struct{ KV KV }

// Get reads the record name of kind k into v and returns its index.
func (s Store) Get(ctx context.Context, k Kind, name string, v any) (uint64, error) {
	b, idx, err := s.KV.Get(ctx, k.Key(name))
	if err != nil {
		return 0, err
	}
	if err := json.Unmarshal(b, v); err != nil {
		return 0, &CorruptError{Key: k.Key(name), Name: name, Err: err}
	}
	return idx, nil
}

// Put writes v as record name with check-and-set on index (0: create).
func (s Store) Put(ctx context.Context, k Kind, name string, v any, index uint64) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encode record %s: %w", k.Key(name), err)
	}
	return s.KV.CAS(ctx, k.Key(name), b, index)
}

// Delete removes record name if it is still at index.
func (s Store) Delete(ctx context.Context, k Kind, name string, index uint64) error {
	return s.KV.DeleteCAS(ctx, k.Key(name), index)
}

// List returns the records of one kind in name order, with their
// indexes. A record that fails to decode is an error (a *CorruptError):
// silently skipping it would hide it from a caller that must see every
// record (a reference check before a delete, say). Callers that serve
// each record on its own use ListAll.
func List[T any](ctx context.Context, s Store, k Kind) ([]*T, []uint64, error) {
	l, err := ListAll[T](ctx, s, k)
	if err != nil {
		return nil, nil, err
	}
	if len(l.Corrupt) > 0 {
		return nil, nil, l.Corrupt[0]
	}
	return l.Records, l.Indexes, nil
}

// Listed is ListAll's answer: the records that decode, in name order,
// with their indexes, and those that do not, each on its own.
type Listed[T any] struct {
	Records []*T
	Indexes []uint64
	Corrupt []*CorruptError
}

// ListAll returns every record of one kind, setting aside those that do
// not decode, so that one corrupt record does not hide all the others.
func ListAll[T any](ctx context.Context, s Store, k Kind) (Listed[T], error) {
	pairs, err := s.KV.List(ctx, string(k))
	if err != nil {
		return Listed[T]{}, err
	}
	out := Listed[T]{Records: make([]*T, 0, len(pairs)), Indexes: make([]uint64, 0, len(pairs))}
	for _, p := range pairs {
		name := strings.TrimPrefix(p.Key, string(k))
		if strings.Contains(name, "/") {
			continue
		}
		v := new(T)
		if err := json.Unmarshal(p.Value, v); err != nil {
			out.Corrupt = append(out.Corrupt, &CorruptError{Key: p.Key, Name: name, Err: err})
			continue
		}
		out.Records = append(out.Records, v)
		out.Indexes = append(out.Indexes, p.Index)
	}
	return out, nil
}

// Update reads record name, applies fn and writes it back with
// check-and-set, retrying on conflict until ctx ends. fn may be called more
// than once and must only change v; returning an error aborts.
func Update[T any](ctx context.Context, s Store, k Kind, name string, fn func(v *T) error) (*T, error) {
	for {
		v := new(T)
		idx, err := s.Get(ctx, k, name, v)
		if err != nil {
			return nil, err
		}
		if err := fn(v); err != nil {
			return nil, err
		}
		err = s.Put(ctx, k, name, v, idx)
		if err == nil {
			return v, nil
		}
		if !errors.Is(err, ErrConflict) {
			return nil, err
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
	}
}

// ConsulKV is KV on Consul's KV store.
type ConsulKV struct{ KV *consulapi.KV }

var _ KV = ConsulKV{}

// Get implements KV with a consistent read: the control plane decides on
// what it reads, so a stale follower's answer would defeat check-and-set.
func (c ConsulKV) Get(ctx context.Context, key string) ([]byte, uint64, error) {
	p, _, err := c.KV.Get(key, (&consulapi.QueryOptions{RequireConsistent: true}).WithContext(ctx))
	if err != nil {
		return nil, 0, fmt.Errorf("consul kv get %s: %w", key, err)
	}
	if p == nil {
		return nil, 0, ErrNotFound
	}
	return p.Value, p.ModifyIndex, nil
}

// List implements KV.
func (c ConsulKV) List(ctx context.Context, prefix string) ([]Pair, error) {
	ps, _, err := c.KV.List(prefix, (&consulapi.QueryOptions{RequireConsistent: true}).WithContext(ctx))
	if err != nil {
		return nil, fmt.Errorf("consul kv list %s: %w", prefix, err)
	}
	out := make([]Pair, 0, len(ps))
	for _, p := range ps {
		out = append(out, Pair{Key: p.Key, Value: p.Value, Index: p.ModifyIndex})
	}
	return out, nil
}

// CAS implements KV.
func (c ConsulKV) CAS(ctx context.Context, key string, value []byte, index uint64) error {
	ok, _, err := c.KV.CAS(&consulapi.KVPair{Key: key, Value: value, ModifyIndex: index}, (&consulapi.WriteOptions{}).WithContext(ctx))
	if err != nil {
		return fmt.Errorf("consul kv cas %s: %w", key, err)
	}
	if !ok {
		return fmt.Errorf("%s: %w", key, ErrConflict)
	}
	return nil
}

// DeleteCAS implements KV.
func (c ConsulKV) DeleteCAS(ctx context.Context, key string, index uint64) error {
	ok, _, err := c.KV.DeleteCAS(&consulapi.KVPair{Key: key, ModifyIndex: index}, (&consulapi.WriteOptions{}).WithContext(ctx))
	if err != nil {
		return fmt.Errorf("consul kv delete %s: %w", key, err)
	}
	if !ok {
		return fmt.Errorf("%s: %w", key, ErrConflict)
	}
	return nil
}

// MemKV is an in-memory KV with Consul's check-and-set semantics, for unit
// tests of logic. The integration tests use ConsulKV on a real agent.
type MemKV struct {
	mu    sync.Mutex
	index uint64
	data  map[string]Pair
}

var _ KV = (*MemKV)(nil)

// NewMemKV returns an empty MemKV.
func NewMemKV() *MemKV { return &MemKV{data: map[string]Pair{}} }

// Get implements KV.
func (m *MemKV) Get(_ context.Context, key string) ([]byte, uint64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	p, ok := m.data[key]
	if !ok {
		return nil, 0, ErrNotFound
	}
	return append([]byte(nil), p.Value...), p.Index, nil
}

// List implements KV.
func (m *MemKV) List(_ context.Context, prefix string) ([]Pair, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []Pair
	for k, p := range m.data {
		if strings.HasPrefix(k, prefix) {
			out = append(out, Pair{Key: k, Value: append([]byte(nil), p.Value...), Index: p.Index})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key < out[j].Key })
	return out, nil
}

// CAS implements KV.
func (m *MemKV) CAS(_ context.Context, key string, value []byte, index uint64) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	p, ok := m.data[key]
	if (index == 0 && ok) || (index != 0 && (!ok || p.Index != index)) {
		return fmt.Errorf("%s: %w", key, ErrConflict)
	}
	m.index++
	m.data[key] = Pair{Key: key, Value: append([]byte(nil), value...), Index: m.index}
	return nil
}

// DeleteCAS implements KV.
func (m *MemKV) DeleteCAS(_ context.Context, key string, index uint64) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	p, ok := m.data[key]
	if !ok {
		return nil
	}
	if p.Index != index {
		return fmt.Errorf("%s: %w", key, ErrConflict)
	}
	delete(m.data, key)
	return nil
}
