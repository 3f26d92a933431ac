package api

import (
	"context"
	"net/http"
	"strings"
	"testing"

	"github.com/seraihq/serai/server/records"
	"github.com/seraihq/serai/server/smapi"
)

// One corrupt record does not take the API down for every other record:
// the endpoint it holds is described and listed Failed with the key and
// the decode error; the other endpoints, configs and models are listed
// and described as usual; creating others still works; a name held by a
// corrupt record is still taken.
func TestCorruptRecordIsolated(t *testing.T) {
	e := newEnv(t)
	e.seed()
	e.ok("CreateEndpoint", smapi.CreateEndpointInput{EndpointName: "good", EndpointConfigName: "c1"})
	e.serve("good", "c1", 1)
	ctx := context.Background()
	for _, k := range []string{records.KindEndpoint.Key("broken"), records.KindEndpointConfig.Key("broken-config"), records.KindModel.Key("broken-model")} {
		if err := e.kv.CAS(ctx, k, []byte("\x00garbage"), 0); err != nil {
			t.Fatal(err)
		}
	}

	var d smapi.DescribeEndpointOutput
	e.ok("DescribeEndpoint", smapi.DescribeEndpointInput{EndpointName: "broken"}).decode(t, &d)
	if d.EndpointStatus != smapi.StatusFailed || !strings.Contains(d.FailureReason, "serai/endpoints/broken") || !strings.Contains(d.FailureReason, "corrupt") {
		t.Fatalf("corrupt endpoint described as %s: %q", d.EndpointStatus, d.FailureReason)
	}
	e.ok("DescribeEndpoint", smapi.DescribeEndpointInput{EndpointName: "good"}).decode(t, &d)
	if d.EndpointStatus != smapi.StatusInService {
		t.Fatalf("good endpoint: %s", d.EndpointStatus)
	}

	var l smapi.ListEndpointsOutput
	e.ok("ListEndpoints", smapi.ListEndpointsInput{}).decode(t, &l)
	status := map[string]string{}
	for _, s := range l.Endpoints {
		status[s.EndpointName] = s.EndpointStatus
	}
	if len(status) != 2 || status["good"] != smapi.StatusInService || status["broken"] != smapi.StatusFailed {
		t.Fatalf("listed %v, want good InService and broken Failed", status)
	}
	e.ok("ListEndpoints", smapi.ListEndpointsInput{StatusEquals: smapi.StatusFailed}).decode(t, &l)
	if len(l.Endpoints) != 1 || l.Endpoints[0].EndpointName != "broken" {
		t.Fatalf("Failed endpoints: %+v", l.Endpoints)
	}

	var lc smapi.ListEndpointConfigsOutput
	e.ok("ListEndpointConfigs", smapi.ListEndpointConfigsInput{}).decode(t, &lc)
	if len(lc.EndpointConfigs) != 3 {
		t.Fatalf("configs listed: %+v", lc.EndpointConfigs)
	}
	var lm smapi.ListModelsOutput
	e.ok("ListModels", smapi.ListModelsInput{}).decode(t, &lm)
	if len(lm.Models) != 3 {
		t.Fatalf("models listed: %+v", lm.Models)
	}

	e.ok("CreateModel", model("m3"))
	e.ok("CreateEndpointConfig", config("c3", variant("a", "m3", 1, 1)))
	e.ok("CreateEndpoint", smapi.CreateEndpointInput{EndpointName: "other", EndpointConfigName: "c3"})
	if r := e.call("CreateEndpoint", smapi.CreateEndpointInput{EndpointName: "broken", EndpointConfigName: "c3"}); r.status == http.StatusOK {
		t.Fatal("created an endpoint over a corrupt record's name")
	}

	// Deleting it is the way out: the record becomes a delete operation
	// the reconciler can carry out.
	e.ok("DeleteEndpoint", smapi.DeleteEndpointInput{EndpointName: "broken"})
	ep := e.endpoint("broken")
	if ep.Op == nil || ep.Op.Kind != records.OpDelete || ep.Status != smapi.StatusDeleting {
		t.Fatalf("after DeleteEndpoint: status %s op %+v", ep.Status, ep.Op)
	}
}
