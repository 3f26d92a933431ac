package server

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	consulapi "github.com/hashicorp/consul/api"
	"github.com/hashicorp/go-hclog"

	"github.com/seraihq/serai/internal/testagents"
	"github.com/seraihq/serai/server/api"
	"github.com/seraihq/serai/server/reconcile"
	"github.com/seraihq/serai/server/records"
)

func idleReconcile(c *testagents.Consul) reconcile.Config {
	return reconcile.Config{Store: records.Store{KV: records.ConsulKV{KV: c.Client.KV()}},
		Nomad: idle{}, Instances: idle{}, Routes: idle{}, Metrics: idle{}}
}

// TestOpenAPIRefused: an unauthenticated API may listen on loopback
// only, unless the operator says --insecure-no-auth.
func TestOpenAPIRefused(t *testing.T) {
	base := Config{API: http.NotFoundHandler(), Consul: nil, Reconcile: reconcile.Config{
		Store: records.Store{KV: records.NewMemKV()}, Nomad: idle{}, Instances: idle{}, Routes: idle{}, Metrics: idle{}}}
	// Validate needs a client value, not an agent.
	var err error
	if base.Consul, err = consulapi.NewClient(&consulapi.Config{Address: "127.0.0.1:1"}); err != nil {
		t.Fatal(err)
	}
	for _, addr := range []string{"0.0.0.0:8090", ":8090", "[::]:8090", "10.1.2.3:8090", "192.168.56.10:0", "node1.example:8090", "[fe80::1]:8090", "8090"} {
		cfg := base
		cfg.Listen = addr
		if err := cfg.Validate(); !errors.Is(err, ErrOpenAPI) || !strings.Contains(err.Error(), "--insecure-no-auth") || !strings.Contains(err.Error(), "--sigv4-keys") {
			t.Errorf("Listen %q without auth: %v; want ErrOpenAPI naming --sigv4-keys and --insecure-no-auth", addr, err)
		}
		cfg.InsecureNoAuth = true
		if err := cfg.Validate(); err != nil {
			t.Errorf("Listen %q with InsecureNoAuth: %v", addr, err)
		}
		cfg.InsecureNoAuth, cfg.Authenticated = false, true
		if err := cfg.Validate(); err != nil {
			t.Errorf("Listen %q authenticated: %v", addr, err)
		}
	}
	for _, addr := range []string{"", "127.0.0.1:8090", "127.0.0.2:0", "[::1]:8090", "localhost:8090"} {
		cfg := base
		cfg.Listen = addr
		if err := cfg.Validate(); err != nil {
			t.Errorf("Listen %q (loopback) without auth: %v", addr, err)
		}
	}
}

// runBounded runs a server with cfg on a real Consul until the test ends
// and returns the address it listens on (127.0.0.1).
func runBounded(t *testing.T, cfg Config) string {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	addrc := make(chan string, 1)
	done := make(chan struct{})
	var runErr error
	go func() {
		runErr = Run(ctx, cfg, func(a string) { addrc <- a })
		close(done)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
		if runErr != nil {
			t.Errorf("server: %v", runErr)
		}
	})
	select {
	case a := <-addrc:
		_, port, _ := net.SplitHostPort(a)
		return "127.0.0.1:" + port
	case <-done:
		t.Fatalf("server did not start: %v", runErr)
	}
	return ""
}

func listModels(t *testing.T, addr string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, "http://"+addr+"/", strings.NewReader("{}"))
	req.Header.Set("Content-Type", api.ContentType)
	req.Header.Set("X-Amz-Target", "SageMaker.ListModels")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("ListModels from another client: %v", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("ListModels from another client: %d %s", resp.StatusCode, b)
	}
}

