// Command serai is the single serai binary: CLI, control plane, router and
// the prestart fetch task. It stays thin: every subcommand parses flags and
// calls into a package; no lifecycle or data-plane logic lives here.
package main

import (
	"fmt"
	"os"

	"github.com/urfave/cli/v2"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "0.1.0-dev"

// Exit codes, documented in README.md.
const (
	exitOK         = 0
	exitError      = 1 // runtime failure (I/O, network, agent refused)
	exitUsage      = 2 // bad flags or arguments
	exitValidation = 3 // the spec files are invalid
	// exitChanges (4, apply.go): serai plan found changes to make.
)

func newApp() *cli.App {
	app := &cli.App{
		Name:    "serai",
		Usage:   "SageMaker-style model hosting on Nomad, Consul and Vault",
		Version: version,
		Commands: []*cli.Command{
			validateCommand(),
			renderCommand(),
			instanceTypesCommand(),
			routerCommand(),
			serverCommand(),
			applyCommand(),
			planCommand(),
			storeCommand(),
			modelCommand(),
			endpointConfigCommand(),
			endpointCommand(),
			fetchModelCommand(),
			setupCommand(),
			invokeCommand(),
			devCommand(),
		},
		ExitErrHandler: func(c *cli.Context, err error) {},
		OnUsageError:   usageError,
	}
	setUsageErrors(app.Commands)
	return app
}

// usageError turns flag and argument mistakes into exitUsage.
func usageError(c *cli.Context, err error, isSubcommand bool) error {
	return cli.Exit(fmt.Sprintf("serai: %v", err), exitUsage)
}

// setUsageErrors applies usageError to every command: urfave/cli only
// consults the handler of the command whose flags failed to parse.
func setUsageErrors(cmds []*cli.Command) {
	for _, c := range cmds {
		if c.OnUsageError == nil {
			c.OnUsageError = usageError
		}
		setUsageErrors(c.Subcommands)
	}
}

func main() {
	os.Exit(run(os.Args, os.Stdout, os.Stderr))
}
