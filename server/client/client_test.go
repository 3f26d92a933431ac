package client

import (
	"context"
	"encoding/pem"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/credentials"

	"github.com/seraihq/serai/server/api"
	"github.com/seraihq/serai/server/records"
	"github.com/seraihq/serai/server/smapi"
)

func fast(addr string) Config {
	return Config{Addr: addr, Backoff: time.Millisecond, MaxBackoff: 2 * time.Millisecond}
}

func TestProtocolAndErrors(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost || r.URL.Path != "/" || r.Header.Get("Content-Type") != "application/x-amz-json-1.1" {
			t.Errorf("request %s %s %q", r.Method, r.URL.Path, r.Header.Get("Content-Type"))
		}
		b, _ := io.ReadAll(r.Body)
		switch r.Header.Get("X-Amz-Target") {
		case "SageMaker.DescribeEndpoint":
			if string(b) != `{"EndpointName":"nope"}` {
				t.Errorf("body %s", b)
			}
			w.WriteHeader(400)
			io.WriteString(w, `{"__type":"com.amazonaws.sagemaker#ValidationException","message":"Could not find endpoint \"arn:aws:sagemaker:us-east-1:000000000000:endpoint/nope\"."}`)
		case "SageMaker.DeleteModel":
			w.Header().Set("X-Amzn-ErrorType", "ResourceInUse:http://internal.amazon.com/")
			w.WriteHeader(400)
			io.WriteString(w, `{}`)
		case "SageMaker.ListModels":
			io.WriteString(w, `{"Models":[{"ModelName":"m","ModelArn":"arn","CreationTime":1764504000.5}]}`)
		default:
			w.WriteHeader(502)
			io.WriteString(w, "bad gateway")
		}
	}))
	defer srv.Close()
	c, err := New(fast(srv.URL))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	_, err = c.DescribeEndpoint(ctx, &smapi.DescribeEndpointInput{EndpointName: "nope"})
	var e *Error
	if !errors.As(err, &e) || e.Type != smapi.ErrValidation || e.StatusCode != 400 || !IsNotFound(err) {
		t.Fatalf("DescribeEndpoint: %#v", err)
	}
	err = c.DeleteModel(ctx, &smapi.DeleteModelInput{ModelName: "m"})
	if !errors.As(err, &e) || e.Type != smapi.ErrResourceInUse || IsNotFound(err) {
		t.Fatalf("DeleteModel: %#v", err)
	}
	out, err := c.ListModels(ctx, &smapi.ListModelsInput{})
	if err != nil || len(out.Models) != 1 || out.Models[0].CreationTime.Unix() != 1764504000 {
		t.Fatalf("ListModels: %+v %v", out, err)
	}
	_, err = c.CreateModel(ctx, &smapi.CreateModelInput{ModelName: "m"})
	if !errors.As(err, &e) || e.Type != "BadGateway" || e.Message != "bad gateway" {
		t.Fatalf("non-JSON error: %#v", err)
	}
}

// Reads are retried on 503 and connection errors; writes never are.
func TestRetries(t *testing.T) {
	var n atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if n.Add(1) < 3 {
			w.WriteHeader(503)
			io.WriteString(w, `{"__type":"ServiceUnavailable","message":"Consul is unreachable"}`)
			return
		}
		io.WriteString(w, `{"EndpointName":"e","EndpointStatus":"InService"}`)
	}))
	defer srv.Close()
	c, _ := New(fast(srv.URL))
	ctx := context.Background()
	d, err := c.DescribeEndpoint(ctx, &smapi.DescribeEndpointInput{EndpointName: "e"})
	if err != nil || d.EndpointStatus != "InService" || n.Load() != 3 {
		t.Fatalf("read after two 503s: %v %v, %d attempts", d, err, n.Load())
	}
	n.Store(0)
	_, err = c.CreateEndpoint(ctx, &smapi.CreateEndpointInput{EndpointName: "e"})
	var e *Error
	if !errors.As(err, &e) || e.StatusCode != 503 || n.Load() != 1 {
		t.Fatalf("write: %v after %d attempts; want one 503", err, n.Load())
	}
	n.Store(-100)
	c, _ = New(Config{Addr: srv.URL, ReadAttempts: 3, Backoff: time.Millisecond})
	if _, err := c.DescribeEndpoint(ctx, &smapi.DescribeEndpointInput{EndpointName: "e"}); err == nil || n.Load() != -97 {
		t.Fatalf("bounded attempts: %v, %d", err, n.Load()+100)
	}

	// A closed port: connection refused, retried, then reported.
	srv.Close()
	c, _ = New(Config{Addr: srv.URL, ReadAttempts: 2, Backoff: time.Millisecond})
	if _, err := c.DescribeEndpoint(ctx, &smapi.DescribeEndpointInput{EndpointName: "e"}); err == nil || IsNotFound(err) {
		t.Fatalf("unreachable: %v", err)
	}
	// The context bounds the waits.
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := c.DescribeEndpoint(cctx, &smapi.DescribeEndpointInput{EndpointName: "e"}); !errors.Is(err, context.Canceled) {
		t.Fatalf("canceled: %v", err)
	}
}

