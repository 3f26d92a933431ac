package bench

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	consulapi "github.com/hashicorp/consul/api"

	"github.com/seraihq/serai/contract"
	"github.com/seraihq/serai/internal/testagents"
)

// target is one way of reaching the backend.
type target struct {
	name string
	url  map[string]string // by answer size name
	proc *testagents.Process
	// pid is the root of the process tree whose CPU time and memory are
	// the target's (0 for direct: the backend's cost is everyone's).
	pid int
}

// backends are the two instances: a takes 0.9 of the traffic, b 0.1.
type backends struct {
	a, b  map[string]int // port by size name
	procs []*testagents.Process
}

func (bk *backends) addr(inst string, size string) string {
	m := bk.a
	if inst == "b" {
		m = bk.b
	}
	return "127.0.0.1:" + strconv.Itoa(m[size])
}

// served is how many requests each instance has answered so far (both
// sizes: one counter per process).
func (bk *backends) served(t testing.TB) (a, b int64) {
	get := func(port int) int64 {
		resp, err := http.Get("http://127.0.0.1:" + strconv.Itoa(port) + "/stats")
		if err != nil {
			t.Fatalf("backend stats: %v", err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		n, _ := strconv.ParseInt(string(body), 10, 64)
		return n
	}
	return get(bk.a["1k"]), get(bk.b["1k"])
}

func startBackends(t *testing.T) *backends {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	ports := testagents.FreePorts(t, 2*len(sizes))
	bk := &backends{a: map[string]int{}, b: map[string]int{}}
	for i, s := range sizes {
		bk.a[s.name], bk.b[s.name] = ports[2*i], ports[2*i+1]
	}
	for _, inst := range []string{"a", "b"} {
		var addrs []string
		for _, s := range sizes {
			addrs = append(addrs, bk.addr(inst, s.name))
		}
		spec := strings.Join(addrs, ",")
		dir := testagents.NewDir(t, "backend-"+inst)
		p := testagents.StartProcess(t, "backend-"+inst, dir, self, []string{"-test.run=^$"}, nil, backendEnv+"="+spec)
		bk.procs = append(bk.procs, p)
	}
	for _, inst := range []string{"a", "b"} {
		for _, s := range sizes {
			waitOK(t, "backend "+inst, "http://"+bk.addr(inst, s.name)+"/ping", http.MethodGet)
		}
	}
	return bk
}

// waitOK waits until url answers 200.
func waitOK(t testing.TB, what, url, method string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	var last string
	for time.Now().Before(deadline) {
		req, _ := http.NewRequest(method, url, strings.NewReader(requestBody))
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return
			}
			last = resp.Status
		} else {
			last = err.Error()
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("%s not answering 200 at %s: %s", what, url, last)
}

// endpointName is the SageMaker endpoint of one answer size.
func endpointName(size string) string { return "bench" + size }

// registerEndpoints puts the backend into Consul as the control plane
// would: one service serai-<endpoint> per answer size with instances
// tagged variant a (weight 0.9) and b (0.1), and a routing table in KV.
func registerEndpoints(t *testing.T, c *consulapi.Client, bk *backends) {
	for _, s := range sizes {
		ep := endpointName(s.name)
		for _, inst := range []string{"a", "b"} {
			port := bk.a[s.name]
			if inst == "b" {
				port = bk.b[s.name]
			}
			err := c.Agent().ServiceRegister(&consulapi.AgentServiceRegistration{
				ID: ep + "-" + inst, Name: contract.ServiceName(ep), Address: "127.0.0.1", Port: port,
				Tags: contract.InstanceTags{Variant: inst, Generation: 1, Model: "bench"}.Format(),
				Meta: contract.ServiceMeta(ep, 1),
				Check: &consulapi.AgentServiceCheck{
					HTTP: "http://127.0.0.1:" + strconv.Itoa(port) + "/ping", Interval: "10s", Status: consulapi.HealthPassing,
				},
			})
			if err != nil {
				t.Fatal(err)
			}
			id := ep + "-" + inst
			t.Cleanup(func() { c.Agent().ServiceDeregister(id) })
		}
		routes := &contract.Routes{Version: contract.RoutesVersion, Endpoint: ep, Generations: []contract.Generation{{
			Generation: 1, Weight: 1, Variants: []contract.Variant{{Name: "a", Weight: 0.9}, {Name: "b", Weight: 0.1}},
		}}}
		b, err := contract.EncodeRoutes(routes)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.KV().Put(&consulapi.KVPair{Key: contract.RoutesKey(ep), Value: b}, nil); err != nil {
			t.Fatal(err)
		}
		key := contract.RoutesKey(ep)
		t.Cleanup(func() { c.KV().Delete(key, nil) })
	}
}

// buildSerai builds the serai binary the way a user gets it.
func buildSerai(t *testing.T, dir string) string {
	bin := filepath.Join(dir, "serai")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "github.com/seraihq/serai/cmd/serai")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building serai: %v\n%s", err, out)
	}
	return bin
}

