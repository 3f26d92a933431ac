package sigv4

import (
	"errors"
	"fmt"
	"strings"
	"sync/atomic"

	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
)

// KeyTable is a replaceable table of static keys (access key ID → secret)
// for verifying requests, shared by the router and the control-plane API.
// Each table set gets its own signer: the SDK's signer caches derived
// signing keys by access key ID, region, service and day — not by secret —
// so a signer shared across a rotation would keep accepting a rotated-out
// secret (and refuse its replacement) until midnight UTC.
type KeyTable struct {
	cur atomic.Pointer[keyGeneration]
}

type keyGeneration struct {
	keys   map[string]string
	signer *v4.Signer
}

// Set checks and installs a new table; on error the table in use stays.
func (t *KeyTable) Set(keys map[string]string) error {
	if len(keys) == 0 {
		return errors.New("the SigV4 key table holds no key")
	}
	table := make(map[string]string, len(keys))
	for id, secret := range keys {
		if id == "" || secret == "" {
			return errors.New("the SigV4 key table holds an empty access key ID or secret")
		}
		if strings.ContainsAny(id, "/,= \t") {
			return fmt.Errorf("SigV4 access key ID %q holds '/', ',', '=' or a space", id)
		}
		table[id] = secret
	}
	t.cur.Store(&keyGeneration{keys: table, signer: v4.NewSigner()})
	return nil
}

// Lookup returns the secret of an access key ID and the signer of the
// table it came from.
func (t *KeyTable) Lookup(id string) (string, *v4.Signer, bool) {
	g := t.cur.Load()
	if g == nil {
		return "", nil, false
	}
	s, ok := g.keys[id]
	return s, g.signer, ok
}
