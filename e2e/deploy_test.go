package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/seraihq/serai/contract"
	"github.com/seraihq/serai/internal/testagents"
	"github.com/seraihq/serai/policies"
	"github.com/seraihq/serai/server"
)

// TestDeployJobs runs deploy/ as an operator does, on dev agents: every
// job passes `nomad job validate`; the Vault policy and role from
// deploy/vault are written; the server job (two instances, raw_exec, the
// built binary's path templated in through HCL variables) and the router
// job run; an endpoint applied through that server answers through that
// router. The server's only Vault token is the one its workload identity
// got through the serai-server role, so this also proves the policy is
// enough.
func TestDeployJobs(t *testing.T) {
	if _, err := exec.LookPath("nomad"); err != nil {
		t.Skip("nomad not on PATH: build it from its public repository into ~/.cache/serai/bin (README: Agents)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	// Consul without ACLs: the deploy/ jobs do not yet hand their tasks
	// a Consul token (the server and router tasks would need theirs from
	// Vault or a Nomad variable), so with default deny they could not
	// register. The other suites run with ACLs on.
	s := newStackWith(t, ctx, testagents.ConsulOptions{})
	sums := s.trainIris(t, ctx)
	nomadEnv := append(os.Environ(), "NOMAD_ADDR="+s.nomad.Addr)
	nomadCmd := func(t *testing.T, args ...string) string {
		t.Helper()
		cmd := exec.CommandContext(ctx, "nomad", args...)
		cmd.Env = nomadEnv
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Run(); err != nil {
			t.Fatalf("nomad %s: %v\n%s", strings.Join(args, " "), err, out.String())
		}
		return out.String()
	}

	// Every job validates against the agent (drivers included) with its
	// defaults and with the variables used below.
	files, _ := filepath.Glob("../deploy/*.nomad.hcl")
	if len(files) < 4 {
		t.Fatalf("deploy/ has %d job files", len(files))
	}
	for _, f := range files {
		nomadCmd(t, "job", "validate", "-var", "driver=raw_exec", f)
	}
	nomadCmd(t, "fmt", "-check", "../deploy")

	// Vault: the server's policy and JWT role, exactly as shipped.
	pol, err := os.ReadFile("../deploy/vault/serai-server.policy.hcl")
	if err != nil {
		t.Fatal(err)
	}
	if string(pol) != policies.ServerPolicy("") {
		t.Fatalf("deploy/vault/serai-server.policy.hcl differs from policies.ServerPolicy; regenerate it")
	}
	if err := s.vault.Client.Sys().PutPolicyWithContext(ctx, "serai-server", string(pol)); err != nil {
		t.Fatal(err)
	}
	var role map[string]any
	b, err := os.ReadFile("../deploy/vault/serai-server.role.json")
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &role); err != nil {
		t.Fatal(err)
	}
	if _, err := s.vault.Client.Logical().WriteWithContext(ctx, "auth/jwt-nomad/role/serai-server", role); err != nil {
		t.Fatalf("writing the serai-server role: %v", err)
	}

	routerAddr := strings.Split(testagents.FreeLoopbackAddr(t), ":")
	nomadCmd(t, "job", "run", "-detach",
		"-var", "serai_binary="+s.serai, "-var", "driver=raw_exec", "-var", "count=2", "-var", "distinct_hosts=false",
		"-var", "consul_addr="+s.consul.Addr, "-var", "nomad_addr="+s.nomad.Addr, "-var", "vault_addr="+s.vault.Addr,
		"-var", `args=["--tick","250ms","--drain-period","2s"]`,
		"../deploy/serai-server.nomad.hcl")
	nomadCmd(t, "job", "run", "-detach",
		"-var", "serai_binary="+s.serai, "-var", "driver=raw_exec", "-var", "type=service", "-var", "count=1",
		"-var", "port="+routerAddr[1], "-var", "consul_addr="+s.consul.Addr,
		"../deploy/serai-router.nomad.hcl")

	var serverURL string
	waitUntil(t, ctx, "two serai servers pass their checks in Consul", 2*time.Minute, func() bool {
		entries, _, err := s.consul.Client.Health().Service(server.ServiceName, "", true, nil)
		if err != nil || len(entries) < 2 {
			return false
		}
		serverURL = fmt.Sprintf("http://%s:%d", entries[0].Service.Address, entries[0].Service.Port)
		return true
	})
	waitUntil(t, ctx, "the router registers in Consul", time.Minute, func() bool {
		entries, _, err := s.consul.Client.Health().Service("serai-router", "", true, nil)
		return err == nil && len(entries) == 1
	})
	waitUntil(t, ctx, "a server holds the lock", time.Minute, func() bool { return leaderOf(t, s.consul.Client) != "" })

	spec := filepath.Join(s.dir, "deploy.hcl")
	body := cpModels(s.store.URL, s.modelServer, sums) + cpConfig("deploy-c1", "iris-v1", "iris-v2", 1, 1) +
		fmt.Sprintf("\nendpoint %q {\n  config = \"deploy-c1\"\n}\n", endpointName)
	if err := os.WriteFile(spec, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	apply := exec.CommandContext(ctx, s.serai, "apply", spec)
	apply.Env = append(os.Environ(), "SERAI_ADDR="+serverURL)
	if out, err := apply.CombinedOutput(); err != nil {
		t.Fatalf("serai apply through the deploy/ server: %v\n%s\nserver allocations:\n%s", err, out, nomadCmd(t, "job", "status", "serai-server"))
	}
	invokeURL := "http://" + strings.Join(routerAddr, ":") + "/endpoints/" + endpointName + "/invocations"
	counts, _ := invokeMany(t, invokeURL, 50)
	t.Logf("RESULT deploy/: server job (2 allocs) + router job on dev agents; apply → InService %s; 50 invocations through the deployed router: %v", time.Since(start).Round(100*time.Millisecond), counts)
	if counts["v1"]+counts["v2"] != 50 {
		t.Errorf("invocations through the deployed router: %v", counts)
	}

	t.Run("PrometheusAndAutoscaler", func(t *testing.T) {
		// Prometheus scrapes the deployed router (found in Consul) and the
		// Nomad Autoscaler reads Prometheus (found in Consul too).
		prom, err1 := exec.LookPath("prometheus")
		autoscaler, err2 := exec.LookPath("nomad-autoscaler")
		if err1 != nil || err2 != nil {
			t.Skip("prometheus (apt-get install prometheus) or nomad-autoscaler (prebuilt into ~/.cache/serai/bin) not on PATH")
		}
		promAddr := strings.Split(testagents.FreeLoopbackAddr(t), ":")
		nomadCmd(t, "job", "run", "-detach", "-var", "prometheus_binary="+prom, "-var", "driver=raw_exec",
			"-var", "port="+promAddr[1], "../deploy/prometheus.nomad.hcl")
		nomadCmd(t, "job", "run", "-detach", "-var", "autoscaler_binary="+autoscaler, "-var", "driver=raw_exec",
			"-var", "nomad_addr="+s.nomad.Addr, "../deploy/nomad-autoscaler.nomad.hcl")
		promURL := "http://" + strings.Join(promAddr, ":")
		var scraped string
		defer func() {
			if t.Failed() {
				if resp, err := http.Get(promURL + "/api/v1/targets"); err == nil {
					b, _ := io.ReadAll(resp.Body)
					resp.Body.Close()
					t.Logf("Prometheus targets: %s", b)
				} else {
					t.Logf("Prometheus: %v\n%s", err, nomadCmd(t, "job", "status", "serai-prometheus"))
				}
			}
		}()
		waitUntil(t, ctx, "Prometheus has the deployed router's invocation counter", 2*time.Minute, func() bool {
			resp, err := http.Get(promURL + "/api/v1/query?query=" + url.QueryEscape("sum("+contract.MetricInvocations+")"))
			if err != nil {
				return false
			}
			defer resp.Body.Close()
			var r struct {
				Data struct {
					Result []struct {
						Value []any `json:"value"`
					} `json:"result"`
				} `json:"data"`
			}
			if json.NewDecoder(resp.Body).Decode(&r) != nil || len(r.Data.Result) == 0 || len(r.Data.Result[0].Value) < 2 {
				return false
			}
			scraped, _ = r.Data.Result[0].Value[1].(string)
			return scraped != "" && scraped != "0"
		})
		waitUntil(t, ctx, "the Nomad Autoscaler passes its health check", 2*time.Minute, func() bool {
			entries, _, err := s.consul.Client.Health().Service("serai-autoscaler", "", true, nil)
			return err == nil && len(entries) == 1
		})
		t.Logf("RESULT deploy/: Prometheus job scraped the router job (%s invocations) and the Autoscaler job is healthy", scraped)
	})
}
