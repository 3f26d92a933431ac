package router

import (
	"bufio"
	"bytes"
	"errors"
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
)

// The write deadline an invocation sets (model timeout + WriteTimeout) was
// left on a kept-alive fast-path connection: a later request answered
// without a model call (an unknown endpoint, a refused signature, a 503)
// found it passed, its answer failed to write and the client saw its
// connection cut instead of an error (with the defaults, any such answer
// 90 s after an invocation on the same connection). Each request now has
// its own deadline.
func TestDeadlineStaleAfterInvocationOnKeptAliveConnection(t *testing.T) {
	m := model(t, "a", nil)
	e := newEnv(t, Config{WriteTimeout: 200 * time.Millisecond})
	routeTo(e.rt, "ep", addrOf(m), 300*time.Millisecond)
	c := e.dial()
	br := bufio.NewReader(c)
	io.WriteString(c, fastReq)
	if code, body := readAnswer(t, br); code != 200 {
		t.Fatalf("invocation: %d %q", code, body)
	}
	// Past the deadline the invocation set (300 ms + 200 ms).
	time.Sleep(700 * time.Millisecond)
	io.WriteString(c, "POST /endpoints/nope/invocations HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi")
	if code, body := readAnswer(t, br); code != 400 {
		t.Fatalf("unknown endpoint on the same connection: %d %q, want 400", code, body)
	}
	// And the connection still serves.
	io.WriteString(c, fastReq)
	if code, body := readAnswer(t, br); code != 200 {
		t.Fatalf("invocation after: %d %q", code, body)
	}
	if n := e.fast.served.Load(); n != 3 {
		t.Errorf("fast path served %d of 3", n)
	}
}

// instInFlight counts the requests at endpoint's instances.
func instInFlight(rt *Router, endpoint string) int64 {
	var n int64
	if e := rt.table.Load().endpoints[endpoint]; e != nil {
		for _, s := range e.slots {
			for _, in := range s.insts {
				n += in.inflight.Load()
			}
		}
	}
	return n
}

// dialSmallWindow connects to addr with a 4 KiB receive buffer, set
// before the connection opens (shrinking it later makes the kernel drop
// what it already allowed, and the sender backs off for seconds), so a
// client that does not read stalls its sender after a few KiB, not MBs.
func dialSmallWindow(t *testing.T, addr string) net.Conn {
	d := net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		err := rc.Control(func(fd uintptr) {
			serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4<<10)
		})
		return errors.Join(err, serr)
	}}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// fastConns counts the connections the fast path holds.
func (e *testEnv) fastConns() int {
	e.fast.mu.Lock()
	defer e.fast.mu.Unlock()
	return len(e.fast.conns)
}

// writerModel is a model whose answer is big (a 6 MB body, or an endless
// chunked stream) and which reports when its handler has ended, which it
// does only once the router has let go of the connection.
func writerModel(t *testing.T, stream bool) (*httptest.Server, chan error) {
	done := make(chan error, 16)
	m := model(t, "", func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		part := bytes.Repeat([]byte("x"), 32<<10)
		var err error
		if stream {
			w.Header().Set("Content-Type", "text/plain")
			for err == nil {
				if _, err = w.Write(part); err == nil {
					err = http.NewResponseController(w).Flush()
				}
			}
		} else {
			w.Header().Set("Content-Type", "application/octet-stream")
			w.Header().Set("Content-Length", strconv.Itoa(MaxBodyBytes))
			for n := 0; n < MaxBodyBytes && err == nil; n += len(part) {
				_, err = w.Write(part)
			}
		}
		done <- err
	})
	return m, done
}

