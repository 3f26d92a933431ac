package router

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/sagemakerruntime"
	"github.com/aws/aws-sdk-go-v2/service/sagemakerruntime/types"
	"github.com/aws/smithy-go"

	"github.com/seraihq/serai/internal/sigv4"
)

const (
	testAKID   = "AKIDSERAITEST0001"
	testSecret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYSERAIKEY"
)

// signedEnv is a router requiring SigV4 with one key, serving endpoint
// "demo" from a real loopback model that echoes its body and reports any
// Authorization header it received.
func signedEnv(t *testing.T, cfg Config) (*testEnv, *atomic.Value) {
	t.Helper()
	var sawAuth atomic.Value
	sawAuth.Store("")
	m := model(t, "a", func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		if v := r.Header.Get("Authorization") + r.Header.Get("X-Amz-Date"); v != "" {
			sawAuth.Store(v)
		}
		w.Header().Set("Content-Type", "application/json")
		w.Write(b)
	})
	if cfg.SigV4Keys == nil {
		cfg.SigV4Keys = map[string]string{testAKID: testSecret, "AKIDOTHER": "another-secret-0123456789"}
	}
	e := newEnv(t, cfg)
	e.rt.SetRoutes("demo", oneGen("demo", "a", 1))
	e.rt.SetInstances("demo", []Instance{inst("a1", addrOf(m), "a", 1)})
	return e, &sawAuth
}

func sdkClient(e *testEnv, akid, secret string) *sagemakerruntime.Client {
	return sagemakerruntime.New(sagemakerruntime.Options{
		Region:           "eu-west-3",
		BaseEndpoint:     aws.String(e.srv.URL),
		Credentials:      credentials.NewStaticCredentialsProvider(akid, secret, ""),
		RetryMaxAttempts: 1,
	})
}

func wantAPIError(t *testing.T, err error, code, msgPart string) {
	t.Helper()
	var ae smithy.APIError
	if !errors.As(err, &ae) {
		t.Fatalf("want API error %s, got %T %v", code, err, err)
	}
	if ae.ErrorCode() != code || !strings.Contains(ae.ErrorMessage(), msgPart) {
		t.Fatalf("want %s %q, got %s %q", code, msgPart, ae.ErrorCode(), ae.ErrorMessage())
	}
	var re interface{ HTTPStatusCode() int }
	if errors.As(err, &re) && re.HTTPStatusCode() != http.StatusForbidden {
		t.Fatalf("status %d, want 403", re.HTTPStatusCode())
	}
}

