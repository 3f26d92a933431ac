package api

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"

	"github.com/seraihq/serai/internal/sigv4"
	"github.com/seraihq/serai/server/records"
	"github.com/seraihq/serai/server/smapi"
)

// putStore writes an operator store record directly, as an operator's
// PutArtifactStore would.
func putStore(t testing.TB, s records.Store, st smapi.ArtifactStore, principals ...string) {
	t.Helper()
	rec := &records.ArtifactStore{Name: st.Name, CreationTime: time.Unix(0, 0).UTC(), Settings: st, AllowedPrincipals: principals}
	if err := s.Put(context.Background(), records.KindStore, st.Name, rec, 0); err != nil {
		t.Fatal(err)
	}
}

// operator posts one of serai's operator operations, unsigned (the
// server in env has no authentication, so its caller is an operator).
func (e *env) operator(op string, body string) result {
	req := httptest.NewRequest(http.MethodPost, "/", strings.NewReader(body))
	req.Header.Set("Content-Type", ContentType)
	req.Header.Set("X-Amz-Target", smapi.OperatorTargetPrefix+op)
	w := httptest.NewRecorder()
	e.h.ServeHTTP(w, req)
	return result{status: w.Code, body: w.Body.Bytes(), header: w.Header()}
}

const (
	userA     = "AKIAUSERA0000000000A"
	userB     = "AKIAUSERB0000000000B"
	operatorK = "AKIAOPERATOR0000000X"
	secretOf  = "secret-of-"
)

// signedEnv is a server with SigV4 on: users A and B, one operator.
type signedEnv struct {
	t  *testing.T
	h  *Handler
	kv *records.MemKV
	s  records.Store
}

