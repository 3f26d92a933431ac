package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"

	"github.com/seraihq/serai/internal/testagents"
	"github.com/seraihq/serai/server/api"
	"github.com/seraihq/serai/server/records"
	"github.com/seraihq/serai/server/smapi"
)

// The control-plane commands run in-process against the real API handler
// (server/api) on a records store. The reconciler is a stub that moves
// each endpoint operation one step further after every DescribeEndpoint
// the CLI makes, so the status sequence the CLI prints is deterministic:
// it is checked for content, never for timing. The real reconciler on
// real Nomad is e2e.TestControlPlane's.

// stubReconciler advances endpoint operations in the store.
type stubReconciler struct {
	mu    sync.Mutex
	store records.Store
}

// step moves one endpoint's operation one step: create → InService;
// update → baking with 10% on the new generation → InService (or, for a
// config whose name ends in "-broken", RollingBack → InService on the old
// config with a reason); weights → InService; delete → gone.
func (s *stubReconciler) step(ctx context.Context, name string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	var ep records.Endpoint
	idx, err := s.store.Get(ctx, records.KindEndpoint, name, &ep)
	if err != nil || ep.Op == nil {
		return nil
	}
	now := ep.LastModifiedTime.Add(1)
	variants := func(cfg string) []records.VariantWeight {
		var c records.EndpointConfig
		if _, err := s.store.Get(ctx, records.KindEndpointConfig, cfg, &c); err != nil {
			return nil
		}
		var out []records.VariantWeight
		for _, v := range c.Spec.ProductionVariants {
			w := 1.0
			if v.InitialVariantWeight != nil {
				w = *v.InitialVariantWeight
			}
			out = append(out, records.VariantWeight{Name: v.VariantName, Weight: w})
		}
		return out
	}
	op := ep.Op
	switch op.Kind {
	case records.OpCreate:
		g := ep.NextGeneration
		ep.Generations = []records.Generation{{Generation: g, ConfigName: op.ConfigName, Weight: 1, Variants: variants(op.ConfigName)}}
		ep.NextGeneration, ep.ConfigName, ep.Op = g+1, op.ConfigName, nil
		ep.SetStatus(smapi.StatusInService, "", now)
	case records.OpUpdate:
		switch {
		case op.Phase == records.PhaseStart:
			op.Target, op.Phase = ep.NextGeneration, records.PhaseBake
			ep.NextGeneration++
			ep.Generations[0].Weight = 0.9
			ep.Generations = append(ep.Generations, records.Generation{Generation: op.Target, ConfigName: op.ConfigName, Weight: 0.1, Variants: variants(op.ConfigName)})
		case strings.HasSuffix(op.ConfigName, "-broken") && ep.Status != smapi.StatusRollingBack:
			op.Phase = records.PhaseRollback
			ep.SetStatus(smapi.StatusRollingBack, "variant v1 of generation 2 never became healthy", now)
		case strings.HasSuffix(op.ConfigName, "-broken"):
			ep.Generations = ep.Generations[:1]
			ep.Generations[0].Weight = 1
			ep.FailureReason = "update to endpoint configuration " + op.ConfigName + " rolled back: variant v1 of generation 2 never became healthy"
			ep.Op = nil
			ep.SetStatus(smapi.StatusInService, ep.FailureReason, now)
		default:
			g := ep.Generations[1]
			g.Weight = 1
			ep.Generations, ep.ConfigName, ep.Op = []records.Generation{g}, op.ConfigName, nil
			ep.SetStatus(smapi.StatusInService, "", now)
		}
	case records.OpWeights:
		for _, d := range op.Weights {
			for i, v := range ep.Generations[0].Variants {
				if v.Name == d.VariantName && d.DesiredWeight != nil {
					ep.Generations[0].Variants[i].Weight = *d.DesiredWeight
				}
			}
		}
		ep.Op = nil
		ep.SetStatus(smapi.StatusInService, "", now)
	case records.OpDelete:
		return s.store.Delete(ctx, records.KindEndpoint, name, idx)
	}
	return s.store.Put(ctx, records.KindEndpoint, name, &ep, idx)
}

