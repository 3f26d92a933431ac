package api

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/sagemaker"
	"github.com/aws/aws-sdk-go-v2/service/sagemaker/types"
	"github.com/aws/smithy-go"
	consulapi "github.com/hashicorp/consul/api"
	"github.com/hashicorp/go-hclog"

	"github.com/seraihq/serai/internal/testagents"
	"github.com/seraihq/serai/server/records"
	"github.com/seraihq/serai/server/smapi"
)

const (
	testAKID   = "AKIASERAITEST0000001"
	testSecret = "c2VyYWktdGVzdC1zZWNyZXQta2V5LTAwMDE"
)

// TestOnConsul runs the API on a real Consul agent: the races of the
// unit tests, and the unmodified AWS SDK for Go v2 SageMaker client
// through its whole hosting lifecycle, waiters included, with SigV4 on.
func TestOnConsul(t *testing.T) {
	agent := testagents.StartConsul(t)
	if agent.Reused {
		t.Skip("these tests own the serai/ tree in Consul; unset CONSUL_HTTP_ADDR so they start their own agent")
	}
	kv := records.ConsulKV{KV: agent.Client.KV()}
	clean := func(t *testing.T) {
		if _, err := agent.Client.KV().DeleteTree("serai/", nil); err != nil {
			t.Fatal(err)
		}
	}
	t.Run("ConcurrentCreates", func(t *testing.T) {
		clean(t)
		concurrentCreates(t, newEnvKV(t, kv))
	})
	t.Run("DeleteRacesReference", func(t *testing.T) {
		clean(t)
		deleteRacesReference(t, newEnvKV(t, kv), 15)
	})
	t.Run("RejectedWritesNothing", func(t *testing.T) {
		clean(t)
		e := newEnvKV(t, kv)
		e.seed()
		before := e.snapshot()
		e.fails("CreateEndpointConfig", config("c1", variant("a", "m1", 1, 1)), bad, smapi.ErrValidation, "Cannot create already existing endpoint configuration")
		e.fails("CreateEndpointConfig", config("c3", variant("a", "m1", 1, 1), variant("a", "m2", 1, 1)), bad, smapi.ErrValidation, `variant "a" is already declared`)
		e.fails("CreateEndpoint", smapi.CreateEndpointInput{EndpointName: "e", EndpointConfigName: "nope"}, bad, smapi.ErrValidation, "Could not find endpoint configuration")
		e.unchanged(before, "refused requests")
	})
	t.Run("SDK", func(t *testing.T) {
		clean(t)
		sdkLifecycle(t, kv)
	})
	t.Run("ConsulDown", func(t *testing.T) {
		// A Consul that does not answer: 503 naming the store, and the
		// SDK surfaces it after its retries.
		down, err := consulKVAt(testagents.FreeLoopbackAddr(t))
		if err != nil {
			t.Fatal(err)
		}
		e := newEnvKV(t, down)
		e.fails("CreateModel", model("m"), http.StatusServiceUnavailable, smapi.ErrServiceUnavailable, "Consul")
	})
}

