package router

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// TestFaults drives every failure the issue lists through one router and
// checks that it answers each one SageMaker's way, stays up, and leaks no
// goroutines.
func TestFaults(t *testing.T) {
	check := goroutineCheck(t)

	// A subtest, so the servers it starts are closed (by its cleanups)
	// before the goroutine count is taken.
	t.Run("scenario", func(t *testing.T) {
		refused := closedAddr(t)
		release := make(chan struct{})
		hang := model(t, "hang", func(w http.ResponseWriter, r *http.Request) {
			select {
			case <-release:
			case <-r.Context().Done():
			}
		})
		t.Cleanup(func() { close(release) })
		boom := model(t, "boom", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(500)
			w.Write([]byte(`{"error":"kaput"}`))
		})
		good := model(t, "good", nil)

		e := newEnv(t, Config{OutlierFailures: -1})
		set := func(name string, insts ...Instance) {
			r := oneGen(name, "v", 1)
			r.Timeout = Duration(300 * time.Millisecond)
			e.rt.SetRoutes(name, r)
			e.rt.SetInstances(name, insts)
		}
		set("refused", inst("r1", refused, "v", 1))
		set("refused-then-good", inst("r1", refused, "v", 1), inst("g1", addrOf(good), "v", 1))
		set("hang", inst("h1", addrOf(hang), "v", 1))
		set("boom", inst("b1", addrOf(boom), "v", 1))
		set("good", inst("g1", addrOf(good), "v", 1))

		t.Run("refused", func(t *testing.T) {
			resp, body := e.invoke("refused", []byte("x"))
			mustStatus(t, resp, body, 503)
			if eb := decodeErr(t, resp, body); eb.Type != CodeServiceUnavailable {
				t.Errorf("%+v", eb)
			}
		})
		t.Run("refused instance is retried on another", func(t *testing.T) {
			for range 20 {
				resp, body := e.invoke("refused-then-good", []byte("x"))
				mustStatus(t, resp, body, 200)
			}
		})
		t.Run("hang past timeout", func(t *testing.T) {
			start := time.Now()
			resp, body := e.invoke("hang", []byte("x"))
			took := time.Since(start)
			mustStatus(t, resp, body, 424)
			eb := decodeErr(t, resp, body)
			if eb.Type != CodeModel || !strings.Contains(eb.Message, "timed out after 300ms") {
				t.Errorf("%+v", eb)
			}
			if took > 3*time.Second {
				t.Errorf("timeout answer took %s", took)
			}
		})
		t.Run("model 500", func(t *testing.T) {
			resp, body := e.invoke("boom", []byte("x"))
			mustStatus(t, resp, body, 424)
			eb := decodeErr(t, resp, body)
			if eb.Type != CodeModel || eb.OriginalStatusCode != 500 || eb.OriginalMessage != `{"error":"kaput"}` {
				t.Errorf("%+v", eb)
			}
			if !strings.Contains(eb.Message, "(500)") {
				t.Errorf("message %q", eb.Message)
			}
		})
		t.Run("body one byte over the limit", func(t *testing.T) {
			resp, body := e.invoke("good", bytes.Repeat([]byte("x"), MaxBodyBytes+1))
			mustStatus(t, resp, body, 413)
			if eb := decodeErr(t, resp, body); eb.Type != CodeValidation {
				t.Errorf("%+v", eb)
			}
			resp, body = e.invoke("good", bytes.Repeat([]byte("x"), MaxBodyBytes))
			mustStatus(t, resp, body, 200)
		})
		t.Run("oversized body refused before it is sent", func(t *testing.T) {
			// Announce 6,291,457 bytes, send none: the answer must come
			// from the headers alone.
			c, err := net.Dial("tcp", e.srv.Listener.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(5 * time.Second))
			fmt.Fprintf(c, "POST /endpoints/good/invocations HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n", MaxBodyBytes+1)
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			if err != nil {
				t.Fatalf("no answer before the body: %v", err)
			}
			resp.Body.Close()
			if resp.StatusCode != 413 {
				t.Errorf("status %d", resp.StatusCode)
			}
		})
		t.Run("chunked body over the limit", func(t *testing.T) {
			req, _ := http.NewRequest("POST", e.srv.URL+"/endpoints/good/invocations",
				io.MultiReader(bytes.NewReader(make([]byte, MaxBodyBytes)), strings.NewReader("xx")))
			req.ContentLength = -1
			resp, err := e.client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			mustStatus(t, resp, b, 413)
		})
		t.Run("client goes away mid-request", func(t *testing.T) {
			c, err := net.Dial("tcp", e.srv.Listener.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			fmt.Fprintf(c, "POST /endpoints/hang/invocations HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\nx")
			time.Sleep(50 * time.Millisecond)
			c.Close()
		})
		t.Run("still serving", func(t *testing.T) {
			resp, body := e.invoke("good", []byte("x"))
			mustStatus(t, resp, body, 200)
		})
	})

	check()
}