// TestSigV4AWSSDKClient: the unmodified AWS SDK client, pointed at the
// router, passes with the right key and gets AWS's errors otherwise.
func TestSigV4AWSSDKClient(t *testing.T) {
	e, sawAuth := signedEnv(t, Config{})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	out, err := sdkClient(e, testAKID, testSecret).InvokeEndpoint(ctx, &sagemakerruntime.InvokeEndpointInput{
		EndpointName: aws.String("demo"), Body: []byte(`{"x":[1,2]}`),
		ContentType: aws.String("application/json"), CustomAttributes: aws.String("k=v"),
	})
	if err != nil {
		t.Fatalf("InvokeEndpoint with the right key: %v", err)
	}
	if string(out.Body) != `{"x":[1,2]}` || aws.ToString(out.InvokedProductionVariant) != "a" {
		t.Errorf("got %s from %q", out.Body, aws.ToString(out.InvokedProductionVariant))
	}
	if v := sawAuth.Load().(string); v != "" {
		t.Errorf("signature headers reached the model: %q", v)
	}
	// An empty body (the SDK refuses to send one; its signer does not).
	resp, b := e.do(t, e.signed(t, "demo", nil, testAKID, testSecret, "sagemaker", "us-east-1", time.Now()))
	mustStatus(t, resp, b, http.StatusOK)

	_, err = sdkClient(e, testAKID, "wrong-secret-wrong-secret").InvokeEndpoint(ctx, &sagemakerruntime.InvokeEndpointInput{EndpointName: aws.String("demo"), Body: []byte(`1`)})
	wantAPIError(t, err, CodeInvalidSignature, "The request signature we calculated does not match")

	_, err = sdkClient(e, "AKIDUNKNOWN", testSecret).InvokeEndpoint(ctx, &sagemakerruntime.InvokeEndpointInput{EndpointName: aws.String("demo"), Body: []byte(`1`)})
	wantAPIError(t, err, CodeUnrecognizedClient, "The security token included in the request is invalid")

	// Which endpoints exist is told only to authenticated callers.
	_, err = sdkClient(e, testAKID, testSecret).InvokeEndpoint(ctx, &sagemakerruntime.InvokeEndpointInput{EndpointName: aws.String("nope"), Body: []byte(`1`)})
	var ve *types.ValidationError
	if !errors.As(err, &ve) || !strings.Contains(ve.ErrorMessage(), "Endpoint nope of account") {
		t.Fatalf("unknown endpoint with the right key: want ValidationError, got %T %v", err, err)
	}
	_, err = sdkClient(e, testAKID, "wrong-secret-wrong-secret").InvokeEndpoint(ctx, &sagemakerruntime.InvokeEndpointInput{EndpointName: aws.String("nope"), Body: []byte(`1`)})
	wantAPIError(t, err, CodeInvalidSignature, "does not match")
	_, err = sdkClient(e, "AKIDUNKNOWN", testSecret).InvokeEndpoint(ctx, &sagemakerruntime.InvokeEndpointInput{EndpointName: aws.String("nope"), Body: []byte(`1`)})
	wantAPIError(t, err, CodeUnrecognizedClient, "invalid")

	// The other key works too; a session token is not ours to accept.
	if _, err := sdkClient(e, "AKIDOTHER", "another-secret-0123456789").InvokeEndpoint(ctx, &sagemakerruntime.InvokeEndpointInput{EndpointName: aws.String("demo"), Body: []byte(`1`)}); err != nil {
		t.Fatalf("second key: %v", err)
	}
	withToken := sagemakerruntime.New(sagemakerruntime.Options{
		Region: "us-east-1", BaseEndpoint: aws.String(e.srv.URL), RetryMaxAttempts: 1,
		Credentials: credentials.NewStaticCredentialsProvider(testAKID, testSecret, "session-token"),
	})
	_, err = withToken.InvokeEndpoint(ctx, &sagemakerruntime.InvokeEndpointInput{EndpointName: aws.String("demo"), Body: []byte(`1`)})
	wantAPIError(t, err, CodeUnrecognizedClient, "invalid")

	resp, err = e.client.Get(e.srv.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	b, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if want := `serai_router_rejected_requests_total{reason="auth"} 5`; !bytes.Contains(b, []byte(want)) {
		t.Errorf("/metrics lacks %s", want)
	}
	if bytes.Contains(b, []byte(testSecret)) || bytes.Contains(b, []byte("AKIDUNKNOWN")) {
		t.Error("credentials leaked into metrics")
	}
}

// signed builds a request to the router signed at when with the
// SDK's signer, as the SDK would send it.
func (e *testEnv) signed(t *testing.T, endpoint string, body []byte, akid, secret, service, region string, when time.Time, hdr ...string) *http.Request {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, e.srv.URL+"/endpoints/"+endpoint+"/invocations", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	err = v4.NewSigner().SignHTTP(context.Background(), aws.Credentials{AccessKeyID: akid, SecretAccessKey: secret},
		req, sigv4.PayloadHash(body), service, region, when)
	if err != nil {
		t.Fatal(err)
	}
	return req
}

func (e *testEnv) do(t *testing.T, req *http.Request) (*http.Response, []byte) {
	t.Helper()
	resp, err := e.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, b
}

func mustAuthError(t *testing.T, resp *http.Response, body []byte, code, msgPart string) {
	t.Helper()
	mustStatus(t, resp, body, http.StatusForbidden)
	var eb ErrorBody
	if err := json.Unmarshal(body, &eb); err != nil {
		t.Fatalf("error body %s: %v", body, err)
	}
	if header(resp, "X-Amzn-ErrorType") != code || eb.Type != code || !strings.Contains(eb.Message, msgPart) {
		t.Fatalf("want %s %q, got header %q body %s", code, msgPart, header(resp, "X-Amzn-ErrorType"), body)
	}
}

func TestSigV4UnsignedRequests(t *testing.T) {
	on, _ := signedEnv(t, Config{})
	resp, b := on.invoke("demo", []byte(`1`), "Content-Type", "application/json")
	mustAuthError(t, resp, b, CodeMissingAuthenticationToken, "Missing Authentication Token")
	resp, b = on.invoke("nope", []byte(`1`))
	mustAuthError(t, resp, b, CodeMissingAuthenticationToken, "Missing Authentication Token")
	resp, b = on.invoke("demo", []byte(`1`), "Authorization", "Bearer abc")
	mustAuthError(t, resp, b, CodeIncompleteSignature, "AWS4-HMAC-SHA256")
	resp, b = on.invoke("demo", []byte(`1`), "Authorization", "AWS4-HMAC-SHA256 Credential="+testAKID+"/20260101/us-east-1/sagemaker/aws4_request, SignedHeaders=host;x-amz-date")
	mustAuthError(t, resp, b, CodeIncompleteSignature, "'Signature'")
	// /ping and /metrics stay open.
	for _, p := range []string{"/ping", "/metrics"} {
		r, err := on.client.Get(on.srv.URL + p)
		if err != nil {
			t.Fatal(err)
		}
		r.Body.Close()
		if r.StatusCode != 200 {
			t.Errorf("%s: %d with auth on", p, r.StatusCode)
		}
	}

	off := newEnv(t, Config{})
	m := model(t, "a", nil)
	off.rt.SetRoutes("demo", oneGen("demo", "a", 1))
	off.rt.SetInstances("demo", []Instance{inst("a1", addrOf(m), "a", 1)})
	resp, b = off.invoke("demo", []byte(`1`), "Content-Type", "application/json")
	mustStatus(t, resp, b, http.StatusOK)
	// Auth off: any signature, even a wrong one, is ignored as before.
	resp, b = off.do(t, off.signed(t, "demo", []byte(`1`), "AKIDWHATEVER", "whatever", "sagemaker", "us-east-1", time.Now().Add(-time.Hour)))
	mustStatus(t, resp, b, http.StatusOK)
}

func TestSigV4ClockSkew(t *testing.T) {
	e, _ := signedEnv(t, Config{})
	now := time.Now()
	resp, b := e.do(t, e.signed(t, "demo", []byte(`1`), testAKID, testSecret, "sagemaker", "us-east-1", now.Add(-20*time.Minute)))
	mustAuthError(t, resp, b, CodeInvalidSignature, "Signature expired: ")
	if header(resp, "Date") == "" {
		t.Error("no Date header: the SDKs correct their clock skew from it")
	}
	resp, b = e.do(t, e.signed(t, "demo", []byte(`1`), testAKID, testSecret, "sagemaker", "us-east-1", now.Add(20*time.Minute)))
	mustAuthError(t, resp, b, CodeInvalidSignature, "Signature not yet current: ")
	for _, d := range []time.Duration{-14 * time.Minute, 14 * time.Minute} {
		resp, b = e.do(t, e.signed(t, "demo", []byte(`1`), testAKID, testSecret, "sagemaker", "us-east-1", now.Add(d)))
		mustStatus(t, resp, b, http.StatusOK)
	}
}

func TestSigV4Tampering(t *testing.T) {
	e, _ := signedEnv(t, Config{})
	now := time.Now()
	sign := func(body []byte, hdr ...string) *http.Request {
		return e.signed(t, "demo", body, testAKID, testSecret, "sagemaker", "us-east-1", now, hdr...)
	}

	req := sign([]byte(`{"amount":100}`))
	resp, b := e.do(t, req)
	mustStatus(t, resp, b, http.StatusOK)

	// Same length, other bytes.
	req = sign([]byte(`{"amount":100}`))
	req.Body = io.NopCloser(strings.NewReader(`{"amount":999}`))
	resp, b = e.do(t, req)
	mustAuthError(t, resp, b, CodeInvalidSignature, "does not match")

	// Other length (content-length is signed too, but the body decides).
	req = sign([]byte(`{"amount":100}`))
	req.Body = io.NopCloser(strings.NewReader(`{"amount":1000}`))
	req.ContentLength = 15
	resp, b = e.do(t, req)
	mustAuthError(t, resp, b, CodeInvalidSignature, "does not match")

	// A client-declared payload hash must be the body's.
	req = sign([]byte(`{"amount":100}`), "X-Amz-Content-Sha256", sigv4.PayloadHash([]byte(`{"amount":100}`)))
	resp, b = e.do(t, req)
	mustStatus(t, resp, b, http.StatusOK)
	req = sign([]byte(`{"amount":100}`), "X-Amz-Content-Sha256", sigv4.PayloadHash([]byte(`{"amount":100}`)))
	req.Body = io.NopCloser(strings.NewReader(`{"amount":999}`))
	resp, b = e.do(t, req)
	mustAuthError(t, resp, b, CodeInvalidSignature, "x-amz-content-sha256")
	req = sign([]byte(`{"amount":100}`), "X-Amz-Content-Sha256", "UNSIGNED-PAYLOAD")
	resp, b = e.do(t, req)
	mustAuthError(t, resp, b, CodeInvalidSignature, "x-amz-content-sha256")

	// A signed header changed after signing.
	req = sign([]byte(`1`), "X-Amzn-SageMaker-Custom-Attributes", "tier=free")
	req.Header.Set("X-Amzn-SageMaker-Custom-Attributes", "tier=gold")
	resp, b = e.do(t, req)
	mustAuthError(t, resp, b, CodeInvalidSignature, "does not match")

	// Another endpoint than the one signed for.
	req = sign([]byte(`1`))
	req.URL.Path = "/endpoints/other/invocations"
	resp, b = e.do(t, req)
	mustAuthError(t, resp, b, CodeInvalidSignature, "does not match")

	// Bad headers on an existing endpoint: 400 only once the signature is
	// verified, else the answer would tell that the endpoint exists.
	long := strings.Repeat("x", 1100)
	resp, b = e.do(t, sign([]byte(`1`), "X-Amzn-SageMaker-Custom-Attributes", long))
	mustStatus(t, resp, b, http.StatusBadRequest)
	resp, b = e.do(t, e.signed(t, "demo", []byte(`1`), testAKID, "wrong-secret-wrong-secret", "sagemaker", "us-east-1", now,
		"X-Amzn-SageMaker-Custom-Attributes", long))
	mustAuthError(t, resp, b, CodeInvalidSignature, "does not match")

	// Scope: service, and date against X-Amz-Date.
	resp, b = e.do(t, e.signed(t, "demo", []byte(`1`), testAKID, testSecret, "s3", "us-east-1", now))
	mustAuthError(t, resp, b, CodeInvalidSignature, "Credential should be scoped to correct service: 'sagemaker'")
	req = sign([]byte(`1`))
	req.Header.Set("Authorization", strings.Replace(req.Header.Get("Authorization"), now.UTC().Format("/20060102/"), "/19990101/", 1))
	resp, b = e.do(t, req)
	mustAuthError(t, resp, b, CodeInvalidSignature, "Date in Credential scope does not match")
}

// TestSigV4AuthenticateHook: with SigV4 the hook sees verified requests
// only, and can authorize by key.
func TestSigV4AuthenticateHook(t *testing.T) {
	var calls atomic.Int32
	e, _ := signedEnv(t, Config{Authenticate: func(r *http.Request) error {
		calls.Add(1)
		if strings.Contains(r.Header.Get("Authorization"), "Credential=AKIDOTHER/") {
			return errors.New("AKIDOTHER may not invoke demo")
		}
		return nil
	}})
	now := time.Now()
	resp, b := e.do(t, e.signed(t, "demo", []byte(`1`), testAKID, testSecret, "sagemaker", "us-east-1", now))
	mustStatus(t, resp, b, http.StatusOK)
	resp, b = e.do(t, e.signed(t, "demo", []byte(`1`), "AKIDOTHER", "another-secret-0123456789", "sagemaker", "us-east-1", now))
	mustAuthError(t, resp, b, CodeAccessDenied, "AKIDOTHER may not invoke demo")
	resp, b = e.do(t, e.signed(t, "demo", []byte(`1`), "AKIDOTHER", "wrong-secret-wrong-secret", "sagemaker", "us-east-1", now))
	mustAuthError(t, resp, b, CodeInvalidSignature, "does not match")
	if n := calls.Load(); n != 2 {
		t.Errorf("hook ran %d times, want 2 (verified requests only)", n)
	}
}

func TestSigV4Region(t *testing.T) {
	e, _ := signedEnv(t, Config{SigV4Region: "eu-west-1"})
	resp, b := e.do(t, e.signed(t, "demo", []byte(`1`), testAKID, testSecret, "sagemaker", "us-east-1", time.Now()))
	mustAuthError(t, resp, b, CodeInvalidSignature, "Credential should be scoped to a valid region")
	resp, b = e.do(t, e.signed(t, "demo", []byte(`1`), testAKID, testSecret, "sagemaker", "eu-west-1", time.Now()))
	mustStatus(t, resp, b, http.StatusOK)
}

// TestSigV4Curl checks another SigV4 implementation than the SDK's: curl's
// --aws-sigv4, on loopback.
func TestSigV4Curl(t *testing.T) {
	curl, err := exec.LookPath("curl")
	if err != nil {
		t.Skip("curl not on PATH")
	}
	if out, _ := exec.Command(curl, "--help", "all").Output(); !bytes.Contains(out, []byte("--aws-sigv4")) {
		t.Skip("curl without --aws-sigv4")
	}
	e, _ := signedEnv(t, Config{})
	run := func(user string) (string, string) {
		cmd := exec.Command(curl, "-sS", "--noproxy", "*", "-o", "-", "-w", "\n%{http_code}",
			"--aws-sigv4", "aws:amz:us-east-1:sagemaker", "--user", user,
			"-H", "Content-Type: application/json", "--data-binary", `{"from":"curl"}`,
			e.srv.URL+"/endpoints/demo/invocations")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("curl: %v\n%s", err, out)
		}
		body, code, _ := strings.Cut(string(out), "\n")
		return code, body
	}
	if code, body := run(testAKID + ":" + testSecret); code != "200" || body != `{"from":"curl"}` {
		t.Fatalf("curl --aws-sigv4 with the right key: %s %s", code, body)
	}
	if code, body := run(testAKID + ":wrong-secret-wrong"); code != "403" || !strings.Contains(body, CodeInvalidSignature) {
		t.Fatalf("curl --aws-sigv4 with a wrong secret: %s %s", code, body)
	}
}

