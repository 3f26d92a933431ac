package bench

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"strings"
	"syscall"
	"testing"

	consulapi "github.com/hashicorp/consul/api"

	"github.com/seraihq/serai/internal/testagents"
	"github.com/seraihq/serai/router"
)

var profileDir = flag.String("bench.profile", "", "run the router in a re-executed test binary (the same router.New + ConsulDiscovery + Serve as `serai router`) and write cpu.pprof and allocs.pprof of the whole run into this directory")

// routerEnv tells a re-executed test binary to be the router under
// profile: "listen,consulAddr,profileDir".
const routerEnv = "SERAI_BENCH_ROUTER"

// runProfiledRouter is cmd/serai's runRouter with its default flags, plus
// a CPU profile from start to SIGINT and an allocation profile at the end.
func runProfiledRouter(spec string) error {
	f := strings.SplitN(spec, ",", 3)
	if len(f) != 3 {
		return fmt.Errorf("bad %s %q", routerEnv, spec)
	}
	listen, consulAddr, dir := f[0], f[1], f[2]
	cpu, err := os.Create(filepath.Join(dir, "cpu.pprof"))
	if err != nil {
		return err
	}
	runtime.MemProfileRate = 64 << 10
	if err := pprof.StartCPUProfile(cpu); err != nil {
		return err
	}
	cfg := consulapi.DefaultConfig()
	cfg.Address = consulAddr
	consul, err := consulapi.NewClient(cfg)
	if err != nil {
		return err
	}
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(400) // as cmd/serai's router does
	}
	rt, err := router.New(router.Config{})
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err = router.Serve(ctx, rt, router.NewConsulDiscovery(router.ConsulConfig{Client: consul}), router.ServerConfig{Listen: listen})
	pprof.StopCPUProfile()
	cpu.Close()
	if a, aerr := os.Create(filepath.Join(dir, "allocs.pprof")); aerr == nil {
		pprof.Lookup("allocs").WriteTo(a, 0)
		a.Close()
	}
	return err
}

func startProfiledSerai(t *testing.T, consulAddr, dir string) *target {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	abs, _ := filepath.Abs(dir)
	port := testagents.FreePorts(t, 1)[0]
	pdir := testagents.NewDir(t, "router")
	listen := fmt.Sprintf("127.0.0.1:%d", port)
	p := testagents.StartProcess(t, "serai-router-profiled", pdir, self, []string{"-test.run=^$"}, []int{port},
		routerEnv+"="+listen+","+consulAddr+","+abs)
	tg := &target{name: "serai", proc: p, pid: p.Pid(), url: seraiURLs(listen)}
	t.Cleanup(func() { t.Logf("profiles in %s (go tool pprof %s/cpu.pprof)", abs, abs) })
	return tg
}
