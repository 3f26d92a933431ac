package bench

import (
	"context"
	"fmt"
	"runtime"
	"slices"
	"sync"
	"testing"
	"time"

	consulapi "github.com/hashicorp/consul/api"
	"github.com/hashicorp/go-hclog"

	"github.com/seraihq/serai/contract"
	"github.com/seraihq/serai/internal/testagents"
	"github.com/seraihq/serai/router"
)

const (
	scaleInstances = 10
	scaleNode      = "bench-scale"
	flipCheck      = "bench-flip"
	// consulTxnOps is the most operations one Consul transaction takes.
	consulTxnOps = 64
)

// scaleResult is the control-data measurement.
type scaleResult struct {
	endpoints, instances int
	register             time.Duration // writing them to Consul (Consul's cost, for scale)
	load                 time.Duration // discovery start until every endpoint routes to all its instances
	rebuildP50           time.Duration // one endpoint's instances replaced with the others in the table
	rebuildMax           time.Duration
	heapBytes            int64 // live heap + goroutine stacks held by router and discovery
	goroutines           int
	convergeP50          time.Duration // Consul health change → routing change
	convergeMax          time.Duration
	flips                int
}

func (s scaleResult) lines() []string {
	return []string{
		fmt.Sprintf("control-data %d endpoints x %d instances: initial load %s, rebuild p50 %s max %s, memory %.1f MiB, %d goroutines",
			s.endpoints, s.instances, s.load.Round(time.Millisecond), s.rebuildP50.Round(time.Microsecond),
			s.rebuildMax.Round(time.Microsecond), float64(s.heapBytes)/(1<<20), s.goroutines),
		fmt.Sprintf("control-data convergence (health check flip → routing change, %d flips): p50 %s max %s",
			s.flips, s.convergeP50.Round(time.Millisecond), s.convergeMax.Round(time.Millisecond)),
	}
}

// countingSink forwards to the router and tells when endpoints reach a
// given instance count.
type countingSink struct {
	*router.Router
	mu      sync.Mutex
	counts  map[string]int
	full    int // endpoints with all their instances
	want    int
	allDone chan struct{}
	watch   string
	changes chan int // instance counts of the watched endpoint
}

func (s *countingSink) SetInstances(ep string, insts []router.Instance) {
	s.Router.SetInstances(ep, insts)
	s.mu.Lock()
	old := s.counts[ep]
	s.counts[ep] = len(insts)
	if old != scaleInstances && len(insts) == scaleInstances {
		s.full++
		if s.full == s.want {
			close(s.allDone)
		}
	}
	s.mu.Unlock()
	if ep == s.watch {
		select {
		case s.changes <- len(insts):
		default:
		}
	}
}

func scaleName(i int) string { return fmt.Sprintf("scale-%04d", i) }

