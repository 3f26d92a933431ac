package api

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/seraihq/serai/server/records"
	"github.com/seraihq/serai/server/smapi"
)

const (
	arnPrefix = "arn:aws:sagemaker:eu-west-1:123456789012:"
	bad       = http.StatusBadRequest
)

func TestConfigValidate(t *testing.T) {
	kv := records.NewMemKV()
	for _, c := range []Config{
		{},
		{Store: records.Store{KV: kv}, Account: "12345"},
		{Store: records.Store{KV: kv}, Region: "mars"},
		{Store: records.Store{KV: noTxnKV{kv}}},
	} {
		if _, err := New(c); err == nil {
			t.Errorf("New(%+v) accepted", c)
		}
	}
	if _, err := New(Config{Store: records.Store{KV: kv}}); err != nil {
		t.Fatal(err)
	}
}

type noTxnKV struct{ records.KV }

func TestModelLifecycle(t *testing.T) {
	e := newEnv(t)
	in := model("Churn-1")
	in.Tags = []smapi.Tag{{Key: "team", Value: "ml"}}
	in.ExecutionRoleArn = "arn:aws:iam::123456789012:role/x"
	var cr smapi.CreateModelOutput
	e.ok("CreateModel", in).decode(t, &cr)
	if cr.ModelArn != arnPrefix+"model/churn-1" {
		t.Fatalf("ARN %q", cr.ModelArn)
	}
	before := e.snapshot()
	e.fails("CreateModel", in, bad, smapi.ErrValidation, `Cannot create already existing model "`+arnPrefix+`model/churn-1".`)
	// Names differing only in case would share the ARN.
	e.fails("CreateModel", model("churn-1"), bad, smapi.ErrValidation, "Cannot create already existing model")
	e.unchanged(before, "refused CreateModel")

	var d smapi.DescribeModelOutput
	e.ok("DescribeModel", smapi.DescribeModelInput{ModelName: "Churn-1"}).decode(t, &d)
	if d.ModelName != "Churn-1" || d.ModelArn != cr.ModelArn || d.PrimaryContainer.Image != "registry.local/churn-1:1" ||
		d.ExecutionRoleArn == "" || !d.CreationTime.Equal(e.clock.Now()) {
		t.Fatalf("describe: %+v", d)
	}
	e.fails("DescribeModel", smapi.DescribeModelInput{ModelName: "nope"}, bad, smapi.ErrValidation, `Could not find model "`+arnPrefix+`model/nope".`)
	e.ok("DeleteModel", smapi.DeleteModelInput{ModelName: "Churn-1"})
	e.fails("DeleteModel", smapi.DeleteModelInput{ModelName: "Churn-1"}, bad, smapi.ErrValidation, "Could not find model")
	if len(e.snapshot()) != 0 {
		t.Fatal("records left")
	}
}

func TestDefaultArtifactStore(t *testing.T) {
	e := newEnv(t)
	// The default store is an operator record like any other: until it
	// exists, a model without a store is refused, naming it.
	e.fails("CreateModel", `{"ModelName":"m","PrimaryContainer":{"Image":"img:1","ModelDataUrl":"s3://bucket/model.tar.gz"}}`,
		bad, smapi.ErrValidation, `artifact store "default" does not exist`)
	putStore(t, e.store, smapi.ArtifactStore{Name: DefaultArtifactStore}, "*")
	e.ok("CreateModel", `{"ModelName":"m","PrimaryContainer":{"Image":"img:1","ModelDataUrl":"s3://bucket/model.tar.gz"}}`)
	var d smapi.DescribeModelOutput
	e.ok("DescribeModel", `{"ModelName":"m"}`).decode(t, &d)
	if d.Serai == nil || d.Serai.ArtifactStore == nil || d.Serai.ArtifactStore.Name != DefaultArtifactStore {
		t.Fatalf("%+v", d.Serai)
	}
	putStore(t, e.store, smapi.ArtifactStore{Name: "minio", Endpoint: "http://127.0.0.1:9000", PathStyle: true})
	e.ok("CreateModel", `{"ModelName":"n","PrimaryContainer":{"Image":"img:1","ModelDataUrl":"s3://bucket/model.tar.gz"},"Serai":{"ArtifactStore":{"Name":"minio"}}}`)
	d = smapi.DescribeModelOutput{}
	e.ok("DescribeModel", `{"ModelName":"n"}`).decode(t, &d)
	if *d.Serai.ArtifactStore != (smapi.ArtifactStore{Name: "minio"}) {
		t.Fatalf("%+v", d.Serai.ArtifactStore)
	}
}

// TestSDKShapedConfig: what SageMaker says with its own members (a shadow
// variant's weight, an s3 capture destination) needs no extension.
func TestSDKShapedConfig(t *testing.T) {
	e := newEnv(t)
	e.seed()
	putStore(t, e.store, smapi.ArtifactStore{Name: DefaultArtifactStore}, "*")
	in := config("shadowed", variant("a", "m1", 1, 3), variant("b", "m1", 1, 1))
	in.ShadowProductionVariants = []smapi.ProductionVariant{variant("s", "m2", 1, 1)}
	in.DataCaptureConfig = &smapi.DataCaptureConfig{DestinationS3Uri: "s3://bucket/capture", InitialSamplingPercentage: ptr(10),
		CaptureOptions: []smapi.CaptureOption{{CaptureMode: "Input"}}}
	e.ok("CreateEndpointConfig", in)
	var d smapi.DescribeEndpointConfigOutput
	e.ok("DescribeEndpointConfig", smapi.DescribeEndpointConfigInput{EndpointConfigName: "shadowed"}).decode(t, &d)
	s := d.ShadowProductionVariants[0]
	if s.InitialVariantWeight != nil || s.Serai == nil || *s.Serai.SamplingPercent != 25 || d.Serai.DataCaptureStore.Name != DefaultArtifactStore {
		t.Fatalf("%+v %+v", s, d.Serai)
	}
	in.EndpointConfigName = "zero"
	in.ShadowProductionVariants[0].InitialVariantWeight = ptr(0.0)
	e.fails("CreateEndpointConfig", in, bad, smapi.ErrValidation, "'shadowProductionVariants.1.member.initialVariantWeight'")
}

