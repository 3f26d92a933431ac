package artifact_test

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"text/template"
	"time"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/nomad/api"
	vaultapi "github.com/hashicorp/vault/api"

	"github.com/seraihq/serai/internal/s3test"
	"github.com/seraihq/serai/internal/testagents"
	"github.com/seraihq/serai/jobspec"
	"github.com/seraihq/serai/policies"
	"github.com/seraihq/serai/scheduler"
)

const e2eSpec = `
artifact_store "minio-main" {
  endpoint   = %q
  region     = "us-east-1"
  path_style = true
}

artifact_store "other-store" {
  endpoint   = %q
  path_style = true
  vault {
    kv_path = "serai/stores/other-store"
  }
}

model "churn-v1" {
  artifact       = "s3://models/churn/v1/model.tar.gz"
  sha256         = %q
  artifact_store = "minio-main"
  command        = "/bin/sleep"
  args           = ["3600"]
  driver         = "raw_exec"
  environment = {
    LOG_LEVEL = "info"
  }
}

model "other-v1" {
  artifact       = "s3://models/other/v1/model.tar.gz"
  artifact_store = "other-store"
  command        = "/bin/sleep"
  driver         = "raw_exec"
}

endpoint_config "churn-cfg" {
  datacenters = ["dc1"]
  variant "primary" {
    model          = "churn-v1"
    instance_type  = "ml.t3.medium"
    instance_count = 1
  }
}

endpoint "churn" {
  config = "churn-cfg"
}
`

func randomHex(t *testing.T, n int) string {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

func modelTarGz(t *testing.T, files map[string]string) ([]byte, string) {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	for name, body := range files {
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(body)), ModTime: time.Unix(1700000000, 0)}); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write([]byte(body)); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	h := sha256.Sum256(buf.Bytes())
	return buf.Bytes(), hex.EncodeToString(h[:])
}

func findTask(t *testing.T, job *api.Job, name string) *api.Task {
	t.Helper()
	for _, g := range job.TaskGroups {
		for _, task := range g.Tasks {
			if task.Name == name {
				return task
			}
		}
	}
	t.Fatalf("compiled job %s has no task %q", *job.ID, name)
	return nil
}

// renderTemplate renders a compiled Nomad template the way Nomad's
// consul-template would for the task, with the task's own Vault token: the
// only function the fetch template uses is `secret`, which is a Vault read.
func renderTemplate(ctx context.Context, tmpl string, vault *vaultapi.Client) (map[string]string, error) {
	tp, err := template.New("store.env").Funcs(template.FuncMap{
		"secret": func(path string) (*vaultapi.Secret, error) {
			s, err := vault.Logical().ReadWithContext(ctx, path)
			if err == nil && s == nil {
				err = fmt.Errorf("no secret at %s", path)
			}
			return s, err
		},
	}).Parse(tmpl)
	if err != nil {
		return nil, err
	}
	var out bytes.Buffer
	if err := tp.Execute(&out, nil); err != nil {
		return nil, err
	}
	env := map[string]string{}
	sc := bufio.NewScanner(&out)
	for sc.Scan() {
		if k, v, ok := strings.Cut(strings.TrimSpace(sc.Text()), "="); ok {
			env[k] = v
		}
	}
	return env, nil
}

// tokenFor issues a token carrying exactly the policies the model's JWT
// role grants: what the fetch task holds after its workload-identity login
// (the login itself is tested in policies against the real JWT method).
func tokenFor(ctx context.Context, t *testing.T, v *testagents.Vault, w *policies.VaultWriter, model string) *vaultapi.Client {
	t.Helper()
	access, err := w.ReadModel(ctx, model)
	if err != nil || !access.HasRole {
		t.Fatalf("model %s has no role in Vault: %+v, %v", model, access, err)
	}
	sec, err := v.Client.Auth().Token().CreateWithContext(ctx, &vaultapi.TokenCreateRequest{Policies: access.TokenPolicies, TTL: "10m"})
	if err != nil {
		t.Fatal(err)
	}
	c, err := v.Client.Clone()
	if err != nil {
		t.Fatal(err)
	}
	c.SetToken(sec.Auth.ClientToken)
	return c
}

