package reconcile

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/seraihq/serai/server/records"
	"github.com/seraihq/serai/server/smapi"
)

// Faults of the cluster and of the records, one endpoint at a time: each
// costs that endpoint, never the others.

// A Nomad that hangs on one endpoint's jobs costs that endpoint's step
// one StepTimeout, recorded on the record as a step deadline error, while
// the other endpoints are created in the same pass; no more than Workers
// steps run at once.
func TestHungNomadCostsOneWorkerOneDeadline(t *testing.T) {
	e := newEnv(t)
	e.r.cfg.StepTimeout = 200 * time.Millisecond
	e.r.cfg.Workers = 2
	e.r.workers = make(chan struct{}, 2)
	e.c.hang["stuck"] = true
	for _, name := range []string{"stuck", "a", "b", "c"} {
		e.create(name, "c1")
	}
	for i := 0; i < 6; i++ {
		e.r.Pass(context.Background())
		e.clk.Add(time.Second)
	}
	for _, name := range []string{"a", "b", "c"} {
		if ep := e.get(name); !inService(ep) {
			t.Errorf("%s: %s, want InService beside a hung endpoint", name, ep.Status)
		}
	}
	ep := e.get("stuck")
	if ep.Op == nil || ep.Op.Phase != records.PhaseRegister || !strings.Contains(ep.Op.LastError, ErrStepDeadline.Error()) {
		t.Fatalf("stuck endpoint: op %+v, want register with a step deadline error", ep.Op)
	}
	if e.c.peak > 2 {
		t.Errorf("%d Nomad calls at once with Workers 2", e.c.peak)
	}
	// Nomad comes back: the endpoint converges.
	e.c.mu.Lock()
	e.c.hang["stuck"] = false
	e.c.mu.Unlock()
	e.drive("stuck", 10, inService)
}

// A step still running (hung) when the next tick comes is not started a
// second time: Run does not wait for it, and does not pile steps up.
func TestRunSkipsEndpointStillStepping(t *testing.T) {
	e := newEnv(t)
	e.r.cfg.StepTimeout = time.Hour // only the test's cancel ends the hang
	e.r.cfg.Tick = 5 * time.Millisecond
	e.c.hang["stuck"] = true
	e.create("stuck", "c1")
	e.create("a", "c1")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.r.Run(ctx) }()
	hung := func() int {
		e.c.mu.Lock()
		defer e.c.mu.Unlock()
		return e.c.hung
	}
	// a converges while stuck's first register call hangs.
	for !inService(e.get("a")) || hung() == 0 {
		time.Sleep(10 * time.Millisecond)
		e.clk.Add(time.Second)
	}
	// Many more ticks (and back-off periods) go by: still that one call.
	for i := 0; i < 20; i++ {
		time.Sleep(10 * time.Millisecond)
		e.clk.Add(time.Second)
	}
	if n := hung(); n != 1 {
		t.Errorf("%d hung Nomad calls, want the one register: a running step was started again", n)
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("Run: %v", err)
	}
}

// A corrupt endpoint record is set aside: the others are created as if
// it were not there, and it is left untouched (not rewritten, not
// deleted).
func TestCorruptEndpointRecordIsolated(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	garbage := []byte("{not json")
	must(t, e.store.KV.CAS(ctx, records.KindEndpoint.Key("broken"), garbage, 0))
	e.create("a", "c1")
	e.create("b", "c2")
	e.drive("a", 10, inService)
	e.drive("b", 10, inService)
	raw, _, err := e.store.KV.Get(ctx, records.KindEndpoint.Key("broken"))
	if err != nil || string(raw) != string(garbage) {
		t.Fatalf("corrupt record changed: %q %v", raw, err)
	}
	// Its Vault role (if any) is not torn down by another endpoint's
	// delete, since which models it uses is unknown.
	e.op("a", &records.Operation{Kind: records.OpDelete}, smapi.StatusDeleting)
	e.drive("a", 20, func(ep *records.Endpoint) bool { return ep == nil })
	if _, ok := e.c.vault["m1"]; !ok {
		t.Errorf("vault role of m1 removed while a corrupt endpoint record might use it")
	}
}

