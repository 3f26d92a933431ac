// Package e2e holds serai's end-to-end suites: real Consul, Vault (or
// OpenBao) and Nomad agents started by internal/testagents, the real serai
// and example model-server binaries, a real S3-protocol server and the AWS
// SDK, all on loopback. Each suite skips, saying which binary is missing,
// when an agent is not on PATH.
//
// It must not reach into packages' internals: it drives serai the way an
// operator does (CLI, Nomad API, Consul KV, HTTP).
package e2e

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	consulapi "github.com/hashicorp/consul/api"
	nomadapi "github.com/hashicorp/nomad/api"

	"github.com/seraihq/serai/contract"
	"github.com/seraihq/serai/internal/s3test"
	"github.com/seraihq/serai/internal/testagents"
	"github.com/seraihq/serai/policies"
	"github.com/seraihq/serai/router"
	"github.com/seraihq/serai/scheduler"
)

const (
	endpointName = "iris"
	storeName    = "e2e-store"
	bucket       = "models"
	accessKey    = "AKIAE2ESERAI0000TEST"
	secretKey    = "e2e+secret/key/that/only+fetch-model/sees"
	invocations  = 2000
)

// rows: a setosa every version gets right, and row 147 of the data set (a
// virginica) that v1, trained on sepal features only, calls versicolor.
const payload = "5.1,3.5,1.4,0.2\n6.3,2.5,5.0,1.9\n"

var wantLabels = map[string][]string{
	"v1": {"Iris-setosa", "Iris-versicolor"},
	"v2": {"Iris-setosa", "Iris-virginica"},
}

// prediction is the example model server's JSON answer.
type prediction struct {
	ModelVersion string `json:"model_version"`
	Predictions  []struct {
		Label string `json:"label"`
	} `json:"predictions"`
}

// TestSlice drives the whole path: spec → serai render → Nomad (raw_exec,
// prestart fetch with Vault-issued store credentials from a loopback S3
// server) → Consul → serai router → the example model, and back.
func TestSlice(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	// Two genuinely trained model versions, uploaded with the AWS SDK to a
	// real S3-protocol server that checks SigV4 signatures; the store's
	// keys in Vault.
	st := newStack(t, ctx)
	consul, vault, nomad, dir, serai, modelServer, store := st.consul, st.vault, st.nomad, st.dir, st.serai, st.modelServer, st.store
	sums := st.trainIris(t, ctx)

	// Each model's least-privilege policy and JWT role for its fetch task.
	vw := policies.NewVaultWriter(vault.Client)
	for _, m := range []string{"iris-v1", "iris-v2"} {
		if err := vw.EnsureModel(ctx, m, policies.KVStore(storeName), []string{endpointName}); err != nil {
			t.Fatalf("vault policy for %s: %v", m, err)
		}
	}

	// The spec, compiled by the real CLI.
	specPath := filepath.Join(dir, "iris.hcl")
	writeSpec(t, specPath, store.URL, modelServer, sums)
	jobJSON := runCmd(t, serai, "render", "--serai-binary", serai, "--generation", "1", specPath)
	var doc struct{ Job *nomadapi.Job }
	if err := json.Unmarshal(jobJSON, &doc); err != nil {
		t.Fatalf("render output: %v", err)
	}

	// Router first, so the clock from register to first answer includes
	// only what Nomad, Vault, the fetch and Consul take.
	routerAddr := testagents.FreeLoopbackAddr(t)
	startRouter(t, serai, routerAddr, consul, dir)
	writeRoutes(t, consul.Client, 1)

	// The clock runs from register to the first answer through the router;
	// Nomad's deployment is declared successful later (min_healthy_time).
	url := "http://" + routerAddr + "/endpoints/" + endpointName + "/invocations"
	start := time.Now()
	jobID := register(t, ctx, nomad.Client, doc.Job)
	firstOK, last := tryInvocation(ctx, url, http.StatusOK, 120*time.Second)
	if firstOK.IsZero() {
		dumpAllocs(t, nomad.Client, jobID)
		t.Fatalf("router never answered 200 within 2m; last answer: %s", last)
	}
	timeToServe := firstOK.Sub(start)
	waitDeployment(t, ctx, nomad.Client, jobID)
	waitHealthy(t, ctx, consul.Client, 2)

	// 2,000 invocations through the router.
	counts, lat := invokeMany(t, url, invocations)
	share := float64(counts["v2"]) / float64(invocations)
	t.Logf("RESULT slice: split: v2 %d (%.1f%%), v1 %d (%.1f%%) of %d; want 80/20 ± 3", counts["v2"], 100*share, counts["v1"], 100*(1-share), invocations)
	if share < 0.77 || share > 0.83 {
		t.Errorf("v2 share %.3f is outside 0.80 ± 0.03", share)
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	p50, p99 := lat[len(lat)/2], lat[len(lat)*99/100]
	t.Logf("RESULT slice: latency through the router: p50 %v, p99 %v", p50, p99)
	t.Logf("RESULT slice: register → first successful invocation: %v", timeToServe.Round(10*time.Millisecond))

	checkScalingSeries(t, routerAddr, counts)
	checkCredentialIsolation(t, nomad.Client, nomad.DataDir, jobID)
	checkSignedDownloads(t, store)

	// Stop the job: the router must answer 503 within two seconds.
	if _, _, err := nomad.Client.Jobs().Deregister(jobID, false, nil); err != nil {
		t.Fatalf("stop job: %v", err)
	}
	stopped := time.Now()
	when := waitInvocation(t, ctx, url, http.StatusServiceUnavailable, 10*time.Second)
	t.Logf("RESULT slice: job stopped → router 503 after %v", when.Sub(stopped).Round(time.Millisecond))
	if when.Sub(stopped) > 2*time.Second {
		t.Errorf("router took %v to notice the stopped job; want ≤ 2s", when.Sub(stopped))
	}

	// Start it again: the router recovers.
	restart := time.Now()
	register(t, ctx, nomad.Client, doc.Job)
	when = waitInvocation(t, ctx, url, http.StatusOK, 90*time.Second)
	t.Logf("RESULT slice: job started again → router 200 after %v", when.Sub(restart).Round(10*time.Millisecond))
}

func buildBinary(t *testing.T, dir, name, pkg string) string {
	t.Helper()
	out := filepath.Join(dir, name)
	cmd := exec.Command("go", "build", "-o", out, pkg)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build %s: %v\n%s", pkg, err, b)
	}
	return out
}