func TestSigV4Config(t *testing.T) {
	if _, err := New(Config{SigV4Keys: map[string]string{}}); err == nil {
		t.Error("an empty non-nil key table must not silently turn authentication off")
	}
	if _, err := New(Config{SigV4Keys: map[string]string{"A/B": "secret-secret-secret"}}); err == nil {
		t.Error("access key ID with '/' accepted")
	}
	// The table is copied.
	keys := map[string]string{testAKID: testSecret}
	e, _ := signedEnv(t, Config{SigV4Keys: keys})
	delete(keys, testAKID)
	resp, b := e.do(t, e.signed(t, "demo", []byte(`1`), testAKID, testSecret, "sagemaker", "us-east-1", time.Now()))
	mustStatus(t, resp, b, http.StatusOK)
}

func TestLoadSigV4Keys(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil { // umask-proof
			t.Fatal(err)
		}
		return p
	}
	const s1, s2 = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "je7MtGbClwBF/2Zp9Utk/h3yCo8nvbEXAMPLEKEY"
	want := map[string]string{"AKIAEXAMPLE1": s1, "AKIAEXAMPLE2": s2}
	for name, content := range map[string]string{
		"keys.txt":  "# serai router keys\n\nAKIAEXAMPLE1 " + s1 + "\n  AKIAEXAMPLE2\t" + s2 + "  \n",
		"keys.json": ` {"AKIAEXAMPLE1": "` + s1 + `", "AKIAEXAMPLE2": "` + s2 + `"}` + "\n",
	} {
		got, err := LoadSigV4Keys(write(name, content, 0o600))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if len(got) != len(want) || got["AKIAEXAMPLE1"] != s1 || got["AKIAEXAMPLE2"] != s2 {
			t.Errorf("%s: got %d keys", name, len(got))
		}
	}
	if _, err := LoadSigV4Keys(write("group.txt", "AKIAEXAMPLE1 "+s1+"\n", 0o640)); err != nil {
		t.Errorf("group-readable file refused: %v", err)
	}

	for name, c := range map[string]struct {
		content string
		mode    os.FileMode
		errPart string
	}{
		"world.txt":   {"AKIAEXAMPLE1 " + s1 + "\n", 0o644, "other users may access it"},
		"empty.txt":   {"# nothing\n", 0o600, "holds no key"},
		"dup.txt":     {"AKIAEXAMPLE1 " + s1 + "\nAKIAEXAMPLE1 " + s2 + "\n", 0o600, "line 2: access key ID AKIAEXAMPLE1 appears twice"},
		"swapped.txt": {s1 + " AKIAEXAMPLE1\n", 0o600, "line 1: access key ID may hold only"},
		"three.txt":   {"AKIAEXAMPLE1 " + s1 + " extra\n", 0o600, "line 1: want"},
		"short.txt":   {"AKIAEXAMPLE1 short\n", 0o600, "shorter than 16"},
		"dup.json":    {`{"AKIAEXAMPLE1": "` + s1 + `", "AKIAEXAMPLE1": "` + s2 + `"}`, 0o600, "appears twice"},
		"bad.json":    {`{"AKIAEXAMPLE1": 5}`, 0o600, "must be a string"},
		"trail.json":  {`{"AKIAEXAMPLE1": "` + s1 + `"} {}`, 0o600, "after the object"},
		"empty.json":  {`{}`, 0o600, "holds no key"},
	} {
		_, err := LoadSigV4Keys(write(name, c.content, c.mode))
		if err == nil || !strings.Contains(err.Error(), c.errPart) {
			t.Errorf("%s: want error with %q, got %v", name, c.errPart, err)
			continue
		}
		if strings.Contains(err.Error(), s1) || strings.Contains(err.Error(), s2) {
			t.Errorf("%s: error shows a secret: %v", name, err)
		}
	}
	if _, err := LoadSigV4Keys(filepath.Join(dir, "missing")); err == nil {
		t.Error("missing file accepted")
	}
}

