package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sagemaker"
	smtypes "github.com/aws/aws-sdk-go-v2/service/sagemaker/types"
	consulapi "github.com/hashicorp/consul/api"
	nomadapi "github.com/hashicorp/nomad/api"

	"github.com/seraihq/serai/contract"
	"github.com/seraihq/serai/internal/testagents"
	"github.com/seraihq/serai/policies"
)

// Autoscaling figures of TestAutoscaling: 25 req/s is 1500 invocations a
// minute, 3 instances at 600 per instance, below max_capacity 4.
const (
	asRate     = 25
	asTarget   = 600
	asMin      = 1
	asMax      = 4
	asWant     = 3
	asTrickle  = 1 // req/s after the load stops: 60/min, one instance's worth
	asOutCool  = 20 * time.Second
	asInCool   = 30 * time.Second
	asEvalEach = 5 * time.Second
)

// TestAutoscaling runs the autoscaling loop with nothing stubbed: the
// control plane (`serai server`, `serai apply`) deploys a variant whose
// compiled policy the real Nomad Autoscaler reads from Nomad; Debian's
// Prometheus scrapes two `serai router` processes found through Consul;
// load spread over both routers scales the variant out toward
// target_invocations_per_instance (3 instances, not max_capacity 4: the
// query's arithmetic holds with two routers), and a trickle after the load
// stops sees it scaled back in to min_capacity, respecting the cooldowns,
// with no failed invocation. DescribeEndpoint's DesiredInstanceCount and the
// routers' instance sets follow.
func TestAutoscaling(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 12*time.Minute)
	defer cancel()
	as := newAutoscaleStack(t, ctx)
	nomad, serai, srv, sm, promAddr, routers := as.nomad, as.serai, as.srv, as.sm, as.promAddr, as.routers
	var urls []string
	for _, addr := range routers {
		urls = append(urls, "http://"+addr+"/endpoints/"+endpointName+"/invocations")
	}
	as.apply(t, ctx, asSpec(as.store.URL, as.modelServer, as.sum))
	jobID := contract.JobID(endpointName, 1)
	checkCompiledPolicy(t, nomad.Client, jobID)
	// Prometheus must see both routers before the load, so the first
	// evaluations read the whole load.
	waitUntil(t, ctx, "Prometheus scrapes both routers", time.Minute, func() bool {
		v, ok := promQuery(promAddr, `count(up{job="serai-router"} == 1)`)
		return ok && v == 2
	})

	w := &scaleWatch{t: t, nomad: nomad.Client, jobID: jobID, routers: routers, min: asMax, max: 0}
	w.sample()
	if w.count != asMin {
		t.Fatalf("before load: count %d, want min_capacity %d", w.count, asMin)
	}

	// Scale out under load.
	loadStart := time.Now()
	load := startRateLoad(urls, asRate)
	waitUntil(t, ctx, fmt.Sprintf("%d instances in both routers", asWant), 4*time.Minute, func() bool {
		w.sample()
		return w.count >= asWant && w.routersSee(asWant)
	})
	outTook := time.Since(loadStart)
	// New instances take traffic: every request of the next few seconds,
	// spread by both routers over all instances, succeeds.
	time.Sleep(asOutCool + asEvalEach)
	w.sample()
	d := describe(t, ctx, sm)
	if len(d.ProductionVariants) != 1 || aws.ToInt32(d.ProductionVariants[0].DesiredInstanceCount) != int32(w.count) ||
		aws.ToInt32(d.ProductionVariants[0].CurrentInstanceCount) != int32(w.count) {
		t.Errorf("DescribeEndpoint under load: %+v, want desired = current = %d (Nomad's count)", variantCounts(d.ProductionVariants), w.count)
	}
	if w.count != asWant {
		t.Errorf("under %d req/s with target %d/instance/min the variant has %d instances, want %d (max_capacity %d)", asRate, asTarget, w.count, asWant, asMax)
	}
	perInstance, _ := promQuery(promAddr, policies.Scaling{Endpoint: endpointName, Variant: "v1", Generation: 1}.Query())

	// Scale in after the load stops (a trickle keeps checking that no
	// invocation fails while instances leave).
	load.setRate(asTrickle)
	loadStop := time.Now()
	waitUntil(t, ctx, "scale-in to min_capacity in both routers", 5*time.Minute, func() bool {
		w.sample()
		return w.count == asMin && w.routersSee(asMin)
	})
	inTook := time.Since(loadStop)
	time.Sleep(3 * time.Second)
	failed, total := load.stop()
	d = describe(t, ctx, sm)
	if got := aws.ToInt32(d.ProductionVariants[0].DesiredInstanceCount); got != asMin {
		t.Errorf("DescribeEndpoint after scale-in: DesiredInstanceCount %d, want %d", got, asMin)
	}

	events := scaleEvents(t, nomad.Client, jobID, "v1")
	t.Logf("RESULT autoscaling: load start (%d req/s over 2 routers, target %d/instance/min) → %d instances taking traffic in both routers %s; measured %.0f invocations/instance/min at %d instances",
		asRate, asTarget, asWant, outTook.Round(100*time.Millisecond), perInstance, asWant)
	t.Logf("RESULT autoscaling: load stop → scaled in to %d %s (1m rate window, %s scale-in cooldown); %d of %d invocations failed; counts seen %d..%d; scaling events %s",
		asMin, inTook.Round(100*time.Millisecond), asInCool, failed, total, w.min, w.max, events)
	if failed != 0 {
		t.Errorf("%d of %d invocations failed: %v", failed, total, load.errs())
	}
	if w.min < asMin || w.max > asMax {
		t.Errorf("count left min..max: saw %d..%d, want within %d..%d", w.min, w.max, asMin, asMax)
	}
	checkCooldowns(t, nomad.Client, jobID, "v1")

	// `serai endpoint describe` shows the policy and the autoscaler's
	// events next to the variant's counts.
	show := exec.CommandContext(ctx, serai, "endpoint", "describe", endpointName)
	show.Env = append(os.Environ(), "SERAI_ADDR="+srv.url)
	b, err := show.CombinedOutput()
	if err != nil {
		t.Fatalf("serai endpoint describe: %v\n%s", err, b)
	}
	t.Logf("serai endpoint describe %s:\n%s", endpointName, b)
	for _, want := range []string{
		fmt.Sprintf("variant v1           %d/%d healthy", asMin, asMin),
		fmt.Sprintf("autoscaling %d..%d instances, target %d invocations/instance/min, cooldown out %s in %s, every %s", asMin, asMax, asTarget, asOutCool, asInCool, asEvalEach),
		fmt.Sprintf("scaled %d → %d by nomad-autoscaler", 2, asMin),
	} {
		if !strings.Contains(string(b), want) {
			t.Errorf("serai endpoint describe lacks %q", want)
		}
	}
}

