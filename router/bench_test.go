package router

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	"github.com/hashicorp/go-hclog"

	"github.com/seraihq/serai/internal/sigv4"
)

// benchEndpoint is a realistic table: two generations mid-shift, two
// variants, four instances per slot.
func benchEndpoint(tb testing.TB) (*Router, *endpoint) {
	rt, err := New(Config{Logger: hclog.NewNullLogger()})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(rt.Close)
	rt.SetRoutes("demo", &Routes{Version: 1, Endpoint: "demo", Generations: []Generation{
		{Generation: 3, Weight: 0.9, Variants: []Variant{{Name: "a", Weight: 0.8}, {Name: "b", Weight: 0.2}}},
		{Generation: 4, Weight: 0.1, Variants: []Variant{{Name: "a", Weight: 1}, {Name: "b", Weight: 1}}},
	}})
	var insts []Instance
	for _, gen := range []int{3, 4} {
		for _, v := range []string{"a", "b"} {
			for i := range 4 {
				insts = append(insts, Instance{ID: v + strconv.Itoa(gen*10+i), Address: "127.0.0.1:" + strconv.Itoa(10000+gen*100+i), Variant: v, Generation: gen})
			}
		}
	}
	rt.SetInstances("demo", insts)
	return rt, rt.table.Load().endpoints["demo"]
}

// TestPickDoesNotAllocate keeps the hot path's zero-allocation promise
// enforced in CI, not only visible in benchmark output.
func TestPickDoesNotAllocate(t *testing.T) {
	rt, _ := benchEndpoint(t)
	allocs := testing.AllocsPerRun(1000, func() {
		ep := rt.table.Load().endpoints["demo"]
		s, in, _ := ep.choose("")
		in.inflight.Add(1)
		in.inflight.Add(-1)
		_ = s
		ep.choose("b")
	})
	if allocs != 0 {
		t.Errorf("Pick allocates %.1f times per call", allocs)
	}
}

// BenchmarkPick is the per-request routing decision: table load, endpoint
// lookup, weighted variant, power-of-two-choices instance.
func BenchmarkPick(b *testing.B) {
	rt, _ := benchEndpoint(b)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			ep := rt.table.Load().endpoints["demo"]
			_, in, _ := ep.choose("")
			in.inflight.Add(1)
			in.inflight.Add(-1)
		}
	})
}

func BenchmarkPickTargeted(b *testing.B) {
	rt, _ := benchEndpoint(b)
	b.ReportAllocs()
	for b.Loop() {
		ep := rt.table.Load().endpoints["demo"]
		ep.choose("b")
	}
}

var benchAnswer = []byte(`{"predictions":[0.12,0.88],"model":"churn-v3","latency_ms":1}`)

func benchBackend(b *testing.B) *httptest.Server {
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		h := w.Header()
		h["Content-Type"] = []string{"application/json"}
		h["Content-Length"] = []string{strconv.Itoa(len(benchAnswer))}
		w.Write(benchAnswer)
	}))
	b.Cleanup(s.Close)
	return s
}

// resettableBody lets one *http.Request be served many times.
type resettableBody struct{ bytes.Reader }

func (*resettableBody) Close() error { return nil }

// benchWriter is a minimal http.ResponseWriter that keeps nothing.
type benchWriter struct {
	h      http.Header
	status int
}

func (w *benchWriter) Header() http.Header         { return w.h }
func (w *benchWriter) WriteHeader(code int)        { w.status = code }
func (w *benchWriter) Write(p []byte) (int, error) { return len(p), nil }

// SetWriteDeadline is what net/http's writer offers to ResponseController.
func (w *benchWriter) SetWriteDeadline(time.Time) error { return nil }

// BenchmarkServeHTTP runs the router's handler directly against a real
// backend, so allocs/op counts the router's own work per request (body
// buffering, upstream exchange, metrics), without net/http's server and a
// client in the numbers.
func BenchmarkServeHTTP(b *testing.B) { benchServeHTTP(b, nil) }

// BenchmarkServeHTTPSigV4 is BenchmarkServeHTTP with SigV4 verification
// on: the same signed request is verified on every iteration (header
// checks, body hash, signing again with the SDK signer).
func BenchmarkServeHTTPSigV4(b *testing.B) {
	benchServeHTTP(b, map[string]string{"AKIDBENCH": "bench-secret-0123456789"})
}

