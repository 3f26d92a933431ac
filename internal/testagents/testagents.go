// Package testagents starts real Consul, Vault (or OpenBao) and Nomad agents
// for tests, on free loopback ports, and takes them down again without
// leaving processes, listeners, mounts or directories behind.
//
// Each Start function either reuses an agent named by the usual environment
// variable (CONSUL_HTTP_ADDR, VAULT_ADDR + VAULT_TOKEN, NOMAD_ADDR) — and then
// neither starts nor stops anything — or looks its binary up on PATH and
// skips the test with one line saying how to get it when it is absent, so CI
// logs show which suites ran.
//
// Agents started here are single-node dev agents meant for one test each:
// everything listens on 127.0.0.1, update checks are off, and Nomad's cloud
// fingerprinters are denied, so nothing a test starts sends traffic beyond
// loopback. Every agent's output goes to a log file that is printed only when
// the test failed.
//
// StartCluster builds more than one host on the machine: a Consul and a
// Nomad server (and optionally OpenBao) on a bridge the test creates, and
// per datacenter a network namespace with its own address, Consul client
// agent, Nomad client and optionally its own Docker daemon (cluster.go,
// docker.go). The namespaces have no route off the bridge, so that traffic
// too stays on the machine; namespaces, veths, bridge, mounts, containers
// and processes are all removed and checked gone by the cleanup.
//
// StartConsulWith(t, ConsulOptions{ACL: true}) runs Consul as a cluster
// should: ACLs on, default deny, the policies of deploy/consul created
// from those very files and a token per part of serai (Consul.Tokens),
// which StartNomad puts in the Nomad agent's consul block.
//
// Typical use, each agent cleaned up by the test that started it:
//
//	c := testagents.StartConsul(t)
//	v := testagents.StartVault(t)
//	n := testagents.StartNomad(t, testagents.NomadOptions{Consul: c, Vault: v})
//
// Agents die with a test binary that crashes or times out (Pdeathsig), but a
// Nomad agent's tasks would then survive it; let tests end normally.
//
// Facts about the agents that shaped this package:
//
//   - Nomad clients probe cloud metadata endpoints unless the env_* fingerprinters
//     are denied, and the AWS fingerprinter fails when AWS_CA_BUNDLE is set;
//     agents therefore run with a minimal environment.
//   - Killing a Nomad agent while tasks run leaves `nomad executor` and
//     `nomad logmon` processes (and the tasks) behind: the executor runs in
//     its own session and survives its parent. A -dev agent destroys its
//     allocations on a graceful shutdown, a production agent does not, and
//     neither can after SIGKILL. So jobs are purged and their allocations
//     waited for before the agent is interrupted — which also lets Nomad
//     deregister the services while Consul is still up.
//   - Nomad exits with status 1 after SIGINT even when the shutdown was
//     clean; the exit status is not treated as a failure.
//   - Readiness, measured on a 2-core machine: Consul dev ~0.2 s, OpenBao dev
//     ~1-1.5 s, Nomad dev (leader, ready node, raw_exec healthy, Consul and
//     Vault fingerprinted) ~1.5-4 s; a raw_exec service passes its Consul
//     check ~0.5-1.5 s after registration.
//   - A Nomad client running as root mounts a tmpfs on each task's secrets/
//     and private/ directories; they stay mounted until the allocation is
//     garbage collected, so the data dir cannot simply be removed.
//   - Vault and OpenBao dev servers also listen on the API port + 1 (cluster
//     listener), so they need two consecutive free ports, and they write the
//     root token to ~/.vault-token unless HOME points elsewhere.
//   - raw_exec tasks inherit the Nomad agent's environment, which is how the
//     leftover-process check finds them: every agent carries a marker
//     variable that its descendants inherit.
//
// Agent configuration, port choice and clean-up come from internal/devstack,
// which `serai dev` uses too, so tests exercise what users run.
//
// It is for tests only and must not be imported by serai's binaries; it
// never configures more than a test needs (Nomad's Vault wiring is the one
// exception, as Nomad documents it) and leaves reused agents untouched.
package testagents

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/seraihq/serai/internal/devstack"
)

// markerVar is set in every agent's environment; descendants inherit it, so a
// scan of /proc finds processes an agent left behind even after they were
// re-parented away from it.
const markerVar = "SERAI_TESTAGENT_ID"

const (
	// stopGrace bounds how long an agent may take to exit after SIGINT.
	stopGrace = 20 * time.Second
	// leftoverGrace is how long descendants may take to exit after the
	// agent itself has gone.
	leftoverGrace = 5 * time.Second
	// logTail bounds how much of a log is printed for a failed test.
	logTail = 64 << 10
)

// lookBinary returns the path of the first of names found on PATH.
func lookBinary(names ...string) (path, name string, ok bool) {
	for _, n := range names {
		if p, err := exec.LookPath(n); err == nil {
			return p, n, true
		}
	}
	return "", "", false
}

// freePorts and freePortPair draw agent ports as serai dev does
// (devstack: below the ephemeral range).
func freePorts(n int) ([]int, error) { return devstack.FreePorts(n) }