// autoscaleStack is a stack with the trained iris v1 artifact uploaded,
// two routers (given extra flags), Debian's Prometheus scraping them, the
// Nomad Autoscaler and one serai server.
type autoscaleStack struct {
	*stack
	sum      string
	routers  []string
	promAddr string
	srv      *seraiServer
	sm       *sagemaker.Client
}

func newAutoscaleStack(t *testing.T, ctx context.Context, routerFlags ...string) *autoscaleStack {
	t.Helper()
	prom, err := exec.LookPath("prometheus")
	if err != nil {
		t.Skip("prometheus not on PATH (install Debian's prometheus package)")
	}
	autoscaler, err := exec.LookPath("nomad-autoscaler")
	if err != nil {
		t.Skip("nomad-autoscaler not on PATH (source scripts/agents, which puts ~/.cache/serai/bin on PATH)")
	}
	as := &autoscaleStack{stack: newStack(t, ctx)}
	out := filepath.Join(as.dir, "train-v1")
	runCmd(t, as.modelServer, "train", "--version", "v1", "--features", "sepal", "--data", "../examples/data/iris.csv", "--out", out)
	as.sum = uploadArtifact(t, ctx, as.store, filepath.Join(out, "model.tar.gz"), "iris/v1/model.tar.gz")
	as.routers = []string{testagents.FreeLoopbackAddr(t), testagents.FreeLoopbackAddr(t)}
	for _, addr := range as.routers {
		startRouter(t, as.serai, addr, as.consul, as.dir, routerFlags...)
	}
	as.promAddr = startPrometheus(t, prom, as.dir, as.consul.Client)
	startAutoscaler(t, autoscaler, as.dir, as.nomad.Addr, "http://"+as.promAddr)
	as.srv = startServer(t, as.serai, "a", as.dir, as.consul, as.vault, as.nomad)
	as.sm = sageMakerClient(as.srv.url)
	return as
}

// apply writes spec to a file and runs `serai apply` on it.
func (as *autoscaleStack) apply(t *testing.T, ctx context.Context, spec string) {
	t.Helper()
	path := filepath.Join(as.dir, "spec.hcl")
	if err := os.WriteFile(path, []byte(spec), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.CommandContext(ctx, as.serai, "apply", path)
	cmd.Env = append(os.Environ(), "SERAI_ADDR="+as.srv.url)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("serai apply: %v\n%s", err, b)
	}
}

func asSpec(storeURL, modelServer, sum string) string {
	return autoscaleSpec(storeURL, modelServer, sum, scaling{asMin, asMin, asMax, asOutCool, asInCool, asEvalEach})
}

