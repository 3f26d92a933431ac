package router

import (
	"context"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// busyConns counts the upstream connections the router has out of its
// pools, over every live instance.
func busyConns(rt *Router) int {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	n := 0
	for _, live := range rt.live {
		for _, in := range live {
			in.pool.mu.Lock()
			n += len(in.pool.busy)
			in.pool.mu.Unlock()
		}
	}
	return n
}

// hangingModel answers "hang" once release is closed; got receives each
// request as it arrives.
func hangingModel(t *testing.T) (addr string, got chan struct{}, release chan struct{}) {
	got, release = make(chan struct{}, 16), make(chan struct{})
	m := model(t, "hang", func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		got <- struct{}{}
		select {
		case <-release:
			w.Write([]byte("hang"))
		case <-r.Context().Done():
		}
	})
	t.Cleanup(func() {
		select {
		case <-release:
		default:
			close(release)
		}
	})
	return addrOf(m), got, release
}

// A request waiting on an instance that leaves the table, which has
// acknowledged none of it (as after its link was cut), is sent once to
// another instance and answered from there.
func TestRescueUnacknowledgedRequest(t *testing.T) {
	hang, got, _ := hangingModel(t)
	good := model(t, "good", nil)
	e := newEnv(t, Config{})
	e.rt.up.ackGrace = 20 * time.Millisecond
	// The kernel's count, except that the hanging instance "acknowledged"
	// nothing: loopback cannot lose a segment.
	var asked atomic.Int64
	e.rt.up.bytesAcked = func(pc *pconn) (uint64, bool) {
		if pc.pool.addr == hang {
			asked.Add(1)
			return pc.sentBefore.Load() + 1, true // the SYN
		}
		return kernelBytesAcked(pc)
	}
	e.rt.SetRoutes("ep", oneGen("ep", "v", 1))
	e.rt.SetInstances("ep", []Instance{inst("h", hang, "v", 1)})

	type answer struct {
		code int
		body string
	}
	done := make(chan answer, 1)
	go func() {
		resp, body := e.invoke("ep", []byte("x"))
		done <- answer{resp.StatusCode, string(body)}
	}()
	<-got
	start := time.Now()
	e.rt.SetInstances("ep", []Instance{inst("g", addrOf(good), "v", 1)})
	select {
	case a := <-done:
		if a.code != 200 || a.body != "good" {
			t.Fatalf("rescued request: %d %q, want 200 from good", a.code, a.body)
		}
		t.Logf("answered by the other instance %v after the first left", time.Since(start).Round(time.Millisecond))
	case <-time.After(10 * time.Second):
		t.Fatal("the request was not rescued")
	}
	if asked.Load() == 0 {
		t.Error("the kernel's count was never asked")
	}
	waitFor(t, 5*time.Second, "no connection left out of a pool", func() bool { return busyConns(e.rt) == 0 })
}

// A request the departing instance acknowledged stays with it (the model
// may be running it) and is answered by it: here the kernel's real count
// is read.
func TestRescueLeavesAcknowledgedRequest(t *testing.T) {
	hang, got, release := hangingModel(t)
	good := model(t, "good", nil)
	e := newEnv(t, Config{})
	e.rt.up.ackGrace = 20 * time.Millisecond
	e.rt.SetRoutes("ep", oneGen("ep", "v", 1))
	e.rt.SetInstances("ep", []Instance{inst("h", hang, "v", 1)})
	done := make(chan string, 1)
	go func() {
		_, body := e.invoke("ep", []byte("x"))
		done <- string(body)
	}()
	<-got
	e.rt.SetInstances("ep", []Instance{inst("g", addrOf(good), "v", 1)})
	select {
	case b := <-done:
		t.Fatalf("answered %q before the departing instance did", b)
	case <-time.After(200 * time.Millisecond): // 10 × ackGrace
	}
	close(release)
	if b := <-done; b != "hang" {
		t.Fatalf("answer %q, want the departing instance's", b)
	}
	if acked, ok := kernelBytesAcked(&pconn{}); ok || acked != 0 {
		t.Error("a connection without a socket has a count")
	}
}

// Every way an exchange ends puts its connection back or closes it: none
// stays counted as out of its pool.
func TestUpstreamConnectionsAccounted(t *testing.T) {
	boom := model(t, "boom", func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(500)
		w.Write([]byte(`{"error":"kaput"}`))
	})
	cut := model(t, "cut", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "100")
		w.Write([]byte("short"))
		c, _, _ := http.NewResponseController(w).Hijack()
		c.Close()
	})
	slow := model(t, "slow", func(w http.ResponseWriter, r *http.Request) {
		// net/http notices the router closing only once the body is read.
		io.Copy(io.Discard, r.Body)
		<-r.Context().Done()
	})
	good := model(t, "good", nil)
	e := newEnv(t, Config{OutlierFailures: -1})
	// An endpoint each, so every pool stays live to be counted.
	for name, m := range map[string]string{"boom": addrOf(boom), "cut": addrOf(cut), "slow": addrOf(slow), "good": addrOf(good)} {
		r := oneGen(name, "v", 1)
		r.Timeout = Duration(100 * time.Millisecond)
		e.rt.SetRoutes(name, r)
		e.rt.SetInstances(name, []Instance{inst("i", m, "v", 1)})
		for range 3 {
			// Some of these end in a broken answer: only the count matters.
			if resp, err := e.client.Post(e.srv.URL+"/endpoints/"+name+"/invocations", "text/plain", strings.NewReader("x")); err == nil {
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
		}
	}
	// A client that hangs up mid-request.
	c := e.dial()
	c.Write([]byte(strings.Replace(fastReq, "/ep/", "/slow/", 1)))
	time.Sleep(20 * time.Millisecond)
	c.Close()
	waitFor(t, 5*time.Second, "no connection left out of a pool", func() bool { return busyConns(e.rt) == 0 })
}

// The kernel's count the rescue relies on: on a connection this router
// opened, every byte sent and answered, plus one for the SYN.
func TestKernelBytesAcked(t *testing.T) {
	m := model(t, "a", nil)
	e := newEnv(t, Config{})
	p := newConnPool(addrOf(m), e.rt.up)
	pc, err := p.dial(context.Background(), time.Now().Add(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer p.discard(pc)
	if _, ok := kernelBytesAcked(pc); !ok {
		t.Skip("no TCP_INFO here: requests are never rescued")
	}
	for range 3 {
		var h respHead
		if _, err := pc.send(context.Background(), &outRequest{body: []byte("hello")}, &h); err != nil {
			t.Fatal(err)
		}
		if _, err := pc.relayFixed(io.Discard, h.ContentLength, nil); err != nil {
			t.Fatal(err)
		}
		if acked, _ := kernelBytesAcked(pc); acked != pc.sent+1 {
			t.Fatalf("kernel counts %d bytes acknowledged after %d sent", acked, pc.sent)
		}
	}
}