// SigV4 against the real API handler with a key file.
func TestSigV4AgainstTheAPI(t *testing.T) {
	keys := filepath.Join(t.TempDir(), "keys")
	if err := os.WriteFile(keys, []byte("AKIDSERAI wJalrXUtnFEMI/K7MDENG\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	h, err := api.New(api.Config{Store: records.Store{KV: records.NewMemKV()}, SigV4KeyFile: keys, Region: "eu-west-1"})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	defer srv.Close()
	ctx := context.Background()
	in := &smapi.DescribeModelInput{ModelName: "m"}

	unsigned, _ := New(fast(srv.URL))
	var e *Error
	if _, err := unsigned.DescribeModel(ctx, in); !errors.As(err, &e) || e.Type != smapi.ErrMissingAuthToken {
		t.Fatalf("unsigned: %v", err)
	}
	cfg := fast(srv.URL)
	cfg.Region = "eu-west-1"
	cfg.Credentials = credentials.NewStaticCredentialsProvider("AKIDSERAI", "wrong", "")
	bad, _ := New(cfg)
	if _, err := bad.DescribeModel(ctx, in); !errors.As(err, &e) || e.Type != smapi.ErrInvalidSignature {
		t.Fatalf("wrong secret: %v", err)
	}
	cfg.Credentials = credentials.NewStaticCredentialsProvider("AKIDSERAI", "wJalrXUtnFEMI/K7MDENG", "")
	good, _ := New(cfg)
	if _, err := good.DescribeModel(ctx, in); !IsNotFound(err) {
		t.Fatalf("signed: want Could not find model, got %v", err)
	}
}

func TestFromEnv(t *testing.T) {
	t.Setenv(EnvAddr, "127.0.0.1:9999")
	t.Setenv(EnvAccessKeyID, "AKID")
	t.Setenv(EnvSecretAccessKey, "")
	if _, err := FromEnv(); err == nil {
		t.Error("half a key pair accepted")
	}
	t.Setenv(EnvSecretAccessKey, "secret")
	t.Setenv(EnvRegion, "eu-west-1")
	c, err := FromEnv()
	if err != nil || c.Credentials == nil || c.Region != "eu-west-1" {
		t.Fatalf("%+v %v", c, err)
	}
	cl, _ := New(c)
	if cl.Addr() != "http://127.0.0.1:9999" {
		t.Errorf("addr %s", cl.Addr())
	}
	t.Setenv(EnvAddr, "ftp://x")
	if _, err := FromEnv(); err == nil {
		t.Error("ftp address accepted")
	}
}

// TestFromEnvCACert: SERAI_CA_CERT makes the client trust that CA for an
// https:// server, and only that CA; a file that is not a CA is refused
// naming the variable.
func TestFromEnvCACert(t *testing.T) {
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/x-amz-json-1.1")
		io.WriteString(w, `{"Endpoints":[]}`)
	}))
	defer srv.Close()
	ca := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv(EnvAddr, srv.URL)
	list := func() error {
		cfg, err := FromEnv()
		if err != nil {
			t.Fatal(err)
		}
		cfg.ReadAttempts = 1
		c, err := New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		_, err = c.ListEndpoints(context.Background(), &smapi.ListEndpointsInput{})
		return err
	}
	t.Setenv(EnvCACert, "")
	if err := list(); err == nil {
		t.Fatal("a private CA's server was trusted with the system's roots")
	}
	t.Setenv(EnvCACert, ca)
	if err := list(); err != nil {
		t.Fatalf("with %s: %v", EnvCACert, err)
	}
	bad := filepath.Join(t.TempDir(), "bad.pem")
	os.WriteFile(bad, []byte("not a certificate"), 0o600)
	t.Setenv(EnvCACert, bad)
	if _, err := FromEnv(); err == nil || !strings.Contains(err.Error(), EnvCACert) {
		t.Fatalf("bad CA file: %v", err)
	}
}
