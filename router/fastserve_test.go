package router

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"
)

func readAnswer(t *testing.T, br *bufio.Reader) (int, string) {
	t.Helper()
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

const fastReq = "POST /endpoints/ep/invocations HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nhi"

// Pipelined requests are answered in order; a request the fast path does
// not serve (GET /ping) moves the connection to net/http, which answers it
// and what follows on the same connection.
func TestFastPathPipelinedThenHandedOff(t *testing.T) {
	m := model(t, "a", nil)
	e := epEnv(t, m)
	c := e.dial()
	io.WriteString(c, fastReq+fastReq+"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n"+fastReq)
	br := bufio.NewReader(c)
	for i, want := range []string{"a", "a", "", "a"} {
		if code, body := readAnswer(t, br); code != 200 || body != want {
			t.Fatalf("answer %d: %d %q, want 200 %q", i, code, body, want)
		}
	}
	if s, h := e.fast.served.Load(), e.fast.handedOff.Load(); s != 2 || h != 1 {
		t.Errorf("fast path served %d, handed off %d; want 2 and 1", s, h)
	}
}

// A request split across reads, as a real network splits one larger than
// a TCP segment, is served on the fast path once its rest arrives, and the
// connection stays there (it once went to net/http for good).
func TestFastPathSplitRequestServedWhole(t *testing.T) {
	m := model(t, "a", nil)
	e := epEnv(t, m)
	c := e.dial()
	br := bufio.NewReader(c)
	cuts := []int{10, strings.Index(fastReq, "\r\n\r\n") + 2, len(fastReq) - 1}
	for i, cut := range cuts {
		io.WriteString(c, fastReq[:cut])
		// The rest goes once the fast path waits for it: a fixed pause
		// would let a loaded machine read both parts at once.
		waitFor(t, 10*time.Second, "the wait for the rest", func() bool { return e.fast.split.Load() == int64(i+1) })
		io.WriteString(c, fastReq[cut:])
		if code, body := readAnswer(t, br); code != 200 || body != "a" {
			t.Fatalf("cut at %d: %d %q", cut, code, body)
		}
	}
	io.WriteString(c, fastReq)
	if code, body := readAnswer(t, br); code != 200 || body != "a" {
		t.Fatalf("whole request after split ones: %d %q", code, body)
	}
	if s, h := e.fast.served.Load(), e.fast.handedOff.Load(); s != int64(len(cuts)+1) || h != 0 {
		t.Errorf("fast path served %d, handed off %d; want %d and 0", s, h, len(cuts)+1)
	}
}

// A client slower than splitWait is net/http's, with what it sent so far;
// a partial request that cannot be a fast one goes there at once; a client
// that hangs up mid-request leaves nothing behind.
func TestFastPathSlowOrOtherPartialRequestGoesToNetHTTP(t *testing.T) {
	fs, addr := fastEnv(t, model(t, "a", nil), func(_ *http.Server, fs *fastServer) { fs.splitWait = 50 * time.Millisecond })
	c := dialRaw(t, addr)
	io.WriteString(c, fastReq[:len(fastReq)-2])
	waitFor(t, 10*time.Second, "the hand-off", func() bool { return fs.handedOff.Load() == 1 })
	io.WriteString(c, "hi")
	if code, body := readAnswer(t, bufio.NewReader(c)); code != 200 || body != "a" {
		t.Fatalf("slow client: %d %q", code, body)
	}

	c = dialRaw(t, addr)
	io.WriteString(c, "GET /pi")
	waitFor(t, 10*time.Second, "the hand-off", func() bool { return fs.handedOff.Load() == 2 })
	io.WriteString(c, "ng HTTP/1.1\r\nHost: x\r\n\r\n")
	if code, _ := readAnswer(t, bufio.NewReader(c)); code != 200 {
		t.Fatalf("GET /ping sent in two parts: %d", code)
	}
	if s, n := fs.served.Load(), fs.split.Load(); s != 0 || n != 1 {
		t.Errorf("fast path served %d, waited for %d rests; want 0 and 1", s, n)
	}

	fs, addr = fastEnv(t, model(t, "a", nil), func(_ *http.Server, fs *fastServer) { fs.splitWait = time.Minute })
	c = dialRaw(t, addr)
	io.WriteString(c, fastReq[:20])
	waitFor(t, 10*time.Second, "the wait for the rest", func() bool { return fs.split.Load() == 1 })
	c.Close()
	waitFor(t, 10*time.Second, "the connection to be forgotten", func() bool {
		fs.mu.Lock()
		defer fs.mu.Unlock()
		return len(fs.conns) == 0
	})
	if h := fs.handedOff.Load(); h != 0 {
		t.Errorf("a hang-up mid-request was handed to net/http")
	}
}

// A client that hangs up while its request is with the model aborts the
// model's request at once (the connection's pending read is the detector).
func TestFastPathHangUpCancelsModelCall(t *testing.T) {
	started, cancelled := make(chan struct{}), make(chan struct{})
	m := model(t, "a", func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		close(started)
		<-r.Context().Done()
		close(cancelled)
	})
	e := epEnv(t, m)
	c, err := net.Dial("tcp", e.srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(c, fastReq)
	select {
	case <-started:
	case <-time.After(5 * time.Second):
		t.Fatal("the model was not called")
	}
	c.Close()
	select {
	case <-cancelled:
	case <-time.After(5 * time.Second):
		t.Fatal("the model's request outlived the client by 5s")
	}
	if s := e.fast.served.Load(); s != 1 {
		t.Errorf("fast path served %d, want 1", s)
	}
}

// Serve's shutdown lets a request in flight on the fast path finish, then
// returns; the idle connection is closed.
func TestFastPathGracefulShutdown(t *testing.T) {
	release := make(chan struct{})
	m := model(t, "a", func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		<-release
		io.WriteString(w, "late")
	})
	rt, err := New(Config{Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	rt.SetRoutes("ep", oneGen("ep", "a", 1))
	rt.SetInstances("ep", []Instance{inst("a1", addrOf(m), "a", 1)})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	served := make(chan error, 1)
	go func() { served <- Serve(ctx, rt, nil, ServerConfig{Listener: ln, ShutdownTimeout: 10 * time.Second}) }()
	dial := func() net.Conn {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(10 * time.Second))
		return c
	}
	idle, busy := dial(), dial()
	defer idle.Close()
	defer busy.Close()
	io.WriteString(busy, fastReq)
	for rt.inFlight.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	stop()
	// The idle connection is closed by the shutdown.
	if n, err := idle.Read(make([]byte, 1)); n != 0 || err == nil {
		t.Fatalf("idle connection: read %d, %v; want it closed", n, err)
	}
	close(release)
	if code, body := readAnswer(t, bufio.NewReader(busy)); code != 200 || body != "late" {
		t.Fatalf("in-flight request: %d %q", code, body)
	}
	select {
	case err := <-served:
		if err != nil {
			t.Fatalf("Serve: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return")
	}
}

// The fast path's ResponseWriter answers as net/http's does: for each
// handler below, the status, the headers (but Date, and the framing
// headers Content-Length/Transfer-Encoding, which may differ for a body of
// unknown length) and the body agree.
func TestFastResponseMatchesNetHTTP(t *testing.T) {
	big := strings.Repeat("0123456789abcdef", 5000) // 80,000 bytes
	handlers := map[string]http.HandlerFunc{
		"typed with length": func(w http.ResponseWriter, r *http.Request) {
			w.Header()["Content-Type"] = []string{"application/json"}
			w.Header()["Content-Length"] = []string{"2"}
			io.WriteString(w, "{}")
		},
		"length, no type (sniffed)": func(w http.ResponseWriter, r *http.Request) {
			w.Header()["Content-Length"] = []string{"11"}
			io.WriteString(w, "<html></ht>")
		},
		"no length, no type": func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, "plain words")
		},
		"big, no length": func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, big[:40000])
			io.WriteString(w, big[40000:])
		},
		"big with length, no type": func(w http.ResponseWriter, r *http.Request) {
			w.Header()["Content-Length"] = []string{strconv.Itoa(len(big))}
			for i := 0; i < len(big); i += 7000 {
				io.WriteString(w, big[i:min(i+7000, len(big))])
			}
		},
		"error status": func(w http.ResponseWriter, r *http.Request) {
			w.Header()["Content-Type"] = []string{"application/x-amz-json-1.1"}
			w.Header()["X-Amzn-Errortype"] = []string{"ValidationError"}
			w.WriteHeader(400)
			io.WriteString(w, `{"__type":"ValidationError"}`)
		},
		"no body": func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(204)
		},
		"nothing written": func(w http.ResponseWriter, r *http.Request) {},
		"flushed parts": func(w http.ResponseWriter, r *http.Request) {
			w.Header()["Content-Type"] = []string{"application/vnd.amazon.eventstream"}
			w.WriteHeader(200)
			rc := http.NewResponseController(w)
			for i := range 5 {
				fmt.Fprintf(w, "part %d;", i)
				if err := rc.Flush(); err != nil {
					panic(err)
				}
			}
		},
		"flushed before any byte, untyped": func(w http.ResponseWriter, r *http.Request) {
			w.(http.Flusher).Flush()
			io.WriteString(w, "<html>late</html>")
		},
		"value with line break": func(w http.ResponseWriter, r *http.Request) {
			w.Header()["X-Odd"] = []string{" a\r\nb "}
			io.WriteString(w, "x")
		},
		"request echoed": func(w http.ResponseWriter, r *http.Request) {
			b, _ := io.ReadAll(r.Body)
			fmt.Fprintf(w, "%s %s %s %d %q %q %q", r.Method, r.URL.Path, r.Host, r.ContentLength, b, r.Header.Get("Content-Type"), r.Header.Values("X-Two"))
		},
	}
	req := "POST /endpoints/ep/invocations HTTP/1.1\r\nHost: h:1\r\nContent-Type: text/plain\r\nX-Two: 1\r\nX-Two: 2\r\nContent-Length: 2\r\n\r\nhi"
	ask := func(t *testing.T, addr string) (*http.Response, string) {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		io.WriteString(c, req)
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		return resp, string(b)
	}
	for name, h := range handlers {
		t.Run(name, func(t *testing.T) {
			std := httptest.NewServer(h)
			defer std.Close()
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			fs := newFastServer(newHTTPServer(h, nil, testLogger(t)))
			go fs.Serve(ln)
			defer fs.Close()
			want, wantBody := ask(t, std.Listener.Addr().String())
			got, gotBody := ask(t, ln.Addr().String())
			if fs.served.Load() != 1 {
				t.Fatalf("fast path served %d", fs.served.Load())
			}
			for _, r := range []*http.Response{want, got} {
				for _, k := range []string{"Date", "Content-Length", "Transfer-Encoding"} {
					delete(r.Header, k)
				}
			}
			if got.StatusCode != want.StatusCode || !reflect.DeepEqual(got.Header, want.Header) || gotBody != wantBody {
				t.Errorf("fast path: %d %v %q\nnet/http:  %d %v %q", got.StatusCode, got.Header, truncString(gotBody, 80),
					want.StatusCode, want.Header, truncString(wantBody, 80))
			}
		})
	}
}

