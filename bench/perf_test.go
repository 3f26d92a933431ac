package bench

import (
	"cmp"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/seraihq/serai/internal/testagents"
)

// run is one (target, size, connections) measurement.
type run struct {
	target string
	size   string
	conns  int
	res    wrkResult
	cpu    time.Duration // the target's CPU time during the run
	shareB float64       // fraction of the backend's requests that went to b
}

// cpuPer10k is the target's CPU seconds per 10,000 requests.
func (r run) cpuPer10k() float64 {
	if r.res.requests == 0 {
		return 0
	}
	return r.cpu.Seconds() / float64(r.res.requests) * 10000
}

// TestPerformance is the same-run comparison (see the package comment).
// Without -bench.full it is a smoke run of a few seconds.
func TestPerformance(t *testing.T) {
	if _, err := exec.LookPath("wrk"); err != nil {
		t.Skip("wrk not on PATH: apt-get install wrk (the load generator every target is measured with)")
	}
	cfg := benchConfig()
	began := time.Now()
	machine := describeMachine()

	bk := startBackends(t)
	// An agent at its defaults: the scale measurement's 1,000 endpoints
	// are past Consul's 200 connections per client address, which the
	// router's shared health watch stays under.
	consul := testagents.StartConsul(t)
	registerEndpoints(t, consul.Client, bk)
	seraiBin := buildSerai(t, t.TempDir())

	direct := &target{name: "direct", url: map[string]string{}}
	for _, s := range sizes {
		direct.url[s.name] = "http://" + bk.addr("a", s.name) + "/invocations"
	}
	targets := []*target{direct}
	var skipped []string
	want := func(name string) bool {
		return cfg.targets == nil || cfg.targets[name]
	}
	switch {
	case want("serai") && *profileDir != "":
		targets = append(targets, startProfiledSerai(t, consul.Addr, *profileDir))
	case want("serai"):
		var env []string
		if *seraiEnv != "" {
			env = strings.Fields(*seraiEnv)
		}
		targets = append(targets, startSerai(t, "serai", consul.Addr, seraiBin, env...))
	}
	var baseCommit string
	if *baseline != "" {
		var bin string
		bin, baseCommit = buildBaseline(t, *baseline)
		targets = append(targets, startSerai(t, "serai-base", consul.Addr, bin))
	}
	for _, p := range []struct {
		name, bin string
		start     func(*testing.T, string, *backends) *target
	}{{"nginx", "nginx", startNginx}, {"haproxy", "haproxy", startHAProxy}, {"caddy", "caddy", startCaddy}} {
		if !want(p.name) {
			continue
		}
		bin, err := exec.LookPath(p.bin)
		if err != nil {
			t.Logf("%s not on PATH (apt-get install %s): left out of this run", p.name, p.name)
			skipped = append(skipped, p.name)
			continue
		}
		targets = append(targets, p.start(t, bin, bk))
	}
	for _, tg := range targets {
		checkAnswers(t, tg)
	}

	script := writeWrkScript(t, t.TempDir())
	var runs []run
	// Each point is measured in rounds that go through every target in
	// turn, and the round with the median requests/s is kept: on a shared
	// machine a burst of someone else's work then lands on one round of
	// every target rather than on all of one target's time.
	measure := func(tg *target, size string, conns int) run {
		a0, b0 := bk.served(t)
		before := treeStats(tg.pid)
		res := runWrk(t, script, tg.url[size], conns, cfg.duration)
		after := treeStats(tg.pid)
		a1, b1 := bk.served(t)
		r := run{target: tg.name, size: size, conns: conns, res: res, cpu: after.cpu - before.cpu}
		if d := (a1 - a0) + (b1 - b0); d > 0 {
			r.shareB = float64(b1-b0) / float64(d)
		}
		if res.errors > 0 && (tg.name == "serai" || tg.name == "direct") {
			t.Errorf("%s %s c=%d: %d errors (connect, read, write, timeout or non-2xx)", tg.name, size, conns, res.errors)
		}
		return r
	}
	for _, size := range cfg.sizes {
		for _, conns := range cfg.conns {
			if size == "stream" && cfg.full && conns != 1 && conns != 64 {
				continue // two points keep the run under ten minutes
			}
			for _, tg := range targets {
				// Warm-up: connections and pools; not recorded.
				runWrk(t, script, tg.url[size], conns, time.Second)
			}
			rounds := make([][]run, len(targets))
			for range cfg.rounds {
				for i, tg := range targets {
					rounds[i] = append(rounds[i], measure(tg, size, conns))
				}
			}
			for i := range targets {
				rs := rounds[i]
				slices.SortFunc(rs, func(a, b run) int { return cmp.Compare(a.res.rps(), b.res.rps()) })
				r := rs[len(rs)/2]
				runs = append(runs, r)
				t.Logf("RESULT bench %s %s c=%d: %.0f req/s p50 %s p99 %s p99.9 %s errors %d cpu %.3fs/10k share-b %.3f",
					r.target, size, conns, r.res.rps(), r.res.p50, r.res.p99, r.res.p999, r.res.errors, r.cpuPer10k(), r.shareB)
			}
		}
	}
	peak := map[string]int64{}
	for _, tg := range targets {
		peak[tg.name] = treeStats(tg.pid).hwmKB
	}
	rep := &report{machine: machine, runs: runs, peakKB: peak, cfg: cfg, skipped: skipped, elapsed: time.Since(began), baseCommit: baseCommit}
	for _, tg := range targets {
		rep.targets = append(rep.targets, tg.name)
	}
	for _, line := range rep.summaryLines() {
		t.Logf("RESULT %s", line)
	}

	if *outPath != "" {
		rep.scale = measureScale(t, consul, cfg.endpoints)
		rep.elapsed = time.Since(began)
		if err := rep.write(*outPath); err != nil {
			t.Fatal(err)
		}
		t.Logf("wrote %s", *outPath)
	} else {
		t.Run("control-data", func(t *testing.T) {
			s := measureScale(t, consul, cfg.endpoints)
			for _, line := range s.lines() {
				t.Logf("RESULT %s", line)
			}
		})
	}
}

type config struct {
	full      bool
	duration  time.Duration
	rounds    int
	conns     []int
	sizes     []string
	targets   map[string]bool
	endpoints int
}

func benchConfig() config {
	c := config{full: *fullRun, duration: 2 * time.Second, rounds: 1, conns: []int{64}, sizes: []string{"1k"}, endpoints: 20}
	if c.full {
		c.duration = 2 * time.Second
		c.rounds = 3
		c.conns = []int{1, 16, 64, 256}
		c.sizes = []string{"1k", "256k", "stream"}
		c.endpoints = 1000
	}
	if *duration > 0 {
		c.duration = *duration
	}
	if *roundsF > 0 {
		c.rounds = *roundsF
	}
	if *connsF != "" {
		c.conns = nil
		for _, s := range strings.Split(*connsF, ",") {
			if n, err := strconv.Atoi(strings.TrimSpace(s)); err == nil && n > 0 {
				c.conns = append(c.conns, n)
			}
		}
	}
	if *sizesF != "" {
		c.sizes = strings.Split(*sizesF, ",")
	}
	if *targetsF != "" {
		c.targets = map[string]bool{"direct": true}
		for _, s := range strings.Split(*targetsF, ",") {
			c.targets[strings.TrimSpace(s)] = true
		}
	}
	if *scaleN > 0 {
		c.endpoints = *scaleN
	}
	return c
}