// buildBaseline builds cmd/serai from git revision rev of this repository
// (git archive into a temporary directory), for a before/after comparison
// in one run. It returns the binary and the full commit hash.
func buildBaseline(t *testing.T, rev string) (string, string) {
	top, err := exec.Command("git", "rev-parse", "--show-toplevel").Output()
	if err != nil {
		t.Fatalf("-bench.baseline needs a git checkout: %v", err)
	}
	root := strings.TrimSpace(string(top))
	full, err := exec.Command("git", "-C", root, "rev-parse", "--verify", rev+"^{commit}").Output()
	if err != nil {
		t.Fatalf("-bench.baseline %s: %v", rev, err)
	}
	commit := strings.TrimSpace(string(full))
	dir := t.TempDir()
	archive := exec.Command("sh", "-c", "git -C \"$1\" archive \"$2\" | tar -x -C \"$3\"", "sh", root, commit, dir)
	if out, err := archive.CombinedOutput(); err != nil {
		t.Fatalf("git archive %s: %v\n%s", commit, err, out)
	}
	bin := filepath.Join(dir, "serai-base")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "./cmd/serai")
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building serai at %s: %v\n%s", commit, err, out)
	}
	return bin, commit
}

func startSerai(t *testing.T, name, consulAddr string, routerBin string, env ...string) *target {
	port := testagents.FreePorts(t, 1)[0]
	dir := testagents.NewDir(t, "router")
	listen := "127.0.0.1:" + strconv.Itoa(port)
	p := testagents.StartProcess(t, name, dir, routerBin, []string{"router",
		"--listen", listen, "--consul-addr", consulAddr, "--register=false", "--log-level", "warn"}, []int{port}, env...)
	return &target{name: name, proc: p, pid: p.Pid(), url: seraiURLs(listen)}
}

// seraiURLs are a router's URLs per answer size.
func seraiURLs(listen string) map[string]string {
	url := map[string]string{}
	for _, s := range sizes {
		op := "/invocations"
		if s.stream {
			op = "/invocations-response-stream" // InvokeEndpointWithResponseStream
		}
		url[s.name] = "http://" + listen + "/endpoints/" + endpointName(s.name) + op
	}
	return url
}

// startNginx: a weighted upstream with keep-alive, as nginx's docs for
// ngx_http_upstream_module's keepalive say (proxy_http_version 1.1 and an
// empty Connection header). Two workers (auto), no access log.
func startNginx(t *testing.T, bin string, bk *backends) *target {
	port := testagents.FreePorts(t, 1)[0]
	dir := testagents.NewDir(t, "nginx")
	var b strings.Builder
	fmt.Fprintf(&b, `worker_processes auto;
daemon off;
pid %[1]s/nginx.pid;
error_log %[1]s/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path %[1]s/client_body;
  proxy_temp_path %[1]s/proxy;
  fastcgi_temp_path %[1]s/fastcgi;
  uwsgi_temp_path %[1]s/uwsgi;
  scgi_temp_path %[1]s/scgi;
`, dir)
	for _, s := range sizes {
		fmt.Fprintf(&b, "  upstream %s { server %s weight=9; server %s weight=1; keepalive 256; }\n",
			endpointName(s.name), bk.addr("a", s.name), bk.addr("b", s.name))
	}
	fmt.Fprintf(&b, "  server {\n    listen 127.0.0.1:%d;\n", port)
	for _, s := range sizes {
		extra := ""
		if s.stream {
			extra = "      proxy_buffering off; # pass each part on as it comes\n"
		}
		fmt.Fprintf(&b, `    location = /endpoints/%[1]s/invocations {
      proxy_pass http://%[1]s/invocations;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
%[2]s    }
`, endpointName(s.name), extra)
	}
	b.WriteString("  }\n}\n")
	conf := filepath.Join(dir, "nginx.conf")
	writeFile(t, conf, b.String())
	p := testagents.StartProcess(t, "nginx", dir, bin, []string{"-p", dir, "-c", conf, "-e", filepath.Join(dir, "error.log")}, []int{port})
	return proxyTarget("nginx", p, port)
}

