package e2e

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/seraihq/serai/internal/s3test"
	"github.com/seraihq/serai/internal/testagents"
)

// stack is what the single-datacenter suites start from: Consul (ACLs
// on, default deny), Vault (OpenBao) and Nomad on loopback, the serai and model-server binaries
// built from the checkout, and an S3-protocol store whose keys are in
// Vault where the fetch task's template reads them.
type stack struct {
	consul      *testagents.Consul
	vault       *testagents.Vault
	nomad       *testagents.Nomad
	dir         string
	serai       string
	modelServer string
	store       *s3test.Server
}

func newStack(t *testing.T, ctx context.Context) *stack {
	t.Helper()
	// Consul runs as a cluster should: ACLs on, default deny, each part
	// with the token of its policy in deploy/consul and nothing more.
	return newStackWith(t, ctx, testagents.ConsulOptions{ACL: true})
}

// newStackWith is newStack with Consul started with copts.
func newStackWith(t *testing.T, ctx context.Context, copts testagents.ConsulOptions) *stack {
	t.Helper()
	s := &stack{consul: testagents.StartConsulWith(t, copts)}
	s.vault = testagents.StartVault(t)
	s.nomad = testagents.StartNomad(t, testagents.NomadOptions{Consul: s.consul, Vault: s.vault})
	s.dir = t.TempDir()
	s.serai = buildBinary(t, s.dir, "serai", "../cmd/serai")
	s.modelServer = buildBinary(t, s.dir, "model-server", "../examples/model-server")
	s.store = s3test.New(t, accessKey, secretKey)
	s.store.Bucket(t, bucket)
	if _, err := s.vault.Client.KVv2("secret").Put(ctx, "serai/stores/"+storeName, map[string]any{
		"access_key_id": accessKey, "secret_access_key": secretKey,
	}); err != nil {
		t.Fatalf("write store credentials: %v", err)
	}
	return s
}

// trainIris trains the two Iris versions (v1 on sepal features only, v2 on
// all), uploads them with the AWS SDK, and returns their sha256 by version.
func (s *stack) trainIris(t *testing.T, ctx context.Context) map[string]string {
	t.Helper()
	sums := map[string]string{}
	for _, v := range []string{"v1", "v2"} {
		features := map[string]string{"v1": "sepal", "v2": "all"}[v]
		out := filepath.Join(s.dir, "train-"+v)
		runCmd(t, s.modelServer, "train", "--version", v, "--features", features, "--data", "../examples/data/iris.csv", "--out", out)
		sums[v] = uploadArtifact(t, ctx, s.store, filepath.Join(out, "model.tar.gz"), "iris/"+v+"/model.tar.gz")
	}
	return sums
}
