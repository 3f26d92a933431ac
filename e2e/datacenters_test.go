package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	consulapi "github.com/hashicorp/consul/api"
	nomadapi "github.com/hashicorp/nomad/api"

	"github.com/seraihq/serai/contract"
	"github.com/seraihq/serai/internal/s3test"
	"github.com/seraihq/serai/internal/testagents"
	"github.com/seraihq/serai/policies"
	"github.com/seraihq/serai/scheduler"
)

const (
	dcVariant   = "main"
	dcInstances = 6
	dcModel     = "iris-image"
	// dcWorkers is the load generator's concurrency: no more invocations
	// than this are ever in flight.
	dcWorkers = 8
	// dcRouteTimeout is the model timeout in the routing table: how long
	// an invocation in flight to an unreachable datacenter can hang.
	dcRouteTimeout = 10 * time.Second
)

// TestDatacenters runs the SageMaker container path for real on a
// three-datacenter cluster (a network namespace per datacenter, each with
// its own Nomad client, Consul client agent and Docker daemon): images
// built by scripts/images, `serai render`'s docker job unchanged, the fetch
// task in serai's own image with Vault-rendered store keys, the model
// server image with the model read-only at /opt/ml/model. Then, under
// load through the router: placement and balance across datacenters, the
// loss and return of a whole datacenter, and a rolling image update.
func TestDatacenters(t *testing.T) {
	cluster := testagents.StartCluster(t, testagents.ClusterOptions{Vault: true, Docker: true, ConsulACL: true})
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	dir := t.TempDir()
	serai := buildBinary(t, dir, "serai", "../cmd/serai")
	modelServer := buildBinary(t, dir, "model-server", "../examples/model-server")
	for _, n := range cluster.Nodes {
		n.Docker.BuildImages(t, "dev")
		n.Docker.BuildImages(t, "rolling")
	}

	// The model, uploaded to an S3-protocol server the datacenters reach
	// on the cluster bridge.
	store := s3test.NewAt(t, cluster.HostAddr, accessKey, secretKey)
	store.Bucket(t, bucket)
	out := filepath.Join(dir, "train")
	runCmd(t, modelServer, "train", "--version", "v2", "--features", "all", "--data", "../examples/data/iris.csv", "--out", out)
	sum := uploadArtifact(t, ctx, store, filepath.Join(out, "model.tar.gz"), "iris/v2/model.tar.gz")
	vault := cluster.Vault
	if _, err := vault.Client.KVv2("secret").Put(ctx, "serai/stores/"+storeName, map[string]any{
		"access_key_id": accessKey, "secret_access_key": secretKey,
	}); err != nil {
		t.Fatalf("write store credentials: %v", err)
	}
	if err := policies.NewVaultWriter(vault.Client).EnsureModel(ctx, dcModel, policies.KVStore(storeName), []string{endpointName}); err != nil {
		t.Fatalf("vault policy: %v", err)
	}

	routerAddr := testagents.FreeLoopbackAddr(t)
	startRouter(t, serai, routerAddr, cluster.Consul, dir)
	writeDCRoutes(t, cluster.Consul.Client)
	url := "http://" + routerAddr + "/endpoints/" + endpointName + "/invocations"

	job := renderDCJob(t, serai, dir, store.URL, sum, "serai-model-server:dev")
	start := time.Now()
	jobID := register(t, ctx, cluster.Nomad, job)
	waitDeployment(t, ctx, cluster.Nomad, jobID)
	waitHealthy(t, ctx, cluster.Consul.Client, dcInstances)
	t.Logf("RESULT datacenters: register → %d containers passing in 3 datacenters: %v", dcInstances, time.Since(start).Round(100*time.Millisecond))

	// Every instance: its datacenter and its model container.
	inst := instances(t, cluster, jobID)

	t.Run("container credential isolation", func(t *testing.T) {
		checkContainerIsolation(t, cluster, jobID, inst)
		checkSignedDownloadOf(t, store, "/"+bucket+"/iris/v2/model.tar.gz")
	})

	t.Run("placement and balance", func(t *testing.T) {
		perDC := map[string]int{}
		for _, in := range inst {
			perDC[in.dc]++
		}
		t.Logf("RESULT datacenters: %d instances placed dc1/dc2/dc3 = %d/%d/%d (read from Nomad)", len(inst), perDC["dc1"], perDC["dc2"], perDC["dc3"])
		for _, dc := range []string{"dc1", "dc2", "dc3"} {
			if perDC[dc] != 2 {
				t.Errorf("%s runs %d instances, want 2", dc, perDC[dc])
			}
		}
		l := startClosedLoad(url, dcWorkers)
		time.Sleep(5 * time.Second)
		rs := l.stop()
		byInstance := map[string]int{}
		byDC := map[string]int{}
		failed := 0
		for _, r := range rs {
			if r.err != nil {
				failed++
				continue
			}
			byInstance[r.instance]++
			byDC[inst[r.instance].dc]++
		}
		if failed > 0 {
			t.Errorf("%d of %d invocations failed: %s", failed, len(rs), errorKinds(rs))
		}
		ok := len(rs) - failed
		fair := float64(ok) / dcInstances
		var shares []string
		for id, in := range inst {
			n := byInstance[id]
			shares = append(shares, fmt.Sprintf("%s/%s %d", in.dc, id[:6], n))
			if float64(n) < 0.5*fair {
				t.Errorf("instance %s in %s answered %d of %d invocations; want at least half its fair share %.0f", id[:12], in.dc, n, ok, fair)
			}
		}
		sort.Strings(shares)
		t.Logf("RESULT datacenters: balance over %d invocations: dc1 %d, dc2 %d, dc3 %d; per instance: %s", ok, byDC["dc1"], byDC["dc2"], byDC["dc3"], strings.Join(shares, ", "))
	})
	if t.Failed() {
		return
	}

	t.Run("datacenter loss", func(t *testing.T) {
		checkDatacenterLoss(t, ctx, cluster, jobID, url, routerAddr, inst)
	})
	if t.Failed() {
		return
	}

	t.Run("rolling image update", func(t *testing.T) {
		next := renderDCJob(t, serai, dir, store.URL, sum, "serai-model-server:rolling")
		l := startClosedLoad(url, dcWorkers)
		begin := time.Now()
		register(t, ctx, cluster.Nomad, next)
		// The latest deployment is the previous, successful one until
		// Nomad creates the new version's.
		waitDeploymentOfVersion(t, ctx, cluster.Nomad, jobID)
		waitDeployment(t, ctx, cluster.Nomad, jobID)
		waitHealthy(t, ctx, cluster.Consul.Client, dcInstances)
		time.Sleep(2 * time.Second)
		rs := l.stop()
		failed := failures(rs)
		t.Logf("RESULT datacenters: rolling image update of %d instances under load: %v, %d invocations, %d failed", dcInstances, time.Since(begin).Round(100*time.Millisecond), len(rs), len(failed))
		for i, r := range failed {
			if i < 5 {
				t.Errorf("invocation at +%v failed: %v", r.start.Sub(begin).Round(time.Millisecond), r.err)
			}
		}
		if len(failed) > 0 {
			t.Errorf("%d invocations failed during the rolling update; want none: %s", len(failed), errorKinds(rs))
		}
		// Every instance now runs the new image.
		now := instances(t, cluster, jobID)
		for id, in := range now {
			if !strings.HasSuffix(in.image, ":rolling") {
				t.Errorf("instance %s in %s runs %s after the update", id[:12], in.dc, in.image)
			}
		}
		if len(now) != dcInstances {
			t.Errorf("%d instances after the update, want %d", len(now), dcInstances)
		}
	})
}

