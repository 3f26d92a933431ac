package testagents

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	consulapi "github.com/hashicorp/consul/api"
	nomadapi "github.com/hashicorp/nomad/api"

	"github.com/seraihq/serai/internal/devstack"
)

// helperVar switches the test binary into a tiny HTTP server, which the Nomad
// test runs as a raw_exec task: no interpreter or image needed, and it binds
// only the loopback address Nomad hands it.
const helperVar = "TESTAGENTS_HELPER"

func TestMain(m *testing.M) {
	if os.Getenv(helperVar) == "http-server" {
		os.Exit(helperServe())
	}
	os.Exit(m.Run())
}

func helperServe() int {
	addr := os.Getenv("NOMAD_ADDR_http")
	if addr == "" {
		fmt.Fprintln(os.Stderr, "NOMAD_ADDR_http not set")
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	mux := http.NewServeMux()
	mux.HandleFunc("GET /ping", func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "pong from "+os.Getenv("NOMAD_ALLOC_ID")+" word="+os.Getenv("TESTAGENTS_WORD"))
	})
	srv := &http.Server{Addr: addr, Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.ListenAndServe() }()
	select {
	case err := <-errc:
		fmt.Fprintln(os.Stderr, err)
		return 1
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = srv.Shutdown(sctx)
	return 0
}

// recordingTB stands in for a test so the harness's reaction to a failed or
// passing test can be observed without failing the real one.
type recordingTB struct {
	testing.TB
	mu       sync.Mutex
	failed   bool
	cleanups []func()
	logs     []string
	errs     []string
}

func (r *recordingTB) Helper() {}

func (r *recordingTB) Cleanup(f func()) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.cleanups = append(r.cleanups, f)
}

func (r *recordingTB) Failed() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.failed || len(r.errs) > 0
}

func (r *recordingTB) Logf(format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.logs = append(r.logs, fmt.Sprintf(format, args...))
}

func (r *recordingTB) Errorf(format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.errs = append(r.errs, fmt.Sprintf(format, args...))
}

func (r *recordingTB) runCleanups() {
	r.mu.Lock()
	fs := r.cleanups
	r.cleanups = nil
	r.mu.Unlock()
	for i := len(fs) - 1; i >= 0; i-- {
		fs[i]()
	}
}

func newRecordingTB(t *testing.T) *recordingTB {
	r := &recordingTB{TB: t}
	t.Cleanup(r.runCleanups) // in case the test ends early
	return r
}

// assertGone checks the cleanup invariants from outside the harness, after
// the cleanups of the test that started p have run.
func assertGone(t *testing.T, p *process) {
	t.Helper()
	if done, _ := p.exited(); !done {
		t.Errorf("%s (pid %d) still running", p.name, p.cmd.Process.Pid)
	}
	if left := p.leftovers(); len(left) > 0 {
		for _, pi := range left {
			t.Errorf("%s left pid %d behind: %s", p.name, pi.pid, pi.cmdline)
		}
	}
	if open := waitPortsClosed(p.ports, 0); len(open) > 0 {
		t.Errorf("%s ports still open: %v", p.name, open)
	}
	if _, err := os.Stat(p.dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("%s dir %s still exists (stat: %v)", p.name, p.dir, err)
	}
	if m := devstack.MountsUnder(p.dir); len(m) > 0 {
		t.Errorf("%s left mounts: %v", p.name, m)
	}
}

func environOf(t *testing.T, pid int) string {
	t.Helper()
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/environ")
	if err != nil {
		t.Fatalf("reading environ of %d: %v", pid, err)
	}
	return strings.ReplaceAll(string(b), "\x00", "\n")
}

