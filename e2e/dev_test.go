package e2e

import (
	"bufio"
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/sagemakerruntime"

	"github.com/seraihq/serai/internal/devstack"
	"github.com/seraihq/serai/internal/testagents"
)

// TestDevExample runs `serai dev --example` as a user does (a subprocess,
// here the built binary rather than `go run`), waits for the printed
// addresses and the example's answer, invokes the example through the
// router with the unmodified AWS SDK client, runs every ```sh block of
// README.md against the stack, sends SIGINT and checks that no process,
// listening port, mount or temporary directory remains.
func TestDevExample(t *testing.T) {
	for _, bin := range []string{"consul", "nomad"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Skipf("%s not on PATH: serai dev needs Consul, Nomad and Vault/OpenBao (`. scripts/agents`; README: Agents)", bin)
		}
	}
	if _, err := exec.LookPath("bao"); err != nil {
		if _, err := exec.LookPath("vault"); err != nil {
			t.Skip("neither vault nor bao on PATH: serai dev needs one (README: Agents)")
		}
	}
	dir := t.TempDir()
	binDir := filepath.Join(dir, "bin")
	serai := buildBinary(t, binDir, "serai", "../cmd/serai")
	source, _ := filepath.Abs("..")

	// Other ports than the defaults, so a developer's own stack (or
	// another suite's router on 8081) is left alone.
	addrs := map[string]string{
		"server": testagents.FreeLoopbackAddr(t),
		"router": testagents.FreeLoopbackAddr(t),
		"store":  testagents.FreeLoopbackAddr(t),
	}
	dataDir := filepath.Join(dir, "data")
	begin := time.Now()
	cmd := exec.Command(serai, "dev", "--example", "--source", source, "--data-dir", dataDir,
		"--server-listen", addrs["server"], "--router-listen", addrs["router"], "--store-listen", addrs["store"])
	cmd.Dir = source
	cmd.Stderr = os.Stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var (
		mu      sync.Mutex
		lines   []string
		env     = map[string]string{}
		logsDir string
		ready   = make(chan struct{})
		exited  = make(chan error, 1)
		once    sync.Once
	)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			l := sc.Text()
			mu.Lock()
			lines = append(lines, l)
			if k, v, ok := strings.Cut(strings.TrimPrefix(l, "export "), "="); ok && strings.HasPrefix(l, "export ") {
				env[k] = v
			}
			if f := strings.Fields(l); len(f) >= 2 && f[0] == "logs" {
				logsDir = f[1]
			}
			mu.Unlock()
			if strings.HasPrefix(l, "serai dev: example answered") {
				once.Do(func() { close(ready) })
			}
		}
		exited <- cmd.Wait()
	}()
	output := func() string {
		mu.Lock()
		defer mu.Unlock()
		return strings.Join(lines, "\n")
	}
	stopped := false
	defer func() {
		if !stopped {
			_ = cmd.Process.Signal(os.Interrupt)
			<-exited
		}
	}()
	select {
	case <-ready:
	case err := <-exited:
		stopped = true
		t.Fatalf("serai dev exited early: %v\n%s", err, output())
	case <-time.After(4 * time.Minute):
		t.Fatalf("serai dev --example printed no answer within 4 minutes:\n%s", output())
	}
	took := time.Since(begin)
	t.Logf("RESULT serai dev --example: first inference printed %s after start (agents, store, server, router, build+train, apply → InService, invoke)", took.Round(100*time.Millisecond))
	for _, k := range []string{"SERAI_ADDR", "SERAI_ROUTER_ADDR", "NOMAD_ADDR", "CONSUL_HTTP_ADDR", "VAULT_ADDR", "VAULT_TOKEN"} {
		if env[k] == "" {
			t.Errorf("serai dev did not print export %s=...:\n%s", k, output())
		}
	}
	for _, want := range []string{"Nomad UI", "Consul UI", "router", "server"} {
		if !strings.Contains(output(), want) {
			t.Errorf("output lacks %q", want)
		}
	}

	// The unmodified AWS SDK client, through the router serai dev started.
	rt := sagemakerruntime.New(sagemakerruntime.Options{
		Region: "us-east-1", BaseEndpoint: aws.String(env["SERAI_ROUTER_ADDR"]),
		Credentials: credentials.NewStaticCredentialsProvider("AKIDDEV", "secret", ""),
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ans, err := rt.InvokeEndpoint(ctx, &sagemakerruntime.InvokeEndpointInput{
		EndpointName: aws.String("iris"), ContentType: aws.String("text/csv"), Body: []byte("6.7,3.0,5.2,2.3"),
	})
	if err != nil {
		t.Fatalf("InvokeEndpoint through serai dev's router: %v", err)
	}
	if v := aws.ToString(ans.InvokedProductionVariant); v != "v1" && v != "v2" {
		t.Errorf("invoked variant %q", v)
	}
	t.Logf("iris answered %q (variant %s)", ans.Body, aws.ToString(ans.InvokedProductionVariant))

	t.Run("README", func(t *testing.T) {
		runReadme(t, source, binDir, env, addrs)
	})

	// Ctrl-C: everything goes, nothing is left.
	ports := []string{addrs["server"], addrs["router"], addrs["store"],
		strings.TrimPrefix(env["NOMAD_ADDR"], "http://"), env["CONSUL_HTTP_ADDR"], strings.TrimPrefix(env["VAULT_ADDR"], "http://")}
	_ = cmd.Process.Signal(os.Interrupt)
	stopped = true
	select {
	case err := <-exited:
		if err != nil {
			t.Errorf("serai dev exited with %v after SIGINT:\n%s", err, output())
		}
	case <-time.After(90 * time.Second):
		_ = cmd.Process.Kill()
		t.Fatalf("serai dev did not exit within 90s of SIGINT")
	}
	if !strings.Contains(output(), "nothing left running") {
		t.Errorf("no clean-stop message:\n%s", output())
	}
	if logsDir == "" {
		t.Fatalf("serai dev did not print its logs dir")
	}
	if left := devstack.Leftovers(filepath.Base(logsDir)); len(left) > 0 {
		for _, pid := range left {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		t.Errorf("processes left after SIGINT: %v", left)
	}
	for _, a := range ports {
		if c, err := net.DialTimeout("tcp", a, 200*time.Millisecond); err == nil {
			c.Close()
			t.Errorf("%s still accepts connections after SIGINT", a)
		}
	}
	if m := devstack.MountsUnder(logsDir); len(m) > 0 {
		t.Errorf("mounts left: %v", m)
	}
	if _, err := os.Stat(logsDir); !os.IsNotExist(err) {
		t.Errorf("runtime dir %s left (stat: %v)", logsDir, err)
	}
	// The store's data survives for the next start.
	if _, err := os.Stat(filepath.Join(dataDir, "store.db")); err != nil {
		t.Errorf("store data not kept: %v", err)
	}
}
