package policies

import (
	"context"
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"testing"

	vaultapi "github.com/hashicorp/vault/api"

	"github.com/seraihq/serai/jobspec"
)

// fakeVault is an in-memory Logical: enough to test the writer's decisions
// (what is written where, what is never written). Real enforcement is
// tested against a real server in vault_integration_test.go.
type fakeVault struct {
	data   map[string]map[string]any
	writes []string
}

func newFakeVault() *fakeVault { return &fakeVault{data: map[string]map[string]any{}} }

func (f *fakeVault) ReadWithContext(_ context.Context, path string) (*vaultapi.Secret, error) {
	d, ok := f.data[path]
	if !ok {
		return nil, nil
	}
	// Round-trip through JSON like the real client, so []string becomes []any.
	b, _ := json.Marshal(d)
	var out map[string]any
	_ = json.Unmarshal(b, &out)
	return &vaultapi.Secret{Data: out}, nil
}

func (f *fakeVault) ListWithContext(_ context.Context, path string) (*vaultapi.Secret, error) {
	var keys []any
	for p := range f.data {
		if k, ok := strings.CutPrefix(p, path+"/"); ok {
			keys = append(keys, k)
		}
	}
	return &vaultapi.Secret{Data: map[string]any{"keys": keys}}, nil
}

func (f *fakeVault) WriteWithContext(_ context.Context, path string, data map[string]any) (*vaultapi.Secret, error) {
	f.writes = append(f.writes, path)
	f.data[path] = data
	return nil, nil
}

func (f *fakeVault) DeleteWithContext(_ context.Context, path string) (*vaultapi.Secret, error) {
	if _, ok := f.data[path]; !ok {
		return nil, &vaultapi.ResponseError{StatusCode: http.StatusNotFound}
	}
	delete(f.data, path)
	return nil, nil
}