// serveAPI serves the real API on kv with the stub reconciler behind
// DescribeEndpoint.
func serveAPI(t *testing.T, kv records.KV) string {
	t.Helper()
	store := records.Store{KV: kv}
	h, err := api.New(api.Config{Store: store, AllowFileArtifacts: true})
	if err != nil {
		t.Fatal(err)
	}
	rec := &stubReconciler{store: store}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		r.Body = io.NopCloser(bytes.NewReader(body))
		h.ServeHTTP(w, r)
		if r.Header.Get("X-Amz-Target") == "SageMaker.DescribeEndpoint" {
			var in smapi.DescribeEndpointInput
			if json.Unmarshal(body, &in) == nil {
				if err := rec.step(r.Context(), in.EndpointName); err != nil {
					t.Errorf("stub reconciler: %v", err)
				}
			}
		}
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}

const cpModelsHCL = `
model "m1" {
  command  = "/bin/model"
  artifact = "file:///models/m1.tar.gz"
}
model "m2" {
  command  = "/bin/model"
  artifact = "file:///models/m2.tar.gz"
}
`

func cpConfigHCL(name string, weight int) string {
	return `
endpoint_config "` + name + `" {
  variant "v1" {
    model          = "m1"
    instance_type  = "ml.m5.large"
    instance_count = 2
    weight         = ` + string(rune('0'+weight)) + `
  }
  variant "v2" {
    model         = "m2"
    instance_type = "ml.m5.large"
    weight        = 1
  }
}
`
}

func cpEndpointHCL(config string) string {
	return "endpoint \"ep\" {\n  config = \"" + config + "\"\n}\n"
}