// e2e is a compiled job and the loopback store its fetch task reads.
type e2e struct {
	bin                      string
	srv                      *s3test.Server
	spec                     *jobspec.Spec
	job                      *api.Job
	fetch, model             *api.Task
	sum                      string
	accessKey, secretKey     string
	otherAccess, otherSecret string
}

func newE2E(t *testing.T) *e2e {
	t.Helper()
	x := &e2e{bin: buildSerai(t)}
	// Store keys exist only in the S3 server (and, in the Vault test, in Vault).
	x.accessKey, x.secretKey = "AKIA"+strings.ToUpper(randomHex(t, 8)), randomHex(t, 20)
	x.otherAccess, x.otherSecret = "AKIA"+strings.ToUpper(randomHex(t, 8)), randomHex(t, 20)
	x.srv = s3test.New(t, x.accessKey, x.secretKey)
	x.srv.AddKey(x.otherAccess, x.otherSecret)
	x.srv.Bucket(t, "models")
	var art []byte
	art, x.sum = modelTarGz(t, map[string]string{"model.json": `{"trees": 100}`, "code/inference.py": "def predict(x): return x\n"})
	x.srv.Put(t, "models", "churn/v1/model.tar.gz", bytes.NewReader(art), int64(len(art)))

	var diags hcl.Diagnostics
	x.spec, diags = jobspec.Parse("e2e.hcl", []byte(fmt.Sprintf(e2eSpec, x.srv.URL, x.srv.URL, x.sum)))
	if diags.HasErrors() {
		t.Fatalf("spec: %s", diags.Error())
	}
	var err error
	x.job, err = scheduler.Compile(x.spec, "churn", 1, scheduler.Options{SeraiBinary: x.bin})
	if err != nil {
		t.Fatalf("compile: %v", err)
	}
	x.fetch = findTask(t, x.job, scheduler.FetchTaskName)
	x.model = findTask(t, x.job, scheduler.ModelTaskName)
	if cmd := x.fetch.Config["command"]; cmd != x.bin {
		t.Fatalf("fetch task command = %v, want the serai binary", cmd)
	}
	return x
}

// env is the fetch task's environment as Nomad would build it: the job's
// env with ${NOMAD_ALLOC_DIR} resolved, plus what the template rendered.
func (x *e2e) env(allocDir string, rendered map[string]string) map[string]string {
	env := map[string]string{}
	for k, val := range x.fetch.Env {
		env[k] = strings.ReplaceAll(val, "${NOMAD_ALLOC_DIR}", allocDir)
	}
	for k, val := range rendered {
		env[k] = val
	}
	return env
}

func (x *e2e) args() []string { return x.fetch.Config["args"].([]string) }

// runFetch runs the fetch task in a fresh alloc dir and checks it installed
// the model without printing a credential.
func (x *e2e) runFetch(t *testing.T, rendered map[string]string) string {
	t.Helper()
	allocDir := filepath.Join(t.TempDir(), "alloc")
	if err := os.MkdirAll(filepath.Join(allocDir, "data"), 0o755); err != nil {
		t.Fatal(err)
	}
	env := x.env(allocDir, rendered)
	modelDir := env["SERAI_MODEL_DIR"]
	if modelDir != filepath.Join(allocDir, "data", "model") {
		t.Fatalf("SERAI_MODEL_DIR = %q", modelDir)
	}
	r := runSerai(t, x.bin, env, x.args()...)
	t.Logf("fetch task output:\n%s", r.stderr)
	if r.code != 0 {
		t.Fatalf("fetch task exited %d", r.code)
	}
	if b, err := os.ReadFile(filepath.Join(modelDir, "model.json")); err != nil || string(b) != `{"trees": 100}` {
		t.Errorf("model.json = %q, %v", b, err)
	}
	noSecrets(t, "the fetch task's output", r.stdout+r.stderr, x.secretKey, x.accessKey)
	return allocDir
}

