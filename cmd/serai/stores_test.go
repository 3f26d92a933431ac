package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/seraihq/serai/server/api"
	"github.com/seraihq/serai/server/records"
)

// TestStoreCommands: an operator (here the caller of a server without
// authentication) puts, lists, describes and deletes stores with the CLI;
// a stores file holds artifact_store blocks only.
func TestStoreCommands(t *testing.T) {
	addr := serveAPI(t, records.NewMemKV())
	dir := t.TempDir()
	cli := func(args ...string) (int, string, string) {
		t.Helper()
		return runCLI(t, append(args[:2:2], append([]string{"--addr", addr}, args[2:]...)...)...)
	}
	f := writeSpec(t, dir, "stores.hcl", `
artifact_store "team-a" {
  endpoint           = "http://127.0.0.1:9000"
  path_style         = true
  allowed_principals = ["AKIATEAMA0000000001"]
  vault {
    kv_path = "teams/a/store"
  }
}
artifact_store "plain" {}
`)
	if code, out, errs := cli("store", "put", f); code != exitOK || !strings.Contains(out, `artifact store "team-a" created`) || !strings.Contains(out, `artifact store "plain" created`) {
		t.Fatalf("put: exit %d\n%s%s", code, out, errs)
	}
	if code, out, errs := cli("store", "put", f); code != exitOK || !strings.Contains(out, `artifact store "team-a" replaced`) {
		t.Fatalf("put again: exit %d\n%s%s", code, out, errs)
	}
	code, out, errs := cli("store", "describe", "team-a")
	if code != exitOK || !strings.Contains(out, "Vault secret/teams/a/store") || !strings.Contains(out, "AKIATEAMA0000000001") || !strings.Contains(out, "http://127.0.0.1:9000") {
		t.Fatalf("describe: exit %d\n%s%s", code, out, errs)
	}
	code, out, errs = cli("store", "list")
	if code != exitOK || !strings.Contains(out, "plain\n") || !strings.Contains(out, "operators only") || !strings.Contains(out, "secret/serai/stores/plain") {
		t.Fatalf("list: exit %d\n%s%s", code, out, errs)
	}
	if code, out, errs := cli("store", "delete", "plain"); code != exitOK || !strings.Contains(out, "deleted") {
		t.Fatalf("delete: exit %d\n%s%s", code, out, errs)
	}
	if code, _, errs := cli("store", "describe", "plain"); code == exitOK || !strings.Contains(errs, `artifact store "plain" does not exist`) {
		t.Fatalf("describe deleted: exit %d\n%s", code, errs)
	}
	bad := writeSpec(t, dir, "bad.hcl", "model \"m\" {\n  command = \"/x\"\n}\n")
	if code, _, errs := cli("store", "put", bad); code != exitUsage || !strings.Contains(errs, "artifact_store blocks only") {
		t.Fatalf("put of a model: exit %d\n%s", code, errs)
	}
}

// TestStoresFlagFile: serai server --stores puts the file's stores as an
// operator even when every API caller must sign (and none is an
// operator), and refuses a file with other blocks.
func TestStoresFlagFile(t *testing.T) {
	dir := t.TempDir()
	keys := filepath.Join(dir, "keys")
	if err := os.WriteFile(keys, []byte("AKIAUSER00000000001 user-secret-0123456789\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	kv := records.NewMemKV()
	h, err := api.New(api.Config{Store: records.Store{KV: kv}, SigV4KeyFile: keys})
	if err != nil {
		t.Fatal(err)
	}
	f := writeSpec(t, dir, "stores.hcl", "artifact_store \"s\" {\n  allowed_principals = [\"*\"]\n}\n")
	if err := putStoresFile(context.Background(), h, f); err != nil {
		t.Fatal(err)
	}
	var st records.ArtifactStore
	if _, err := (records.Store{KV: kv}).Get(context.Background(), records.KindStore, "s", &st); err != nil || len(st.AllowedPrincipals) != 1 {
		t.Fatalf("store s: %+v, %v", st, err)
	}
	bad := writeSpec(t, dir, "bad.hcl", "model \"m\" {\n  command = \"/x\"\n}\n")
	if err := putStoresFile(context.Background(), h, bad); err == nil || !strings.Contains(err.Error(), "artifact_store blocks only") {
		t.Fatalf("a file with a model: %v", err)
	}
}