func writeSpec(t *testing.T, dir, name, src string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

var statusLine = regexp.MustCompile(`(?m)^ep \[\d+s\] (\w+)`)

// statuses is the sequence of statuses in progress output, repeats
// collapsed.
func statuses(out string) string {
	var seq []string
	for _, m := range statusLine.FindAllStringSubmatch(out, -1) {
		if len(seq) == 0 || seq[len(seq)-1] != m[1] {
			seq = append(seq, m[1])
		}
	}
	return strings.Join(seq, " ")
}

func TestControlPlaneCommandsMemKV(t *testing.T) {
	testControlPlaneCommands(t, records.NewMemKV())
}

// TestControlPlaneCommandsConsul: the same on real Consul KV.
func TestControlPlaneCommandsConsul(t *testing.T) {
	consul := testagents.StartConsul(t)
	if consul.Reused {
		t.Skip("CONSUL_HTTP_ADDR names a shared agent; this test writes serai/ records and needs its own")
	}
	testControlPlaneCommands(t, records.ConsulKV{KV: consul.Client.KV()})
}

func testControlPlaneCommands(t *testing.T, kv records.KV) {
	addr := serveAPI(t, kv)
	dir := t.TempDir()
	cli := func(args ...string) (int, string, string) {
		t.Helper()
		n := 1 // command words before the flags
		if args[0] == "endpoint" || args[0] == "model" || args[0] == "endpoint-config" {
			n = 2
		}
		return runCLI(t, append(args[:n:n], append([]string{"--addr", addr, "--poll-interval", "1ms"}, args[n:]...)...)...)
	}
	cliNoPoll := func(args ...string) (int, string, string) {
		t.Helper()
		return runCLI(t, append(args[:len(args)-1:len(args)-1], "--addr", addr, args[len(args)-1])...)
	}
	v1 := writeSpec(t, dir, "v1.hcl", cpModelsHCL+cpConfigHCL("c1", 1)+cpEndpointHCL("c1"))

	// plan before anything exists: everything is a create; exit 4.
	code, out, errs := cliNoPoll("plan", v1)
	if code != exitChanges || !strings.Contains(out, `+ model "m1": create`) || !strings.Contains(out, `+ endpoint "ep": create (endpoint_config "c1")`) ||
		!strings.Contains(out, "Plan: 4 to create, 0 to update, 0 unchanged.") {
		t.Fatalf("plan: exit %d\n%s%s", code, out, errs)
	}

	// apply: creates in dependency order and follows the endpoint.
	code, out, errs = cli("apply", v1)
	if code != exitOK {
		t.Fatalf("apply: exit %d\n%s%s", code, out, errs)
	}
	order := []string{`creating model "m1"`, `creating model "m2"`, `creating endpoint_config "c1"`, `creating endpoint "ep"`, "apply: done"}
	last := -1
	for _, s := range order {
		i := strings.Index(out, s)
		if i < last {
			t.Fatalf("apply output lacks or misorders %q:\n%s", s, out)
		}
		last = i
	}
	if got := statuses(out); got != "Creating InService" {
		t.Errorf("apply status sequence %q:\n%s", got, out)
	}
	t.Logf("RESULT cli: apply status sequence %s", statuses(out))

	// Re-apply: nothing to do; plan exits 0.
	if code, out, _ = cli("apply", v1); code != exitOK || !strings.Contains(out, "apply: nothing to do") || strings.Contains(out, "creating") {
		t.Fatalf("re-apply: exit %d\n%s", code, out)
	}
	if code, out, _ = cliNoPoll("plan", v1); code != exitOK || !strings.Contains(out, "Plan: 0 to create, 0 to update, 4 unchanged.") {
		t.Fatalf("re-plan: exit %d\n%s", code, out)
	}

	// A changed config under its name: a conflict; nothing written.
	changed := writeSpec(t, dir, "changed.hcl", cpModelsHCL+cpConfigHCL("c1", 3)+cpEndpointHCL("c1"))
	code, out, errs = cli("apply", changed)
	if code != exitError || !strings.Contains(errs, "immutable") || !strings.Contains(errs, "ProductionVariants[v1].InitialVariantWeight: 1 → 3") {
		t.Fatalf("immutable config change: exit %d\n%s%s", code, out, errs)
	}

	// A new config: plan shows the update and its diff; apply follows the
	// blue/green update to InService.
	v2 := writeSpec(t, dir, "v2.hcl", cpModelsHCL+cpConfigHCL("c1", 1)+cpConfigHCL("c2", 3)+cpEndpointHCL("c2"))
	code, out, _ = cliNoPoll("plan", v2)
	if code != exitChanges || !strings.Contains(out, `~ endpoint "ep": update (UpdateEndpoint, blue/green: endpoint_config "c1" → "c2")`) ||
		!strings.Contains(out, "~ ProductionVariants[v1].InitialVariantWeight: 1 → 3") {
		t.Fatalf("plan update: exit %d\n%s", code, out)
	}
	code, out, errs = cli("apply", v2)
	if code != exitOK || !strings.Contains(out, `updating endpoint "ep"`) || !strings.Contains(out, "traffic: g1 c1 90%, g2 c2 10%") {
		t.Fatalf("apply update: exit %d\n%s%s", code, out, errs)
	}
	if got := statuses(out); got != "Updating InService" {
		t.Errorf("update status sequence %q:\n%s", got, out)
	}

	// An update that rolls back: exit 1 with the reason.
	broken := writeSpec(t, dir, "broken.hcl", cpModelsHCL+cpConfigHCL("c3-broken", 1)+cpEndpointHCL("c3-broken"))
	code, out, errs = cli("apply", broken)
	if code != exitError || !strings.Contains(errs, "rolled back") || !strings.Contains(errs, "never became healthy") {
		t.Fatalf("rollback: exit %d\n%s%s", code, out, errs)
	}
	if got := statuses(out); got != "Updating RollingBack InService" {
		t.Errorf("rollback status sequence %q:\n%s", got, out)
	}

	// update-weights, then describe (text and JSON).
	code, out, errs = cli("endpoint", "update-weights", "--weight", "v1=0", "--weight", "v2=1", "ep")
	if code != exitOK || statuses(out) != "Updating InService" {
		t.Fatalf("update-weights: exit %d\n%s%s", code, out, errs)
	}
	code, out, _ = cliNoPoll("endpoint", "describe", "--output", "json", "ep")
	var d smapi.DescribeEndpointOutput
	if code != exitOK || json.Unmarshal([]byte(out), &d) != nil || d.EndpointConfigName != "c2" || d.ProductionVariants[0].CurrentWeight != 0 {
		t.Fatalf("describe json: exit %d\n%s", code, out)
	}
	if code, out, _ = cliNoPoll("endpoint", "describe", "ep"); code != exitOK || !strings.Contains(out, "variant v1") || !strings.Contains(out, "history:") {
		t.Fatalf("describe: exit %d\n%s", code, out)
	}

	// --output json: one document on stdout, progress on stderr.
	code, out, errs = cli("endpoint", "update-weights", "--output", "json", "--weight", "v1=1", "ep")
	var dj smapi.DescribeEndpointOutput
	if code != exitOK || json.Unmarshal([]byte(out), &dj) != nil || dj.EndpointStatus != smapi.StatusInService || statuses(errs) != "Updating InService" {
		t.Fatalf("update-weights --output json: exit %d\nstdout %s\nstderr %s", code, out, errs)
	}
	code, out, errs = cli("apply", "--output", "json", v1) // c1 while c2 runs: an update
	var pj struct {
		Changes   []struct{ Kind, Name, Action string }
		Endpoints []smapi.DescribeEndpointOutput
		Error     string
	}
	if code != exitOK || json.Unmarshal([]byte(out), &pj) != nil || len(pj.Changes) != 4 || pj.Changes[3].Action != "update" ||
		len(pj.Endpoints) != 1 || pj.Endpoints[0].EndpointConfigName != "c1" || pj.Error != "" || statuses(errs) != "Updating InService" {
		t.Fatalf("apply --output json: exit %d\nstdout %s\nstderr %s", code, out, errs)
	}
	if code, out, errs = cli("apply", v2); code != exitOK {
		t.Fatalf("apply back to c2: exit %d\n%s%s", code, out, errs)
	}

	// endpoint update --config, --detach: returns at once.
	if code, out, errs = cli("endpoint", "update", "--config", "c1", "--detach", "ep"); code != exitOK || !strings.Contains(out, "detached") {
		t.Fatalf("update --detach: exit %d\n%s%s", code, out, errs)
	}
	// apply of files naming c1 while it rolls out: only waits.
	code, out, _ = cli("apply", v1)
	if code != exitOK || !strings.Contains(out, `… endpoint "ep": in-progress`) || statuses(out) != "Updating InService" {
		t.Fatalf("apply while updating: exit %d\n%s", code, out)
	}

	// Lists, SageMaker's errors, --output json.
	if code, out, _ = cliNoPoll("model", "list", "m"); code != exitUsage {
		t.Fatalf("model list: %d %s", code, out)
	}
	if code, out, _ = runCLI(t, "model", "list", "--addr", addr, "--output", "json"); code != exitOK || !strings.Contains(out, `"ModelName": "m2"`) {
		t.Fatalf("model list json: exit %d\n%s", code, out)
	}
	if code, out, _ = runCLI(t, "endpoint", "list", "--addr", addr); code != exitOK || !regexp.MustCompile(`(?m)^ep\s+InService`).MatchString(out) {
		t.Fatalf("endpoint list: exit %d\n%s", code, out)
	}
	if code, _, errs = cliNoPoll("model", "delete", "m1"); code != exitError || !strings.Contains(errs, "ResourceInUse") {
		t.Fatalf("deleting a model in use: exit %d %s", code, errs)
	}
	if code, _, errs = cliNoPoll("endpoint-config", "describe", "nope"); code != exitError || !strings.Contains(errs, "Could not find endpoint configuration") {
		t.Fatalf("describe missing: exit %d %s", code, errs)
	}
	if code, out, _ = cliNoPoll("endpoint-config", "describe", "c2"); code != exitOK || !strings.Contains(out, `ProductionVariants[v1].InitialVariantWeight = 3`) {
		t.Fatalf("endpoint-config describe: exit %d\n%s", code, out)
	}

	// create from JSON (SageMaker's shape) and from HCL + --name.
	mj := writeSpec(t, dir, "m3.json", `{"ModelName":"m3","PrimaryContainer":{"Image":"registry.example/m3:1","ModelDataUrl":"file:///models/m3.tar.gz"}}`)
	if code, out, errs = runCLI(t, "model", "create", "--addr", addr, "--json", mj); code != exitOK || !strings.Contains(out, "model/m3") {
		t.Fatalf("model create --json: exit %d\n%s%s", code, out, errs)
	}
	bad := writeSpec(t, dir, "bad.json", `{"ModelName":"m4","PrimaryContainr":{}}`)
	if code, _, errs = runCLI(t, "model", "create", "--addr", addr, "--json", bad); code != exitValidation || !strings.Contains(errs, "PrimaryContainr") {
		t.Fatalf("model create bad json: exit %d %s", code, errs)
	}
	c4 := writeSpec(t, dir, "c4.hcl", cpModelsHCL+cpConfigHCL("c4", 2))
	if code, out, errs = runCLI(t, "endpoint-config", "create", "--addr", addr, "--name", "c4", c4); code != exitOK || !strings.Contains(out, "endpoint-config/c4") {
		t.Fatalf("endpoint-config create from HCL: exit %d\n%s%s", code, out, errs)
	}

	// delete follows the endpoint until it is gone.
	code, out, errs = cli("endpoint", "delete", "ep")
	if code != exitOK || statuses(out) != "Deleting Deleted" || !strings.Contains(out, `endpoint "ep" deleted`) {
		t.Fatalf("endpoint delete: exit %d\n%s%s", code, out, errs)
	}
	for _, c := range []string{"c1", "c2", "c3-broken", "c4"} {
		if code, _, errs = cliNoPoll("endpoint-config", "delete", c); code != exitOK {
			t.Errorf("delete config %s: %d %s", c, code, errs)
		}
	}
	for _, m := range []string{"m1", "m2", "m3"} {
		if code, _, errs = cliNoPoll("model", "delete", m); code != exitOK {
			t.Errorf("delete model %s: %d %s", m, code, errs)
		}
	}
}

func TestWeightsInput(t *testing.T) {
	in, err := weightsInput("ep", []string{"a=0.5", "b=2"}, []string{"b=3"})
	if err != nil || len(in.DesiredWeightsAndCapacities) != 2 || *in.DesiredWeightsAndCapacities[1].DesiredInstanceCount != 3 ||
		*in.DesiredWeightsAndCapacities[0].DesiredWeight != 0.5 || in.DesiredWeightsAndCapacities[0].DesiredInstanceCount != nil {
		t.Fatalf("%+v %v", in, err)
	}
	for _, bad := range [][2][]string{
		{nil, nil}, {{"a"}, nil}, {{"a=-1"}, nil}, {nil, {"a=1.5"}}, {{"a=1", "a=2"}, nil}, {{"=1"}, nil},
	} {
		if _, err := weightsInput("ep", bad[0], bad[1]); err == nil {
			t.Errorf("accepted %v", bad)
		}
	}
}

// FuzzWeightsInput: no flag value makes weightsInput panic, and what it
// accepts is well-formed.
func FuzzWeightsInput(f *testing.F) {
	f.Add("v1=0.5", "v1=3")
	f.Add("=", "a=")
	f.Add("a=NaN", "b=-0")
	f.Fuzz(func(t *testing.T, w, n string) {
		in, err := weightsInput("ep", []string{w}, []string{n})
		if err != nil {
			return
		}
		for _, d := range in.DesiredWeightsAndCapacities {
			if d.VariantName == "" || (d.DesiredWeight != nil && !(*d.DesiredWeight >= 0)) || (d.DesiredInstanceCount != nil && *d.DesiredInstanceCount < 0) {
				t.Fatalf("accepted %q %q as %+v", w, n, d)
			}
		}
	})
}