// Requests on one connection share its context; what each registers on it
// (the model call's abort, dial deadlines) is gone once it is done.
func TestFastPathContextHoldsNothingAfterRequests(t *testing.T) {
	m := model(t, "a", nil)
	e := epEnv(t, m)
	for range 20 {
		resp, body := e.invoke("ep", []byte("x"))
		mustStatus(t, resp, body, 200)
	}
	if e.fast.served.Load() != 20 {
		t.Fatalf("fast path served %d of 20", e.fast.served.Load())
	}
	e.fast.mu.Lock()
	defer e.fast.mu.Unlock()
	for fc := range e.fast.conns {
		fc.ctx.mu.Lock()
		n := len(fc.ctx.funcs)
		fc.ctx.mu.Unlock()
		if n != 0 {
			t.Errorf("a connection's context holds %d functions after its requests", n)
		}
	}
}

// A handler that writes fewer bytes than the Content-Length it set gets
// its connection closed, so the client sees a cut answer, not a hang.
func TestFastResponseShortBodyClosesConnection(t *testing.T) {
	fs := newFastServer(newHTTPServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header()["Content-Type"] = []string{"text/plain"}
		w.Header()["Content-Length"] = []string{"10"}
		io.WriteString(w, "short")
	}), nil, testLogger(t)))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go fs.Serve(ln)
	defer fs.Close()
	c := dialRaw(t, ln.Addr().String())
	io.WriteString(c, fastReq)
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(resp.Body)
	if err != io.ErrUnexpectedEOF || string(b) != "short" {
		t.Fatalf("body %q, %v; want the 5 bytes, then the connection cut", b, err)
	}
}

