package devstack

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// SessionVar is set in the environment of every process a stack starts.
// Descendants inherit it (Nomad's raw_exec tasks inherit the agent's
// environment), so a scan of /proc finds whatever a stack left behind even
// after it was re-parented.
const SessionVar = "SERAI_DEV_SESSION"

// Process is one child process of a stack.
type Process struct {
	Name    string
	LogPath string

	cmd     *exec.Cmd
	logFile *os.File
	done    chan struct{}
	waitErr error
}

// StartProcess starts bin with args, its output in dir/name.log, in its
// own process group (a ^C on the terminal reaches the parent, which stops
// children in order) and killed if the parent dies. env is added to a
// minimal environment (PATH, HOME, TMPDIR, the session marker): variables
// meant for other agents (AWS_CA_BUNDLE, VAULT_*, NOMAD_*, CONSUL_*,
// proxies) never reach it.
//
// The child is started from a goroutine locked to its OS thread for the
// child's lifetime, because Pdeathsig fires when the forking *thread*
// exits.
func StartProcess(name, dir, session, bin string, args, env []string) (*Process, error) {
	p := &Process{Name: name, LogPath: filepath.Join(dir, name+".log"), done: make(chan struct{})}
	f, err := os.Create(p.LogPath)
	if err != nil {
		return nil, err
	}
	p.logFile = f
	cmd := exec.Command(bin, args...)
	cmd.Dir = dir
	cmd.Env = append(MinimalEnv(dir, session), env...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	p.cmd = cmd
	started := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread must outlive the child
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
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	return p, nil
}

// MinimalEnv is what children start with.
func MinimalEnv(dir, session string) []string {
	path := os.Getenv("PATH")
	if path == "" {
		path = "/usr/local/bin:/usr/bin:/bin"
	}
	if c := CacheBinDir(); !strings.Contains(path, c) {
		path += ":" + c
	}
	tmp := filepath.Join(dir, "tmp")
	_ = os.MkdirAll(tmp, 0o700)
	return []string{"PATH=" + path, "HOME=" + dir, "TMPDIR=" + tmp, "LANG=C", SessionVar + "=" + session}
}

// Exited reports whether the process has exited, and how.
func (p *Process) Exited() (bool, error) {
	select {
	case <-p.done:
		return true, p.waitErr
	default:
		return false, nil
	}
}

// Stop interrupts the process and waits up to grace before killing it.
func (p *Process) Stop(grace time.Duration) error {
	defer p.logFile.Close()
	if done, _ := p.Exited(); done {
		return nil
	}
	_ = p.cmd.Process.Signal(syscall.SIGINT)
	select {
	case <-p.done:
		return nil
	case <-time.After(grace):
	}
	_ = p.cmd.Process.Kill()
	<-p.done
	return fmt.Errorf("%s did not exit within %s of SIGINT; killed", p.Name, grace)
}

// Tail is the end of the process's log, for error messages.
func (p *Process) Tail(n int) string {
	b, _ := os.ReadFile(p.LogPath)
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}

// Leftovers lists live processes other than this one carrying the session
// marker, as "pid: cmdline".
func Leftovers(session string) []int {
	self := os.Getpid()
	want := []byte(SessionVar + "=" + session + "\x00")
	ents, _ := os.ReadDir("/proc")
	var out []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self {
			continue
		}
		env, err := os.ReadFile(filepath.Join("/proc", e.Name(), "environ"))
		if err != nil || !bytes.Contains(append(env, 0), want) {
			continue
		}
		if stat, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "stat")); isZombie(stat) {
			continue
		}
		out = append(out, pid)
	}
	return out
}

func isZombie(stat []byte) bool {
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 || i+2 >= len(stat) {
		return false
	}
	return stat[i+2] == 'Z' || stat[i+2] == 'X'
}
