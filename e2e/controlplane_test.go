package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/sagemaker"
	smtypes "github.com/aws/aws-sdk-go-v2/service/sagemaker/types"
	consulapi "github.com/hashicorp/consul/api"
	nomadapi "github.com/hashicorp/nomad/api"

	"github.com/seraihq/serai/contract"
	"github.com/seraihq/serai/internal/testagents"
)

// TestControlPlane runs the control plane the way an operator does: two
// `serai server` processes (one leads through a Consul lock), a `serai
// router`, the `serai apply` CLI and the unmodified AWS SDK SageMaker
// client, on real Consul, Vault/OpenBao and Nomad agents. It applies a
// two-variant endpoint, updates it with a canary under load (no failed
// invocation), sees an update whose model never passes its check and one
// whose model answers 5xx both rolled back, moves weights without touching
// allocations, kills the leading server mid-update, and deletes
// everything, leaving nothing behind.
func TestControlPlane(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 12*time.Minute)
	defer cancel()
	st := newStack(t, ctx)
	consul, vault, nomad, dir, serai, store := st.consul, st.vault, st.nomad, st.dir, st.serai, st.store
	sums := st.trainIris(t, ctx)

	routerAddr := testagents.FreeLoopbackAddr(t)
	startRouter(t, serai, routerAddr, consul.Addr, dir)
	url := "http://" + routerAddr + "/endpoints/" + endpointName + "/invocations"

	servers := []*seraiServer{
		startServer(t, serai, "a", dir, consul, vault, nomad),
		startServer(t, serai, "b", dir, consul, vault, nomad),
	}
	sm := sageMakerClient(servers[0].url)
	sm2 := sageMakerClient(servers[1].url)

	spec := func(name string, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(cpModels(store.URL, st.modelServer, sums)+body), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	apply := func(path string, wantOK bool) (time.Duration, string) {
		t.Helper()
		start := time.Now()
		cmd := exec.CommandContext(ctx, serai, "apply", path)
		cmd.Env = append(os.Environ(), "SERAI_ADDR="+servers[0].url)
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		err := cmd.Run()
		if (err == nil) != wantOK {
			t.Fatalf("serai apply %s: %v (want ok=%v)\n%s", filepath.Base(path), err, wantOK, out.String())
		}
		return time.Since(start), out.String()
	}

	// 1. Apply a two-variant endpoint; invoke it.
	p1 := spec("v1.hcl", cpConfig("iris-c1", "iris-v1", "iris-v2", 1, 1)+cpEndpoint("iris-c1"))
	took, _ := apply(p1, true)
	desc := describe(t, ctx, sm)
	t.Logf("RESULT control plane: apply → InService %s; status sequence %s", took.Round(100*time.Millisecond), history(t, servers[0].url))
	if desc.EndpointStatus != smtypes.EndpointStatusInService || len(desc.ProductionVariants) != 2 {
		t.Fatalf("after apply: %s with %d variants", desc.EndpointStatus, len(desc.ProductionVariants))
	}
	counts, _ := invokeMany(t, url, 200)
	if counts["v1"] == 0 || counts["v2"] == 0 {
		t.Fatalf("both variants should answer: %v", counts)
	}
	// Re-applying unchanged files changes nothing.
	jobsBefore := endpointJobs(t, nomad.Client)
	apply(p1, true)
	if got := endpointJobs(t, nomad.Client); strings.Join(got, ",") != strings.Join(jobsBefore, ",") {
		t.Fatalf("re-apply changed jobs: %v → %v", jobsBefore, got)
	}

	// 2. Canary update under load: no failed invocation.
	load := startLoad(url)
	p2 := spec("v2.hcl", cpConfig("iris-c2", "iris-v1", "iris-v2", 1, 3)+cpEndpoint("iris-c2"))
	took, _ = apply(p2, true)
	failed, total := load.stop()
	desc = describe(t, ctx, sm)
	t.Logf("RESULT control plane: canary update %s; %d of %d invocations failed during it; status sequence %s", took.Round(100*time.Millisecond), failed, total, history(t, servers[0].url))
	if failed != 0 {
		t.Errorf("canary update failed %d invocations: %v", failed, load.errs())
	}
	if aws.ToString(desc.EndpointConfigName) != "iris-c2" || len(endpointJobs(t, nomad.Client)) != 1 {
		t.Errorf("after update: config %s, jobs %v", aws.ToString(desc.EndpointConfigName), endpointJobs(t, nomad.Client))
	}

	// 3. An update whose new model never passes its health check rolls back.
	load = startLoad(url)
	p3 := spec("broken.hcl", cpConfig("iris-c3", "iris-v1", "iris-broken", 1, 3)+cpEndpoint("iris-c3"))
	took, out := apply(p3, false)
	failed, total = load.stop()
	desc = describe(t, ctx, sm)
	t.Logf("RESULT control plane: unhealthy update rolled back after %s; %d of %d invocations failed; reason %q; status sequence %s", took.Round(100*time.Millisecond), failed, total, aws.ToString(desc.FailureReason), history(t, servers[0].url))
	if aws.ToString(desc.EndpointConfigName) != "iris-c2" || desc.EndpointStatus != smtypes.EndpointStatusInService || !strings.Contains(aws.ToString(desc.FailureReason), "rolled back") {
		t.Errorf("after failed update: config %s status %s reason %q\n%s", aws.ToString(desc.EndpointConfigName), desc.EndpointStatus, aws.ToString(desc.FailureReason), out)
	}
	if failed != 0 {
		t.Errorf("unhealthy update failed %d invocations (no traffic should have reached it): %v", failed, load.errs())
	}

	// 4. An update whose new model answers 5xx to a share of requests is
	// rolled back by the routers' metrics while the canary bakes.
	load = startLoad(url)
	p4 := spec("flaky.hcl", cpConfig("iris-c4", "iris-v1", "iris-flaky", 1, 3)+cpEndpoint("iris-c4"))
	took, out = apply(p4, false)
	failed, total = load.stop()
	desc = describe(t, ctx, sm)
	t.Logf("RESULT control plane: 5xx canary rolled back by metrics after %s; %d of %d invocations failed (the canary's share); reason %q", took.Round(100*time.Millisecond), failed, total, aws.ToString(desc.FailureReason))
	if aws.ToString(desc.EndpointConfigName) != "iris-c2" || !strings.Contains(aws.ToString(desc.FailureReason), "5xx") {
		t.Errorf("after 5xx update: config %s reason %q\n%s", aws.ToString(desc.EndpointConfigName), aws.ToString(desc.FailureReason), out)
	}

	// 5. Weights move through the routing table; allocations stay.
	allocsBefore := runningAllocs(t, nomad.Client)
	_, err := sm.UpdateEndpointWeightsAndCapacities(ctx, &sagemaker.UpdateEndpointWeightsAndCapacitiesInput{
		EndpointName: aws.String(endpointName),
		DesiredWeightsAndCapacities: []smtypes.DesiredWeightAndCapacity{
			{VariantName: aws.String("v1"), DesiredWeight: aws.Float32(0)},
			{VariantName: aws.String("v2"), DesiredWeight: aws.Float32(1)},
		},
	})
	if err != nil {
		t.Fatalf("UpdateEndpointWeightsAndCapacities: %v", err)
	}
	waitInService(t, ctx, sm)
	counts, _ = invokeMany(t, url, 100)
	if counts["v1"] != 0 || counts["v2"] != 100 {
		t.Errorf("after weights v1=0 v2=1: %v", counts)
	}
	if after := runningAllocs(t, nomad.Client); strings.Join(after, ",") != strings.Join(allocsBefore, ",") {
		t.Errorf("weights changed allocations: %v → %v", allocsBefore, after)
	}

	// 6. Kill the leading server mid-update; the other completes it.
	load = startLoad(url)
	p5 := spec("v5.hcl", cpConfig("iris-c5", "iris-v1", "iris-v2", 1, 1)+cpEndpoint("iris-c5"))
	detach := exec.CommandContext(ctx, serai, "apply", "--detach", p5)
	detach.Env = append(os.Environ(), "SERAI_ADDR="+servers[1].url)
	if b, err := detach.CombinedOutput(); err != nil {
		t.Fatalf("apply --detach: %v\n%s", err, b)
	}
	waitUntil(t, ctx, "the update reaches its canary", 3*time.Minute, func() bool {
		d := describe(t, ctx, sm2)
		return d.PendingDeploymentSummary != nil && len(d.PendingDeploymentSummary.ProductionVariants) > 0 &&
			len(d.PendingDeploymentSummary.ProductionVariants[0].VariantStatus) > 0 &&
			d.PendingDeploymentSummary.ProductionVariants[0].VariantStatus[0].Status == smtypes.VariantStatusBaking
	})
	leaderID := leaderOf(t, consul.Client)
	var leader, survivor *seraiServer
	for _, s := range servers {
		if s.id == leaderID {
			leader = s
		} else {
			survivor = s
		}
	}
	if leader == nil {
		t.Fatalf("leader %q is not one of the servers", leaderID)
	}
	killed := time.Now()
	leader.kill()
	waitUntil(t, ctx, "the survivor takes the lock", time.Minute, func() bool { return leaderOf(t, consul.Client) == survivor.id })
	takeover := time.Since(killed)
	sms := sageMakerClient(survivor.url)
	waitInService(t, ctx, sms)
	failed, total = load.stop()
	desc = describe(t, ctx, sms)
	t.Logf("RESULT control plane: leader killed mid-update; lock taken over in %s; update completed by the survivor; %d of %d invocations failed; status sequence %s", takeover.Round(100*time.Millisecond), failed, total, history(t, survivor.url))
	if aws.ToString(desc.EndpointConfigName) != "iris-c5" || failed != 0 {
		t.Errorf("after takeover: config %s, %d failed: %v", aws.ToString(desc.EndpointConfigName), failed, load.errs())
	}

	// 7. Delete leaves no job, service, KV key or Vault role behind.
	if _, err := sms.DeleteEndpoint(ctx, &sagemaker.DeleteEndpointInput{EndpointName: aws.String(endpointName)}); err != nil {
		t.Fatalf("DeleteEndpoint: %v", err)
	}
	w := sagemaker.NewEndpointDeletedWaiter(sms, func(o *sagemaker.EndpointDeletedWaiterOptions) { o.MinDelay, o.MaxDelay = time.Second, 2*time.Second })
	if err := w.Wait(ctx, &sagemaker.DescribeEndpointInput{EndpointName: aws.String(endpointName)}, 2*time.Minute); err != nil {
		t.Fatalf("EndpointDeleted waiter: %v", err)
	}
	for _, c := range []string{"iris-c1", "iris-c2", "iris-c3", "iris-c4", "iris-c5"} {
		if _, err := sms.DeleteEndpointConfig(ctx, &sagemaker.DeleteEndpointConfigInput{EndpointConfigName: aws.String(c)}); err != nil {
			t.Errorf("DeleteEndpointConfig %s: %v", c, err)
		}
	}
	for _, m := range []string{"iris-v1", "iris-v2", "iris-broken", "iris-flaky"} {
		if _, err := sms.DeleteModel(ctx, &sagemaker.DeleteModelInput{ModelName: aws.String(m)}); err != nil {
			t.Errorf("DeleteModel %s: %v", m, err)
		}
	}
	if jobs := endpointJobs(t, nomad.Client); len(jobs) != 0 {
		t.Errorf("jobs left: %v", jobs)
	}
	waitUntil(t, ctx, "the endpoint's service leaves Consul", time.Minute, func() bool {
		svcs, _, err := consul.Client.Catalog().Service(contract.ServiceName(endpointName), "", nil)
		return err == nil && len(svcs) == 0
	})
	keys, _, err := consul.Client.KV().Keys(contract.KVPrefix, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range keys {
		if k != contract.LeaderKey {
			t.Errorf("KV key left: %s", k)
		}
	}
	roles, err := vault.Client.Logical().ListWithContext(ctx, "auth/"+testagents.JWTAuthPath+"/role")
	if err != nil {
		t.Fatal(err)
	}
	if roles != nil {
		if ks, ok := roles.Data["keys"].([]any); ok && len(ks) > 0 {
			t.Errorf("Vault roles left: %v", ks)
		}
	}
}

// cpModels declares the store and four models: two trained versions, one
// that never passes its check, one that answers every 2nd invocation 500.
func cpModels(storeURL, modelServer string, sums map[string]string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "artifact_store %q {\n  endpoint = %q\n  path_style = true\n}\n", storeName, storeURL)
	model := func(name, version, extra string) {
		fmt.Fprintf(&b, `
model %q {
  artifact         = "s3://%s/iris/%s/model.tar.gz"
  sha256           = %q
  artifact_store   = %q
  command          = %q
  driver           = "raw_exec"
  download_timeout = "2m"
  startup_timeout  = "20s"
%s}
`, name, bucket, version, sums[version], storeName, modelServer, extra)
	}
	model("iris-v1", "v1", "")
	model("iris-v2", "v2", "")
	model("iris-broken", "v2", "  environment = { MODEL_SERVER_PING_STATUS = \"503\" }\n")
	model("iris-flaky", "v2", "  environment = { MODEL_SERVER_ERROR_EVERY = \"2\" }\n")
	return b.String()
}

