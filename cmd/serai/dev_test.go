package main

import (
	"bytes"
	"strings"
	"testing"
)

// TestDevMissingAgent: without the agents, serai dev says in one line
// which binary is missing and how to get it, and exits 1 (downloading is
// off, so nothing leaves the machine).
func TestDevMissingAgent(t *testing.T) {
	home := t.TempDir()
	t.Setenv("PATH", home)
	t.Setenv("HOME", home)
	t.Setenv("XDG_CACHE_HOME", home)
	var stdout, stderr bytes.Buffer
	code := run([]string{"serai", "dev", "--download-timeout", "0", "--data-dir", t.TempDir()}, &stdout, &stderr)
	if code != exitError {
		t.Fatalf("exit %d, want %d; stderr %q", code, exitError, stderr.String())
	}
	msg := strings.TrimSpace(stderr.String())
	if strings.Count(msg, "\n") != 0 || !strings.Contains(msg, "consul not found") || !strings.Contains(msg, "scripts/agents") {
		t.Fatalf("want one line naming consul and how to get it, got %q", msg)
	}
}