func TestConsul(t *testing.T) {
	var c *Consul
	t.Run("agent", func(t *testing.T) {
		c = StartConsul(t)
		if !strings.HasPrefix(c.Addr, "127.0.0.1:") {
			t.Errorf("Addr = %q, want 127.0.0.1:port", c.Addr)
		}
		leader, err := c.Client.Status().Leader()
		if err != nil || leader == "" {
			t.Fatalf("leader = %q, %v", leader, err)
		}
		reg := &consulapi.AgentServiceRegistration{Name: "probe", Port: 1234, Address: "127.0.0.1"}
		if err := c.Client.Agent().ServiceRegister(reg); err != nil {
			t.Fatalf("registering a service: %v", err)
		}
		svcs, _, err := c.Client.Catalog().Service("probe", "", nil)
		if err != nil || len(svcs) != 1 {
			t.Fatalf("catalog lookup: %v, %v", svcs, err)
		}
		if c.Reused {
			return
		}
		self, err := c.Client.Agent().Self()
		if err != nil {
			t.Fatal(err)
		}
		if v, _ := self["DebugConfig"]["DisableUpdateCheck"].(bool); !v {
			t.Errorf("DisableUpdateCheck not set in agent config")
		}
		if v, _ := self["DebugConfig"]["DNSPort"].(float64); v != -1 {
			t.Errorf("DNSPort = %v, want -1 (disabled)", self["DebugConfig"]["DNSPort"])
		}
	})
	if c == nil || c.Reused || t.Failed() {
		return
	}
	assertGone(t, c.proc)
}

// TestLogsOnlyOnFailure uses Consul because it is the quickest agent; the
// logic is shared by all three.
func TestLogsOnlyOnFailure(t *testing.T) {
	if os.Getenv("CONSUL_HTTP_ADDR") != "" {
		t.Skip("CONSUL_HTTP_ADDR set: nothing is started, so there is no log")
	}
	for _, failed := range []bool{false, true} {
		t.Run(fmt.Sprintf("failed=%t", failed), func(t *testing.T) {
			r := newRecordingTB(t)
			c := StartConsul(r)
			r.failed = failed
			r.runCleanups()
			if len(r.errs) > 0 {
				t.Fatalf("cleanup reported: %v", r.errs)
			}
			printed := false
			for _, l := range r.logs {
				if strings.Contains(l, "consul log") && strings.Contains(l, "Consul agent running!") {
					printed = true
				}
			}
			if printed != failed {
				t.Errorf("log printed = %t for a test with failed = %t; logs: %q", printed, failed, r.logs)
			}
			assertGone(t, c.proc)
		})
	}
}

func TestVault(t *testing.T) {
	var v *Vault
	t.Run("server", func(t *testing.T) {
		v = StartVault(t)
		h, err := v.Client.Sys().Health()
		if err != nil || h.Sealed || !h.Initialized {
			t.Fatalf("health = %+v, %v", h, err)
		}
		if _, err := v.Client.KVv2("secret").Put(context.Background(), "testagents/probe", map[string]any{"k": "v"}); err != nil {
			t.Fatalf("KV v2 put: %v", err)
		}
		s, err := v.Client.KVv2("secret").Get(context.Background(), "testagents/probe")
		if err != nil || s.Data["k"] != "v" {
			t.Fatalf("KV v2 get = %v, %v", s, err)
		}
		if v.Reused {
			return
		}
		if v.Binary != "vault" && v.Binary != "bao" {
			t.Errorf("Binary = %q", v.Binary)
		}
		if !strings.HasPrefix(v.Addr, "http://127.0.0.1:") {
			t.Errorf("Addr = %q", v.Addr)
		}
		if _, err := os.Stat(v.proc.dir + "/.vault-token"); err == nil {
			t.Errorf("dev server stored its token in HOME")
		}
	})
	if v == nil || v.Reused || t.Failed() {
		return
	}
	assertGone(t, v.proc)
}

