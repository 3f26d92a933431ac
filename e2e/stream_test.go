package e2e

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sagemakerruntime"
	"github.com/aws/aws-sdk-go-v2/service/sagemakerruntime/types"
	consulapi "github.com/hashicorp/consul/api"
	nomadapi "github.com/hashicorp/nomad/api"

	"github.com/seraihq/serai/contract"
	"github.com/seraihq/serai/internal/testagents"
	"github.com/seraihq/serai/policies"
	"github.com/seraihq/serai/router"
)

const genEndpoint = "gen"

// TestStreamingAndSessions deploys the generative example (the trigram text
// model trained on Newton's Opticks, two instances, 20 ms per token) with
// the compiled job on real Nomad, Consul and Vault, streams tokens through
// the router with the AWS SDK and with `serai invoke --stream`, pins a
// stateful session across two routers that share only the session key,
// then stops the pinned instance and checks that the session gets
// SageMaker's session error instead of moving.
func TestStreamingAndSessions(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	st := newStack(t, ctx)
	consul, vault, nomad, dir, serai, modelServer, store := st.consul, st.vault, st.nomad, st.dir, st.serai, st.modelServer, st.store
	out := filepath.Join(dir, "train-gen")
	runCmd(t, modelServer, "train-text", "--version", "v2", "--order", "2", "--data", "../examples/data/opticks.txt", "--out", out)
	sum := uploadArtifact(t, ctx, store, filepath.Join(out, "model.tar.gz"), "gen/v2/model.tar.gz")
	if err := policies.NewVaultWriter(vault.Client).EnsureModel(ctx, "gen-v2", policies.KVStore(storeName), []string{genEndpoint}); err != nil {
		t.Fatalf("vault policy: %v", err)
	}

	specPath := filepath.Join(dir, "gen.hcl")
	spec := fmt.Sprintf(`
artifact_store %[1]q {
  endpoint   = %[2]q
  region     = "us-east-1"
  path_style = true
}

model "gen-v2" {
  artifact         = "s3://%[3]s/gen/v2/model.tar.gz"
  sha256           = %[4]q
  artifact_store   = %[1]q
  command          = %[5]q
  driver           = "raw_exec"
  download_timeout = "2m"
  startup_timeout  = "1m"
  environment = {
    TOKEN_DELAY = "20ms"
  }
}

endpoint_config "gen-e2e" {
  datacenters = ["dc1"]
  variant "v2" {
    model          = "gen-v2"
    instance_type  = "ml.t3.medium"
    instance_count = 2
    resources {
      cpu    = 100
      memory = 64
    }
  }
}

endpoint %[6]q {
  config = "gen-e2e"
}
`, storeName, store.URL, bucket, sum, modelServer, genEndpoint)
	if err := os.WriteFile(specPath, []byte(spec), 0o644); err != nil {
		t.Fatal(err)
	}
	jobJSON := runCmd(t, serai, "render", "--serai-binary", serai, "--generation", "1", specPath)
	var doc struct{ Job *nomadapi.Job }
	if err := json.Unmarshal(jobJSON, &doc); err != nil {
		t.Fatalf("render output: %v", err)
	}

	// Two routers sharing only the session key.
	key := make([]byte, 32)
	rand.Read(key)
	keyFile := filepath.Join(dir, "session.keys")
	if err := os.WriteFile(keyFile, []byte(hex.EncodeToString(key)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	routerA, routerB := testagents.FreeLoopbackAddr(t), testagents.FreeLoopbackAddr(t)
	for _, addr := range []string{routerA, routerB} {
		startRouter(t, serai, addr, consul, dir, "--session-key-file", keyFile, "--register=false")
	}
	writeGenRoutes(t, consul.Client)

	jobID := register(t, ctx, nomad.Client, doc.Job)
	t.Cleanup(func() { nomad.Client.Jobs().Deregister(jobID, true, nil) })
	waitDeployment(t, ctx, nomad.Client, jobID)
	waitPassing(t, ctx, consul.Client, genEndpoint, 2)

	smA, smB := sdkFor("http://"+routerA), sdkFor("http://"+routerB)
	prompt := []byte(`{"inputs":"The Light of the Sun","parameters":{"max_new_tokens":25,"seed":3}}`)

	// Streaming through the router with the unmodified SDK client.
	var sres *sagemakerruntime.InvokeEndpointWithResponseStreamOutput
	deadline := time.Now().Add(60 * time.Second)
	for {
		var err error
		start := time.Now()
		sres, err = smA.InvokeEndpointWithResponseStream(ctx, &sagemakerruntime.InvokeEndpointWithResponseStreamInput{
			EndpointName: aws.String(genEndpoint), Body: prompt, ContentType: aws.String("application/json")})
		if err == nil {
			var parts []string
			var first time.Duration
			for ev := range sres.GetStream().Events() {
				if p, ok := ev.(*types.ResponseStreamMemberPayloadPart); ok {
					if parts == nil {
						first = time.Since(start)
					}
					parts = append(parts, string(p.Value.Bytes))
				}
			}
			total := time.Since(start)
			if err := sres.GetStream().Err(); err != nil {
				t.Fatalf("stream: %v", err)
			}
			sres.GetStream().Close()
			if len(parts) != 25 {
				t.Fatalf("%d parts, want 25 tokens: %q", len(parts), parts)
			}
			t.Logf("RESULT stream e2e: 25 tokens at 20 ms/token through the router: first token after %v, last after %v", first.Round(time.Millisecond), total.Round(time.Millisecond))
			if !(first < total/4) {
				t.Errorf("first token after %v of %v: not streamed", first, total)
			}
			if aws.ToString(sres.InvokedProductionVariant) != "v2" || !strings.HasPrefix(aws.ToString(sres.ContentType), "text/plain") {
				t.Errorf("variant %q, content type %q", aws.ToString(sres.InvokedProductionVariant), aws.ToString(sres.ContentType))
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no stream within 60s: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}

	// `serai invoke --stream` prints the same tokens (same prompt and seed).
	promptFile := filepath.Join(dir, "prompt.json")
	os.WriteFile(promptFile, prompt, 0o644)
	cliOut := runCmd(t, serai, "invoke", genEndpoint, "--body", promptFile, "--content-type", "application/json", "--stream", "--router", "http://"+routerB)
	direct, err := smA.InvokeEndpoint(ctx, &sagemakerruntime.InvokeEndpointInput{
		EndpointName: aws.String(genEndpoint), Body: prompt, ContentType: aws.String("application/json")})
	if err != nil {
		t.Fatal(err)
	}
	if strings.TrimSpace(string(cliOut)) != strings.TrimSpace(string(direct.Body)) || len(strings.Fields(string(cliOut))) < 10 {
		t.Errorf("serai invoke --stream printed %q; InvokeEndpoint answered %q", cliOut, direct.Body)
	}

	// A session opened on router A, continued alternately through A and B:
	// the model keeps sessions in memory, so any request reaching the
	// other instance would fail with its 400 (a ModelError).
	open, err := smA.InvokeEndpoint(ctx, &sagemakerruntime.InvokeEndpointInput{
		EndpointName: aws.String(genEndpoint), Body: []byte(`{"inputs":"Colours","parameters":{"max_new_tokens":3,"token_delay_ms":1}}`),
		ContentType: aws.String("application/json"), SessionId: aws.String(router.NewSession)})
	if err != nil {
		t.Fatalf("open session: %v", err)
	}
	token, _, _ := strings.Cut(aws.ToString(open.NewSessionId), ";")
	pinned := strings.TrimPrefix(aws.ToString(open.CustomAttributes), "instance=")
	if token == "" || pinned == "" {
		t.Fatalf("NewSessionId %q, custom attributes %q", aws.ToString(open.NewSessionId), aws.ToString(open.CustomAttributes))
	}
	for i := range 6 {
		sm := []*sagemakerruntime.Client{smA, smB}[i%2]
		res, err := sm.InvokeEndpoint(ctx, &sagemakerruntime.InvokeEndpointInput{
			EndpointName: aws.String(genEndpoint), Body: []byte(`{"inputs":"and","parameters":{"max_new_tokens":2,"token_delay_ms":1}}`),
			ContentType: aws.String("application/json"), SessionId: aws.String(token)})
		if err != nil {
			t.Fatalf("session request %d via router %s: %v", i, "AB"[i%2:i%2+1], err)
		}
		if got := strings.TrimPrefix(aws.ToString(res.CustomAttributes), "instance="); got != pinned {
			t.Fatalf("session request %d answered by %s, pinned to %s", i, got, pinned)
		}
	}
	t.Logf("session pinned to allocation %s across both routers for 6 requests", pinned[:8])

	// Stop the pinned instance: SageMaker's session error, never a move.
	if _, err := nomad.Client.Allocations().Stop(&nomadapi.Allocation{ID: pinned}, nil); err != nil {
		t.Fatalf("stop allocation: %v", err)
	}
	stopped := time.Now()
	var ve *types.ValidationError
	for _, sm := range []*sagemakerruntime.Client{smA, smB} {
		for {
			res, err := sm.InvokeEndpoint(ctx, &sagemakerruntime.InvokeEndpointInput{
				EndpointName: aws.String(genEndpoint), Body: []byte(`{"inputs":"and","parameters":{"max_new_tokens":1}}`),
				ContentType: aws.String("application/json"), SessionId: aws.String(token)})
			if err == nil && strings.TrimPrefix(aws.ToString(res.CustomAttributes), "instance=") != pinned {
				t.Fatalf("the session moved to %s after its instance stopped", aws.ToString(res.CustomAttributes))
			}
			if errors.As(err, &ve) && strings.Contains(ve.ErrorMessage(), "no longer valid") {
				break
			}
			if time.Since(stopped) > 60*time.Second {
				t.Fatalf("no session error within 60s of stopping the instance; last: %v", err)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	t.Logf("RESULT stream e2e: pinned instance stopped → SageMaker session error on both routers after %v", time.Since(stopped).Round(10*time.Millisecond))

	// A new session opens on a remaining instance.
	if _, err := smB.InvokeEndpoint(ctx, &sagemakerruntime.InvokeEndpointInput{
		EndpointName: aws.String(genEndpoint), Body: []byte(`{"inputs":"Colours","parameters":{"max_new_tokens":1}}`),
		ContentType: aws.String("application/json"), SessionId: aws.String(router.NewSession)}); err != nil {
		t.Fatalf("new session after the stop: %v", err)
	}
	if _, _, err := nomad.Client.Jobs().Deregister(jobID, true, nil); err != nil {
		t.Errorf("stop job: %v", err)
	}
}

func sdkFor(url string) *sagemakerruntime.Client {
	return sagemakerruntime.New(sagemakerruntime.Options{
		Region:           "us-east-1",
		BaseEndpoint:     aws.String(url),
		Credentials:      aws.AnonymousCredentials{},
		RetryMaxAttempts: 1,
	})
}

func writeGenRoutes(t *testing.T, c *consulapi.Client) {
	t.Helper()
	b, err := router.EncodeRoutes(&router.Routes{
		Version:     router.RoutesVersion,
		Endpoint:    genEndpoint,
		Generations: []router.Generation{{Generation: 1, Weight: 1, Variants: []router.Variant{{Name: "v2", Weight: 1}}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.KV().Put(&consulapi.KVPair{Key: contract.RoutesKey(genEndpoint), Value: b}, nil); err != nil {
		t.Fatalf("write routing table: %v", err)
	}
}

func waitPassing(t *testing.T, ctx context.Context, c *consulapi.Client, endpoint string, want int) {
	t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	for time.Now().Before(deadline) {
		entries, _, err := c.Health().Service(router.ServiceName(endpoint), "", true, (&consulapi.QueryOptions{}).WithContext(ctx))
		if err == nil && len(entries) >= want {
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("fewer than %d passing instances of %s in Consul", want, router.ServiceName(endpoint))
}