// cpConfig is a two-variant config named v1 and v2 (the names the model
// servers report, which invokeOnce checks).
func cpConfig(name, m1, m2 string, w1, w2 float64) string {
	return fmt.Sprintf(`
endpoint_config %q {
  datacenters = ["dc1"]
  variant "v1" {
    model         = %q
    instance_type = "ml.t3.medium"
    weight        = %g
    resources {
      cpu    = 100
      memory = 64
    }
  }
  variant "v2" {
    model         = %q
    instance_type = "ml.t3.medium"
    weight        = %g
    resources {
      cpu    = 100
      memory = 64
    }
  }
}
`, name, m1, w1, m2, w2)
}

func cpEndpoint(config string) string {
	return fmt.Sprintf(`
endpoint %q {
  config = %q
  deployment {
    strategy         = "canary"
    canary_size      = 30
    wait_interval    = "12s"
    termination_wait = "2s"
    auto_rollback {
      max_error_rate  = 0.05
      min_invocations = 20
    }
  }
}
`, endpointName, config)
}

type seraiServer struct {
	id, url string
	cmd     *exec.Cmd
	done    chan struct{}
	once    sync.Once
}

func (s *seraiServer) kill() {
	s.once.Do(func() {
		_ = s.cmd.Process.Signal(syscall.SIGKILL)
		<-s.done
	})
}

