package testagents

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
)

const dockerReadyTimeout = 90 * time.Second

// dockerMissing is the skip reason when Docker's daemon is not installed.
const dockerMissing = "dockerd not on PATH: install Debian's docker.io (.ci/run does: apt-get install docker.io)"

// Docker is a Docker daemon a test started, with its own data root, exec
// root and socket, so it shares nothing (images, containers, networks) with
// any other daemon on the machine.
type Docker struct {
	// Host is the daemon's address for the docker CLI (DOCKER_HOST) and
	// for Nomad's docker driver (endpoint): "unix:///…/docker.sock".
	Host string
	// LogPath is the daemon's log file.
	LogPath string

	sock string
	proc *process
}

// startDockerd starts dockerd inside the network namespace at netnsPath
// (entered with nsenter, which switches only the network namespace: `ip
// netns exec` would also remount /sys and hide the cgroup hierarchy dockerd
// and Nomad need). Containers get the daemon's bridge inside that
// namespace, and published ports are bound on the namespace's addresses.
// The daemon is stopped, after checking that no container is left, by the
// test's cleanup.
func startDockerd(t testing.TB, name, netnsPath string) *Docker {
	t.Helper()
	bin, _, ok := lookBinary("dockerd")
	if !ok {
		t.Skip(dockerMissing)
	}
	nsenter, _, ok := lookBinary("nsenter")
	if !ok {
		t.Skip("nsenter not on PATH: install Debian's util-linux")
	}
	dir := newProcessDir(t, "dockerd")
	d := &Docker{sock: filepath.Join(dir, "docker.sock")}
	d.Host = "unix://" + d.sock
	args := []string{
		"--net=" + netnsPath, "--", bin,
		"--data-root", filepath.Join(dir, "data"),
		// The exec root holds containerd's socket: keep it short (108
		// bytes for unix socket paths).
		"--exec-root", filepath.Join(dir, "x"),
		"--pidfile", filepath.Join(dir, "docker.pid"),
		"--host", d.Host,
		// No /etc/docker/daemon.json: the machine's settings (registry
		// mirrors, insecure registries) are not the test's.
		"--config-file", filepath.Join(dir, "daemon.json"),
		"--log-level", "warn",
	}
	if err := os.WriteFile(filepath.Join(dir, "daemon.json"), []byte("{}\n"), 0o600); err != nil {
		t.Fatalf("testagents: %v", err)
	}
	begin := time.Now()
	p := startProcess(t, name, dir, nsenter, args, nil)
	d.proc = p
	d.LogPath = p.logPath
	t.Cleanup(func() { d.stop(t) })
	ctx, cancel := context.WithTimeout(context.Background(), dockerReadyTimeout)
	defer cancel()
	if err := waitFor(ctx, p, "dockerd to answer /_ping", d.ping); err != nil {
		failStart(t, p, err)
	}
	t.Logf("testagents: %s ready at %s in %s", name, d.Host, time.Since(begin).Round(time.Millisecond))
	return d
}

func (d *Docker) client() *http.Client {
	return &http.Client{
		Timeout: 10 * time.Second,
		Transport: &http.Transport{
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				var dl net.Dialer
				return dl.DialContext(ctx, "unix", d.sock)
			},
		},
	}
}

// get calls the Engine API (any version the daemon speaks) and decodes JSON
// into v, or returns the body as text when v is nil.
func (d *Docker) get(ctx context.Context, path string, v any) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://docker"+path, nil)
	if err != nil {
		return "", err
	}
	cl := d.client()
	defer cl.CloseIdleConnections()
	resp, err := cl.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("GET %s: %s: %s", path, resp.Status, b)
	}
	if v != nil {
		return "", json.Unmarshal(b, v)
	}
	return string(b), nil
}

func (d *Docker) ping(ctx context.Context) error {
	body, err := d.get(ctx, "/_ping", nil)
	if err != nil {
		return err
	}
	if body != "OK" {
		return fmt.Errorf("/_ping answered %q", body)
	}
	return nil
}

// Container is what the Engine API's container list says of one container.
type Container struct {
	ID     string
	Image  string
	State  string
	Labels map[string]string
}

// Containers lists the daemon's containers, stopped ones included.
func (d *Docker) Containers(t testing.TB) []Container {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var cs []Container
	if _, err := d.get(ctx, "/containers/json?all=1", &cs); err != nil {
		t.Fatalf("testagents: listing containers: %v", err)
	}
	return cs
}

// ContainerInfo is the part of a container's inspection tests look at.
type ContainerInfo struct {
	ID    string
	Image string
	State struct {
		Pid     int
		Running bool
	}
	Config struct {
		Env    []string
		Image  string
		Labels map[string]string
	}
	Mounts []struct {
		Type        string
		Source      string
		Destination string
		RW          bool
	}
}

// Inspect returns a container's configuration and state.
func (d *Docker) Inspect(t testing.TB, id string) ContainerInfo {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var ci ContainerInfo
	if _, err := d.get(ctx, "/containers/"+id+"/json", &ci); err != nil {
		t.Fatalf("testagents: inspecting container %s: %v", id, err)
	}
	return ci
}

// BuildImages builds serai's images with scripts/images (the documented
// command) in this daemon, tagged tag.
func (d *Docker) BuildImages(t testing.TB, tag string) {
	t.Helper()
	root, err := repoRoot()
	if err != nil {
		t.Fatalf("testagents: %v", err)
	}
	cmd := exec.Command(filepath.Join(root, "scripts", "images"), tag)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "DOCKER_HOST="+d.Host)
	begin := time.Now()
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("testagents: scripts/images %s (DOCKER_HOST=%s): %v\n%s", tag, d.Host, err, out)
	}
	t.Logf("testagents: built serai:%s and serai-model-server:%s in %s in %s", tag, tag, d.Host, time.Since(begin).Round(time.Millisecond))
}

// repoRoot is the module root: this file lives in internal/testagents.
func repoRoot() (string, error) {
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		return "", fmt.Errorf("cannot locate the repository")
	}
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", "..")), nil
}

// stop checks that Nomad removed every container, removes any that are
// left (as an error), and stops the daemon; its mounts and directories go
// with it.
func (d *Docker) stop(t testing.TB) {
	t.Helper()
	if done, _ := d.proc.exited(); !done {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		var cs []Container
		if _, err := d.get(ctx, "/containers/json?all=1", &cs); err != nil {
			t.Errorf("testagents: %s: listing containers before stop: %v", d.proc.name, err)
		}
		cancel()
		if len(cs) > 0 {
			var s []string
			for _, c := range cs {
				s = append(s, c.ID[:12]+" "+c.Image+" "+c.State)
			}
			t.Errorf("testagents: %s: containers left behind (removed now): %s", d.proc.name, strings.Join(s, ", "))
			for _, c := range cs {
				d.remove(c.ID)
			}
		}
	}
	d.proc.stop(t)
}

func (d *Docker) remove(id string) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodDelete, "http://docker/containers/"+id+"?force=1&v=1", nil)
	if err != nil {
		return
	}
	cl := d.client()
	defer cl.CloseIdleConnections()
	if resp, err := cl.Do(req); err == nil {
		resp.Body.Close()
	}
}