// A corrupt config fails the create that uses it, naming the key; an
// update to a corrupt config rolls back with the key in the reason; a
// corrupt model fails its endpoint the same way; an endpoint on sound
// records is created meanwhile.
func TestCorruptConfigOrModelFailsOnlyItsEndpoints(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	must(t, e.store.KV.CAS(ctx, records.KindEndpointConfig.Key("bad-config"), []byte("garbage"), 0))
	must(t, e.store.KV.CAS(ctx, records.KindModel.Key("bad-model"), []byte(`{"name": 7}`), 0))
	cfg := records.EndpointConfig{Name: "uses-bad-model", Spec: smapi.CreateEndpointConfigInput{EndpointConfigName: "uses-bad-model",
		ProductionVariants: []smapi.ProductionVariant{{VariantName: "a", ModelName: "bad-model", InstanceType: "ml.m5.large"}}}}
	must(t, e.store.Put(ctx, records.KindEndpointConfig, cfg.Name, &cfg, 0))

	e.create("on-bad-config", "bad-config")
	e.create("on-bad-model", "uses-bad-model")
	e.create("good", "c1")
	e.create("updated", "c1")
	e.drive("updated", 10, inService)
	e.update("updated", "bad-config", nil, nil)

	e.drive("good", 10, inService)
	for name, key := range map[string]string{
		"on-bad-config": "serai/endpoint-configs/bad-config",
		"on-bad-model":  "serai/models/bad-model",
	} {
		ep := e.drive(name, 10, func(ep *records.Endpoint) bool { return ep.Op == nil })
		if ep.Status != smapi.StatusFailed || !strings.Contains(ep.FailureReason, key) || !strings.Contains(ep.FailureReason, "corrupt") {
			t.Errorf("%s: status %s reason %q, want Failed naming %s", name, ep.Status, ep.FailureReason, key)
		}
	}
	ep := e.drive("updated", 10, func(ep *records.Endpoint) bool { return ep.Op == nil })
	if ep.Status != smapi.StatusInService || ep.ConfigName != "c1" || !strings.Contains(ep.FailureReason, "serai/endpoint-configs/bad-config") {
		t.Errorf("update to a corrupt config: status %s config %s reason %q", ep.Status, ep.ConfigName, ep.FailureReason)
	}
}

// A record store that fails for a moment while an operation reads its
// config is retried, not taken for a missing config.
func TestConfigReadErrorIsRetried(t *testing.T) {
	e := newEnv(t)
	e.create("ep", "c1")
	flaky := &flakyKV{KV: e.store.KV, failKey: records.KindEndpointConfig.Key("c1"), failures: 1}
	e.store.KV = flaky
	e.r.cfg.Store = e.store
	ep := e.drive("ep", 10, inService)
	if ep.FailureReason != "" || flaky.failures != 0 {
		t.Fatalf("reason %q, failures left %d", ep.FailureReason, flaky.failures)
	}
}

type flakyKV struct {
	records.KV
	failKey  string
	failures int
}

func (f *flakyKV) Get(ctx context.Context, key string) ([]byte, uint64, error) {
	if key == f.failKey && f.failures > 0 {
		f.failures--
		return nil, 0, errors.New("consul: connection refused")
	}
	return f.KV.Get(ctx, key)
}

