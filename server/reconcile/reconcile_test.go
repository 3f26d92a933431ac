package reconcile

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/seraihq/serai/contract"
	"github.com/seraihq/serai/server/records"
	"github.com/seraihq/serai/server/smapi"
)

type env struct {
	t     *testing.T
	store records.Store
	c     *fakeCluster
	clk   *clock
	r     *Reconciler
	// restart makes every pass run on a fresh Reconciler (empty caches),
	// as after a leader change.
	restart bool
	// statuses is the endpoint's status sequence as passes observed it.
	statuses []string
}

func ptr[T any](v T) *T { return &v }

func newEnv(t *testing.T) *env {
	e := &env{t: t, store: records.Store{KV: records.NewMemKV()}, c: newFakeCluster(), clk: &clock{t: time.Unix(1_800_000_000, 0)}}
	e.r = e.newReconciler()
	ctx := context.Background()
	must(t, e.store.Put(ctx, records.KindStore, "minio", &records.ArtifactStore{Name: "minio",
		Settings: smapi.ArtifactStore{Name: "minio", Endpoint: "http://127.0.0.1:9000", PathStyle: true, Vault: &smapi.StoreVault{KVPath: "stores/minio"}}}, 0))
	store := &smapi.ArtifactStore{Name: "minio"}
	for _, m := range []string{"m1", "m2", "m3"} {
		rec := records.Model{Name: m, Spec: smapi.CreateModelInput{ModelName: m,
			PrimaryContainer: &smapi.ContainerDefinition{ModelDataUrl: "s3://models/" + m + ".tar.gz"},
			Serai:            &smapi.ModelExtension{Command: "/bin/model", ArtifactStore: store}}}
		must(t, e.store.Put(ctx, records.KindModel, m, &rec, 0))
	}
	for _, c := range []struct{ name, model string }{{"c1", "m1"}, {"c2", "m2"}, {"c3", "m3"}} {
		rec := records.EndpointConfig{Name: c.name, Spec: smapi.CreateEndpointConfigInput{EndpointConfigName: c.name,
			ProductionVariants: []smapi.ProductionVariant{
				{VariantName: "a", ModelName: c.model, InstanceType: "ml.m5.large", InitialInstanceCount: ptr(2), InitialVariantWeight: ptr(3.0)},
				{VariantName: "b", ModelName: c.model, InstanceType: "ml.m5.large", InitialVariantWeight: ptr(1.0)},
			}}}
		must(t, e.store.Put(ctx, records.KindEndpointConfig, c.name, &rec, 0))
	}
	return e
}

