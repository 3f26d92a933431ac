package policies_test

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"math/big"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	vaultapi "github.com/hashicorp/vault/api"

	"github.com/seraihq/serai/internal/testagents"
	"github.com/seraihq/serai/policies"
)

// fakeNomad publishes a JWKS at /.well-known/jwks.json, as a Nomad server
// does, and signs workload identities with the matching key. Vault fetches
// the keys from it exactly as from Nomad, so the login path under test is
// the one production uses; only the issuer is ours.
type fakeNomad struct {
	URL string
	key *rsa.PrivateKey
}

func newFakeNomad(t *testing.T) *fakeNomad {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeNomad{key: key}
	b64 := base64.RawURLEncoding.EncodeToString
	jwks, _ := json.Marshal(map[string]any{"keys": []map[string]string{{
		"kty": "RSA", "use": "sig", "alg": "RS256", "kid": "serai-test",
		"n": b64(key.N.Bytes()), "e": b64(big.NewInt(int64(key.E)).Bytes()),
	}}})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/.well-known/jwks.json" {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(jwks)
	}))
	t.Cleanup(srv.Close)
	f.URL = srv.URL
	return f
}

// identity signs a token shaped like Nomad's workload identity for a task.
func (f *fakeNomad) identity(t *testing.T, job, task string, mutate func(map[string]any)) string {
	t.Helper()
	now := time.Now()
	claims := map[string]any{
		"aud":                 []string{policies.WorkloadAudience},
		"iat":                 now.Unix(),
		"nbf":                 now.Unix(),
		"exp":                 now.Add(time.Hour).Unix(),
		"sub":                 "global:default:" + job + ":g:" + task + ":vault_default",
		"nomad_namespace":     "default",
		"nomad_job_id":        job,
		"nomad_task":          task,
		"nomad_allocation_id": "5b2c8e4e-0000-4000-8000-000000000001",
	}
	if mutate != nil {
		mutate(claims)
	}
	enc := func(v any) string {
		b, _ := json.Marshal(v)
		return base64.RawURLEncoding.EncodeToString(b)
	}
	signing := enc(map[string]string{"alg": "RS256", "typ": "JWT", "kid": "serai-test"}) + "." + enc(claims)
	digest := sha256.Sum256([]byte(signing))
	sig, err := rsa.SignPKCS1v15(rand.Reader, f.key, crypto.SHA256, digest[:])
	if err != nil {
		t.Fatal(err)
	}
	return signing + "." + base64.RawURLEncoding.EncodeToString(sig)
}

// login exchanges a workload identity for a Vault token through the role.
func login(ctx context.Context, v *testagents.Vault, role, jwt string) (*vaultapi.Client, error) {
	s, err := v.Client.Logical().WriteWithContext(ctx, "auth/"+policies.JWTAuthMount+"/login", map[string]any{"role": role, "jwt": jwt})
	if err != nil {
		return nil, err
	}
	if s == nil || s.Auth == nil || s.Auth.ClientToken == "" {
		return nil, errors.New("login returned no token")
	}
	c, err := v.Client.Clone()
	if err != nil {
		return nil, err
	}
	c.SetToken(s.Auth.ClientToken)
	return c, nil
}

func status(err error) int {
	var re *vaultapi.ResponseError
	if errors.As(err, &re) {
		return re.StatusCode
	}
	return 0
}

func storeKeys(name string) map[string]any {
	return map[string]any{"access_key_id": "AKIA" + strings.ToUpper(name), "secret_access_key": "secret-of-" + name}
}