func freePortPair() (int, error) { return devstack.FreePortPair() }

func randomID() string {
	b := make([]byte, 8)
	if _, err := rand.Read(b); err != nil {
		panic(err) // crypto/rand does not fail on Linux
	}
	return hex.EncodeToString(b)
}

// process is one agent started by this package.
type process struct {
	name    string // for messages: "consul", "nomad", "bao", ...
	dir     string // owns config, data, tmp and the log; removed on stop
	logPath string
	marker  string
	ports   []int // TCP ports that must be closed after stop

	cmd     *exec.Cmd
	logFile *os.File
	done    chan struct{}
	waitErr error

	stopOnce sync.Once
}

// newProcessDir creates the directory that holds everything of one agent.
// It is deliberately short and outside t.TempDir: Nomad creates unix sockets
// inside allocation directories and a long test name would push their paths
// past the 108-byte limit.
func newProcessDir(t testing.TB, name string) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "serai-"+name+"-")
	if err != nil {
		t.Fatalf("testagents: creating %s dir: %v", name, err)
	}
	// Follow symlinks so the /proc cmdline scan matches what agents see.
	if real, err := filepath.EvalSymlinks(dir); err == nil {
		dir = real
	}
	if err := os.MkdirAll(filepath.Join(dir, "tmp"), 0o700); err != nil {
		t.Fatalf("testagents: %v", err)
	}
	return dir
}

// minimalEnv is the environment agents run with: enough to find binaries,
// nothing that changes their behaviour (AWS_CA_BUNDLE, VAULT_*, NOMAD_*,
// CONSUL_*, proxies), HOME and TMPDIR inside the agent's own directory.
func minimalEnv(dir, marker string) []string {
	path := os.Getenv("PATH")
	if path == "" {
		path = "/usr/local/bin:/usr/bin:/bin"
	}
	return []string{
		"PATH=" + path,
		"HOME=" + dir,
		"TMPDIR=" + filepath.Join(dir, "tmp"),
		"LANG=C",
		markerVar + "=" + marker,
	}
}

// startProcess starts bin with args inside p.dir. The agent is started from a
// goroutine locked to its OS thread that lives until the agent exits, because
// Pdeathsig fires when the *thread* that forked the child exits; this way an
// agent dies with a crashed or killed test binary instead of lingering.
func startProcess(t testing.TB, name, dir, bin string, args []string, ports []int, extraEnv ...string) *process {
	t.Helper()
	p := &process{
		name:    name,
		dir:     dir,
		logPath: filepath.Join(dir, name+".log"),
		marker:  randomID(),
		ports:   ports,
		done:    make(chan struct{}),
	}
	f, err := os.Create(p.logPath)
	if err != nil {
		t.Fatalf("testagents: %v", err)
	}
	p.logFile = f
	cmd := exec.Command(bin, args...)
	cmd.Dir = dir
	cmd.Env = append(minimalEnv(dir, p.marker), extraEnv...)
	cmd.Stdout = f
	cmd.Stderr = f
	cmd.SysProcAttr = &syscall.SysProcAttr{
		// Own process group: a ^C on the terminal reaches the test binary,
		// whose cleanup stops agents in order, not every agent at once.
		Setpgid:   true,
		Pdeathsig: syscall.SIGKILL,
	}
	p.cmd = cmd

	started := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		// Never unlocked: the thread must outlive the child (see above).
		if err := cmd.Start(); err != nil {
			started <- err
			close(p.done)
			return
		}
		started <- nil
		p.waitErr = cmd.Wait()
		close(p.done)
	}()
	if err := <-started; err != nil {
		f.Close()
		t.Fatalf("testagents: starting %s: %v", name, err)
	}
	return p
}

// exited reports whether the agent has exited, and how.
func (p *process) exited() (bool, error) {
	select {
	case <-p.done:
		return true, p.waitErr
	default:
		return false, nil
	}
}

// stop ends the agent and checks that it left nothing behind. Problems are
// reported with t.Errorf; the log is printed when the test has failed by then.
func (p *process) stop(t testing.TB) {
	t.Helper()
	p.stopOnce.Do(func() {
		if done, _ := p.exited(); !done {
			_ = p.cmd.Process.Signal(syscall.SIGINT)
			select {
			case <-p.done:
			case <-time.After(stopGrace):
				t.Errorf("testagents: %s did not exit within %s of SIGINT; killing it", p.name, stopGrace)
				_ = p.cmd.Process.Kill()
				select {
				case <-p.done:
				case <-time.After(10 * time.Second):
					t.Errorf("testagents: %s (pid %d) survived SIGKILL", p.name, p.cmd.Process.Pid)
				}
			}
		}
		p.logFile.Close()

		if left := p.waitLeftovers(leftoverGrace); len(left) > 0 {
			t.Errorf("testagents: %s left processes behind (killed now):\n  %s", p.name, strings.Join(left, "\n  "))
			p.killLeftovers()
		}
		if open := waitPortsClosed(p.ports, 5*time.Second); len(open) > 0 {
			t.Errorf("testagents: %s: ports still accepting connections after stop: %v", p.name, open)
		}
		if t.Failed() {
			p.printLog(t)
		}
		if err := removeAll(p.dir); err != nil {
			t.Errorf("testagents: removing %s dir: %v", p.name, err)
		}
	})
}

