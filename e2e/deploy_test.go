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

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/sagemakerruntime"

	"github.com/seraihq/serai/contract"
	"github.com/seraihq/serai/internal/testagents"
	"github.com/seraihq/serai/internal/tlsreload"
	"github.com/seraihq/serai/internal/tlsreload/tlstest"
	"github.com/seraihq/serai/policies"
	"github.com/seraihq/serai/server"
)

// TestDeployJobs runs deploy/ as an operator does, on dev agents: every
// job passes `nomad job validate`; the Vault policies and roles from
// deploy/vault are written, and the jobs' SigV4 keys and TLS certificates
// put where deploy/README.md says; the server job (two instances,
// raw_exec, the built binary's path templated in through HCL variables)
// and the router job run with TLS and SigV4 from Vault; plain HTTP and
// unsigned requests are refused by both; an endpoint applied through that
// server with an operator key answers signed invocations over TLS through
// that router. The server's and router's only Vault tokens are the ones
// their workload identities got through their roles, so this also proves
// the policies are enough. Consul runs as a cluster runs it: ACLs on
// (default deny), the jobs' tasks with the tokens of deploy/consul's
// policies, handed to them through Vault like their other secrets.
func TestDeployJobs(t *testing.T) { testDeploy(t, true) }

// TestDeployMonitoring is TestDeployJobs on a Consul without ACLs, plus
// deploy/'s Prometheus scraping the deployed router over HTTPS and the
// Nomad Autoscaler reading Prometheus. Both jobs find their peers through
// Consul in Nomad `template` blocks, and Nomad 2.0.5's template runner
// does not authenticate those lookups with the agent's Consul token (they
// fail "ACL not found"; hashicorp/nomad#28224): with Consul ACLs on they
// need Nomad's Consul workload identities (`nomad setup consul`), which
// docs/operations.md describes.
func TestDeployMonitoring(t *testing.T) { testDeploy(t, false) }

