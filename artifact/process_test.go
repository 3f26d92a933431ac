package artifact_test

import (
	"bytes"
	"context"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/seraihq/serai/internal/s3test"
)

// buildSerai builds the serai binary the way a Nomad client would run it.
// The go build cache makes repeated builds cheap.
func buildSerai(t *testing.T) string {
	t.Helper()
	gobin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("go tool not on PATH: cannot build the serai binary to run as a process")
	}
	bin := filepath.Join(t.TempDir(), "serai")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	start := time.Now()
	cmd := exec.CommandContext(ctx, gobin, "build", "-o", bin, "github.com/seraihq/serai/cmd/serai")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/serai: %v\n%s", err, out)
	}
	t.Logf("built serai in %s", time.Since(start).Round(time.Millisecond))
	return bin
}

// run is one finished serai process.
type run struct {
	code    int
	stdout  string
	stderr  string
	peakRSS int64 // bytes, highest VmHWM seen in /proc while it ran
	elapsed time.Duration
}

// runSerai runs bin with exactly env (nothing inherited from the test, so
// no AWS_PROFILE or VAULT_TOKEN of the developer's leaks in).
//
// Peak memory is sampled from /proc/<pid>/status (VmHWM) rather than taken
// from the rusage wait returns: Go starts children with vfork semantics, and
// Linux then records the *parent's* high-water mark as the child's maxrss
// at exec, so rusage would report the test process (which holds the
// artifact in its fake S3) instead of serai.
func runSerai(t *testing.T, bin string, env map[string]string, args ...string) run {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = []string{"AWS_EC2_METADATA_DISABLED=true", "HOME=" + t.TempDir()}
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	start := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", bin, err)
	}
	done := make(chan struct{})
	peak := make(chan int64, 1)
	go func() {
		status := "/proc/" + strconv.Itoa(cmd.Process.Pid) + "/status"
		var max int64
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		for {
			if hwm := readHWM(status); hwm > max {
				max = hwm
			}
			select {
			case <-done:
				peak <- max
				return
			case <-tick.C:
			}
		}
	}()
	err := cmd.Wait()
	close(done)
	r := run{stdout: out.String(), stderr: errb.String(), elapsed: time.Since(start), peakRSS: <-peak}
	if cmd.ProcessState == nil {
		t.Fatalf("running %s: %v", bin, err)
	}
	r.code = cmd.ProcessState.ExitCode()
	return r
}

// readHWM returns VmHWM in bytes, or 0 once the process is gone.
func readHWM(statusPath string) int64 {
	b, err := os.ReadFile(statusPath)
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			if err == nil {
				return kb << 10
			}
		}
	}
	return 0
}

// noSecrets fails when any secret appears in text.
func noSecrets(t *testing.T, what, text string, secrets ...string) {
	t.Helper()
	for _, s := range secrets {
		if s != "" && strings.Contains(text, s) {
			t.Errorf("%s contains a credential", what)
		}
	}
}

// filesWithout fails when any file below dir contains one of the secrets.
func filesWithout(t *testing.T, dir string, secrets ...string) {
	t.Helper()
	err := filepath.Walk(dir, func(p string, info os.FileInfo, err error) error {
		if err != nil || !info.Mode().IsRegular() {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		for _, s := range secrets {
			if s != "" && bytes.Contains(b, []byte(s)) {
				t.Errorf("%s holds a credential", p)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestFetchModelStopsCleanlyOnSIGTERM: Nomad stops a prestart task with a
// signal (the allocation was stopped mid-download); the staging dir goes
// with it and no model dir appears.
func TestFetchModelStopsCleanlyOnSIGTERM(t *testing.T) {
	bin := buildSerai(t)
	srv := s3test.New(t, bigAccessKey, bigSecretKey)
	srv.Bucket(t, "models")
	art, _ := bigArtifact(t, 4<<20)
	srv.Put(t, "models", "m.tar.gz", bytes.NewReader(art), int64(len(art)))
	srv.SetFault(func(n int, r *http.Request) s3test.Fault { return s3test.Fault{StallAfter: 1 << 20} })

	dataDir := filepath.Join(t.TempDir(), "data")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "fetch-model")
	cmd.Env = []string{
		"HOME=" + t.TempDir(), "AWS_EC2_METADATA_DISABLED=true",
		"SERAI_MODEL_URL=s3://models/m.tar.gz", "SERAI_MODEL_DIR=" + filepath.Join(dataDir, "model"),
		"SERAI_STORE_ENDPOINT=" + srv.URL, "SERAI_STORE_PATH_STYLE=true",
		"AWS_ACCESS_KEY_ID=" + bigAccessKey, "AWS_SECRET_ACCESS_KEY=" + bigSecretKey,
	}
	var errb bytes.Buffer
	cmd.Stderr = &errb
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// Wait until the staging dir exists and data is flowing, then stop it.
	deadline := time.Now().Add(20 * time.Second)
	for {
		if m, _ := filepath.Glob(filepath.Join(dataDir, ".model.serai-fetch-*", "model", "weights")); len(m) > 0 {
			break
		}
		if time.Now().After(deadline) {
			_ = cmd.Process.Kill()
			t.Fatalf("fetch never started unpacking; stderr:\n%s", errb.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	err := cmd.Wait()
	t.Logf("stderr:\n%s", errb.String())
	if code := cmd.ProcessState.ExitCode(); code != 1 || !strings.Contains(errb.String(), "interrupted") {
		t.Errorf("exit %d (%v), want 1 with 'interrupted'", code, err)
	}
	entries, _ := os.ReadDir(dataDir)
	for _, e := range entries {
		t.Errorf("left behind in the alloc data dir: %s", e.Name())
	}
}