func (p *process) printLog(t testing.TB) {
	t.Helper()
	b, err := os.ReadFile(p.logPath)
	if err != nil {
		t.Logf("testagents: %s log unreadable: %v", p.name, err)
		return
	}
	note := ""
	if len(b) > logTail {
		note = fmt.Sprintf(" (last %d of %d bytes)", logTail, len(b))
		b = b[len(b)-logTail:]
	}
	t.Logf("testagents: %s log%s:\n%s", p.name, note, b)
}

// leftovers lists live processes other than this test binary that carry the
// agent's marker in their environment or its directory in their command line.
func (p *process) leftovers() []procInfo {
	self := os.Getpid()
	var out []procInfo
	for _, pi := range listProcs() {
		if pi.pid == self || pi.zombie {
			continue
		}
		if bytes.Contains(pi.environ, []byte(markerVar+"="+p.marker)) ||
			strings.Contains(pi.cmdline, p.dir) {
			out = append(out, pi)
		}
	}
	return out
}

func (p *process) waitLeftovers(grace time.Duration) []string {
	deadline := time.Now().Add(grace)
	for {
		left := p.leftovers()
		if len(left) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			s := make([]string, len(left))
			for i, pi := range left {
				s[i] = fmt.Sprintf("pid %d: %s", pi.pid, truncate(pi.cmdline, 200))
			}
			return s
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// killLeftovers kills what waitLeftovers found, so one failed test does not
// disturb the next, and waits briefly for the kills to land.
func (p *process) killLeftovers() {
	deadline := time.Now().Add(5 * time.Second)
	for {
		left := p.leftovers()
		if len(left) == 0 || time.Now().After(deadline) {
			return
		}
		for _, pi := range left {
			_ = syscall.Kill(pi.pid, syscall.SIGKILL)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

type procInfo struct {
	pid     int
	cmdline string
	environ []byte
	zombie  bool
}

// listProcs reads what it can of /proc; processes that vanish while being
// read are skipped.
func listProcs() []procInfo {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var out []procInfo
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		base := filepath.Join("/proc", e.Name())
		cmd, err := os.ReadFile(filepath.Join(base, "cmdline"))
		if err != nil {
			continue
		}
		env, _ := os.ReadFile(filepath.Join(base, "environ"))
		stat, _ := os.ReadFile(filepath.Join(base, "stat"))
		out = append(out, procInfo{
			pid:     pid,
			cmdline: strings.TrimSpace(strings.ReplaceAll(string(cmd), "\x00", " ")),
			environ: env,
			zombie:  isZombie(stat),
		})
	}
	return out
}

// isZombie parses the state field of /proc/<pid>/stat, which follows the
// parenthesised command name (which may itself contain spaces or parens).
func isZombie(stat []byte) bool {
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 || i+2 >= len(stat) {
		return false
	}
	return stat[i+2] == 'Z' || stat[i+2] == 'X'
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// waitPortsClosed returns the ports that still accept connections at the
// deadline.
func waitPortsClosed(ports []int, grace time.Duration) []int {
	deadline := time.Now().Add(grace)
	for {
		var open []int
		for _, port := range ports {
			c, err := net.DialTimeout("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), 200*time.Millisecond)
			if err == nil {
				c.Close()
				open = append(open, port)
			}
		}
		if len(open) == 0 || time.Now().After(deadline) {
			return open
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// removeAll unmounts what Nomad mounted below dir and removes it.
func removeAll(dir string) error { return devstack.RemoveAll(dir) }

// waitFor polls check until it succeeds, the process exits or the context
// ends; the last error from check explains a timeout.
func waitFor(ctx context.Context, p *process, what string, check func(context.Context) error) error {
	var last error
	for {
		if p != nil {
			if done, err := p.exited(); done {
				return fmt.Errorf("%s exited while waiting for %s: %v", p.name, what, err)
			}
		}
		if last = check(ctx); last == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("timed out waiting for %s: %w", what, last)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// failStart ends a test whose agent did not become ready; the cleanup that
// was registered before waiting stops the agent and prints its log.
func failStart(t testing.TB, p *process, err error) {
	t.Helper()
	t.Fatalf("testagents: %s not ready: %v (log: %s)", p.name, err, p.logPath)
}

// FreeLoopbackAddr returns "127.0.0.1:port" for a server a test starts
// itself after choosing its address (a child process told where to
// listen), drawn below the ephemeral range like the agents' ports.
func FreeLoopbackAddr(t testing.TB) string {
	t.Helper()
	ports, err := freePorts(1)
	if err != nil {
		t.Fatalf("testagents: %v", err)
	}
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[0]))
}
