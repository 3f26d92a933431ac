package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/seraihq/serai/internal/apply"
	"github.com/seraihq/serai/server/smapi"
	"github.com/seraihq/serai/server/translate"
)

// The SageMaker-shaped commands: serai model|endpoint-config|endpoint
// create|describe|list|delete, serai endpoint update|update-weights.

func createFlags(kind string) []cli.Flag {
	return append(apiFlags(),
		&cli.StringFlag{Name: "json", Usage: "`FILE` holding the Create" + kind + " request body (SageMaker's JSON shape)"},
		&cli.StringFlag{Name: "name", Usage: "which object of the HCL files to create (needed when they declare several)"},
	)
}

// request reads a Create request: from --json FILE (SageMaker's shape,
// unknown fields refused), or the object --name of the HCL files as
// `serai apply` would send it.
func request[T any](c *cli.Context, kind string, pick func(translate.Requests) (names []string, byName map[string]*T)) (*T, error) {
	cmd := cmdName(c)
	if f := c.String("json"); f != "" {
		if c.NArg() > 0 || c.String("name") != "" {
			return nil, cli.Exit(fmt.Sprintf("serai %s: --json FILE takes neither HCL files nor --name", cmd), exitUsage)
		}
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, cli.Exit(fmt.Sprintf("serai %s: %v", cmd, err), exitUsage)
		}
		d := json.NewDecoder(bytes.NewReader(b))
		d.DisallowUnknownFields()
		var in T
		if err := d.Decode(&in); err != nil {
			return nil, cli.Exit(fmt.Sprintf("serai %s: %s: not a Create%s request: %v", cmd, f, kind, err), exitValidation)
		}
		if d.More() {
			return nil, cli.Exit(fmt.Sprintf("serai %s: %s: data after the Create%s request (at byte %d)", cmd, f, kind, d.InputOffset()), exitValidation)
		}
		return &in, nil
	}
	spec, err := loadSpec(c)
	if err != nil {
		return nil, err
	}
	names, byName := pick(translate.FromSpec(spec))
	name := c.String("name")
	switch {
	case name != "":
	case len(names) == 1:
		name = names[0]
	case len(names) == 0:
		return nil, cli.Exit(fmt.Sprintf("serai %s: the files declare no %s", cmd, kind), exitUsage)
	default:
		return nil, cli.Exit(fmt.Sprintf("serai %s: the files declare %d of them (%s); choose one with --name", cmd, len(names), strings.Join(names, ", ")), exitUsage)
	}
	in, ok := byName[name]
	if !ok {
		return nil, cli.Exit(fmt.Sprintf("serai %s: --name %q is not declared; declared: %s", cmd, name, strings.Join(names, ", ")), exitUsage)
	}
	return in, nil
}

// nameArg is the one NAME argument of describe, delete and update.
func nameArg(c *cli.Context) (string, error) {
	if c.NArg() != 1 {
		return "", cli.Exit(fmt.Sprintf("serai %s: give exactly one NAME", cmdName(c)), exitUsage)
	}
	return c.Args().First(), nil
}

// noArgs refuses arguments to the list commands.
func noArgs(s *session) error {
	if s.c.NArg() > 0 {
		return cli.Exit(fmt.Sprintf("serai %s: takes no arguments (filter with --name-contains)", cmdName(s.c)), exitUsage)
	}
	return nil
}

func listFlags() []cli.Flag {
	return append(apiFlags(), &cli.StringFlag{Name: "name-contains", Usage: "only names containing this"})
}

func table(s *session, header string, rows [][]string) error {
	tw := tabwriter.NewWriter(s.c.App.Writer, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, header)
	for _, r := range rows {
		fmt.Fprintln(tw, strings.Join(r, "\t"))
	}
	return tw.Flush()
}

func when(t smapi.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format(time.RFC3339)
}

var maxPage = smapi.MaxListMaxResults

// describeText prints a describe answer as "path = value" lines.
func describeText(s *session, v any) error {
	if s.json {
		return s.printJSON(v)
	}
	_, err := fmt.Fprintln(s.c.App.Writer, strings.Join(apply.Fields(v), "\n"))
	return err
}

