package main

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	consulapi "github.com/hashicorp/consul/api"

	"github.com/seraihq/serai/contract"
	"github.com/seraihq/serai/internal/testagents"
	"github.com/seraihq/serai/router"
)

func TestParseBytes(t *testing.T) {
	for in, want := range map[string]int64{
		"134217728": 128 << 20, "128MiB": 128 << 20, "128Mi": 128 << 20, "128M": 128 << 20, " 1GiB ": 1 << 30,
		"500MB": 500e6, "64KiB": 64 << 10, "2G": 2 << 30, "100B": 100,
	} {
		if got, err := parseBytes(in); err != nil || got != want {
			t.Errorf("parseBytes(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "MiB", "-1MiB", "0", "12XB", "99999999999TiB", "128 MiB x"} {
		if n, err := parseBytes(in); err == nil {
			t.Errorf("parseBytes(%q) = %d, want an error", in, n)
		}
	}
	for _, c := range []struct {
		flag, env string
		want      int64
		bad       bool
	}{
		{"", "", router.DefaultMemoryLimit, false},
		{"", "128", 128 << 20, false},
		{"256MiB", "128", 256 << 20, false},
		{"", "128MiB", 0, true},
		{"lots", "", 0, true},
	} {
		got, err := routerMemoryLimit(c.flag, c.env)
		if (err != nil) != c.bad || got != c.want {
			t.Errorf("routerMemoryLimit(%q, %q) = %d, %v; want %d (error %v)", c.flag, c.env, got, err, c.want, c.bad)
		}
	}
	if code, _, stderr := runCLI(t, "router", "--memory-limit", "16MiB"); code != exitUsage || !strings.Contains(stderr, "--memory-limit") {
		t.Errorf("--memory-limit 16MiB: exit %d, %q; want %d naming the flag", code, stderr, exitUsage)
	}
}

// TestRouterMemoryLimitBoundsRSS runs the built `serai router` with
// --memory-limit 128MiB (its Nomad job's memory) against a real Consul and
// a model that holds each request a while, fires 64 concurrent 6 MB
// invocations at it (eight times what its 48 MiB body budget holds at
// once), and samples the router's resident memory from /proc throughout:
// its peak (VmHWM) stays under the limit, the requests the budget cannot
// hold get 429 ThrottlingException with Retry-After, the rest succeed,
// and afterwards every request succeeds again.
func TestRouterMemoryLimitBoundsRSS(t *testing.T) {
	const limit = 128 << 20
	consul := testagents.StartConsul(t)
	dir := t.TempDir()
	bin := filepath.Join(dir, "serai")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}

	// The model reads the whole body and answers after 300 ms, so bodies
	// stay buffered in the router while others arrive.
	var modelBytes atomic.Int64
	model := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/ping" {
			return
		}
		n, _ := io.Copy(io.Discard, r.Body)
		modelBytes.Add(n)
		time.Sleep(300 * time.Millisecond)
		w.Header().Set("Content-Type", "text/plain")
		io.WriteString(w, strconv.FormatInt(n, 10))
	})}
	mln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go model.Serve(mln)
	t.Cleanup(func() { model.Close() })
	registerInstance(t, consul.Client, "mem", mln.Addr().(*net.TCPAddr))

	listen := testagents.FreeLoopbackAddr(t)
	proc := startSeraiEnv(t, []string{"GOMEMLIMIT=", "GOGC="}, bin, "router", "--listen", listen, "--consul-addr", consul.Addr, "--register=false",
		"--memory-limit", "128MiB", "--log-level", "warn")

	url := "http://" + listen + "/endpoints/mem/invocations"
	body := bytes.Repeat([]byte("x"), 6_000_000)
	tr := &http.Transport{MaxIdleConnsPerHost: 64}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: 60 * time.Second}
	invoke := func() (int, http.Header, error) {
		resp, err := client.Post(url, "application/octet-stream", bytes.NewReader(body))
		if err != nil {
			return 0, nil, err
		}
		defer resp.Body.Close()
		io.Copy(io.Discard, resp.Body)
		return resp.StatusCode, resp.Header, nil
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		code, _, err := invoke()
		if code == 200 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("router never served the endpoint: %d %v", code, err)
		}
		time.Sleep(100 * time.Millisecond)
	}

	// Sample the router's RSS throughout.
	pid := proc.cmd.Process.Pid
	baseRSS := procStatusBytes(t, pid, "VmRSS")
	var peakRSS atomic.Int64
	sampleCtx, stopSampling := context.WithCancel(context.Background())
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		for sampleCtx.Err() == nil {
			if rss := procStatusBytes(t, pid, "VmRSS"); rss > peakRSS.Load() {
				peakRSS.Store(rss)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}()

	var wg sync.WaitGroup
	var mu sync.Mutex
	codes := map[int]int{}
	var errs []error
	for range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			code, hdr, err := invoke()
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, err)
				return
			}
			codes[code]++
			if code == http.StatusTooManyRequests && (hdr.Get("X-Amzn-Errortype") != "ThrottlingException" || hdr.Get("Retry-After") == "") {
				t.Errorf("429 with error type %q, Retry-After %q", hdr.Get("X-Amzn-Errortype"), hdr.Get("Retry-After"))
			}
		}()
	}
	wg.Wait()
	stopSampling()
	<-sampled
	hwm := procStatusBytes(t, pid, "VmHWM")
	t.Logf("64 concurrent 6 MB invocations: %v, transport errors %d; peak VmRSS sampled %d MiB, VmHWM %d MiB (limit %d MiB; before the burst %d MiB, now %d MiB anonymous + %d MiB file)",
		codes, len(errs), peakRSS.Load()>>20, hwm>>20, limit>>20, baseRSS>>20,
		procStatusBytes(t, pid, "RssAnon")>>20, procStatusBytes(t, pid, "RssFile")>>20)
	for _, err := range errs {
		t.Errorf("transport error: %v", err)
	}
	if hwm >= limit || peakRSS.Load() >= limit {
		t.Errorf("router's peak RSS %d MiB (sampled %d MiB) reached its %d MiB limit", hwm>>20, peakRSS.Load()>>20, limit>>20)
	}
	if codes[200] == 0 || codes[429] == 0 || codes[200]+codes[429] != 64 {
		t.Errorf("answers %v: want some 200, some 429 and nothing else", codes)
	}

	// Afterwards: every request is served, and the refusals were counted.
	for i := range 8 {
		if code, _, err := invoke(); code != 200 {
			t.Fatalf("request %d after the burst: %d %v", i, code, err)
		}
	}
	if got := metricValue(t, "http://"+listen+"/metrics", `serai_router_rejected_requests_total{reason="body_budget"}`); got != float64(codes[429]) {
		t.Errorf("body_budget rejections counted %v, want %d", got, codes[429])
	}
}