// renderDCJob compiles the endpoint with the real CLI: one variant of six
// instances across dc1..dc3, a container model.
func renderDCJob(t *testing.T, serai, dir, storeURL, sum, image string) *nomadapi.Job {
	t.Helper()
	spec := fmt.Sprintf(`
artifact_store %[1]q {
  endpoint   = %[2]q
  region     = "us-east-1"
  path_style = true
}

model %[3]q {
  artifact         = "s3://%[4]s/iris/v2/model.tar.gz"
  sha256           = %[5]q
  artifact_store   = %[1]q
  image            = %[6]q
  download_timeout = "2m"
  startup_timeout  = "2m"
}

endpoint_config "iris-dcs" {
  datacenters = ["dc1", "dc2", "dc3"]

  variant %[7]q {
    model          = %[3]q
    instance_type  = "ml.t3.medium"
    instance_count = %[8]d
    resources {
      cpu    = 100
      memory = 64
    }
  }
}

endpoint %[9]q {
  config = "iris-dcs"
}
`, storeName, storeURL, dcModel, bucket, sum, image, dcVariant, dcInstances, endpointName)
	path := filepath.Join(dir, "iris-dcs.hcl")
	if err := os.WriteFile(path, []byte(spec), 0o644); err != nil {
		t.Fatal(err)
	}
	// The fetch image is the compiler's default, serai:dev, which
	// scripts/images built in every datacenter's daemon.
	b := runCmd(t, serai, "render", "--generation", "1", path)
	var doc struct{ Job *nomadapi.Job }
	if err := json.Unmarshal(b, &doc); err != nil {
		t.Fatalf("render output: %v", err)
	}
	return doc.Job
}