// TestSigV4KeyRotation: SetSigV4Keys swaps the key table while the router
// serves; a removed key is refused at once, a new one works, a bad table is
// refused and the old one stays; a router without auth cannot be switched
// on by a reload.
func TestSigV4KeyRotation(t *testing.T) {
	e, _ := signedEnv(t, Config{})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	invoke := func(id, secret string) error {
		_, err := sdkClient(e, id, secret).InvokeEndpoint(ctx, &sagemakerruntime.InvokeEndpointInput{EndpointName: aws.String("demo"), Body: []byte(`1`)})
		return err
	}
	if err := invoke(testAKID, testSecret); err != nil {
		t.Fatalf("before rotation: %v", err)
	}
	if err := e.rt.SetSigV4Keys(map[string]string{"AKIDNEW": "a-new-secret-0123456789"}); err != nil {
		t.Fatal(err)
	}
	wantAPIError(t, invoke(testAKID, testSecret), CodeUnrecognizedClient, "invalid")
	if err := invoke("AKIDNEW", "a-new-secret-0123456789"); err != nil {
		t.Fatalf("new key after rotation: %v", err)
	}
	if err := e.rt.SetSigV4Keys(map[string]string{}); err == nil {
		t.Fatal("an empty table was accepted")
	}
	if err := invoke("AKIDNEW", "a-new-secret-0123456789"); err != nil {
		t.Fatalf("a refused reload dropped the keys in use: %v", err)
	}
	// Same access key ID, new secret, same day: the old secret is refused
	// at once and the new one works (the SDK signer caches derived keys by
	// ID and day, not by secret).
	if err := e.rt.SetSigV4Keys(map[string]string{"AKIDNEW": "the-rotated-secret-987654"}); err != nil {
		t.Fatal(err)
	}
	wantAPIError(t, invoke("AKIDNEW", "a-new-secret-0123456789"), CodeInvalidSignature, "signature")
	if err := invoke("AKIDNEW", "the-rotated-secret-987654"); err != nil {
		t.Fatalf("rotated secret refused: %v", err)
	}

	off := newEnv(t, Config{})
	if err := off.rt.SetSigV4Keys(map[string]string{"AKIDNEW": "a-new-secret-0123456789"}); err == nil {
		t.Fatal("a reload turned authentication on")
	}
}

