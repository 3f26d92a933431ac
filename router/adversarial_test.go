package router

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"runtime"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Adversarial tests of the upstream HTTP/1.1 client and the request path:
// misbehaving models are raw loopback TCP servers writing exact bytes.

// scriptedModel is a raw TCP model. For every request it reads (head only:
// the body is left to serve), serve is called with the request's number,
// counted from 1 across all connections; it writes whatever it likes and
// returns false to close the connection.
type scriptedModel struct {
	addr  string
	reqs  atomic.Int32
	conns atomic.Int32

	mu   sync.Mutex
	seen []*http.Request   // heads of the requests read, bodies drained
	open map[net.Conn]bool // accepted and not yet closed
}

// openConns counts the connections the model has not closed.
func (m *scriptedModel) openConns() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.open)
}

func newScriptedModel(t testing.TB, serve func(n int, c net.Conn, req *http.Request) bool) *scriptedModel {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	m := &scriptedModel{addr: ln.Addr().String(), open: map[net.Conn]bool{}}
	var wg sync.WaitGroup
	t.Cleanup(func() {
		ln.Close()
		m.mu.Lock()
		for c := range m.open {
			c.Close()
		}
		m.mu.Unlock()
		wg.Wait()
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			m.conns.Add(1)
			m.mu.Lock()
			m.open[c] = true
			m.mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer func() {
					c.Close()
					m.mu.Lock()
					delete(m.open, c)
					m.mu.Unlock()
				}()
				br := bufio.NewReader(c)
				for {
					req, err := http.ReadRequest(br)
					if err != nil {
						return
					}
					m.mu.Lock()
					m.seen = append(m.seen, req)
					m.mu.Unlock()
					if !serve(int(m.reqs.Add(1)), c, req) {
						return
					}
				}
			}()
		}
	}()
	return m
}

// answer returns a serve function that drains each request's body and
// writes answers[n-1] for request n (the last answer repeats).
func answer(answers ...string) func(int, net.Conn, *http.Request) bool {
	return func(n int, c net.Conn, req *http.Request) bool {
		io.Copy(io.Discard, req.Body)
		a := answers[min(n, len(answers))-1]
		_, err := io.WriteString(c, a)
		return err == nil
	}
}

const okAnswer = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok"

// idleConns counts the pooled connections of an endpoint's instances.
func idleConns(rt *Router, endpoint string) int {
	n := 0
	e := rt.table.Load().endpoints[endpoint]
	if e == nil {
		return 0
	}
	for _, s := range e.slots {
		for _, in := range s.insts {
			in.pool.mu.Lock()
			n += len(in.pool.idle)
			in.pool.mu.Unlock()
		}
	}
	return n
}

// rawEnv is a router whose endpoint "raw" has one instance at addr.
func rawEnv(t *testing.T, addr string, timeout time.Duration) *testEnv {
	t.Helper()
	e := newEnv(t, Config{OutlierFailures: -1})
	routeTo(e.rt, "raw", addr, timeout)
	return e
}

// routeTo makes endpoint name one variant with one instance at addr, and
// the given model timeout (0: the default).
func routeTo(rt *Router, name, addr string, timeout time.Duration) {
	r := oneGen(name, "v", 1)
	if timeout > 0 {
		r.Timeout = Duration(timeout)
	}
	rt.SetRoutes(name, r)
	rt.SetInstances(name, []Instance{inst("r", addr, "v", 1)})
}

// tryInvoke is invoke that reports transport errors (a cut connection)
// instead of failing.
func (e *testEnv) tryInvoke(endpoint string, body []byte) (*http.Response, []byte, error) {
	req, err := http.NewRequest(http.MethodPost, e.srv.URL+"/endpoints/"+endpoint+"/invocations", bytes.NewReader(body))
	if err != nil {
		return nil, nil, err
	}
	resp, err := e.client.Do(req)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp, b, err
}