func runCmd(t *testing.T, bin string, args ...string) []byte {
	t.Helper()
	var stdout, stderr bytes.Buffer
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s %s: %v\n%s", filepath.Base(bin), strings.Join(args, " "), err, stderr.String())
	}
	return stdout.Bytes()
}

func uploadArtifact(t *testing.T, ctx context.Context, store *s3test.Server, path, key string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	client := s3.New(s3.Options{
		BaseEndpoint: aws.String(store.URL),
		Region:       store.Region,
		UsePathStyle: true,
		Credentials:  credentials.NewStaticCredentialsProvider(accessKey, secretKey, ""),
	})
	if _, err := client.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String(bucket), Key: aws.String(key), Body: bytes.NewReader(b)}); err != nil {
		t.Fatalf("upload %s: %v", key, err)
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

func writeSpec(t *testing.T, path, storeURL, modelServer string, sums map[string]string) {
	t.Helper()
	var b strings.Builder
	fmt.Fprintf(&b, `
artifact_store %q {
  endpoint   = %q
  region     = "us-east-1"
  path_style = true
}
`, storeName, storeURL)
	for _, v := range []string{"v1", "v2"} {
		fmt.Fprintf(&b, `
model "iris-%[1]s" {
  artifact         = "s3://%[2]s/iris/%[1]s/model.tar.gz"
  sha256           = %[3]q
  artifact_store   = %[4]q
  command          = %[5]q
  driver           = "raw_exec"
  download_timeout = "2m"
  startup_timeout  = "1m"
}
`, v, bucket, sums[v], storeName, modelServer)
	}
	fmt.Fprintf(&b, `
endpoint_config "iris-e2e" {
  datacenters = ["dc1"]

  variant "v1" {
    model         = "iris-v1"
    instance_type = "ml.t3.medium"
    weight        = 0.2
    resources {
      cpu    = 100
      memory = 64
    }
  }

  variant "v2" {
    model         = "iris-v2"
    instance_type = "ml.t3.medium"
    weight        = 0.8
    resources {
      cpu    = 100
      memory = 64
    }
  }
}

endpoint %q {
  config = "iris-e2e"
}
`, endpointName)
	if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
}

// startRouter runs `serai router` as its own process, stopped with SIGTERM
// (and waited for) when the test ends; extra are more router flags. It
// talks to consul with the router's token when consul runs with ACLs.
func startRouter(t *testing.T, serai, addr string, consul *testagents.Consul, dir string, extra ...string) {
	t.Helper()
	logPath := filepath.Join(dir, "router-"+strings.NewReplacer(":", "-").Replace(addr)+".log")
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(serai, append([]string{"router", "--listen", addr, "--consul-addr", consul.Addr, "--log-level", "info"}, extra...)...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Env = withConsulToken(append(os.Environ(), "CONSUL_HTTP_ADDR="+consul.Addr), consul.Tokens.Router)
	if err := cmd.Start(); err != nil {
		t.Fatalf("start router: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() {
		cmd.Process.Signal(os.Interrupt)
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			cmd.Process.Kill()
			<-done
			t.Errorf("router did not stop within 15s of SIGINT")
		}
		logf.Close()
		if t.Failed() {
			if b, err := os.ReadFile(logPath); err == nil {
				t.Logf("router log:\n%s", b)
			}
		}
	})
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if resp, err := http.Get("http://" + addr + "/ping"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("router did not answer /ping on %s", addr)
}

func writeRoutes(t *testing.T, c *consulapi.Client, gen int) {
	t.Helper()
	b, err := router.EncodeRoutes(&router.Routes{
		Version:  router.RoutesVersion,
		Endpoint: endpointName,
		Generations: []router.Generation{{
			Generation: gen, Weight: 1,
			Variants: []router.Variant{{Name: "v1", Weight: 0.2}, {Name: "v2", Weight: 0.8}},
		}},
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.KV().Put(&consulapi.KVPair{Key: contract.RoutesKey(endpointName), Value: b}, nil); err != nil {
		t.Fatalf("write routing table: %v", err)
	}
}

func register(t *testing.T, ctx context.Context, c *nomadapi.Client, job *nomadapi.Job) string {
	t.Helper()
	if _, err := scheduler.Register(ctx, c.Jobs(), job); err != nil {
		t.Fatalf("register: %v", err)
	}
	return *job.ID
}

func waitDeployment(t *testing.T, ctx context.Context, c *nomadapi.Client, jobID string) {
	t.Helper()
	wctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	if _, err := scheduler.WaitDeployment(wctx, c.Jobs(), jobID); err != nil {
		dumpAllocs(t, c, jobID)
		t.Fatalf("deployment: %v", err)
	}
}

// dumpAllocs logs each allocation's task events, the first thing to read
// when a deployment fails.
func dumpAllocs(t *testing.T, c *nomadapi.Client, jobID string) {
	allocs, _, err := c.Jobs().Allocations(jobID, true, nil)
	if err != nil {
		t.Logf("allocations: %v", err)
		return
	}
	for _, a := range allocs {
		for task, st := range a.TaskStates {
			for _, e := range st.Events {
				t.Logf("alloc %s %s/%s: %s %s", a.ID[:8], a.TaskGroup, task, e.Type, e.DisplayMessage)
			}
			if b, err := readAllocFile(c, a.ID, "alloc/logs/"+task+".stderr.0"); err == nil && len(b) > 0 {
				t.Logf("alloc %s %s stderr:\n%s", a.ID[:8], task, b)
			}
		}
	}
}

func readAllocFile(c *nomadapi.Client, allocID, path string) ([]byte, error) {
	alloc, _, err := c.Allocations().Info(allocID, nil)
	if err != nil {
		return nil, err
	}
	rc, err := c.AllocFS().Cat(alloc, path, nil)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	return io.ReadAll(rc)
}

func waitHealthy(t *testing.T, ctx context.Context, c *consulapi.Client, want int) {
	t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	for time.Now().Before(deadline) {
		entries, _, err := c.Health().Service(router.ServiceName(endpointName), "", true, (&consulapi.QueryOptions{}).WithContext(ctx))
		if err == nil && len(entries) >= want {
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("fewer than %d passing instances of %s in Consul", want, router.ServiceName(endpointName))
}

// waitInvocation invokes until the router answers with status, returning
// when it first did.
func waitInvocation(t *testing.T, ctx context.Context, url string, status int, limit time.Duration) time.Time {
	t.Helper()
	when, last := tryInvocation(ctx, url, status, limit)
	if when.IsZero() {
		t.Fatalf("router never answered %d within %v; last answer: %s", status, limit, last)
	}
	return when
}

// tryInvocation invokes until the router answers with status; it returns
// the time it first did (zero if it never did) and the last answer seen.
func tryInvocation(ctx context.Context, url string, status int, limit time.Duration) (time.Time, string) {
	deadline := time.Now().Add(limit)
	client := &http.Client{Timeout: 5 * time.Second}
	last := ""
	for time.Now().Before(deadline) && ctx.Err() == nil {
		resp, err := client.Post(url, "text/csv", strings.NewReader(payload))
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == status {
				return time.Now(), ""
			}
			last = fmt.Sprintf("%d %s", resp.StatusCode, b)
		} else {
			last = err.Error()
		}
		time.Sleep(20 * time.Millisecond)
	}
	return time.Time{}, last
}

// invokeMany sends n invocations from 8 concurrent clients, checks every
// answer, and counts the variants that answered.
func invokeMany(t *testing.T, url string, n int) (map[string]int, []time.Duration) {
	t.Helper()
	type result struct {
		variant string
		lat     time.Duration
		err     error
	}
	jobs := make(chan int)
	results := make(chan result, n)
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 16}}
	defer client.CloseIdleConnections()
	for w := 0; w < 8; w++ {
		go func() {
			for range jobs {
				results <- invokeOnce(client, url)
			}
		}()
	}
	go func() {
		for i := 0; i < n; i++ {
			jobs <- i
		}
		close(jobs)
	}()
	counts := map[string]int{}
	var lat []time.Duration
	failures := 0
	for i := 0; i < n; i++ {
		r := <-results
		if r.err != nil {
			failures++
			if failures <= 5 {
				t.Errorf("invocation: %v", r.err)
			}
			continue
		}
		counts[r.variant]++
		lat = append(lat, r.lat)
	}
	if failures > 0 {
		t.Fatalf("%d of %d invocations failed", failures, n)
	}
	return counts, lat
}

func invokeOnce(client *http.Client, url string) (r struct {
	variant string
	lat     time.Duration
	err     error
}) {
	start := time.Now()
	req, err := http.NewRequest(http.MethodPost, url, strings.NewReader(payload))
	if err != nil {
		r.err = err
		return
	}
	req.Header.Set("Content-Type", "text/csv")
	req.Header.Set("Accept", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		r.err = err
		return
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	r.lat = time.Since(start)
	if err != nil {
		r.err = err
		return
	}
	if resp.StatusCode != http.StatusOK {
		r.err = fmt.Errorf("status %d: %s", resp.StatusCode, body)
		return
	}
	// The variant names equal the model versions they serve, so the
	// router's header must name the version the model itself reports.
	variant := resp.Header.Get("X-Amzn-Invoked-Production-Variant")
	var p prediction
	if err := json.Unmarshal(body, &p); err != nil {
		r.err = fmt.Errorf("variant %q answered %q: %v", variant, body, err)
		return
	}
	if variant != p.ModelVersion {
		r.err = fmt.Errorf("router says variant %q answered, the model says it is %q", variant, p.ModelVersion)
		return
	}
	var got []string
	for _, pr := range p.Predictions {
		got = append(got, pr.Label)
	}
	if want := wantLabels[variant]; strings.Join(got, ",") != strings.Join(want, ",") {
		r.err = fmt.Errorf("variant %q predicted %v, want %v", variant, got, want)
		return
	}
	r.variant = variant
	return
}

// checkCredentialIsolation: the fetch task's rendered environment held the
// store keys; the model server's environment and files hold neither the
// keys nor a Vault token.
func checkCredentialIsolation(t *testing.T, c *nomadapi.Client, dataDir, jobID string) {
	t.Helper()
	allocs, _, err := c.Jobs().Allocations(jobID, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	checked := 0
	for _, stub := range allocs {
		if stub.ClientStatus != nomadapi.AllocClientStatusRunning {
			continue
		}
		// Nomad's fs API refuses to read secrets/ directories, so the fetch
		// task's rendered env file is read where the agent keeps it.
		if dataDir != "" {
			p := filepath.Join(dataDir, "alloc", stub.ID, scheduler.FetchTaskName, scheduler.StoreEnvFile)
			env, err := os.ReadFile(p)
			if err != nil {
				t.Errorf("alloc %s: read fetch task's rendered env: %v", stub.ID[:8], err)
			} else if !bytes.Contains(env, []byte("AWS_ACCESS_KEY_ID="+accessKey)) || !bytes.Contains(env, []byte("AWS_SECRET_ACCESS_KEY="+secretKey)) {
				t.Errorf("alloc %s: fetch task's env file lacks the store credentials", stub.ID[:8])
			}
		}
		if b, err := readAllocFile(c, stub.ID, scheduler.FetchTaskName+"/"+scheduler.StoreEnvFile); err == nil && bytes.Contains(b, []byte(secretKey)) {
			t.Errorf("alloc %s: Nomad's fs API served the fetch task's secrets", stub.ID[:8])
		}
		// Every file the model task can see in its own task dir.
		alloc, _, err := c.Allocations().Info(stub.ID, nil)
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range walkAllocDir(t, c, alloc, scheduler.ModelTaskName) {
			b, err := readAllocFile(c, stub.ID, f)
			if err != nil {
				continue
			}
			if bytes.Contains(b, []byte(secretKey)) || bytes.Contains(b, []byte(accessKey)) {
				t.Errorf("alloc %s: model task file %s holds store credentials", stub.ID[:8], f)
			}
			if strings.HasSuffix(f, "vault_token") {
				t.Errorf("alloc %s: model task has a Vault token file %s", stub.ID[:8], f)
			}
		}
		// The model server's live environment (raw_exec: a host process).
		environ := modelServerEnviron(t, stub.ID)
		for _, kv := range environ {
			k, v, _ := strings.Cut(kv, "=")
			if strings.HasPrefix(k, "AWS_") || strings.HasPrefix(k, "VAULT_") || strings.Contains(v, secretKey) {
				t.Errorf("alloc %s: model server environment holds %s", stub.ID[:8], k)
			}
		}
		checked++
	}
	if checked < 2 {
		t.Errorf("checked %d running allocations, want 2", checked)
	}
	t.Logf("credential isolation checked in %d allocations", checked)
}

func walkAllocDir(t *testing.T, c *nomadapi.Client, alloc *nomadapi.Allocation, dir string) []string {
	var files []string
	entries, _, err := c.AllocFS().List(alloc, dir, nil)
	if err != nil {
		t.Errorf("list %s: %v", dir, err)
		return nil
	}
	for _, e := range entries {
		p := dir + "/" + e.Name
		if e.IsDir {
			files = append(files, walkAllocDir(t, c, alloc, p)...)
		} else {
			files = append(files, p)
		}
	}
	return files
}

// modelServerEnviron finds the model server process of an allocation and
// returns its environment.
func modelServerEnviron(t *testing.T, allocID string) []string {
	t.Helper()
	procs, _ := filepath.Glob("/proc/[0-9]*/environ")
	for _, p := range procs {
		b, err := os.ReadFile(p)
		if err != nil || !bytes.Contains(b, []byte("NOMAD_ALLOC_ID="+allocID)) {
			continue
		}
		env := strings.Split(string(b), "\x00")
		isModel := false
		for _, kv := range env {
			if kv == "NOMAD_TASK_NAME="+scheduler.ModelTaskName {
				isModel = true
			}
		}
		if isModel {
			return env
		}
	}
	t.Errorf("alloc %s: no model server process found", allocID[:8])
	return nil
}

// checkSignedDownloads: the store checks SigV4 signatures, so a successful
// GET of each artifact proves the fetch task signed with the keys Vault
// rendered into its environment.
func checkSignedDownloads(t *testing.T, store *s3test.Server) {
	t.Helper()
	ok := map[string]bool{}
	for _, r := range store.Requests() {
		if r.Method == http.MethodGet && r.Status == http.StatusOK && strings.HasSuffix(r.Path, "/model.tar.gz") {
			ok[r.Path] = true
		}
	}
	for _, v := range []string{"v1", "v2"} {
		if !ok["/"+bucket+"/iris/"+v+"/model.tar.gz"] {
			t.Errorf("no signed download of the %s artifact succeeded; requests: %+v", v, store.Requests())
		}
	}
}

// checkScalingSeries: the router exports exactly the series, with the
// labels, that each variant's compiled autoscaling query selects.
func checkScalingSeries(t *testing.T, routerAddr string, counts map[string]int) {
	t.Helper()
	b := []byte(routerMetrics(t, routerAddr))
	for _, v := range []string{"v1", "v2"} {
		labels := fmt.Sprintf(`{endpoint=%q,generation="1",variant=%q}`, endpointName, v)
		// Invocations also count the probes sent while waiting for the
		// first answer, so at least the loop's own count.
		if n, ok := metricValue(b, policies.MetricInvocations+labels); !ok || n < float64(counts[v]) {
			t.Errorf("router /metrics: %s%s = %v (present %v), want ≥ %d", policies.MetricInvocations, labels, n, ok, counts[v])
		}
		if n, ok := metricValue(b, policies.MetricHealthyInstances+labels); !ok || n != 1 {
			t.Errorf("router /metrics: %s%s = %v (present %v), want 1", policies.MetricHealthyInstances, labels, n, ok)
		}
	}
}

// metricValue finds one series in Prometheus text output.
func metricValue(text []byte, series string) (float64, bool) {
	for _, line := range strings.Split(string(text), "\n") {
		if rest, ok := strings.CutPrefix(line, series+" "); ok {
			var v float64
			if _, err := fmt.Sscan(rest, &v); err == nil {
				return v, true
			}
		}
	}
	return 0, false
}
