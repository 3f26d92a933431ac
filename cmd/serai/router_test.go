package main

import (
	"bytes"
	"context"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"

	"github.com/seraihq/serai/internal/sigv4"
	"github.com/seraihq/serai/internal/testagents"
)

// TestRouterReloadsKeysOnSIGHUP runs the built `serai router` with
// --sigv4-keys, rewrites the key file, sends SIGHUP and checks that the old
// key is refused and the new one accepted. Consul is a closed port: the
// router serves auth answers before discovery has synced.
func TestRouterReloadsKeysOnSIGHUP(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "serai")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	keys := filepath.Join(dir, "keys")
	writeKeys := func(line string) {
		if err := os.WriteFile(keys+".tmp", []byte(line+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(keys+".tmp", keys); err != nil {
			t.Fatal(err)
		}
	}
	writeKeys("AKIDOLD old-secret-0123456789")
	listen, consul := testagents.FreeLoopbackAddr(t), testagents.FreeLoopbackAddr(t)
	proc := startSerai(t, bin, "router", "--listen", listen, "--consul-addr", consul, "--register=false", "--sigv4-keys", keys)
	cmd, logs := proc.cmd, proc.logs

	status := func(id, secret string) int {
		body := []byte("1")
		req, _ := http.NewRequest(http.MethodPost, "http://"+listen+"/endpoints/demo/invocations", bytes.NewReader(body))
		req.Header.Set("Content-Type", "text/csv")
		if err := v4.NewSigner().SignHTTP(context.Background(), aws.Credentials{AccessKeyID: id, SecretAccessKey: secret},
			req, sigv4.PayloadHash(body), "sagemaker", "us-east-1", time.Now()); err != nil {
			t.Fatal(err)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return 0
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	waitStatus := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(15 * time.Second)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s", what)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	waitStatus("the old key to pass the auth check", func() bool {
		s := status("AKIDOLD", "old-secret-0123456789")
		return s != 0 && s != http.StatusForbidden
	})
	if s := status("AKIDNEW", "new-secret-0123456789"); s != http.StatusForbidden {
		t.Fatalf("unknown key before reload: status %d, want 403", s)
	}

	writeKeys("AKIDNEW new-secret-0123456789")
	if err := cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitStatus("the old key to be refused after SIGHUP", func() bool { return status("AKIDOLD", "old-secret-0123456789") == http.StatusForbidden })
	if s := status("AKIDNEW", "new-secret-0123456789"); s == http.StatusForbidden || s == 0 {
		t.Fatalf("new key after reload: status %d", s)
	}

	// A broken file is refused and the keys in use stay.
	writeKeys("not a key line")
	cmd.Process.Signal(syscall.SIGHUP)
	waitStatus("the reload failure to be logged", func() bool { return strings.Contains(logs.String(), "SigV4 keys not reloaded") })
	if s := status("AKIDNEW", "new-secret-0123456789"); s == http.StatusForbidden || s == 0 {
		t.Fatalf("new key after a failed reload: status %d", s)
	}
}

// syncBuffer collects a child's output while the test reads it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