// rawModel serves one canned HTTP exchange per request on raw TCP, for
// framings net/http servers do not produce on demand.
func rawModel(t *testing.T, closeAfter bool, answer func(n int) string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	var count atomic.Int32
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				br := bufio.NewReader(c)
				for {
					req, err := http.ReadRequest(br)
					if err != nil {
						return
					}
					io.Copy(io.Discard, req.Body)
					a := answer(int(count.Add(1)))
					if _, err := io.WriteString(c, a); err != nil {
						return
					}
					if closeAfter {
						return
					}
				}
			}()
		}
	}()
	return ln.Addr().String()
}

func TestUpstreamFramings(t *testing.T) {
	cases := []struct {
		name   string
		answer string
		close  bool
		status int
		body   string
	}{
		{"content-length", "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello", false, 200, "hello"},
		{"chunked with trailer", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nhel\r\n2\r\nlo\r\n0\r\nX-Trailer: 1\r\n\r\n", false, 200, "hello"},
		{"close-delimited", "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nhello", true, 200, "hello"},
		{"connection close", "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 5\r\n\r\nhello", true, 200, "hello"},
		{"1xx first", "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", false, 200, "hello"},
		{"204", "HTTP/1.1 204 No Content\r\n\r\n", false, 200, ""},
		{"model 404 chunked", "HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nnope\r\n0\r\n\r\n", false, 424, ""},
		{"garbage", "SMTP ready\r\n\r\n", true, 424, ""},
		{"truncated head", "HTTP/1.1 200 OK\r\nContent-Le", true, 424, ""},
		{"conflicting lengths", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!", false, 424, ""},
	}
	e := newEnv(t, Config{OutlierFailures: -1})
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			addr := rawModel(t, c.close, func(int) string { return c.answer })
			e.rt.SetRoutes("raw", oneGen("raw", "v", 1))
			e.rt.SetInstances("raw", []Instance{inst("r", addr, "v", 1)})
			for range 3 { // reuse of the connection must work too
				resp, body := e.invoke("raw", []byte("x"))
				mustStatus(t, resp, body, c.status)
				if c.status == 200 && string(body) != c.body {
					t.Errorf("body %q, want %q", body, c.body)
				}
			}
		})
	}
}

func TestTruncatedModelBodyAbortsClientConnection(t *testing.T) {
	addr := rawModel(t, true, func(int) string {
		return "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n" // then close
	})
	e := newEnv(t, Config{OutlierFailures: -1})
	e.rt.SetRoutes("raw", oneGen("raw", "v", 1))
	e.rt.SetInstances("raw", []Instance{inst("r", addr, "v", 1)})
	req, _ := http.NewRequest("POST", e.srv.URL+"/endpoints/raw/invocations", strings.NewReader("x"))
	resp, err := e.client.Do(req)
	if err != nil {
		return // aborted before headers: fine
	}
	_, err = io.ReadAll(resp.Body)
	resp.Body.Close()
	if err == nil {
		t.Fatal("a cut model body reached the client as a complete answer")
	}
}

func TestIdleConnectionClosedByModelIsNotAnError(t *testing.T) {
	m := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Write([]byte("a"))
	}))
	m.Config.IdleTimeout = 30 * time.Millisecond // gunicorn-style short keep-alive
	m.Start()
	t.Cleanup(m.Close)
	e := newEnv(t, Config{OutlierFailures: -1})
	e.rt.SetRoutes("demo", oneGen("demo", "a", 1))
	e.rt.SetInstances("demo", []Instance{inst("i1", addrOf(m), "a", 1)})
	for range 5 {
		resp, body := e.invoke("demo", []byte("x"))
		mustStatus(t, resp, body, 200)
		time.Sleep(60 * time.Millisecond)
	}
}

func TestOutlierEjectionAndReadmission(t *testing.T) {
	good := model(t, "good", nil)
	var badHits atomic.Int32
	bad := model(t, "bad", func(w http.ResponseWriter, r *http.Request) {
		badHits.Add(1)
		http.Error(w, "overloaded", http.StatusServiceUnavailable)
	})
	e := newEnv(t, Config{OutlierFailures: 3, OutlierBaseEjection: time.Second})
	e.rt.SetRoutes("demo", oneGen("demo", "a", 1))
	e.rt.SetInstances("demo", []Instance{inst("good", addrOf(good), "a", 1), inst("bad", addrOf(bad), "a", 1)})
	var badInst *instance
	for _, in := range e.rt.table.Load().endpoints["demo"].slots[0].insts {
		if in.id == "bad" {
			badInst = in
		}
	}

	// Three consecutive 503s from the bad instance eject it.
	waitFor(t, 5*time.Second, "bad instance ejected", func() bool {
		e.invoke("demo", []byte("x"))
		return badInst.ejected.Load()
	})
	if n := len(e.rt.table.Load().endpoints["demo"].slots[0].insts); n != 1 {
		t.Fatalf("%d instances routable after ejection", n)
	}
	hits := badHits.Load()
	for range 20 {
		if !badInst.ejected.Load() {
			break // re-admitted already on a slow machine: nothing to check
		}
		resp, body := e.invoke("demo", []byte("x"))
		mustStatus(t, resp, body, 200)
	}
	if badInst.ejected.Load() && badHits.Load() != hits {
		t.Fatalf("ejected instance still got %d requests", badHits.Load()-hits)
	}
	waitFor(t, 5*time.Second, "bad instance re-admitted", func() bool {
		return len(e.rt.table.Load().endpoints["demo"].slots[0].insts) == 2
	})
}

