package client_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/hashicorp/go-hclog"

	"github.com/seraihq/serai/router"
	"github.com/seraihq/serai/router/client"
)

// TestSigV4Credentials: a client with credentials calls a router that
// requires SigV4; without them, or with a wrong secret, it gets the
// router's 403 as an *APIError.
func TestSigV4Credentials(t *testing.T) {
	const akid, secret = "AKIDCLIENTTEST01", "client-secret-0123456789abcdef"
	echo := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		w.Write(b)
	}))
	t.Cleanup(echo.Close)
	rt, err := router.New(router.Config{Logger: hclog.NewNullLogger(), SigV4Keys: map[string]string{akid: secret}})
	if err != nil {
		t.Fatal(err)
	}
	rt.SetRoutes("demo", &router.Routes{Version: 1, Endpoint: "demo", Generations: []router.Generation{
		{Generation: 1, Weight: 1, Variants: []router.Variant{{Name: "a", Weight: 1}}},
	}})
	rt.SetInstances("demo", []router.Instance{{ID: "a", Address: echo.Listener.Addr().String(), Variant: "a", Generation: 1}})
	srv := httptest.NewServer(rt)
	t.Cleanup(func() { srv.Close(); rt.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	newClient := func(cfg client.Config) *client.Client {
		// A dead router first: the retry on the live one is signed for its host.
		cfg.Addresses = []string{deadAddr(t), srv.Listener.Addr().String()}
		c, err := client.New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(c.Close)
		return c
	}
	in := &client.Input{EndpointName: "demo", ContentType: "application/json", Body: []byte(`{"signed":true}`)}

	c := newClient(client.Config{Credentials: credentials.NewStaticCredentialsProvider(akid, secret, ""), Region: "ap-south-1"})
	for i := 0; i < 4; i++ {
		out, err := c.Invoke(ctx, in)
		if err != nil {
			t.Fatalf("signed invoke: %v", err)
		}
		if string(out.Body) != `{"signed":true}` {
			t.Fatalf("got %s", out.Body)
		}
	}

	for name, cfg := range map[string]client.Config{
		"unsigned":     {},
		"wrong secret": {Credentials: credentials.NewStaticCredentialsProvider(akid, "not-the-secret-at-all", "")},
		"unknown key":  {Credentials: credentials.NewStaticCredentialsProvider("AKIDNOBODY", secret, "")},
	} {
		want := map[string]string{
			"unsigned":     router.CodeMissingAuthenticationToken,
			"wrong secret": router.CodeInvalidSignature,
			"unknown key":  router.CodeUnrecognizedClient,
		}[name]
		_, err := newClient(cfg).Invoke(ctx, in)
		var ae *client.APIError
		if !errors.As(err, &ae) || ae.StatusCode != http.StatusForbidden || ae.Code != want {
			t.Errorf("%s: want *APIError 403 %s, got %T %v", name, want, err, err)
		}
	}
}
