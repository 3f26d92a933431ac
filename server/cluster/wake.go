package cluster

import (
	"context"
	"fmt"

	consulapi "github.com/hashicorp/consul/api"

	"github.com/seraihq/serai/contract"
	"github.com/seraihq/serai/server/reconcile"
)

var _ reconcile.WakeKV = ConsulWakes{}

// ConsulWakes reads and deletes the routers' wake keys in Consul KV.
type ConsulWakes struct{ Client *consulapi.Client }

// Wakes implements reconcile.WakeKV.
func (c ConsulWakes) Wakes(ctx context.Context) (map[string]contract.Wake, error) {
	pairs, _, err := c.Client.KV().List(contract.WakePrefix, (&consulapi.QueryOptions{}).WithContext(ctx))
	if err != nil {
		return nil, fmt.Errorf("consul kv list %s: %w", contract.WakePrefix, err)
	}
	out := map[string]contract.Wake{}
	for _, p := range pairs {
		w, err := contract.DecodeWake(p.Value)
		if err != nil {
			w = contract.Wake{}
		}
		out[p.Key] = w
	}
	return out, nil
}

// DeleteWake implements reconcile.WakeKV.
func (c ConsulWakes) DeleteWake(ctx context.Context, key string) error {
	_, err := c.Client.KV().Delete(key, (&consulapi.WriteOptions{}).WithContext(ctx))
	return err
}