func testDeploy(t *testing.T, acl bool) {
	if _, err := exec.LookPath("nomad"); err != nil {
		t.Skip("nomad not on PATH: build it from its public repository into ~/.cache/serai/bin (README: Agents)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	// The deployed server and router serve TLS from a private CA, and
	// Consul checks them over HTTPS verifying their certificates, so the
	// agent trusts that CA (docs/operations.md, "Secure").
	ca := tlstest.NewCA(t, "serai deploy test CA")
	s := newStackWith(t, ctx, testagents.ConsulOptions{ACL: acl, CheckCAFile: ca.File})
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

	// Vault: serai's own policies and JWT roles, exactly as shipped.
	pol, err := os.ReadFile("../deploy/vault/serai-server.policy.hcl")
	if err != nil {
		t.Fatal(err)
	}
	if string(pol) != policies.ServerPolicy("") {
		t.Fatalf("deploy/vault/serai-server.policy.hcl differs from policies.ServerPolicy; regenerate it")
	}
	for _, name := range []string{"serai-server", "serai-server-secrets", "serai-router"} {
		pol, err := os.ReadFile("../deploy/vault/" + name + ".policy.hcl")
		if err != nil {
			t.Fatal(err)
		}
		if err := s.vault.Client.Sys().PutPolicyWithContext(ctx, name, string(pol)); err != nil {
			t.Fatal(err)
		}
	}
	for _, name := range []string{"serai-server", "serai-router"} {
		var role map[string]any
		b, err := os.ReadFile("../deploy/vault/" + name + ".role.json")
		if err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(b, &role); err != nil {
			t.Fatal(err)
		}
		if _, err := s.vault.Client.Logical().WriteWithContext(ctx, "auth/jwt-nomad/role/"+name, role); err != nil {
			t.Fatalf("writing the %s role: %v", name, err)
		}
	}

	// The jobs' secrets, where deploy/README.md tells operators to put
	// them: SigV4 keys (a user key and an operator key), a session key and
	// TLS certificates from a private CA.
	const (
		userKey, userSecret = "AKIADEPLOYUSER000001", "deploy/user/secret+that+signs/invokes"
		opKey, opSecret     = "AKIADEPLOYOPERATOR01", "deploy/operator/secret+that+owns/stores"
	)
	caPEM, err := os.ReadFile(ca.File)
	if err != nil {
		t.Fatal(err)
	}
	serverCert, serverKey := ca.Issue(t, tlstest.Leaf{CommonName: "serai-server", Serial: 2, Hosts: []string{"127.0.0.1", "serai-server.service.consul"}})
	routerCert, routerKey := ca.Issue(t, tlstest.Leaf{CommonName: "serai-router", Serial: 3, Hosts: []string{"127.0.0.1", "serai-router.service.consul"}})
	if _, err := s.vault.Client.KVv2("secret").Put(ctx, "serai/deploy/server", map[string]any{
		"sigv4_keys":     userKey + " " + userSecret + "\n",
		"operator_keys":  opKey + " " + opSecret + "\n",
		"tls_cert":       string(serverCert),
		"tls_key":        string(serverKey),
		"router_ca_cert": string(caPEM),
		"consul_token":   s.consul.Tokens.Server,
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.vault.Client.KVv2("secret").Put(ctx, "serai/deploy/router", map[string]any{
		"sigv4_keys":   userKey + " " + userSecret + "\n",
		"session_key":  "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff\n",
		"tls_cert":     string(routerCert),
		"tls_key":      string(routerKey),
		"consul_token": s.consul.Tokens.Router,
	}); err != nil {
		t.Fatal(err)
	}
	caFile := ca.File
	caTLS, err := tlsreload.ClientConfig(caFile)
	if err != nil {
		t.Fatal(err)
	}

	routerAddr := strings.Split(testagents.FreeLoopbackAddr(t), ":")
	nomadCmd(t, "job", "run", "-detach",
		"-var", "serai_binary="+s.serai, "-var", "driver=raw_exec", "-var", "count=2", "-var", "distinct_hosts=false",
		"-var", "consul_addr="+s.consul.Addr, "-var", "nomad_addr="+s.nomad.Addr, "-var", "vault_addr="+s.vault.Addr,
		"-var", "allow_drivers=raw_exec",
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
		serverURL = fmt.Sprintf("https://%s:%d", entries[0].Service.Address, entries[0].Service.Port)
		return true
	})
	waitUntil(t, ctx, "the router registers in Consul", time.Minute, func() bool {
		entries, _, err := s.consul.Client.Health().Service("serai-router", "", true, nil)
		return err == nil && len(entries) == 1
	})
	waitUntil(t, ctx, "a server holds the lock", time.Minute, func() bool { return leaderOf(t, s.consul.Client) != "" })

	// The deployed control plane is closed: plain HTTP gets no API, and
	// an unsigned request over TLS is refused.
	plain := &http.Client{Timeout: 5 * time.Second}
	if resp, err := plain.Post(strings.Replace(serverURL, "https://", "http://", 1), "application/x-amz-json-1.1", strings.NewReader("{}")); err == nil {
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		// Go's TLS server answers a plain HTTP request 400 saying so; an
		// API served in the clear would answer something else.
		if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(b), "HTTPS") {
			t.Errorf("plain HTTP to the deployed server: %d %q, want TLS's refusal", resp.StatusCode, b)
		}
	}
	tlsClient := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: caTLS}}
	req, _ := http.NewRequest(http.MethodPost, serverURL, strings.NewReader(`{"ModelName":"evil"}`))
	req.Header.Set("X-Amz-Target", "SageMaker.CreateModel")
	req.Header.Set("Content-Type", "application/x-amz-json-1.1")
	resp, err := tlsClient.Do(req)
	if err != nil {
		t.Fatalf("unsigned CreateModel over TLS: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Errorf("unsigned CreateModel to the deployed server: status %d, want 403", resp.StatusCode)
	}

	spec := filepath.Join(s.dir, "deploy.hcl")
	body := cpModels(s.store.URL, s.modelServer, sums) + cpConfig("deploy-c1", "iris-v1", "iris-v2", 1, 1) +
		fmt.Sprintf("\nendpoint %q {\n  config = \"deploy-c1\"\n}\n", endpointName)
	if err := os.WriteFile(spec, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	// The operator applies: the spec declares the artifact store, which
	// only an operator key may create.
	apply := exec.CommandContext(ctx, s.serai, "apply", spec)
	apply.Env = append(os.Environ(), "SERAI_ADDR="+serverURL, "SERAI_CA_CERT="+caFile,
		"SERAI_ACCESS_KEY_ID="+opKey, "SERAI_SECRET_ACCESS_KEY="+opSecret)
	if out, err := apply.CombinedOutput(); err != nil {
		t.Fatalf("serai apply through the deploy/ server: %v\n%s\nserver allocations:\n%s", err, out, nomadCmd(t, "job", "status", "serai-server"))
	}
	routerURL := "https://" + strings.Join(routerAddr, ":")
	rt := sagemakerruntime.New(sagemakerruntime.Options{
		Region: "us-east-1", BaseEndpoint: aws.String(routerURL),
		Credentials: credentials.NewStaticCredentialsProvider(userKey, userSecret, ""),
		HTTPClient:  &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: caTLS}},
	})
	counts := map[string]int{}
	for i := 0; i < 50; i++ {
		ans, err := rt.InvokeEndpoint(ctx, &sagemakerruntime.InvokeEndpointInput{
			EndpointName: aws.String(endpointName), Body: []byte(payload),
			ContentType: aws.String("text/csv"), Accept: aws.String("application/json"),
		})
		if err != nil {
			t.Fatalf("signed invocation over TLS through the deployed router: %v", err)
		}
		counts[aws.ToString(ans.InvokedProductionVariant)]++
	}
	t.Logf("RESULT deploy/ (Consul ACLs %v): server job (2 allocs, TLS + SigV4 from Vault) + router job (TLS + SigV4 from Vault) on dev agents; apply → InService %s; 50 signed invocations over TLS: %v", acl, time.Since(start).Round(100*time.Millisecond), counts)
	if counts["v1"]+counts["v2"] != 50 {
		t.Errorf("invocations through the deployed router: %v", counts)
	}
	// An unsigned invocation is refused by the deployed router.
	req, _ = http.NewRequest(http.MethodPost, routerURL+"/endpoints/"+endpointName+"/invocations", strings.NewReader(payload))
	req.Header.Set("Content-Type", "text/csv")
	if resp, err := tlsClient.Do(req); err != nil {
		t.Errorf("unsigned invocation: %v", err)
	} else {
		resp.Body.Close()
		if resp.StatusCode != http.StatusForbidden {
			t.Errorf("unsigned invocation through the deployed router: status %d, want 403", resp.StatusCode)
		}
	}

	if acl {
		return
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
			"-var", "port="+promAddr[1], "-var", "router_ca_cert="+string(caPEM), "../deploy/prometheus.nomad.hcl")
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
