package router

import (
	"context"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/seraihq/serai/contract"
)

// sleepy is a routing table whose variant a scales from zero (and b, when
// given a weight, does not).
func sleepy(endpoint string, timeout time.Duration, bWeight float64) *Routes {
	g := Generation{Generation: 1, Weight: 1, Variants: []Variant{{Name: "a", Weight: 1, ScaleFromZero: true}}}
	if bWeight > 0 {
		g.Variants = append(g.Variants, Variant{Name: "b", Weight: bWeight})
	}
	r := &Routes{Version: RoutesVersion, Endpoint: endpoint, Generations: []Generation{g}, Timeout: contract.Duration(timeout)}
	if err := r.Validate(); err != nil {
		panic(err)
	}
	return r
}

// metricLine returns the value text of the first /metrics line that starts
// with prefix, or "".
func (e *testEnv) metricLine(prefix string) string {
	e.t.Helper()
	resp, err := e.client.Get(e.srv.URL + "/metrics")
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, prefix) {
			return strings.TrimSpace(strings.TrimPrefix(l, prefix))
		}
	}
	return ""
}

func (e *testEnv) heldNow(endpoint string) int {
	e.rt.mu.Lock()
	q := e.rt.holds[endpoint]
	e.rt.mu.Unlock()
	if q == nil {
		return 0
	}
	return q.Len()
}

// Requests for a variant at zero are held, the wake key is written once,
// and every held request is answered by the instance that comes up; the
// held gauge and the cold-start histogram say so.
func TestScaleFromZeroHoldsUntilAnInstancePasses(t *testing.T) {
	kv := &memWakeKV{}
	e := newEnv(t, Config{Waker: &Waker{KV: kv, Router: "r1", Every: time.Minute}})
	e.rt.SetRoutes("demo", sleepy("demo", 30*time.Second, 0))

	const n = 5
	var wg sync.WaitGroup
	codes := make(chan string, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, body := e.invoke("demo", []byte("x"))
			codes <- resp.Status + " " + string(body)
		}()
	}
	waitFor(t, 10*time.Second, "all requests held", func() bool { return e.heldNow("demo") == n })
	if got := e.metricLine(`serai_router_held_requests{endpoint="demo",generation="1",variant="a"} `); got != "5" {
		t.Errorf("held gauge %q, want 5", got)
	}
	waitFor(t, 10*time.Second, "the wake key", func() bool {
		kv.mu.Lock()
		defer kv.mu.Unlock()
		return kv.n > 0
	})
	kv.mu.Lock()
	if kv.n != 1 {
		t.Errorf("%d wake writes for one burst, want 1", kv.n)
	}
	w, err := contract.DecodeWake(kv.puts[contract.WakeKey("demo", 1, "a")])
	kv.mu.Unlock()
	if err != nil || w.Router != "r1" {
		t.Fatalf("wake value %+v, %v", w, err)
	}

	time.Sleep(50 * time.Millisecond) // a measurable cold start
	a := model(t, "a", nil)
	e.rt.SetInstances("demo", []Instance{inst("a1", addrOf(a), "a", 1)})
	wg.Wait()
	close(codes)
	for c := range codes {
		if c != "200 OK a" {
			t.Errorf("held request answered %q, want 200 from a", c)
		}
	}
	if got := e.metricLine(`serai_router_cold_start_seconds_count{endpoint="demo",generation="1",variant="a"} `); got != "5" {
		t.Errorf("cold starts counted %q, want 5", got)
	}
	if got := e.metricLine(`serai_router_held_requests{endpoint="demo",generation="1",variant="a"} `); got != "0" {
		t.Errorf("held gauge after release %q, want 0", got)
	}
	if got := e.metricLine(`serai_router_hold_outcomes_total{endpoint="demo",outcome="sent"} `); got != "5" {
		t.Errorf("sent outcomes %q, want 5", got)
	}
}