// With rollback thresholds and no router answering, a bake does not
// promote blindly: past MetricsGrace it holds traffic where it is, with
// the reason on the record, and moves on once routers answer again.
func TestBakeHoldsWithoutMetrics(t *testing.T) {
	e := created(t)
	e.r.cfg.MetricsGrace = 10 * time.Second
	ar := &smapi.AutoRollback{MaxErrorRate: ptr(0.05)}
	e.update("ep", "c2", canary(20, 30, 0), ar)
	e.drive("ep", 20, func(ep *records.Endpoint) bool { return ep.Op != nil && ep.Op.Phase == records.PhaseBake })
	e.c.noMetrics = true
	for i := 0; i < 60; i++ {
		e.r.Pass(context.Background())
		e.clk.Add(time.Second)
	}
	ep := e.get("ep")
	if ep.Op == nil || ep.Op.Phase != records.PhaseBake || !strings.Contains(ep.Op.LastError, "holding traffic") {
		t.Fatalf("op %+v, want a held canary bake", ep.Op)
	}
	if w := weights(e.c.table("ep")); w[2] != 0.2 {
		t.Fatalf("traffic moved while held: %v", w)
	}
	e.c.noMetrics = false
	ep = e.drive("ep", 60, inService)
	if ep.ConfigName != "c2" {
		t.Fatalf("config %s after the hold ended", ep.ConfigName)
	}
}

// A hold that outlasts the update's maximum execution time rolls back.
func TestBakeHoldRollsBackPastMaxExecution(t *testing.T) {
	e := created(t)
	e.r.cfg.MetricsGrace = 10 * time.Second
	p := canary(20, 30, 0)
	p.BlueGreenUpdatePolicy.MaximumExecutionTimeoutInSeconds = ptr(120)
	e.update("ep", "c2", p, &smapi.AutoRollback{MaxErrorRate: ptr(0.05)})
	e.c.noMetrics = true
	ep := e.drive("ep", 300, inService)
	if ep.ConfigName != "c1" || !strings.Contains(ep.FailureReason, "no router metrics") {
		t.Fatalf("config %s reason %q, want rolled back for lack of metrics", ep.ConfigName, ep.FailureReason)
	}
}

func TestConfigValidateRefusesNegatives(t *testing.T) {
	e := newEnv(t)
	_, err := New(Config{Store: e.store, Nomad: e.c, Instances: e.c, Routes: e.c, Metrics: e.c, StepTimeout: -time.Second, Workers: -1})
	if err == nil || !strings.Contains(err.Error(), "StepTimeout") || !strings.Contains(err.Error(), "Workers") {
		t.Fatalf("err = %v, want StepTimeout and Workers named", err)
	}
}

// The way out of a corrupt endpoint record is DeleteEndpoint, which
// replaces it with a bare delete operation (server/api): the reconciler
// carries that out from the name alone, stopping every job and removing
// the routing table the lost record described.
func TestDeleteFromBareRecordAfterCorruption(t *testing.T) {
	e := created(t)
	ctx := context.Background()
	_, idx, err := e.store.KV.Get(ctx, records.KindEndpoint.Key("ep"))
	must(t, err)
	must(t, e.store.KV.CAS(ctx, records.KindEndpoint.Key("ep"), []byte("garbage"), idx))
	e.r.Pass(ctx)
	if len(e.c.running()) != 1 || e.c.table("ep") == nil {
		t.Fatalf("a corrupt record changed the cluster: jobs %v table %v", e.c.running(), e.c.table("ep"))
	}
	_, idx, err = e.store.KV.Get(ctx, records.KindEndpoint.Key("ep"))
	must(t, err)
	now := e.clk.Now()
	bare := records.Endpoint{Name: "ep", Status: smapi.StatusDeleting,
		Op: &records.Operation{Kind: records.OpDelete, Phase: records.PhaseStart, StartTime: now, PhaseStart: now}}
	must(t, e.store.Put(ctx, records.KindEndpoint, "ep", &bare, idx))
	e.drive("ep", 20, func(ep *records.Endpoint) bool { return ep == nil })
	if len(e.c.running()) != 0 || e.c.table("ep") != nil {
		t.Fatalf("after delete: jobs %v table %v", e.c.running(), e.c.table("ep"))
	}
}
