package api

import (
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"

	"github.com/seraihq/serai/internal/sigv4"
	"github.com/seraihq/serai/server/records"
	"github.com/seraihq/serai/server/smapi"
)

// TestSigV4Refusals: each way a request can fail authentication gets
// AWS's code, 403, and the operation does not run.
func TestSigV4Refusals(t *testing.T) {
	keys := filepath.Join(t.TempDir(), "keys")
	if err := os.WriteFile(keys, []byte(`{"`+testAKID+`": "`+testSecret+`"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	kv := records.NewMemKV()
	clk := newClock()
	h, err := New(Config{Store: records.Store{KV: kv}, Region: "eu-west-1", SigV4KeyFile: keys, Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	body := `{"ModelName":"m","PrimaryContainer":{"Image":"i"}}`
	var lastBody string
	send := func(sign func(r *http.Request)) (int, string) {
		r := httptest.NewRequest(http.MethodPost, "http://serai.test/", strings.NewReader(body))
		r.Header.Set("Content-Type", ContentType)
		r.Header.Set("X-Amz-Target", "SageMaker.CreateModel")
		sign(r)
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		lastBody = w.Body.String()
		return w.Code, w.Header().Get("X-Amzn-Errortype")
	}
	signAt := func(secret, region string, at time.Time) func(r *http.Request) {
		return func(r *http.Request) {
			creds := aws.Credentials{AccessKeyID: testAKID, SecretAccessKey: secret}
			// A fresh signer: the SDK's caches derived keys by key ID, not
			// by secret.
			if err := v4.NewSigner().SignHTTP(context.Background(), creds, r, sigv4.PayloadHash([]byte(body)), SigV4Service, region, at); err != nil {
				t.Fatal(err)
			}
		}
	}
	now := clk.Now()
	for name, c := range map[string]struct {
		sign func(r *http.Request)
		code string
	}{
		"unsigned":     {func(*http.Request) {}, smapi.ErrMissingAuthToken},
		"malformed":    {func(r *http.Request) { r.Header.Set("Authorization", sigv4.Algorithm+" Credential=x") }, smapi.ErrIncompleteSignature},
		"other scheme": {func(r *http.Request) { r.Header.Set("Authorization", "Basic Zm9vOmJhcg==") }, smapi.ErrIncompleteSignature},
		"wrong secret": {signAt(testSecret+"x", "eu-west-1", now), smapi.ErrInvalidSignature},
		"wrong region": {signAt(testSecret, "us-east-1", now), smapi.ErrInvalidSignature},
		"expired":      {signAt(testSecret, "eu-west-1", now.Add(-20*time.Minute)), smapi.ErrInvalidSignature},
		"future":       {signAt(testSecret, "eu-west-1", now.Add(20*time.Minute)), smapi.ErrInvalidSignature},
		"unknown key": {func(r *http.Request) {
			creds := aws.Credentials{AccessKeyID: "AKIDNOBODY", SecretAccessKey: testSecret}
			if err := v4.NewSigner().SignHTTP(context.Background(), creds, r, sigv4.PayloadHash([]byte(body)), SigV4Service, "eu-west-1", now); err != nil {
				t.Fatal(err)
			}
		}, smapi.ErrUnrecognizedClient},
		"altered body": {func(r *http.Request) {
			signAt(testSecret, "eu-west-1", now)(r)
			r.Body = http.NoBody
			r.ContentLength = 0
		}, smapi.ErrInvalidSignature},
		"session token": {func(r *http.Request) {
			r.Header.Set("X-Amz-Security-Token", "t")
			signAt(testSecret, "eu-west-1", now)(r)
		}, smapi.ErrUnrecognizedClient},
	} {
		if status, code := send(c.sign); status != http.StatusForbidden || code != c.code {
			t.Errorf("%s: %d %s, want 403 %s", name, status, code, c.code)
		}
	}
	// The clock-skew answers are AWS's, as the router's are.
	for at, msg := range map[time.Time]string{now.Add(-20 * time.Minute): "Signature expired: ", now.Add(20 * time.Minute): "Signature not yet current: "} {
		if send(signAt(testSecret, "eu-west-1", at)); !strings.Contains(lastBody, msg) {
			t.Errorf("skew: %s, want %q", lastBody, msg)
		}
	}
	if pairs, _ := kv.List(context.Background(), "serai/"); len(pairs) != 0 {
		t.Fatalf("a refused request wrote %v", pairs)
	}
	if status, code := send(signAt(testSecret, "eu-west-1", now.Add(-5*time.Minute))); status != http.StatusOK {
		t.Fatalf("signed: %d %s", status, code)
	}
	// Rotation: the old secret stops working at once, the new one works.
	const rotated = "cm90YXRlZC1zZWNyZXQta2V5LTAwMDAwMDE"
	if err := os.WriteFile(keys, []byte(testAKID+" "+rotated+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := h.ReloadSigV4Keys(); err != nil {
		t.Fatal(err)
	}
	if status, _ := send(signAt(testSecret, "eu-west-1", now)); status != http.StatusForbidden {
		t.Fatalf("rotated-out secret: %d", status)
	}
	if status, code := send(signAt(rotated, "eu-west-1", now)); status != http.StatusBadRequest || code != smapi.ErrValidation {
		t.Fatalf("new secret (model exists now): %d %s", status, code)
	}
}
