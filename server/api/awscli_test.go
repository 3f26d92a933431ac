package api

import (
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/seraihq/serai/internal/testagents"
	"github.com/seraihq/serai/server/records"
	"github.com/seraihq/serai/server/smapi"
)

// TestAWSCLI drives the API with the real AWS CLI (botocore: its own
// request serializer, SigV4 signer, response and error parsers): models,
// endpoint configs, endpoints, tags, listing, and SageMaker's errors, on a
// server that requires signatures.
func TestAWSCLI(t *testing.T) {
	keys := filepath.Join(t.TempDir(), "keys")
	if err := os.WriteFile(keys, []byte(`{"`+testAKID+`": "`+testSecret+`"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	obs := &fakeObserver{obs: map[string]Observation{}}
	store := records.Store{KV: records.NewMemKV()}
	h, err := New(Config{Store: store, Region: "eu-west-1", Account: "123456789012", Observer: obs, SigV4KeyFile: keys})
	if err != nil {
		t.Fatal(err)
	}
	// The SDK names no store: the operator's default store serves.
	putStore(t, store, smapi.ArtifactStore{Name: DefaultArtifactStore}, testAKID)
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	aws := testagents.AWSCLI(t, srv.URL, testAKID, testSecret, "eu-west-1")

	var model struct{ ModelArn string }
	aws.OK(&model, "sagemaker", "create-model", "--model-name", "churn-v1",
		"--primary-container", "Image=registry.test/churn:1,ModelDataUrl=s3://models/churn/v1/model.tar.gz,Environment={THREADS=2}",
		"--execution-role-arn", "arn:aws:iam::123456789012:role/serai",
		"--tags", "Key=team,Value=risk")
	if model.ModelArn != "arn:aws:sagemaker:eu-west-1:123456789012:model/churn-v1" {
		t.Errorf("ModelArn %q", model.ModelArn)
	}
	var dm struct {
		ModelName        string
		PrimaryContainer struct {
			Image, ModelDataUrl string
			Environment         map[string]string
		}
		CreationTime any
	}
	aws.OK(&dm, "sagemaker", "describe-model", "--model-name", "churn-v1")
	if dm.ModelName != "churn-v1" || dm.PrimaryContainer.Image != "registry.test/churn:1" || dm.PrimaryContainer.Environment["THREADS"] != "2" || dm.CreationTime == nil {
		t.Errorf("describe-model: %+v", dm)
	}

	aws.OK(nil, "sagemaker", "create-endpoint-config", "--endpoint-config-name", "churn-c1",
		"--production-variants", "VariantName=a,ModelName=churn-v1,InstanceType=ml.m5.large,InitialInstanceCount=2,InitialVariantWeight=0.9",
		"VariantName=b,ModelName=churn-v1,InstanceType=ml.m5.large,InitialInstanceCount=1,InitialVariantWeight=0.1")
	var dc struct {
		ProductionVariants []struct {
			VariantName          string
			InitialInstanceCount int
			InitialVariantWeight float64
		}
	}
	aws.OK(&dc, "sagemaker", "describe-endpoint-config", "--endpoint-config-name", "churn-c1")
	if len(dc.ProductionVariants) != 2 || dc.ProductionVariants[0].InitialInstanceCount != 2 || dc.ProductionVariants[1].InitialVariantWeight != 0.1 {
		t.Errorf("describe-endpoint-config: %+v", dc)
	}

	var ep struct{ EndpointArn string }
	aws.OK(&ep, "sagemaker", "create-endpoint", "--endpoint-name", "churn", "--endpoint-config-name", "churn-c1")
	var de struct {
		EndpointName, EndpointStatus string
		ProductionVariants           []struct{ VariantName string }
		CreationTime                 any
	}
	aws.OK(&de, "sagemaker", "describe-endpoint", "--endpoint-name", "churn")
	if de.EndpointName != "churn" || de.EndpointStatus != "Creating" {
		t.Errorf("describe-endpoint: %+v", de)
	}
	var list struct {
		Endpoints []struct{ EndpointName string }
	}
	aws.OK(&list, "sagemaker", "list-endpoints", "--sort-by", "Name", "--max-items", "10")
	if len(list.Endpoints) != 1 || list.Endpoints[0].EndpointName != "churn" {
		t.Errorf("list-endpoints: %+v", list)
	}
	var tags struct{ Tags []struct{ Key, Value string } }
	aws.OK(&tags, "sagemaker", "list-tags", "--resource-arn", model.ModelArn)
	if len(tags.Tags) != 1 || tags.Tags[0].Key != "team" {
		t.Errorf("list-tags: %+v", tags)
	}

	// SageMaker's errors, as botocore reports them.
	for _, c := range []struct {
		args       []string
		want, what string
	}{
		{[]string{"sagemaker", "describe-endpoint", "--endpoint-name", "ghost"}, "(ValidationException) when calling the DescribeEndpoint operation", "Could not find endpoint \"arn:aws:sagemaker:eu-west-1:123456789012:endpoint/ghost\"."},
		{[]string{"sagemaker", "delete-model", "--model-name", "churn-v1"}, "when calling the DeleteModel operation", "churn-c1"},
		{[]string{"sagemaker", "create-endpoint-config", "--endpoint-config-name", "bad_name", "--production-variants",
			"VariantName=a,ModelName=churn-v1,InstanceType=ml.m5.large"}, "(ValidationException) when calling the CreateEndpointConfig operation", "1 validation error detected: Value 'bad_name' at 'endpointConfigName'"},
	} {
		code, out := aws.Run(c.args...)
		if code == 0 || !strings.Contains(out, c.want) || !strings.Contains(out, c.what) {
			t.Errorf("aws %s: exit %d, output %q; want an error with %q and %q", strings.Join(c.args, " "), code, out, c.want, c.what)
		}
	}

	// A wrong secret is refused with AWS's signature error.
	bad := testagents.AWSCLI(t, srv.URL, testAKID, testSecret+"x", "eu-west-1")
	if code, out := bad.Run("sagemaker", "list-models"); code == 0 || !strings.Contains(out, "InvalidSignatureException") {
		t.Errorf("wrong secret: exit %d, %q", code, out)
	}

	aws.OK(nil, "sagemaker", "delete-endpoint", "--endpoint-name", "churn")
}
