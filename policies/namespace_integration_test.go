package policies_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	nomadapi "github.com/hashicorp/nomad/api"

	"github.com/seraihq/serai/contract"
	"github.com/seraihq/serai/internal/testagents"
	"github.com/seraihq/serai/policies"
)

// fetchLikeJob is a job shaped as the compiler shapes a generation's fetch
// task (same job ID, task name, Vault role, identity and credential
// template), in namespace ns. Its task only waits, so what it holds is
// what Nomad's template runner rendered with the identity Vault gave it.
func fetchLikeJob(ns, jobID, model, credPath string) *nomadapi.Job {
	job := nomadapi.NewServiceJob(jobID, jobID, "global", 50)
	job.Namespace = &ns
	job.Datacenters = []string{"*"}
	tmpl := fmt.Sprintf(`{{ with secret %q }}
AWS_ACCESS_KEY_ID={{ .Data.data.access_key_id }}
AWS_SECRET_ACCESS_KEY={{ .Data.data.secret_access_key }}
{{ end }}
`, credPath)
	task := nomadapi.NewTask(policies.FetchTask, "raw_exec").
		SetConfig("command", "/bin/sh").
		SetConfig("args", []string{"-c", "sleep 600"})
	task.Vault = &nomadapi.Vault{Role: policies.RoleName(model), ChangeMode: ptr("noop"), Env: ptr(false), DisableFile: ptr(true)}
	task.Identities = []*nomadapi.WorkloadIdentity{{Name: "vault_default", Audience: []string{policies.WorkloadAudience}, TTL: time.Hour}}
	task.Templates = []*nomadapi.Template{{EmbeddedTmpl: &tmpl, DestPath: ptr("secrets/store.env"), Envvars: ptr(true), ChangeMode: ptr("noop"), Perms: ptr("0400")}}
	task.Resources = &nomadapi.Resources{CPU: ptr(50), MemoryMB: ptr(32)}
	g := nomadapi.NewTaskGroup("v", 1).AddTask(task)
	g.RestartPolicy = &nomadapi.RestartPolicy{Attempts: ptr(0), Mode: ptr("fail")}
	g.ReschedulePolicy = &nomadapi.ReschedulePolicy{Attempts: ptr(0), Unlimited: ptr(false)}
	job.AddTaskGroup(g)
	return job
}

func ptr[T any](v T) *T { return &v }

// TestRoleRefusesOtherNamespace runs, on a real Nomad agent wired to real
// OpenBao, the job serai would run for a model (same job ID, task name,
// role and template) twice: in serai's namespace it renders the store's
// keys; in namespace "other" (job IDs are unique per namespace only, so
// anyone who may submit jobs there can pick serai's) Vault refuses the
// workload identity's login and the template never renders.
func TestRoleRefusesOtherNamespace(t *testing.T) {
	v := testagents.StartVault(t)
	n := testagents.StartNomad(t, testagents.NomadOptions{Vault: v})
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()

	const model, endpoint, secret = "ns-model", "ns-ep", "ns-secret-key-0123456789"
	creds := policies.KVStore("ns-store")
	path, err := creds.Path()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := v.Client.Logical().WriteWithContext(ctx, path, map[string]any{"data": map[string]any{"access_key_id": "AKIANS", "secret_access_key": secret}}); err != nil {
		t.Fatalf("storing keys at %s: %v", path, err)
	}
	w := policies.NewVaultWriter(v.Client)
	w.Mount = strings.TrimPrefix(testagents.JWTAuthPath, "auth/")
	w.Role = policies.RoleOptions{Namespace: "default"}
	if err := w.EnsureModel(ctx, model, creds, []string{endpoint}); err != nil {
		t.Fatal(err)
	}
	acc, err := w.ReadModel(ctx, model)
	if err != nil || len(acc.Namespaces) != 1 || acc.Namespaces[0] != "default" {
		t.Fatalf("role namespaces = %+v, %v", acc, err)
	}
	if _, err := n.Client.Namespaces().Register(&nomadapi.Namespace{Name: "other"}, (&nomadapi.WriteOptions{}).WithContext(ctx)); err != nil {
		t.Fatalf("creating namespace other: %v", err)
	}

	jobID := contract.JobID(endpoint, 1)
	run := func(ns string) *nomadapi.Allocation {
		t.Helper()
		if _, _, err := n.Client.Jobs().Register(fetchLikeJob(ns, jobID, model, path), (&nomadapi.WriteOptions{Namespace: ns}).WithContext(ctx)); err != nil {
			t.Fatalf("registering %s in %s: %v", jobID, ns, err)
		}
		var alloc *nomadapi.Allocation
		for ctx.Err() == nil {
			stubs, _, err := n.Client.Jobs().Allocations(jobID, true, (&nomadapi.QueryOptions{Namespace: ns}).WithContext(ctx))
			if err == nil && len(stubs) > 0 {
				a, _, err := n.Client.Allocations().Info(stubs[0].ID, (&nomadapi.QueryOptions{Namespace: ns}).WithContext(ctx))
				if err == nil {
					alloc = a
					if st := a.TaskStates[policies.FetchTask]; st != nil && (st.State == "running" || st.Failed || st.State == "dead") {
						return a
					}
				}
			}
			time.Sleep(250 * time.Millisecond)
		}
		t.Fatalf("%s in %s: no decision from Nomad: %+v", jobID, ns, alloc)
		return nil
	}
	rendered := func(a *nomadapi.Allocation) (string, bool) {
		b, err := os.ReadFile(filepath.Join(n.DataDir, "alloc", a.ID, policies.FetchTask, "secrets", "store.env"))
		return string(b), err == nil
	}
	events := func(a *nomadapi.Allocation) string {
		var b strings.Builder
		if st := a.TaskStates[policies.FetchTask]; st != nil {
			for _, e := range st.Events {
				fmt.Fprintf(&b, "%s: %s %s; ", e.Type, e.DisplayMessage, e.Details["vault_error"])
			}
		}
		return b.String()
	}

	// In namespace "other": the login is refused, nothing is rendered.
	other := run("other")
	if st := other.TaskStates[policies.FetchTask]; st.State == "running" {
		t.Fatalf("the look-alike job in namespace other runs: %s", events(other))
	}
	if body, ok := rendered(other); ok || strings.Contains(body, secret) {
		t.Fatalf("the look-alike job in namespace other rendered %q", body)
	}
	if ev := events(other); !strings.Contains(ev, `claim "nomad_namespace" does not match`) {
		t.Errorf("namespace other failed for another reason than the namespace binding: %s", ev)
	}

	// The same job in serai's namespace gets the keys.
	own := run("default")
	if st := own.TaskStates[policies.FetchTask]; st.State != "running" {
		t.Fatalf("the job in namespace default does not run: %s", events(own))
	}
	if body, ok := rendered(own); !ok || !strings.Contains(body, secret) {
		t.Fatalf("the job in namespace default rendered %q (ok=%v): %s", body, ok, events(own))
	}
}