func (e *env) newReconciler() *Reconciler {
	r, err := New(Config{Store: e.store, Nomad: e.c, Instances: e.c, Routes: e.c, Vault: e.c, Metrics: e.c, Now: e.clk.Now, Backoff: time.Millisecond, MaxBackoff: time.Millisecond})
	must(e.t, err)
	return r
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// The API's part, as server/api does it: record the operation.
func (e *env) create(name, cfg string) {
	now := e.clk.Now()
	ep := records.Endpoint{Name: name, CreationTime: now, NextGeneration: 1,
		Op: &records.Operation{Kind: records.OpCreate, Phase: records.PhaseStart, ConfigName: cfg, StartTime: now, PhaseStart: now}}
	ep.SetStatus(smapi.StatusCreating, "", now)
	must(e.t, e.store.Put(context.Background(), records.KindEndpoint, name, &ep, 0))
}

func (e *env) update(name, cfg string, policy *smapi.DeploymentConfig, ar *smapi.AutoRollback) {
	_, err := records.Update(context.Background(), e.store, records.KindEndpoint, name, func(ep *records.Endpoint) error {
		if ep.Status != smapi.StatusInService {
			return fmt.Errorf("status %s", ep.Status)
		}
		now := e.clk.Now()
		ep.Op = &records.Operation{Kind: records.OpUpdate, Phase: records.PhaseStart, ConfigName: cfg, StartTime: now, PhaseStart: now, Policy: policy, AutoRollback: ar}
		ep.SetStatus(smapi.StatusUpdating, "", now)
		return nil
	})
	must(e.t, err)
}

func (e *env) op(name string, op *records.Operation, status string) {
	_, err := records.Update(context.Background(), e.store, records.KindEndpoint, name, func(ep *records.Endpoint) error {
		now := e.clk.Now()
		op.StartTime, op.PhaseStart, op.Phase = now, now, records.PhaseStart
		ep.Op = op
		ep.SetStatus(status, "", now)
		return nil
	})
	must(e.t, err)
}

func (e *env) get(name string) *records.Endpoint {
	var ep records.Endpoint
	if _, err := e.store.Get(context.Background(), records.KindEndpoint, name, &ep); errors.Is(err, records.ErrNotFound) {
		return nil
	} else if err != nil {
		e.t.Fatal(err)
	}
	return &ep
}

// drive runs passes, one clock second apart, until done says so.
func (e *env) drive(name string, limit int, done func(*records.Endpoint) bool) *records.Endpoint {
	e.t.Helper()
	if ep := e.get(name); ep != nil && (len(e.statuses) == 0 || e.statuses[len(e.statuses)-1] != ep.Status) {
		e.statuses = append(e.statuses, ep.Status)
	}
	for i := 0; i < limit; i++ {
		if e.restart {
			e.r = e.newReconciler()
		}
		e.r.Pass(context.Background())
		ep := e.get(name)
		e.checkInvariant(name, ep)
		if ep != nil && (len(e.statuses) == 0 || e.statuses[len(e.statuses)-1] != ep.Status) {
			e.statuses = append(e.statuses, ep.Status)
		}
		if done(ep) {
			return ep
		}
		e.clk.Add(time.Second)
	}
	e.t.Fatalf("not done after %d passes: %+v op=%+v", limit, e.get(name), e.get(name).Op)
	return nil
}

// No generation takes traffic that the record does not list.
func (e *env) checkInvariant(name string, ep *records.Endpoint) {
	e.t.Helper()
	rt := e.c.table(name)
	if rt == nil {
		return
	}
	if ep == nil {
		e.t.Fatalf("routing table %+v outlives the record", rt)
	}
	for _, g := range rt.Generations {
		if ep.Generation(g.Generation) == nil {
			e.t.Fatalf("routing table gives generation %d traffic the record does not list (%+v)", g.Generation, ep.Generations)
		}
	}
}

func inService(ep *records.Endpoint) bool {
	return ep != nil && ep.Op == nil && ep.Status == smapi.StatusInService
}

func weights(rt *contract.Routes) map[int]float64 {
	if rt == nil {
		return nil
	}
	out := map[int]float64{}
	for _, g := range rt.Generations {
		out[g.Generation] = g.Weight
	}
	return out
}

func TestCreate(t *testing.T) {
	e := newEnv(t)
	e.c.health["serai-ep.g1"] = JobHealth{Exists: true} // deploying
	e.create("ep", "c1")
	e.drive("ep", 5, func(ep *records.Endpoint) bool { return ep.Op != nil && ep.Op.Phase == records.PhaseWaitHealthy })
	if got := e.c.running(); !reflect.DeepEqual(got, []string{"serai-ep.g1"}) {
		t.Fatalf("running %v", got)
	}
	if e.c.table("ep") != nil {
		t.Fatal("routing table written before the generation is healthy")
	}
	if got := e.c.vault["m1"]; !reflect.DeepEqual(got, []string{"ep"}) {
		t.Errorf("vault role for m1 binds %v", got)
	}
	delete(e.c.health, "serai-ep.g1")
	ep := e.drive("ep", 5, inService)
	if ep.ConfigName != "c1" || !reflect.DeepEqual(weights(e.c.table("ep")), map[int]float64{1: 1}) {
		t.Errorf("config %q table %+v", ep.ConfigName, e.c.table("ep"))
	}
	rt := e.c.table("ep")
	if len(rt.Generations[0].Variants) != 2 || rt.Generations[0].Variants[0].Weight != 3 {
		t.Errorf("variant weights %+v", rt.Generations[0].Variants)
	}
	if want := []string{smapi.StatusCreating, smapi.StatusInService}; !reflect.DeepEqual(e.statuses, want) {
		t.Errorf("statuses %v, want %v", e.statuses, want)
	}
}

func TestCreateFails(t *testing.T) {
	e := newEnv(t)
	e.c.failJobs["serai-ep.g1"] = "variant a: allocation 0badc0de: task model: Terminated: Exit Code: 1"
	e.create("ep", "c1")
	ep := e.drive("ep", 10, func(ep *records.Endpoint) bool { return ep.Op == nil })
	if ep.Status != smapi.StatusFailed || !strings.Contains(ep.FailureReason, "allocation 0badc0de") {
		t.Errorf("status %s reason %q", ep.Status, ep.FailureReason)
	}
	if len(e.c.running()) != 0 || e.c.table("ep") != nil {
		t.Errorf("failed create left jobs %v or a table", e.c.running())
	}
}

func TestCreateTimesOut(t *testing.T) {
	e := newEnv(t)
	e.r.cfg.HealthTimeout = 30 * time.Second
	e.c.health["serai-ep.g1"] = JobHealth{Exists: true}
	e.create("ep", "c1")
	ep := e.drive("ep", 60, func(ep *records.Endpoint) bool { return ep.Op == nil })
	if ep.Status != smapi.StatusFailed || !strings.Contains(ep.FailureReason, "did not become healthy within 30s") {
		t.Errorf("status %s reason %q", ep.Status, ep.FailureReason)
	}
}

func canary(size float64, wait, term int) *smapi.DeploymentConfig {
	return &smapi.DeploymentConfig{BlueGreenUpdatePolicy: &smapi.BlueGreenUpdatePolicy{
		TrafficRoutingConfiguration: smapi.TrafficRoutingConfiguration{Type: smapi.TrafficCanary, WaitIntervalInSeconds: wait, CanarySize: &smapi.CapacitySize{Type: smapi.CapacityPercent, Value: size}},
		TerminationWaitInSeconds:    ptr(term),
	}}
}

func linear(step float64, wait int) *smapi.DeploymentConfig {
	return &smapi.DeploymentConfig{BlueGreenUpdatePolicy: &smapi.BlueGreenUpdatePolicy{
		TrafficRoutingConfiguration: smapi.TrafficRoutingConfiguration{Type: smapi.TrafficLinear, WaitIntervalInSeconds: wait, LinearStepSize: &smapi.CapacitySize{Type: smapi.CapacityPercent, Value: step}},
	}}
}

func created(t *testing.T) *env {
	e := newEnv(t)
	e.create("ep", "c1")
	e.drive("ep", 10, inService)
	e.statuses = nil
	return e
}

// tableHistory records each distinct routing table weight set seen.
func (e *env) driveRecording(name string, limit int, done func(*records.Endpoint) bool) ([]map[int]float64, *records.Endpoint) {
	seen := []map[int]float64{weights(e.c.table(name))}
	ep := e.drive(name, limit, func(ep *records.Endpoint) bool {
		w := weights(e.c.table(name))
		if len(seen) == 0 || !reflect.DeepEqual(seen[len(seen)-1], w) {
			seen = append(seen, w)
		}
		return done(ep)
	})
	return seen, ep
}

func TestUpdateCanary(t *testing.T) {
	e := created(t)
	e.update("ep", "c2", canary(10, 5, 3), nil)
	seen, ep := e.driveRecording("ep", 60, inService)
	want := []map[int]float64{{1: 1}, {1: 0.9, 2: 0.1}, {2: 1}}
	if !reflect.DeepEqual(seen, want) {
		t.Errorf("traffic steps %v, want %v", seen, want)
	}
	if ep.ConfigName != "c2" || len(ep.Generations) != 1 || ep.Generations[0].Generation != 2 {
		t.Errorf("after update: config %s generations %+v", ep.ConfigName, ep.Generations)
	}
	if got := e.c.running(); !reflect.DeepEqual(got, []string{"serai-ep.g2"}) {
		t.Errorf("running %v", got)
	}
	if want := []string{smapi.StatusUpdating, smapi.StatusInService}; !reflect.DeepEqual(e.statuses, want) {
		t.Errorf("statuses %v", e.statuses)
	}
	// m1 is no longer used by any endpoint: its role and policy are gone.
	if _, ok := e.c.vault["m1"]; ok {
		t.Errorf("vault still holds m1: %v", e.c.vault)
	}
	if !reflect.DeepEqual(e.c.vault["m2"], []string{"ep"}) {
		t.Errorf("vault m2 %v", e.c.vault["m2"])
	}
}

func TestUpdateLinear(t *testing.T) {
	e := created(t)
	e.update("ep", "c2", linear(40, 2), nil)
	seen, _ := e.driveRecording("ep", 60, inService)
	want := []map[int]float64{{1: 1}, {1: 0.6, 2: 0.4}, {1: 0.19999999999999996, 2: 0.8}, {2: 1}}
	if !reflect.DeepEqual(seen, want) {
		t.Errorf("traffic steps %v, want %v", seen, want)
	}
}

// The canary waits its interval before the rest of the traffic moves.
func TestCanaryWaits(t *testing.T) {
	e := created(t)
	e.update("ep", "c2", canary(10, 30, 0), nil)
	var canaryAt, fullAt time.Time
	e.drive("ep", 100, func(ep *records.Endpoint) bool {
		w := weights(e.c.table("ep"))
		if w[2] == 0.1 && canaryAt.IsZero() {
			canaryAt = e.clk.Now()
		}
		if w[2] == 1 && fullAt.IsZero() {
			fullAt = e.clk.Now()
		}
		return inService(ep)
	})
	if d := fullAt.Sub(canaryAt); d < 30*time.Second || d > 32*time.Second {
		t.Errorf("canary baked %s, want 30s", d)
	}
}

func TestUpdateNeverHealthyRollsBack(t *testing.T) {
	e := created(t)
	e.c.failJobs["serai-ep.g2"] = "variant a: allocation 1234: task model: health check ping failing"
	e.update("ep", "c2", canary(10, 5, 0), nil)
	seen, ep := e.driveRecording("ep", 30, inService)
	if !reflect.DeepEqual(seen, []map[int]float64{{1: 1}}) {
		t.Errorf("traffic moved: %v", seen)
	}
	if ep.ConfigName != "c1" || !strings.Contains(ep.FailureReason, "health check ping failing") {
		t.Errorf("config %s reason %q", ep.ConfigName, ep.FailureReason)
	}
	if want := []string{smapi.StatusUpdating, smapi.StatusRollingBack, smapi.StatusInService}; !reflect.DeepEqual(e.statuses, want) {
		t.Errorf("statuses %v", e.statuses)
	}
	if got := e.c.running(); !reflect.DeepEqual(got, []string{"serai-ep.g1"}) {
		t.Errorf("running %v", got)
	}
}

func TestMetricsRollBackDuringBake(t *testing.T) {
	e := created(t)
	ar := &smapi.AutoRollback{MaxErrorRate: ptr(0.05), MinInvocations: ptr(20)}
	e.update("ep", "c2", canary(20, 60, 0), ar)
	// Reach the canary bake.
	e.drive("ep", 20, func(ep *records.Endpoint) bool { return ep.Op != nil && ep.Op.Phase == records.PhaseBake })
	// Under the minimum: no judgement, however bad.
	e.c.samples[2] = map[string]records.MetricSample{"r1": {Invocations: 10, Errors5xx: 10}}
	e.r.Pass(context.Background())
	if ep := e.get("ep"); ep.Op.Phase != records.PhaseBake {
		t.Fatalf("judged below min_invocations: %+v", ep.Op)
	}
	// Two routers, 40 invocations, 6 errors: 15% > 5%.
	e.c.samples[2] = map[string]records.MetricSample{"r1": {Invocations: 25, Errors5xx: 13}, "r2": {Invocations: 25, Errors5xx: 3}}
	seen, ep := e.driveRecording("ep", 20, inService)
	if !strings.Contains(ep.FailureReason, "5xx") || ep.ConfigName != "c1" {
		t.Errorf("reason %q config %s", ep.FailureReason, ep.ConfigName)
	}
	if last := seen[len(seen)-1]; !reflect.DeepEqual(last, map[int]float64{1: 1}) {
		t.Errorf("traffic after rollback %v", last)
	}
}

func TestJudge(t *testing.T) {
	h := func(inv, errs float64, buckets ...float64) records.MetricSample {
		s := records.MetricSample{Invocations: inv, Errors5xx: errs, LatencyCount: inv}
		bounds := []float64{0.01, 0.1, 1}
		for i, c := range buckets {
			s.Latency = append(s.Latency, records.Bucket{UpperBound: bounds[i], Count: c})
		}
		return s
	}
	ar := &smapi.AutoRollback{MaxP99Latency: "50ms", MinInvocations: ptr(100)}
	base := map[string]records.MetricSample{"r": h(1000, 0, 1000, 1000, 1000)}
	// 100 new invocations, 2 of them slower than 100ms: p99 > 50ms.
	cur := map[string]records.MetricSample{"r": h(1100, 0, 1098, 1098, 1100)}
	if got := Judge(base, cur, ar, 2); !strings.Contains(got, "p99") {
		t.Errorf("p99 breach not seen: %q", got)
	}
	cur = map[string]records.MetricSample{"r": h(1100, 0, 1100, 1100, 1100)}
	if got := Judge(base, cur, ar, 2); got != "" {
		t.Errorf("false breach %q", got)
	}
	// A restarted router (counters below baseline) counts from zero.
	cur = map[string]records.MetricSample{"r": h(150, 0, 140, 140, 150)}
	if got := Judge(base, cur, ar, 2); !strings.Contains(got, "p99") {
		t.Errorf("restarted router's counters ignored: %q", got)
	}
}

func TestWeightsAndCapacities(t *testing.T) {
	e := created(t)
	e.op("ep", &records.Operation{Kind: records.OpWeights, Weights: []smapi.DesiredWeightAndCapacity{
		{VariantName: "a", DesiredWeight: ptr(1.0)}, {VariantName: "b", DesiredWeight: ptr(9.0), DesiredInstanceCount: ptr(3)},
	}}, smapi.StatusUpdating)
	e.drive("ep", 10, inService)
	rt := e.c.table("ep")
	if rt.Generations[0].Variants[0].Weight != 1 || rt.Generations[0].Variants[1].Weight != 9 {
		t.Errorf("weights %+v", rt.Generations[0].Variants)
	}
	if !reflect.DeepEqual(e.c.scaled, []string{"serai-ep.g1/b=3"}) {
		t.Errorf("scaled %v", e.c.scaled)
	}
	if got := e.c.running(); !reflect.DeepEqual(got, []string{"serai-ep.g1"}) {
		t.Errorf("jobs re-registered or stopped: %v", got)
	}
}

func TestDelete(t *testing.T) {
	e := created(t)
	e.op("ep", &records.Operation{Kind: records.OpDelete}, smapi.StatusDeleting)
	var tableGoneAt, jobsGoneAt time.Time
	e.drive("ep", 20, func(ep *records.Endpoint) bool {
		if e.c.table("ep") == nil && tableGoneAt.IsZero() {
			tableGoneAt = e.clk.Now()
		}
		if len(e.c.running()) == 0 && jobsGoneAt.IsZero() {
			jobsGoneAt = e.clk.Now()
		}
		return ep == nil
	})
	if jobsGoneAt.Sub(tableGoneAt) < 5*time.Second {
		t.Errorf("jobs stopped %s after the table went; want the 5s drain", jobsGoneAt.Sub(tableGoneAt))
	}
	if len(e.c.vault) != 0 {
		t.Errorf("vault left %v", e.c.vault)
	}
}

// Deleting mid-update stops both generations.
func TestDeleteDuringUpdate(t *testing.T) {
	e := created(t)
	e.update("ep", "c2", canary(10, 600, 0), nil)
	e.drive("ep", 20, func(ep *records.Endpoint) bool { return ep.Op.Phase == records.PhaseBake })
	e.op("ep", &records.Operation{Kind: records.OpDelete}, smapi.StatusDeleting)
	e.drive("ep", 20, func(ep *records.Endpoint) bool { return ep == nil })
	if len(e.c.running()) != 0 || e.c.table("ep") != nil {
		t.Errorf("left %v %+v", e.c.running(), e.c.table("ep"))
	}
}

type outcome struct {
	Status, Config, Reason string
	Running                []string
	Table                  map[int]float64
	Vault                  map[string][]string
}

func (e *env) outcome(name string) outcome {
	ep := e.get(name)
	o := outcome{Running: e.c.running(), Table: weights(e.c.table(name)), Vault: e.c.vault}
	if ep != nil {
		// How many invocations the bake saw depends on timing; whether
		// and why it rolled back does not.
		o.Status, o.Config, o.Reason = ep.Status, ep.ConfigName, regexp.MustCompile(`[0-9.]+ invocations`).ReplaceAllString(ep.FailureReason, "N invocations")
	}
	return o
}

// scenario is a whole life: create, canary update, update rolled back by
// metrics, weights, delete. It returns the outcome after each stage.
func scenario(e *env) []outcome {
	var out []outcome
	e.create("ep", "c1")
	e.drive("ep", 200, inService)
	out = append(out, e.outcome("ep"))
	e.update("ep", "c2", canary(10, 3, 2), nil)
	e.drive("ep", 200, inService)
	out = append(out, e.outcome("ep"))
	e.c.errorRate[3] = 0.5
	e.update("ep", "c3", linear(50, 3), &smapi.AutoRollback{MaxErrorRate: ptr(0.1)})
	e.drive("ep", 200, inService)
	out = append(out, e.outcome("ep"))
	e.op("ep", &records.Operation{Kind: records.OpWeights, Weights: []smapi.DesiredWeightAndCapacity{{VariantName: "a", DesiredWeight: ptr(5.0), DesiredInstanceCount: ptr(4)}}}, smapi.StatusUpdating)
	e.drive("ep", 200, inService)
	o := e.outcome("ep")
	o.Table = nil
	out = append(out, o, outcome{Table: map[int]float64{}})
	e.op("ep", &records.Operation{Kind: records.OpDelete}, smapi.StatusDeleting)
	e.drive("ep", 200, func(ep *records.Endpoint) bool { return ep == nil })
	out = append(out, e.outcome("ep"))
	return out
}

// A reconciler restarted before every pass (a new leader each second)
// reaches exactly the outcome of one that never restarts.
func TestResumeAfterRestartAtEveryStep(t *testing.T) {
	want := scenario(newEnv(t))
	if !strings.Contains(want[2].Reason, "rolled back") || want[2].Config != "c2" || want[1].Config != "c2" {
		t.Fatalf("scenario did not go as designed: %+v", want)
	}
	e := newEnv(t)
	e.restart = true
	if got := scenario(e); !reflect.DeepEqual(got, want) {
		t.Errorf("with restarts:\n%+v\nwithout:\n%+v", got, want)
	}
}

// Any single cluster call failing (Nomad, Consul, Vault, metrics down for
// a moment), with the reconciler restarted after it, changes nothing about
// where the endpoint ends up.
func TestAnySingleFaultThenRestart(t *testing.T) {
	base := newEnv(t)
	want := scenario(base)
	calls := base.c.calls
	for n := 1; n <= calls; n++ {
		e := newEnv(t)
		e.c.failAt[n] = true
		e.restart = true
		if got := scenario(e); !reflect.DeepEqual(got, want) {
			t.Fatalf("failing call %d changed the outcome:\n%+v\nwant:\n%+v", n, got, want)
		}
	}
	t.Logf("checked %d fault positions", calls)
}

// A record changed by the API between the reconciler's read and write
// (a DeleteEndpoint arriving mid-step) is never overwritten.
func TestConcurrentAPIWriteWins(t *testing.T) {
	e := created(t)
	e.update("ep", "c2", canary(10, 600, 0), nil)
	kv := e.store.KV.(*records.MemKV)
	_ = kv
	// Interleave: read by the reconciler happens inside Step; simulate the
	// API's delete landing first by wrapping the KV.
	e.store.KV = &raceKV{KV: e.store.KV, before: func() {
		e.store.KV.(*raceKV).before = nil
		e.op("ep", &records.Operation{Kind: records.OpDelete}, smapi.StatusDeleting)
	}}
	e.r = e.newReconciler()
	e.r.cfg.Store = e.store
	e.r.Pass(context.Background())
	if ep := e.get("ep"); ep.Op == nil || ep.Op.Kind != records.OpDelete {
		t.Fatalf("the API's delete was overwritten: %+v", ep.Op)
	}
}

// raceKV runs before() just before the first CAS, as a concurrent writer.
type raceKV struct {
	records.KV
	before func()
}

func (r *raceKV) CAS(ctx context.Context, key string, v []byte, idx uint64) error {
	if f := r.before; f != nil {
		f()
	}
	return r.KV.CAS(ctx, key, v, idx)
}

// The model record names its store; the job's store settings and the
// Vault policy's path come from the operator's store record, even when a
// model record (written before stores were records, or by hand) carries
// other settings inline; a change to the store record applies to the
// next generation.
func TestStoreSettingsComeFromTheRecord(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	var m records.Model
	idx, err := e.store.Get(ctx, records.KindModel, "m1", &m)
	must(t, err)
	m.Spec.Serai.ArtifactStore = &smapi.ArtifactStore{Name: "minio", Endpoint: "http://evil.test", Vault: &smapi.StoreVault{KVPath: "stores/other-team"}}
	must(t, e.store.Put(ctx, records.KindModel, "m1", &m, idx))
	e.create("ep", "c1")
	e.drive("ep", 10, inService)
	if got := e.c.creds["m1"]; got.KVPath != "stores/minio" || got.Store != "minio" {
		t.Fatalf("vault policy for %+v, want the record's path", got)
	}
	job := e.c.lastJob
	fetch := job.TaskGroups[0].Tasks[0]
	if fetch.Env["SERAI_STORE_ENDPOINT"] != "http://127.0.0.1:9000" || !strings.Contains(*fetch.Templates[0].EmbeddedTmpl, `"secret/data/stores/minio"`) {
		t.Fatalf("fetch task env %v template %s", fetch.Env, *fetch.Templates[0].EmbeddedTmpl)
	}
	// The operator moves the store's keys: the next generation reads there.
	var st records.ArtifactStore
	idx, err = e.store.Get(ctx, records.KindStore, "minio", &st)
	must(t, err)
	st.Settings.Vault.KVPath = "stores/minio-rotated"
	must(t, e.store.Put(ctx, records.KindStore, "minio", &st, idx))
	e.update("ep", "c1", nil, nil)
	e.drive("ep", 20, inService)
	if got := e.c.creds["m1"]; got.KVPath != "stores/minio-rotated" {
		t.Fatalf("after the store changed: %+v", got)
	}
}

// A model whose store has no operator record (a record from before stores
// were records) neither blocks another endpoint's delete nor keeps its
// Vault access: it fails closed.
func TestMissingStoreRecordFailsClosed(t *testing.T) {
	e := newEnv(t)
	e.create("ep", "c1")
	e.drive("ep", 10, inService)
	e.create("ep2", "c2")
	e.drive("ep2", 10, inService)
	if len(e.c.vault["m1"]) != 1 || len(e.c.vault["m2"]) != 1 {
		t.Fatalf("vault before: %v", e.c.vault)
	}
	ctx := context.Background()
	var st records.ArtifactStore
	idx, err := e.store.Get(ctx, records.KindStore, "minio", &st)
	must(t, err)
	must(t, e.store.KV.DeleteCAS(ctx, records.KindStore.Key("minio"), idx))
	e.op("ep2", &records.Operation{Kind: records.OpDelete}, smapi.StatusDeleting)
	e.drive("ep2", 20, func(ep *records.Endpoint) bool { return ep == nil })
	if _, ok := e.c.vault["m1"]; ok {
		t.Errorf("model m1 kept Vault access without a store record: %v", e.c.vault)
	}
}