// A client that sends a request and never reads its answer loses its
// connection at the write deadline, on the fast path and on net/http, for
// a large plain answer and for a response stream; the model's connection
// is let go with it, every goroutine of the exchange ends, and another
// client is served meanwhile. (The fast path once set no deadline on
// answers the router gave itself and kept a connection whose write failed
// until its idle timeout.)
func TestDeadlineClientStopsReading(t *testing.T) {
	const wt = 300 * time.Millisecond
	for _, path := range []string{"fast", "net/http"} {
		for _, op := range []string{"invocations", "invocations-response-stream"} {
			t.Run(path+"/"+op, func(t *testing.T) {
				stream := op != "invocations"
				big, modelDone := writerModel(t, stream)
				small := model(t, "a", nil)
				// IdleTimeout far past the test: only the write deadline
				// can end the connection in time.
				e := newEnv(t, Config{WriteTimeout: wt, IdleTimeout: time.Hour, StreamTimeout: time.Hour})
				routeTo(e.rt, "big", addrOf(big), time.Second)
				routeTo(e.rt, "ep", addrOf(small), 0)
				resp, body := e.invoke("ep", []byte("warm"))
				mustStatus(t, resp, body, 200)
				leaks := goroutineCheck(t)
				others := e.fastConns() // the other client's

				c := dialSmallWindow(t, e.srv.Listener.Addr().String())
				req := "POST /endpoints/big/" + op + " HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi"
				if path == "net/http" {
					// A chunked body is net/http's.
					req = "POST /endpoints/big/" + op + " HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n"
				}
				start := time.Now()
				io.WriteString(c, req)
				waitFor(t, 5*time.Second, "request at the model", func() bool { return instInFlight(e.rt, "big") == 1 })

				// Another client is served while this one stalls.
				resp, body = e.invoke("ep", []byte("hi"))
				mustStatus(t, resp, body, 200)

				// Without deadlines the exchange would wait here for the
				// client (or the hour-long idle timeout).
				waitFor(t, 10*time.Second, "the router lets the stalled request go", func() bool { return instInFlight(e.rt, "big") == 0 })
				t.Logf("request let go after %s", time.Since(start).Round(time.Millisecond))
				if stream {
					select {
					case err := <-modelDone:
						if err == nil {
							t.Fatal("the endless stream ended without an error")
						}
					case <-time.After(5 * time.Second):
						t.Fatal("the model's connection is still held")
					}
				}
				// The router has closed the client's connection: reading
				// drains what the buffers hold and ends, never blocks.
				c.SetReadDeadline(time.Now().Add(5 * time.Second))
				n, err := io.Copy(io.Discard, c)
				if isTimeout(err) {
					buf := make([]byte, 1<<20)
					buf = buf[:runtime.Stack(buf, true)]
					t.Fatalf("client connection still open after %d bytes\n%s", n, buf)
				}
				if n := e.fastConns(); n != others {
					t.Errorf("fast path holds %d connections, want the other client's %d", n, others)
				}
				if path == "net/http" && e.fast.handedOff.Load() != 1 {
					t.Errorf("%d connections handed to net/http, want 1", e.fast.handedOff.Load())
				}
				resp, body = e.invoke("ep", []byte("hi"))
				mustStatus(t, resp, body, 200)
				e.tr.CloseIdleConnections()
				c.Close()
				leaks()
				if b := e.rt.buffered.Load(); b != 0 {
					t.Errorf("%d bytes still charged to the body budget", b)
				}
			})
		}
	}
}

