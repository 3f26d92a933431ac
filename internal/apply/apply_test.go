package apply

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/seraihq/serai/server/client"
	"github.com/seraihq/serai/server/smapi"
)

func actions(p *Plan) string {
	var out []string
	for _, c := range p.Changes {
		out = append(out, string(c.Action)+" "+c.Kind+" "+c.Name)
	}
	return strings.Join(out, ", ")
}

// statuses runs Apply and returns the status sequence it reported.
func runApply(t *testing.T, api API, p *Plan) ([]string, error) {
	t.Helper()
	var seen []string
	_, err := Apply(context.Background(), api, p, Options{Watcher: Watcher{Interval: 1, Report: func(s Snapshot) {
		seen = append(seen, s.Status)
	}}})
	return seen, err
}

func plan(t *testing.T, api API, src string) *Plan {
	t.Helper()
	p, err := MakePlan(context.Background(), api, spec(t, src))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestApplyCreatesInDependencyOrderThenChangesNothing(t *testing.T) {
	f := newFake()
	src := models("a") + config("c1", 1) + endpoint("c1")
	p := plan(t, f, src)
	want := "create model m1, create model m2, create endpoint_config c1, create endpoint ep"
	if got := actions(p); got != want {
		t.Fatalf("plan: %s\nwant %s", got, want)
	}
	if !p.HasChanges() {
		t.Fatal("HasChanges false for a plan of creates")
	}
	seen, err := runApply(t, f, p)
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(f.writes, ", "); got != "CreateModel m1, CreateModel m2, CreateEndpointConfig c1, CreateEndpoint ep" {
		t.Errorf("writes: %s", got)
	}
	if got := strings.Join(seen, " "); got != "Creating InService" {
		t.Errorf("status sequence: %s", got)
	}

	// Re-applying the same files writes nothing.
	f.writes = nil
	p = plan(t, f, src)
	if p.HasChanges() {
		t.Fatalf("re-plan has changes: %s", actions(p))
	}
	if got := actions(p); got != "unchanged model m1, unchanged model m2, unchanged endpoint_config c1, unchanged endpoint ep" {
		t.Errorf("re-plan: %s", got)
	}
	if _, err := runApply(t, f, p); err != nil || len(f.writes) != 0 {
		t.Errorf("re-apply: %v, writes %v", err, f.writes)
	}
}

func TestChangedImmutableObjectsAreConflictsAndNothingIsWritten(t *testing.T) {
	f := newFake()
	if _, err := runApply(t, f, plan(t, f, models("a")+config("c1", 1)+endpoint("c1"))); err != nil {
		t.Fatal(err)
	}
	f.writes = nil
	// m2 changed under its name; c1 changed under its name; a new model
	// m3 would be created, but nothing may be written.
	src := models("b") + `model "m3" {
  command = "/bin/model"
}
` + config("c1", 2) + endpoint("c1")
	p := plan(t, f, src)
	cs := p.Conflicts()
	if len(cs) != 2 || cs[0].Name != "m2" || cs[1].Name != "c1" {
		t.Fatalf("conflicts: %s", actions(p))
	}
	if d := strings.Join(cs[0].Diff, "\n"); !strings.Contains(d, `~ Serai.Args[1]: "a" → "b"`) {
		t.Errorf("model diff does not name the field:\n%s", d)
	}
	if d := strings.Join(cs[1].Diff, "\n"); !strings.Contains(d, "~ ProductionVariants[v1].InitialInstanceCount: 1 → 2") {
		t.Errorf("config diff does not name the variant field:\n%s", d)
	}
	if !strings.Contains(cs[0].Reason, "immutable") || !strings.Contains(cs[0].Reason, "new name") {
		t.Errorf("reason does not explain: %s", cs[0].Reason)
	}
	_, err := runApply(t, f, p)
	var ce *ConflictError
	if !errors.As(err, &ce) || len(f.writes) != 0 {
		t.Fatalf("apply: %v, writes %v", err, f.writes)
	}
	if !strings.Contains(err.Error(), "nothing was changed") || !strings.Contains(err.Error(), `model "m2"`) {
		t.Errorf("error: %v", err)
	}
}

func TestNewConfigUpdatesTheEndpoint(t *testing.T) {
	f := newFake()
	if _, err := runApply(t, f, plan(t, f, models("a")+config("c1", 1)+endpoint("c1"))); err != nil {
		t.Fatal(err)
	}
	f.writes = nil
	p := plan(t, f, models("a")+config("c1", 1)+config("c2", 3)+endpoint("c2"))
	if got := actions(p); got != "unchanged model m1, unchanged model m2, unchanged endpoint_config c1, create endpoint_config c2, update endpoint ep" {
		t.Fatalf("plan: %s", got)
	}
	ep := p.Changes[4]
	if ep.FromConfig != "c1" || ep.ToConfig != "c2" {
		t.Errorf("from/to: %q → %q", ep.FromConfig, ep.ToConfig)
	}
	if d := strings.Join(ep.Diff, "\n"); !strings.Contains(d, `endpoint_config "c1" → "c2"`) || !strings.Contains(d, "~ ProductionVariants[v1].InitialInstanceCount: 1 → 3") {
		t.Errorf("endpoint diff:\n%s", d)
	}
	seen, err := runApply(t, f, p)
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(f.writes, ", "); got != "CreateEndpointConfig c2, UpdateEndpoint ep" {
		t.Errorf("writes: %s", got)
	}
	if got := strings.Join(seen, " "); got != "Updating InService" {
		t.Errorf("status sequence: %s", got)
	}
}

func TestRolledBackUpdateFails(t *testing.T) {
	f := newFake()
	if _, err := runApply(t, f, plan(t, f, models("a")+config("c1", 1)+endpoint("c1"))); err != nil {
		t.Fatal(err)
	}
	f.rollback = "c2"
	seen, err := runApply(t, f, plan(t, f, models("a")+config("c2", 3)+endpoint("c2")))
	var fe *FailedError
	if !errors.As(err, &fe) || !fe.RolledBack || fe.Config != "c1" || !strings.Contains(err.Error(), "never became healthy") {
		t.Fatalf("want a rollback error naming the reason, got %v", err)
	}
	if got := strings.Join(seen, " "); got != "Updating RollingBack InService" {
		t.Errorf("status sequence: %s", got)
	}
	// Applying again retries the rollout: the endpoint still runs c1.
	f.rollback = ""
	p := plan(t, f, models("a")+config("c2", 3)+endpoint("c2"))
	if p.Changes[len(p.Changes)-1].Action != Update {
		t.Errorf("after rollback: %s", actions(p))
	}
}

func TestEndpointsInProgressAndFailed(t *testing.T) {
	f := newFake()
	src := models("a") + config("c1", 1) + config("c2", 1)
	if _, err := runApply(t, f, plan(t, f, src+endpoint("c1"))); err != nil {
		t.Fatal(err)
	}
	e := f.endpoints["ep"]

	// Updating to the files' config: apply only waits.
	e.status, e.target, e.script = smapi.StatusUpdating, "c2", []string{smapi.StatusUpdating, smapi.StatusUpdating, smapi.StatusInService}
	f.writes = nil
	p := plan(t, f, src+endpoint("c2"))
	if c := p.Changes[len(p.Changes)-1]; c.Action != InProgress || p.HasChanges() {
		t.Fatalf("updating to c2: %s", actions(p))
	}
	seen, err := runApply(t, f, p)
	if err != nil || len(f.writes) != 0 || strings.Join(seen, " ") != "Updating InService" {
		t.Fatalf("waiting: %v writes %v seen %v", err, f.writes, seen)
	}

	// Updating to another config: a conflict (SageMaker refuses).
	e.status, e.target, e.script = smapi.StatusUpdating, "c2", nil
	e.config = "c1"
	p = plan(t, f, src+endpoint("c1"))
	if c := p.Changes[len(p.Changes)-1]; c.Action != Conflict || !strings.Contains(c.Reason, "wait until it is InService") {
		t.Fatalf("updating elsewhere: %s %s", actions(p), c.Reason)
	}

	// Failed: delete and apply again.
	e.status, e.target, e.reason = smapi.StatusFailed, "", "variant v1: allocation 1234 exited"
	p = plan(t, f, src+endpoint("c1"))
	if c := p.Changes[len(p.Changes)-1]; c.Action != Conflict || !strings.Contains(c.Reason, "serai endpoint delete ep") || !strings.Contains(c.Reason, "allocation 1234") {
		t.Fatalf("failed: %s %s", actions(p), c.Reason)
	}
}

func TestCreateThatFailsReportsTheReason(t *testing.T) {
	f := newFake()
	p := plan(t, f, models("a")+config("c1", 1)+endpoint("c1"))
	if _, err := Apply(context.Background(), f, p, Options{Detach: true}); err != nil {
		t.Fatal(err)
	}
	f.endpoints["ep"].script = []string{smapi.StatusCreating, smapi.StatusFailed}
	f.endpoints["ep"].reason = "variant v1: task model: Driver Failure"
	_, err := Watcher{API: f, Interval: 1}.Wait(context.Background(), "ep", Goal{Config: "c1"})
	var fe *FailedError
	if !errors.As(err, &fe) || fe.Status != smapi.StatusFailed || !strings.Contains(err.Error(), "Driver Failure") {
		t.Fatalf("want Failed with the reason, got %v", err)
	}
}

func TestWaitForDelete(t *testing.T) {
	f := newFake()
	if _, err := runApply(t, f, plan(t, f, models("a")+config("c1", 1)+endpoint("c1"))); err != nil {
		t.Fatal(err)
	}
	e := f.endpoints["ep"]
	e.deleting, e.script = true, []string{smapi.StatusDeleting, smapi.StatusDeleting}
	var seen []string
	d, err := Watcher{API: f, Interval: 1, Report: func(s Snapshot) { seen = append(seen, s.Status) }}.Wait(context.Background(), "ep", Goal{Deleted: true})
	if err != nil || d != nil {
		t.Fatalf("wait: %v %v", d, err)
	}
	if got := strings.Join(seen, " "); got != "Deleting Deleted" {
		t.Errorf("status sequence: %s", got)
	}
}

func TestRender(t *testing.T) {
	d := &smapi.DescribeEndpointOutput{
		EndpointName: "ep", EndpointStatus: smapi.StatusUpdating, EndpointConfigName: "c1",
		ProductionVariants: []smapi.ProductionVariantSummary{
			{VariantName: "v1", CurrentWeight: 3, DesiredWeight: 3, CurrentInstanceCount: 2, DesiredInstanceCount: 2},
			{VariantName: "v2", CurrentWeight: 1, DesiredWeight: 1, CurrentInstanceCount: 1, DesiredInstanceCount: 1},
		},
		PendingDeploymentSummary: &smapi.PendingDeploymentSummary{EndpointConfigName: "c2", ProductionVariants: []smapi.PendingProductionVariantSummary{
			{VariantName: "v1", CurrentWeight: 1, CurrentInstanceCount: 1, DesiredInstanceCount: 3, VariantStatus: []smapi.VariantStatus{{Status: smapi.VariantBaking}}},
		}},
		Serai: &smapi.EndpointStatusExtension{Generations: []smapi.GenerationSummary{
			{Generation: 1, ConfigName: "c1", Weight: 0.9}, {Generation: 2, ConfigName: "c2", Weight: 0.1},
		}},
	}
	got := Render(d)
	for _, want := range []string{
		`Updating  endpoint_config "c1" → "c2"`,
		"traffic: g1 c1 90%, g2 c2 10%",
		"variant v1           2/2 healthy  weight 3 (75%)",
		"variant v2           1/1 healthy  weight 1 (25%)",
		"pending v1           1/3 healthy  weight 1 (100%)  Baking",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("render lacks %q:\n%s", want, got)
		}
	}
}