func TestContainersAsPrimary(t *testing.T) {
	e := newEnv(t)
	e.ok("CreateModel", `{"ModelName":"m","Containers":[{"Image":"img:1"}]}`)
	var d smapi.DescribeModelOutput
	e.ok("DescribeModel", `{"ModelName":"m"}`).decode(t, &d)
	if d.PrimaryContainer == nil || d.PrimaryContainer.Image != "img:1" {
		t.Fatalf("%+v", d)
	}
	e.fails("CreateModel", `{"ModelName":"m2","Containers":[{"Image":"a"},{"Image":"b"}]}`, bad, smapi.ErrValidation, "'containers'")
}

// TestRejectedWritesNothing: every refused request names the field and
// leaves every record as it was.
func TestRejectedWritesNothing(t *testing.T) {
	e := newEnv(t)
	e.seed()
	e.ok("CreateEndpoint", smapi.CreateEndpointInput{EndpointName: "ep", EndpointConfigName: "c1"})
	cases := []struct {
		op, body, code, msg string
	}{
		{"CreateModel", `{}`, smapi.ErrValidation, "1 validation error detected: Value null at 'modelName' failed to satisfy constraint: Member must not be null"},
		{"CreateModel", `{"ModelName":"bad_name","PrimaryContainer":{"Image":"x"}}`, smapi.ErrValidation,
			"1 validation error detected: Value 'bad_name' at 'modelName' failed to satisfy constraint: Member must satisfy regular expression pattern: ^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$"},
		{"CreateModel", `{"ModelName":"m9"}`, smapi.ErrValidation, `model "m9": set image`},
		{"CreateModel", `{"ModelName":"m9","PrimaryContainer":{"Image":"x","Environment":{"VAULT_TOKEN":"x"}}}`, smapi.ErrValidation, `environment key "VAULT_TOKEN" is reserved`},
		{"CreateModel", `{"ModelName":"m9","PrimaryContainer":{"Image":"x"},"Tags":[{"Key":"aws:x","Value":"y"}]}`, smapi.ErrValidation, "'tags.1.member.key'"},
		{"CreateModel", `{"ModelName":"m9","VpcConfig":{}}`, smapi.ErrValidation, `Unknown member "VpcConfig"`},
		{"CreateModel", `{"ModelName":`, smapi.ErrSerialization, "not valid JSON"},
		{"CreateModel", `{"ModelName":5}`, smapi.ErrSerialization, "'ModelName' must be a string"},
		{"CreateModel", `{"ModelName":"m9","PrimaryContainer":{"Image":"x"},"EnableNetworkIsolation":true}`, smapi.ErrValidation, "'enableNetworkIsolation'"},
		{"CreateEndpointConfig", `{"EndpointConfigName":"c9"}`, smapi.ErrValidation, "Value null at 'productionVariants'"},
		{"CreateEndpointConfig", `{"EndpointConfigName":"c9","ProductionVariants":[{"VariantName":"a","InstanceType":"ml.m5.large"}]}`, smapi.ErrValidation,
			"Value null at 'productionVariants.1.member.modelName'"},
		{"CreateEndpointConfig", `{"EndpointConfigName":"c9","ProductionVariants":[{"VariantName":"a","ModelName":"ghost","InstanceType":"ml.m5.large"}]}`, smapi.ErrValidation,
			`Could not find model "` + arnPrefix + `model/ghost".`},
		{"CreateEndpointConfig", `{"EndpointConfigName":"c9","ProductionVariants":[{"VariantName":"a","ModelName":"m1","InstanceType":"ml.huge"}]}`, smapi.ErrValidation,
			`instance_type "ml.huge" is not in serai's table`},
		{"CreateEndpointConfig", `{"EndpointConfigName":"c1","ProductionVariants":[{"VariantName":"a","ModelName":"m1","InstanceType":"ml.m5.large"}]}`, smapi.ErrValidation,
			`Cannot create already existing endpoint configuration "` + arnPrefix + `endpoint-config/c1".`},
		{"CreateEndpoint", `{"EndpointName":"ep2"}`, smapi.ErrValidation,
			"1 validation error detected: Value null at 'endpointConfigName' failed to satisfy constraint: Member must not be null"},
		{"CreateEndpoint", `{}`, smapi.ErrValidation, "2 validation errors detected: Value null at 'endpointName'"},
		{"CreateEndpoint", `{"EndpointName":"ep2","EndpointConfigName":"ghost"}`, smapi.ErrValidation, `Could not find endpoint configuration "` + arnPrefix + `endpoint-config/ghost".`},
		{"CreateEndpoint", `{"EndpointName":"ep","EndpointConfigName":"c1"}`, smapi.ErrValidation, `Cannot create already existing endpoint "` + arnPrefix + `endpoint/ep".`},
		{"CreateEndpoint", `{"EndpointName":"router","EndpointConfigName":"c1"}`, smapi.ErrValidation, `"serai-router"`},
		{"CreateEndpoint", `{"EndpointName":"ep2","EndpointConfigName":"c1","DeploymentConfig":{"BlueGreenUpdatePolicy":{"TrafficRoutingConfiguration":{"Type":"CANARY","WaitIntervalInSeconds":60}}}}`,
			smapi.ErrValidation, "needs canary_size"},
		{"CreateEndpoint", `{"EndpointName":"ep2","EndpointConfigName":"c1","DeploymentConfig":{"BlueGreenUpdatePolicy":{"TrafficRoutingConfiguration":{"Type":"CANARY","CanarySize":{"Type":"INSTANCE_COUNT","Value":1}}}}}`,
			smapi.ErrValidation, "'deploymentConfig.blueGreenUpdatePolicy.trafficRoutingConfiguration.canarySize.type'"},
		{"CreateEndpoint", `{"EndpointName":"ep2","EndpointConfigName":"c1","DeploymentConfig":{"AutoRollbackConfiguration":{"Alarms":[{"AlarmName":"x"}]}}}`,
			smapi.ErrValidation, "'deploymentConfig.autoRollbackConfiguration.alarms'"},
		{"CreateEndpoint", `{"EndpointName":"ep2","EndpointConfigName":"c1","Serai":{"AutoRollback":{"MaxErrorRate":2}}}`, smapi.ErrValidation, "max_error_rate 2 must be a fraction"},
		{"UpdateEndpoint", `{"EndpointName":"ghost","EndpointConfigName":"c2"}`, smapi.ErrValidation, `Could not find endpoint "` + arnPrefix + `endpoint/ghost".`},
		{"UpdateEndpoint", `{"EndpointName":"ep","EndpointConfigName":"c2"}`, smapi.ErrValidation, `Cannot update in-progress endpoint "` + arnPrefix + `endpoint/ep".`},
		{"UpdateEndpointWeightsAndCapacities", `{"EndpointName":"ep"}`, smapi.ErrValidation, "Value null at 'desiredWeightsAndCapacities'"},
		{"UpdateEndpointWeightsAndCapacities", `{"EndpointName":"ep","DesiredWeightsAndCapacities":[{"VariantName":"a","DesiredWeight":1}]}`, smapi.ErrValidation, "Cannot update in-progress endpoint"},
		{"DeleteEndpoint", `{"EndpointName":"ghost"}`, smapi.ErrValidation, "Could not find endpoint"},
		{"DeleteEndpointConfig", `{"EndpointConfigName":"c1"}`, smapi.ErrResourceInUse, `endpoint "ep" (Creating) uses it`},
		{"DeleteModel", `{"ModelName":"m1"}`, smapi.ErrResourceInUse, `endpoint "ep" uses it through endpoint configuration "c1"`},
		{"AddTags", `{"ResourceArn":"arn:aws:sagemaker:us-east-1:123456789012:model/m1","Tags":[{"Key":"a","Value":"b"}]}`, smapi.ErrValidation, "'resourceArn'"},
		{"AddTags", `{"ResourceArn":"` + arnPrefix + `model/ghost","Tags":[{"Key":"a","Value":"b"}]}`, smapi.ErrValidation, "Could not find resource"},
		{"ListModels", `{"MaxResults":0}`, smapi.ErrValidation, "'maxResults'"},
		{"ListModels", `{"NextToken":"garbage"}`, smapi.ErrValidation, "Invalid pagination token"},
		{"ListEndpoints", `{"StatusEquals":"Sleeping"}`, smapi.ErrValidation, "'statusEquals'"},
	}
	for _, c := range cases {
		t.Run(c.op, func(t *testing.T) {
			e.t = t
			before := e.snapshot()
			e.fails(c.op, c.body, bad, c.code, c.msg)
			e.unchanged(before, c.op)
		})
	}
}