// action wraps a command body with a session.
func action(f func(s *session) error) cli.ActionFunc {
	return func(c *cli.Context) error {
		s, err := newSession(c)
		if err != nil {
			return err
		}
		defer s.cancel()
		return f(s)
	}
}

func modelCommand() *cli.Command {
	return &cli.Command{
		Name:  "model",
		Usage: "SageMaker models: create, describe, list, delete",
		Subcommands: []*cli.Command{
			{
				Name: "create", Usage: "CreateModel from --json FILE or from HCL files", ArgsUsage: "[FILE...]",
				Flags: createFlags("Model"),
				Action: func(c *cli.Context) error {
					in, err := request(c, "Model", func(r translate.Requests) ([]string, map[string]*smapi.CreateModelInput) {
						var names []string
						m := map[string]*smapi.CreateModelInput{}
						for i := range r.Models {
							names, m[r.Models[i].ModelName] = append(names, r.Models[i].ModelName), &r.Models[i]
						}
						return names, m
					})
					if err != nil {
						return err
					}
					return action(func(s *session) error {
						out, err := s.api.CreateModel(s.ctx, in)
						if err != nil {
							return s.fail(err)
						}
						if s.json {
							return s.printJSON(out)
						}
						s.printf("created model %q (%s)\n", in.ModelName, out.ModelArn)
						return nil
					})(c)
				},
			},
			{
				Name: "describe", Usage: "DescribeModel", ArgsUsage: "NAME", Flags: apiFlags(),
				Action: action(func(s *session) error {
					name, err := nameArg(s.c)
					if err != nil {
						return err
					}
					out, err := s.api.DescribeModel(s.ctx, &smapi.DescribeModelInput{ModelName: name})
					if err != nil {
						return s.fail(err)
					}
					return describeText(s, out)
				}),
			},
			{
				Name: "list", Usage: "ListModels (every page)", Flags: listFlags(),
				Action: action(func(s *session) error {
					if err := noArgs(s); err != nil {
						return err
					}
					in := &smapi.ListModelsInput{NameContains: s.c.String("name-contains"), MaxResults: &maxPage, SortBy: smapi.SortByName, SortOrder: smapi.SortOrderAscending}
					var all []smapi.ModelSummary
					for {
						out, err := s.api.ListModels(s.ctx, in)
						if err != nil {
							return s.fail(err)
						}
						all = append(all, out.Models...)
						if in.NextToken = out.NextToken; in.NextToken == "" {
							break
						}
					}
					if s.json {
						return s.printJSON(smapi.ListModelsOutput{Models: all})
					}
					var rows [][]string
					for _, m := range all {
						rows = append(rows, []string{m.ModelName, when(m.CreationTime), m.ModelArn})
					}
					return table(s, "NAME\tCREATED\tARN", rows)
				}),
			},
			{
				Name: "delete", Usage: "DeleteModel", ArgsUsage: "NAME", Flags: apiFlags(),
				Action: action(func(s *session) error {
					name, err := nameArg(s.c)
					if err != nil {
						return err
					}
					if err := s.api.DeleteModel(s.ctx, &smapi.DeleteModelInput{ModelName: name}); err != nil {
						return s.fail(err)
					}
					if s.json {
						return s.printJSON(map[string]string{"ModelName": name, "Deleted": "true"})
					}
					s.printf("deleted model %q\n", name)
					return nil
				}),
			},
		},
	}
}

