package main

import (
	"errors"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/urfave/cli/v2"

	"github.com/seraihq/serai/internal/instancetypes"
	"github.com/seraihq/serai/jobspec"
	"github.com/seraihq/serai/scheduler"
)

// loadSpec parses and validates the files named on the command line,
// printing HCL diagnostics to stderr. It returns a cli.Exit error carrying
// exitValidation when the spec is invalid.
func loadSpec(c *cli.Context) (*jobspec.Spec, error) {
	if c.NArg() == 0 {
		return nil, cli.Exit(fmt.Sprintf("serai %s: give at least one spec file", c.Command.Name), exitUsage)
	}
	p := jobspec.NewParser()
	spec, diags := p.ParseFiles(c.Args().Slice()...)
	if len(diags) > 0 {
		if err := p.WriteDiagnostics(c.App.ErrWriter, diags); err != nil {
			return nil, cli.Exit(fmt.Sprintf("serai: writing diagnostics: %v", err), exitError)
		}
	}
	if diags.HasErrors() {
		n := 0
		for _, d := range diags {
			if d.Severity == 1 {
				n++
			}
		}
		return nil, cli.Exit(fmt.Sprintf("serai %s: %d error(s) in spec", c.Command.Name, n), exitValidation)
	}
	return spec, nil
}

func validateCommand() *cli.Command {
	return &cli.Command{
		Name:      "validate",
		Usage:     "check spec files and report every error with its position",
		ArgsUsage: "FILE...",
		Action: func(c *cli.Context) error {
			spec, err := loadSpec(c)
			if err != nil {
				return err
			}
			fmt.Fprintf(c.App.Writer, "valid: %d artifact store(s), %d model(s), %d endpoint config(s), %d endpoint(s)\n",
				len(spec.ArtifactStores), len(spec.Models), len(spec.EndpointConfigs), len(spec.Endpoints))
			return nil
		},
	}
}

func renderCommand() *cli.Command {
	d := scheduler.DefaultOptions()
	return &cli.Command{
		Name:      "render",
		Usage:     "compile an endpoint into the Nomad job JSON ({\"Job\": ...}) that `nomad job run -json` accepts",
		ArgsUsage: "FILE...",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "endpoint", Usage: "endpoint to render (required when the files declare more than one)"},
			&cli.IntFlag{Name: "generation", Value: 1, Usage: "deployment generation of the job"},
			&cli.StringFlag{Name: "serai-binary", Value: d.SeraiBinary, Usage: "path of the serai binary on Nomad clients (fetch task of exec/raw_exec models)", EnvVars: []string{"SERAI_CLIENT_BINARY"}},
			&cli.StringFlag{Name: "fetch-image", Value: d.FetchImage, Usage: "serai image for the fetch task of docker models"},
			&cli.StringFlag{Name: "router-url", Value: d.RouterURL, Usage: "base URL of the router, for the Nomad UI links", EnvVars: []string{"SERAI_ROUTER_URL"}},
			&cli.StringFlag{Name: "metrics-url", Usage: "dashboard URL for the Nomad UI; {endpoint} is replaced"},
			&cli.StringFlag{Name: "namespace", Usage: "Nomad namespace"},
			&cli.StringFlag{Name: "region", Usage: "Nomad region"},
		},
		Action: func(c *cli.Context) error {
			spec, err := loadSpec(c)
			if err != nil {
				return err
			}
			name := c.String("endpoint")
			if name == "" {
				names := jobspec.SortedNames(spec.Endpoints)
				switch len(names) {
				case 0:
					return cli.Exit("serai render: the spec files declare no endpoint", exitUsage)
				case 1:
					name = names[0]
				default:
					return cli.Exit(fmt.Sprintf("serai render: the spec files declare %d endpoints (%s); choose one with --endpoint", len(names), strings.Join(names, ", ")), exitUsage)
				}
			}
			if _, ok := spec.Endpoints[name]; !ok {
				return cli.Exit(fmt.Sprintf("serai render: --endpoint %q is not declared; declared: %s", name, strings.Join(jobspec.SortedNames(spec.Endpoints), ", ")), exitUsage)
			}
			if c.Int("generation") < 1 {
				return cli.Exit("serai render: --generation must be at least 1", exitUsage)
			}
			job, err := scheduler.Compile(spec, name, c.Int("generation"), scheduler.Options{
				SeraiBinary: c.String("serai-binary"),
				FetchImage:  c.String("fetch-image"),
				RouterURL:   c.String("router-url"),
				MetricsURL:  c.String("metrics-url"),
				Namespace:   c.String("namespace"),
				Region:      c.String("region"),
			})
			if err != nil {
				return cli.Exit("serai render: "+err.Error(), exitError)
			}
			b, err := scheduler.MarshalJob(job)
			if err != nil {
				return cli.Exit("serai render: "+err.Error(), exitError)
			}
			_, err = c.App.Writer.Write(b)
			return err
		},
	}
}

func instanceTypesCommand() *cli.Command {
	return &cli.Command{
		Name:  "instance-types",
		Usage: "list the instance types serai knows and the Nomad resources each maps to",
		Action: func(c *cli.Context) error {
			return writeInstanceTypes(c.App.Writer)
		},
	}
}

func writeInstanceTypes(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "TYPE\tFAMILY\tVCPU\tCPU (MHz)\tMEMORY (MB)\tGPUS\tGPU MODEL")
	for _, t := range instancetypes.All() {
		gm := t.GPUModel
		if gm == "" {
			gm = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%d\t%d\t%s\n", t.Name, t.Family, t.VCPU, t.CPUMHz(), t.MemoryMB, t.GPUs, gm)
	}
	return tw.Flush()
}

// run executes the CLI and maps errors to exit codes; main only calls it,
// so tests drive the real command line in-process.
func run(args []string, stdout, stderr io.Writer) int {
	app := newApp()
	app.Writer = stdout
	app.ErrWriter = stderr
	err := app.Run(args)
	if err == nil {
		return exitOK
	}
	var ec cli.ExitCoder
	if errors.As(err, &ec) {
		if msg := ec.Error(); msg != "" {
			fmt.Fprintln(stderr, msg)
		}
		return ec.ExitCode()
	}
	fmt.Fprintf(stderr, "serai: %v\n", err)
	return exitError
}
