package sigv4

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
)

const (
	vAKID   = "AKIDVERIFIER0001"
	vSecret = "verifier-secret-0123456789"
)

var vNow = time.Date(2026, 3, 4, 10, 0, 0, 0, time.UTC)

func newTestVerifier(t *testing.T, region string) *Verifier {
	t.Helper()
	v, err := NewVerifier(Config{Service: "sagemaker", Region: region, Now: func() time.Time { return vNow }},
		map[string]string{vAKID: vSecret, "AKIDOTHER": "other-secret-0123456789"})
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// signedReq is a request as the server receives it, signed by the SDK.
func signedReq(t *testing.T, body, akid, secret, service, region string, at time.Time, before func(*http.Request)) *http.Request {
	t.Helper()
	r := httptest.NewRequest(http.MethodPost, "http://router.test/endpoints/demo/invocations", strings.NewReader(body))
	r.Header.Set("Content-Type", "application/json")
	if before != nil {
		before(r)
	}
	// A fresh signer each time: the SDK's caches derived keys by ID, not
	// by secret.
	err := v4.NewSigner().SignHTTP(context.Background(), aws.Credentials{AccessKeyID: akid, SecretAccessKey: secret},
		r, PayloadHash([]byte(body)), service, region, at)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestConfigValidate(t *testing.T) {
	if err := DefaultConfig().Validate(); err == nil || !strings.Contains(err.Error(), "Config.Service") {
		t.Errorf("no service: %v", err)
	}
	for _, c := range []Config{
		{Service: "a/b"}, {Service: "s", Region: "eu west"}, {Service: "s", MaxSkew: -time.Second},
	} {
		if err := c.Validate(); err == nil {
			t.Errorf("%+v accepted", c)
		}
	}
	if _, err := NewVerifier(Config{Service: "s"}, nil); err == nil {
		t.Error("an empty key table accepted")
	}
	v, err := NewVerifier(Config{Service: "s"}, map[string]string{"A": "secret-secret-secret"})
	if err != nil {
		t.Fatal(err)
	}
	if v.cfg.MaxSkew != DefaultMaxSkew || v.cfg.Now == nil {
		t.Errorf("defaults not applied: %+v", v.cfg)
	}
}

// TestVerifierRefusals tries each way of getting a request accepted
// without the secret, or outside its scope or time, and expects AWS's
// code for it.
func TestVerifierRefusals(t *testing.T) {
	const body = `{"amount":100}`
	ok := func(before func(*http.Request)) *http.Request {
		return signedReq(t, body, vAKID, vSecret, "sagemaker", "eu-west-1", vNow, before)
	}
	for _, c := range []struct {
		name   string
		req    func() *http.Request
		body   string
		code   string
		reason string
	}{
		{"unsigned", func() *http.Request {
			return httptest.NewRequest(http.MethodPost, "http://router.test/x", nil)
		}, body, CodeMissingAuthenticationToken, "no Authorization"},
		{"presigned URL", func() *http.Request {
			return httptest.NewRequest(http.MethodPost, "http://router.test/x?X-Amz-Signature=00", nil)
		}, body, CodeIncompleteSignature, "presigned"},
		{"two Authorization headers", func() *http.Request {
			r := ok(nil)
			r.Header.Add("Authorization", r.Header.Get("Authorization"))
			return r
		}, body, CodeIncompleteSignature, "repeated"},
		{"other scheme", func() *http.Request {
			r := ok(nil)
			r.Header.Set("Authorization", "Basic Zm9vOmJhcg==")
			return r
		}, body, CodeIncompleteSignature, "other scheme"},
		{"malformed", func() *http.Request {
			r := ok(nil)
			r.Header.Set("Authorization", Algorithm+" Credential="+vAKID+"/20260304/eu-west-1/sagemaker/aws4_request")
			return r
		}, body, CodeIncompleteSignature, "malformed"},
		{"unknown key", func() *http.Request {
			return signedReq(t, body, "AKIDUNKNOWN", vSecret, "sagemaker", "eu-west-1", vNow, nil)
		}, body, CodeUnrecognizedClient, "unknown access key"},
		{"session token", func() *http.Request {
			return ok(func(r *http.Request) { r.Header.Set("X-Amz-Security-Token", "token") })
		}, body, CodeUnrecognizedClient, "session token"},
		{"other service", func() *http.Request {
			return signedReq(t, body, vAKID, vSecret, "s3", "eu-west-1", vNow, nil)
		}, body, CodeInvalidSignature, "service"},
		{"other region", func() *http.Request {
			return signedReq(t, body, vAKID, vSecret, "sagemaker", "us-east-1", vNow, nil)
		}, body, CodeInvalidSignature, "region"},
		{"no X-Amz-Date", func() *http.Request {
			r := ok(nil)
			r.Header.Del("X-Amz-Date")
			return r
		}, body, CodeIncompleteSignature, "X-Amz-Date"},
		{"x-amz-date not signed", func() *http.Request {
			r := ok(nil)
			r.Header.Set("Authorization", strings.Replace(r.Header.Get("Authorization"), ";x-amz-date", "", 1))
			return r
		}, body, CodeIncompleteSignature, "not signed"},
		{"scope date differs", func() *http.Request {
			r := ok(nil)
			r.Header.Set("Authorization", strings.Replace(r.Header.Get("Authorization"), "/20260304/", "/20260303/", 1))
			return r
		}, body, CodeInvalidSignature, "scope date"},
		{"expired (replay)", func() *http.Request {
			return signedReq(t, body, vAKID, vSecret, "sagemaker", "eu-west-1", vNow.Add(-16*time.Minute), nil)
		}, body, CodeInvalidSignature, "expired"},
		{"from the future", func() *http.Request {
			return signedReq(t, body, vAKID, vSecret, "sagemaker", "eu-west-1", vNow.Add(16*time.Minute), nil)
		}, body, CodeInvalidSignature, "future"},
		{"wrong secret", func() *http.Request {
			return signedReq(t, body, vAKID, "not-the-secret-0123456789", "sagemaker", "eu-west-1", vNow, nil)
		}, body, CodeInvalidSignature, "mismatch"},
		{"another key's secret", func() *http.Request {
			return signedReq(t, body, vAKID, "other-secret-0123456789", "sagemaker", "eu-west-1", vNow, nil)
		}, body, CodeInvalidSignature, "mismatch"},
		{"body changed", func() *http.Request { return ok(nil) }, `{"amount":999}`, CodeInvalidSignature, "mismatch"},
		{"x-amz-content-sha256 of another body", func() *http.Request {
			return ok(func(r *http.Request) { r.Header.Set("X-Amz-Content-Sha256", PayloadHash([]byte("other"))) })
		}, body, CodeInvalidSignature, "x-amz-content-sha256"},
		{"header added to the signed list", func() *http.Request {
			r := ok(nil)
			r.Header.Set("Authorization", strings.Replace(r.Header.Get("Authorization"), "host;", "host;x-extra;", 1))
			return r
		}, body, CodeInvalidSignature, "signed headers differ"},
		{"signed header changed", func() *http.Request {
			r := ok(nil)
			r.Header.Set("Content-Type", "text/plain")
			return r
		}, body, CodeInvalidSignature, "mismatch"},
		{"path changed", func() *http.Request {
			r := ok(nil)
			r.URL.Path, r.RequestURI = "/endpoints/other/invocations", "/endpoints/other/invocations"
			return r
		}, body, CodeInvalidSignature, "mismatch"},
		{"path sent raw where %-encoded was signed", func() *http.Request {
			r := httptest.NewRequest(http.MethodPost, "http://router.test/a%E1%88%B4", strings.NewReader(body))
			if err := v4.NewSigner().SignHTTP(context.Background(), aws.Credentials{AccessKeyID: vAKID, SecretAccessKey: vSecret},
				r, PayloadHash([]byte(body)), "sagemaker", "eu-west-1", vNow); err != nil {
				t.Fatal(err)
			}
			r.RequestURI = "/a\u1234"
			return r
		}, body, CodeInvalidSignature, "mismatch"},
		{"host changed", func() *http.Request {
			r := ok(nil)
			r.Host = "elsewhere.test"
			return r
		}, body, CodeInvalidSignature, "mismatch"},
	} {
		t.Run(c.name, func(t *testing.T) {
			v := newTestVerifier(t, "eu-west-1")
			e := check(v, c.req(), []byte(c.body))
			if e == nil {
				t.Fatal("accepted")
			}
			if e.Code != c.code || !strings.Contains(e.Reason+" "+e.Message, c.reason) {
				t.Fatalf("got %v (%s), want %s %q", e, e.Message, c.code, c.reason)
			}
			if strings.Contains(e.Message+e.Reason+e.Error(), vSecret) {
				t.Fatal("the refusal quotes the secret")
			}
		})
	}
}

func TestVerifierAccepts(t *testing.T) {
	const body = `{"amount":100}`
	v := newTestVerifier(t, "eu-west-1")
	for _, d := range []time.Duration{0, -14 * time.Minute, 14 * time.Minute} {
		r := signedReq(t, body, vAKID, vSecret, "sagemaker", "eu-west-1", vNow.Add(d), nil)
		s, e := v.Precheck(r)
		if e != nil {
			t.Fatalf("skew %v: %v", d, e)
		}
		if e := v.Verify(context.Background(), r, s, []byte(body)); e != nil {
			t.Fatalf("skew %v: %v", d, e)
		}
		if s.AccessKeyID != vAKID {
			t.Fatalf("principal %q", s.AccessKeyID)
		}
	}
	// Region "" accepts any region.
	any := newTestVerifier(t, "")
	r := signedReq(t, body, "AKIDOTHER", "other-secret-0123456789", "sagemaker", "ap-south-2", vNow, nil)
	if e := check(any, r, []byte(body)); e != nil {
		t.Fatalf("any region: %v", e)
	}
}

// TestVerifierRotation: a key removed between Precheck and Verify is
// refused; a secret replaced under the same ID stops working at once
// (the SDK signer caches derived keys by ID and day, not by secret).
func TestVerifierRotation(t *testing.T) {
	const body = `1`
	v := newTestVerifier(t, "eu-west-1")
	r := signedReq(t, body, vAKID, vSecret, "sagemaker", "eu-west-1", vNow, nil)
	s, e := v.Precheck(r)
	if e != nil {
		t.Fatal(e)
	}
	if e := v.Verify(context.Background(), r, s, []byte(body)); e != nil {
		t.Fatal(e)
	}
	if err := v.SetKeys(map[string]string{"AKIDNEW": "new-secret-0123456789"}); err != nil {
		t.Fatal(err)
	}
	if e := v.Verify(context.Background(), r, s, []byte(body)); e == nil || e.Code != CodeUnrecognizedClient {
		t.Fatalf("removed key: %v", e)
	}
	if err := v.SetKeys(map[string]string{}); err == nil {
		t.Fatal("empty table accepted")
	}
	if err := v.SetKeys(map[string]string{vAKID: "rotated-secret-0123456789"}); err != nil {
		t.Fatal(err)
	}
	if e := check(v, signedReq(t, body, vAKID, vSecret, "sagemaker", "eu-west-1", vNow, nil), []byte(body)); e == nil || e.Code != CodeInvalidSignature {
		t.Fatalf("rotated-out secret: %v", e)
	}
	if e := check(v, signedReq(t, body, vAKID, "rotated-secret-0123456789", "sagemaker", "eu-west-1", vNow, nil), []byte(body)); e != nil {
		t.Fatalf("rotated-in secret: %v", e)
	}
}
