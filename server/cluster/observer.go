package cluster

import (
	"context"
	"strings"

	"github.com/seraihq/serai/contract"
	"github.com/seraihq/serai/scheduler"
	"github.com/seraihq/serai/server/api"
)

var _ api.Observer = (*Observer)(nil)

// Observer gives DescribeEndpoint its live counts: passing instances from
// Consul, desired counts and the last scaling events from each
// generation's Nomad job.
type Observer struct {
	Nomad  *Nomad
	Consul *Consul
}

// Observe implements api.Observer.
func (o *Observer) Observe(ctx context.Context, endpoint string) (api.Observation, error) {
	out := api.Observation{Variants: map[api.GV]api.VariantObservation{}}
	passing, err := o.Consul.Passing(ctx, endpoint)
	if err != nil {
		return out, err
	}
	jobs, err := o.Nomad.Jobs(ctx, endpoint)
	if err != nil {
		return out, err
	}
	for _, id := range jobs {
		_, gen, _ := contract.ParseJobID(id)
		desired, err := o.Nomad.Desired(ctx, id)
		if err != nil {
			return out, err
		}
		events, err := o.Nomad.ScalingEvents(ctx, id)
		if err != nil {
			return out, err
		}
		for group, n := range desired {
			variant := strings.TrimPrefix(group, scheduler.ShadowPrefix)
			gv := api.GV{Generation: gen, Variant: variant}
			v := out.Variants[gv]
			v.Desired = n
			v.ScalingEvents = events[group]
			out.Variants[gv] = v
		}
	}
	for gv, n := range passing {
		k := api.GV{Generation: gv.Generation, Variant: gv.Variant}
		v := out.Variants[k]
		v.Passing = n
		out.Variants[k] = v
	}
	return out, nil
}