// benchServeHTTP invokes one endpoint through rt.ServeHTTP in a loop; with
// keys, auth is on and the request is signed with the first key once.
func benchServeHTTP(b *testing.B, keys map[string]string) {
	backend := benchBackend(b)
	rt, err := New(Config{Logger: hclog.NewNullLogger(), SigV4Keys: keys})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(rt.Close)
	rt.SetRoutes("demo", oneGen("demo", "a", 1))
	rt.SetInstances("demo", []Instance{inst("a", addrOf(backend), "a", 1)})
	payload := bytes.Repeat([]byte("x"), 256)
	body := &resettableBody{}
	req := httptest.NewRequest(http.MethodPost, "/endpoints/demo/invocations", bytes.NewReader(payload))
	req.Header.Set("Content-Type", "application/json")
	for id, secret := range keys {
		err = v4.NewSigner().SignHTTP(context.Background(), aws.Credentials{AccessKeyID: id, SecretAccessKey: secret},
			req, sigv4.PayloadHash(payload), "sagemaker", "us-east-1", time.Now())
		if err != nil {
			b.Fatal(err)
		}
		break
	}
	req.ContentLength = int64(len(payload))
	req.Body = body
	w := &benchWriter{h: http.Header{}}
	b.ReportAllocs()
	for b.Loop() {
		body.Reset(payload)
		clear(w.h)
		rt.ServeHTTP(w, req)
		if w.status != 200 {
			b.Fatalf("status %d", w.status)
		}
	}
}

// syncBufferPool is an httputil.BufferPool of 32 KiB buffers.
type syncBufferPool struct{ p sync.Pool }

func (b *syncBufferPool) Get() []byte {
	if v, ok := b.p.Get().(*[]byte); ok {
		return *v
	}
	return make([]byte, 32<<10)
}

func (b *syncBufferPool) Put(buf []byte) { b.p.Put(&buf) }

// BenchmarkThroughput compares, in one run and on one machine, a client
// calling the backend directly, through this router, and through a
// httputil.ReverseProxy with a tuned transport. Each reports req/s; the
// router's share of allocations is (router − direct) allocs/op.
func BenchmarkThroughput(b *testing.B) {
	backend := benchBackend(b)
	payload := bytes.Repeat([]byte("x"), 256)

	run := func(b *testing.B, url string) { benchClients(b, url, payload) }

	b.Run("direct", func(b *testing.B) {
		run(b, backend.URL+"/invocations")
	})
	b.Run("serai", func(b *testing.B) {
		rt, err := New(Config{Logger: hclog.NewNullLogger()})
		if err != nil {
			b.Fatal(err)
		}
		rt.SetRoutes("demo", oneGen("demo", "a", 1))
		rt.SetInstances("demo", []Instance{inst("a", addrOf(backend), "a", 1)})
		srv := httptest.NewServer(rt)
		defer func() { srv.Close(); rt.Close() }()
		run(b, srv.URL+"/endpoints/demo/invocations")
	})
	b.Run("reverseproxy", func(b *testing.B) {
		u, _ := url.Parse(backend.URL)
		rp := httputil.NewSingleHostReverseProxy(u)
		rp.Transport = &http.Transport{MaxIdleConns: 1024, MaxIdleConnsPerHost: 1024, DisableCompression: true}
		// The fair baseline recycles its copy buffers, as the router does.
		rp.BufferPool = &syncBufferPool{}
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			r.URL.Path = "/invocations"
			rp.ServeHTTP(w, r)
		}))
		defer srv.Close()
		run(b, srv.URL+"/endpoints/demo/invocations")
	})
}

// benchClients posts payload to url from 16 parallel net/http clients
// until b.N requests were answered 200, and reports req/s.
func benchClients(b *testing.B, url string, payload []byte) {
	tr := &http.Transport{MaxIdleConns: 1024, MaxIdleConnsPerHost: 1024, DisableCompression: true}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	b.ReportAllocs()
	b.SetParallelism(16)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			req, _ := http.NewRequest(http.MethodPost, url, bytes.NewReader(payload))
			req.Header["Content-Type"] = []string{"application/json"}
			resp, err := client.Do(req)
			if err != nil {
				b.Error(err)
				return
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 {
				b.Errorf("status %d", resp.StatusCode)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "req/s")
}

// BenchmarkRequestSizes: the router as `serai router` serves plain HTTP
// (the fast path in front of net/http) under Go clients, whose Transport
// writes a request over 4 KiB in several writes, so the router often
// reads it in parts, as it does any request over one TCP segment from
// across a network. fast/op is the share of requests the fast path
// served.
func BenchmarkRequestSizes(b *testing.B) {
	backend := benchBackend(b)
	for _, size := range []int{1 << 10, 6 << 10, 12 << 10} {
		b.Run(strconv.Itoa(size>>10)+"KiB", func(b *testing.B) {
			rt, err := New(Config{Logger: hclog.NewNullLogger()})
			if err != nil {
				b.Fatal(err)
			}
			defer rt.Close()
			rt.SetRoutes("demo", oneGen("demo", "a", 1))
			rt.SetInstances("demo", []Instance{inst("a", addrOf(backend), "a", 1)})
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				b.Fatal(err)
			}
			fs := newFastServer(newHTTPServer(rt, nil, hclog.NewNullLogger()))
			go fs.Serve(ln)
			defer fs.Close()
			benchClients(b, "http://"+ln.Addr().String()+"/endpoints/demo/invocations", bytes.Repeat([]byte("x"), size))
			b.ReportMetric(float64(fs.served.Load())/float64(b.N), "fast/op")
		})
	}
}