// startHAProxy: weighted round robin with connection reuse (http-reuse
// always: idle server connections are shared between clients), keep-alive
// being HAProxy's default HTTP mode. Threads default to the CPU count.
func startHAProxy(t *testing.T, bin string, bk *backends) *target {
	port := testagents.FreePorts(t, 1)[0]
	dir := testagents.NewDir(t, "haproxy")
	var b strings.Builder
	fmt.Fprintf(&b, `global
  maxconn 4096
defaults
  mode http
  timeout connect 5s
  timeout client 60s
  timeout server 60s
  http-reuse always
frontend fe
  bind 127.0.0.1:%d
`, port)
	for _, s := range sizes {
		ep := endpointName(s.name)
		fmt.Fprintf(&b, "  use_backend %s if { path /endpoints/%s/invocations }\n", ep, ep)
	}
	for _, s := range sizes {
		fmt.Fprintf(&b, `backend %s
  balance roundrobin
  http-request set-path /invocations
  server a %s weight 9
  server b %s weight 1
`, endpointName(s.name), bk.addr("a", s.name), bk.addr("b", s.name))
	}
	conf := filepath.Join(dir, "haproxy.cfg")
	writeFile(t, conf, b.String())
	p := testagents.StartProcess(t, "haproxy", dir, bin, []string{"-db", "-f", conf}, []int{port})
	return proxyTarget("haproxy", p, port)
}

// startCaddy: reverse_proxy with its default keep-alive transport. Debian's
// Caddy (2.6) has no weighted policy, so instance a is listed nine times
// under round_robin; idle connections per host raised from 32 to 256 to
// match the others' pools at 256 connections.
func startCaddy(t *testing.T, bin string, bk *backends) *target {
	port := testagents.FreePorts(t, 1)[0]
	dir := testagents.NewDir(t, "caddy")
	var b strings.Builder
	fmt.Fprintf(&b, `{
  admin off
  auto_https off
  storage file_system %s/data
}
http://127.0.0.1:%d {
`, dir, port)
	for _, s := range sizes {
		ups := strings.Repeat(bk.addr("a", s.name)+" ", 9) + bk.addr("b", s.name)
		flush := ""
		if s.stream {
			flush = "\n      flush_interval -1"
		}
		fmt.Fprintf(&b, `  handle /endpoints/%s/invocations {
    rewrite * /invocations
    reverse_proxy %s {
      lb_policy round_robin%s
      transport http {
        keepalive 2m
        keepalive_idle_conns_per_host 256
      }
    }
  }
`, endpointName(s.name), ups, flush)
	}
	b.WriteString("}\n")
	conf := filepath.Join(dir, "Caddyfile")
	writeFile(t, conf, b.String())
	p := testagents.StartProcess(t, "caddy", dir, bin, []string{"run", "--config", conf, "--adapter", "caddyfile"}, []int{port},
		"XDG_DATA_HOME="+dir+"/data", "XDG_CONFIG_HOME="+dir+"/config")
	return proxyTarget("caddy", p, port)
}

func proxyTarget(name string, p *testagents.Process, port int) *target {
	tg := &target{name: name, proc: p, pid: p.Pid(), url: map[string]string{}}
	for _, s := range sizes {
		tg.url[s.name] = "http://127.0.0.1:" + strconv.Itoa(port) + "/endpoints/" + endpointName(s.name) + "/invocations"
	}
	return tg
}

func writeFile(t testing.TB, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

// checkAnswers proves a target serves what is measured: 200 and the
// backend's exact answer, for every size, before any load.
func checkAnswers(t *testing.T, tg *target) {
	for _, s := range sizes {
		waitOK(t, tg.name, tg.url[s.name], http.MethodPost)
		resp, err := http.Post(tg.url[s.name], "application/json", strings.NewReader(requestBody))
		if err != nil {
			t.Fatalf("%s: %v", tg.name, err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		ok := string(body) == string(jsonAnswer(s.n))
		if s.stream && strings.HasPrefix(tg.name, "serai") {
			// AWS event-stream framing around the parts.
			ok = resp.Header.Get("Content-Type") == "application/vnd.amazon.eventstream" && len(body) > s.n
		}
		if err != nil || resp.StatusCode != 200 || !ok {
			t.Fatalf("%s %s: status %d, %d bytes (want 200 and the backend's %d-byte answer), err %v",
				tg.name, s.name, resp.StatusCode, len(body), s.n, err)
		}
	}
}