// A connection kept busy with back-to-back requests is not idle: it must
// outlive the idle timeout (it was once closed IdleTimeout after it
// opened, resetting the request in flight).
func TestFastPathBusyConnectionOutlivesIdleTimeout(t *testing.T) {
	idle := 300 * time.Millisecond
	fs, addr := fastEnv(t, model(t, "a", nil), func(hs *http.Server, _ *fastServer) { hs.IdleTimeout = idle })
	c := dialRaw(t, addr)
	br := bufio.NewReader(c)
	n := 0
	for start := time.Now(); time.Since(start) < 5*idle; n++ {
		if _, err := io.WriteString(c, fastReq); err != nil {
			t.Fatalf("request %d: %v", n, err)
		}
		if code, body := readAnswer(t, br); code != 200 || body != "a" {
			t.Fatalf("request %d: %d %q", n, code, body)
		}
	}
	if fs.served.Load() != int64(n) {
		t.Errorf("fast path served %d of %d", fs.served.Load(), n)
	}
}

// fastEnv is a router serving endpoint "ep" of one variant "a" on model m
// through a fast server that tune adjusted before it started; it returns
// the server and its address. Everything stops with the test.
func fastEnv(t *testing.T, m *httptest.Server, tune func(*http.Server, *fastServer)) (*fastServer, string) {
	t.Helper()
	rt, err := New(Config{Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(rt.Close)
	rt.SetRoutes("ep", oneGen("ep", "a", 1))
	rt.SetInstances("ep", []Instance{inst("a1", addrOf(m), "a", 1)})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := newHTTPServer(rt, nil, testLogger(t))
	fs := newFastServer(hs)
	tune(hs, fs)
	go fs.Serve(ln)
	t.Cleanup(func() { fs.Close() })
	return fs, ln.Addr().String()
}

// epEnv is a router serving endpoint "ep" of one variant "a" on model m.
func epEnv(t *testing.T, m *httptest.Server) *testEnv {
	t.Helper()
	e := newEnv(t, Config{})
	e.rt.SetRoutes("ep", oneGen("ep", "a", 1))
	e.rt.SetInstances("ep", []Instance{inst("a1", addrOf(m), "a", 1)})
	return e
}

// dial opens a raw connection to the router, closed with the test.
func (e *testEnv) dial() net.Conn {
	e.t.Helper()
	return dialRaw(e.t, e.srv.Listener.Addr().String())
}

// dialRaw opens a raw connection to addr with a 10 s deadline, closed with
// the test.
func dialRaw(t testing.TB, addr string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(10 * time.Second))
	return c
}
