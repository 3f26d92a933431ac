package apply

import (
	"context"
	"errors"
	"fmt"

	"github.com/seraihq/serai/server/smapi"
)

// Options tune Apply.
type Options struct {
	// Detach returns once every request is accepted, without waiting
	// for endpoints to finish.
	Detach bool
	// Watcher waits for endpoints (its API defaults to Apply's).
	Watcher Watcher
	// Step, if set, is told each request as it is made.
	Step func(c Change)
}

// Result is what Apply did: the endpoints' last observed states.
type Result struct {
	Endpoints []*smapi.DescribeEndpointOutput
}

// Apply carries out a plan: creates models, then endpoint configs, then
// creates or updates endpoints, and (unless Detach) waits for each
// endpoint it touched, or found in progress, to finish. A plan with
// conflicts is refused before anything is written (*ConflictError).
// Every endpoint is waited for; the error joins one per endpoint that
// did not get there (*FailedError for a failure or a rollback).
func Apply(ctx context.Context, api API, p *Plan, opts Options) (*Result, error) {
	if cs := p.Conflicts(); len(cs) > 0 {
		return nil, &ConflictError{Conflicts: cs}
	}
	type watch struct {
		name string
		goal Goal
	}
	var watches []watch
	step := func(c Change) {
		if opts.Step != nil {
			opts.Step(c)
		}
	}
	for _, c := range p.Changes {
		var err error
		switch {
		case c.Action == Create && c.Kind == KindModel:
			step(c)
			_, err = api.CreateModel(ctx, c.model)
		case c.Action == Create && c.Kind == KindEndpointConfig:
			step(c)
			_, err = api.CreateEndpointConfig(ctx, c.config)
		case c.Action == Create && c.Kind == KindEndpoint:
			step(c)
			_, err = api.CreateEndpoint(ctx, c.endpoint)
			watches = append(watches, watch{c.Name, Goal{Config: c.ToConfig}})
		case c.Action == Update && c.Kind == KindEndpoint:
			step(c)
			e := c.endpoint
			_, err = api.UpdateEndpoint(ctx, &smapi.UpdateEndpointInput{
				EndpointName:       e.EndpointName,
				EndpointConfigName: e.EndpointConfigName,
				DeploymentConfig:   e.DeploymentConfig,
				Serai:              e.Serai,
			})
			watches = append(watches, watch{c.Name, Goal{Config: c.ToConfig}})
		case c.Action == InProgress:
			watches = append(watches, watch{c.Name, Goal{Config: c.ToConfig}})
		}
		if err != nil {
			return nil, fmt.Errorf("%s %q: %w", c.Kind, c.Name, err)
		}
	}
	res := &Result{}
	if opts.Detach {
		return res, nil
	}
	w := opts.Watcher
	if w.API == nil {
		w.API = api
	}
	var errs []error
	for _, x := range watches {
		d, err := w.Wait(ctx, x.name, x.goal)
		if d != nil {
			res.Endpoints = append(res.Endpoints, d)
		}
		if err != nil {
			errs = append(errs, err)
			if ctx.Err() != nil {
				break
			}
		}
	}
	return res, errors.Join(errs...)
}
