package scheduler

import (
	"bytes"
	"encoding/json"
	"flag"
	"github.com/seraihq/serai/contract"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hashicorp/nomad/api"

	"github.com/seraihq/serai/jobspec"
	"github.com/seraihq/serai/policies"
)

var update = flag.Bool("update", false, "rewrite the *.golden.json files")

func examples(t *testing.T) []string {
	t.Helper()
	paths, err := filepath.Glob("../examples/*.hcl")
	if err != nil || len(paths) < 3 {
		t.Fatalf("want at least 3 examples, got %v (%v)", paths, err)
	}
	return paths
}

func compileFile(t *testing.T, path string) (*jobspec.Spec, map[string][]byte) {
	t.Helper()
	p := jobspec.NewParser()
	spec, diags := p.ParseFiles(path)
	if diags.HasErrors() {
		var b bytes.Buffer
		p.WriteDiagnostics(&b, diags)
		t.Fatalf("%s does not validate:\n%s", path, b.String())
	}
	out := map[string][]byte{}
	for _, name := range jobspec.SortedNames(spec.Endpoints) {
		job, err := Compile(spec, name, 1, Options{})
		if err != nil {
			t.Fatal(err)
		}
		b, err := MarshalJob(job)
		if err != nil {
			t.Fatal(err)
		}
		out[name] = b
	}
	return spec, out
}

func goldenPath(hcl, endpoint string) string {
	return filepath.Join("testdata", strings.TrimSuffix(filepath.Base(hcl), ".hcl")+"."+endpoint+".golden.json")
}

