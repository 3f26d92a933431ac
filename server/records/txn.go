package records

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"time"

	consulapi "github.com/hashicorp/consul/api"
)

// TxnVerb is what one operation of a transaction does.
type TxnVerb int

const (
	// TxnCAS writes Value if the key's modify index is still Index (0:
	// only if the key does not exist).
	TxnCAS TxnVerb = iota + 1
	// TxnDeleteCAS deletes the key if its modify index is still Index.
	TxnDeleteCAS
	// TxnCheckIndex writes nothing; it fails the transaction unless the
	// key exists at Index.
	TxnCheckIndex
	// TxnTouch rewrites the key's Value (as read at Index) so that its
	// modify index moves: a check-and-set by anyone who read it before
	// then fails. Consul skips a write that changes nothing, so ConsulKV
	// changes the key's flags (which serai does not use) to a new nonce.
	TxnTouch
)

// TxnOp is one operation of an atomic multi-key write.
type TxnOp struct {
	Verb  TxnVerb
	Key   string
	Value []byte
	Index uint64
}

// Txner is a KV that can apply several check-and-set operations at once:
// all of them or none. The API uses it when one request must change or
// guard several records (creating an endpoint "touches" its config and
// models, so that a concurrent delete of one of them, which is
// check-and-set on the record it deletes, cannot slip in between the
// check and the write). ErrConflict means some index did not match.
type Txner interface {
	Txn(ctx context.Context, ops []TxnOp) error
}

var (
	_ Txner = ConsulKV{}
	_ Txner = (*MemKV)(nil)
)

// Txn implements Txner with a Consul KV transaction. (KV.Txn is marked
// deprecated in favour of the Txn endpoint object, which ConsulKV does not
// hold; it is the same /v1/txn call.)
func (c ConsulKV) Txn(ctx context.Context, ops []TxnOp) error {
	kops := make(consulapi.KVTxnOps, 0, len(ops))
	for _, op := range ops {
		k := &consulapi.KVTxnOp{Key: op.Key, Value: op.Value, Index: op.Index}
		switch op.Verb {
		case TxnCAS:
			k.Verb = consulapi.KVCAS
		case TxnDeleteCAS:
			k.Verb = consulapi.KVDeleteCAS
		case TxnCheckIndex:
			k.Verb = consulapi.KVCheckIndex
		case TxnTouch:
			k.Verb = consulapi.KVCAS
			k.Flags = nonce()
		default:
			return fmt.Errorf("consul kv txn: unknown verb %d", op.Verb)
		}
		kops = append(kops, k)
	}
	ok, resp, _, err := c.KV.Txn(kops, (&consulapi.QueryOptions{}).WithContext(ctx)) //nolint:staticcheck // see above
	if err != nil {
		return fmt.Errorf("consul kv txn: %w", err)
	}
	if !ok {
		var why []string
		if resp != nil {
			for _, e := range resp.Errors {
				why = append(why, e.What)
			}
		}
		return fmt.Errorf("txn rolled back (%s): %w", strings.Join(why, "; "), ErrConflict)
	}
	return nil
}

// nonce returns flags for a touched key: the clock and a counter, so two
// touches of one key practically never write the same flags.
func nonce() uint64 {
	return uint64(time.Now().UnixNano())<<8 | uint64(nonceSeq.Add(1)&0xff) | 1
}

var nonceSeq atomic.Uint64

// Txn implements Txner.
func (m *MemKV) Txn(_ context.Context, ops []TxnOp) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, op := range ops {
		p, ok := m.data[op.Key]
		switch op.Verb {
		case TxnCAS, TxnTouch:
			if (op.Index == 0 && ok) || (op.Index != 0 && (!ok || p.Index != op.Index)) {
				return fmt.Errorf("%s: %w", op.Key, ErrConflict)
			}
		case TxnDeleteCAS, TxnCheckIndex:
			if !ok || p.Index != op.Index {
				return fmt.Errorf("%s: %w", op.Key, ErrConflict)
			}
		default:
			return errors.New("memkv txn: unknown verb")
		}
	}
	// One index for the whole transaction, as Consul gives every key a
	// transaction writes the same Raft index.
	m.index++
	for _, op := range ops {
		switch op.Verb {
		case TxnCAS, TxnTouch:
			m.data[op.Key] = Pair{Key: op.Key, Value: append([]byte(nil), op.Value...), Index: m.index}
		case TxnDeleteCAS:
			delete(m.data, op.Key)
		}
	}
	return nil
}