// startServer runs `serai server` as its own process, stopped (SIGINT)
// and waited for when the test ends.
func startServer(t *testing.T, serai, id, dir string, consul *testagents.Consul, vault *testagents.Vault, nomad *testagents.Nomad) *seraiServer {
	t.Helper()
	addr := testagents.FreeLoopbackAddr(t)
	logPath := filepath.Join(dir, "server-"+id+".log")
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(serai, "server", "--listen", addr, "--id", id, "--serai-binary", serai,
		"--tick", "250ms", "--drain-period", "2s", "--log-level", "debug")
	cmd.Env = append(os.Environ(), "CONSUL_HTTP_ADDR="+consul.Addr, "NOMAD_ADDR="+nomad.Addr,
		"VAULT_ADDR="+vault.Addr, "VAULT_TOKEN="+vault.Token)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatalf("start server: %v", err)
	}
	s := &seraiServer{id: id, url: "http://" + addr, cmd: cmd, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); close(s.done) }()
	t.Cleanup(func() {
		s.once.Do(func() {
			_ = cmd.Process.Signal(os.Interrupt)
			select {
			case <-s.done:
			case <-time.After(20 * time.Second):
				_ = cmd.Process.Kill()
				<-s.done
				t.Errorf("server %s did not stop within 20s of SIGINT", id)
			}
		})
		logf.Close()
		if t.Failed() {
			if b, err := os.ReadFile(logPath); err == nil {
				t.Logf("server %s log (last 8 KB):\n%s", id, tail(b, 8<<10))
			}
		}
	})
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if resp, err := http.Get(s.url + "/ping"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return s
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("server %s did not answer /ping on %s", id, addr)
	return nil
}

func tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}

func sageMakerClient(url string) *sagemaker.Client {
	return sagemaker.New(sagemaker.Options{
		Region:       "us-east-1",
		BaseEndpoint: aws.String(url),
		Credentials:  credentials.NewStaticCredentialsProvider("AKIDSERAIE2E", "secret", ""),
	})
}

func describe(t *testing.T, ctx context.Context, sm *sagemaker.Client) *sagemaker.DescribeEndpointOutput {
	t.Helper()
	d, err := sm.DescribeEndpoint(ctx, &sagemaker.DescribeEndpointInput{EndpointName: aws.String(endpointName)})
	if err != nil {
		t.Fatalf("DescribeEndpoint: %v", err)
	}
	return d
}

// history is the endpoint's status sequence as the server recorded it,
// read from the Serai extension of DescribeEndpoint (which the SDK's
// shapes do not carry), e.g. "Updating → RollingBack → InService".
func history(t *testing.T, serverURL string) string {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, serverURL+"/", strings.NewReader(`{"EndpointName":"`+endpointName+`"}`))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("X-Amz-Target", "SageMaker.DescribeEndpoint")
	req.Header.Set("Content-Type", "application/x-amz-json-1.1")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "unknown: " + err.Error()
	}
	defer resp.Body.Close()
	var d struct {
		Serai struct {
			StatusHistory []struct{ Status string }
		}
	}
	if err := json.NewDecoder(resp.Body).Decode(&d); err != nil {
		return "unknown: " + err.Error()
	}
	var seq []string
	for _, h := range d.Serai.StatusHistory {
		seq = append(seq, h.Status)
	}
	return strings.Join(seq, " → ")
}

