package client_test

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"testing"
	"time"

	consulapi "github.com/hashicorp/consul/api"
	"github.com/hashicorp/go-hclog"

	"github.com/seraihq/serai/internal/testagents"
	"github.com/seraihq/serai/router"
	"github.com/seraihq/serai/router/client"
)

// newRouter runs a real router with one endpoint "demo" whose variant a
// echoes and whose variant bad answers 500.
func newRouter(t *testing.T) *httptest.Server {
	t.Helper()
	echo := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		w.Header().Set("Content-Type", r.Header.Get("Content-Type"))
		w.Header().Set("X-Amzn-SageMaker-Custom-Attributes", r.Header.Get("X-Amzn-SageMaker-Custom-Attributes"))
		w.Write(b)
	}))
	t.Cleanup(echo.Close)
	bad := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "model exploded", 500)
	}))
	t.Cleanup(bad.Close)
	rt, err := router.New(router.Config{Logger: hclog.NewNullLogger()})
	if err != nil {
		t.Fatal(err)
	}
	rt.SetRoutes("demo", &router.Routes{Version: 1, Endpoint: "demo", Generations: []router.Generation{
		{Generation: 1, Weight: 1, Variants: []router.Variant{{Name: "a", Weight: 1}, {Name: "bad", Weight: 0}}},
	}})
	rt.SetInstances("demo", []router.Instance{
		{ID: "a", Address: echo.Listener.Addr().String(), Variant: "a", Generation: 1},
		{ID: "bad", Address: bad.Listener.Addr().String(), Variant: "bad", Generation: 1},
	})
	srv := httptest.NewServer(rt)
	t.Cleanup(func() { srv.Close(); rt.Close() })
	return srv
}

func deadAddr(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	a := ln.Addr().String()
	ln.Close()
	return a
}

func TestInvokeAndTypedErrors(t *testing.T) {
	srv := newRouter(t)
	c, err := client.New(client.Config{Addresses: []string{srv.Listener.Addr().String()}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	out, err := c.Invoke(ctx, &client.Input{EndpointName: "demo", Body: []byte(`{"x":1}`), ContentType: "application/json", CustomAttributes: "k=v"})
	if err != nil {
		t.Fatal(err)
	}
	if string(out.Body) != `{"x":1}` || out.ContentType != "application/json" || out.InvokedProductionVariant != "a" || out.CustomAttributes != "k=v" {
		t.Errorf("got %+v", out)
	}

	_, err = c.Invoke(ctx, &client.Input{EndpointName: "demo", Body: []byte("x"), TargetVariant: "bad"})
	var me *client.ModelError
	if !errors.As(err, &me) || me.OriginalStatusCode != 500 || me.OriginalMessage != "model exploded\n" {
		t.Errorf("want ModelError 500, got %T %v", err, err)
	}

	_, err = c.Invoke(ctx, &client.Input{EndpointName: "nope", Body: []byte("x")})
	var ve *client.ValidationError
	if !errors.As(err, &ve) || ve.StatusCode != 400 {
		t.Errorf("want ValidationError, got %T %v", err, err)
	}

	_, err = c.Invoke(ctx, &client.Input{EndpointName: "demo", Body: make([]byte, router.MaxBodyBytes+1)})
	if !errors.As(err, &ve) || ve.StatusCode != 413 {
		t.Errorf("want ValidationError 413, got %T %v", err, err)
	}

	_, err = c.Invoke(ctx, &client.Input{EndpointName: "demo", Body: []byte("x"), TargetVariant: "zzz"})
	if !errors.As(err, &ve) {
		t.Errorf("unknown variant: want ValidationError, got %T %v", err, err)
	}
}

func TestRetriesOnAnotherRouterWhenConnectionFails(t *testing.T) {
	srv := newRouter(t)
	dead := deadAddr(t)
	c, err := client.New(client.Config{Addresses: []string{dead, srv.Listener.Addr().String()}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for range 20 { // whichever router comes first, every call succeeds
		if _, err := c.Invoke(context.Background(), &client.Input{EndpointName: "demo", Body: []byte("x")}); err != nil {
			t.Fatal(err)
		}
	}

	only, _ := client.New(client.Config{Addresses: []string{dead}})
	_, err = only.Invoke(context.Background(), &client.Input{EndpointName: "demo", Body: []byte("x")})
	if !errors.Is(err, client.ErrNoRouter) {
		t.Errorf("want ErrNoRouter, got %v", err)
	}
}

func TestContextCancels(t *testing.T) {
	hang := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body) // lets net/http notice the client leaving
		<-r.Context().Done()
	}))
	defer hang.Close()
	c, _ := client.New(client.Config{Addresses: []string{hang.Listener.Addr().String()}})
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := c.Invoke(ctx, &client.Input{EndpointName: "demo", Body: []byte("x")})
	if !errors.Is(err, context.DeadlineExceeded) || time.Since(start) > 5*time.Second {
		t.Errorf("got %v after %s", err, time.Since(start))
	}
}

// TestFindsRouterThroughConsul registers a router the way `serai router`
// does and lets the client find it; critical instances are skipped.
func TestFindsRouterThroughConsul(t *testing.T) {
	agent := testagents.StartConsul(t)
	srv := newRouter(t)
	host, portStr, _ := net.SplitHostPort(srv.Listener.Addr().String())
	port, _ := strconv.Atoi(portStr)
	reg := func(id string, port int, status string) {
		err := agent.Client.Agent().ServiceRegister(&consulapi.AgentServiceRegistration{
			ID: id, Name: router.RouterServiceName, Address: host, Port: port,
			Check: &consulapi.AgentServiceCheck{TTL: "10m", Status: status},
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	dead := deadAddr(t)
	_, deadPort, _ := net.SplitHostPort(dead)
	dp, _ := strconv.Atoi(deadPort)
	reg("router-good", port, consulapi.HealthPassing)
	reg("router-critical", dp, consulapi.HealthCritical)

	c, err := client.New(client.Config{Consul: agent.Client})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for range 10 {
		out, err := c.Invoke(context.Background(), &client.Input{EndpointName: "demo", Body: []byte("hi")})
		if err != nil {
			t.Fatal(err)
		}
		if string(out.Body) != "hi" {
			t.Fatalf("got %q", out.Body)
		}
	}

	if err := agent.Client.Agent().ServiceDeregister("router-good"); err != nil {
		t.Fatal(err)
	}
	fresh, _ := client.New(client.Config{Consul: agent.Client})
	_, err = fresh.Invoke(context.Background(), &client.Input{EndpointName: "demo", Body: []byte("hi")})
	if !errors.Is(err, client.ErrNoRouter) {
		t.Errorf("no passing router: want ErrNoRouter, got %v", err)
	}
}
