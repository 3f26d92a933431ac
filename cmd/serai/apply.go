package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/seraihq/serai/internal/apply"
	"github.com/seraihq/serai/server/client"
	"github.com/seraihq/serai/server/smapi"
	"github.com/seraihq/serai/server/translate"
)

// exitChanges: `serai plan` found something apply would change.
const exitChanges = 4

// apiFlags are the flags of every command that talks to a serai server.
func apiFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "addr", EnvVars: []string{client.EnvAddr}, Value: client.DefaultAddr,
			Usage: "serai server `URL` (SigV4 keys: SERAI_ACCESS_KEY_ID, SERAI_SECRET_ACCESS_KEY, SERAI_REGION)"},
		&cli.StringFlag{Name: "output", Aliases: []string{"o"}, Value: "text", Usage: "text or json"},
		caCertFlag(),
	}
}

// waitFlags are the flags of the commands that start long operations.
func waitFlags() []cli.Flag {
	return []cli.Flag{
		&cli.BoolFlag{Name: "detach", Usage: "return once the server accepted the request, without waiting for the endpoint"},
		&cli.DurationFlag{Name: "poll-interval", Value: 2 * time.Second, Usage: "how often to poll DescribeEndpoint while waiting"},
	}
}

// session is what a control-plane command works with.
type session struct {
	c      *cli.Context
	api    *client.Client
	json   bool
	ctx    context.Context
	cancel context.CancelFunc
}

func newSession(c *cli.Context) (*session, error) {
	s := &session{c: c}
	switch c.String("output") {
	case "text":
	case "json":
		s.json = true
	default:
		return nil, cli.Exit(fmt.Sprintf("serai %s: --output %q is not text or json", c.Command.Name, c.String("output")), exitUsage)
	}
	cfg, err := client.FromEnv()
	if err != nil {
		return nil, cli.Exit(fmt.Sprintf("serai %s: %v", c.Command.Name, err), exitUsage)
	}
	cfg.Addr = c.String("addr")
	if f := c.String("ca-cert"); f != "" {
		if cfg.HTTPClient, err = client.HTTPClientTrusting(f); err != nil {
			return nil, cli.Exit(fmt.Sprintf("serai %s: --ca-cert: %v", c.Command.Name, err), exitUsage)
		}
	}
	if s.api, err = client.New(cfg); err != nil {
		return nil, cli.Exit(fmt.Sprintf("serai %s: %v", c.Command.Name, err), exitUsage)
	}
	parent := c.Context
	if parent == nil {
		parent = context.Background()
	}
	s.ctx, s.cancel = signal.NotifyContext(parent, os.Interrupt, syscall.SIGTERM)
	return s, nil
}

// fail turns an error into the command's exit.
func (s *session) fail(err error) error {
	if errors.Is(err, context.Canceled) {
		return cli.Exit(fmt.Sprintf("serai %s: interrupted; operations the server accepted go on (serai endpoint describe NAME)", cmdName(s.c)), exitError)
	}
	return cli.Exit(fmt.Sprintf("serai %s: %v", cmdName(s.c), err), exitError)
}

// progress is where live progress goes: stdout, or stderr when stdout
// carries JSON.
func (s *session) progress() io.Writer {
	if s.json {
		return s.c.App.ErrWriter
	}
	return s.c.App.Writer
}

func (s *session) printJSON(v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(s.c.App.Writer, "%s\n", b)
	return err
}

func (s *session) printf(format string, args ...any) {
	fmt.Fprintf(s.progress(), format, args...)
}

func (s *session) watcher() apply.Watcher {
	return apply.Watcher{
		API:      s.api,
		Interval: s.c.Duration("poll-interval"),
		Report:   func(snap apply.Snapshot) { _ = apply.WriteSnapshot(s.progress(), snap) },
	}
}

// wait follows one endpoint to its goal, unless --detach, and prints the
// outcome.
func (s *session) wait(name string, goal apply.Goal) error {
	if s.c.Bool("detach") {
		if s.json {
			return s.printJSON(map[string]string{"EndpointName": name, "Detached": "true"})
		}
		s.printf("detached: follow it with `serai endpoint describe %s`\n", name)
		return nil
	}
	start := time.Now()
	d, err := s.watcher().Wait(s.ctx, name, goal)
	if err != nil {
		return s.fail(err)
	}
	took := time.Since(start).Round(time.Second)
	if s.json {
		if d == nil {
			return s.printJSON(map[string]string{"EndpointName": name, "EndpointStatus": apply.StatusDeleted})
		}
		return s.printJSON(d)
	}
	if d == nil {
		s.printf("endpoint %q deleted after %s\n", name, took)
	} else {
		s.printf("endpoint %q is %s with endpoint_config %q after %s\n", name, d.EndpointStatus, d.EndpointConfigName, took)
	}
	return nil
}