// Past the queue's length a request is refused at once, past the model
// timeout a held request is refused: both ModelNotReadyException (429),
// none hangs; a client that hangs up leaves the queue.
func TestScaleFromZeroBounds(t *testing.T) {
	kv := &memWakeKV{}
	e := newEnv(t, Config{Waker: &Waker{KV: kv, Every: time.Minute}, HoldQueueLength: 2})
	e.rt.SetRoutes("demo", sleepy("demo", 400*time.Millisecond, 0))

	results := make(chan *http.Response, 3)
	for i := 0; i < 2; i++ {
		go func() { resp, _ := e.invoke("demo", []byte("x")); results <- resp }()
	}
	waitFor(t, 10*time.Second, "two held", func() bool { return e.heldNow("demo") == 2 })
	resp, body := e.invoke("demo", []byte("x"))
	if resp.StatusCode != 429 || !strings.Contains(string(body), CodeModelNotReady) || header(resp, "X-Amzn-Errortype") != CodeModelNotReady {
		t.Fatalf("beyond the queue: %d %s", resp.StatusCode, body)
	}
	// Refused without being held (a held one would end as a timeout).
	if got := e.metricLine(`serai_router_hold_outcomes_total{endpoint="demo",outcome="full"} `); got != "1" {
		t.Errorf("full outcomes %q, want 1", got)
	}
	for i := 0; i < 2; i++ {
		select {
		case resp := <-results:
			if resp.StatusCode != 429 {
				t.Errorf("held past the model timeout: %d, want 429", resp.StatusCode)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("a held request hung past the model timeout")
		}
	}
	if got := e.metricLine(`serai_router_hold_outcomes_total{endpoint="demo",outcome="timeout"} `); got != "2" {
		t.Errorf("timeouts counted %q, want 2", got)
	}

	// Hang-up: the request leaves the queue.
	e.rt.SetRoutes("demo", sleepy("demo", 30*time.Second, 0))
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, e.srv.URL+"/endpoints/demo/invocations", strings.NewReader("x"))
	done := make(chan struct{})
	go func() {
		defer close(done)
		if resp, err := e.client.Do(req); err == nil {
			resp.Body.Close()
		}
	}()
	waitFor(t, 10*time.Second, "held", func() bool { return e.heldNow("demo") == 1 })
	cancel()
	<-done
	waitFor(t, 10*time.Second, "the hung-up request to leave the queue", func() bool { return e.heldNow("demo") == 0 })
	waitFor(t, 10*time.Second, "the gone outcome", func() bool {
		return e.metricLine(`serai_router_hold_outcomes_total{endpoint="demo",outcome="gone"} `) == "1"
	})
}

// Only a scale_from_zero variant is held for, and only with a Waker; an
// untargeted request goes to an awake variant at once and wakes the
// sleeping one so it gets its share back.
func TestScaleFromZeroOnlyWhereAsked(t *testing.T) {
	kv := &memWakeKV{}
	e := newEnv(t, Config{Waker: &Waker{KV: kv, Every: time.Minute}})
	e.rt.SetRoutes("plain", oneGen("plain", "a", 1))
	resp, body := e.invoke("plain", []byte("x"))
	mustStatus(t, resp, body, 503)

	e.rt.SetRoutes("mixed", sleepy("mixed", 30*time.Second, 1))
	b := model(t, "b", nil)
	e.rt.SetInstances("mixed", []Instance{inst("b1", addrOf(b), "b", 1)})
	start := time.Now()
	resp, body = e.invoke("mixed", []byte("x"))
	mustStatus(t, resp, body, 200)
	if string(body) != "b" || time.Since(start) > 5*time.Second {
		t.Errorf("untargeted answered %q after %s, want b at once", body, time.Since(start))
	}
	waitFor(t, 10*time.Second, "the sleeping variant woken", func() bool {
		kv.mu.Lock()
		defer kv.mu.Unlock()
		_, ok := kv.puts[contract.WakeKey("mixed", 1, "a")]
		return ok
	})
	// Targeted at b while a sleeps: no hold. Targeted at a: held.
	resp, body = e.invoke("mixed", []byte("x"), "X-Amzn-SageMaker-Target-Variant", "b")
	mustStatus(t, resp, body, 200)
	targeted := make(chan string, 1)
	go func() {
		resp, body := e.invoke("mixed", []byte("x"), "X-Amzn-SageMaker-Target-Variant", "a")
		targeted <- resp.Status + " " + string(body)
	}()
	waitFor(t, 10*time.Second, "the targeted request held", func() bool { return e.heldNow("mixed") == 1 })
	a := model(t, "a", nil)
	e.rt.SetInstances("mixed", []Instance{inst("b1", addrOf(b), "b", 1), inst("a1", addrOf(a), "a", 1)})
	if got := <-targeted; got != "200 OK a" {
		t.Errorf("held targeted request answered %q", got)
	}

	// Shutting down: held requests are answered 503 at once.
	e.rt.SetRoutes("idle", sleepy("idle", 30*time.Second, 0))
	drained := make(chan int, 1)
	go func() { resp, _ := e.invoke("idle", []byte("x")); drained <- resp.StatusCode }()
	waitFor(t, 10*time.Second, "held", func() bool { return e.heldNow("idle") == 1 })
	e.rt.SetDraining(true)
	select {
	case code := <-drained:
		if code != 503 {
			t.Errorf("held request on shutdown: %d, want 503", code)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("held request not answered on shutdown")
	}

	noWaker := newEnv(t, Config{})
	noWaker.rt.SetRoutes("demo", sleepy("demo", 30*time.Second, 0))
	resp, body = noWaker.invoke("demo", []byte("x"))
	mustStatus(t, resp, body, 503)
}