func sdkLifecycle(t *testing.T, kv records.KV) {
	e := newEnvKV(t, kv)
	keys := filepath.Join(t.TempDir(), "keys")
	if err := os.WriteFile(keys, []byte("# test key\n"+testAKID+" "+testSecret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	h, err := New(Config{Store: e.store, Region: "eu-west-1", Account: "123456789012", Observer: e.obs, SigV4KeyFile: keys,
		Logger: hclog.New(&hclog.LoggerOptions{Level: hclog.Warn, Output: testWriter{t}})})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	defer srv.Close()
	client := sagemaker.New(sagemaker.Options{
		Region:       "eu-west-1",
		BaseEndpoint: aws.String(srv.URL),
		Credentials:  credentials.NewStaticCredentialsProvider(testAKID, testSecret, ""),
	})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	must := func(_ any, err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}

	// Unsigned and wrongly signed requests are refused as AWS does.
	resp, err := http.Post(srv.URL, ContentType, strings.NewReader(`{}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden || resp.Header.Get("X-Amzn-Errortype") != smapi.ErrMissingAuthToken {
		t.Fatalf("unsigned: %d %s", resp.StatusCode, resp.Header.Get("X-Amzn-Errortype"))
	}
	wrong := sagemaker.New(sagemaker.Options{Region: "eu-west-1", BaseEndpoint: aws.String(srv.URL),
		Credentials: credentials.NewStaticCredentialsProvider(testAKID, testSecret+"x", "")})
	_, err = wrong.ListModels(ctx, &sagemaker.ListModelsInput{})
	if code := apiCode(err); code != smapi.ErrInvalidSignature {
		t.Fatalf("wrong secret: %v", err)
	}
	otherRegion := sagemaker.New(sagemaker.Options{Region: "us-west-2", BaseEndpoint: aws.String(srv.URL),
		Credentials: credentials.NewStaticCredentialsProvider(testAKID, testSecret, "")})
	if _, err = otherRegion.ListModels(ctx, &sagemaker.ListModelsInput{}); apiCode(err) != smapi.ErrInvalidSignature {
		t.Fatalf("other region: %v", err)
	}
	unknownKey := sagemaker.New(sagemaker.Options{Region: "eu-west-1", BaseEndpoint: aws.String(srv.URL),
		Credentials: credentials.NewStaticCredentialsProvider("AKIAUNKNOWN", testSecret, "")})
	if _, err = unknownKey.ListModels(ctx, &sagemaker.ListModelsInput{}); apiCode(err) != smapi.ErrUnrecognizedClient {
		t.Fatalf("unknown key: %v", err)
	}

	for _, m := range []string{"sdk-model-a", "sdk-model-b"} {
		out, err := client.CreateModel(ctx, &sagemaker.CreateModelInput{
			ModelName:        aws.String(m),
			ExecutionRoleArn: aws.String("arn:aws:iam::123456789012:role/serai"),
			PrimaryContainer: &types.ContainerDefinition{Image: aws.String("registry.local/" + m + ":1"), Environment: map[string]string{"MODEL": m}},
			Tags:             []types.Tag{{Key: aws.String("team"), Value: aws.String("ml")}},
		})
		if err != nil {
			t.Fatal(err)
		}
		if *out.ModelArn != arnPrefix+"model/"+m {
			t.Fatalf("ARN %s", *out.ModelArn)
		}
	}
	dm, err := client.DescribeModel(ctx, &sagemaker.DescribeModelInput{ModelName: aws.String("sdk-model-a")})
	if err != nil || *dm.PrimaryContainer.Image != "registry.local/sdk-model-a:1" || dm.CreationTime == nil || dm.CreationTime.IsZero() {
		t.Fatalf("DescribeModel: %+v %v", dm, err)
	}
	// The SDK's paginator walks serai's NextToken.
	var listed []string
	p := sagemaker.NewListModelsPaginator(client, &sagemaker.ListModelsInput{MaxResults: aws.Int32(1), SortBy: types.ModelSortKeyName, SortOrder: types.OrderKeyAscending})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range page.Models {
			listed = append(listed, *m.ModelName)
		}
	}
	if strings.Join(listed, ",") != "sdk-model-a,sdk-model-b" {
		t.Fatalf("paginated: %v", listed)
	}

	for cfg, models := range map[string][]string{"sdk-config-1": {"sdk-model-a"}, "sdk-config-2": {"sdk-model-a", "sdk-model-b"}} {
		in := &sagemaker.CreateEndpointConfigInput{EndpointConfigName: aws.String(cfg)}
		for i, m := range models {
			in.ProductionVariants = append(in.ProductionVariants, types.ProductionVariant{
				VariantName:          aws.String([]string{"blue", "green"}[i]),
				ModelName:            aws.String(m),
				InstanceType:         types.ProductionVariantInstanceTypeMlM5Large,
				InitialInstanceCount: aws.Int32(1),
				InitialVariantWeight: aws.Float32(1),
			})
		}
		must(client.CreateEndpointConfig(ctx, in))
	}
	dc, err := client.DescribeEndpointConfig(ctx, &sagemaker.DescribeEndpointConfigInput{EndpointConfigName: aws.String("sdk-config-2")})
	if err != nil || len(dc.ProductionVariants) != 2 || dc.ProductionVariants[1].InstanceType != types.ProductionVariantInstanceTypeMlM5Large {
		t.Fatalf("DescribeEndpointConfig: %+v %v", dc, err)
	}

	// Create, and the SDK's own EndpointInService waiter while the
	// "reconciler" (this test) brings it up.
	start := time.Now()
	ce, err := client.CreateEndpoint(ctx, &sagemaker.CreateEndpointInput{EndpointName: aws.String("sdk-ep"), EndpointConfigName: aws.String("sdk-config-1")})
	if err != nil || *ce.EndpointArn != arnPrefix+"endpoint/sdk-ep" {
		t.Fatalf("CreateEndpoint: %+v %v", ce, err)
	}
	_, err = client.CreateEndpoint(ctx, &sagemaker.CreateEndpointInput{EndpointName: aws.String("sdk-ep"), EndpointConfigName: aws.String("sdk-config-1")})
	if apiCode(err) != smapi.ErrValidation || !strings.Contains(err.Error(), "Cannot create already existing endpoint") {
		t.Fatalf("duplicate CreateEndpoint: %v", err)
	}
	de, err := client.DescribeEndpoint(ctx, &sagemaker.DescribeEndpointInput{EndpointName: aws.String("sdk-ep")})
	if err != nil || de.EndpointStatus != types.EndpointStatusCreating || *de.EndpointConfigName != "sdk-config-1" {
		t.Fatalf("DescribeEndpoint while creating: %+v %v", de, err)
	}
	statuses := []string{string(de.EndpointStatus)}
	go func() {
		time.Sleep(300 * time.Millisecond)
		e.serve("sdk-ep", "sdk-config-1", 1)
	}()
	waiter := sagemaker.NewEndpointInServiceWaiter(client, func(o *sagemaker.EndpointInServiceWaiterOptions) {
		o.MinDelay, o.MaxDelay = 100*time.Millisecond, 200*time.Millisecond
	})
	if err := waiter.Wait(ctx, &sagemaker.DescribeEndpointInput{EndpointName: aws.String("sdk-ep")}, time.Minute); err != nil {
		t.Fatalf("EndpointInService waiter: %v", err)
	}
	t.Logf("RESULT sdk: CreateEndpoint to EndpointInService waiter done in %s (record flipped after 300ms)", time.Since(start).Round(time.Millisecond))
	e.obs.mu.Lock()
	e.obs.obs["sdk-ep"] = Observation{Variants: map[GV]VariantObservation{{1, "blue"}: {Passing: 1, Desired: 1, Image: "registry.local/sdk-model-a:1"}}}
	e.obs.mu.Unlock()
	de, err = client.DescribeEndpoint(ctx, &sagemaker.DescribeEndpointInput{EndpointName: aws.String("sdk-ep")})
	if err != nil || de.EndpointStatus != types.EndpointStatusInService || len(de.ProductionVariants) != 1 ||
		*de.ProductionVariants[0].CurrentInstanceCount != 1 || *de.ProductionVariants[0].CurrentWeight != 1 ||
		*de.ProductionVariants[0].DeployedImages[0].SpecifiedImage != "registry.local/sdk-model-a:1" {
		t.Fatalf("DescribeEndpoint in service: %+v %v", de, err)
	}
	statuses = append(statuses, string(de.EndpointStatus))

	// Update to the two-variant config with a canary policy.
	_, err = client.UpdateEndpoint(ctx, &sagemaker.UpdateEndpointInput{
		EndpointName: aws.String("sdk-ep"), EndpointConfigName: aws.String("sdk-config-2"),
		DeploymentConfig: &types.DeploymentConfig{BlueGreenUpdatePolicy: &types.BlueGreenUpdatePolicy{
			TrafficRoutingConfiguration: &types.TrafficRoutingConfig{
				Type: types.TrafficRoutingConfigTypeCanary, WaitIntervalInSeconds: aws.Int32(30),
				CanarySize: &types.CapacitySize{Type: types.CapacitySizeTypeCapacityPercent, Value: aws.Int32(10)},
			},
			TerminationWaitInSeconds: aws.Int32(0),
		}},
	})
	if err != nil {
		t.Fatal(err)
	}
	de, err = client.DescribeEndpoint(ctx, &sagemaker.DescribeEndpointInput{EndpointName: aws.String("sdk-ep")})
	if err != nil || de.EndpointStatus != types.EndpointStatusUpdating || de.PendingDeploymentSummary == nil ||
		*de.PendingDeploymentSummary.EndpointConfigName != "sdk-config-2" || de.LastDeploymentConfig == nil ||
		de.LastDeploymentConfig.BlueGreenUpdatePolicy.TrafficRoutingConfiguration.Type != types.TrafficRoutingConfigTypeCanary {
		t.Fatalf("DescribeEndpoint while updating: %+v %v", de, err)
	}
	statuses = append(statuses, string(de.EndpointStatus))
	_, err = client.UpdateEndpoint(ctx, &sagemaker.UpdateEndpointInput{EndpointName: aws.String("sdk-ep"), EndpointConfigName: aws.String("sdk-config-1")})
	if apiCode(err) != smapi.ErrValidation || !strings.Contains(err.Error(), "Cannot update in-progress endpoint") {
		t.Fatalf("update while updating: %v", err)
	}
	// Typed errors: deleting what an endpoint uses is ResourceInUse.
	_, err = client.DeleteEndpointConfig(ctx, &sagemaker.DeleteEndpointConfigInput{EndpointConfigName: aws.String("sdk-config-2")})
	var inUse *types.ResourceInUse
	if !errors.As(err, &inUse) {
		t.Fatalf("DeleteEndpointConfig in use: %T %v", err, err)
	}
	_, err = client.DeleteModel(ctx, &sagemaker.DeleteModelInput{ModelName: aws.String("sdk-model-b")})
	if !errors.As(err, &inUse) || !strings.Contains(inUse.ErrorMessage(), "sdk-config-2") {
		t.Fatalf("DeleteModel in use: %T %v", err, err)
	}
	go func() {
		time.Sleep(200 * time.Millisecond)
		e.serve("sdk-ep", "sdk-config-2", 2)
	}()
	if err := waiter.Wait(ctx, &sagemaker.DescribeEndpointInput{EndpointName: aws.String("sdk-ep")}, time.Minute); err != nil {
		t.Fatalf("EndpointInService waiter after update: %v", err)
	}
	statuses = append(statuses, "InService")

	_, err = client.UpdateEndpointWeightsAndCapacities(ctx, &sagemaker.UpdateEndpointWeightsAndCapacitiesInput{
		EndpointName: aws.String("sdk-ep"),
		DesiredWeightsAndCapacities: []types.DesiredWeightAndCapacity{
			{VariantName: aws.String("green"), DesiredWeight: aws.Float32(3), DesiredInstanceCount: aws.Int32(2)},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	if ep := e.endpoint("sdk-ep"); ep.Op == nil || ep.Op.Kind != records.OpWeights || *ep.Op.Weights[0].DesiredWeight != 3 {
		t.Fatalf("weights record: %+v", ep.Op)
	}
	e.serve("sdk-ep", "sdk-config-2", 2)

	// Tags.
	arn := arnPrefix + "endpoint/sdk-ep"
	must(client.AddTags(ctx, &sagemaker.AddTagsInput{ResourceArn: aws.String(arn), Tags: []types.Tag{{Key: aws.String("env"), Value: aws.String("prod")}, {Key: aws.String("team"), Value: aws.String("ml")}}}))
	must(client.DeleteTags(ctx, &sagemaker.DeleteTagsInput{ResourceArn: aws.String(arn), TagKeys: []string{"team"}}))
	lt, err := client.ListTags(ctx, &sagemaker.ListTagsInput{ResourceArn: aws.String(arn)})
	if err != nil || len(lt.Tags) != 1 || *lt.Tags[0].Key != "env" {
		t.Fatalf("ListTags: %+v %v", lt, err)
	}
	lt, err = client.ListTags(ctx, &sagemaker.ListTagsInput{ResourceArn: aws.String(arnPrefix + "model/sdk-model-a")})
	if err != nil || len(lt.Tags) != 1 || *lt.Tags[0].Key != "team" {
		t.Fatalf("ListTags model: %+v %v", lt, err)
	}

	// Delete, and the SDK's EndpointDeleted waiter while the
	// "reconciler" removes the record.
	must(client.DeleteEndpoint(ctx, &sagemaker.DeleteEndpointInput{EndpointName: aws.String("sdk-ep")}))
	de, err = client.DescribeEndpoint(ctx, &sagemaker.DescribeEndpointInput{EndpointName: aws.String("sdk-ep")})
	if err != nil || de.EndpointStatus != types.EndpointStatusDeleting {
		t.Fatalf("DescribeEndpoint while deleting: %+v %v", de, err)
	}
	statuses = append(statuses, string(de.EndpointStatus))
	go func() {
		time.Sleep(300 * time.Millisecond)
		_, idx, err := kv.Get(context.Background(), records.KindEndpoint.Key("sdk-ep"))
		if err == nil {
			err = kv.DeleteCAS(context.Background(), records.KindEndpoint.Key("sdk-ep"), idx)
		}
		if err != nil {
			t.Error(err)
		}
	}()
	deleted := sagemaker.NewEndpointDeletedWaiter(client, func(o *sagemaker.EndpointDeletedWaiterOptions) {
		o.MinDelay, o.MaxDelay = 100*time.Millisecond, 200*time.Millisecond
	})
	if err := deleted.Wait(ctx, &sagemaker.DescribeEndpointInput{EndpointName: aws.String("sdk-ep")}, time.Minute); err != nil {
		t.Fatalf("EndpointDeleted waiter: %v", err)
	}
	_, err = client.DescribeEndpoint(ctx, &sagemaker.DescribeEndpointInput{EndpointName: aws.String("sdk-ep")})
	var ae smithy.APIError
	if !errors.As(err, &ae) || ae.ErrorCode() != smapi.ErrValidation || ae.ErrorMessage() != `Could not find endpoint "`+arn+`".` {
		t.Fatalf("DescribeEndpoint after delete: %v", err)
	}
	// With the endpoint gone its configs and models can go.
	must(client.DeleteEndpointConfig(ctx, &sagemaker.DeleteEndpointConfigInput{EndpointConfigName: aws.String("sdk-config-1")}))
	must(client.DeleteEndpointConfig(ctx, &sagemaker.DeleteEndpointConfigInput{EndpointConfigName: aws.String("sdk-config-2")}))
	must(client.DeleteModel(ctx, &sagemaker.DeleteModelInput{ModelName: aws.String("sdk-model-a")}))
	must(client.DeleteModel(ctx, &sagemaker.DeleteModelInput{ModelName: aws.String("sdk-model-b")}))
	_, err = client.DescribeModel(ctx, &sagemaker.DescribeModelInput{ModelName: aws.String("sdk-model-a")})
	if apiCode(err) != smapi.ErrValidation || !strings.Contains(err.Error(), "Could not find model") {
		t.Fatalf("DescribeModel after delete: %v", err)
	}
	// A SageMaker feature serai lacks is refused by name, not dropped.
	_, err = client.CreateEndpointConfig(ctx, &sagemaker.CreateEndpointConfigInput{
		EndpointConfigName:   aws.String("async"),
		ProductionVariants:   []types.ProductionVariant{{VariantName: aws.String("a"), ModelName: aws.String("m"), InstanceType: types.ProductionVariantInstanceTypeMlM5Large}},
		AsyncInferenceConfig: &types.AsyncInferenceConfig{OutputConfig: &types.AsyncInferenceOutputConfig{S3OutputPath: aws.String("s3://b/p")}},
	})
	if apiCode(err) != smapi.ErrValidation || !strings.Contains(err.Error(), "AsyncInferenceConfig") {
		t.Fatalf("unsupported member: %v", err)
	}
	t.Logf("RESULT sdk: endpoint status sequence seen by the SDK: %s", strings.Join(statuses, " -> "))
}

func apiCode(err error) string {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		return ae.ErrorCode()
	}
	return ""
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// consulKVAt is a ConsulKV for an address where nothing listens.
func consulKVAt(addr string) (records.ConsulKV, error) {
	c, err := consulapi.NewClient(&consulapi.Config{Address: addr, Scheme: "http"})
	if err != nil {
		return records.ConsulKV{}, err
	}
	return records.ConsulKV{KV: c.KV()}, nil
}