// checkModelTaskIsolation: the model server gets no credentials, no Vault
// token and no identity for Vault — not in its env, its config, or the
// files of the alloc dir it reads the model from.
func (x *e2e) checkModelTaskIsolation(t *testing.T, allocDir string, secrets ...string) {
	t.Helper()
	if x.model.Vault != nil || len(x.model.Templates) != 0 {
		t.Errorf("model task has a vault block or templates: %+v %+v", x.model.Vault, x.model.Templates)
	}
	for _, id := range x.model.Identities {
		if slices.Contains(id.Audience, policies.WorkloadAudience) {
			t.Errorf("model task has a workload identity for Vault: %+v", id)
		}
	}
	for k, val := range x.model.Env {
		if strings.HasPrefix(k, "AWS_") || strings.HasPrefix(k, "VAULT_") {
			t.Errorf("model task env has %s", k)
		}
		noSecrets(t, "model task env "+k, val, secrets...)
	}
	noSecrets(t, "the compiled job", fmt.Sprintf("%#v", x.job)+*x.fetch.Templates[0].EmbeddedTmpl, secrets...)
	if v := x.fetch.Vault; v == nil || v.Env == nil || *v.Env || v.DisableFile == nil || !*v.DisableFile {
		t.Errorf("the fetch task's Vault token would be exposed as VAULT_TOKEN or secrets/vault_token: %+v", v)
	}
	if tp := x.fetch.Templates[0]; *tp.DestPath != scheduler.StoreEnvFile || !*tp.Envvars {
		t.Errorf("store keys are rendered to %s (env %t), want the fetch task's own %s", *tp.DestPath, *tp.Envvars, scheduler.StoreEnvFile)
	}
	filesWithout(t, allocDir, secrets...)
}

// TestCompiledFetchTask runs the compiled job's fetch task as a plain
// process with the keys injected as the template would render them (no
// Vault needed, so it runs everywhere), checks the model task's isolation,
// and that the negative cases fail closed through the binary.
func TestCompiledFetchTask(t *testing.T) {
	x := newE2E(t)
	creds := map[string]string{"AWS_ACCESS_KEY_ID": x.accessKey, "AWS_SECRET_ACCESS_KEY": x.secretKey}
	allocDir := x.runFetch(t, creds)
	x.checkModelTaskIsolation(t, allocDir, x.secretKey, x.accessKey, x.otherSecret)

	// Each exits 1 with an actionable message and leaves no model behind.
	for name, tc := range map[string]struct {
		change func(map[string]string)
		want   string
	}{
		"wrong credentials": {func(e map[string]string) { e["AWS_SECRET_ACCESS_KEY"] = x.otherSecret }, "access denied"},
		"no credentials": {func(e map[string]string) {
			delete(e, "AWS_ACCESS_KEY_ID")
			delete(e, "AWS_SECRET_ACCESS_KEY")
		}, "anonymous"},
		"checksum mismatch": {func(e map[string]string) { e["SERAI_MODEL_SHA256"] = strings.Repeat("0", 64) }, x.sum},
		"no such key":       {func(e map[string]string) { e["SERAI_MODEL_URL"] = "s3://models/churn/v9/model.tar.gz" }, "no such key"},
	} {
		t.Run(name, func(t *testing.T) {
			allocDir := filepath.Join(t.TempDir(), "alloc")
			e := x.env(allocDir, creds)
			tc.change(e)
			r := runSerai(t, x.bin, e, x.args()...)
			if r.code != 1 || !strings.Contains(r.stderr, tc.want) {
				t.Errorf("exit %d, stderr:\n%s\nwant exit 1 mentioning %q", r.code, r.stderr, tc.want)
			}
			if _, err := os.Stat(e["SERAI_MODEL_DIR"]); !os.IsNotExist(err) {
				t.Errorf("model dir exists after a failed fetch: %v", err)
			}
			noSecrets(t, "the failed fetch's output", r.stdout+r.stderr, x.secretKey, x.accessKey, x.otherSecret)
		})
	}
}

