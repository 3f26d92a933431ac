package sigv4

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
)

const sig = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

func TestParseAuthorization(t *testing.T) {
	a, err := ParseAuthorization("AWS4-HMAC-SHA256 Credential=AKID/20260102/eu-west-1/sagemaker/aws4_request, SignedHeaders=content-type;host;x-amz-date, Signature=" + sig)
	if err != nil {
		t.Fatal(err)
	}
	if *a != (Authorization{AccessKeyID: "AKID", Date: "20260102", Region: "eu-west-1", Service: "sagemaker", SignedHeaders: "content-type;host;x-amz-date", Signature: sig}) {
		t.Errorf("got %+v", a)
	}
	if _, err := ParseAuthorization("Bearer x"); !errors.Is(err, ErrNotSigV4) {
		t.Errorf("other scheme: %v", err)
	}
	for _, bad := range []string{
		"AWS4-HMAC-SHA256 Credential=AKID/20260102/r/s/aws4_request, SignedHeaders=host",
		"AWS4-HMAC-SHA256 Credential=AKID/20260102/r/s/aws4_request, Signature=" + sig,
		"AWS4-HMAC-SHA256 SignedHeaders=host, Signature=" + sig,
		"AWS4-HMAC-SHA256 Credential=AKID/20260102/r/s/other, SignedHeaders=host, Signature=" + sig,
		"AWS4-HMAC-SHA256 Credential=AKID/2026012/r/s/aws4_request, SignedHeaders=host, Signature=" + sig,
		"AWS4-HMAC-SHA256 Credential=AKID//r/s/aws4_request, SignedHeaders=host, Signature=" + sig,
		"AWS4-HMAC-SHA256 Credential=AKID/20260102/r/s/aws4_request, SignedHeaders=host, Signature=" + strings.ToUpper(sig),
		"AWS4-HMAC-SHA256 Credential=AKID/20260102/r/s/aws4_request, SignedHeaders=Host, Signature=" + sig,
		"AWS4-HMAC-SHA256 Credential=AKID/20260102/r/s/aws4_request, SignedHeaders=host, Signature=" + sig + ", Signature=" + sig,
		"AWS4-HMAC-SHA256 Credential=AKID/20260102/r/s/aws4_request, SignedHeaders=host, Signature=" + sig + ", Extra=1",
	} {
		_, err := ParseAuthorization(bad)
		var pe *ParseError
		if !errors.As(err, &pe) {
			t.Errorf("%q: want *ParseError, got %v", bad, err)
		} else if strings.Contains(pe.Msg, sig) {
			t.Errorf("%q: message quotes the signature", bad)
		}
	}
}

// TestVerifyRoundTrip signs with the SDK on the client side and verifies
// the request as a server receives it.
func TestVerifyRoundTrip(t *testing.T) {
	signer := v4.NewSigner()
	creds := aws.Credentials{AccessKeyID: "AKID", SecretAccessKey: "secret"}
	when := time.Now().UTC()
	results := make(chan Result, 3)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		a, err := ParseAuthorization(r.Header.Get("Authorization"))
		if err != nil {
			t.Error(err)
			return
		}
		at, err := SigningTime(r)
		if err != nil {
			t.Error(err)
			return
		}
		res, err := Verify(r.Context(), signer, r, a, aws.Credentials{SecretAccessKey: "secret"}, PayloadHash([]byte("body")), at)
		if err != nil {
			t.Error(err)
		}
		results <- res
	}))
	defer srv.Close()
	send := func(mutate func(*http.Request)) Result {
		req, _ := http.NewRequest(http.MethodPost, srv.URL+"/endpoints/a%2Fb/invocations?x=1&a=2", strings.NewReader("body"))
		req.Header.Set("Content-Type", "text/plain")
		req.Header.Add("X-Multi", "1")
		req.Header.Add("X-Multi", "2")
		if err := signer.SignHTTP(context.Background(), creds, req, PayloadHash([]byte("body")), "sagemaker", "us-east-1", when); err != nil {
			t.Fatal(err)
		}
		mutate(req)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return <-results
	}
	if got := send(func(*http.Request) {}); got != Match {
		t.Errorf("untouched request: %v", got)
	}
	if got := send(func(r *http.Request) { r.URL.RawQuery = "x=1&a=3" }); got != Mismatch {
		t.Errorf("query changed: %v", got)
	}
	if got := send(func(r *http.Request) { r.Header.Del("X-Multi") }); got != HeadersDiffer {
		t.Errorf("signed header dropped: %v", got)
	}
}
