package main

import (
	"fmt"

	"github.com/hashicorp/go-hclog"
	"github.com/urfave/cli/v2"
)

// logFlags are the logging flags of the long-running commands; env names
// the variables a Nomad task can set instead.
func logFlags(levelUsage string, env bool) []cli.Flag {
	level := &cli.StringFlag{Name: "log-level", Value: "info", Usage: levelUsage}
	json := &cli.BoolFlag{Name: "log-json", Usage: "log JSON lines"}
	if env {
		level.EnvVars = []string{"SERAI_LOG_LEVEL"}
		json.EnvVars = []string{"SERAI_LOG_JSON"}
	}
	return []cli.Flag{level, json}
}

// newLogger builds the command's logger from --log-level and --log-json,
// writing to stderr so stdout stays the command's output.
func newLogger(c *cli.Context, name string) (hclog.Logger, error) {
	level := hclog.LevelFromString(c.String("log-level"))
	if level == hclog.NoLevel {
		return nil, cli.Exit(fmt.Sprintf("serai %s: --log-level %q is not one of trace, debug, info, warn, error", c.Command.Name, c.String("log-level")), exitUsage)
	}
	return hclog.New(&hclog.LoggerOptions{
		Name:       name,
		Level:      level,
		Output:     c.App.ErrWriter,
		JSONFormat: c.Bool("log-json"),
	}), nil
}