func endpointConfigCommand() *cli.Command {
	return &cli.Command{
		Name:  "endpoint-config",
		Usage: "SageMaker endpoint configs: create, describe, list, delete",
		Subcommands: []*cli.Command{
			{
				Name: "create", Usage: "CreateEndpointConfig from --json FILE or from HCL files", ArgsUsage: "[FILE...]",
				Flags: createFlags("EndpointConfig"),
				Action: func(c *cli.Context) error {
					in, err := request(c, "EndpointConfig", func(r translate.Requests) ([]string, map[string]*smapi.CreateEndpointConfigInput) {
						var names []string
						m := map[string]*smapi.CreateEndpointConfigInput{}
						for i := range r.EndpointConfigs {
							n := r.EndpointConfigs[i].EndpointConfigName
							names, m[n] = append(names, n), &r.EndpointConfigs[i]
						}
						return names, m
					})
					if err != nil {
						return err
					}
					return action(func(s *session) error {
						out, err := s.api.CreateEndpointConfig(s.ctx, in)
						if err != nil {
							return s.fail(err)
						}
						if s.json {
							return s.printJSON(out)
						}
						s.printf("created endpoint config %q (%s)\n", in.EndpointConfigName, out.EndpointConfigArn)
						return nil
					})(c)
				},
			},
			{
				Name: "describe", Usage: "DescribeEndpointConfig", ArgsUsage: "NAME", Flags: apiFlags(),
				Action: action(func(s *session) error {
					name, err := nameArg(s.c)
					if err != nil {
						return err
					}
					out, err := s.api.DescribeEndpointConfig(s.ctx, &smapi.DescribeEndpointConfigInput{EndpointConfigName: name})
					if err != nil {
						return s.fail(err)
					}
					return describeText(s, out)
				}),
			},
			{
				Name: "list", Usage: "ListEndpointConfigs (every page)", Flags: listFlags(),
				Action: action(func(s *session) error {
					if err := noArgs(s); err != nil {
						return err
					}
					in := &smapi.ListEndpointConfigsInput{NameContains: s.c.String("name-contains"), MaxResults: &maxPage, SortBy: smapi.SortByName, SortOrder: smapi.SortOrderAscending}
					var all []smapi.EndpointConfigSummary
					for {
						out, err := s.api.ListEndpointConfigs(s.ctx, in)
						if err != nil {
							return s.fail(err)
						}
						all = append(all, out.EndpointConfigs...)
						if in.NextToken = out.NextToken; in.NextToken == "" {
							break
						}
					}
					if s.json {
						return s.printJSON(smapi.ListEndpointConfigsOutput{EndpointConfigs: all})
					}
					var rows [][]string
					for _, m := range all {
						rows = append(rows, []string{m.EndpointConfigName, when(m.CreationTime), m.EndpointConfigArn})
					}
					return table(s, "NAME\tCREATED\tARN", rows)
				}),
			},
			{
				Name: "delete", Usage: "DeleteEndpointConfig", ArgsUsage: "NAME", Flags: apiFlags(),
				Action: action(func(s *session) error {
					name, err := nameArg(s.c)
					if err != nil {
						return err
					}
					if err := s.api.DeleteEndpointConfig(s.ctx, &smapi.DeleteEndpointConfigInput{EndpointConfigName: name}); err != nil {
						return s.fail(err)
					}
					if s.json {
						return s.printJSON(map[string]string{"EndpointConfigName": name, "Deleted": "true"})
					}
					s.printf("deleted endpoint config %q\n", name)
					return nil
				}),
			},
		},
	}
}

