package api

import (
	"net/http"
	"strings"
	"testing"

	"github.com/seraihq/serai/server/records"
	"github.com/seraihq/serai/server/smapi"
)

func commandModel(name, driver string) smapi.CreateModelInput {
	return smapi.CreateModelInput{
		ModelName:        name,
		PrimaryContainer: &smapi.ContainerDefinition{},
		Serai:            &smapi.ModelExtension{Command: "/bin/sh", Args: []string{"-c", "cat /etc/shadow"}, Driver: driver},
	}
}

func newEnvDrivers(t *testing.T, drivers ...string) *env {
	t.Helper()
	e := newEnv(t)
	h, err := New(Config{Store: e.store, Region: "eu-west-1", Account: "123456789012", Observer: e.obs, Now: e.clock.Now, AllowedDrivers: drivers})
	if err != nil {
		t.Fatal(err)
	}
	e.h = h
	return e
}

// TestAdmissionRefusesRawExecByDefault: a caller of a default server
// cannot create a model that runs as a host process (raw_exec, the
// Nomad agent's user and filesystem); the refusal names the field and the
// operator's flag, and nothing is recorded.
func TestAdmissionRefusesRawExecByDefault(t *testing.T) {
	e := newEnv(t)
	before := e.snapshot()
	r := e.fails("CreateModel", commandModel("evil", "raw_exec"), http.StatusBadRequest, smapi.ErrValidation, "'serai.driver'")
	for _, want := range []string{"'raw_exec'", "--allow-drivers", "[docker, exec]"} {
		if !strings.Contains(r.message(), want) {
			t.Errorf("message %q does not contain %q", r.message(), want)
		}
	}
	e.unchanged(before, "a refused raw_exec CreateModel")
	// The isolating drivers stay open: exec (the command default) and docker.
	e.ok("CreateModel", commandModel("plain", ""))
	e.ok("CreateModel", commandModel("chrooted", "exec"))
	e.ok("CreateModel", model("boxed"))
	// The Containers form is the same model by another name.
	in := commandModel("evil2", "raw_exec")
	in.Containers, in.PrimaryContainer = []smapi.ContainerDefinition{*in.PrimaryContainer}, nil
	e.fails("CreateModel", in, http.StatusBadRequest, smapi.ErrValidation, "'serai.driver'")
	if _, err := e.store.Get(t.Context(), records.KindModel, "evil2", &records.Model{}); err == nil {
		t.Fatal("the refused model was recorded")
	}
}

// TestAdmissionAllowedDrivers: the operator's list is the policy, and the
// refusal names the field that chose the driver even when the driver is
// a default.
func TestAdmissionAllowedDrivers(t *testing.T) {
	e := newEnvDrivers(t, "raw_exec", "exec", "docker")
	e.ok("CreateModel", commandModel("dev", "raw_exec"))

	e = newEnvDrivers(t, "docker")
	e.fails("CreateModel", commandModel("cmd", ""), http.StatusBadRequest, smapi.ErrValidation, "Value '/bin/sh' at 'serai.command'")
	e.ok("CreateModel", model("img"))

	e = newEnvDrivers(t, "exec")
	e.fails("CreateModel", model("img"), http.StatusBadRequest, smapi.ErrValidation, "at 'primaryContainer.image' failed to satisfy constraint: Member's task driver docker is not allowed")

	// A driver the jobspec rules refuse is refused by them first.
	e = newEnvDrivers(t, "exec")
	e.fails("CreateModel", commandModel("odd", "qemu"), http.StatusBadRequest, smapi.ErrValidation, "cannot run a command")
}

func TestAllowedDriversValidate(t *testing.T) {
	cfg := Config{Store: records.Store{KV: records.NewMemKV()}, AllowedDrivers: []string{"exec", "rawexec"}}
	err := cfg.Validate()
	if err == nil || !strings.Contains(err.Error(), `"rawexec"`) {
		t.Fatalf("Validate: %v; want the unknown driver named", err)
	}
	if got := DefaultConfig().AllowedDrivers; strings.Join(got, ",") != "docker,exec" {
		t.Fatalf("default allowed drivers %v", got)
	}
}