func TestNomad(t *testing.T) {
	// A leaked AWS_CA_BUNDLE makes Nomad's AWS fingerprinter fail; the
	// harness must not pass it on.
	t.Setenv("AWS_CA_BUNDLE", "/nonexistent/ca.pem")

	var n *Nomad
	var c *Consul
	var v *Vault
	t.Run("agents", func(t *testing.T) {
		c = StartConsul(t)
		if _, _, ok := lookBinary("vault", "bao"); ok || os.Getenv("VAULT_ADDR") != "" {
			v = StartVault(t)
		} else {
			t.Log("no vault or bao on PATH: Nomad's Vault wiring is not exercised")
		}
		n = StartNomad(t, NomadOptions{Consul: c, Vault: v})
		if n.Reused {
			t.Skip("NOMAD_ADDR set: the harness's own agent is not under test")
		}

		env := environOf(t, n.proc.cmd.Process.Pid)
		if strings.Contains(env, "AWS_CA_BUNDLE") {
			t.Errorf("nomad runs with AWS_CA_BUNDLE in its environment")
		}
		node, _, err := n.Client.Nodes().Info(n.NodeID, nil)
		if err != nil {
			t.Fatal(err)
		}
		for k := range node.Attributes {
			if strings.HasPrefix(k, "platform.aws") || strings.HasPrefix(k, "platform.gce") || strings.HasPrefix(k, "unique.platform") {
				t.Errorf("cloud fingerprint attribute %s present: the denylist did not apply", k)
			}
		}
		if v != nil {
			cfg, err := v.Client.Logical().Read("auth/" + JWTAuthPath + "/config")
			if err != nil || cfg == nil {
				t.Fatalf("reading JWT auth config: %v, %v", cfg, err)
			}
			if got, want := cfg.Data["jwks_url"], n.Addr+"/.well-known/jwks.json"; got != want {
				t.Errorf("jwks_url = %v, want %s", got, want)
			}
		}

		runHelperJob(t, n, c, v)
	})
	if n == nil || n.Reused || t.Failed() {
		return
	}
	assertGone(t, n.proc)
	if v != nil && !v.Reused {
		assertGone(t, v.proc)
	}
	if c != nil && !c.Reused {
		assertGone(t, c.proc)
	}
}