func writeDCRoutes(t *testing.T, c *consulapi.Client) {
	t.Helper()
	b, err := contract.EncodeRoutes(&contract.Routes{
		Version:  contract.RoutesVersion,
		Endpoint: endpointName,
		Timeout:  contract.Duration(dcRouteTimeout),
		Generations: []contract.Generation{{
			Generation: 1, Weight: 1,
			Variants: []contract.Variant{{Name: dcVariant, Weight: 1}},
		}},
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.KV().Put(&consulapi.KVPair{Key: contract.RoutesKey(endpointName), Value: b}, nil); err != nil {
		t.Fatalf("write routing table: %v", err)
	}
}

// instance is one running model container, keyed by its allocation ID
// (which the model server reports as instance=<id>).
type instance struct {
	dc, allocID, containerID, image string
	node                            *testagents.ClusterNode
}

// instances maps each running allocation of the job to its datacenter (from
// Nomad) and its model container (from that datacenter's Docker daemon).
func instances(t *testing.T, c *testagents.Cluster, jobID string) map[string]instance {
	t.Helper()
	allocs, _, err := c.Nomad.Jobs().Allocations(jobID, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]instance{}
	for _, a := range allocs {
		if a.ClientStatus != nomadapi.AllocClientStatusRunning || a.DesiredStatus != nomadapi.AllocDesiredStatusRun {
			continue
		}
		var node *testagents.ClusterNode
		for _, n := range c.Nodes {
			if n.NodeID == a.NodeID {
				node = n
			}
		}
		if node == nil {
			t.Fatalf("alloc %s on unknown node %s", a.ID[:8], a.NodeID)
		}
		found := false
		for _, ct := range node.Docker.Containers(t) {
			if ct.Labels["com.hashicorp.nomad.alloc_id"] != a.ID || ct.State != "running" || !strings.Contains(ct.Image, "serai-model-server") {
				continue
			}
			out[a.ID] = instance{dc: node.Datacenter, allocID: a.ID, containerID: ct.ID, image: ct.Image, node: node}
			found = true
		}
		if !found {
			t.Errorf("alloc %s in %s: no running model container", a.ID[:8], node.Datacenter)
		}
	}
	return out
}

// runningOutside counts the job's allocations Nomad has running and
// meant to run on clients outside datacenter dc; -1 when Nomad cannot say.
func runningOutside(c *testagents.Cluster, jobID, dc string) int {
	allocs, _, err := c.Nomad.Jobs().Allocations(jobID, false, nil)
	if err != nil {
		return -1
	}
	n := 0
	for _, a := range allocs {
		if a.ClientStatus != nomadapi.AllocClientStatusRunning || a.DesiredStatus != nomadapi.AllocDesiredStatusRun {
			continue
		}
		for _, node := range c.Nodes {
			if node.NodeID == a.NodeID && node.Datacenter != dc {
				n++
			}
		}
	}
	return n
}

// checkContainerIsolation: the fetch task's rendered environment held the
// store keys; the model container's environment, mounts and every file it
// can see hold neither the keys nor a Vault token, and its model dir is
// read-only.
func checkContainerIsolation(t *testing.T, c *testagents.Cluster, jobID string, inst map[string]instance) {
	for id, in := range inst {
		p := filepath.Join(in.node.DataDir, "alloc", in.allocID, scheduler.FetchTaskName, scheduler.StoreEnvFile)
		if env, err := os.ReadFile(p); err != nil {
			t.Errorf("%s: read fetch task's rendered env: %v", id, err)
		} else if !bytes.Contains(env, []byte("AWS_SECRET_ACCESS_KEY="+secretKey)) {
			t.Errorf("%s: fetch task's env file lacks the store credentials", id)
		}
		ci := in.node.Docker.Inspect(t, in.containerID)
		for _, kv := range ci.Config.Env {
			k, v, _ := strings.Cut(kv, "=")
			if strings.HasPrefix(k, "AWS_") || strings.HasPrefix(k, "VAULT_") || strings.Contains(v, secretKey) || strings.Contains(v, accessKey) {
				t.Errorf("%s: model container environment holds %s", id, k)
			}
		}
		modelMount := false
		for _, m := range ci.Mounts {
			if strings.Contains(m.Source, "/"+scheduler.FetchTaskName+"/") {
				t.Errorf("%s: model container mounts the fetch task's dir %s", id, m.Source)
			}
			if m.Destination == scheduler.ModelDirInTask {
				modelMount = true
				if m.RW {
					t.Errorf("%s: %s is mounted read-write", id, scheduler.ModelDirInTask)
				}
			}
		}
		if !modelMount {
			t.Errorf("%s: no mount at %s", id, scheduler.ModelDirInTask)
		}
		// Everything the model process can see: its environment and every
		// file in its mount namespace, read through /proc/<pid>/root.
		pid := ci.State.Pid
		if env, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", pid)); err != nil {
			t.Errorf("%s: model process environment: %v", id, err)
		} else if bytes.Contains(env, []byte(secretKey)) || bytes.Contains(env, []byte("AWS_")) || bytes.Contains(env, []byte("VAULT_")) {
			t.Errorf("%s: model process environment holds credentials", id)
		}
		// The trailing slash makes WalkDir enter the magic link.
		root := fmt.Sprintf("/proc/%d/root/", pid)
		files, sawModel := 0, false
		err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
			if err != nil {
				return nil
			}
			rel := "/" + strings.TrimPrefix(path, root)
			if d.IsDir() && (rel == "/proc" || rel == "/sys" || rel == "/dev") {
				return filepath.SkipDir
			}
			if !d.Type().IsRegular() {
				return nil
			}
			files++
			if strings.HasSuffix(rel, "vault_token") {
				t.Errorf("%s: the model container sees a Vault token file %s", id, rel)
			}
			if strings.HasPrefix(rel, scheduler.ModelDirInTask+"/") {
				sawModel = true
			}
			b, err := os.ReadFile(path)
			if err == nil && (bytes.Contains(b, []byte(secretKey)) || bytes.Contains(b, []byte(accessKey))) {
				t.Errorf("%s: the model container sees store credentials in %s", id, rel)
			}
			return nil
		})
		if err != nil {
			t.Errorf("%s: walking the container's filesystem: %v", id, err)
		}
		if !sawModel {
			t.Errorf("%s: the model container does not see the model under %s", id, scheduler.ModelDirInTask)
		}
		t.Logf("%s (%s): model container sees %d files, none holding credentials", id, in.dc, files)
	}
	if len(inst) != dcInstances {
		t.Errorf("checked %d instances, want %d", len(inst), dcInstances)
	}
}

