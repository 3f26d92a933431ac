package api

import (
	"fmt"
	"slices"
	"strings"

	"github.com/seraihq/serai/jobspec"
	"github.com/seraihq/serai/server/smapi"
	"github.com/seraihq/serai/server/translate"
)

// Admission is the operator's policy on what a model may run as, checked
// after a model is valid and before it is recorded.
//
// A model reaches the Nomad client's filesystem only through its task
// driver: raw_exec runs the model (and its fetch task) as the Nomad
// agent's user with the host's view of the disk, so a model author could
// read other allocations' secrets or anything the agent can. exec
// (a chroot) and docker (a container whose only mount the compiler
// chooses, the allocation's model directory) do not. No other model
// field names a host path the tasks mount or run from: the image's
// config, volumes and privileges are not model fields, and a command is
// resolved inside the driver's isolation. (An artifact URL is the
// fetcher's business: file:// sources are judged with the artifact
// stores.)

// DefaultAllowedDrivers are the drivers a server runs models with unless
// its operator says otherwise: the isolating ones.
func DefaultAllowedDrivers() []string {
	return []string{jobspec.DriverDocker, jobspec.DriverExec}
}

// knownDrivers are the drivers serai compiles models for.
var knownDrivers = []string{jobspec.DriverDocker, jobspec.DriverExec, jobspec.DriverRawExec}

// validateDrivers reports a driver name serai does not know, so a typo in
// --allow-drivers is caught at start rather than refusing every model.
func validateDrivers(drivers []string) error {
	for _, d := range drivers {
		if !slices.Contains(knownDrivers, d) {
			return fmt.Errorf("api: allowed driver %q is not one serai runs models with (%s)", d, strings.Join(knownDrivers, ", "))
		}
	}
	return nil
}

// admitModel refuses a valid model the operator's policy does not allow,
// naming the field that chose the driver and the flag that allows it.
func (h *Handler) admitModel(spec *smapi.CreateModelInput) *apiError {
	js, err := translate.ToSpec(translate.Input{Models: []*smapi.CreateModelInput{spec}})
	if err != nil {
		return validationf("%s", err.Error())
	}
	m := js.Models[spec.ModelName]
	if m == nil {
		return validationf("Model %q could not be read back for admission.", spec.ModelName)
	}
	driver := m.TaskDriver()
	if slices.Contains(h.cfg.AllowedDrivers, driver) {
		return nil
	}
	field, value := "serai.driver", m.Driver
	switch {
	case m.Driver != "":
	case m.Image != "":
		field, value = "primaryContainer.image", m.Image
	default:
		field, value = "serai.command", m.Command
	}
	why := ""
	if driver == jobspec.DriverRawExec {
		why = " (raw_exec runs the model as the Nomad agent's user with the host's filesystem)"
	}
	var f fieldErrors
	f.bad(field, value, fmt.Sprintf("Member's task driver %s is not allowed on this server%s: it runs models with [%s]; "+
		"the operator allows more with serai server --allow-drivers", driver, why, strings.Join(h.cfg.AllowedDrivers, ", ")))
	return f.err()
}
