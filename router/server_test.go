package router

import (
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	consulapi "github.com/hashicorp/consul/api"

	"github.com/seraihq/serai/internal/tlsreload"
	"github.com/seraihq/serai/internal/tlsreload/tlstest"
)

// TestServeTLS serves HTTPS through Serve: an invocation takes the fast
// path over TLS on HTTP/1.1 even from a client that would take HTTP/2,
// what the fast path hands off (/ping) is served by net/http over the same
// TLS, a plain-HTTP request to the TLS port gets no answer, and Reload
// gives new connections the new certificate while the server runs.
func TestServeTLS(t *testing.T) {
	check := goroutineCheck(t)
	t.Run("scenario", func(t *testing.T) {
		m := model(t, "a", nil)
		ca := tlstest.NewCA(t, "router test CA")
		certFile, keyFile := tlstest.Pair(t)
		ca.Write(t, certFile, keyFile, tlstest.Leaf{CommonName: "first", Serial: 1})
		cert, err := tlsreload.Load(certFile, keyFile)
		if err != nil {
			t.Fatal(err)
		}
		rt, err := New(Config{Logger: testLogger(t)})
		if err != nil {
			t.Fatal(err)
		}
		rt.SetRoutes("demo", oneGen("demo", "a", 1))
		rt.SetInstances("demo", []Instance{inst("a", addrOf(m), "a", 1)})
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		addrc := make(chan net.Addr, 1)
		fsc := make(chan *fastServer, 1)
		served := make(chan error, 1)
		go func() {
			served <- serve(ctx, rt, nil, ServerConfig{
				Listen: "127.0.0.1:0", TLS: cert, Logger: testLogger(t),
				OnListening: func(a net.Addr) { addrc <- a },
			}, func(fs *fastServer) { fsc <- fs })
		}()
		var addr net.Addr
		select {
		case addr = <-addrc:
		case err := <-served:
			t.Fatal(err)
		}
		fs := <-fsc
		ccfg, err := tlsreload.ClientConfig(ca.File)
		if err != nil {
			t.Fatal(err)
		}
		// ForceAttemptHTTP2, as aws-sdk-go-v2's transport sets it.
		tr := &http.Transport{TLSClientConfig: ccfg, ForceAttemptHTTP2: true}
		defer tr.CloseIdleConnections()
		hc := &http.Client{Transport: tr, Timeout: 10 * time.Second}
		resp, err := hc.Post("https://"+addr.String()+"/endpoints/demo/invocations", "text/plain", strings.NewReader("x"))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || string(b) != "a" || resp.Header.Get("X-Amzn-Invoked-Production-Variant") != "a" {
			t.Fatalf("%s %q", resp.Status, b)
		}
		if resp.ProtoMajor != 1 || resp.TLS == nil || resp.TLS.PeerCertificates[0].Subject.CommonName != "first" {
			t.Errorf("protocol %s, TLS %v: want HTTP/1.1 over TLS with certificate \"first\"", resp.Proto, resp.TLS != nil)
		}
		if n := fs.served.Load(); n != 1 {
			t.Errorf("the fast path served %d requests over TLS, want 1", n)
		}

		// /ping is net/http's, reached through the fast path's hand-off.
		resp, err = hc.Get("https://" + addr.String() + "/ping")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 || fs.handedOff.Load() != 1 {
			t.Errorf("/ping over TLS: %s, handed off %d", resp.Status, fs.handedOff.Load())
		}

		plain := &http.Client{Timeout: 10 * time.Second}
		if resp, err := plain.Post("http://"+addr.String()+"/endpoints/demo/invocations", "text/plain", strings.NewReader("x")); err == nil {
			resp.Body.Close()
			t.Errorf("plain HTTP to the TLS port answered %s", resp.Status)
		}

		ca.Write(t, certFile, keyFile, tlstest.Leaf{CommonName: "second", Serial: 2})
		if err := cert.Reload(); err != nil {
			t.Fatal(err)
		}
		tr.CloseIdleConnections()
		resp, err = hc.Post("https://"+addr.String()+"/endpoints/demo/invocations", "text/plain", strings.NewReader("x"))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if got := resp.TLS.PeerCertificates[0].Subject.CommonName; got != "second" || resp.StatusCode != 200 {
			t.Errorf("after Reload: %s with certificate %q, want 200 with \"second\"", resp.Status, got)
		}
		tr.CloseIdleConnections()
		cancel()
		if err := <-served; err != nil {
			t.Fatal(err)
		}
	})
	check()
}

// TestUnsyncedRouterSaysUnavailable: before discovery has synced once (here
// Consul is unreachable from the start), an endpoint the router does not
// know may well exist, so the answer is 503, not "not found".
func TestUnsyncedRouterSaysUnavailable(t *testing.T) {
	rt, err := New(Config{Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	consul, err := consulapi.NewClient(&consulapi.Config{Address: closedAddr(t), Scheme: "http"})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	addrc := make(chan net.Addr, 1)
	served := make(chan error, 1)
	go func() {
		served <- Serve(ctx, rt, NewConsulDiscovery(ConsulConfig{Client: consul}), ServerConfig{
			Listen: "127.0.0.1:0", Logger: testLogger(t), OnListening: func(a net.Addr) { addrc <- a },
		})
	}()
	addr := <-addrc
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr}).Post("http://"+addr.String()+"/endpoints/demo/invocations", "text/plain", strings.NewReader("x"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 503 || resp.Header.Get("X-Amzn-ErrorType") != CodeServiceUnavailable {
		t.Errorf("got %s %s", resp.Status, resp.Header.Get("X-Amzn-ErrorType"))
	}
	cancel()
	if err := <-served; err != nil {
		t.Fatal(err)
	}
}