// TestVaultPoliciesAgainstRealServer writes the JWT auth method, two
// models' policies and roles into a real Vault (or OpenBao) dev server,
// reads them back, logs in the way a fetch task does, and checks that
// least privilege is really enforced: model A's token reads A's store keys
// and gets 403 for B's, the roles admit only their endpoints' fetch task,
// and removal takes access away.
func TestVaultPoliciesAgainstRealServer(t *testing.T) {
	v := testagents.StartVault(t)
	t.Logf("Vault-API server: %s (%s)", v.Binary, v.Addr)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	nomad := newFakeNomad(t)
	w := policies.NewVaultWriter(v.Client)

	// serai setup vault: plan, apply, and nothing left to do afterwards.
	settings := policies.JWTAuthSettings{NomadAddr: nomad.URL, KVMounts: []string{"secret"}}
	plan, err := w.PlanJWTAuth(ctx, settings)
	if err != nil {
		t.Fatalf("plan: %v", err)
	}
	t.Logf("plan on a fresh server:\n%s", plan)
	if len(plan.Changes) != 2 {
		t.Fatalf("plan has %d changes, want enable + configure", len(plan.Changes))
	}
	if err := w.ApplyJWTAuth(ctx, plan); err != nil {
		t.Fatalf("apply: %v", err)
	}
	if plan, err = w.PlanJWTAuth(ctx, settings); err != nil || !plan.Empty() {
		t.Fatalf("plan after apply = %v, %v; want no changes", plan, err)
	}

	kv := v.Client.KVv2("secret")
	for _, s := range []string{"store-a", "store-b"} {
		if _, err := kv.Put(ctx, "serai/stores/"+s, storeKeys(s)); err != nil {
			t.Fatalf("put %s keys: %v", s, err)
		}
	}
	if err := w.EnsureModel(ctx, "model-a", policies.KVStore("store-a"), []string{"ep-a"}); err != nil {
		t.Fatalf("ensure model-a: %v", err)
	}
	if err := w.EnsureModel(ctx, "model-b", policies.KVStore("store-b"), []string{"ep-b", "ep-shared"}); err != nil {
		t.Fatalf("ensure model-b: %v", err)
	}

	// Read back what Vault stored.
	got, err := w.ReadModel(ctx, "model-b")
	if err != nil {
		t.Fatal(err)
	}
	if !got.HasRole || !slices.Equal(got.JobIDs, []string{"serai-ep-b.g*", "serai-ep-shared.g*"}) ||
		!slices.Equal(got.Tasks, []string{"fetch-model"}) || !slices.Equal(got.TokenPolicies, []string{"serai-model-model-b"}) ||
		!slices.Equal(got.Audiences, []string{"vault.io"}) || !strings.Contains(got.Policy, `path "secret/data/serai/stores/store-b"`) {
		t.Errorf("model-b read back as %+v", got)
	}
	if models, err := w.ListModels(ctx); err != nil || !slices.Equal(models, []string{"model-a", "model-b"}) {
		t.Errorf("ListModels = %q, %v", models, err)
	}

	// A fetch task of endpoint ep-a, generation 3, logs in as model-a.
	tokA, err := login(ctx, v, "serai-model-model-a", nomad.identity(t, "serai-ep-a.g3", "fetch-model", nil))
	if err != nil {
		t.Fatalf("model-a login: %v", err)
	}
	s, err := tokA.KVv2("secret").Get(ctx, "serai/stores/store-a")
	if err != nil || s.Data["secret_access_key"] != "secret-of-store-a" {
		t.Fatalf("model-a reading its own store: %v, %v", s, err)
	}
	// ... and is refused B's keys, and everything else, with a real 403.
	for _, p := range []string{"secret/data/serai/stores/store-b", "secret/metadata/serai/stores/store-a", "sys/policies/acl/serai-model-model-b"} {
		_, err := tokA.Logical().ReadWithContext(ctx, p)
		if status(err) != http.StatusForbidden {
			t.Errorf("model-a token reading %s: err = %v, want 403", p, err)
		}
	}
	if _, err := tokA.Logical().WriteWithContext(ctx, "secret/data/serai/stores/store-a", map[string]any{"data": map[string]any{"x": "y"}}); status(err) != http.StatusForbidden {
		t.Errorf("model-a token writing its store keys: err = %v, want 403", err)
	}
	tokB, err := login(ctx, v, "serai-model-model-b", nomad.identity(t, "serai-ep-shared.g1", "fetch-model", nil))
	if err != nil {
		t.Fatalf("model-b login: %v", err)
	}
	if _, err := tokB.Logical().ReadWithContext(ctx, "secret/data/serai/stores/store-a"); status(err) != http.StatusForbidden {
		t.Errorf("model-b token reading store-a: err = %v, want 403", err)
	}

	// The roles admit only their endpoints' fetch task with the right audience.
	for name, jwt := range map[string]string{
		"another endpoint's job": nomad.identity(t, "serai-ep-b.g1", "fetch-model", nil),
		"the model task":         nomad.identity(t, "serai-ep-a.g1", "model", nil),
		"a job outside serai":    nomad.identity(t, "ep-a.g1", "fetch-model", nil),
		"a look-alike endpoint":  nomad.identity(t, "serai-ep-a-gold.g1", "fetch-model", nil),
		"wrong audience":         nomad.identity(t, "serai-ep-a.g1", "fetch-model", func(c map[string]any) { c["aud"] = []string{"consul.io"} }),
		"expired":                nomad.identity(t, "serai-ep-a.g1", "fetch-model", func(c map[string]any) { c["exp"] = time.Now().Add(-time.Hour).Unix() }),
	} {
		_, err := login(ctx, v, "serai-model-model-a", jwt)
		if err == nil {
			t.Errorf("%s logged in as model-a", name)
			continue
		}
		if st := status(err); st != http.StatusBadRequest && st != http.StatusForbidden {
			t.Errorf("%s: login error %v, want 400 or 403", name, err)
		}
		t.Logf("%s: refused: %s", name, strings.Join(strings.Fields(err.Error()), " "))
	}

	// The last endpoint stops using model-b: its role goes, logins fail.
	if err := w.EnsureModel(ctx, "model-b", policies.KVStore("store-b"), nil); err != nil {
		t.Fatal(err)
	}
	if _, err := login(ctx, v, "serai-model-model-b", nomad.identity(t, "serai-ep-b.g1", "fetch-model", nil)); err == nil {
		t.Error("login as model-b still works after its last endpoint went")
	}

	// Removing model-a removes its policy and role; the token it issued
	// loses access at once, since Vault resolves policies by name per request.
	if err := w.RemoveModel(ctx, "model-a"); err != nil {
		t.Fatal(err)
	}
	got, err = w.ReadModel(ctx, "model-a")
	if err != nil || got.HasRole || got.Policy != "" {
		t.Errorf("after RemoveModel: %+v, %v", got, err)
	}
	if _, err := tokA.KVv2("secret").Get(ctx, "serai/stores/store-a"); status(err) != http.StatusForbidden {
		t.Errorf("model-a's old token after removal: err = %v, want 403", err)
	}
	if _, err := login(ctx, v, "serai-model-model-a", nomad.identity(t, "serai-ep-a.g3", "fetch-model", nil)); err == nil {
		t.Error("login as model-a works after RemoveModel")
	}
	if err := w.RemoveModel(ctx, "model-a"); err != nil {
		t.Errorf("second RemoveModel: %v", err)
	}
	if models, _ := w.ListModels(ctx); !slices.Equal(models, []string{"model-b"}) {
		t.Errorf("ListModels after removal = %q", models)
	}
}

