package api

import (
	"testing"
	"time"

	"github.com/seraihq/serai/server/smapi"
)

// TestDescribeScaling: DescribeEndpoint's Serai extension carries, per live
// variant, the config's autoscaling policy and the Observer's last scaling
// events; a variant with neither has no entry.
func TestDescribeScaling(t *testing.T) {
	e := newEnv(t)
	e.seed()
	v := variant("a", "m1", 1, 1)
	policy := &smapi.Autoscaling{MinCapacity: 1, MaxCapacity: 4, TargetInvocationsPerInstance: 600, ScaleOutCooldown: "20s"}
	v.Serai = &smapi.VariantExtension{Autoscaling: policy}
	e.ok("CreateEndpointConfig", config("c3", v, variant("b", "m2", 1, 1)))
	e.ok("CreateEndpoint", smapi.CreateEndpointInput{EndpointName: "ep", EndpointConfigName: "c3"})
	e.serve("ep", "c3", 1)
	three := 3
	events := []smapi.ScalingEvent{
		{Time: smapi.NewTime(time.Unix(1700000000, 0)), PreviousCount: 1, Count: &three, Message: "scaling up because factor is 2.5", Source: "nomad-autoscaler"},
	}
	e.obs.obs["ep"] = Observation{Variants: map[GV]VariantObservation{
		{Generation: 1, Variant: "a"}: {Passing: 3, Desired: 3, ScalingEvents: events},
		{Generation: 1, Variant: "b"}: {Passing: 1, Desired: 1},
	}}
	var d smapi.DescribeEndpointOutput
	e.ok("DescribeEndpoint", smapi.DescribeEndpointInput{EndpointName: "ep"}).decode(t, &d)
	if len(d.Serai.Scaling) != 1 {
		t.Fatalf("Scaling = %+v, want one entry (variant a)", d.Serai.Scaling)
	}
	s := d.Serai.Scaling[0]
	if s.VariantName != "a" || s.Generation != 1 || s.Policy == nil || *s.Policy != *policy {
		t.Errorf("scaling = %+v, policy %+v", s, s.Policy)
	}
	if len(s.Events) != 1 || *s.Events[0].Count != 3 || s.Events[0].PreviousCount != 1 || s.Events[0].Source != "nomad-autoscaler" || !s.Events[0].Time.Equal(time.Unix(1700000000, 0)) {
		t.Errorf("events = %+v", s.Events)
	}
	if d.ProductionVariants[0].DesiredInstanceCount != 3 {
		t.Errorf("desired = %d, want the observed 3", d.ProductionVariants[0].DesiredInstanceCount)
	}
}