// scaling is the variant's instance_count and autoscaling block.
type scaling struct {
	count, min, max int
	out, in, eval   time.Duration
}

// autoscaleSpec is one endpoint of one autoscaling variant v1 (target
// asTarget invocations per instance per minute).
func autoscaleSpec(storeURL, modelServer, sum string, sc scaling) string {
	return fmt.Sprintf(`
artifact_store %q {
  endpoint   = %q
  path_style = true
}

model "iris-v1" {
  artifact         = "s3://%s/iris/v1/model.tar.gz"
  sha256           = %q
  artifact_store   = %q
  command          = %q
  driver           = "raw_exec"
  download_timeout = "2m"
  startup_timeout  = "20s"
}

endpoint_config "iris-as" {
  datacenters = ["dc1"]
  variant "v1" {
    model          = "iris-v1"
    instance_type  = "ml.t3.medium"
    instance_count = %d
    resources {
      cpu    = 100
      memory = 64
    }
    autoscaling {
      min_capacity                    = %d
      max_capacity                    = %d
      target_invocations_per_instance = %d
      scale_out_cooldown              = %q
      scale_in_cooldown               = %q
      evaluation_interval             = %q
    }
  }
}

endpoint %q {
  config = "iris-as"
}
`, storeName, storeURL, bucket, sum, storeName, modelServer, sc.count, sc.min, sc.max, asTarget,
		sc.out.String(), sc.in.String(), sc.eval.String(), endpointName)
}

// checkCompiledPolicy: the job the control plane registered carries the
// policy the autoscaler reads, with the spec's bounds.
func checkCompiledPolicy(t *testing.T, c *nomadapi.Client, jobID string) {
	t.Helper()
	job, _, err := c.Jobs().Info(jobID, nil)
	if err != nil {
		t.Fatalf("job %s: %v", jobID, err)
	}
	for _, g := range job.TaskGroups {
		if g.Scaling == nil || *g.Scaling.Min != asMin || *g.Scaling.Max != asMax {
			t.Fatalf("group %s scaling = %+v", *g.Name, g.Scaling)
		}
	}
}

// scaleWatch samples Nomad's group count and each router's healthy
// instances gauge, keeping the extremes of the count.
type scaleWatch struct {
	t        *testing.T
	nomad    *nomadapi.Client
	jobID    string
	routers  []string
	count    int
	healthy  []float64
	min, max int
}

func (w *scaleWatch) sample() {
	job, _, err := w.nomad.Jobs().Info(w.jobID, nil)
	if err == nil && len(job.TaskGroups) == 1 && job.TaskGroups[0].Count != nil {
		w.count = *job.TaskGroups[0].Count
		w.min, w.max = min(w.min, w.count), max(w.max, w.count)
	}
	w.healthy = w.healthy[:0]
	series := fmt.Sprintf(`%s{endpoint=%q,generation="1",variant="v1"}`, policies.MetricHealthyInstances, endpointName)
	for _, r := range w.routers {
		v := -1.0
		if resp, err := http.Get("http://" + r + "/metrics"); err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if x, ok := metricValue(b, series); ok {
				v = x
			}
		}
		w.healthy = append(w.healthy, v)
	}
}

func (w *scaleWatch) routersSee(n int) bool {
	for _, h := range w.healthy {
		if h != float64(n) {
			return false
		}
	}
	return len(w.healthy) > 0
}

// scaleEvents renders the group's scaling events Nomad recorded (the
// autoscaler's, with their reasons), oldest first.
func scaleEvents(t *testing.T, c *nomadapi.Client, jobID, group string) string {
	var parts []string
	for _, e := range groupEvents(t, c, jobID, group) {
		if e.Count == nil {
			continue
		}
		parts = append(parts, fmt.Sprintf("%d→%d", e.PreviousCount, *e.Count))
	}
	return "[" + strings.Join(parts, ", ") + "]"
}

func groupEvents(t *testing.T, c *nomadapi.Client, jobID, group string) []nomadapi.ScalingEvent {
	t.Helper()
	st, _, err := c.Jobs().ScaleStatus(jobID, nil)
	if err != nil {
		t.Fatalf("scale status %s: %v", jobID, err)
	}
	g, ok := st.TaskGroups[group]
	if !ok {
		t.Fatalf("scale status has no group %s", group)
	}
	ev := append([]nomadapi.ScalingEvent(nil), g.Events...)
	sort.Slice(ev, func(i, j int) bool { return ev[i].Time < ev[j].Time })
	return ev
}

