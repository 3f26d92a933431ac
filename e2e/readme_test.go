package e2e

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// readmeBlock is one fenced code block of README.md.
type readmeBlock struct {
	line int    // 1-based line of the opening fence
	info string // the info string: "sh", "sh skip", "hcl", ...
	body string
}

// readmeBlocks returns the fenced code blocks of a Markdown document.
func readmeBlocks(doc string) []readmeBlock {
	var out []readmeBlock
	var cur *readmeBlock
	var body strings.Builder
	for i, l := range strings.Split(doc, "\n") {
		trimmed := strings.TrimSpace(l)
		switch {
		case cur == nil && strings.HasPrefix(trimmed, "```"):
			cur = &readmeBlock{line: i + 1, info: strings.TrimSpace(strings.TrimPrefix(trimmed, "```"))}
			body.Reset()
		case cur != nil && trimmed == "```":
			cur.body = body.String()
			out = append(out, *cur)
			cur = nil
		case cur != nil:
			body.WriteString(l + "\n")
		}
	}
	return out
}

func TestReadmeBlocks(t *testing.T) {
	got := readmeBlocks("a\n```sh\necho 1\n```\n\n```sh skip\nvagrant up\n```\n```hcl\nx = 1\n```\n")
	if len(got) != 3 || got[0].info != "sh" || got[0].body != "echo 1\n" || got[1].info != "sh skip" || got[2].line != 9 {
		t.Fatalf("%+v", got)
	}
}

// runReadme runs every ```sh block of README.md, in order, with bash
// -euo pipefail from the checkout's root, with the environment serai dev
// printed and a PATH holding the serai and model-server binaries (GOBIN
// for `go install`). Blocks fenced ```sh skip are the long-running
// set-up commands (serai dev itself, scripts/test, a foreground router)
// and the Vagrant walk-through; for those the harness checks only that
// each serai subcommand they name exists. The README documents serai
// dev's default addresses; the harness ran serai dev on free ports and
// maps the defaults to them.
func runReadme(t *testing.T, source, binDir string, env map[string]string, addrs map[string]string) {
	b, err := os.ReadFile(filepath.Join(source, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	replace := strings.NewReplacer(
		"127.0.0.1:8090", addrs["server"],
		"127.0.0.1:8081", addrs["router"],
		"127.0.0.1:8333", addrs["store"],
	)
	// `go install` in the README lands in its own directory, first on
	// PATH, so the blocks use the serai they built.
	gobin := filepath.Join(filepath.Dir(binDir), "gobin")
	shellEnv := []string{
		"HOME=" + os.Getenv("HOME"),
		"GOBIN=" + gobin,
		"PATH=" + gobin + ":" + binDir + ":" + strings.TrimSuffix(env["PATH"], ":$PATH") + ":" + os.Getenv("PATH"),
		"GOFLAGS=" + os.Getenv("GOFLAGS"),
		"GOCACHE=" + goEnv(t, "GOCACHE"),
		"GOMODCACHE=" + goEnv(t, "GOMODCACHE"),
		"GOPROXY=" + goEnv(t, "GOPROXY"),
	}
	for k, v := range env {
		if k != "PATH" {
			shellEnv = append(shellEnv, k+"="+v)
		}
	}
	ran := 0
	for _, blk := range readmeBlocks(string(b)) {
		switch {
		case blk.info == "sh":
			ran++
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
			cmd := exec.CommandContext(ctx, "bash", "-euo", "pipefail", "-c", replace.Replace(blk.body))
			cmd.Dir = source
			cmd.Env = shellEnv
			var out bytes.Buffer
			cmd.Stdout, cmd.Stderr = &out, &out
			start := time.Now()
			err := cmd.Run()
			cancel()
			if err != nil {
				t.Fatalf("README.md:%d: block failed: %v\n--- block\n%s--- output\n%s", blk.line, err, blk.body, out.String())
			}
			t.Logf("README.md:%d ran in %s", blk.line, time.Since(start).Round(100*time.Millisecond))
		case strings.HasPrefix(blk.info, "sh"):
			for _, l := range strings.Split(blk.body, "\n") {
				f := strings.Fields(l)
				for i, w := range f {
					if (w == "serai" || strings.HasSuffix(w, "/cmd/serai")) && i+1 < len(f) && !strings.HasPrefix(f[i+1], "-") {
						if b, err := exec.Command(filepath.Join(binDir, "serai"), f[i+1], "--help").CombinedOutput(); err != nil {
							t.Errorf("README.md:%d: `serai %s` is not a command: %v\n%s", blk.line, f[i+1], err, b)
						}
					}
				}
			}
		}
	}
	if ran == 0 {
		t.Fatal("README.md has no ```sh block to run")
	}
	t.Logf("RESULT README: %d sh blocks ran as written against serai dev", ran)
}

func goEnv(t *testing.T, k string) string {
	b, err := exec.Command("go", "env", k).Output()
	if err != nil {
		t.Fatalf("go env %s: %v", k, err)
	}
	return strings.TrimSpace(string(b))
}