// TestSigV4RefusedBeforeBody: a request without a valid signature header
// is refused before its body is read, so it costs no memory budget. The
// client announces 1 MiB and sends none of it: the 403 can only come
// before the body.
func TestSigV4RefusedBeforeBody(t *testing.T) {
	e, _ := signedEnv(t, Config{})
	unknownKey := "AWS4-HMAC-SHA256 Credential=AKIDNOBODY/" + time.Now().UTC().Format("20060102") +
		"/us-east-1/sagemaker/aws4_request, SignedHeaders=host;x-amz-date, Signature=" + strings.Repeat("0", 64)
	for _, c := range []struct{ name, hdr, code string }{
		{"unsigned", "", CodeMissingAuthenticationToken},
		{"unknown key", "Authorization: " + unknownKey + "\r\nX-Amz-Date: " + time.Now().UTC().Format(sigv4.TimeFormat) + "\r\n", CodeUnrecognizedClient},
	} {
		t.Run(c.name, func(t *testing.T) {
			conn := e.dial()
			_, err := io.WriteString(conn, "POST /endpoints/demo/invocations HTTP/1.1\r\nHost: router.test\r\n"+
				"Content-Type: application/json\r\nContent-Length: 1048576\r\n"+c.hdr+"\r\n")
			if err != nil {
				t.Fatal(err)
			}
			resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
			if err != nil {
				t.Fatalf("no answer while the body is withheld: %v", err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			mustAuthError(t, resp, b, c.code, "")
			if n := e.rt.buffered.Load(); n != 0 {
				t.Errorf("%d bytes charged to the memory budget", n)
			}
		})
	}
}