// TestAPIBounds tries, on a real server over TCP, what a hostile client
// does to hold the control API's connections: a body trickled a byte at a
// time, a 1 MiB header block, a kept-alive connection left idle. Each is
// cut by its bound, and other clients are served throughout.
func TestAPIBounds(t *testing.T) {
	consul := testagents.StartConsul(t)
	handler, err := api.New(api.Config{Store: records.Store{KV: records.ConsulKV{KV: consul.Client.KV()}}})
	if err != nil {
		t.Fatal(err)
	}
	cfg := func(id string) Config {
		return Config{Listen: "127.0.0.1:0", ID: id, Consul: consul.Client, AliveTTL: time.Second,
			API: handler, Reconcile: idleReconcile(consul)}
	}

	t.Run("SlowBody", func(t *testing.T) {
		c := cfg("bounds-slow")
		c.ReadTimeout = 500 * time.Millisecond
		addr := runBounded(t, c)
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		const bodyLen = 1 << 20 // a byte every 20 ms: six hours
		fmt.Fprintf(conn, "POST / HTTP/1.1\r\nHost: serai\r\nContent-Type: %s\r\nX-Amz-Target: SageMaker.ListModels\r\nContent-Length: %d\r\n\r\n", api.ContentType, bodyLen)
		answer := make(chan []byte, 1)
		go func() {
			b, _ := io.ReadAll(conn) // until the server closes the connection
			answer <- b
		}()
		sent := 0
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		var got []byte
	trickle:
		for sent < bodyLen {
			select {
			case got = <-answer:
				break trickle
			case <-tick.C:
				if _, err := conn.Write([]byte{' '}); err != nil {
					got = <-answer
					break trickle
				}
				sent++
				if sent == 5 {
					listModels(t, addr) // served while the slow client trickles
				}
			}
		}
		if sent >= bodyLen {
			t.Fatal("the server read a 1 MiB body sent a byte at a time to the end")
		}
		t.Logf("slow body cut after %d bytes; the server answered %q", sent, firstLine(got))
		if len(got) > 0 && !strings.HasPrefix(string(got), "HTTP/1.1 400") {
			t.Errorf("answer to the cut body: %q", firstLine(got))
		}
		listModels(t, addr)
	})

	t.Run("HugeHeaders", func(t *testing.T) {
		addr := runBounded(t, cfg("bounds-headers"))
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		go func() {
			// The server stops reading at its cap, so this write may block
			// until the connection closes, or fail: either is fine.
			fmt.Fprintf(conn, "POST / HTTP/1.1\r\nHost: serai\r\nX-Amz-Target: SageMaker.ListModels\r\nX-Pad: %s\r\n\r\n{}", bytes.Repeat([]byte("a"), 1<<20))
		}()
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil {
			t.Fatalf("reading the answer to 1 MiB of headers: %v", err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
			t.Fatalf("1 MiB of headers: %d, want 431", resp.StatusCode)
		}
		listModels(t, addr)
	})

	t.Run("IdleConnection", func(t *testing.T) {
		c := cfg("bounds-idle")
		// Only the idle bound is small, so it alone closes the connection.
		c.ReadHeaderTimeout, c.ReadTimeout, c.WriteTimeout = time.Hour, time.Hour, time.Hour
		c.IdleTimeout = 300 * time.Millisecond
		addr := runBounded(t, c)
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		fmt.Fprintf(conn, "POST / HTTP/1.1\r\nHost: serai\r\nContent-Type: %s\r\nX-Amz-Target: SageMaker.ListModels\r\nContent-Length: 2\r\n\r\n{}", api.ContentType)
		br := bufio.NewReader(conn)
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || resp.Close {
			t.Fatalf("first request: %d close=%v", resp.StatusCode, resp.Close)
		}
		// A safety net only: without an idle bound the connection stays
		// open for the hour-long read bounds.
		_ = conn.SetReadDeadline(time.Now().Add(time.Minute))
		n, err := br.Read(make([]byte, 1))
		var ne net.Error
		if n != 0 || (errors.As(err, &ne) && ne.Timeout()) || err == nil {
			t.Fatalf("idle kept-alive connection: read %d, %v; want it closed by the server", n, err)
		}
	})

	t.Run("InsecureNoAuthWarns", func(t *testing.T) {
		var mu sync.Mutex
		var logs bytes.Buffer
		c := cfg("bounds-open")
		_, port, _ := net.SplitHostPort(testagents.FreeLoopbackAddr(t))
		// All addresses are bound; the test connects through loopback only.
		c.Listen, c.AdvertiseAddr = "0.0.0.0:"+port, "127.0.0.1:"+port
		c.Logger = hclog.New(&hclog.LoggerOptions{Output: lockedWriter{&mu, &logs}, Level: hclog.Info})
		if err := Run(context.Background(), c, nil); !errors.Is(err, ErrOpenAPI) {
			t.Fatalf("open API without InsecureNoAuth: %v", err)
		}
		c.InsecureNoAuth = true
		addr := runBounded(t, c)
		listModels(t, addr)
		mu.Lock()
		defer mu.Unlock()
		if !strings.Contains(logs.String(), "[WARN]") || !strings.Contains(logs.String(), "--insecure-no-auth") {
			t.Fatalf("no warning about the open API in the log:\n%s", logs.String())
		}
	})
}

type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

func firstLine(b []byte) string {
	s, _, _ := strings.Cut(string(b), "\r\n")
	return s
}
