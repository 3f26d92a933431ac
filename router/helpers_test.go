package router

import (
	"bytes"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
)

// testEnv is a Router behind a real loopback HTTP server, fed directly
// through its Sink methods (the Consul tests use the real discovery).
type testEnv struct {
	t      testing.TB
	rt     *Router
	srv    *httptest.Server
	fast   *fastServer
	tr     *http.Transport
	client *http.Client
}

func newEnv(t testing.TB, cfg Config) *testEnv {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = testLogger(t)
	}
	rt, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	// Served as Serve serves plain HTTP: the fast path in front of
	// net/http, so every test here holds for both.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	fs := newFastServer(newHTTPServer(rt, nil, cfg.Logger))
	go fs.Serve(ln)
	srv := &httptest.Server{URL: "http://" + ln.Addr().String(), Listener: ln, Config: fs.srv}
	tr := &http.Transport{MaxIdleConnsPerHost: 64, DisableCompression: true}
	e := &testEnv{t: t, rt: rt, srv: srv, fast: fs, tr: tr, client: &http.Client{Transport: tr, Timeout: 30 * time.Second}}
	t.Cleanup(e.close)
	return e
}

func (e *testEnv) close() {
	e.tr.CloseIdleConnections()
	e.fast.Close()
	if testing.Verbose() {
		e.t.Logf("fast path: %d requests served, %d connections handed to net/http", e.fast.served.Load(), e.fast.handedOff.Load())
	}
	e.rt.Close()
}

func testLogger(t testing.TB) hclog.Logger {
	return hclog.New(&hclog.LoggerOptions{Name: "router", Level: hclog.Warn, Output: testWriter{t}})
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// invoke posts body to endpoint with extra headers and returns the answer.
func (e *testEnv) invoke(endpoint string, body []byte, hdr ...string) (*http.Response, []byte) {
	e.t.Helper()
	req, err := http.NewRequest(http.MethodPost, e.srv.URL+"/endpoints/"+endpoint+"/invocations", bytes.NewReader(body))
	if err != nil {
		e.t.Fatal(err)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := e.client.Do(req)
	if err != nil {
		e.t.Fatalf("invoke %s: %v", endpoint, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		e.t.Fatalf("invoke %s: reading body: %v", endpoint, err)
	}
	return resp, b
}

// model is a real HTTP model server on loopback that answers with its
// variant name unless handler is given.
func model(t testing.TB, variant string, handler http.HandlerFunc) *httptest.Server {
	t.Helper()
	if handler == nil {
		handler = func(w http.ResponseWriter, r *http.Request) {
			io.Copy(io.Discard, r.Body)
			w.Header().Set("Content-Type", "text/plain")
			w.Write([]byte(variant))
		}
	}
	s := httptest.NewServer(handler)
	t.Cleanup(s.Close)
	return s
}

func addrOf(s *httptest.Server) string { return s.Listener.Addr().String() }

func inst(id string, addr string, variant string, gen int) Instance {
	return Instance{ID: id, Address: addr, Variant: variant, Generation: gen}
}

// oneGen is a routing table with one generation (1) of variants given as
// name, weight pairs.
func oneGen(endpoint string, vw ...any) *Routes {
	g := Generation{Generation: 1, Weight: 1}
	for i := 0; i+1 < len(vw); i += 2 {
		g.Variants = append(g.Variants, Variant{Name: vw[i].(string), Weight: toFloat(vw[i+1])})
	}
	r := &Routes{Version: RoutesVersion, Endpoint: endpoint, Generations: []Generation{g}}
	if err := r.Validate(); err != nil {
		panic(err)
	}
	return r
}

func toFloat(v any) float64 {
	switch x := v.(type) {
	case int:
		return float64(x)
	case float64:
		return x
	}
	panic("weight must be int or float64")
}

// closedAddr returns a loopback address nothing listens on, and nothing
// can while the test runs: the port is held by a socket that is bound but
// not listening, so connections to it are refused. Closing a listener
// instead, as this helper once did, freed the port for the next bind(":0")
// on the machine; under parallel load another test's server took it now
// and then, and "refused" answered that server's 404 as a 424 (the rare
// TestFaults failure).
func closedAddr(t testing.TB) string {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Close(fd) })
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(sa.(*syscall.SockaddrInet4).Port))
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t testing.TB, within time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > within {
			t.Fatalf("%s: not within %s", what, within)
		}
		time.Sleep(5 * time.Millisecond)
	}
	return time.Since(start)
}

// goroutineCheck returns a function that fails the test if more goroutines
// run than when it was created, after giving stragglers time to exit.
func goroutineCheck(t testing.TB) func() {
	before := runtime.NumGoroutine()
	return func() {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for {
			n := runtime.NumGoroutine()
			if n <= before {
				return
			}
			if time.Now().After(deadline) {
				buf := make([]byte, 1<<20)
				buf = buf[:runtime.Stack(buf, true)]
				t.Fatalf("goroutine leak: %d before, %d after\n%s", before, n, buf)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
}

func header(resp *http.Response, k string) string { return resp.Header.Get(k) }

func mustStatus(t testing.TB, resp *http.Response, body []byte, want int) {
	t.Helper()
	if resp.StatusCode != want {
		t.Fatalf("status %d, want %d; body %s", resp.StatusCode, want, body)
	}
}