func endpointCommand() *cli.Command {
	long := func(f []cli.Flag) []cli.Flag { return append(f, waitFlags()...) }
	return &cli.Command{
		Name:  "endpoint",
		Usage: "SageMaker endpoints: create, describe, list, update, update-weights, delete",
		Subcommands: []*cli.Command{
			{
				Name: "create", Usage: "CreateEndpoint from --json FILE or from HCL files, and wait until InService", ArgsUsage: "[FILE...]",
				Flags: long(createFlags("Endpoint")),
				Action: func(c *cli.Context) error {
					in, err := request(c, "Endpoint", func(r translate.Requests) ([]string, map[string]*smapi.CreateEndpointInput) {
						var names []string
						m := map[string]*smapi.CreateEndpointInput{}
						for i := range r.Endpoints {
							n := r.Endpoints[i].EndpointName
							names, m[n] = append(names, n), &r.Endpoints[i]
						}
						return names, m
					})
					if err != nil {
						return err
					}
					return action(func(s *session) error {
						out, err := s.api.CreateEndpoint(s.ctx, in)
						if err != nil {
							return s.fail(err)
						}
						s.printf("creating endpoint %q (%s) with endpoint_config %q\n", in.EndpointName, out.EndpointArn, in.EndpointConfigName)
						return s.wait(in.EndpointName, apply.Goal{Config: in.EndpointConfigName})
					})(c)
				},
			},
			{
				Name: "describe", Usage: "DescribeEndpoint: status, traffic split, per-variant healthy/desired instances, autoscaling policy and last scaling events", ArgsUsage: "NAME", Flags: apiFlags(),
				Action: action(func(s *session) error {
					name, err := nameArg(s.c)
					if err != nil {
						return err
					}
					d, err := s.api.DescribeEndpoint(s.ctx, &smapi.DescribeEndpointInput{EndpointName: name})
					if err != nil {
						return s.fail(err)
					}
					if s.json {
						return s.printJSON(d)
					}
					w := s.c.App.Writer
					fmt.Fprintf(w, "%s  %s\ncreated %s, modified %s\n%s\n", d.EndpointName, d.EndpointArn, when(d.CreationTime), when(d.LastModifiedTime), apply.RenderDetail(d))
					if d.Serai != nil && len(d.Serai.StatusHistory) > 0 {
						fmt.Fprintln(w, "history:")
						for _, h := range d.Serai.StatusHistory {
							fmt.Fprintf(w, "  %s  %s", when(h.Time), h.Status)
							if h.Reason != "" {
								fmt.Fprintf(w, "  %s", h.Reason)
							}
							fmt.Fprintln(w)
						}
					}
					return nil
				}),
			},
			{
				Name: "list", Usage: "ListEndpoints (every page)",
				Flags: append(listFlags(), &cli.StringFlag{Name: "status", Usage: "only endpoints in this EndpointStatus"}),
				Action: action(func(s *session) error {
					if err := noArgs(s); err != nil {
						return err
					}
					in := &smapi.ListEndpointsInput{NameContains: s.c.String("name-contains"), StatusEquals: s.c.String("status"), MaxResults: &maxPage, SortBy: smapi.SortByName, SortOrder: smapi.SortOrderAscending}
					var all []smapi.EndpointSummary
					for {
						out, err := s.api.ListEndpoints(s.ctx, in)
						if err != nil {
							return s.fail(err)
						}
						all = append(all, out.Endpoints...)
						if in.NextToken = out.NextToken; in.NextToken == "" {
							break
						}
					}
					if s.json {
						return s.printJSON(smapi.ListEndpointsOutput{Endpoints: all})
					}
					var rows [][]string
					for _, e := range all {
						rows = append(rows, []string{e.EndpointName, e.EndpointStatus, when(e.LastModifiedTime), e.EndpointArn})
					}
					return table(s, "NAME\tSTATUS\tMODIFIED\tARN", rows)
				}),
			},
			{
				Name: "update", Usage: "UpdateEndpoint to another endpoint config (blue/green), and wait", ArgsUsage: "NAME",
				Flags: long(append(apiFlags(),
					&cli.StringFlag{Name: "config", Required: true, Usage: "endpoint config `NAME` to deploy"},
					&cli.BoolFlag{Name: "retain-deployment-config", Value: true, Usage: "follow the endpoint's last deployment policy (false: SageMaker's default, all at once)"},
				)),
				Action: action(func(s *session) error {
					name, err := nameArg(s.c)
					if err != nil {
						return err
					}
					cfg := s.c.String("config")
					if _, err := s.api.UpdateEndpoint(s.ctx, &smapi.UpdateEndpointInput{
						EndpointName: name, EndpointConfigName: cfg, RetainDeploymentConfig: s.c.Bool("retain-deployment-config"),
					}); err != nil {
						return s.fail(err)
					}
					s.printf("updating endpoint %q to endpoint_config %q\n", name, cfg)
					return s.wait(name, apply.Goal{Config: cfg})
				}),
			},
			{
				Name:      "update-weights",
				Usage:     "UpdateEndpointWeightsAndCapacities: move traffic (routing table only) and instance counts (Nomad scale), and wait",
				ArgsUsage: "NAME",
				Description: "Each --weight VARIANT=WEIGHT sets DesiredWeight, each --instances VARIANT=COUNT sets DesiredInstanceCount;\n" +
					"give either or both per variant. Example: serai endpoint update-weights churn --weight champion=9 --weight challenger=1 --instances challenger=3",
				Flags: long(append(apiFlags(),
					&cli.StringSliceFlag{Name: "weight", Usage: "`VARIANT=WEIGHT` (repeatable)"},
					&cli.StringSliceFlag{Name: "instances", Usage: "`VARIANT=COUNT` (repeatable)"},
				)),
				Action: action(func(s *session) error {
					name, err := nameArg(s.c)
					if err != nil {
						return err
					}
					in, err := weightsInput(name, s.c.StringSlice("weight"), s.c.StringSlice("instances"))
					if err != nil {
						return cli.Exit(fmt.Sprintf("serai %s: %v", cmdName(s.c), err), exitUsage)
					}
					if _, err := s.api.UpdateEndpointWeightsAndCapacities(s.ctx, in); err != nil {
						return s.fail(err)
					}
					s.printf("updating weights and capacities of endpoint %q\n", name)
					return s.wait(name, apply.Goal{})
				}),
			},
			{
				Name: "delete", Usage: "DeleteEndpoint (drains traffic, stops its jobs), and wait until it is gone", ArgsUsage: "NAME",
				Flags: long(apiFlags()),
				Action: action(func(s *session) error {
					name, err := nameArg(s.c)
					if err != nil {
						return err
					}
					if err := s.api.DeleteEndpoint(s.ctx, &smapi.DeleteEndpointInput{EndpointName: name}); err != nil {
						return s.fail(err)
					}
					s.printf("deleting endpoint %q\n", name)
					return s.wait(name, apply.Goal{Deleted: true})
				}),
			},
		},
	}
}

