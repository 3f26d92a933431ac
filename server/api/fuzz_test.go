package api

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"sort"
	"testing"
)

// FuzzRequest: any body to any operation is answered 200 or 4xx with
// SageMaker's error shape; never a panic (the handler turns one into a
// 500, which fails here) nor any other 5xx.
func FuzzRequest(f *testing.F) {
	e := newEnv(f)
	e.seed()
	e.ok("CreateEndpoint", `{"EndpointName":"ep","EndpointConfigName":"c1"}`)
	ops := e.h.Operations()
	sort.Strings(ops)
	for i, body := range []string{
		`{}`, ``, `null`, `[]`, `{"ModelName":"m9","PrimaryContainer":{"Image":"x","Environment":{"A":"b"}},"Serai":{"Command":"x"}}`,
		`{"EndpointConfigName":"c9","ProductionVariants":[{"VariantName":"a","ModelName":"m1","InstanceType":"ml.m5.large","InitialInstanceCount":1,"Serai":{"Autoscaling":{"MinCapacity":0,"MaxCapacity":2,"TargetInvocationsPerInstance":5}}}]}`,
		`{"EndpointName":"e2","EndpointConfigName":"c2","DeploymentConfig":{"BlueGreenUpdatePolicy":{"TrafficRoutingConfiguration":{"Type":"LINEAR","LinearStepSize":{"Type":"CAPACITY_PERCENT","Value":20}}}}}`,
		`{"EndpointName":"ep","DesiredWeightsAndCapacities":[{"VariantName":"a","DesiredWeight":1e308}]}`,
		`{"ResourceArn":"arn:aws:sagemaker:eu-west-1:123456789012:model/m1","Tags":[{"Key":"k","Value":"v"}]}`,
		`{"MaxResults":1,"SortBy":"Name","NextToken":"eyJiIjoiTmFtZSJ9","CreationTimeAfter":1e300}`,
	} {
		for j := range ops {
			if j%3 == i%3 {
				f.Add(uint8(j), []byte(body))
			}
		}
	}
	f.Fuzz(func(t *testing.T, op uint8, body []byte) {
		name := ops[int(op)%len(ops)]
		req := httptest.NewRequest(http.MethodPost, "/", bytes.NewReader(body))
		req.Header.Set("Content-Type", ContentType)
		req.Header.Set("X-Amz-Target", TargetPrefix+name)
		w := httptest.NewRecorder()
		e.h.ServeHTTP(w, req)
		r := result{status: w.Code, body: w.Body.Bytes()}
		switch {
		case r.status == http.StatusOK:
		case r.status >= 400 && r.status < 500 && r.errType() != "" && r.message() != "":
		default:
			t.Fatalf("%s %q: %d %s", name, body, r.status, r.body)
		}
	})
}