// TestGolden compiles every example and compares it with the checked-in
// job. Run `go test ./scheduler -update` after an intended change.
func TestGolden(t *testing.T) {
	for _, path := range examples(t) {
		_, jobs := compileFile(t, path)
		for ep, got := range jobs {
			gp := goldenPath(path, ep)
			if *update {
				if err := os.MkdirAll("testdata", 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(gp, got, 0o644); err != nil {
					t.Fatal(err)
				}
				continue
			}
			want, err := os.ReadFile(gp)
			if err != nil {
				t.Fatalf("%v (run go test ./scheduler -update)", err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("%s differs from %s; run `go test ./scheduler -update` and review the diff", path, gp)
			}
		}
	}
}

func TestDeterministic(t *testing.T) {
	for _, path := range examples(t) {
		_, a := compileFile(t, path)
		for i := 0; i < 5; i++ {
			_, b := compileFile(t, path)
			for ep := range a {
				if !bytes.Equal(a[ep], b[ep]) {
					t.Fatalf("%s endpoint %s: two compilations differ", path, ep)
				}
			}
		}
	}
}

func decodeJob(t *testing.T, b []byte) *api.Job {
	t.Helper()
	var wrapper struct{ Job *api.Job }
	if err := json.Unmarshal(b, &wrapper); err != nil {
		t.Fatal(err)
	}
	return wrapper.Job
}

func group(t *testing.T, job *api.Job, name string) *api.TaskGroup {
	t.Helper()
	for _, g := range job.TaskGroups {
		if *g.Name == name {
			return g
		}
	}
	t.Fatalf("job %s has no group %q", *job.ID, name)
	return nil
}

func task(t *testing.T, g *api.TaskGroup, name string) *api.Task {
	t.Helper()
	for _, tk := range g.Tasks {
		if tk.Name == name {
			return tk
		}
	}
	t.Fatalf("group %s has no task %q", *g.Name, name)
	return nil
}

// TestScalingPolicyRoundTrip: after the JSON round trip Nomad does, the
// policy still says what the spec asked for.
func TestScalingPolicyRoundTrip(t *testing.T) {
	spec, jobs := compileFile(t, "../examples/two-variants.hcl")
	job := decodeJob(t, jobs["churn"])
	for _, v := range spec.EndpointConfigs["churn-2026-11-26"].Variants {
		g := group(t, job, v.Name)
		if g.Scaling == nil {
			t.Fatalf("variant %s has no scaling block", v.Name)
		}
		if *g.Scaling.Min != int64(v.Autoscaling.MinCapacity) || *g.Scaling.Max != int64(v.Autoscaling.MaxCapacity) {
			t.Errorf("variant %s: min/max = %d/%d", v.Name, *g.Scaling.Min, *g.Scaling.Max)
		}
		checks, err := policies.ParseNomadPolicy(g.Scaling.Policy)
		if err != nil {
			t.Fatal(err)
		}
		if len(checks) != 1 {
			t.Fatalf("checks = %+v", checks)
		}
		c := checks[0]
		want := policies.Scaling{Endpoint: "churn", Variant: v.Name, Generation: 1}.Query()
		if c.Source != "prometheus" || c.Strategy != "target-value" || c.Target != v.Autoscaling.TargetInvocationsPerInstance || c.Query != want {
			t.Errorf("variant %s: check = %+v, want query %s", v.Name, c, want)
		}
		if !strings.Contains(c.Query, `variant="`+v.Name+`"`) || !strings.Contains(c.Query, `generation="1"`) {
			t.Errorf("query does not select the variant and generation: %s", c.Query)
		}
	}
	champion := group(t, job, "champion")
	if got := champion.Scaling.Policy["cooldown"]; got != "5m0s" {
		t.Errorf("scale-in cooldown = %v, want SageMaker's 300s", got)
	}
	if got := champion.Scaling.Policy["cooldown_on_scale_up"]; got != "1m0s" {
		t.Errorf("scale-out cooldown = %v", got)
	}
}

func TestCompiledShape(t *testing.T) {
	_, jobs := compileFile(t, "../examples/two-variants.hcl")
	job := decodeJob(t, jobs["churn"])
	if *job.ID != "serai-churn.g1" || job.Meta[contract.MetaEndpoint] != "churn" || job.Meta[contract.MetaConfig] != "churn-2026-11-26" || job.Meta[contract.MetaGeneration] != "1" {
		t.Fatalf("job id/meta = %s %v", *job.ID, job.Meta)
	}
	g := group(t, job, "champion")
	if *g.Count != 3 {
		t.Errorf("count = %d", *g.Count)
	}
	if len(g.Spreads) != 2 || g.Spreads[0].Attribute != "${node.datacenter}" || len(g.Spreads[0].SpreadTarget) != 3 {
		t.Fatalf("spreads = %+v", g.Spreads)
	}
	sum := 0
	for _, st := range g.Spreads[0].SpreadTarget {
		sum += int(st.Percent)
	}
	if sum != 100 {
		t.Errorf("spread targets add up to %d", sum)
	}
	svc := g.Services[0]
	if svc.Name != "serai-churn" || strings.Join(svc.Tags, ",") != "variant=champion,generation=1,model=churn-xgb-v7" || svc.Checks[0].Path != "/ping" {
		t.Errorf("service = %+v", svc)
	}
	fetch := task(t, g, FetchTaskName)
	if fetch.Lifecycle == nil || fetch.Lifecycle.Hook != "prestart" || fetch.Lifecycle.Sidecar {
		t.Errorf("fetch lifecycle = %+v", fetch.Lifecycle)
	}
	if fetch.Vault == nil || fetch.Vault.Role != "serai-model-churn-xgb-v7" || *fetch.Vault.Env || !*fetch.Vault.DisableFile {
		t.Errorf("fetch vault = %+v", fetch.Vault)
	}
	if len(fetch.Templates) != 1 || !*fetch.Templates[0].Envvars || !strings.Contains(*fetch.Templates[0].EmbeddedTmpl, `secret "secret/data/serai/stores/minio-main"`) {
		t.Errorf("fetch template = %+v", fetch.Templates)
	}
	model := task(t, g, ModelTaskName)
	if model.Vault != nil || len(model.Templates) != 0 || len(model.Identities) != 0 {
		t.Errorf("the model task must get no Vault identity, token or template")
	}
	for k := range model.Env {
		if strings.HasPrefix(k, "AWS_") || strings.HasPrefix(k, "VAULT") {
			t.Errorf("model task env carries %s", k)
		}
	}
	if model.Config["image"] != "registry.example.com/ml/xgboost-serving:1.7.6" || model.Env["SM_MODEL_DIR"] != "/opt/ml/model" {
		t.Errorf("model task = %+v", model.Config)
	}
	if *model.Resources.CPU != 4000 || *model.Resources.MemoryMB != 16384 {
		t.Errorf("ml.m5.xlarge resources = %d MHz %d MB", *model.Resources.CPU, *model.Resources.MemoryMB)
	}
	if job.UI == nil || len(job.UI.Links) < 2 || !strings.Contains(job.UI.Description, "churn-2026-11-26") {
		t.Errorf("ui = %+v", job.UI)
	}
}

func TestGPUAndShadow(t *testing.T) {
	_, jobs := compileFile(t, "../examples/gpu.hcl")
	job := decodeJob(t, jobs["sentiment"])
	fp := task(t, group(t, job, "fp16"), ModelTaskName)
	if len(fp.Resources.Devices) != 1 || *fp.Resources.Devices[0].Count != 1 || fp.Resources.Devices[0].Name != "nvidia/gpu" {
		t.Fatalf("devices = %+v", fp.Resources.Devices)
	}
	if *fp.Resources.MemoryMB != 12288 || *fp.Resources.CPU != 4000 {
		t.Errorf("resources override not applied: %d MB %d MHz", *fp.Resources.MemoryMB, *fp.Resources.CPU)
	}
	sh := group(t, job, "shadow-int8")
	if !strings.Contains(strings.Join(sh.Services[0].Tags, ","), "shadow=true") {
		t.Errorf("shadow tags = %v", sh.Services[0].Tags)
	}
	tmpl := *task(t, sh, FetchTaskName).Templates[0].EmbeddedTmpl
	if !strings.Contains(tmpl, `secret "aws/creds/serai-model-reader"`) || !strings.Contains(tmpl, ".Data.access_key") {
		t.Errorf("aws engine template = %s", tmpl)
	}
}

func TestSingleVariantExec(t *testing.T) {
	_, jobs := compileFile(t, "../examples/single-variant.hcl")
	job := decodeJob(t, jobs["iris"])
	g := group(t, job, "primary")
	if len(g.Spreads) != 0 {
		t.Errorf("one instance needs no spread: %+v", g.Spreads)
	}
	m := task(t, g, ModelTaskName)
	if m.Driver != "exec" || m.Env["SAGEMAKER_BIND_TO_PORT"] != "${NOMAD_PORT_http}" || m.Env["SM_MODEL_DIR"] != "${NOMAD_ALLOC_DIR}/data/model" {
		t.Errorf("exec model task = %s %v", m.Driver, m.Env)
	}
	f := task(t, g, FetchTaskName)
	if f.Config["command"] != "/usr/local/bin/serai" {
		t.Errorf("fetch command = %v", f.Config["command"])
	}
}

// TestNomadValidate runs Nomad's own validation on every golden job.
func TestNomadValidate(t *testing.T) {
	nomad, err := exec.LookPath("nomad")
	if err != nil {
		t.Skip("nomad not on PATH: build Nomad from its public repository (see README, \"Agents for the integration suites\") to run Nomad's own job validation")
	}
	// A closed loopback port: `nomad job validate` falls back to local
	// validation when the agent cannot be reached, and nothing leaves the host.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	goldens, _ := filepath.Glob("testdata/*.golden.json")
	if len(goldens) < 3 {
		t.Fatalf("want at least 3 golden jobs, found %v", goldens)
	}
	for _, g := range goldens {
		cmd := exec.Command(nomad, "job", "validate", "-json", g)
		cmd.Env = append(os.Environ(), "NOMAD_ADDR=http://"+addr)
		out, err := cmd.CombinedOutput()
		if err != nil || !strings.Contains(string(out), "Job validation successful") {
			t.Errorf("nomad job validate %s: %v\n%s", g, err, out)
		}
		if strings.Contains(string(out), "Job Warnings") {
			t.Errorf("nomad job validate %s warns:\n%s", g, out)
		}
	}
}

// A model whose artifact is not s3:// never gets a Vault identity or the
// credential template, even when its spec names a store (validation
// refuses that; this is the compiler's own wall): a file:// URL could
// otherwise name the rendered secrets/store.env and copy the keys into
// the model dir.
func TestNoStoreKeysWithoutS3(t *testing.T) {
	spec, _ := compileFile(t, "../examples/single-variant.hcl")
	var m *jobspec.Model
	for _, mm := range spec.Models {
		m = mm
	}
	if m.ArtifactStore == "" {
		t.Fatal("the example's model names no store")
	}
	for _, url := range []string{"file:///alloc/../secrets/store.env", "https://example.test/m.tar.gz", "s3://models/m.tar.gz"} {
		m.Artifact = url
		c := &compiler{spec: spec, opts: Options{}.withDefaults()}
		f, err := c.fetchTask(m)
		if err != nil {
			t.Fatal(err)
		}
		s3 := strings.HasPrefix(url, "s3://")
		if (f.Vault != nil) != s3 || (len(f.Templates) > 0) != s3 || (len(f.Identities) > 0) != s3 || (f.Env["SERAI_STORE_NAME"] != "") != s3 {
			t.Errorf("%s: vault %v, %d templates, %d identities, env %v", url, f.Vault, len(f.Templates), len(f.Identities), f.Env)
		}
	}
}