func newSignedEnv(t *testing.T, allowFile bool) *signedEnv {
	dir := t.TempDir()
	users := filepath.Join(dir, "users")
	ops := filepath.Join(dir, "operators")
	if err := os.WriteFile(users, []byte(userA+" "+secretOf+userA+"\n"+userB+" "+secretOf+userB+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(ops, []byte(operatorK+" "+secretOf+operatorK+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	kv := records.NewMemKV()
	h, err := New(Config{Store: records.Store{KV: kv}, Region: "eu-west-1", SigV4KeyFile: users, OperatorKeyFile: ops, AllowFileArtifacts: allowFile})
	if err != nil {
		t.Fatal(err)
	}
	return &signedEnv{t: t, h: h, kv: kv, s: records.Store{KV: kv}}
}

func (e *signedEnv) call(akid, target, body string) result {
	e.t.Helper()
	r := httptest.NewRequest(http.MethodPost, "http://serai.test/", strings.NewReader(body))
	r.Header.Set("Content-Type", ContentType)
	r.Header.Set("X-Amz-Target", target)
	creds := aws.Credentials{AccessKeyID: akid, SecretAccessKey: secretOf + akid}
	if err := v4.NewSigner().SignHTTP(context.Background(), creds, r, sigv4.PayloadHash([]byte(body)), SigV4Service, "eu-west-1", time.Now()); err != nil {
		e.t.Fatal(err)
	}
	w := httptest.NewRecorder()
	e.h.ServeHTTP(w, r)
	return result{status: w.Code, body: w.Body.Bytes(), header: w.Header()}
}

func (e *signedEnv) keys() []string {
	ps, err := e.kv.List(context.Background(), "")
	if err != nil {
		e.t.Fatal(err)
	}
	var out []string
	for _, p := range ps {
		out = append(out, p.Key)
	}
	return out
}

// TestStoreRefusals tries, as user A, every field of the API through
// which a model could reach store B's keys, and a file:// artifact; each
// is refused by name and writes nothing.
func TestStoreRefusals(t *testing.T) {
	e := newSignedEnv(t, false)
	putStore(t, e.s, smapi.ArtifactStore{Name: "store-a", Endpoint: "http://127.0.0.1:9000", PathStyle: true}, userA)
	putStore(t, e.s, smapi.ArtifactStore{Name: "store-b", Endpoint: "http://127.0.0.1:9001", PathStyle: true,
		Vault: &smapi.StoreVault{KVPath: "teams/b/store"}}, userB)
	before := e.keys()
	model := func(name, url, store string) string {
		return `{"ModelName":"` + name + `","PrimaryContainer":{"Image":"img:1","ModelDataUrl":"` + url + `"},"Serai":{"ArtifactStore":` + store + `}}`
	}
	for name, c := range map[string]struct {
		target, body, code, msg string
	}{
		"store B by name": {"SageMaker.CreateModel", model("m", "s3://b/k", `{"Name":"store-b"}`),
			smapi.ErrValidation, `artifact store "store-b" does not exist or this caller may not use it`},
		"a store that does not exist": {"SageMaker.CreateModel", model("m", "s3://b/k", `{"Name":"store-x"}`),
			smapi.ErrValidation, `artifact store "store-x" does not exist or this caller may not use it`},
		"store A with B's KV path": {"SageMaker.CreateModel", model("m", "s3://b/k", `{"Name":"store-a","Vault":{"KVPath":"teams/b/store"}}`),
			smapi.ErrValidation, "'serai.artifactStore.vault'"},
		"store A with an AWS role": {"SageMaker.CreateModel", model("m", "s3://b/k", `{"Name":"store-a","Vault":{"AWSRole":"b"}}`),
			smapi.ErrValidation, "'serai.artifactStore.vault'"},
		"store A with B's endpoint": {"SageMaker.CreateModel", model("m", "s3://b/k", `{"Name":"store-a","Endpoint":"http://127.0.0.1:9001"}`),
			smapi.ErrValidation, "'serai.artifactStore.endpoint'"},
		"a new store defined inline": {"SageMaker.CreateModel", model("m", "s3://b/k", `{"Name":"mine","Endpoint":"http://127.0.0.1:9001","Vault":{"KVPath":"teams/b/store"}}`),
			smapi.ErrValidation, "operator-owned"},
		"file:// at the fetch task's secrets": {"SageMaker.CreateModel", `{"ModelName":"m","PrimaryContainer":{"Image":"img:1","ModelDataUrl":"file:///alloc/../secrets/store.env"}}`,
			smapi.ErrValidation, "'primaryContainer.modelDataUrl'"},
		"FILE:// in capitals": {"SageMaker.CreateModel", `{"ModelName":"m","PrimaryContainer":{"Image":"img:1","ModelDataUrl":"FILE:///secrets/store.env"}}`,
			smapi.ErrValidation, "'primaryContainer.modelDataUrl'"},
		"https:// with store A": {"SageMaker.CreateModel", model("m", "https://example.test/m.tar.gz", `{"Name":"store-a"}`),
			smapi.ErrValidation, "'serai.artifactStore'"},
		"PutArtifactStore with a user key": {"Serai.PutArtifactStore", `{"ArtifactStore":{"Name":"store-b","Vault":{"KVPath":"teams/a/store"}},"AllowedPrincipals":["*"]}`,
			smapi.ErrAccessDenied, "PutArtifactStore is an operator operation"},
		"DeleteArtifactStore with a user key": {"Serai.DeleteArtifactStore", `{"Name":"store-b"}`,
			smapi.ErrAccessDenied, "DeleteArtifactStore is an operator operation"},
		"DescribeArtifactStore of B": {"Serai.DescribeArtifactStore", `{"Name":"store-b"}`,
			smapi.ErrValidation, `artifact store "store-b" does not exist or this caller may not use it`},
	} {
		t.Run(name, func(t *testing.T) {
			r := e.call(userA, c.target, c.body)
			if r.status == http.StatusOK || r.errType() != c.code || !strings.Contains(r.message(), c.msg) {
				t.Fatalf("%d %s: %s (want %s containing %q)", r.status, r.errType(), r.message(), c.code, c.msg)
			}
			if got := e.keys(); strings.Join(got, ",") != strings.Join(before, ",") {
				t.Fatalf("records changed: %v → %v", before, got)
			}
		})
	}
	// Data capture to store B, with a model A may use.
	e.call(userA, "SageMaker.CreateModel", model("ma", "s3://b/k", `{"Name":"store-a"}`))
	before = e.keys()
	cfg := func(store string) string {
		return `{"EndpointConfigName":"c","ProductionVariants":[{"VariantName":"v","ModelName":"ma","InstanceType":"ml.m5.large"}],` +
			`"DataCaptureConfig":{"DestinationS3Uri":"s3://b/capture","CaptureOptions":[{"CaptureMode":"Input"}]},"Serai":{"DataCaptureStore":` + store + `}}`
	}
	for name, c := range map[string]struct{ body, msg string }{
		"capture to store B":            {cfg(`{"Name":"store-b"}`), `artifact store "store-b" does not exist`},
		"capture with B's path":         {cfg(`{"Name":"store-a","Vault":{"KVPath":"teams/b/store"}}`), "'serai.dataCaptureStore.vault'"},
		"capture to the default (none)": {strings.Replace(cfg(`{"Name":"store-a"}`), `,"Serai":{"DataCaptureStore":{"Name":"store-a"}}`, "", 1), `artifact store "default" does not exist`},
	} {
		t.Run(name, func(t *testing.T) {
			r := e.call(userA, "SageMaker.CreateEndpointConfig", c.body)
			if r.status == http.StatusOK || !strings.Contains(r.message(), c.msg) {
				t.Fatalf("%d %s: %s (want %q)", r.status, r.errType(), r.message(), c.msg)
			}
			if got := e.keys(); strings.Join(got, ",") != strings.Join(before, ",") {
				t.Fatalf("records changed: %v → %v", before, got)
			}
		})
	}
	// What is allowed: A's own store, and B's by the operator.
	if r := e.call(userA, "SageMaker.CreateEndpointConfig", cfg(`{"Name":"store-a"}`)); r.status != http.StatusOK {
		t.Fatalf("capture to store A: %s", r.body)
	}
	if r := e.call(operatorK, "SageMaker.CreateModel", model("mb", "s3://b/k", `{"Name":"store-b"}`)); r.status != http.StatusOK {
		t.Fatalf("operator naming store B: %s", r.body)
	}
	if r := e.call(userB, "SageMaker.CreateModel", model("mb2", "s3://b/k", `{"Name":"store-b"}`)); r.status != http.StatusOK {
		t.Fatalf("user B naming store B: %s", r.body)
	}
	var rec records.Model
	if _, err := e.s.Get(context.Background(), records.KindModel, "mb2", &rec); err != nil || rec.Principal != userB {
		t.Fatalf("model mb2 principal %q, %v", rec.Principal, err)
	}
}

// TestOperatorStoreLifecycle: an operator puts, describes, lists,
// replaces and deletes a store; users see only the stores they may name;
// a store a model names cannot be deleted.
func TestOperatorStoreLifecycle(t *testing.T) {
	e := newSignedEnv(t, true)
	put := `{"ArtifactStore":{"Name":"shared","Endpoint":"http://127.0.0.1:9000","PathStyle":true},"AllowedPrincipals":["` + userA + `"]}`
	r := e.call(operatorK, "Serai.PutArtifactStore", put)
	var out smapi.PutArtifactStoreOutput
	r.decode(t, &out)
	if r.status != http.StatusOK || !out.Created {
		t.Fatalf("put: %d %s", r.status, r.body)
	}
	r = e.call(operatorK, "Serai.PutArtifactStore", `{"ArtifactStore":{"Name":"ops-only","Vault":{"AWSRole":"reader"}}}`)
	if r.status != http.StatusOK {
		t.Fatalf("put ops-only: %s", r.body)
	}
	for _, bad := range []struct{ body, msg string }{
		{`{"ArtifactStore":{"Name":"x","Vault":{"KVPath":"a/*"}}}`, "kv_path"},
		{`{"ArtifactStore":{"Name":"x","Endpoint":"ftp://h"}}`, "endpoint"},
		{`{"ArtifactStore":{"Name":"x"},"AllowedPrincipals":["a b"]}`, "allowedPrincipals.1.member"},
		{`{"ArtifactStore":{"Name":"bad name"}}`, "artifactStore.name"},
	} {
		if r := e.call(operatorK, "Serai.PutArtifactStore", bad.body); r.status == http.StatusOK || !strings.Contains(r.message(), bad.msg) {
			t.Errorf("put %s: %d %s (want %q)", bad.body, r.status, r.message(), bad.msg)
		}
	}
	var list smapi.ListArtifactStoresOutput
	e.call(userA, "Serai.ListArtifactStores", `{}`).decode(t, &list)
	if len(list.ArtifactStores) != 1 || list.ArtifactStores[0].ArtifactStore.Name != "shared" {
		t.Fatalf("user A lists %+v", list)
	}
	list = smapi.ListArtifactStoresOutput{}
	e.call(userB, "Serai.ListArtifactStores", `{}`).decode(t, &list)
	if len(list.ArtifactStores) != 0 {
		t.Fatalf("user B lists %+v", list)
	}
	list = smapi.ListArtifactStoresOutput{}
	e.call(operatorK, "Serai.ListArtifactStores", `{}`).decode(t, &list)
	if len(list.ArtifactStores) != 2 {
		t.Fatalf("operator lists %+v", list)
	}
	if r := e.call(userA, "SageMaker.CreateModel", `{"ModelName":"m","PrimaryContainer":{"Image":"i","ModelDataUrl":"s3://b/k"},"Serai":{"ArtifactStore":{"Name":"shared"}}}`); r.status != http.StatusOK {
		t.Fatalf("create model: %s", r.body)
	}
	// With --allow-file-artifacts a file:// model is accepted, with no store.
	if r := e.call(userA, "SageMaker.CreateModel", `{"ModelName":"f","PrimaryContainer":{"Image":"i","ModelDataUrl":"file:///models/m.tar.gz"}}`); r.status != http.StatusOK {
		t.Fatalf("file model with --allow-file-artifacts: %s", r.body)
	}
	if r := e.call(operatorK, "Serai.DeleteArtifactStore", `{"Name":"shared"}`); r.errType() != smapi.ErrResourceInUse || !strings.Contains(r.message(), `model "m"`) {
		t.Fatalf("delete in use: %d %s", r.status, r.body)
	}
	// Replacing keeps the creation time and takes the new settings.
	r = e.call(operatorK, "Serai.PutArtifactStore", `{"ArtifactStore":{"Name":"shared","Endpoint":"http://127.0.0.1:9002"},"AllowedPrincipals":["*"]}`)
	out = smapi.PutArtifactStoreOutput{}
	r.decode(t, &out)
	if out.Created {
		t.Fatal("replace reported created")
	}
	var d smapi.DescribeArtifactStoreOutput
	e.call(userB, "Serai.DescribeArtifactStore", `{"Name":"shared"}`).decode(t, &d)
	if d.ArtifactStore.Endpoint != "http://127.0.0.1:9002" || len(d.AllowedPrincipals) != 1 {
		t.Fatalf("describe after replace: %+v", d)
	}
	e.call(userA, "SageMaker.DeleteModel", `{"ModelName":"m"}`)
	if r := e.call(operatorK, "Serai.DeleteArtifactStore", `{"Name":"shared"}`); r.status != http.StatusOK {
		t.Fatalf("delete: %s", r.body)
	}
	if r := e.call(userA, "Serai.NoSuchThing", `{}`); r.errType() != smapi.ErrUnknownOperation {
		t.Fatalf("unknown operator op: %s", r.body)
	}
}

// TestOperatorKeysReload: the operator file is re-read with the SigV4
// keys; a key removed from it is a user key (or unknown) at once.
func TestOperatorKeysReload(t *testing.T) {
	e := newSignedEnv(t, false)
	body := `{"ArtifactStore":{"Name":"s"}}`
	if r := e.call(operatorK, "Serai.PutArtifactStore", body); r.status != http.StatusOK {
		t.Fatal(string(r.body))
	}
	ops := e.h.cfg.OperatorKeyFile
	if err := os.WriteFile(ops, []byte(userA+" "+secretOf+userA+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := e.h.ReloadSigV4Keys(); err != nil {
		t.Fatal(err)
	}
	if r := e.call(operatorK, "Serai.PutArtifactStore", body); r.errType() != smapi.ErrUnrecognizedClient {
		t.Fatalf("old operator key: %s", r.body)
	}
	if r := e.call(userA, "Serai.PutArtifactStore", body); r.status != http.StatusOK {
		t.Fatalf("promoted user A: %s", r.body)
	}
	// One ID with two secrets is refused, and the keys in use stay.
	if err := os.WriteFile(ops, []byte(userB+" other\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := e.h.ReloadSigV4Keys(); err == nil {
		t.Fatal("conflicting secrets accepted")
	}
	if r := e.call(userA, "Serai.PutArtifactStore", body); r.status != http.StatusOK {
		t.Fatalf("after a refused reload: %s", r.body)
	}
}

// Without authentication (loopback only), the caller is the operator.
func TestUnauthenticatedCallerIsOperator(t *testing.T) {
	e := newEnv(t)
	if r := e.operator("PutArtifactStore", `{"ArtifactStore":{"Name":"dev","Endpoint":"http://127.0.0.1:8333","PathStyle":true}}`); r.status != http.StatusOK {
		t.Fatalf("%s", r.body)
	}
	e.ok("CreateModel", `{"ModelName":"m","PrimaryContainer":{"Image":"i","ModelDataUrl":"s3://b/k"},"Serai":{"ArtifactStore":{"Name":"dev"}}}`)
	if !bytes.Contains(e.operator("ListArtifactStores", `{}`).body, []byte(`"dev"`)) {
		t.Fatal("list")
	}
}
