package cluster

import (
	"testing"

	nomadapi "github.com/hashicorp/nomad/api"
)

func TestScalingEventsOf(t *testing.T) {
	n := func(v int64) *int64 { return &v }
	events := []nomadapi.ScalingEvent{
		{Time: 3e9, PreviousCount: 3, Count: n(1), Message: "scaling down", Meta: map[string]any{"nomad_policy_id": "p"}},
		{Time: 1e9, PreviousCount: 1, Count: n(2), Message: "serai: UpdateEndpointWeightsAndCapacities", Meta: map[string]any{"source": "serai"}},
		{Time: 2e9, PreviousCount: 2, Count: n(3), Message: "scaling up", Meta: map[string]any{"nomad_autoscaler.count.capped": true}},
		{Time: 4e9, PreviousCount: 1, Error: true, Message: "failed to query source"},
	}
	got := ScalingEventsOf(events, 3)
	if len(got) != 3 {
		t.Fatalf("kept %d events, want the newest 3", len(got))
	}
	if got[0].Message != "scaling up" || got[1].Message != "scaling down" || !got[2].Error || got[2].Count != nil {
		t.Errorf("order or fields: %+v", got)
	}
	if got[0].Source != "nomad-autoscaler" || got[1].Source != "nomad-autoscaler" || got[2].Source != "" {
		t.Errorf("sources: %q %q %q", got[0].Source, got[1].Source, got[2].Source)
	}
	if *got[0].Count != 3 || got[0].PreviousCount != 2 || got[0].Time.UnixNano() != 2e9 {
		t.Errorf("first: %+v", got[0])
	}
	if all := ScalingEventsOf(events, 5); all[0].Source != "serai" {
		t.Errorf("serai's own scale request: source %q", all[0].Source)
	}
}
