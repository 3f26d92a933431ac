package router

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/sagemakerruntime"
	"github.com/aws/aws-sdk-go-v2/service/sagemakerruntime/types"
)

// TestAWSSDKClient points the unmodified AWS SDK SageMaker Runtime client at
// the router with a custom endpoint URL. It signs its requests (SigV4),
// which the router accepts and ignores.
func TestAWSSDKClient(t *testing.T) {
	var sawAuth, sawAttrs string
	a := model(t, "a", func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		sawAuth, sawAttrs = r.Header.Get("Authorization"), r.Header.Get("X-Amzn-SageMaker-Custom-Attributes")
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(`{"echo":` + string(b) + `}`))
	})
	boom := model(t, "b", func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "bad input row 3", http.StatusBadRequest)
	})
	e := newEnv(t, Config{})
	e.rt.SetRoutes("demo", oneGen("demo", "a", 1, "b", 0))
	e.rt.SetInstances("demo", []Instance{inst("a1", addrOf(a), "a", 1), inst("b1", addrOf(boom), "b", 1)})

	sm := sagemakerruntime.New(sagemakerruntime.Options{
		Region:           "us-east-1",
		BaseEndpoint:     aws.String(e.srv.URL),
		Credentials:      credentials.NewStaticCredentialsProvider("AKIDEXAMPLE", "secret", ""),
		RetryMaxAttempts: 1,
	})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	out, err := sm.InvokeEndpoint(ctx, &sagemakerruntime.InvokeEndpointInput{
		EndpointName:     aws.String("demo"),
		Body:             []byte(`[1,2]`),
		ContentType:      aws.String("application/json"),
		Accept:           aws.String("application/json"),
		CustomAttributes: aws.String("k=v"),
	})
	if err != nil {
		t.Fatalf("InvokeEndpoint: %v", err)
	}
	if string(out.Body) != `{"echo":[1,2]}` || aws.ToString(out.ContentType) != "application/json" ||
		aws.ToString(out.InvokedProductionVariant) != "a" {
		t.Errorf("got body %s, type %q, variant %q", out.Body, aws.ToString(out.ContentType), aws.ToString(out.InvokedProductionVariant))
	}
	if sawAttrs != "k=v" {
		t.Errorf("model saw custom attributes %q", sawAttrs)
	}
	if sawAuth != "" {
		t.Errorf("the client's signature reached the model: %q", sawAuth)
	}

	// Target a variant through the SDK.
	_, err = sm.InvokeEndpoint(ctx, &sagemakerruntime.InvokeEndpointInput{
		EndpointName:  aws.String("demo"),
		Body:          []byte(`x`),
		TargetVariant: aws.String("b"),
	})
	var me *types.ModelError
	if !errors.As(err, &me) {
		t.Fatalf("want *types.ModelError, got %T %v", err, err)
	}
	if aws.ToInt32(me.OriginalStatusCode) != 400 || !strings.Contains(aws.ToString(me.OriginalMessage), "bad input row 3") {
		t.Errorf("ModelError %+v", me)
	}

	_, err = sm.InvokeEndpoint(ctx, &sagemakerruntime.InvokeEndpointInput{EndpointName: aws.String("missing"), Body: []byte(`x`)})
	var ve *types.ValidationError
	if !errors.As(err, &ve) || !strings.Contains(ve.ErrorMessage(), "Endpoint missing of account") {
		t.Fatalf("want *types.ValidationError naming the endpoint, got %T %v", err, err)
	}

	e.rt.SetInstances("demo", nil)
	_, err = sm.InvokeEndpoint(ctx, &sagemakerruntime.InvokeEndpointInput{EndpointName: aws.String("demo"), Body: []byte(`x`)})
	var su *types.ServiceUnavailable
	if !errors.As(err, &su) {
		t.Fatalf("want *types.ServiceUnavailable, got %T %v", err, err)
	}
}