// TestAdvMalformedResponseHeads: every malformed status line or header
// section is a 424 ModelError, comes back fast (never waits for the model
// timeout), never leaves its connection in the pool, and the next request
// to the same model is served normally.
func TestAdvMalformedResponseHeads(t *testing.T) {
	longLine := "X-Big: " + strings.Repeat("a", 100<<10) + "\r\n"
	manyLines := strings.Repeat("X-A: b\r\n", 300)
	bigTotal := strings.Repeat("X-Big: "+strings.Repeat("a", 4000)+"\r\n", 20) // 80 KB in 20 lines
	cases := []struct{ name, head string }{
		{"empty status line", "\r\n\r\n"},
		{"HTTP/2 status line", "HTTP/2 200\r\n\r\n"},
		{"lower-case version", "http/1.1 200 OK\r\n\r\n"},
		{"unknown minor version", "HTTP/1.x 200 OK\r\nContent-Length: 2\r\n\r\nok"},
		{"two-digit code", "HTTP/1.1 20 OK\r\n\r\n"},
		{"four-digit code", "HTTP/1.1 2000 OK\r\n\r\n"},
		{"negative code", "HTTP/1.1 -20 OK\r\n\r\n"},
		{"code 099", "HTTP/1.1 099 Weird\r\n\r\n"},
		{"101 switching", "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n"},
		{"non-numeric length", "HTTP/1.1 200 OK\r\nContent-Length: five\r\n\r\nhello"},
		{"hex length", "HTTP/1.1 200 OK\r\nContent-Length: 0x5\r\n\r\nhello"},
		{"negative length", "HTTP/1.1 200 OK\r\nContent-Length: -5\r\n\r\nhello"},
		{"plus length", "HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\nhello"},
		{"empty length", "HTTP/1.1 200 OK\r\nContent-Length:\r\n\r\nhello"},
		{"list length", "HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\n\r\nhello"},
		{"huge length", "HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999\r\n\r\nhello"},
		{"conflicting lengths", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!"},
		{"header without colon", "HTTP/1.1 200 OK\r\nContent-Length 2\r\n\r\nok"},
		{"empty header name", "HTTP/1.1 200 OK\r\n: x\r\nContent-Length: 2\r\n\r\nok"},
		{"space before colon", "HTTP/1.1 200 OK\r\nContent-Length : 2\r\n\r\nok"},
		{"space in name", "HTTP/1.1 200 OK\r\nContent Length: 2\r\n\r\nok"},
		{"obs-fold", "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n  ; charset=utf-8\r\nContent-Length: 2\r\n\r\nok"},
		{"NUL in content type", "HTTP/1.1 200 OK\r\nContent-Type: text/\x00plain\r\nContent-Length: 2\r\n\r\nok"},
		{"bare CR in content type", "HTTP/1.1 200 OK\r\nContent-Type: text/plain\rX-Injected: 1\r\nContent-Length: 2\r\n\r\nok"},
		{"control char in custom attributes", "HTTP/1.1 200 OK\r\nX-Amzn-SageMaker-Custom-Attributes: a\x01b\r\nContent-Length: 2\r\n\r\nok"},
		{"unsupported transfer coding", "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\nContent-Length: 2\r\n\r\nok"},
		{"chunked not last", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\n2\r\nok\r\n0\r\n\r\n"},
		{"gzip then chunked", "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n"},
		{"chunked twice", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n"},
		{"header line over 8 KiB", "HTTP/1.1 200 OK\r\n" + longLine + "Content-Length: 2\r\n\r\nok"},
		{"over 256 header lines", "HTTP/1.1 200 OK\r\n" + manyLines + "Content-Length: 2\r\n\r\nok"},
		{"header section over 64 KiB", "HTTP/1.1 200 OK\r\n" + bigTotal + "Content-Length: 2\r\n\r\nok"},
		{"error status with bad length", "HTTP/1.1 500 Oops\r\nContent-Length: x\r\n\r\nboom"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			m := newScriptedModel(t, answer(c.head, okAnswer))
			e := rawEnv(t, m.addr, 10*time.Second)
			start := time.Now()
			resp, body, err := e.tryInvoke("raw", []byte("x"))
			if err != nil {
				t.Fatalf("transport error %v (want a 424 before any answer was sent)", err)
			}
			if d := time.Since(start); d > 2*time.Second {
				t.Errorf("answer took %s: the router waited for the model instead of refusing the head", d)
			}
			mustStatus(t, resp, body, 424)
			if eb := decodeErr(t, resp, body); eb.Type != CodeModel {
				t.Errorf("%+v", eb)
			}
			if n := idleConns(e.rt, "raw"); n != 0 {
				t.Errorf("%d connections pooled after a malformed answer", n)
			}
			resp, body = e.invoke("raw", []byte("x"))
			mustStatus(t, resp, body, 200)
			if string(body) != "ok" {
				t.Errorf("next answer %q", body)
			}
		})
	}
}

// TestAdvExtraBytesDoNotPoisonPooledConnection: a model that sends more
// than its framing says (bytes past Content-Length, a body on 204/304,
// data after the chunked trailer) must not have the surplus read as the
// answer to the next request on the same connection.
func TestAdvExtraBytesDoNotPoisonPooledConnection(t *testing.T) {
	const smuggled = "HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nsmuggled"
	second := "HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nsecond"
	cases := []struct {
		name   string
		first  string
		status int
		body   string
		pause  bool // surplus written after a pause (reaches the socket, not the read buffer)
	}{
		{"past content-length", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfirst" + smuggled, 200, "first", false},
		{"past content-length, late", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfirst", 200, "first", true},
		{"garbage past content-length", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfirstXXXX", 200, "first", false},
		{"body on 204", fmt.Sprintf("HTTP/1.1 204 No Content\r\nContent-Length: %d\r\n\r\n%s", len(smuggled), smuggled), 200, "", false},
		{"body on 304", fmt.Sprintf("HTTP/1.1 304 Not Modified\r\nContent-Length: %d\r\n\r\n%s", len(smuggled), smuggled), 424, "", false},
		{"after chunked trailer", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nfirst\r\n0\r\nX-T: 1\r\n\r\n" + smuggled, 200, "first", false},
		{"after error body", "HTTP/1.1 500 Oops\r\nContent-Length: 4\r\n\r\nfail" + smuggled, 424, "", false},
		{"chunked and content-length", "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nfirst\r\n0\r\n\r\n", 200, "first", false},
		// net/http ignores Transfer-Encoding in HTTP/1.0 and would read this
		// to the close; the router refuses it rather than guess
		// (FuzzAgainstNetHTTP).
		{"HTTP/1.0 keep-alive chunked", "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nfirst\r\n0\r\n\r\n", 424, "", false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			late := make(chan struct{})
			m := newScriptedModel(t, func(n int, conn net.Conn, req *http.Request) bool {
				io.Copy(io.Discard, req.Body)
				switch n {
				case 1:
					io.WriteString(conn, c.first)
					if c.pause {
						<-late
						io.WriteString(conn, smuggled)
					}
				default:
					io.WriteString(conn, second)
				}
				return true
			})
			e := rawEnv(t, m.addr, 5*time.Second)
			resp, body := e.invoke("raw", []byte("x"))
			mustStatus(t, resp, body, c.status)
			if c.status == 200 && string(body) != c.body {
				t.Fatalf("first body %q, want %q", body, c.body)
			}
			if c.pause {
				close(late)
				time.Sleep(50 * time.Millisecond) // let the surplus reach the router's socket
			}
			for range 2 {
				resp, body = e.invoke("raw", []byte("x"))
				mustStatus(t, resp, body, 200)
				if string(body) != "second" {
					t.Fatalf("next request got %q: the surplus of the previous answer was read as its answer", body)
				}
			}
		})
	}
}

// TestAdvInformationalResponses: 100 Continue and 103 Early Hints (with
// headers) before the final answer are skipped; an endless stream of them
// is refused quickly instead of running to the model timeout.
func TestAdvInformationalResponses(t *testing.T) {
	t.Run("skipped", func(t *testing.T) {
		a := "HTTP/1.1 100 Continue\r\n\r\n" +
			"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\nContent-Length: 99\r\n\r\n" +
			"HTTP/1.1 102 Processing\r\n\r\n" +
			"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello"
		m := newScriptedModel(t, answer(a))
		e := rawEnv(t, m.addr, 5*time.Second)
		for range 3 {
			resp, body := e.invoke("raw", []byte("x"))
			mustStatus(t, resp, body, 200)
			if string(body) != "hello" || header(resp, "Content-Type") != "text/plain" {
				t.Fatalf("%q %q", body, header(resp, "Content-Type"))
			}
		}
		if n := m.conns.Load(); n != 1 {
			t.Errorf("%d connections for 3 requests: the connection was not reused", n)
		}
	})
	t.Run("endless", func(t *testing.T) {
		m := newScriptedModel(t, func(n int, c net.Conn, req *http.Request) bool {
			io.Copy(io.Discard, req.Body)
			for {
				if _, err := io.WriteString(c, "HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n"); err != nil {
					return false
				}
			}
		})
		e := rawEnv(t, m.addr, 10*time.Second)
		start := time.Now()
		resp, body := e.invoke("raw", []byte("x"))
		mustStatus(t, resp, body, 424)
		if d := time.Since(start); d > 2*time.Second {
			t.Errorf("endless 1xx answers held the request for %s", d)
		}
	})
}

// TestAdvBrokenChunkedBodies: a malformed chunked body after a 200 head
// cuts the client connection (the head is already sent); after an error
// head it is a 424. Either way the connection is not pooled.
func TestAdvBrokenChunkedBodies(t *testing.T) {
	bodies := []struct{ name, body string }{
		{"bad hex size", "zz\r\nhello\r\n0\r\n\r\n"},
		{"size overflow", "fffffffffffffffffffff\r\nhello\r\n0\r\n\r\n"},
		{"negative size", "-5\r\nhello\r\n0\r\n\r\n"},
		{"missing CRLF after data", "5\r\nhelloXX0\r\n\r\n"},
		{"short chunk then close", "a\r\nhello"},
		{"no last chunk", "5\r\nhello\r\n"},
		{"endless trailer", "5\r\nhello\r\n0\r\n" + strings.Repeat("X-T: 1\r\n", 400) + "\r\n"},
		{"chunk line too long", "5;" + strings.Repeat("e", 10000) + "\r\nhello\r\n0\r\n\r\n"},
	}
	for _, status := range []string{"200 OK", "500 Oops"} {
		for _, b := range bodies {
			t.Run(status[:3]+" "+b.name, func(t *testing.T) {
				head := "HTTP/1.1 " + status + "\r\nTransfer-Encoding: chunked\r\n\r\n"
				m := newScriptedModel(t, func(n int, c net.Conn, req *http.Request) bool {
					io.Copy(io.Discard, req.Body)
					if n == 1 {
						io.WriteString(c, head+b.body)
						return false
					}
					io.WriteString(c, okAnswer)
					return true
				})
				e := rawEnv(t, m.addr, 2*time.Second)
				resp, body, err := e.tryInvoke("raw", []byte("x"))
				switch {
				case status[0] == '2':
					if err == nil {
						t.Fatalf("client got a complete answer (%d %q) from a broken chunked body", resp.StatusCode, body)
					}
				case err != nil:
					t.Fatalf("transport error %v, want 424", err)
				default:
					mustStatus(t, resp, body, 424)
				}
				if n := idleConns(e.rt, "raw"); n != 0 {
					t.Errorf("%d connections pooled", n)
				}
				resp, body = e.invoke("raw", []byte("x"))
				mustStatus(t, resp, body, 200)
			})
		}
	}
}

// TestAdvModelAnswersAndCloses: a model that closes after every answer
// without saying so (no "Connection: close") costs nothing but a dial.
func TestAdvModelAnswersAndCloses(t *testing.T) {
	m := newScriptedModel(t, func(n int, c net.Conn, req *http.Request) bool {
		io.Copy(io.Discard, req.Body)
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		return false
	})
	e := rawEnv(t, m.addr, 5*time.Second)
	for i := range 5 {
		resp, body := e.invoke("raw", []byte("x"))
		mustStatus(t, resp, body, 200)
		if string(body) != "ok" {
			t.Fatalf("request %d: %q", i, body)
		}
		time.Sleep(5 * time.Millisecond)
	}
	if n := m.reqs.Load(); n != 5 {
		t.Errorf("model saw %d requests for 5 invocations", n)
	}
}

// TestAdvEarlyAnswerBeforeBodySent: a model that refuses a large body from
// its head alone (413, then close without reading the rest) has its
// answer relayed as a ModelError, and the request is not sent again.
func TestAdvEarlyAnswerBeforeBodySent(t *testing.T) {
	m := newScriptedModel(t, func(n int, c net.Conn, req *http.Request) bool {
		msg := "payload too large"
		fmt.Fprintf(c, "HTTP/1.1 413 Payload Too Large\r\nContent-Type: text/plain\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s", len(msg), msg)
		// Close with most of the body unread, as servers that answer early
		// do after a short grace: the kernel resets the connection.
		c.(*net.TCPConn).CloseWrite()
		time.Sleep(20 * time.Millisecond)
		return false
	})
	e := rawEnv(t, m.addr, 5*time.Second)
	resp, body := e.invoke("raw", bytes.Repeat([]byte("x"), MaxBodyBytes))
	mustStatus(t, resp, body, 424)
	eb := decodeErr(t, resp, body)
	if eb.OriginalStatusCode != 413 || eb.OriginalMessage != "payload too large" {
		t.Errorf("model's early answer lost: %+v", eb)
	}
	if n := m.reqs.Load(); n != 1 {
		t.Errorf("model received the request %d times", n)
	}
}

// TestAdvHalfReadBodyClosesConnection: when the client hangs up mid-body,
// or the model stalls mid-body past the timeout, the upstream connection
// is closed (the model sees EOF), never pooled.
func TestAdvHalfReadBodyClosesConnection(t *testing.T) {
	for _, mode := range []string{"client hangs up", "model stalls"} {
		t.Run(mode, func(t *testing.T) {
			closed := make(chan struct{}, 1)
			m := newScriptedModel(t, func(n int, c net.Conn, req *http.Request) bool {
				io.Copy(io.Discard, req.Body)
				io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 6000000\r\n\r\n") // under the 6 MB answer cap
				chunk := bytes.Repeat([]byte("y"), 64<<10)
				if mode == "client hangs up" {
					for {
						if _, err := c.Write(chunk); err != nil {
							closed <- struct{}{}
							return false
						}
					}
				}
				c.Write(chunk)
				c.SetReadDeadline(time.Now().Add(5 * time.Second))
				if _, err := c.Read(make([]byte, 1)); err == io.EOF {
					closed <- struct{}{}
				}
				return false
			})
			e := rawEnv(t, m.addr, 300*time.Millisecond)
			req, _ := http.NewRequest("POST", e.srv.URL+"/endpoints/raw/invocations", strings.NewReader("x"))
			resp, err := e.client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			if mode == "client hangs up" {
				io.ReadFull(resp.Body, make([]byte, 100<<10))
				resp.Body.Close()
				e.tr.CloseIdleConnections()
			} else {
				if _, err := io.ReadAll(resp.Body); err == nil {
					t.Error("a stalled, cut body reached the client as complete")
				}
				resp.Body.Close()
			}
			select {
			case <-closed:
			case <-time.After(5 * time.Second):
				t.Fatal("the router kept the upstream connection open")
			}
			if n := idleConns(e.rt, "raw"); n != 0 {
				t.Errorf("%d connections pooled", n)
			}
		})
	}
}

// rawRouterRequest writes raw bytes to the router and returns its answer.
func rawRouterRequest(t *testing.T, e *testEnv, raw string) *http.Response {
	t.Helper()
	c, err := net.Dial("tcp", e.srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	io.WriteString(c, raw)
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	for err == nil && resp.StatusCode == http.StatusContinue {
		resp, err = http.ReadResponse(br, nil)
	}
	if err != nil {
		t.Fatalf("no answer: %v", err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp
}

// TestAdvRequestSmugglingAndInjection: what reaches the model is framed by
// the router alone (its own Content-Length, no Transfer-Encoding), carries
// only the four SageMaker headers and Host, and no client header can add
// a line to it.
func TestAdvRequestSmugglingAndInjection(t *testing.T) {
	m := newScriptedModel(t, answer(okAnswer))
	e := rawEnv(t, m.addr, 5*time.Second)
	smuggle := "GET /admin HTTP/1.1\r\nHost: x\r\n\r\n"

	cases := []struct {
		name  string
		raw   string
		codes []int // acceptable answers
		body  string
	}{
		{"TE and CL", "POST /endpoints/raw/invocations HTTP/1.1\r\nHost: r\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n" + smuggle,
			[]int{200, 400}, "hello"},
		{"CL with a request in the body", "POST /endpoints/raw/invocations HTTP/1.1\r\nHost: r\r\nContent-Length: " + fmt.Sprint(len(smuggle)) + "\r\n\r\n" + smuggle,
			[]int{200}, smuggle},
		{"TE with a request in the body", "POST /endpoints/raw/invocations HTTP/1.1\r\nHost: r\r\nTransfer-Encoding: chunked\r\n\r\n" + fmt.Sprintf("%x\r\n%s\r\n0\r\n\r\n", len(smuggle), smuggle),
			[]int{200}, smuggle},
		{"obfuscated TE", "POST /endpoints/raw/invocations HTTP/1.1\r\nHost: r\r\nContent-Length: 5\r\nTransfer-Encoding: xchunked\r\n\r\nhello",
			[]int{400, 501}, ""},
		{"two content lengths", "POST /endpoints/raw/invocations HTTP/1.1\r\nHost: r\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
			[]int{400}, ""},
		{"CR in custom attributes", "POST /endpoints/raw/invocations HTTP/1.1\r\nHost: r\r\nContent-Length: 1\r\nX-Amzn-SageMaker-Custom-Attributes: a\rX-Injected: 1\r\n\r\nx",
			[]int{400}, ""},
		{"NUL in content type", "POST /endpoints/raw/invocations HTTP/1.1\r\nHost: r\r\nContent-Length: 1\r\nContent-Type: text/\x00csv\r\n\r\nx",
			[]int{400}, ""},
		{"control char in content type", "POST /endpoints/raw/invocations HTTP/1.1\r\nHost: r\r\nContent-Length: 1\r\nContent-Type: text/\x01csv\r\n\r\nx",
			[]int{400}, ""},
		{"obs-fold in content type", "POST /endpoints/raw/invocations HTTP/1.1\r\nHost: r\r\nContent-Length: 1\r\nContent-Type: text/csv\r\n X-Injected: 1\r\n\r\nx",
			[]int{200, 400}, "x"},
		{"hop-by-hop and credentials", "POST /endpoints/raw/invocations HTTP/1.1\r\nHost: evil.example\r\nContent-Length: 1\r\nConnection: close, X-Drop\r\nX-Drop: 1\r\nTE: trailers\r\nUpgrade: h2c\r\nProxy-Authorization: secret\r\nAuthorization: AWS4-HMAC-SHA256 x\r\nCookie: c=1\r\nX-Forwarded-For: 1.2.3.4\r\nExpect: 100-continue\r\nContent-Type: text/csv\r\n\r\nx",
			[]int{200}, "x"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			m.mu.Lock()
			m.seen = nil
			m.mu.Unlock()
			resp := rawRouterRequest(t, e, c.raw)
			ok := false
			for _, code := range c.codes {
				ok = ok || resp.StatusCode == code
			}
			if !ok {
				t.Fatalf("status %d, want one of %v", resp.StatusCode, c.codes)
			}
			time.Sleep(20 * time.Millisecond)
			m.mu.Lock()
			seen := append([]*http.Request(nil), m.seen...)
			m.mu.Unlock()
			if resp.StatusCode != 200 {
				if len(seen) != 0 {
					t.Fatalf("refused request still reached the model: %+v", seen[0])
				}
				return
			}
			if len(seen) != 1 {
				t.Fatalf("model saw %d requests", len(seen))
			}
			r := seen[0]
			if r.Method != "POST" || r.URL.Path != "/invocations" || r.Host != m.addr {
				t.Errorf("model saw %s %s Host %q", r.Method, r.URL.Path, r.Host)
			}
			if len(r.TransferEncoding) != 0 || r.ContentLength != int64(len(c.body)) {
				t.Errorf("model saw framing TE %v CL %d", r.TransferEncoding, r.ContentLength)
			}
			var names []string
			for k := range r.Header {
				names = append(names, k)
			}
			sort.Strings(names)
			for _, k := range names {
				switch k {
				case "Content-Length", "Content-Type", "Accept", "X-Amzn-Sagemaker-Custom-Attributes", "X-Amzn-Sagemaker-Inference-Id":
				default:
					t.Errorf("header %s reached the model", k)
				}
			}
		})
	}
	// The model's recorded bodies were drained by answer; check the one
	// that matters most directly: nothing after a request's body is ever
	// taken for another request.
	if n := m.reqs.Load(); n > int32(len(cases)) {
		t.Errorf("model saw %d requests for %d cases", n, len(cases))
	}
}

// TestAdvChunkedRequestBodyAtLimit: a chunked request body of exactly the
// limit passes whole; one byte more is 413 (TestFaults covers more).
func TestAdvChunkedRequestBodyAtLimit(t *testing.T) {
	var got atomic.Int64
	m := newScriptedModel(t, func(n int, c net.Conn, req *http.Request) bool {
		k, _ := io.Copy(io.Discard, req.Body)
		got.Store(k)
		io.WriteString(c, okAnswer)
		return true
	})
	e := rawEnv(t, m.addr, 5*time.Second)
	req, _ := http.NewRequest("POST", e.srv.URL+"/endpoints/raw/invocations", io.MultiReader(bytes.NewReader(make([]byte, MaxBodyBytes))))
	req.ContentLength = -1
	resp, err := e.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	mustStatus(t, resp, b, 200)
	if got.Load() != MaxBodyBytes {
		t.Errorf("model got %d bytes", got.Load())
	}
}

// TestAdvShadowAnswersAreNotBuffered: a shadow variant's answers are
// discarded, so reading them must not allocate their size: 256 shadow
// requests in flight with 6 MB answers would otherwise hold 1.5 GB.
func TestAdvShadowAnswersAreNotBuffered(t *testing.T) {
	big := []byte(fmt.Sprintf("HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n", MaxBodyBytes-1))
	big = append(big, bytes.Repeat([]byte("s"), MaxBodyBytes-1)...)
	shadow := newScriptedModel(t, func(n int, c net.Conn, req *http.Request) bool {
		io.Copy(io.Discard, req.Body)
		_, err := c.Write(big)
		return err == nil
	})
	prod := newScriptedModel(t, answer(okAnswer))
	e := newEnv(t, Config{})
	routes := oneGen("demo", "prod", 1)
	routes.Shadow = []Shadow{{Variant: "shadow", Generation: 1, SamplingPercent: 100}}
	e.rt.SetRoutes("demo", routes)
	e.rt.SetInstances("demo", []Instance{
		inst("p", prod.addr, "prod", 1),
		{ID: "s", Address: shadow.addr, Variant: "shadow", Generation: 1, Shadow: true},
	})
	// Warm up connections and pools.
	e.invoke("demo", []byte("x"))
	waitFor(t, 5*time.Second, "warm-up shadow done", func() bool { return e.rt.shadowInFlight.Load() == 0 && shadow.reqs.Load() == 1 })
	time.Sleep(20 * time.Millisecond)

	const n = 4
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for range n {
		resp, body := e.invoke("demo", []byte("x"))
		mustStatus(t, resp, body, 200)
		waitFor(t, 5*time.Second, "shadow done", func() bool { return e.rt.shadowInFlight.Load() == 0 })
	}
	runtime.ReadMemStats(&after)
	if alloc := after.TotalAlloc - before.TotalAlloc; alloc > n*MaxBodyBytes/4 {
		t.Errorf("%d shadow answers of 6 MB allocated %d MB", n, alloc>>20)
	}
	if shadow.reqs.Load() != n+1 {
		t.Errorf("shadow saw %d requests", shadow.reqs.Load())
	}
	if shadow.conns.Load() != 1 {
		t.Errorf("shadow connections %d: a fully read answer should leave it pooled", shadow.conns.Load())
	}
}

func openFDs(t *testing.T) int {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skip("no /proc/self/fd")
	}
	return len(ents)
}

// TestAdvNoLeaksUnderFaults runs a batch of faults through one router and
// checks that goroutines and file descriptors return to where they were.
func TestAdvNoLeaksUnderFaults(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("counts descriptors through /proc")
	}
	checkG := goroutineCheck(t)
	fdsBefore := openFDs(t)
	t.Run("faults", func(t *testing.T) {
		answers := []string{
			"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhel",                             // cut short
			"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",                 // bad chunk
			"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokEXTRA",                         // surplus
			"HTTP/1.1 500 x\r\nContent-Length: 100000\r\n\r\n" + strings.Repeat("e", 1e5), // long error
			"garbage\r\n\r\n",
			"HTTP/1.1 200 OK\r\n", // truncated head
			okAnswer,
		}
		m := newScriptedModel(t, func(n int, c net.Conn, req *http.Request) bool {
			io.Copy(io.Discard, req.Body)
			a := answers[(n-1)%len(answers)]
			io.WriteString(c, a)
			return a == okAnswer || n%2 == 0
		})
		stall := newScriptedModel(t, func(n int, c net.Conn, req *http.Request) bool {
			io.Copy(io.Discard, req.Body)
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nab")
			time.Sleep(time.Second)
			return false
		})
		e := newEnv(t, Config{OutlierFailures: -1})
		for name, addr := range map[string]string{"m": m.addr, "stall": stall.addr} {
			r := oneGen(name, "v", 1)
			r.Timeout = Duration(200 * time.Millisecond)
			e.rt.SetRoutes(name, r)
			e.rt.SetInstances(name, []Instance{inst(name, addr, "v", 1)})
		}
		var wg sync.WaitGroup
		for range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for range 2 * len(answers) {
					e.tryInvoke("m", []byte("x"))
				}
				e.tryInvoke("stall", []byte("x"))
			}()
		}
		wg.Wait()
	})
	checkG()
	// Descriptors close asynchronously only in the sense that the test
	// servers' goroutines must have exited, which checkG waited for.
	if fds := openFDs(t); fds > fdsBefore {
		t.Errorf("file descriptors: %d before, %d after", fdsBefore, fds)
	}
}

// holdSlowClients opens n connections that announce a body of size bytes
// and send none of it, as a slowloris client does, and waits until the
// router is reading their bodies.
func holdSlowClients(t *testing.T, e *testEnv, n int, size int64) {
	t.Helper()
	for range n {
		c, err := net.Dial("tcp", e.srv.Listener.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		fmt.Fprintf(c, "POST /endpoints/raw/invocations HTTP/1.1\r\nHost: r\r\nContent-Length: %d\r\n\r\nabc", size)
	}
	time.Sleep(100 * time.Millisecond)
}

// TestAdvSlowBodiesDoNotExhaustBodyBudget: clients that announce large
// bodies and send nothing must not hold the body-memory budget they have
// not used; other clients keep being served.
func TestAdvSlowBodiesDoNotExhaustBodyBudget(t *testing.T) {
	m := newScriptedModel(t, answer(okAnswer))
	e := newEnv(t, Config{MaxBufferedBytes: 8 << 20})
	e.rt.SetRoutes("raw", oneGen("raw", "v", 1))
	e.rt.SetInstances("raw", []Instance{inst("r", m.addr, "v", 1)})
	holdSlowClients(t, e, 4, 2<<20) // the whole 8 MB budget announced, 12 bytes sent
	resp, body := e.invoke("raw", bytes.Repeat([]byte("x"), 1<<20))
	mustStatus(t, resp, body, 200)
}

// TestAdvSlowBodiesDoNotExhaustInFlight: the same with the concurrency
// limit, which is for invocations at the models.
func TestAdvSlowBodiesDoNotExhaustInFlight(t *testing.T) {
	m := newScriptedModel(t, answer(okAnswer))
	e := newEnv(t, Config{MaxInFlight: 4})
	e.rt.SetRoutes("raw", oneGen("raw", "v", 1))
	e.rt.SetInstances("raw", []Instance{inst("r", m.addr, "v", 1)})
	holdSlowClients(t, e, 4, 100)
	resp, body := e.invoke("raw", []byte("x"))
	mustStatus(t, resp, body, 200)
}

// TestAdvBodyBudgetStillBounds: bodies that are actually sent still count,
// and a body that cannot be buffered within the budget is a 429
// ThrottlingException with Retry-After (which the AWS SDKs retry with
// back-off), counted.
func TestAdvBodyBudgetStillBounds(t *testing.T) {
	m := newScriptedModel(t, answer(okAnswer))
	e := newEnv(t, Config{MaxBufferedBytes: 4 << 20})
	e.rt.SetRoutes("raw", oneGen("raw", "v", 1))
	e.rt.SetInstances("raw", []Instance{inst("r", m.addr, "v", 1)})
	resp, body := e.invoke("raw", bytes.Repeat([]byte("x"), 5<<20))
	mustStatus(t, resp, body, 429)
	if typ, ra := header(resp, "X-Amzn-ErrorType"), header(resp, "Retry-After"); typ != CodeThrottling || ra == "" {
		t.Errorf("429 with error type %q, Retry-After %q", typ, ra)
	}
	if n := e.metricLine(`serai_router_rejected_requests_total{reason="body_budget"}`); n != "1" {
		t.Errorf("body_budget rejections counted %q, want 1", n)
	}
	resp, body = e.invoke("raw", bytes.Repeat([]byte("x"), 1<<20))
	mustStatus(t, resp, body, 200)
	if n := e.rt.buffered.Load(); n != 0 {
		t.Errorf("%d bytes still charged to the body budget", n)
	}
}

// TestAdvShadowCopiesCountAgainstBodyBudget: each mirrored copy of a body
// is memory too; when the budget cannot hold it the sample is dropped and
// the client is served as usual.
func TestAdvShadowCopiesCountAgainstBodyBudget(t *testing.T) {
	prod := newScriptedModel(t, answer(okAnswer))
	shadow := newScriptedModel(t, answer(okAnswer))
	e := newEnv(t, Config{MaxBufferedBytes: 3 << 20})
	routes := oneGen("demo", "prod", 1)
	routes.Shadow = []Shadow{{Variant: "shadow", Generation: 1, SamplingPercent: 100}}
	e.rt.SetRoutes("demo", routes)
	e.rt.SetInstances("demo", []Instance{
		inst("p", prod.addr, "prod", 1),
		{ID: "s", Address: shadow.addr, Variant: "shadow", Generation: 1, Shadow: true},
	})
	// 1 MB sits in a 2 MB pooled buffer: the copy would take the budget to 4 MB.
	resp, body := e.invoke("demo", bytes.Repeat([]byte("x"), 1<<20))
	mustStatus(t, resp, body, 200)
	waitFor(t, 5*time.Second, "shadow settled", func() bool { return e.rt.shadowInFlight.Load() == 0 })
	if n := shadow.reqs.Load(); n != 0 {
		t.Errorf("shadow got %d copies beyond the body budget", n)
	}
	if n := e.rt.buffered.Load(); n != 0 {
		t.Errorf("%d bytes still charged", n)
	}
	// A small body still fits, copy included.
	resp, body = e.invoke("demo", []byte("x"))
	mustStatus(t, resp, body, 200)
	waitFor(t, 5*time.Second, "small shadow copy sent", func() bool { return shadow.reqs.Load() == 1 })
}