// TestVaultServerPolicySuffices runs the writer with a token holding only
// ServerPolicy, proving the policy serai documents for its server is enough
// (and that it cannot read store keys).
func TestVaultServerPolicySuffices(t *testing.T) {
	v := testagents.StartVault(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := v.Client.Sys().EnableAuthWithOptionsWithContext(ctx, policies.JWTAuthMount, &vaultapi.EnableAuthOptions{Type: "jwt"}); err != nil {
		t.Fatal(err)
	}
	if err := v.Client.Sys().PutPolicyWithContext(ctx, "serai-server", policies.ServerPolicy("")); err != nil {
		t.Fatal(err)
	}
	sec, err := v.Client.Auth().Token().CreateWithContext(ctx, &vaultapi.TokenCreateRequest{Policies: []string{"serai-server"}, TTL: "10m"})
	if err != nil {
		t.Fatal(err)
	}
	server, _ := v.Client.Clone()
	server.SetToken(sec.Auth.ClientToken)
	w := policies.NewVaultWriter(server)
	if err := w.EnsureModel(ctx, "m", policies.KVStore("s"), []string{"e"}); err != nil {
		t.Fatalf("EnsureModel with the server policy: %v", err)
	}
	if _, err := w.ReadModel(ctx, "m"); err != nil {
		t.Fatalf("ReadModel with the server policy: %v", err)
	}
	if _, err := w.ListModels(ctx); err != nil {
		t.Fatalf("ListModels with the server policy: %v", err)
	}
	if err := w.RemoveModel(ctx, "m"); err != nil {
		t.Fatalf("RemoveModel with the server policy: %v", err)
	}
	if _, err := v.Client.KVv2("secret").Put(ctx, "serai/stores/s", storeKeys("s")); err != nil {
		t.Fatal(err)
	}
	if _, err := server.Logical().ReadWithContext(ctx, "secret/data/serai/stores/s"); status(err) != http.StatusForbidden {
		t.Errorf("server token reading store keys: err = %v, want 403", err)
	}
	if _, err := server.Logical().WriteWithContext(ctx, "sys/policies/acl/not-serai", map[string]any{"policy": `path "*" { capabilities = ["sudo"] }`}); status(err) != http.StatusForbidden {
		t.Errorf("server token writing a non-serai policy: err = %v, want 403", err)
	}
}
