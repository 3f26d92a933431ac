package bench

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// wrkScript makes wrk POST the JSON body and print, when done, one line
// the harness parses: latencies in microseconds.
const wrkScript = `wrk.method = "POST"
wrk.body = '` + requestBody + `'
wrk.headers["Content-Type"] = "application/json"
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("WRKRESULT %d %d %d %d %d %d %d %d %d %d %d\n",
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(99), latency:percentile(99.9), latency.max))
end
`

// wrkResult is one wrk run.
type wrkResult struct {
	requests int64
	duration time.Duration
	errors   int64 // connect, read, write, timeouts and non-2xx/3xx answers
	p50      time.Duration
	p99      time.Duration
	p999     time.Duration
	max      time.Duration
}

func (r wrkResult) rps() float64 { return float64(r.requests) / r.duration.Seconds() }

// runWrk drives url with conns keep-alive connections for d, with as many
// wrk threads as cores (at most one per connection).
func runWrk(t testing.TB, script, url string, conns int, d time.Duration) wrkResult {
	t.Helper()
	threads := min(conns, 2)
	ctx, cancel := context.WithTimeout(context.Background(), d+time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "wrk", "-t", strconv.Itoa(threads), "-c", strconv.Itoa(conns),
		"-d", strconv.Itoa(int(d.Seconds()))+"s", "--timeout", "5s", "-s", script, url)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("wrk: %v\n%s", err, out)
	}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) != 12 || f[0] != "WRKRESULT" {
			continue
		}
		var v [11]int64
		for i := range v {
			v[i], _ = strconv.ParseInt(f[i+1], 10, 64)
		}
		us := func(x int64) time.Duration { return time.Duration(x) * time.Microsecond }
		return wrkResult{requests: v[0], duration: us(v[1]), errors: v[2] + v[3] + v[4] + v[5] + v[6],
			p50: us(v[7]), p99: us(v[8]), p999: us(v[9]), max: us(v[10])}
	}
	t.Fatalf("wrk printed no result:\n%s", out)
	return wrkResult{}
}

func writeWrkScript(t testing.TB, dir string) string {
	p := filepath.Join(dir, "post.lua")
	writeFile(t, p, wrkScript)
	return p
}

// procStats is a process tree's CPU time and memory.
type procStats struct {
	cpu   time.Duration // user + system of every live process in the tree
	hwmKB int64         // sum of each process's peak resident set
}

const clockTicks = 100 // USER_HZ on Linux

// treeStats reads /proc for pid and its descendants (nginx's workers).
func treeStats(pid int) procStats {
	var st procStats
	if pid == 0 {
		return st
	}
	children := map[int][]int{}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if f := statFields(p); len(f) > 3 {
			pp, _ := strconv.Atoi(f[3])
			children[pp] = append(children[pp], p)
		}
	}
	var walk func(int)
	walk = func(p int) {
		if f := statFields(p); len(f) > 14 {
			u, _ := strconv.ParseInt(f[13], 10, 64)
			s, _ := strconv.ParseInt(f[14], 10, 64)
			st.cpu += time.Duration(u+s) * time.Second / clockTicks
		}
		if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p)); err == nil {
			for _, line := range strings.Split(string(b), "\n") {
				if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
					kb, _ := strconv.ParseInt(strings.Fields(v)[0], 10, 64)
					st.hwmKB += kb
				}
			}
		}
		for _, c := range children[p] {
			walk(c)
		}
	}
	walk(pid)
	return st
}

// statFields splits /proc/pid/stat, whose second field (comm) may hold
// spaces: fields are numbered as in proc(5) minus one.
func statFields(pid int) []string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return nil
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return nil
	}
	return append([]string{"pid", "comm"}, strings.Fields(string(b[i+1:]))...)
}