// registerInstance registers a model instance of endpoint (one variant
// "v", generation 1) in Consul the way Nomad does, and its routing table.
func registerInstance(t *testing.T, c *consulapi.Client, endpoint string, addr *net.TCPAddr) {
	t.Helper()
	routes := &router.Routes{Version: router.RoutesVersion, Endpoint: endpoint, Generations: []router.Generation{
		{Generation: 1, Weight: 1, Variants: []router.Variant{{Name: "v", Weight: 1}}},
	}}
	b, err := router.EncodeRoutes(routes)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.KV().Put(&consulapi.KVPair{Key: contract.RoutesKey(endpoint), Value: b}, nil); err != nil {
		t.Fatal(err)
	}
	id := "mem-" + strconv.Itoa(addr.Port)
	if err := c.Agent().ServiceRegister(&consulapi.AgentServiceRegistration{
		ID: id, Name: router.ServiceName(endpoint), Address: addr.IP.String(), Port: addr.Port,
		Tags:  []string{contract.TagVariant + "v", contract.TagGeneration + "1", contract.TagModel + "m"},
		Meta:  contract.ServiceMeta(endpoint, 1),
		Check: &consulapi.AgentServiceCheck{CheckID: "check-" + id, TTL: "10m", Status: consulapi.HealthPassing},
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Agent().ServiceDeregister(id) })
}

// procStatusBytes reads a "kB" field of /proc/<pid>/status.
func procStatusBytes(t *testing.T, pid int, field string) int64 {
	f, err := os.Open("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0 // exited
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), field+":"); ok {
			n, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			if err != nil {
				t.Errorf("/proc/%d/status %s: %q", pid, field, v)
			}
			return n << 10
		}
	}
	t.Errorf("/proc/%d/status has no %s", pid, field)
	return 0
}

// metricValue reads one sample (name with labels, as exposed) from a
// Prometheus text endpoint; 0 when absent.
func metricValue(t *testing.T, url, sample string) float64 {
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), sample+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatal(err)
			}
			return f
		}
	}
	return 0
}