// weightsInput builds UpdateEndpointWeightsAndCapacities from --weight
// VARIANT=W and --instances VARIANT=N, one entry per variant, in the
// order variants were first named.
func weightsInput(endpoint string, weights, counts []string) (*smapi.UpdateEndpointWeightsAndCapacitiesInput, error) {
	if len(weights)+len(counts) == 0 {
		return nil, fmt.Errorf("give at least one --weight VARIANT=WEIGHT or --instances VARIANT=COUNT")
	}
	in := &smapi.UpdateEndpointWeightsAndCapacitiesInput{EndpointName: endpoint}
	idx := map[string]int{}
	entry := func(v string) *smapi.DesiredWeightAndCapacity {
		i, ok := idx[v]
		if !ok {
			i = len(in.DesiredWeightsAndCapacities)
			idx[v] = i
			in.DesiredWeightsAndCapacities = append(in.DesiredWeightsAndCapacities, smapi.DesiredWeightAndCapacity{VariantName: v})
		}
		return &in.DesiredWeightsAndCapacities[i]
	}
	split := func(flag, s string) (string, string, error) {
		v, x, ok := strings.Cut(s, "=")
		if !ok || v == "" || x == "" {
			return "", "", fmt.Errorf("--%s %q: want VARIANT=VALUE", flag, s)
		}
		return v, x, nil
	}
	for _, s := range weights {
		v, x, err := split("weight", s)
		if err != nil {
			return nil, err
		}
		w, err := strconv.ParseFloat(x, 64)
		if err != nil || !(w >= 0) || math.IsInf(w, 0) {
			return nil, fmt.Errorf("--weight %q: the weight must be a finite number >= 0", s)
		}
		e := entry(v)
		if e.DesiredWeight != nil {
			return nil, fmt.Errorf("--weight: variant %q given twice", v)
		}
		e.DesiredWeight = &w
	}
	for _, s := range counts {
		v, x, err := split("instances", s)
		if err != nil {
			return nil, err
		}
		n, err := strconv.Atoi(x)
		if err != nil || n < 0 {
			return nil, fmt.Errorf("--instances %q: the count must be an integer >= 0", s)
		}
		e := entry(v)
		if e.DesiredInstanceCount != nil {
			return nil, fmt.Errorf("--instances: variant %q given twice", v)
		}
		e.DesiredInstanceCount = &n
	}
	return in, nil
}