// A server that is briefly unreachable or answers 503 does not end the
// watch; a 4xx answer, or an outage longer than Grace, does.
func TestWaitRidesOutTransientErrors(t *testing.T) {
	f := newFake()
	p := plan(t, f, models("a")+config("c1", 1)+endpoint("c1"))
	if _, err := Apply(context.Background(), f, p, Options{Detach: true}); err != nil {
		t.Fatal(err)
	}
	unavailable := &client.Error{StatusCode: 503, Type: smapi.ErrServiceUnavailable, Message: "Consul is unreachable"}
	f.describeErrs = []error{errors.New("connection refused"), unavailable}
	var seen []string
	w := Watcher{API: f, Interval: 1, Report: func(s Snapshot) { seen = append(seen, s.Status) }}
	if _, err := w.Wait(context.Background(), "ep", Goal{Config: "c1"}); err != nil || strings.Join(seen, " ") != "Creating InService" {
		t.Fatalf("wait through an outage: %v, %v", err, seen)
	}

	f.describeErrs = []error{&client.Error{StatusCode: 400, Type: smapi.ErrValidation, Message: "bad"}}
	if _, err := w.Wait(context.Background(), "ep", Goal{Config: "c1"}); err == nil || !strings.Contains(err.Error(), "bad") {
		t.Fatalf("4xx: %v", err)
	}

	// A clock that jumps a minute per call: the grace runs out.
	var now time.Time
	w.Now = func() time.Time { now = now.Add(time.Minute); return now }
	f.describeErrs = []error{unavailable, unavailable, unavailable}
	if _, err := w.Wait(context.Background(), "ep", Goal{Config: "c1"}); err == nil || !strings.Contains(err.Error(), "gave up polling") {
		t.Fatalf("long outage: %v", err)
	}
}