func waitInService(t *testing.T, ctx context.Context, sm *sagemaker.Client) {
	t.Helper()
	w := sagemaker.NewEndpointInServiceWaiter(sm, func(o *sagemaker.EndpointInServiceWaiterOptions) { o.MinDelay, o.MaxDelay = time.Second, 2*time.Second })
	if err := w.Wait(ctx, &sagemaker.DescribeEndpointInput{EndpointName: aws.String(endpointName)}, 5*time.Minute); err != nil {
		t.Fatalf("EndpointInService waiter: %v", err)
	}
}

func waitUntil(t *testing.T, ctx context.Context, what string, limit time.Duration, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		if ok() {
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("%s: not within %s", what, limit)
}

func leaderOf(t *testing.T, c *consulapi.Client) string {
	p, _, err := c.KV().Get(contract.LeaderKey, nil)
	if err != nil || p == nil || p.Session == "" {
		return ""
	}
	return string(p.Value)
}

func endpointJobs(t *testing.T, c *nomadapi.Client) []string {
	t.Helper()
	stubs, _, err := c.Jobs().PrefixList(contract.ServiceName(endpointName) + ".g")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, s := range stubs {
		if s.Status != "dead" {
			out = append(out, s.ID)
		}
	}
	sort.Strings(out)
	return out
}

func runningAllocs(t *testing.T, c *nomadapi.Client) []string {
	t.Helper()
	var out []string
	for _, j := range endpointJobs(t, c) {
		allocs, _, err := c.Jobs().Allocations(j, false, nil)
		if err != nil {
			t.Fatal(err)
		}
		for _, a := range allocs {
			if a.ClientStatus == nomadapi.AllocClientStatusRunning {
				out = append(out, a.ID)
			}
		}
	}
	sort.Strings(out)
	return out
}

// loadLoop invokes the endpoint continuously from four workers and counts
// failures, until stopped.
type loadLoop struct {
	stopc         chan struct{}
	wg            sync.WaitGroup
	total, failed atomic.Int64
	mu            sync.Mutex
	firstErrs     []string
}

func startLoad(url string) *loadLoop {
	l := &loadLoop{stopc: make(chan struct{})}
	client := &http.Client{Timeout: 30 * time.Second}
	for w := 0; w < 4; w++ {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			for {
				select {
				case <-l.stopc:
					return
				default:
				}
				r := invokeOnce(client, url)
				l.total.Add(1)
				if r.err != nil {
					l.failed.Add(1)
					l.mu.Lock()
					if len(l.firstErrs) < 5 {
						l.firstErrs = append(l.firstErrs, r.err.Error())
					}
					l.mu.Unlock()
				}
				time.Sleep(20 * time.Millisecond)
			}
		}()
	}
	return l
}

func (l *loadLoop) stop() (failed, total int64) {
	close(l.stopc)
	l.wg.Wait()
	return l.failed.Load(), l.total.Load()
}

func (l *loadLoop) errs() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.firstErrs...)
}