func TestAllInstancesEjectedStillRoutes(t *testing.T) {
	addr := closedAddr(t)
	e := newEnv(t, Config{OutlierFailures: 1, OutlierBaseEjection: time.Minute})
	e.rt.SetRoutes("demo", oneGen("demo", "a", 1))
	e.rt.SetInstances("demo", []Instance{inst("x", addr, "a", 1)})
	resp, body := e.invoke("demo", []byte("x"))
	mustStatus(t, resp, body, 503)
	// Ejected, but the only instance: it is still tried (panic routing),
	// so the answer stays "could not connect" rather than turning into a
	// hard 503 for the whole ejection period after it recovers.
	if ep := e.rt.table.Load().endpoints["demo"]; len(ep.slots) != 1 || !ep.slots[0].insts[0].ejected.Load() {
		t.Fatalf("expected one degraded slot, got %+v", ep.slots)
	}
}

func TestShadowMirrorsWithoutAffectingClient(t *testing.T) {
	prod := model(t, "prod", nil)
	release := make(chan struct{})
	var shadowHits atomic.Int32
	shadowSaw := make(chan string, 100)
	shadow := model(t, "shadow", func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		shadowHits.Add(1)
		shadowSaw <- string(b)
		select { // slower than the client is willing to wait
		case <-release:
		case <-r.Context().Done():
		}
		w.Write([]byte("shadow answer"))
	})
	e := newEnv(t, Config{})
	routes := oneGen("demo", "prod", 1)
	routes.Shadow = []Shadow{{Variant: "shadow", Generation: 1, SamplingPercent: 100}}
	e.rt.SetRoutes("demo", routes)
	e.rt.SetInstances("demo", []Instance{
		inst("p", addrOf(prod), "prod", 1),
		{ID: "s", Address: addrOf(shadow), Variant: "shadow", Generation: 1, Shadow: true},
	})
	for i := range 5 {
		start := time.Now()
		resp, body := e.invoke("demo", []byte(fmt.Sprint("payload-", i)))
		mustStatus(t, resp, body, 200)
		if string(body) != "prod" {
			t.Fatalf("client got %q", body)
		}
		if d := time.Since(start); d > time.Second {
			t.Fatalf("shadow slowed the client down: %s", d)
		}
	}
	waitFor(t, 5*time.Second, "shadow received all mirrors", func() bool { return shadowHits.Load() == 5 })
	for range 5 {
		if s := <-shadowSaw; !strings.HasPrefix(s, "payload-") {
			t.Errorf("shadow saw %q", s)
		}
	}
	close(release)
	waitFor(t, 5*time.Second, "shadow requests done", func() bool { return e.rt.shadowInFlight.Load() == 0 })
}

// TestLargeAnswersRelayed: answers past the 8 KiB read buffer take the
// direct-read path of relayFixed; they arrive whole, leave the connection
// reusable, and a model that stops mid-body cuts the client's connection.
func TestLargeAnswersRelayed(t *testing.T) {
	big := bytes.Repeat([]byte("0123456789abcdef"), 300<<10/16)
	m := model(t, "big", func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Length", fmt.Sprint(len(big)))
		w.Write(big)
	})
	e := newEnv(t, Config{OutlierFailures: -1})
	e.rt.SetRoutes("big", oneGen("big", "v", 1))
	e.rt.SetInstances("big", []Instance{inst("b", addrOf(m), "v", 1)})
	for range 3 {
		resp, body := e.invoke("big", []byte("x"))
		mustStatus(t, resp, body, 200)
		if !bytes.Equal(body, big) {
			t.Fatalf("body of %d bytes differs from the model's %d", len(body), len(big))
		}
	}
	if n := idleConns(e.rt, "big"); n != 1 {
		t.Errorf("%d idle connections after three sequential answers, want 1", n)
	}

	cut := rawModel(t, true, func(int) string {
		return fmt.Sprintf("HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(big), big[:len(big)/2])
	})
	e.rt.SetRoutes("cut", oneGen("cut", "v", 1))
	e.rt.SetInstances("cut", []Instance{inst("c", cut, "v", 1)})
	req, _ := http.NewRequest("POST", e.srv.URL+"/endpoints/cut/invocations", strings.NewReader("x"))
	resp, err := e.client.Do(req)
	if err != nil {
		return // aborted before the head reached the client: fine
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err == nil {
		t.Fatalf("a cut %d-byte answer reached the client as a complete %d-byte one", len(big), len(b))
	}
}