func TestRenderDetailScaling(t *testing.T) {
	three := 3
	d := &smapi.DescribeEndpointOutput{
		EndpointName: "ep", EndpointStatus: smapi.StatusInService, EndpointConfigName: "c1",
		ProductionVariants: []smapi.ProductionVariantSummary{
			{VariantName: "v1", CurrentWeight: 1, DesiredWeight: 1, CurrentInstanceCount: 3, DesiredInstanceCount: 3},
		},
		Serai: &smapi.EndpointStatusExtension{Scaling: []smapi.VariantScaling{{
			VariantName: "v1", Generation: 1,
			Policy: &smapi.Autoscaling{MinCapacity: 1, MaxCapacity: 4, TargetInvocationsPerInstance: 600, ScaleOutCooldown: "20s"},
			Events: []smapi.ScalingEvent{{Time: smapi.NewTime(time.Date(2026, 11, 30, 22, 38, 35, 0, time.UTC)), PreviousCount: 1, Count: &three, Source: "nomad-autoscaler", Message: "scaling up because factor is 2.5"}},
		}}},
	}
	got := RenderDetail(d)
	for _, want := range []string{
		"variant v1           3/3 healthy  weight 1 (100%)\n    autoscaling 1..4 instances, target 600 invocations/instance/min, cooldown out 20s in 300s, every 1m",
		"\n    2026-11-30T22:38:35Z  scaled 1 → 3 by nomad-autoscaler: scaling up because factor is 2.5",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("render lacks %q:\n%s", want, got)
		}
	}
	if strings.Contains(Render(d), "autoscaling") {
		t.Errorf("Render (apply progress) shows scaling detail:\n%s", Render(d))
	}
}
