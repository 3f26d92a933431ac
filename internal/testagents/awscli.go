package testagents

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// CLI runs the AWS CLI (botocore: its own serializers, SigV4 signer and
// error parsers) against one endpoint URL, with credentials from the
// environment only: no config file, no instance metadata, so nothing it
// does leaves loopback.
type CLI struct {
	t   testing.TB
	bin string
	url string
	env []string
}

// AWSCLI returns a CLI for url signing with akid/secret in region, or
// skips the test when the AWS CLI is not on PATH.
func AWSCLI(t testing.TB, url, akid, secret, region string) *CLI {
	t.Helper()
	bin, err := exec.LookPath("aws")
	if err != nil {
		t.Skip("aws (the AWS CLI) not on PATH (install Debian's awscli package)")
	}
	home := t.TempDir()
	env := append(os.Environ(),
		"HOME="+home,
		"AWS_ACCESS_KEY_ID="+akid, "AWS_SECRET_ACCESS_KEY="+secret, "AWS_DEFAULT_REGION="+region,
		"AWS_CONFIG_FILE="+filepath.Join(home, "none"), "AWS_SHARED_CREDENTIALS_FILE="+filepath.Join(home, "none"),
		"AWS_EC2_METADATA_DISABLED=true", "AWS_PAGER=", "AWS_MAX_ATTEMPTS=1", "AWS_RETRY_MODE=standard")
	return &CLI{t: t, bin: bin, url: url, env: env}
}

// Run runs one command (JSON output) and returns its exit code and
// combined output.
func (a *CLI) Run(args ...string) (int, string) {
	a.t.Helper()
	cmd := exec.Command(a.bin, append(args, "--endpoint-url", a.url, "--output", "json")...)
	cmd.Env = a.env
	out, err := cmd.CombinedOutput()
	if err != nil {
		if ee, ok := err.(*exec.ExitError); ok {
			return ee.ExitCode(), string(out)
		}
		a.t.Fatalf("aws %s: %v", strings.Join(args, " "), err)
	}
	return 0, string(out)
}

// OK runs a command that must succeed and decodes its output into v
// (unless v is nil).
func (a *CLI) OK(v any, args ...string) {
	a.t.Helper()
	code, out := a.Run(args...)
	if code != 0 {
		a.t.Fatalf("aws %s: exit %d\n%s", strings.Join(args, " "), code, out)
	}
	if v != nil {
		if err := json.Unmarshal([]byte(out), v); err != nil {
			a.t.Fatalf("aws %s printed %q: %v", strings.Join(args, " "), out, err)
		}
	}
}