// runHelperJob runs the test binary as a raw_exec service registered in
// Consul with an HTTP check and waits for the check to pass. With a Vault it
// also proves the workload-identity wiring: the task logs in through
// JWTAuthPath and renders a KV v2 secret into its environment. The job is
// left running on purpose: the harness's cleanup must stop it.
func runHelperJob(t *testing.T, n *Nomad, c *Consul, v *Vault) {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	name := "testagents-helper-" + randomID()[:6]
	word := ""
	if v != nil {
		word = "swordfish-" + randomID()[:6]
		setupVaultRole(t, v, name, word)
	}
	job := nomadapi.NewServiceJob(name, name, "global", 50)
	job.Datacenters = []string{"*"}
	tg := nomadapi.NewTaskGroup("web", 1)
	tg.Networks = []*nomadapi.NetworkResource{{DynamicPorts: []nomadapi.Port{{Label: "http"}}}}
	tg.Services = []*nomadapi.Service{{
		Name:      name,
		PortLabel: "http",
		Provider:  "consul",
		Checks: []nomadapi.ServiceCheck{{
			Type:     "http",
			Path:     "/ping",
			Interval: time.Second,
			Timeout:  time.Second,
		}},
	}}
	task := nomadapi.NewTask("server", "raw_exec")
	task.Config = map[string]any{"command": exe}
	task.Env = map[string]string{helperVar: "http-server"}
	kill := 5 * time.Second
	task.KillTimeout = &kill
	cpu, mem := 50, 64
	task.Resources = &nomadapi.Resources{CPU: &cpu, MemoryMB: &mem}
	if v != nil {
		task.Vault = &nomadapi.Vault{Role: name}
		tmpl := `{{ with secret "secret/data/testagents/` + name + `" }}TESTAGENTS_WORD={{ .Data.data.word }}{{ end }}`
		dest := "secrets/word.env"
		env := true
		task.Templates = []*nomadapi.Template{{EmbeddedTmpl: &tmpl, DestPath: &dest, Envvars: &env}}
	}
	tg.AddTask(task)
	job.AddTaskGroup(tg)
	if _, _, err := n.Client.Jobs().Register(job, nil); err != nil {
		t.Fatalf("registering job: %v", err)
	}

	begin := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var entry *consulapi.ServiceEntry
	err = waitFor(ctx, nil, "a passing Consul check for "+name, func(ctx context.Context) error {
		es, _, err := c.Client.Health().Service(name, "", true, (&consulapi.QueryOptions{}).WithContext(ctx))
		if err != nil {
			return err
		}
		if len(es) != 1 {
			return fmt.Errorf("%d passing instances", len(es))
		}
		entry = es[0]
		return nil
	})
	// Usually under 2 s; when it is not, the task events say where the time
	// went (placement, Vault login, template, check).
	if err != nil || time.Since(begin) > 5*time.Second {
		logTaskEvents(t, n, name)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("raw_exec service passing in Consul after %s; %d mounts under the data dir", time.Since(begin).Round(time.Millisecond), len(devstack.MountsUnder(n.DataDir)))
	if entry.Service.Address != "127.0.0.1" {
		t.Errorf("service address = %q, want 127.0.0.1", entry.Service.Address)
	}
	hc := &http.Client{Timeout: 5 * time.Second}
	resp, err := hc.Get("http://" + net.JoinHostPort(entry.Service.Address, strconv.Itoa(entry.Service.Port)) + "/ping")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.HasPrefix(string(body), "pong from ") || !strings.HasSuffix(string(body), " word="+word) {
		t.Errorf("GET /ping = %q, want pong with word=%s", body, word)
	}
}

func logTaskEvents(t *testing.T, n *Nomad, job string) {
	t.Helper()
	allocs, _, err := n.Client.Jobs().Allocations(job, false, nil)
	if err != nil {
		t.Logf("allocations of %s: %v", job, err)
		return
	}
	for _, a := range allocs {
		t.Logf("alloc %s: %s", a.ID[:8], a.ClientStatus)
		for task, st := range a.TaskStates {
			for _, e := range st.Events {
				t.Logf("  %s %s %s: %s", time.Unix(0, e.Time).Format("15:04:05.000"), task, e.Type, e.DisplayMessage)
			}
		}
	}
}

// setupVaultRole stores word in KV v2 and creates the policy and JWT role a
// job named job needs to read it, shaped as Nomad's Vault integration guide
// describes (and as serai's per-model roles are, see docs/contracts.md).
func setupVaultRole(t *testing.T, v *Vault, job, word string) {
	t.Helper()
	ctx := context.Background()
	if _, err := v.Client.KVv2("secret").Put(ctx, "testagents/"+job, map[string]any{"word": word}); err != nil {
		t.Fatal(err)
	}
	policy := `path "secret/data/testagents/` + job + `" { capabilities = ["read"] }`
	if err := v.Client.Sys().PutPolicyWithContext(ctx, job, policy); err != nil {
		t.Fatal(err)
	}
	_, err := v.Client.Logical().WriteWithContext(ctx, "auth/"+JWTAuthPath+"/role/"+job, map[string]any{
		"role_type":               "jwt",
		"bound_audiences":         []string{WorkloadIdentityAudience},
		"user_claim":              "/nomad_job_id",
		"user_claim_json_pointer": true,
		"bound_claims":            map[string]any{"nomad_job_id": job},
		"token_type":              "service",
		"token_policies":          []string{job},
		"token_period":            "30m",
	})
	if err != nil {
		t.Fatalf("writing JWT role: %v", err)
	}
}

// childrenOfSelf counts live processes whose parent is this test binary
// (other work on the machine must not disturb the count).
func childrenOfSelf(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	self := strconv.Itoa(os.Getpid())
	n := 0
	for _, e := range ents {
		stat, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil || isZombie(stat) {
			continue
		}
		i := bytes.LastIndexByte(stat, ')')
		if f := strings.Fields(string(stat[i+1:])); len(f) > 1 && f[1] == self {
			n++
		}
	}
	return n
}

func TestHelpers(t *testing.T) {
	if !isZombie([]byte("12 (a) b) Z 1 2")) || isZombie([]byte("12 (nomad) S 1")) {
		t.Errorf("isZombie misparses stat")
	}
	p, err := freePortPair()
	if err != nil {
		t.Fatal(err)
	}
	for _, port := range []int{p, p + 1} {
		l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		if err != nil {
			t.Errorf("port %d from freePortPair not free: %v", port, err)
			continue
		}
		l.Close()
	}
}

// TestLeftoverDetection makes an "agent" that orphans a child, the way a
// Nomad agent killed before its jobs orphans executors, and checks that the
// cleanup reports and kills it.
func TestLeftoverDetection(t *testing.T) {
	sh, _, ok := lookBinary("sh")
	if !ok {
		t.Skip("no sh on PATH")
	}
	r := newRecordingTB(t)
	dir := newProcessDir(r, "fake")
	// The background sleep ignores SIGINT (non-interactive shells do that for
	// background jobs) and outlives the shell.
	p := startProcess(r, "fake", dir, sh, []string{"-c", "sleep 60 & exec sleep 60"}, nil)
	r.Cleanup(func() { p.stop(r) })
	deadline := time.Now().Add(5 * time.Second)
	for len(p.leftovers()) < 2 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if n := len(p.leftovers()); n != 2 {
		t.Fatalf("found %d marked processes, want 2 (shell and its child)", n)
	}
	r.runCleanups()
	if len(r.errs) != 1 || !strings.Contains(r.errs[0], "left processes behind") || !strings.Contains(r.errs[0], "sleep 60") {
		t.Errorf("cleanup errors = %q, want one about the orphaned sleep", r.errs)
	}
	if !strings.Contains(strings.Join(r.logs, "\n"), "fake log") {
		t.Errorf("log not printed for a failed test: %q", r.logs)
	}
	for _, pi := range p.leftovers() {
		t.Errorf("orphan not killed: pid %d: %s", pi.pid, pi.cmdline)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("dir not removed: %v", err)
	}
}

// TestReuse points the environment at agents this test started and checks
// that the Start functions then only connect: nothing new is started, and
// nothing is stopped when the inner test ends. The Nomad agent here is not
// wired to Consul, which exercises that path too.
func TestReuse(t *testing.T) {
	for _, v := range []string{"CONSUL_HTTP_ADDR", "VAULT_ADDR", "NOMAD_ADDR"} {
		if os.Getenv(v) != "" {
			t.Skipf("%s already set", v)
		}
	}
	c := StartConsul(t)
	var v *Vault
	if _, _, ok := lookBinary("vault", "bao"); ok {
		v = StartVault(t)
	}
	n := StartNomad(t, NomadOptions{})
	if n.Node(t).Attributes["consul.version"] != "" {
		t.Errorf("unwired Nomad found a Consul")
	}

	t.Setenv("CONSUL_HTTP_ADDR", c.Addr)
	t.Setenv("NOMAD_ADDR", n.Addr)
	if v != nil {
		t.Setenv("VAULT_ADDR", v.Addr)
		t.Setenv("VAULT_TOKEN", v.Token)
	}
	t.Run("inner", func(t *testing.T) {
		before := childrenOfSelf(t)
		if before < 2 {
			t.Fatalf("%d children of the test binary; the agents started above should be among them", before)
		}
		c2 := StartConsul(t)
		n2 := StartNomad(t, NomadOptions{Consul: c2})
		if !c2.Reused || !n2.Reused || c2.Addr != c.Addr || n2.Addr != n.Addr {
			t.Errorf("not reused: consul %+v nomad %+v", c2, n2)
		}
		if v != nil {
			v2 := StartVault(t)
			if !v2.Reused || v2.Addr != v.Addr {
				t.Errorf("vault not reused: %+v", v2)
			}
		}
		if after := childrenOfSelf(t); after != before {
			t.Errorf("%d child processes before, %d after: something was started or stopped", before, after)
		}
	})
	for _, p := range []*process{c.proc, n.proc} {
		if done, err := p.exited(); done {
			t.Errorf("%s stopped by a test that only reused it: %v", p.name, err)
		}
	}
	if v != nil {
		if done, _ := v.proc.exited(); done {
			t.Errorf("vault stopped by a test that only reused it")
		}
	}
}