func TestProtocolErrors(t *testing.T) {
	e := newEnv(t)
	do := func(method, path, target, ct, body string) result {
		req := httptest.NewRequest(method, path, strings.NewReader(body))
		if ct != "" {
			req.Header.Set("Content-Type", ct)
		}
		if target != "" {
			req.Header.Set("X-Amz-Target", target)
		}
		w := httptest.NewRecorder()
		e.h.ServeHTTP(w, req)
		return result{status: w.Code, body: w.Body.Bytes(), header: w.Header()}
	}
	for _, c := range []struct {
		method, path, target, ct string
		status                   int
		code                     string
	}{
		{"GET", "/", "SageMaker.ListModels", ContentType, http.StatusMethodNotAllowed, smapi.ErrUnknownOperation},
		{"POST", "/x", "SageMaker.ListModels", ContentType, http.StatusNotFound, smapi.ErrUnknownOperation},
		{"POST", "/", "SageMaker.CreateTrainingJob", ContentType, bad, smapi.ErrUnknownOperation},
		{"POST", "/", "", ContentType, bad, smapi.ErrUnknownOperation},
		{"POST", "/", "Other.ListModels", ContentType, bad, smapi.ErrUnknownOperation},
		{"POST", "/", "SageMaker.ListModels", "text/plain", bad, smapi.ErrSerialization},
	} {
		r := do(c.method, c.path, c.target, c.ct, "{}")
		if r.status != c.status || r.errType() != c.code {
			t.Errorf("%s %s %s %s: %d %s", c.method, c.path, c.target, c.ct, r.status, r.body)
		}
	}
	r := do("POST", "/", "SageMaker.ListModels", ContentType+"; charset=utf-8", "")
	if r.status != 200 || r.header.Get("Content-Type") != ContentType || r.header.Get("X-Amzn-Requestid") == "" {
		t.Fatalf("%d %v %s", r.status, r.header, r.body)
	}
	big := `{"ModelName":"` + strings.Repeat("a", DefaultMaxBodyBytes) + `"}`
	if r := do("POST", "/", "SageMaker.CreateModel", ContentType, big); r.status != http.StatusRequestEntityTooLarge {
		t.Fatalf("large body: %d", r.status)
	}
}

