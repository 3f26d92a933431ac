package testagents

import (
	"testing"
)

// Process is a long-running helper other than an agent that a test starts
// (a proxy, a load target, a server binary under test), with the agents'
// guarantees: its own directory (config, temp files, log), a minimal
// environment, death with a crashed test binary, and a stop that checks
// nothing was left behind (processes, listening ports). The bench package
// runs nginx, HAProxy, Caddy and `serai router` this way.
type Process struct{ p *process }

// NewDir creates the directory a Process of that name will own; write its
// configuration there before StartProcess. It is removed when the process
// stops.
func NewDir(t testing.TB, name string) string {
	t.Helper()
	return newProcessDir(t, name)
}

// FreePorts reserves n distinct free loopback ports below the ephemeral
// range (see agentPortRange for why there).
func FreePorts(t testing.TB, n int) []int {
	t.Helper()
	ports, err := freePorts(n)
	if err != nil {
		t.Fatalf("testagents: %v", err)
	}
	return ports
}

// StartProcess starts bin with args in dir (from NewDir), its output in a
// log file there, and stops it when the test ends. ports are the TCP ports
// it listens on, checked closed after the stop. env is added to the
// minimal environment (PATH, HOME and TMPDIR inside dir).
func StartProcess(t testing.TB, name, dir, bin string, args []string, ports []int, env ...string) *Process {
	t.Helper()
	p := startProcess(t, name, dir, bin, args, ports, env...)
	t.Cleanup(func() { p.stop(t) })
	return &Process{p}
}

// Pid is the process's ID.
func (p *Process) Pid() int { return p.p.cmd.Process.Pid }

// Dir is the directory the process owns.
func (p *Process) Dir() string { return p.p.dir }

// LogPath is the file holding its standard output and error.
func (p *Process) LogPath() string { return p.p.logPath }

// Exited reports whether the process has exited, and how.
func (p *Process) Exited() (bool, error) { return p.p.exited() }

// Stop stops it now (SIGINT, then SIGKILL after a grace period) and checks
// for leftovers; the cleanup StartProcess registered then does nothing.
func (p *Process) Stop(t testing.TB) {
	t.Helper()
	p.p.stop(t)
}

// PrintLog writes the process's log to the test log.
func (p *Process) PrintLog(t testing.TB) {
	t.Helper()
	p.p.printLog(t)
}