func TestModelPolicyGrantsExactlyTheStorePath(t *testing.T) {
	p, err := ModelPolicy("churn", KVStore("minio-main"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(p, `path "secret/data/serai/stores/minio-main" {`) || strings.Count(p, "path ") != 1 || !strings.Contains(p, `capabilities = ["read"]`) {
		t.Errorf("policy:\n%s", p)
	}
	p, err = ModelPolicy("churn", StoreCredentials{Store: "aws", AWSMount: "aws", AWSRole: "models-ro"})
	if err != nil || !strings.Contains(p, `path "aws/creds/models-ro"`) {
		t.Errorf("aws policy = %q, %v", p, err)
	}
	p, err = ModelPolicy("churn", StoreCredentials{Store: "s", KVMount: "kv2", KVPath: "team/a/store"})
	if err != nil || !strings.Contains(p, `path "kv2/data/team/a/store"`) {
		t.Errorf("custom kv policy = %q, %v", p, err)
	}
}

// TestStorePathMatchesSpec: the policy must grant exactly the path the
// compiler's template reads, for every way a store can be declared.
func TestStorePathMatchesSpec(t *testing.T) {
	for _, v := range []*jobspec.StoreVault{
		nil,
		{},
		{KVMount: "kv"},
		{KVPath: "team/stores/x"},
		{KVMount: "kv", KVPath: "p"},
		{AWSRole: "models-ro"},
		{AWSMount: "aws-prod", AWSRole: "models-ro"},
	} {
		spec := &jobspec.ArtifactStore{Name: "minio-main", Vault: v}
		sc := StoreCredentials{Store: spec.Name}
		if v != nil {
			sc.KVMount, sc.KVPath, sc.AWSMount, sc.AWSRole = v.KVMount, v.KVPath, v.AWSMount, v.AWSRole
		}
		got, err := sc.Path()
		if err != nil || got != spec.CredentialPath() {
			t.Errorf("vault %+v: policy path %q (%v), template reads %q", v, got, err, spec.CredentialPath())
		}
	}
}

func TestModelPolicyRejectsGlobsAndInjection(t *testing.T) {
	for name, s := range map[string]StoreCredentials{
		"glob star":    {KVPath: "serai/stores/*"},
		"glob plus":    {KVPath: "serai/+/x"},
		"quote":        {KVPath: `serai" { capabilities = ["sudo"] } path "x`},
		"dotdot":       {KVPath: "serai/../sys"},
		"empty part":   {KVPath: "serai//x"},
		"newline":      {KVPath: "a\npath"},
		"both sources": {KVPath: "a", AWSMount: "aws", AWSRole: "r"},
		"aws half":     {Store: "s", AWSMount: "aws"},
		"aws role /":   {AWSMount: "aws", AWSRole: "r/x"},
		"no name":      {},
		"bad name":     {Store: "a/../b"},
	} {
		if p, err := ModelPolicy("m", s); err == nil {
			t.Errorf("%s: accepted, policy:\n%s", name, p)
		}
	}
	if _, err := ModelPolicy("bad name", KVStore("s")); err == nil {
		t.Error("model name with a space accepted")
	}
}

func TestModelRoleBindsJobsTaskAndPolicy(t *testing.T) {
	r, err := ModelRole("churn", []string{"web", "batch", "web"}, RoleOptions{})
	if err != nil {
		t.Fatal(err)
	}
	claims := r["bound_claims"].(map[string]any)
	if got := claims["nomad_job_id"].([]string); !slices.Equal(got, []string{"serai-batch.g*", "serai-web.g*"}) {
		t.Errorf("job ids = %q", got)
	}
	if got := claims["nomad_task"].([]string); !slices.Equal(got, []string{"fetch-model"}) {
		t.Errorf("task = %q", got)
	}
	// Every role binds the namespace: Nomad's default unless told.
	if got, _ := claims["nomad_namespace"].([]string); !slices.Equal(got, []string{"default"}) {
		t.Errorf("namespace = %q, want [default]", got)
	}
	if got := r["token_policies"].([]string); !slices.Equal(got, []string{"serai-model-churn"}) {
		t.Errorf("token policies = %q", got)
	}
	if got := r["bound_audiences"].([]string); !slices.Equal(got, []string{"vault.io"}) {
		t.Errorf("audiences = %q", got)
	}
	if r["bound_claims_type"] != "glob" || r["role_type"] != "jwt" {
		t.Errorf("role = %v", r)
	}
	r, _ = ModelRole("churn", []string{"web"}, RoleOptions{Namespace: "ml"})
	if got := r["bound_claims"].(map[string]any)["nomad_namespace"].([]string); !slices.Equal(got, []string{"ml"}) {
		t.Errorf("namespace = %q", got)
	}
	if _, err := ModelRole("churn", nil, RoleOptions{}); err == nil {
		t.Error("a role with no endpoint binding (admitting any workload) was produced")
	}
	if _, err := ModelRole("churn", []string{"*"}, RoleOptions{}); err == nil {
		t.Error("endpoint name * accepted: it would widen the glob to every job")
	}
	for _, ns := range []string{"*", "ml*", "a/b", "a b"} {
		if _, err := ModelRole("churn", []string{"web"}, RoleOptions{Namespace: ns}); err == nil {
			t.Errorf("namespace %q accepted: a glob or path would widen the binding", ns)
		}
	}
}

func TestEnsureAndRemoveModel(t *testing.T) {
	ctx := context.Background()
	fv := newFakeVault()
	w := &VaultWriter{Vault: fv}

	// A model no endpoint uses yet: policy only, never a role.
	if err := w.EnsureModel(ctx, "churn", KVStore("minio-main"), nil); err != nil {
		t.Fatal(err)
	}
	if _, ok := fv.data["auth/jwt-nomad/role/serai-model-churn"]; ok {
		t.Fatal("role written for a model without endpoints")
	}
	if _, ok := fv.data["sys/policies/acl/serai-model-churn"]; !ok {
		t.Fatal("policy not written")
	}

	if err := w.EnsureModel(ctx, "churn", KVStore("minio-main"), []string{"web"}); err != nil {
		t.Fatal(err)
	}
	got, err := w.ReadModel(ctx, "churn")
	if err != nil {
		t.Fatal(err)
	}
	if !got.HasRole || !slices.Equal(got.JobIDs, []string{"serai-web.g*"}) || !slices.Equal(got.Tasks, []string{"fetch-model"}) ||
		!slices.Equal(got.TokenPolicies, []string{"serai-model-churn"}) || !strings.Contains(got.Policy, "secret/data/serai/stores/minio-main") {
		t.Errorf("read back %+v", got)
	}
	if err := w.EnsureModel(ctx, "other", KVStore("b"), []string{"web"}); err != nil {
		t.Fatal(err)
	}
	if models, _ := w.ListModels(ctx); !slices.Equal(models, []string{"churn", "other"}) {
		t.Errorf("ListModels = %q", models)
	}

	// The last endpoint goes away: the role goes, the policy stays.
	if err := w.EnsureModel(ctx, "churn", KVStore("minio-main"), []string{}); err != nil {
		t.Fatal(err)
	}
	if got, _ := w.ReadModel(ctx, "churn"); got.HasRole || got.Policy == "" {
		t.Errorf("after unbinding: %+v", got)
	}

	if err := w.RemoveModel(ctx, "churn"); err != nil {
		t.Fatal(err)
	}
	if got, _ := w.ReadModel(ctx, "churn"); got.HasRole || got.Policy != "" {
		t.Errorf("after removal: %+v", got)
	}
	if err := w.RemoveModel(ctx, "churn"); err != nil {
		t.Errorf("removing twice: %v", err)
	}
	if _, ok := fv.data["sys/policies/acl/serai-model-other"]; !ok {
		t.Error("removing churn touched other's policy")
	}

	// Invalid input writes nothing.
	fv.writes = nil
	if err := w.EnsureModel(ctx, "m", StoreCredentials{KVPath: "x/*"}, []string{"web"}); err == nil || len(fv.writes) != 0 {
		t.Errorf("bad store: err=%v writes=%q", err, fv.writes)
	}
	if err := w.EnsureModel(ctx, "m", KVStore("s"), []string{"bad endpoint"}); err == nil || len(fv.writes) != 0 {
		t.Errorf("bad endpoint: err=%v writes=%q", err, fv.writes)
	}
}

func TestPlanJWTAuth(t *testing.T) {
	ctx := context.Background()
	fv := newFakeVault()
	fv.data["sys/auth"] = map[string]any{"token/": map[string]any{"type": "token"}}
	fv.data["sys/mounts"] = map[string]any{"secret/": map[string]any{"type": "kv", "options": map[string]any{"version": "2"}}}
	w := &VaultWriter{Vault: fv}
	want := JWTAuthSettings{NomadAddr: "http://127.0.0.1:4646/", KVMounts: []string{"secret", "kv1"}}

	plan, err := w.PlanJWTAuth(ctx, want)
	if err != nil {
		t.Fatal(err)
	}
	if len(plan.Changes) != 2 || plan.Changes[0].Path != "sys/auth/jwt-nomad" || plan.Changes[1].Path != "auth/jwt-nomad/config" {
		t.Fatalf("plan = %+v", plan)
	}
	if plan.Changes[1].Data["jwks_url"] != "http://127.0.0.1:4646/.well-known/jwks.json" {
		t.Errorf("jwks_url = %v", plan.Changes[1].Data["jwks_url"])
	}
	out := plan.String()
	t.Logf("plan:\n%s", out)
	if !strings.Contains(out, "secret/ is a KV v2 mount") || !strings.Contains(out, "no secrets engine at kv1/") {
		t.Errorf("plan does not report the KV checks")
	}
	if len(fv.writes) != 0 {
		t.Fatalf("planning wrote %q", fv.writes)
	}

	if err := w.ApplyJWTAuth(ctx, plan); err != nil {
		t.Fatal(err)
	}
	// The fake does not mount anything on sys/auth writes; do what Vault does.
	fv.data["sys/auth"]["jwt-nomad/"] = map[string]any{"type": "jwt"}
	plan, err = w.PlanJWTAuth(ctx, want)
	if err != nil {
		t.Fatal(err)
	}
	if !plan.Empty() {
		t.Errorf("plan after apply = %+v", plan)
	}

	fv.data["sys/auth"]["jwt-nomad/"] = map[string]any{"type": "userpass"}
	if _, err := w.PlanJWTAuth(ctx, want); err == nil {
		t.Error("a non-jwt method at jwt-nomad/ was accepted")
	}
	if _, err := w.PlanJWTAuth(ctx, JWTAuthSettings{}); err == nil {
		t.Error("empty Nomad address accepted")
	}
}

func TestServerPolicyCannotReadStores(t *testing.T) {
	p := ServerPolicy("")
	if strings.Contains(p, "secret/") || strings.Contains(p, "creds") || !strings.Contains(p, "auth/jwt-nomad/role/serai-model-*") {
		t.Errorf("server policy:\n%s", p)
	}
}
