package e2e

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/sagemaker"
	smtypes "github.com/aws/aws-sdk-go-v2/service/sagemaker/types"
	"github.com/aws/smithy-go"
	nomadapi "github.com/hashicorp/nomad/api"
	vaultapi "github.com/hashicorp/vault/api"

	"github.com/seraihq/serai/contract"
	"github.com/seraihq/serai/internal/s3test"
	"github.com/seraihq/serai/internal/testagents"
	"github.com/seraihq/serai/policies"
	"github.com/seraihq/serai/server/client"
	"github.com/seraihq/serai/server/smapi"
)

// Principals of TestStoreKeysUnreachable: two users and an operator.
const (
	userAKey   = "AKIASTOREUSERA000001"
	userASec   = "user-a-secret-0123456789"
	userBKey   = "AKIASTOREUSERB000002"
	userBSec   = "user-b-secret-0123456789"
	opKey      = "AKIASTOREOPERATOR003"
	opSec      = "operator-secret-0123456789"
	bKeyID     = "AKIASTOREBKEY0000004"
	bSecret    = "store-b+secret/that/A/must+never/see"
	bKVPath    = "teams/b/store"
	storeAName = "store-a"
	storeBName = "store-b"
)

// TestStoreKeysUnreachable is user A, on a server with SigV4 and
// operator keys, trying every field of the API through which a model
// could obtain the keys of store B (another team's, allowed only to user
// B), on real Consul, OpenBao, Nomad and S3-protocol stores: naming B;
// naming its own store with B's Vault path, an AWS role or B's endpoint;
// defining a store inline; a file:// artifact pointing at the fetch
// task's rendered keys; an https:// artifact with a store; putting or
// deleting a store with a user key; data capture to B. Each is refused by
// name and leaves no record and no job. Then A's legitimate model on its
// own store deploys, and a token with exactly that model's Vault policy
// cannot read B's keys (403). Last, on a server that allows file://
// artifacts, the job compiled for a file:// model has no Vault identity
// and no credential template: there is nothing for the URL to copy.
func TestStoreKeysUnreachable(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	st := newStack(t, ctx)
	sums := st.trainIris(t, ctx)
	storeB := s3test.New(t, bKeyID, bSecret)
	storeB.Bucket(t, "team-b")
	if _, err := st.vault.Client.KVv2("secret").Put(ctx, bKVPath, map[string]any{"access_key_id": bKeyID, "secret_access_key": bSecret}); err != nil {
		t.Fatalf("write store B's keys: %v", err)
	}

	users := filepath.Join(st.dir, "users.keys")
	ops := filepath.Join(st.dir, "operators.keys")
	must(t, os.WriteFile(users, []byte(userAKey+" "+userASec+"\n"+userBKey+" "+userBSec+"\n"), 0o600))
	must(t, os.WriteFile(ops, []byte(opKey+" "+opSec+"\n"), 0o600))
	srv := startServer(t, st.serai, "stores", st.dir, st.consul, st.vault, st.nomad, "--sigv4-keys", users, "--operator-keys", ops)
	startRouter(t, st.serai, testagents.FreeLoopbackAddr(t), st.consul, st.dir)

	// The operator defines both stores with `serai store put`.
	storeA := fmt.Sprintf(`artifact_store %q {
  endpoint           = %q
  path_style         = true
  allowed_principals = [%q]
  vault {
    kv_path = "serai/stores/%s"
  }
}
`, storeAName, st.store.URL, userAKey, storeName)
	storesFile := filepath.Join(st.dir, "stores.hcl")
	must(t, os.WriteFile(storesFile, []byte(storeA+fmt.Sprintf(`artifact_store %q {
  endpoint           = %q
  path_style         = true
  allowed_principals = [%q]
  vault {
    kv_path = %q
  }
}
`, storeBName, storeB.URL, userBKey, bKVPath)), 0o644))
	cli := func(akid, secret string, args ...string) (string, error) {
		cmd := exec.CommandContext(ctx, st.serai, args...)
		cmd.Env = append(os.Environ(), "SERAI_ADDR="+srv.url, "SERAI_ACCESS_KEY_ID="+akid, "SERAI_SECRET_ACCESS_KEY="+secret)
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	if out, err := cli(opKey, opSec, "store", "put", storesFile); err != nil {
		t.Fatalf("serai store put as the operator: %v\n%s", err, out)
	}

	a := userClient(t, srv.url, userAKey, userASec)
	smA := sagemaker.New(sagemaker.Options{Region: "us-east-1", BaseEndpoint: aws.String(srv.url),
		Credentials: credentials.NewStaticCredentialsProvider(userAKey, userASec, "")})

	// snapshot is every serai record and every Nomad job, in any namespace.
	snapshot := func() string {
		keys, _, err := st.consul.Client.KV().Keys(contract.KVPrefix, "", nil)
		if err != nil {
			t.Fatal(err)
		}
		stubs, _, err := st.nomad.Client.Jobs().List(&nomadapi.QueryOptions{Namespace: "*"})
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range stubs {
			keys = append(keys, "job:"+s.Namespace+"/"+s.ID)
		}
		sort.Strings(keys)
		return strings.Join(keys, " ")
	}
	refused := func(what string, err error, code, msg string) {
		t.Helper()
		var ae smithy.APIError
		var ce *client.Error
		got := ""
		switch {
		case err == nil:
			t.Errorf("%s: accepted", what)
			return
		case errors.As(err, &ce):
			got = ce.Type + ": " + ce.Message
		case errors.As(err, &ae):
			got = ae.ErrorCode() + ": " + ae.ErrorMessage()
		default:
			got = err.Error()
		}
		if !strings.HasPrefix(got, code+":") || !strings.Contains(got, msg) {
			t.Errorf("%s: %s; want %s containing %q", what, got, code, msg)
			return
		}
		t.Logf("ATTACK %s: refused: %s", what, got)
	}
	model := func(name, url string, store *smapi.ArtifactStore) *smapi.CreateModelInput {
		return &smapi.CreateModelInput{ModelName: name,
			PrimaryContainer: &smapi.ContainerDefinition{ModelDataUrl: url},
			Serai:            &smapi.ModelExtension{Command: st.modelServer, Driver: "raw_exec", ArtifactStore: store}}
	}
	modelOf := func(url string, store *smapi.ArtifactStore) func() error {
		return func() error { _, err := a.CreateModel(ctx, model("attack", url, store)); return err }
	}

	before := snapshot()
	for _, c := range []struct {
		what, code, msg string
		try             func() error
	}{
		{"CreateModel naming store B", smapi.ErrValidation, `artifact store "store-b" does not exist or this caller may not use it`,
			modelOf("s3://team-b/secret.tar.gz", &smapi.ArtifactStore{Name: storeBName})},
		{"CreateModel naming store A with B's Vault KV path", smapi.ErrValidation, "'serai.artifactStore.vault'",
			modelOf("s3://team-b/secret.tar.gz", &smapi.ArtifactStore{Name: storeAName, Vault: &smapi.StoreVault{KVPath: bKVPath}})},
		{"CreateModel naming store A with an AWS secrets engine role", smapi.ErrValidation, "'serai.artifactStore.vault'",
			modelOf("s3://team-b/secret.tar.gz", &smapi.ArtifactStore{Name: storeAName, Vault: &smapi.StoreVault{AWSMount: "aws", AWSRole: "team-b"}})},
		{"CreateModel naming store A with B's endpoint", smapi.ErrValidation, "'serai.artifactStore.endpoint'",
			modelOf("s3://team-b/secret.tar.gz", &smapi.ArtifactStore{Name: storeAName, Endpoint: storeB.URL, PathStyle: true})},
		{"CreateModel defining a new store inline at B's path", smapi.ErrValidation, "operator-owned",
			modelOf("s3://team-b/secret.tar.gz", &smapi.ArtifactStore{Name: "mine", Endpoint: storeB.URL, Vault: &smapi.StoreVault{KVPath: bKVPath}})},
		{"CreateModel with file:// at the fetch task's rendered keys (AWS SDK)", smapi.ErrValidation, "'primaryContainer.modelDataUrl'",
			func() error {
				_, err := smA.CreateModel(ctx, &sagemaker.CreateModelInput{ModelName: aws.String("attack"),
					PrimaryContainer: &smtypes.ContainerDefinition{Image: aws.String("img:1"), ModelDataUrl: aws.String("file:///alloc/../fetch-model/secrets/store.env")}})
				return err
			}},
		{"CreateModel with file:// and store A", smapi.ErrValidation, "'primaryContainer.modelDataUrl'",
			modelOf("file:///secrets/store.env", &smapi.ArtifactStore{Name: storeAName})},
		{"CreateModel with an https:// artifact and store A", smapi.ErrValidation, "'serai.artifactStore'",
			modelOf("https://attacker.invalid/collect", &smapi.ArtifactStore{Name: storeAName})},
		{"CreateModel with s3:// and no store (the default store, which the operator never made) (AWS SDK)", smapi.ErrValidation, `artifact store "default" does not exist`,
			func() error {
				_, err := smA.CreateModel(ctx, &sagemaker.CreateModelInput{ModelName: aws.String("attack"),
					PrimaryContainer: &smtypes.ContainerDefinition{Image: aws.String("img:1"), ModelDataUrl: aws.String("s3://team-b/secret.tar.gz")}})
				return err
			}},
		{"PutArtifactStore with a user key (a store at B's path allowed to A)", smapi.ErrAccessDenied, "PutArtifactStore is an operator operation",
			func() error {
				_, err := a.PutArtifactStore(ctx, &smapi.PutArtifactStoreInput{ArtifactStore: smapi.ArtifactStore{Name: "mine", Vault: &smapi.StoreVault{KVPath: bKVPath}}, AllowedPrincipals: []string{userAKey}})
				return err
			}},
		{"PutArtifactStore with a user key (re-point store A at B's path)", smapi.ErrAccessDenied, "PutArtifactStore is an operator operation",
			func() error {
				_, err := a.PutArtifactStore(ctx, &smapi.PutArtifactStoreInput{ArtifactStore: smapi.ArtifactStore{Name: storeAName, Vault: &smapi.StoreVault{KVPath: bKVPath}}, AllowedPrincipals: []string{userAKey}})
				return err
			}},
		{"DeleteArtifactStore with a user key", smapi.ErrAccessDenied, "DeleteArtifactStore is an operator operation",
			func() error { return a.DeleteArtifactStore(ctx, &smapi.DeleteArtifactStoreInput{Name: storeBName}) }},
		{"DescribeArtifactStore of store B", smapi.ErrValidation, `artifact store "store-b" does not exist or this caller may not use it`,
			func() error {
				_, err := a.DescribeArtifactStore(ctx, &smapi.DescribeArtifactStoreInput{Name: storeBName})
				return err
			}},
	} {
		refused(c.what, c.try(), c.code, c.msg)
		if now := snapshot(); now != before {
			t.Fatalf("%s changed records or jobs:\n%s\n→\n%s", c.what, before, now)
		}
	}
	if out, err := cli(userAKey, userASec, "store", "put", storesFile); err == nil || !strings.Contains(out, "operator-owned") {
		t.Errorf("serai store put with a user key: %v\n%s", err, out)
	}

	// A's legitimate endpoint, applied with A's key: the spec repeats the
	// operator's store A exactly, which apply leaves alone.
	spec := filepath.Join(st.dir, "a.hcl")
	must(t, os.WriteFile(spec, []byte(storeA+fmt.Sprintf(`
model "legit" {
  artifact        = "s3://%s/iris/v2/model.tar.gz"
  sha256          = %q
  artifact_store  = %q
  command         = %q
  driver          = "raw_exec"
  startup_timeout = "20s"
}
endpoint_config "legit-1" {
  variant "v2" {
    model         = "legit"
    instance_type = "ml.t3.medium"
    resources {
      cpu    = 100
      memory = 64
    }
  }
}
endpoint %q {
  config = "legit-1"
}
`, bucket, sums["v2"], storeAName, st.modelServer, endpointName)), 0o644))
	if out, err := cli(userAKey, userASec, "apply", spec); err != nil {
		t.Fatalf("serai apply as user A: %v\n%s", err, out)
	}
	waitInService(t, ctx, smA)

	// Data capture cannot reach B either.
	before = snapshot()
	capture := func(store *smapi.ArtifactStore) func() error {
		return func() error {
			_, err := a.CreateEndpointConfig(ctx, &smapi.CreateEndpointConfigInput{EndpointConfigName: "attack",
				ProductionVariants: []smapi.ProductionVariant{{VariantName: "v", ModelName: "legit", InstanceType: "ml.t3.medium"}},
				DataCaptureConfig:  &smapi.DataCaptureConfig{DestinationS3Uri: "s3://team-b/capture", CaptureOptions: []smapi.CaptureOption{{CaptureMode: "Input"}}},
				Serai:              &smapi.EndpointConfigExtension{DataCaptureStore: store}})
			return err
		}
	}
	for _, c := range []struct {
		what, msg string
		try       func() error
	}{
		{"CreateEndpointConfig capturing to store B", `artifact store "store-b" does not exist`, capture(&smapi.ArtifactStore{Name: storeBName})},
		{"CreateEndpointConfig capturing to store A with B's path", "'serai.dataCaptureStore.vault'", capture(&smapi.ArtifactStore{Name: storeAName, Vault: &smapi.StoreVault{KVPath: bKVPath}})},
	} {
		refused(c.what, c.try(), smapi.ErrValidation, c.msg)
		if now := snapshot(); now != before {
			t.Fatalf("%s changed records or jobs:\n%s\n→\n%s", c.what, before, now)
		}
	}

	// What Vault gives the legitimate model: read on store A's path only,
	// to the fetch task of this endpoint's jobs in serai's namespace.
	w := policies.NewVaultWriter(st.vault.Client)
	acc, err := w.ReadModel(ctx, "legit")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(acc.Policy, `"secret/data/serai/stores/`+storeName+`"`) || strings.Contains(acc.Policy, bKVPath) ||
		strings.Join(acc.Namespaces, ",") != "default" || strings.Join(acc.Tasks, ",") != policies.FetchTask || strings.Join(acc.JobIDs, ",") != contract.JobIDGlob(endpointName) {
		t.Fatalf("model legit's Vault access: %+v", acc)
	}
	tok, err := st.vault.Client.Auth().Token().CreateWithContext(ctx, &vaultapi.TokenCreateRequest{Policies: []string{policies.PolicyName("legit")}, NoDefaultPolicy: true, TTL: "5m"})
	if err != nil {
		t.Fatal(err)
	}
	mv, err := st.vault.Client.Clone()
	if err != nil {
		t.Fatal(err)
	}
	mv.SetToken(tok.Auth.ClientToken)
	if s, err := mv.Logical().ReadWithContext(ctx, "secret/data/"+bKVPath); err == nil || !strings.Contains(err.Error(), "403") || s != nil {
		t.Errorf("the model's token reading store B's keys: %v, %v; want 403", s, err)
	} else {
		t.Logf("ATTACK the legitimate model's Vault token reads store B's path: refused: 403")
	}
	if s, err := mv.Logical().ReadWithContext(ctx, "secret/data/serai/stores/"+storeName); err != nil || s == nil {
		t.Errorf("the model's token reading its own store's keys: %v", err)
	}

	// A server that allows file:// artifacts (as serai dev does) still
	// refuses one with a store, and compiles one without a store into a
	// fetch task with no Vault identity and no credential template.
	fsrv := startServer(t, st.serai, "files", st.dir, st.consul, st.vault, st.nomad, "--sigv4-keys", users, "--operator-keys", ops, "--allow-file-artifacts")
	fa := userClient(t, fsrv.url, userAKey, userASec)
	before = snapshot()
	_, err = fa.CreateModel(ctx, model("attack", "file:///secrets/store.env", &smapi.ArtifactStore{Name: storeAName}))
	refused("CreateModel with file:// and store A where file:// is allowed", err, smapi.ErrValidation, "'serai.artifactStore'")
	if now := snapshot(); now != before {
		t.Fatalf("changed records or jobs:\n%s\n→\n%s", before, now)
	}
	m := model("filecopy", "file:///alloc/../fetch-model/secrets/store.env", nil)
	if _, err := fa.CreateModel(ctx, m); err != nil {
		t.Fatalf("file:// model where allowed: %v", err)
	}
	if _, err := fa.CreateEndpointConfig(ctx, &smapi.CreateEndpointConfigInput{EndpointConfigName: "filecopy-1",
		ProductionVariants: []smapi.ProductionVariant{{VariantName: "v", ModelName: "filecopy", InstanceType: "ml.t3.medium"}}}); err != nil {
		t.Fatal(err)
	}
	if _, err := fa.CreateEndpoint(ctx, &smapi.CreateEndpointInput{EndpointName: "filecopy", EndpointConfigName: "filecopy-1"}); err != nil {
		t.Fatal(err)
	}
	var job *nomadapi.Job
	waitUntil(t, ctx, "the file:// model's job is registered", 2*time.Minute, func() bool {
		job, _, err = st.nomad.Client.Jobs().Info(contract.JobID("filecopy", 1), nil)
		return err == nil && job != nil
	})
	for _, g := range job.TaskGroups {
		for _, task := range g.Tasks {
			if task.Vault != nil || len(task.Templates) > 0 || len(task.Identities) > 0 {
				t.Errorf("task %s of the file:// model's job has vault %+v, %d templates, %d identities", task.Name, task.Vault, len(task.Templates), len(task.Identities))
			}
			for k := range task.Env {
				if strings.HasPrefix(k, "SERAI_STORE_") {
					t.Errorf("task %s has store setting %s", task.Name, k)
				}
			}
		}
	}
	t.Logf("ATTACK file:// artifact where allowed: the compiled fetch task has no Vault identity and no credential template")
	if err := fa.DeleteEndpoint(ctx, &smapi.DeleteEndpointInput{EndpointName: "filecopy"}); err != nil {
		t.Fatal(err)
	}
}

func userClient(t *testing.T, url, akid, secret string) *client.Client {
	t.Helper()
	c, err := client.New(client.Config{Addr: url, Credentials: credentials.NewStaticCredentialsProvider(akid, secret, "")})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