func TestEndpointLifecycle(t *testing.T) {
	e := newEnv(t)
	e.seed()
	e.ok("CreateEndpoint", smapi.CreateEndpointInput{EndpointName: "ep", EndpointConfigName: "c1",
		Serai: &smapi.EndpointExtension{AutoRollback: &smapi.AutoRollback{MaxErrorRate: ptr(0.05)}}})
	ep := e.endpoint("ep")
	if ep.Status != smapi.StatusCreating || ep.ConfigName != "" || ep.NextGeneration != 1 || ep.Op == nil ||
		ep.Op.Kind != records.OpCreate || ep.Op.Phase != "start" || ep.Op.ConfigName != "c1" || ep.AutoRollback == nil {
		t.Fatalf("record after create: %+v op %+v", ep, ep.Op)
	}
	var d smapi.DescribeEndpointOutput
	e.ok("DescribeEndpoint", smapi.DescribeEndpointInput{EndpointName: "ep"}).decode(t, &d)
	if d.EndpointStatus != "Creating" || d.EndpointConfigName != "c1" || len(d.ProductionVariants) != 1 ||
		d.ProductionVariants[0].DesiredInstanceCount != 2 || d.ProductionVariants[0].VariantStatus[0].Status != "Creating" ||
		d.EndpointArn != arnPrefix+"endpoint/ep" {
		t.Fatalf("describe while creating: %+v", d)
	}

	// The reconciler brings generation 1 up.
	e.clock.Advance(time.Minute)
	e.serve("ep", "c1", 1)
	e.obs.obs["ep"] = Observation{Variants: map[GV]VariantObservation{{1, "a"}: {Passing: 2, Desired: 2, Image: "registry.local/m1:1"}}}
	d = smapi.DescribeEndpointOutput{}
	e.ok("DescribeEndpoint", smapi.DescribeEndpointInput{EndpointName: "ep"}).decode(t, &d)
	pv := d.ProductionVariants[0]
	if d.EndpointStatus != "InService" || d.EndpointConfigName != "c1" || pv.CurrentInstanceCount != 2 || pv.CurrentWeight != 1 ||
		len(pv.DeployedImages) != 1 || pv.VariantStatus != nil || d.Serai.Generations[0].JobID != "serai-ep.g1" || len(d.Serai.StatusHistory) != 2 {
		t.Fatalf("describe in service: %+v", d)
	}

	// Update to c2 with a canary policy.
	policy := &smapi.DeploymentConfig{BlueGreenUpdatePolicy: &smapi.BlueGreenUpdatePolicy{TrafficRoutingConfiguration: smapi.TrafficRoutingConfiguration{
		Type: smapi.TrafficCanary, WaitIntervalInSeconds: 60, CanarySize: &smapi.CapacitySize{Type: smapi.CapacityPercent, Value: 10}}}}
	e.ok("UpdateEndpoint", smapi.UpdateEndpointInput{EndpointName: "ep", EndpointConfigName: "c2", DeploymentConfig: policy})
	ep = e.endpoint("ep")
	if ep.Status != smapi.StatusUpdating || ep.Op.Kind != records.OpUpdate || ep.Op.ConfigName != "c2" || ep.Op.Policy == nil ||
		ep.Deployment == nil || ep.Op.AutoRollback == nil || *ep.Op.AutoRollback.MaxErrorRate != 0.05 {
		t.Fatalf("record after update: %+v op %+v", ep, ep.Op)
	}
	e.fails("UpdateEndpoint", smapi.UpdateEndpointInput{EndpointName: "ep", EndpointConfigName: "c1"}, bad, smapi.ErrValidation, "Cannot update in-progress endpoint")
	d = smapi.DescribeEndpointOutput{}
	e.ok("DescribeEndpoint", smapi.DescribeEndpointInput{EndpointName: "ep"}).decode(t, &d)
	if d.PendingDeploymentSummary == nil || d.PendingDeploymentSummary.EndpointConfigName != "c2" || len(d.PendingDeploymentSummary.ProductionVariants) != 2 ||
		d.PendingDeploymentSummary.ProductionVariants[0].VariantStatus[0].Status != "Updating" || d.EndpointConfigName != "c1" ||
		d.LastDeploymentConfig == nil {
		t.Fatalf("describe while updating: %+v", d)
	}
	// c2 is now referenced (by the operation): it cannot go.
	e.fails("DeleteEndpointConfig", smapi.DeleteEndpointConfigInput{EndpointConfigName: "c2"}, bad, smapi.ErrResourceInUse, "Cannot delete endpoint configuration")
	e.fails("DeleteModel", smapi.DeleteModelInput{ModelName: "m2"}, bad, smapi.ErrResourceInUse, "through endpoint configuration \"c2\"")

	// The update completes.
	e.serve("ep", "c2", 2)
	// c1 is unused now; m1 is still used through c2.
	e.ok("DeleteEndpointConfig", smapi.DeleteEndpointConfigInput{EndpointConfigName: "c1"})
	e.fails("DeleteModel", smapi.DeleteModelInput{ModelName: "m1"}, bad, smapi.ErrResourceInUse, "")

	// Weights and capacities.
	e.fails("UpdateEndpointWeightsAndCapacities", smapi.UpdateEndpointWeightsAndCapacitiesInput{EndpointName: "ep",
		DesiredWeightsAndCapacities: []smapi.DesiredWeightAndCapacity{{VariantName: "zz", DesiredWeight: ptr(1.0)}}}, bad, smapi.ErrValidation, `The variant name "zz" is not present`)
	e.fails("UpdateEndpointWeightsAndCapacities", smapi.UpdateEndpointWeightsAndCapacitiesInput{EndpointName: "ep",
		DesiredWeightsAndCapacities: []smapi.DesiredWeightAndCapacity{{VariantName: "a", DesiredInstanceCount: ptr(0)}}}, bad, smapi.ErrValidation, "MinCapacity 0")
	e.fails("UpdateEndpointWeightsAndCapacities", smapi.UpdateEndpointWeightsAndCapacitiesInput{EndpointName: "ep",
		DesiredWeightsAndCapacities: []smapi.DesiredWeightAndCapacity{{VariantName: "a", DesiredWeight: ptr(0.0)}, {VariantName: "b", DesiredWeight: ptr(0.0)}}},
		bad, smapi.ErrValidation, "would all be 0")
	e.fails("UpdateEndpointWeightsAndCapacities", smapi.UpdateEndpointWeightsAndCapacitiesInput{EndpointName: "ep",
		DesiredWeightsAndCapacities: []smapi.DesiredWeightAndCapacity{{VariantName: "a"}}}, bad, smapi.ErrValidation, "'desiredWeightsAndCapacities.1.member.desiredWeight'")
	e.ok("UpdateEndpointWeightsAndCapacities", smapi.UpdateEndpointWeightsAndCapacitiesInput{EndpointName: "ep",
		DesiredWeightsAndCapacities: []smapi.DesiredWeightAndCapacity{{VariantName: "b", DesiredWeight: ptr(2.0), DesiredInstanceCount: ptr(3)}}})
	ep = e.endpoint("ep")
	if ep.Status != smapi.StatusUpdating || ep.Op.Kind != records.OpWeights || len(ep.Op.Weights) != 1 {
		t.Fatalf("record after weights: %+v", ep.Op)
	}
	d = smapi.DescribeEndpointOutput{}
	e.ok("DescribeEndpoint", smapi.DescribeEndpointInput{EndpointName: "ep"}).decode(t, &d)
	if b := d.ProductionVariants[1]; b.VariantName != "b" || b.DesiredWeight != 2 || b.CurrentWeight != 1 || b.DesiredInstanceCount != 3 {
		t.Fatalf("describe during weights: %+v", d.ProductionVariants)
	}

	// Delete: replaces the operation under way; a second delete is a no-op.
	e.ok("DeleteEndpoint", smapi.DeleteEndpointInput{EndpointName: "ep"})
	before := e.snapshot()
	e.ok("DeleteEndpoint", smapi.DeleteEndpointInput{EndpointName: "ep"})
	e.unchanged(before, "second DeleteEndpoint")
	ep = e.endpoint("ep")
	if ep.Status != smapi.StatusDeleting || ep.Op.Kind != records.OpDelete {
		t.Fatalf("record after delete: %+v", ep)
	}
	// Until the reconciler removes the record, its configs stay.
	e.fails("DeleteEndpointConfig", smapi.DeleteEndpointConfigInput{EndpointConfigName: "c2"}, bad, smapi.ErrResourceInUse, "(Deleting)")
	if err := e.store.Delete(context.Background(), records.KindEndpoint, "ep", e.snapshot()["serai/endpoints/ep"]); err != nil {
		t.Fatal(err)
	}
	e.fails("DescribeEndpoint", smapi.DescribeEndpointInput{EndpointName: "ep"}, bad, smapi.ErrValidation, `Could not find endpoint "`+arnPrefix+`endpoint/ep".`)
	e.ok("DeleteEndpointConfig", smapi.DeleteEndpointConfigInput{EndpointConfigName: "c2"})
	e.ok("DeleteModel", smapi.DeleteModelInput{ModelName: "m1"})
	e.ok("DeleteModel", smapi.DeleteModelInput{ModelName: "m2"})
}