// A client that stalls partway through its request, or connects and
// sends nothing, loses its connection after the read timeouts
// (ReadHeaderTimeout for a head, ReadTimeout for a body), not after the
// idle timeout, and holds no body budget meanwhile.
func TestDeadlineHalfRequestStalls(t *testing.T) {
	m := model(t, "a", nil)
	cases := map[string]string{
		"nothing":   "",
		"half head": "POST /endpoints/ep/invocations HTTP/1.1\r\nHost: x\r\nContent-Le",
		"half body": "POST /endpoints/ep/invocations HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n0123456789",
		"half big body": "POST /endpoints/ep/invocations HTTP/1.1\r\nHost: x\r\nContent-Length: 6000000\r\n\r\n" +
			strings.Repeat("x", 100<<10),
	}
	for name, sent := range cases {
		t.Run(name, func(t *testing.T) {
			e := newEnv(t, Config{ReadHeaderTimeout: 300 * time.Millisecond, ReadTimeout: 600 * time.Millisecond, IdleTimeout: time.Hour})
			routeTo(e.rt, "ep", addrOf(m), 0)
			// Served first, so every goroutine the server starts runs
			// before they are counted.
			resp, body := e.invoke("ep", []byte("hi"))
			mustStatus(t, resp, body, 200)
			leaks := goroutineCheck(t)
			others := e.fastConns()
			c := e.dial()
			io.WriteString(c, sent)
			c.SetReadDeadline(time.Now().Add(10 * time.Second))
			start := time.Now()
			b, err := io.ReadAll(c)
			if isTimeout(err) {
				t.Fatalf("connection still open after 10 s (read %q)", b)
			}
			t.Logf("closed after %s with %q", time.Since(start).Round(time.Millisecond), firstLine(b))
			if len(b) > 0 && !bytes.HasPrefix(b, []byte("HTTP/1.1 4")) {
				t.Errorf("answer %q, want a 4xx or none", firstLine(b))
			}
			c.Close()
			waitFor(t, 5*time.Second, "fast path connections released", func() bool { return e.fastConns() == others })
			leaks()
			if b := e.rt.buffered.Load(); b != 0 {
				t.Errorf("%d bytes still charged to the body budget", b)
			}
			// Others are served as usual.
			resp, body = e.invoke("ep", []byte("hi"))
			mustStatus(t, resp, body, 200)
		})
	}
}

func firstLine(b []byte) string {
	l, _, _ := bytes.Cut(b, []byte("\r\n"))
	return string(l)
}

// ReadTimeout bounds reading the request, not the model call after it: an
// invocation on net/http whose model takes longer than ReadTimeout is
// answered (net/http's hang-up detector reads under the request's read
// deadline, and its timeout cancelled the request).
func TestDeadlineReadTimeoutDoesNotCutModelCall(t *testing.T) {
	m := model(t, "", func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		time.Sleep(800 * time.Millisecond)
		io.WriteString(w, "slow")
	})
	e := newEnv(t, Config{ReadTimeout: 300 * time.Millisecond, ReadHeaderTimeout: 300 * time.Millisecond})
	routeTo(e.rt, "ep", addrOf(m), 5*time.Second)
	for _, req := range []string{
		fastReq,
		"POST /endpoints/ep/invocations HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n",
	} {
		c := e.dial()
		io.WriteString(c, req)
		if code, body := readAnswer(t, bufio.NewReader(c)); code != 200 || body != "slow" {
			t.Errorf("%d %q, want 200 slow", code, body)
		}
	}
	if e.fast.handedOff.Load() != 1 {
		t.Errorf("%d connections handed to net/http, want 1", e.fast.handedOff.Load())
	}
}

// A request whose body takes longer than WriteTimeout to arrive still
// gets its answer when the router refuses it: net/http's WriteTimeout
// runs from the end of the head, so the router arms the answer's own
// deadline once the body is in. (A chunked body goes to net/http.)
func TestDeadlineSlowBodyStillAnswered(t *testing.T) {
	m := model(t, "a", nil)
	e := newEnv(t, Config{WriteTimeout: 200 * time.Millisecond, ReadTimeout: 5 * time.Second})
	routeTo(e.rt, "ep", addrOf(m), 0)
	c := e.dial()
	defer c.Close()
	io.WriteString(c, "POST /endpoints/ep/invocations HTTP/1.1\r\nHost: x\r\nX-Amzn-SageMaker-Target-Variant: nope\r\nTransfer-Encoding: chunked\r\n\r\n")
	for range 5 {
		time.Sleep(100 * time.Millisecond)
		io.WriteString(c, "1\r\nx\r\n")
	}
	io.WriteString(c, "0\r\n\r\n")
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if code, body := readAnswer(t, bufio.NewReader(c)); code != 400 || !strings.Contains(body, "nope") {
		t.Fatalf("unknown variant after a slow body: %d %q, want the 400 naming it", code, body)
	}
}