// TestCompiledFetchTaskEndToEnd is the "done means" with real
// Vault: the store keys live only in Vault, the server-side writer creates
// the models' policies and roles, the compiled job's own template is
// rendered with a token holding exactly the model's role policies, and the
// fetch task runs as a plain process on that env. Another model's token
// cannot render the template (403).
func TestCompiledFetchTaskEndToEnd(t *testing.T) {
	v := testagents.StartVault(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	x := newE2E(t)

	// The JWT method as `serai setup vault` leaves it; logging in through it
	// is tested in policies, so its keys do not matter here.
	if err := v.Client.Sys().EnableAuthWithOptionsWithContext(ctx, policies.JWTAuthMount, &vaultapi.EnableAuthOptions{Type: "jwt"}); err != nil {
		t.Fatal(err)
	}
	w := policies.NewVaultWriter(v.Client)
	for name, keys := range map[string][2]string{"minio-main": {x.accessKey, x.secretKey}, "other-store": {x.otherAccess, x.otherSecret}} {
		path := x.spec.ArtifactStores[name].CredentialPath()
		if _, err := v.Client.Logical().WriteWithContext(ctx, path, map[string]any{"data": map[string]any{"access_key_id": keys[0], "secret_access_key": keys[1]}}); err != nil {
			t.Fatalf("storing %s keys at %s: %v", name, path, err)
		}
	}
	storeOf := func(m string) policies.StoreCredentials {
		s := x.spec.ArtifactStores[x.spec.Models[m].ArtifactStore]
		sc := policies.StoreCredentials{Store: s.Name}
		if s.Vault != nil {
			sc.KVMount, sc.KVPath, sc.AWSMount, sc.AWSRole = s.Vault.KVMount, s.Vault.KVPath, s.Vault.AWSMount, s.Vault.AWSRole
		}
		return sc
	}
	if err := w.EnsureModel(ctx, "churn-v1", storeOf("churn-v1"), []string{"churn"}); err != nil {
		t.Fatal(err)
	}
	if err := w.EnsureModel(ctx, "other-v1", storeOf("other-v1"), []string{"other"}); err != nil {
		t.Fatal(err)
	}
	if x.fetch.Vault == nil || x.fetch.Vault.Role != policies.RoleName("churn-v1") {
		t.Fatalf("fetch task's vault block = %+v, want role %s", x.fetch.Vault, policies.RoleName("churn-v1"))
	}

	tmpl := *x.fetch.Templates[0].EmbeddedTmpl
	creds, err := renderTemplate(ctx, tmpl, tokenFor(ctx, t, v, w, "churn-v1"))
	if err != nil {
		t.Fatalf("rendering the fetch template with churn-v1's token: %v", err)
	}
	if creds["AWS_ACCESS_KEY_ID"] != x.accessKey || creds["AWS_SECRET_ACCESS_KEY"] != x.secretKey {
		t.Fatalf("template rendered %d variables, not the store's keys", len(creds))
	}
	if _, err := renderTemplate(ctx, tmpl, tokenFor(ctx, t, v, w, "other-v1")); err == nil || !strings.Contains(err.Error(), "403") {
		t.Errorf("other-v1's token rendering churn-v1's template: err = %v, want a 403", err)
	}

	allocDir := x.runFetch(t, creds)
	x.checkModelTaskIsolation(t, allocDir, x.secretKey, x.accessKey, x.otherSecret, v.Token)
}