func TestUpdateRetainsDeploymentConfig(t *testing.T) {
	e := newEnv(t)
	e.seed()
	policy := &smapi.DeploymentConfig{BlueGreenUpdatePolicy: &smapi.BlueGreenUpdatePolicy{TrafficRoutingConfiguration: smapi.TrafficRoutingConfiguration{
		Type: smapi.TrafficLinear, WaitIntervalInSeconds: 30, LinearStepSize: &smapi.CapacitySize{Type: smapi.CapacityPercent, Value: 25}}}}
	e.ok("CreateEndpoint", smapi.CreateEndpointInput{EndpointName: "ep", EndpointConfigName: "c1", DeploymentConfig: policy})
	e.serve("ep", "c1", 1)
	e.ok("UpdateEndpoint", smapi.UpdateEndpointInput{EndpointName: "ep", EndpointConfigName: "c2", RetainDeploymentConfig: true})
	if op := e.endpoint("ep").Op; op.Policy == nil || op.Policy.BlueGreenUpdatePolicy.TrafficRoutingConfiguration.Type != smapi.TrafficLinear {
		t.Fatalf("retained policy: %+v", op.Policy)
	}
	e.serve("ep", "c2", 2)
	e.ok("UpdateEndpoint", smapi.UpdateEndpointInput{EndpointName: "ep", EndpointConfigName: "c1"})
	if ep := e.endpoint("ep"); ep.Op.Policy != nil || ep.Deployment != nil {
		t.Fatalf("without RetainDeploymentConfig the default applies: %+v", ep.Op.Policy)
	}
	e.fails("UpdateEndpoint", `{"EndpointName":"ep","EndpointConfigName":"c1","RetainAllVariantProperties":true}`, bad, smapi.ErrValidation, "'retainAllVariantProperties'")
}