// measureScale writes n endpoints × 10 instances into Consul (a node of
// its own, so the agent's anti-entropy leaves them alone), starts a Router
// with ConsulDiscovery in this process, and measures how long it takes to
// route to all of them, what one rebuild costs with all of them in the
// table, the memory held, and how fast a health change shows up.
func measureScale(t *testing.T, c *testagents.Consul, n int) scaleResult {
	res := scaleResult{endpoints: n, instances: scaleInstances}
	cc := c.Client
	t.Cleanup(func() {
		cc.Catalog().Deregister(&consulapi.CatalogDeregistration{Node: scaleNode}, nil)
		cc.KV().DeleteTree(contract.RoutesKeyPrefix+"scale-", nil)
	})

	var ops consulapi.TxnOps
	flush := func() {
		if len(ops) == 0 {
			return
		}
		ok, resp, _, err := cc.Txn().Txn(ops, nil)
		if err != nil || !ok {
			t.Fatalf("consul txn: %v %+v", err, resp)
		}
		ops = ops[:0]
	}
	add := func(op *consulapi.TxnOp) {
		ops = append(ops, op)
		if len(ops) == consulTxnOps {
			flush()
		}
	}
	start := time.Now()
	add(&consulapi.TxnOp{Node: &consulapi.NodeTxnOp{Verb: consulapi.NodeSet, Node: consulapi.Node{Node: scaleNode, Address: "127.0.0.1"}}})
	for i := range n {
		ep := scaleName(i)
		routes := &contract.Routes{Version: contract.RoutesVersion, Endpoint: ep, Generations: []contract.Generation{{
			Generation: 1, Weight: 1, Variants: []contract.Variant{{Name: "a", Weight: 0.9}, {Name: "b", Weight: 0.1}},
		}}}
		b, err := contract.EncodeRoutes(routes)
		if err != nil {
			t.Fatal(err)
		}
		for j := range scaleInstances {
			v := "a"
			if j%scaleInstances == scaleInstances-1 {
				v = "b"
			}
			id := fmt.Sprintf("%s-%d", ep, j)
			add(&consulapi.TxnOp{Service: &consulapi.ServiceTxnOp{Verb: consulapi.ServiceSet, Node: scaleNode, Service: consulapi.AgentService{
				ID: id, Service: contract.ServiceName(ep), Address: "127.0.0.1", Port: 20000 + i*scaleInstances + j,
				Tags: contract.InstanceTags{Variant: v, Generation: 1, Model: "scale"}.Format(),
				Meta: contract.ServiceMeta(ep, 1),
			}}})
			// Every instance has a check of its own, as Nomad registers
			// them (routers do not trust a check-less instance); the one
			// the convergence rounds flip is instance 0 of endpoint 0's.
			if i == 0 && j == 0 {
				add(flip(id, consulapi.HealthPassing))
			} else {
				add(&consulapi.TxnOp{Check: &consulapi.CheckTxnOp{Verb: consulapi.CheckSet, Check: consulapi.HealthCheck{
					Node: scaleNode, CheckID: "check-" + id, Name: "ping", Status: consulapi.HealthPassing, ServiceID: id,
				}}})
			}
		}
		add(&consulapi.TxnOp{KV: &consulapi.KVTxnOp{Verb: consulapi.KVSet, Key: contract.RoutesKey(ep), Value: b}})
	}
	flush()
	res.register = time.Since(start)

	var before runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	g0 := runtime.NumGoroutine()
	rt, err := router.New(router.Config{Logger: hclog.NewNullLogger()})
	if err != nil {
		t.Fatal(err)
	}
	sink := &countingSink{Router: rt, counts: map[string]int{}, want: n, allDone: make(chan struct{}),
		watch: scaleName(0), changes: make(chan int, 16)}
	disc := router.NewConsulDiscovery(router.ConsulConfig{Client: cc})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	start = time.Now()
	go func() {
		defer close(done)
		disc.Run(ctx, sink)
	}()
	defer func() {
		cancel()
		<-done
		rt.Close()
	}()
	select {
	case <-sink.allDone:
	case <-time.After(5 * time.Minute):
		t.Fatalf("only %d of %d endpoints loaded after 5 minutes", sink.full, n)
	}
	res.load = time.Since(start)

	var after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&after)
	res.heapBytes = int64(after.HeapInuse+after.StackInuse) - int64(before.HeapInuse+before.StackInuse)
	res.goroutines = runtime.NumGoroutine() - g0

	// A rebuild with everything in the table: replace one endpoint's
	// instances, as a health change does.
	var insts []router.Instance
	for j := range scaleInstances {
		insts = append(insts, router.Instance{ID: fmt.Sprint("x", j), Address: fmt.Sprintf("127.0.0.1:%d", 40000+j), Variant: "a", Generation: 1})
	}
	var took []time.Duration
	for k := range 200 {
		ep := scaleName(1 + k%max(n-1, 1))
		s := time.Now()
		rt.SetInstances(ep, insts[:scaleInstances-k%2])
		took = append(took, time.Since(s))
	}
	slices.Sort(took)
	res.rebuildP50, res.rebuildMax = took[len(took)/2], took[len(took)-1]

	// Convergence: flip instance 0 of endpoint 0 critical and back.
	var conv []time.Duration
	for k := range 20 {
		status, want := consulapi.HealthCritical, scaleInstances-1
		if k%2 == 1 {
			status, want = consulapi.HealthPassing, scaleInstances
		}
		s := time.Now()
		if ok, resp, _, err := cc.Txn().Txn(consulapi.TxnOps{flip(scaleName(0)+"-0", status)}, nil); err != nil || !ok {
			t.Fatalf("consul txn: %v %+v", err, resp)
		}
		deadline := time.After(30 * time.Second)
	wait:
		for {
			select {
			case got := <-sink.changes:
				if got == want {
					break wait
				}
			case <-deadline:
				t.Fatalf("health change to %s not seen in 30 s", status)
			}
		}
		conv = append(conv, time.Since(s))
	}
	slices.Sort(conv)
	res.flips = len(conv)
	res.convergeP50, res.convergeMax = conv[len(conv)/2], conv[len(conv)-1]
	return res
}

// flip sets the check on one scale instance.
func flip(serviceID, status string) *consulapi.TxnOp {
	return &consulapi.TxnOp{Check: &consulapi.CheckTxnOp{Verb: consulapi.CheckSet, Check: consulapi.HealthCheck{
		Node: scaleNode, CheckID: flipCheck, Name: flipCheck, Status: status, ServiceID: serviceID,
	}}}
}
