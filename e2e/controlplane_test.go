package e2e

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sagemaker"
	smtypes "github.com/aws/aws-sdk-go-v2/service/sagemaker/types"

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
	startRouter(t, serai, routerAddr, consul, dir)
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
	// The store serai apply put is the operator's to delete, once no
	// model names it.
	del := exec.CommandContext(ctx, serai, "store", "delete", storeName)
	del.Env = append(os.Environ(), "SERAI_ADDR="+survivor.url)
	if out, err := del.CombinedOutput(); err != nil {
		t.Errorf("serai store delete: %v\n%s", err, out)
	}
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