func TestFailedEndpointNotUpdatable(t *testing.T) {
	e := newEnv(t)
	e.seed()
	e.ok("CreateEndpoint", smapi.CreateEndpointInput{EndpointName: "ep", EndpointConfigName: "c1"})
	_, err := records.Update(context.Background(), e.store, records.KindEndpoint, "ep", func(ep *records.Endpoint) error {
		ep.Op = nil
		ep.FailureReason = "variant a: allocation 1234 failed: exit 1"
		ep.SetStatus(smapi.StatusFailed, ep.FailureReason, e.clock.Now())
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	var d smapi.DescribeEndpointOutput
	e.ok("DescribeEndpoint", smapi.DescribeEndpointInput{EndpointName: "ep"}).decode(t, &d)
	if d.EndpointStatus != "Failed" || !strings.Contains(d.FailureReason, "allocation 1234") {
		t.Fatalf("%+v", d)
	}
	e.fails("UpdateEndpoint", smapi.UpdateEndpointInput{EndpointName: "ep", EndpointConfigName: "c2"}, bad, smapi.ErrValidation, "in status Failed")
	e.ok("DeleteEndpoint", smapi.DeleteEndpointInput{EndpointName: "ep"})
}

// TestConcurrentCreates: of many concurrent creates of one name exactly
// one wins; the others get SageMaker's "already existing".
func TestConcurrentCreates(t *testing.T) {
	concurrentCreates(t, newEnv(t))
}

func concurrentCreates(t *testing.T, e *env) {
	e.seed()
	for _, c := range []struct {
		op   string
		body func(i int) any
	}{
		{"CreateModel", func(i int) any {
			m := model("race")
			m.PrimaryContainer.Image = fmt.Sprintf("img:%d", i)
			return m
		}},
		{"CreateEndpointConfig", func(i int) any { return config("race", variant("a", "m1", i+1, 1)) }},
		{"CreateEndpoint", func(i int) any {
			return smapi.CreateEndpointInput{EndpointName: "race", EndpointConfigName: []string{"c1", "c2"}[i%2]}
		}},
	} {
		const n = 8
		var wg sync.WaitGroup
		results := make([]result, n)
		for i := 0; i < n; i++ {
			wg.Add(1)
			go func(i int) {
				defer wg.Done()
				results[i] = e.call(c.op, c.body(i))
			}(i)
		}
		wg.Wait()
		wins := 0
		for _, r := range results {
			switch {
			case r.status == 200:
				wins++
			case r.errType() == smapi.ErrValidation && strings.Contains(r.message(), "Cannot create already existing"):
			default:
				t.Errorf("%s: unexpected %d %s", c.op, r.status, r.body)
			}
		}
		if wins != 1 {
			t.Fatalf("%s: %d of %d concurrent creates won, want exactly 1", c.op, wins, n)
		}
		t.Logf("RESULT %s: %d concurrent creates of one name, 1 won", c.op, n)
	}
}

// TestDeleteRacesReference: a config deleted while an endpoint that uses
// it is being created either goes first (and the create fails with
// "Could not find") or stays (ResourceInUse); never both succeed.
func TestDeleteRacesReference(t *testing.T) {
	deleteRacesReference(t, newEnv(t), 30)
}

func deleteRacesReference(t *testing.T, e *env, rounds int) {
	e.ok("CreateModel", model("m1"))
	outcomes := map[string]int{}
	for i := 0; i < rounds; i++ {
		cfg, epName := fmt.Sprintf("c%d", i), fmt.Sprintf("e%d", i)
		e.ok("CreateEndpointConfig", config(cfg, variant("a", "m1", 1, 1)))
		var wg sync.WaitGroup
		var del, cre result
		wg.Add(2)
		go func() {
			defer wg.Done()
			del = e.call("DeleteEndpointConfig", smapi.DeleteEndpointConfigInput{EndpointConfigName: cfg})
		}()
		go func() {
			defer wg.Done()
			cre = e.call("CreateEndpoint", smapi.CreateEndpointInput{EndpointName: epName, EndpointConfigName: cfg})
		}()
		wg.Wait()
		switch {
		case del.status == 200 && cre.status != 200 && strings.Contains(cre.message(), "Could not find endpoint configuration"):
			outcomes["delete first"]++
		case cre.status == 200 && del.errType() == smapi.ErrResourceInUse:
			outcomes["create first"]++
		default:
			t.Fatalf("round %d: delete %d %s, create %d %s", i, del.status, del.body, cre.status, cre.body)
		}
		_, _, err := e.kv.Get(context.Background(), records.KindEndpointConfig.Key(cfg))
		_, _, err2 := e.kv.Get(context.Background(), records.KindEndpoint.Key(epName))
		if errors.Is(err, records.ErrNotFound) && err2 == nil {
			t.Fatalf("round %d: endpoint %s refers to deleted config %s", i, epName, cfg)
		}
	}
	t.Logf("RESULT delete/create races: %v (never both)", outcomes)
}

func TestListPaging(t *testing.T) {
	e := newEnv(t)
	for i := 0; i < 25; i++ {
		e.ok("CreateModel", model(fmt.Sprintf("m%02d", i)))
		e.clock.Advance(time.Second)
	}
	var names []string
	token := ""
	pages := 0
	for {
		var out smapi.ListModelsOutput
		e.ok("ListModels", smapi.ListModelsInput{MaxResults: ptr(10), NextToken: token}).decode(t, &out)
		pages++
		for _, m := range out.Models {
			names = append(names, m.ModelName)
		}
		if out.NextToken == "" {
			break
		}
		token = out.NextToken
		// A record created between pages does not shift the pages.
		if pages == 1 {
			e.ok("CreateModel", model("late"))
		}
	}
	if pages != 3 || len(names) != 25 || names[0] != "m24" || names[24] != "m00" {
		t.Fatalf("default order (CreationTime, Descending): %d pages %v", pages, names)
	}
	var out smapi.ListModelsOutput
	e.ok("ListModels", smapi.ListModelsInput{SortBy: "Name", SortOrder: "Ascending", NameContains: "M1", MaxResults: ptr(100)}).decode(t, &out)
	if len(out.Models) != 10 || out.Models[0].ModelName != "m10" || out.NextToken != "" {
		t.Fatalf("NameContains: %+v", out)
	}
	out = smapi.ListModelsOutput{}
	after := smapi.NewTime(e.clock.Now().Add(-5500 * time.Millisecond))
	e.ok("ListModels", smapi.ListModelsInput{CreationTimeAfter: &after}).decode(t, &out)
	if len(out.Models) != 6 { // m20..m24 and late
		t.Fatalf("CreationTimeAfter: %+v", out)
	}
	e.fails("ListModels", smapi.ListModelsInput{SortBy: "Name", NextToken: token}, bad, smapi.ErrValidation, "Invalid pagination token")
	e.fails("ListModels", smapi.ListModelsInput{SortBy: "Status"}, bad, smapi.ErrValidation, "'sortBy'")
}

func TestListEndpointsAndConfigs(t *testing.T) {
	e := newEnv(t)
	e.seed()
	e.ok("CreateEndpoint", smapi.CreateEndpointInput{EndpointName: "one", EndpointConfigName: "c1"})
	e.ok("CreateEndpoint", smapi.CreateEndpointInput{EndpointName: "two", EndpointConfigName: "c1"})
	e.serve("two", "c1", 1)
	var out smapi.ListEndpointsOutput
	e.ok("ListEndpoints", smapi.ListEndpointsInput{StatusEquals: "InService"}).decode(t, &out)
	if len(out.Endpoints) != 1 || out.Endpoints[0].EndpointName != "two" || out.Endpoints[0].EndpointStatus != "InService" {
		t.Fatalf("%+v", out)
	}
	out = smapi.ListEndpointsOutput{}
	e.ok("ListEndpoints", smapi.ListEndpointsInput{SortBy: "Status", SortOrder: "Ascending"}).decode(t, &out)
	if len(out.Endpoints) != 2 || out.Endpoints[0].EndpointStatus != "Creating" {
		t.Fatalf("%+v", out)
	}
	var cs smapi.ListEndpointConfigsOutput
	e.ok("ListEndpointConfigs", smapi.ListEndpointConfigsInput{SortBy: "Name", SortOrder: "Ascending"}).decode(t, &cs)
	if len(cs.EndpointConfigs) != 2 || cs.EndpointConfigs[0].EndpointConfigName != "c1" || cs.EndpointConfigs[0].EndpointConfigArn != arnPrefix+"endpoint-config/c1" {
		t.Fatalf("%+v", cs)
	}
	// An empty list is [] (the SDK paginators stop on it).
	var ms smapi.ListModelsOutput
	r := e.ok("ListModels", smapi.ListModelsInput{NameContains: "zzz"})
	r.decode(t, &ms)
	if !strings.Contains(string(r.body), `"Models":[]`) {
		t.Fatalf("%s", r.body)
	}
}

func TestTags(t *testing.T) {
	e := newEnv(t)
	e.seed()
	arn := arnPrefix + "endpoint-config/c1"
	e.ok("AddTags", smapi.AddTagsInput{ResourceArn: arn, Tags: []smapi.Tag{{Key: "team", Value: "ml"}, {Key: "env", Value: "prod"}}})
	e.ok("AddTags", smapi.AddTagsInput{ResourceArn: arn, Tags: []smapi.Tag{{Key: "env", Value: "dev"}}})
	var lt smapi.ListTagsOutput
	e.ok("ListTags", smapi.ListTagsInput{ResourceArn: arn}).decode(t, &lt)
	if len(lt.Tags) != 2 || lt.Tags[1] != (smapi.Tag{Key: "env", Value: "dev"}) {
		t.Fatalf("%+v", lt)
	}
	e.ok("DeleteTags", smapi.DeleteTagsInput{ResourceArn: arn, TagKeys: []string{"team", "absent"}})
	lt = smapi.ListTagsOutput{}
	e.ok("ListTags", smapi.ListTagsInput{ResourceArn: arn}).decode(t, &lt)
	if len(lt.Tags) != 1 || lt.Tags[0].Key != "env" {
		t.Fatalf("%+v", lt)
	}
	// Too many tags: refused whole.
	var many []smapi.Tag
	for i := 0; i < 50; i++ {
		many = append(many, smapi.Tag{Key: fmt.Sprintf("k%d", i), Value: "v"})
	}
	before := e.snapshot()
	e.fails("AddTags", smapi.AddTagsInput{ResourceArn: arn, Tags: many}, bad, smapi.ErrResourceLimit, "at most 50")
	e.unchanged(before, "refused AddTags")
	// Tags given at creation; ARNs resolve names of any case.
	m := model("Mixed-Case")
	m.Tags = []smapi.Tag{{Key: "a", Value: "1"}}
	e.ok("CreateModel", m)
	lt = smapi.ListTagsOutput{}
	e.ok("ListTags", smapi.ListTagsInput{ResourceArn: arnPrefix + "model/mixed-case"}).decode(t, &lt)
	if len(lt.Tags) != 1 {
		t.Fatalf("%+v", lt)
	}
	e.fails("ListTags", smapi.ListTagsInput{ResourceArn: arnPrefix + "model/mixed-case", MaxResults: ptr(5)}, bad, smapi.ErrValidation, "'maxResults'")
}

// failingKV is a store that cannot be reached.
type failingKV struct{}

var errDown = errors.New("dial tcp 127.0.0.1:8500: connect: connection refused")

func (failingKV) Get(context.Context, string) ([]byte, uint64, error)  { return nil, 0, errDown }
func (failingKV) List(context.Context, string) ([]records.Pair, error) { return nil, errDown }
func (failingKV) CAS(context.Context, string, []byte, uint64) error    { return errDown }
func (failingKV) DeleteCAS(context.Context, string, uint64) error      { return errDown }
func (failingKV) Txn(context.Context, []records.TxnOp) error           { return errDown }

func TestStoreUnavailable(t *testing.T) {
	e := newEnvKV(t, failingKV{})
	for op, body := range map[string]any{
		"CreateModel":      model("m"),
		"DescribeEndpoint": smapi.DescribeEndpointInput{EndpointName: "e"},
		"ListEndpoints":    smapi.ListEndpointsInput{},
		"DeleteEndpoint":   smapi.DeleteEndpointInput{EndpointName: "e"},
		"AddTags":          smapi.AddTagsInput{ResourceArn: arnPrefix + "model/m", Tags: []smapi.Tag{{Key: "a"}}},
	} {
		r := e.call(op, body)
		if r.status != http.StatusServiceUnavailable || r.errType() != smapi.ErrServiceUnavailable || !strings.Contains(r.message(), "Consul") {
			t.Errorf("%s: %d %s", op, r.status, r.body)
		}
		if strings.Contains(string(r.body), "8500") {
			t.Errorf("%s: the answer leaks the store's address: %s", op, r.body)
		}
	}
}

// hangingKV accepts requests and never answers, like a Consul behind a
// dead network path.
type hangingKV struct{ failingKV }

func (hangingKV) Get(ctx context.Context, _ string) ([]byte, uint64, error) {
	<-ctx.Done()
	return nil, 0, fmt.Errorf("consul kv get: %w", ctx.Err())
}

func (hangingKV) List(ctx context.Context, _ string) ([]records.Pair, error) {
	<-ctx.Done()
	return nil, fmt.Errorf("consul kv list: %w", ctx.Err())
}

func TestStoreHangs(t *testing.T) {
	h, err := New(Config{Store: records.Store{KV: hangingKV{}}, RequestTimeout: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, h: h}
	e.fails("DescribeEndpoint", smapi.DescribeEndpointInput{EndpointName: "e"}, http.StatusServiceUnavailable, smapi.ErrServiceUnavailable, "did not answer in time")
}

func TestObserverErrorStillDescribes(t *testing.T) {
	e := newEnv(t)
	e.seed()
	e.ok("CreateEndpoint", smapi.CreateEndpointInput{EndpointName: "ep", EndpointConfigName: "c1"})
	e.serve("ep", "c1", 1)
	e.obs.err = errors.New("nomad down")
	var d smapi.DescribeEndpointOutput
	e.ok("DescribeEndpoint", smapi.DescribeEndpointInput{EndpointName: "ep"}).decode(t, &d)
	if d.ProductionVariants[0].CurrentInstanceCount != 0 || d.ProductionVariants[0].DesiredInstanceCount != 2 {
		t.Fatalf("%+v", d.ProductionVariants)
	}
}

func TestVariantStatusByPhase(t *testing.T) {
	for phase, want := range map[string]string{
		"start": "Creating", "register": "Creating", "wait-healthy": "Creating", "activate": "ActivatingTraffic",
	} {
		if got := variantStatus(&records.Operation{Kind: records.OpCreate, Phase: phase}); got[0].Status != want {
			t.Errorf("create %s: %s", phase, got[0].Status)
		}
	}
	for phase, want := range map[string]string{
		"start": "Updating", "wait-healthy": "Updating", "shift": "ActivatingTraffic", "bake": "Baking", "rollback": "Updating", "retire": "Updating",
	} {
		if got := variantStatus(&records.Operation{Kind: records.OpUpdate, Phase: phase}); got[0].Status != want {
			t.Errorf("update %s: %s", phase, got[0].Status)
		}
	}
	if got := variantStatus(&records.Operation{Kind: records.OpDelete, Phase: "drain"}); got[0].Status != "Deleting" {
		t.Errorf("delete: %s", got[0].Status)
	}
}