func planCommand() *cli.Command {
	return &cli.Command{
		Name:      "plan",
		Usage:     "show what `serai apply` would do with the spec files (exit 0: nothing, 4: changes, 1: conflicts or errors)",
		ArgsUsage: "FILE...",
		Flags:     apiFlags(),
		Action: func(c *cli.Context) error {
			spec, err := loadSpec(c)
			if err != nil {
				return err
			}
			s, err := newSession(c)
			if err != nil {
				return err
			}
			defer s.cancel()
			p, err := apply.MakePlan(s.ctx, s.api, translate.FromSpec(spec))
			if err != nil {
				return s.fail(err)
			}
			if s.json {
				err = s.printJSON(p)
			} else {
				err = p.Write(c.App.Writer)
			}
			if err != nil {
				return err
			}
			switch {
			case len(p.Conflicts()) > 0:
				return cli.Exit(fmt.Sprintf("serai plan: %d conflict(s); apply would fail", len(p.Conflicts())), exitError)
			case p.HasChanges():
				return cli.Exit("", exitChanges)
			}
			return nil
		},
	}
}

func applyCommand() *cli.Command {
	return &cli.Command{
		Name:  "apply",
		Usage: "create or update every object in the spec files, in dependency order, and wait for the endpoints",
		Description: "Models and endpoint configs that do not exist are created; those that exist with the same content are\n" +
			"left alone; a changed one under an existing name is refused (they are immutable: give it a new name).\n" +
			"New endpoints are created; an endpoint whose config changed gets UpdateEndpoint (blue/green, as its\n" +
			"deployment block says). Then it shows each endpoint's progress until InService (exit 0), or Failed or\n" +
			"rolled back (exit 1, with the reason). Nothing is written when any object conflicts.",
		ArgsUsage: "FILE...",
		Flags:     append(apiFlags(), waitFlags()...),
		Action: func(c *cli.Context) error {
			spec, err := loadSpec(c)
			if err != nil {
				return err
			}
			s, err := newSession(c)
			if err != nil {
				return err
			}
			defer s.cancel()
			reqs := translate.FromSpec(spec)
			p, err := apply.MakePlan(s.ctx, s.api, reqs)
			if err != nil {
				return s.fail(err)
			}
			// Stores first (an operator operation), so the models that
			// name them are accepted; nothing is written on a conflict.
			if len(p.Conflicts()) == 0 {
				put, err := apply.EnsureStores(s.ctx, s.api, reqs.Stores)
				for _, n := range put {
					s.printf("artifact store %q put\n", n)
				}
				if err != nil {
					return s.fail(err)
				}
			}
			if !s.json {
				if err := p.Write(c.App.Writer); err != nil {
					return err
				}
				if len(p.Conflicts()) == 0 {
					fmt.Fprintln(c.App.Writer)
				}
			}
			start := time.Now()
			res, err := apply.Apply(s.ctx, s.api, p, apply.Options{
				Detach:  c.Bool("detach"),
				Watcher: s.watcher(),
				Step: func(ch apply.Change) {
					verb := map[apply.Action]string{apply.Create: "creating", apply.Update: "updating"}[ch.Action]
					s.printf("%s %s %q\n", verb, ch.Kind, ch.Name)
				},
			})
			if s.json {
				out := struct {
					*apply.Plan
					Endpoints []*smapi.DescribeEndpointOutput `json:"endpoints,omitempty"`
					Error     string                          `json:"error,omitempty"`
				}{Plan: p}
				if res != nil {
					out.Endpoints = res.Endpoints
				}
				if err != nil {
					out.Error = err.Error()
				}
				if perr := s.printJSON(out); perr != nil {
					return perr
				}
			}
			if err != nil {
				return s.fail(err)
			}
			switch {
			case s.json:
			case c.Bool("detach"):
				s.printf("detached: requests accepted; follow with `serai endpoint describe NAME`\n")
			case p.HasChanges() || len(res.Endpoints) > 0:
				s.printf("apply: done after %s\n", time.Since(start).Round(time.Second))
			default:
				s.printf("apply: nothing to do\n")
			}
			return nil
		},
	}
}

// cmdName is the command as typed after "serai", e.g. "endpoint update".
func cmdName(c *cli.Context) string {
	if n := strings.TrimPrefix(c.Command.HelpName, c.App.Name+" "); n != "" {
		return n
	}
	return c.Command.Name
}