// checkCooldowns: after each count change the autoscaler made, the next
// one came no sooner than the cooldown of the direction just taken.
func checkCooldowns(t *testing.T, c *nomadapi.Client, jobID, group string) {
	t.Helper()
	var last *nomadapi.ScalingEvent
	for _, e := range groupEvents(t, c, jobID, group) {
		if e.Count == nil || e.Error || e.Meta["source"] == "serai" {
			continue
		}
		if last != nil {
			gap := time.Duration(e.Time - last.Time)
			cool := asInCool
			if *last.Count > last.PreviousCount {
				cool = asOutCool
			}
			if gap < cool-time.Second {
				t.Errorf("scaling %d→%d came %s after %d→%d, within the %s cooldown", e.PreviousCount, *e.Count, gap.Round(100*time.Millisecond), last.PreviousCount, *last.Count, cool)
			}
		}
		last = &e
	}
}

func variantCounts(vs []smtypes.ProductionVariantSummary) string {
	var parts []string
	for _, v := range vs {
		parts = append(parts, fmt.Sprintf("%s desired=%d current=%d", aws.ToString(v.VariantName), aws.ToInt32(v.DesiredInstanceCount), aws.ToInt32(v.CurrentInstanceCount)))
	}
	return strings.Join(parts, "; ")
}

// startPrometheus runs Debian's prometheus with its own config and data
// dir on loopback, scraping every 2s the serai routers passing in Consul.
// Debian builds Prometheus without consul_sd_configs, so the routers are
// found through Consul by an HTTP service discovery endpoint (Prometheus's
// http_sd_configs format) the test serves from Consul's health API; an
// upstream Prometheus would use consul_sd_configs with the same service.
func startPrometheus(t *testing.T, bin, dir string, consul *consulapi.Client) string {
	t.Helper()
	sd := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		entries, _, err := consul.Health().Service(contract.RouterServiceName, "", true, nil)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		targets := []string{}
		for _, e := range entries {
			targets = append(targets, net.JoinHostPort(e.Service.Address, strconv.Itoa(e.Service.Port)))
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode([]map[string]any{{
			"targets": targets,
			"labels":  map[string]string{"__meta_consul_service": contract.RouterServiceName},
		}})
	}))
	t.Cleanup(sd.Close)
	addr := testagents.FreeLoopbackAddr(t)
	conf := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(conf, []byte(fmt.Sprintf(`global:
  scrape_interval: 2s
  scrape_timeout: 1s
  evaluation_interval: 2s
scrape_configs:
  - job_name: serai-router
    http_sd_configs:
      - url: %q
        refresh_interval: 2s
`, sd.URL)), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "--config.file="+conf, "--storage.tsdb.path="+filepath.Join(dir, "prometheus-data"),
		"--web.listen-address="+addr, "--log.level=info")
	startDaemon(t, "prometheus", filepath.Join(dir, "prometheus.log"), cmd, "http://"+addr+"/-/ready")
	return addr
}

// startAutoscaler runs the real nomad-autoscaler agent with its own config:
// Nomad and Prometheus on loopback, policies read from Nomad's jobs.
func startAutoscaler(t *testing.T, bin, dir, nomadAddr, promURL string) {
	t.Helper()
	addr := testagents.FreeLoopbackAddr(t)
	host, port, _ := strings.Cut(addr, ":")
	plugins := filepath.Join(dir, "autoscaler-plugins")
	if err := os.MkdirAll(plugins, 0o755); err != nil {
		t.Fatal(err)
	}
	conf := filepath.Join(dir, "autoscaler.hcl")
	if err := os.WriteFile(conf, []byte(fmt.Sprintf(`log_level  = "debug"
plugin_dir = %q

http {
  bind_address = %q
  bind_port    = %s
}

nomad {
  address = %q
}

apm "prometheus" {
  driver = "prometheus"
  config = {
    address = %q
  }
}

policy {
  default_cooldown            = "30s"
  default_evaluation_interval = "5s"
}
`, plugins, host, port, nomadAddr, promURL)), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "agent", "-config", conf)
	startDaemon(t, "nomad-autoscaler", filepath.Join(dir, "autoscaler.log"), cmd, "http://"+addr+"/v1/health")
}

// promQuery evaluates an instant query; ok is false when it fails or has
// no sample.
func promQuery(addr, q string) (float64, bool) {
	resp, err := http.Get("http://" + addr + "/api/v1/query?query=" + url.QueryEscape(q))
	if err != nil {
		return 0, false
	}
	defer resp.Body.Close()
	var r struct {
		Data struct {
			Result []struct {
				Value [2]any `json:"value"`
			} `json:"result"`
		} `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil || len(r.Data.Result) == 0 {
		return 0, false
	}
	s, _ := r.Data.Result[0].Value[1].(string)
	v, err := strconv.ParseFloat(s, 64)
	return v, err == nil
}