func checkSignedDownloadOf(t *testing.T, store *s3test.Server, path string) {
	t.Helper()
	for _, r := range store.Requests() {
		if r.Method == http.MethodGet && r.Status == http.StatusOK && r.Path == path {
			return
		}
	}
	t.Errorf("no signed download of %s succeeded", path)
}

// checkDatacenterLoss cuts dc3's link under load, measures how long the
// router keeps using it, how many invocations fail, how long until Nomad
// has replaced the lost instances in dc1 and dc2, and how long until dc3
// serves again once its link is back.
func checkDatacenterLoss(t *testing.T, ctx context.Context, c *testagents.Cluster, jobID, url, routerAddr string, inst map[string]instance) {
	const lost = "dc3"
	l := startClosedLoad(url, dcWorkers)
	time.Sleep(3 * time.Second)
	retriedBefore := sumMetric(routerMetrics(t, routerAddr), "serai_router_retries_total")
	// `ip link set` takes tens of milliseconds to run: the clock starts
	// once the link is surely down, so invocations sent before that count
	// as in flight at the cut.
	c.CutLink(t, lost)
	cut := time.Now()
	restored := false
	defer func() {
		if !restored {
			c.RestoreLink(t, lost)
		}
	}()

	// The router has stopped using dc3 when its table holds only the
	// other datacenters' instances.
	routerOff := time.Duration(0)
	for time.Since(cut) < 60*time.Second {
		if n, ok := healthyInstances(routerAddr); ok && n == dcInstances-2 {
			routerOff = time.Since(cut)
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if routerOff == 0 {
		t.Errorf("router still routes to %s 60s after its link was cut", lost)
	}

	// Nomad replaces the lost instances in the surviving datacenters.
	// Both views must agree: Consul can pass a replacement's check before
	// the Nomad server has its client's "running" update (the client
	// batches those), so Consul alone is not Nomad having replaced it.
	back := time.Duration(0)
	for time.Since(cut) < 3*time.Minute && ctx.Err() == nil {
		entries, _, err := c.Consul.Client.Health().Service(contract.ServiceName(endpointName), "", true, nil)
		if err == nil && len(entries) >= dcInstances && runningOutside(c, jobID, lost) == dcInstances {
			back = time.Since(cut)
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if back == 0 {
		dumpAllocs(t, c.Nomad, jobID)
		t.Fatalf("the lost instances were not replaced within 3m")
	}
	now := instances(t, c, jobID)
	perDC := map[string]int{}
	for _, in := range now {
		perDC[in.dc]++
	}
	// Let the load run on the replaced fleet before counting.
	time.Sleep(3 * time.Second)
	rs := l.stop()
	retried := sumMetric(routerMetrics(t, routerAddr), "serai_router_retries_total") - retriedBefore
	failed := failures(rs)
	lastFail := time.Duration(0)
	atCut := 0
	for _, r := range failed {
		if d := r.start.Sub(cut); d > lastFail {
			lastFail = d
		}
		if r.start.Before(cut) {
			atCut++
		}
	}
	// Invocations sent after the cut but before the router learnt of it
	// went to dc3 too and hung there until the routing table's timeout;
	// each client can have only one of those at a time.
	t.Logf("RESULT datacenters: %s cut under load (%d concurrent clients): router stopped using it after %v; %d of %d invocations failed (%d in flight at the cut, %d sent to it before the router knew, the last %v after the cut); %.0f retried on another instance (requests %s acknowledged none of, rescued, and failed connections); %d instances passing again after %v (dc1/dc2 = %d/%d)",
		lost, dcWorkers, routerOff.Round(10*time.Millisecond), len(failed), len(rs), atCut, len(failed)-atCut, lastFail.Round(10*time.Millisecond), retried, lost, dcInstances, back.Round(100*time.Millisecond), perDC["dc1"], perDC["dc2"])
	if routerOff > dcRouteTimeout {
		t.Errorf("router took %v to stop using %s; want seconds", routerOff, lost)
	}
	// A closed-loop client with dcWorkers workers never has more than
	// dcWorkers invocations in flight: an invocation hangs for the
	// routing table's timeout (longer than the router takes to drop the
	// datacenter), so no client can lose a second one.
	if len(failed) > dcWorkers {
		t.Errorf("%d invocations failed; want at most the %d that can be in flight: %s", len(failed), dcWorkers, errorKinds(rs))
	}
	for i, r := range failed {
		if i < 3 {
			d, sign := r.start.Sub(cut).Round(time.Millisecond), "+"
			if d < 0 {
				d, sign = -d, "-"
			}
			t.Logf("failed invocation sent at cut%s%v: %v", sign, d, r.err)
		}
	}
	if perDC[lost] != 0 || perDC["dc1"]+perDC["dc2"] != dcInstances {
		t.Errorf("after the loss: instances per datacenter %v, want all %d in dc1 and dc2", perDC, dcInstances)
	}

	// The link comes back: dc3's original instances serve again (the
	// compiled disconnect block keeps them and stops the replacements).
	dc3 := map[string]bool{}
	for id, in := range inst {
		if in.dc == lost {
			dc3[id] = true
		}
	}
	l = startClosedLoad(url, dcWorkers)
	c.RestoreLink(t, lost)
	up := time.Now()
	restored = true
	returned := time.Duration(0)
	for time.Since(up) < 3*time.Minute && returned == 0 {
		time.Sleep(200 * time.Millisecond)
		for _, r := range l.results() {
			if dc3[r.instance] && r.start.After(up) {
				returned = r.end.Sub(up)
				break
			}
		}
	}
	if returned == 0 {
		l.stop()
		t.Fatalf("no invocation reached %s within 3m of its link coming back", lost)
	}
	// And Nomad converges back to 2/2/2.
	var final map[string]int
	for time.Since(up) < 3*time.Minute {
		final = map[string]int{}
		for _, in := range instances(t, c, jobID) {
			final[in.dc]++
		}
		if final["dc1"] == 2 && final["dc2"] == 2 && final["dc3"] == 2 {
			break
		}
		time.Sleep(time.Second)
	}
	settled := time.Since(up)
	time.Sleep(2 * time.Second)
	rs = l.stop()
	failed = failures(rs)
	t.Logf("RESULT datacenters: %s link restored: traffic reached it again after %v; back to 2/2/2 after %v (%v); %d of %d invocations failed meanwhile",
		lost, returned.Round(10*time.Millisecond), settled.Round(100*time.Millisecond), final, len(failed), len(rs))
	if final["dc1"] != 2 || final["dc2"] != 2 || final["dc3"] != 2 {
		t.Errorf("instances per datacenter after %s came back: %v, want 2/2/2", lost, final)
	}
	if len(failed) > 0 {
		t.Errorf("%d invocations failed while %s came back; want none (first: %v)", len(failed), lost, failed[0].err)
	}
}

// healthyInstances reads the router's healthy-instances gauge of the
// variant.
func healthyInstances(routerAddr string) (float64, bool) {
	resp, err := http.Get("http://" + routerAddr + "/metrics")
	if err != nil {
		return 0, false
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return metricValue(b, contract.MetricHealthyInstances+fmt.Sprintf(`{endpoint=%q,generation="1",variant=%q}`, endpointName, dcVariant))
}

// closedLoad is a closed-loop load generator: each worker sends one invocation
// at a time, asking the model which instance answered.
type closedLoad struct {
	stopc chan struct{}
	wg    sync.WaitGroup
	mu    sync.Mutex
	rs    []loadResult
}

type loadResult struct {
	start, end time.Time
	instance   string
	err        error
}

func startClosedLoad(url string, workers int) *closedLoad {
	l := &closedLoad{stopc: make(chan struct{})}
	client := &http.Client{Timeout: 2 * dcRouteTimeout, Transport: &http.Transport{MaxIdleConnsPerHost: workers}}
	for range workers {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			for {
				select {
				case <-l.stopc:
					return
				default:
				}
				r := invokeInstance(client, url)
				l.mu.Lock()
				l.rs = append(l.rs, r)
				l.mu.Unlock()
				// Paced, not flat out: the machine is shared, and a few
				// hundred invocations a second per worker show every
				// failure as well as thousands.
				time.Sleep(time.Millisecond)
			}
		}()
	}
	return l
}

func (l *closedLoad) results() []loadResult {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]loadResult(nil), l.rs...)
}

func (l *closedLoad) stop() []loadResult {
	close(l.stopc)
	l.wg.Wait()
	return l.results()
}

// errorKinds counts failures by error text (first 120 bytes), most
// frequent first, so a failed run says what went wrong.
func errorKinds(rs []loadResult) string {
	n := map[string]int{}
	for _, r := range rs {
		if r.err != nil {
			e := r.err.Error()
			if len(e) > 120 {
				e = e[:120]
			}
			n[e]++
		}
	}
	kinds := make([]string, 0, len(n))
	for e := range n {
		kinds = append(kinds, e)
	}
	sort.Slice(kinds, func(i, j int) bool { return n[kinds[i]] > n[kinds[j]] })
	var b strings.Builder
	for i, e := range kinds {
		if i == 5 {
			fmt.Fprintf(&b, "; …%d more kinds", len(kinds)-5)
			break
		}
		fmt.Fprintf(&b, "; %d× %s", n[e], e)
	}
	return strings.TrimPrefix(b.String(), "; ")
}

func failures(rs []loadResult) []loadResult {
	var out []loadResult
	for _, r := range rs {
		if r.err != nil {
			out = append(out, r)
		}
	}
	return out
}

func invokeInstance(client *http.Client, url string) loadResult {
	r := loadResult{start: time.Now()}
	req, err := http.NewRequest(http.MethodPost, url, strings.NewReader(payload))
	if err != nil {
		r.err, r.end = err, time.Now()
		return r
	}
	req.Header.Set("Content-Type", "text/csv")
	req.Header.Set("Accept", "text/csv")
	resp, err := client.Do(req)
	if err != nil {
		r.err = err
		r.end = time.Now()
		return r
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	r.end = time.Now()
	switch {
	case err != nil:
		r.err = err
	case resp.StatusCode != http.StatusOK:
		r.err = fmt.Errorf("status %d: %s", resp.StatusCode, bytes.TrimSpace(body))
	case string(body) != "Iris-setosa\nIris-virginica\n":
		r.err = fmt.Errorf("unexpected answer %q", body)
	default:
		r.instance, _ = strings.CutPrefix(resp.Header.Get("X-Amzn-SageMaker-Custom-Attributes"), "instance=")
	}
	return r
}

// waitDeploymentOfVersion waits until the job's latest deployment is the
// one of its current version.
func waitDeploymentOfVersion(t *testing.T, ctx context.Context, c *nomadapi.Client, jobID string) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		job, _, err := c.Jobs().Info(jobID, nil)
		if err != nil {
			t.Fatalf("job %s: %v", jobID, err)
		}
		d, _, err := c.Jobs().LatestDeployment(jobID, nil)
		if err == nil && d != nil && job.Version != nil && d.JobVersion == *job.Version {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("no deployment of the current version of %s within 1m", jobID)
}

// sumMetric adds up every series of the named counter or gauge in a
// Prometheus text exposition.
func sumMetric(exposition, name string) float64 {
	sum := 0.0
	for _, line := range strings.Split(exposition, "\n") {
		rest, ok := strings.CutPrefix(line, name)
		if !ok || rest == "" || (rest[0] != '{' && rest[0] != ' ') {
			continue
		}
		f := strings.Fields(rest[strings.LastIndexByte(rest, '}')+1:])
		if len(f) == 0 {
			continue
		}
		if v, err := strconv.ParseFloat(f[0], 64); err == nil {
			sum += v
		}
	}
	return sum
}
