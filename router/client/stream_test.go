package client_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/seraihq/serai/router"
	"github.com/seraihq/serai/router/client"
)

// TestInvokeStreamAndSessions: parts arrive one per model chunk, a broken
// stream ends with *ModelStreamError, and sessions open and close.
func TestInvokeStreamAndSessions(t *testing.T) {
	m := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		switch sid := r.Header.Get("X-Amzn-SageMaker-Session-Id"); sid {
		case "NEW_SESSION":
			w.Header().Set("X-Amzn-SageMaker-Session-Id", "s1; Expires=2030-01-01T00:00:00Z")
		case "s1":
			w.Header().Set("X-Amzn-SageMaker-Closed-Session-Id", "s1")
		}
		w.Header().Set("Content-Type", "text/plain")
		for i := range 3 {
			fmt.Fprintf(w, "tok%d ", i)
			w.(http.Flusher).Flush()
		}
		if r.Header.Get("Accept") == "break" {
			c, _, _ := http.NewResponseController(w).Hijack()
			c.Close()
		}
	}))
	defer m.Close()
	rt, err := router.New(router.Config{Logger: hclog.NewNullLogger(), SessionKeys: [][]byte{[]byte(strings.Repeat("k", 32))}})
	if err != nil {
		t.Fatal(err)
	}
	rt.SetRoutes("gen", &router.Routes{Version: 1, Endpoint: "gen", Generations: []router.Generation{
		{Generation: 1, Weight: 1, Variants: []router.Variant{{Name: "a", Weight: 1}}}}})
	rt.SetInstances("gen", []router.Instance{{ID: "a", Address: m.Listener.Addr().String(), Variant: "a", Generation: 1}})
	srv := httptest.NewServer(rt)
	defer func() { srv.Close(); rt.Close() }()
	c, err := client.New(client.Config{Addresses: []string{srv.Listener.Addr().String()}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	read := func(accept string) ([]string, error) {
		s, err := c.InvokeStream(ctx, &client.Input{EndpointName: "gen", ContentType: "text/plain", Accept: accept, Body: []byte("p")})
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		if s.ContentType != "text/plain" || s.InvokedProductionVariant != "a" {
			t.Errorf("stream %+v", s)
		}
		var parts []string
		for {
			p, err := s.Next()
			if err == io.EOF {
				return parts, nil
			}
			if err != nil {
				return parts, err
			}
			parts = append(parts, string(p))
		}
	}
	parts, err := read("")
	if err != nil || strings.Join(parts, "|") != "tok0 |tok1 |tok2 " {
		t.Fatalf("parts %q, %v", parts, err)
	}
	_, err = read("break")
	var mse *client.ModelStreamError
	if !errors.As(err, &mse) || mse.ErrorCode != "StreamBroken" {
		t.Fatalf("want *ModelStreamError StreamBroken, got %T %v", err, err)
	}

	out, err := c.Invoke(ctx, &client.Input{EndpointName: "gen", ContentType: "text/plain", Body: []byte("p"), SessionID: "NEW_SESSION"})
	if err != nil || !strings.HasSuffix(out.NewSessionID, "; Expires=2030-01-01T00:00:00Z") {
		t.Fatalf("open: %+v %v", out, err)
	}
	token, _, _ := strings.Cut(out.NewSessionID, ";")
	out, err = c.Invoke(ctx, &client.Input{EndpointName: "gen", ContentType: "text/plain", Body: []byte("close"), SessionID: token})
	if err != nil || out.ClosedSessionID != token {
		t.Fatalf("close: %+v %v", out, err)
	}
}
