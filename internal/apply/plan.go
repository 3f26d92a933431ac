// Package apply is the logic of `serai plan` and `serai apply`: it compares
// the objects of spec files (as translate.FromSpec turns them into
// SageMaker requests) with what a serai server holds, decides per object
// whether to create it, update it or leave it alone, carries that out in
// dependency order (models, endpoint configs, endpoints), and watches
// endpoints until their operations finish, reporting progress.
//
// SageMaker's semantics decide: models and endpoint configs are
// immutable, so one that exists under the same name with other content is
// a conflict (give it a new name), never an update; an endpoint whose
// config changed is an UpdateEndpoint. Objects that exist with identical
// content are left alone, so re-applying unchanged files changes nothing.
//
// Artifact stores are operator-owned records, not planned objects:
// EnsureStores puts the spec's store blocks that differ from the server's
// records (which only an operator's key may do) before anything names them.
//
// It talks to the server only through the API interface (server/client
// implements it) and never to Nomad, Consul or Vault.
package apply

import (
	"context"
	"fmt"
	"sort"
	"strings"

	"github.com/seraihq/serai/server/client"
	"github.com/seraihq/serai/server/smapi"
	"github.com/seraihq/serai/server/translate"
)

// API is what plan and apply need of the serai server.
type API interface {
	DescribeModel(context.Context, *smapi.DescribeModelInput) (*smapi.DescribeModelOutput, error)
	CreateModel(context.Context, *smapi.CreateModelInput) (*smapi.CreateModelOutput, error)
	DescribeEndpointConfig(context.Context, *smapi.DescribeEndpointConfigInput) (*smapi.DescribeEndpointConfigOutput, error)
	CreateEndpointConfig(context.Context, *smapi.CreateEndpointConfigInput) (*smapi.CreateEndpointConfigOutput, error)
	Describer
	CreateEndpoint(context.Context, *smapi.CreateEndpointInput) (*smapi.CreateEndpointOutput, error)
	UpdateEndpoint(context.Context, *smapi.UpdateEndpointInput) (*smapi.UpdateEndpointOutput, error)
}

// Describer reads an endpoint's state, for watching it.
type Describer interface {
	DescribeEndpoint(context.Context, *smapi.DescribeEndpointInput) (*smapi.DescribeEndpointOutput, error)
}

var _ API = (*client.Client)(nil)

// Kinds of objects, as the spec language names them.
const (
	KindModel          = "model"
	KindEndpointConfig = "endpoint_config"
	KindEndpoint       = "endpoint"
)

// Action is what apply does with one object.
type Action string

const (
	// Create: the object does not exist.
	Create Action = "create"
	// Update: the endpoint runs another config (UpdateEndpoint).
	Update Action = "update"
	// Unchanged: the object exists as the files say.
	Unchanged Action = "unchanged"
	// InProgress: the endpoint is already being created or updated to
	// the files' config; apply only waits for it.
	InProgress Action = "in-progress"
	// Conflict: apply cannot reach the files' state (an immutable object
	// changed, or the endpoint cannot be updated now); Reason says why
	// and what to do.
	Conflict Action = "conflict"
)

// Change is the plan for one object.
type Change struct {
	Kind   string `json:"kind"`
	Name   string `json:"name"`
	Action Action `json:"action"`
	// Reason explains a conflict or an in-progress endpoint.
	Reason string `json:"reason,omitempty"`
	// Status is an existing endpoint's status.
	Status string `json:"status,omitempty"`
	// FromConfig and ToConfig are an endpoint's current and wanted
	// configs.
	FromConfig string `json:"from_config,omitempty"`
	ToConfig   string `json:"to_config,omitempty"`
	// Diff lists what differs: for an endpoint update, its config's
	// variants old → new; for a conflict, the fields of the immutable
	// object that changed.
	Diff []string `json:"diff,omitempty"`

	model    *smapi.CreateModelInput
	config   *smapi.CreateEndpointConfigInput
	endpoint *smapi.CreateEndpointInput
}

// Plan is what apply would do, in the order it does it.
type Plan struct {
	Changes []Change `json:"changes"`
}

// HasChanges tells whether applying would change anything (conflicts
// included: they are differences apply cannot make).
func (p *Plan) HasChanges() bool {
	for _, c := range p.Changes {
		if c.Action != Unchanged && c.Action != InProgress {
			return true
		}
	}
	return false
}

// Conflicts returns the changes apply cannot make.
func (p *Plan) Conflicts() []Change {
	var out []Change
	for _, c := range p.Changes {
		if c.Action == Conflict {
			out = append(out, c)
		}
	}
	return out
}

// ConflictError is returned by Apply when the plan has conflicts; nothing
// was written.
type ConflictError struct{ Conflicts []Change }

func (e *ConflictError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d object(s) cannot be applied; nothing was changed:", len(e.Conflicts))
	for _, c := range e.Conflicts {
		fmt.Fprintf(&b, "\n  %s %q: %s", c.Kind, c.Name, c.Reason)
		for _, d := range c.Diff {
			fmt.Fprintf(&b, "\n      %s", d)
		}
	}
	return b.String()
}

// MakePlan compares the requests with what the server holds.
func MakePlan(ctx context.Context, api API, reqs translate.Requests) (*Plan, error) {
	p := &Plan{}
	// Configs the files declare, for diffs of endpoints that switch to a
	// config not created yet.
	declared := map[string]*smapi.CreateEndpointConfigInput{}
	for i := range reqs.Models {
		m := &reqs.Models[i]
		c := Change{Kind: KindModel, Name: m.ModelName, model: m}
		got, err := api.DescribeModel(ctx, &smapi.DescribeModelInput{ModelName: m.ModelName})
		switch {
		case client.IsNotFound(err):
			c.Action = Create
		case err != nil:
			return nil, fmt.Errorf("model %q: %w", m.ModelName, err)
		default:
			c.Action = Unchanged
			if d := diffFields(modelContent(got), modelContentIn(m)); len(d) > 0 {
				c.Action, c.Diff = Conflict, d
				c.Reason = fmt.Sprintf("model %q exists with other content, and models are immutable: give the changed model a new name (and point the endpoint_config at it)", m.ModelName)
			}
		}
		p.Changes = append(p.Changes, c)
	}
	for i := range reqs.EndpointConfigs {
		ec := &reqs.EndpointConfigs[i]
		declared[ec.EndpointConfigName] = ec
		c := Change{Kind: KindEndpointConfig, Name: ec.EndpointConfigName, config: ec}
		got, err := api.DescribeEndpointConfig(ctx, &smapi.DescribeEndpointConfigInput{EndpointConfigName: ec.EndpointConfigName})
		switch {
		case client.IsNotFound(err):
			c.Action = Create
		case err != nil:
			return nil, fmt.Errorf("endpoint_config %q: %w", ec.EndpointConfigName, err)
		default:
			c.Action = Unchanged
			if d := diffFields(configContent(got), configContentIn(ec)); len(d) > 0 {
				c.Action, c.Diff = Conflict, d
				c.Reason = fmt.Sprintf("endpoint_config %q exists with other content, and endpoint configs are immutable: give the changed config a new name and point the endpoint at it (that becomes a blue/green UpdateEndpoint)", ec.EndpointConfigName)
			}
		}
		p.Changes = append(p.Changes, c)
	}
	for i := range reqs.Endpoints {
		e := &reqs.Endpoints[i]
		c, err := planEndpoint(ctx, api, e, declared)
		if err != nil {
			return nil, err
		}
		p.Changes = append(p.Changes, c)
	}
	return p, nil
}

func planEndpoint(ctx context.Context, api API, e *smapi.CreateEndpointInput, declared map[string]*smapi.CreateEndpointConfigInput) (Change, error) {
	c := Change{Kind: KindEndpoint, Name: e.EndpointName, endpoint: e, ToConfig: e.EndpointConfigName}
	got, err := api.DescribeEndpoint(ctx, &smapi.DescribeEndpointInput{EndpointName: e.EndpointName})
	if client.IsNotFound(err) {
		c.Action = Create
		return c, nil
	}
	if err != nil {
		return c, fmt.Errorf("endpoint %q: %w", e.EndpointName, err)
	}
	c.Status = got.EndpointStatus
	c.FromConfig = got.EndpointConfigName
	target := got.EndpointConfigName
	if got.PendingDeploymentSummary != nil {
		target = got.PendingDeploymentSummary.EndpointConfigName
	}
	switch got.EndpointStatus {
	case smapi.StatusInService:
		if got.EndpointConfigName == e.EndpointConfigName {
			c.Action = Unchanged
			return c, nil
		}
		c.Action = Update
		diff, err := configDiff(ctx, api, got.EndpointConfigName, e.EndpointConfigName, declared)
		if err != nil {
			return c, fmt.Errorf("endpoint %q: %w", e.EndpointName, err)
		}
		c.Diff = diff
	case smapi.StatusCreating, smapi.StatusUpdating, smapi.StatusSystemUpdating:
		if target == e.EndpointConfigName {
			c.Action = InProgress
			c.Reason = fmt.Sprintf("already %s with endpoint_config %q; apply waits for it", got.EndpointStatus, target)
			return c, nil
		}
		c.Action = Conflict
		c.Reason = fmt.Sprintf("endpoint is %s with endpoint_config %q; an endpoint with an operation under way cannot be updated: wait until it is InService, then apply again", got.EndpointStatus, target)
	case smapi.StatusRollingBack:
		c.Action = Conflict
		c.Reason = "endpoint is RollingBack; wait until it is InService, then apply again"
	case smapi.StatusDeleting:
		c.Action = Conflict
		c.Reason = "endpoint is being deleted; wait until it is gone, then apply again to create it anew"
	default: // Failed, UpdateRollbackFailed, OutOfService
		c.Action = Conflict
		c.Reason = fmt.Sprintf("endpoint is %s and cannot be updated: delete it (serai endpoint delete %s) and apply again", got.EndpointStatus, e.EndpointName)
		if got.FailureReason != "" {
			c.Reason += "; failure reason: " + got.FailureReason
		}
	}
	return c, nil
}

// configDiff describes the switch from config from to config to, variant
// by variant.
func configDiff(ctx context.Context, api API, from, to string, declared map[string]*smapi.CreateEndpointConfigInput) ([]string, error) {
	content := func(name string) (map[string]any, error) {
		if name == "" {
			return map[string]any{}, nil
		}
		got, err := api.DescribeEndpointConfig(ctx, &smapi.DescribeEndpointConfigInput{EndpointConfigName: name})
		if err == nil {
			return configContent(got), nil
		}
		if d, ok := declared[name]; ok && client.IsNotFound(err) {
			return configContentIn(d), nil
		}
		return nil, fmt.Errorf("endpoint_config %q: %w", name, err)
	}
	a, err := content(from)
	if err != nil {
		return nil, err
	}
	b, err := content(to)
	if err != nil {
		return nil, err
	}
	d := diffFields(a, b)
	return append([]string{fmt.Sprintf("endpoint_config %q → %q", from, to)}, d...), nil
}

// Content compared for immutability: the fields a Create request sets
// and Describe returns, normalized the way the server stores them.

func modelContentIn(m *smapi.CreateModelInput) map[string]any {
	x := *m
	x.Tags = nil
	if x.PrimaryContainer == nil && len(x.Containers) == 1 {
		c := x.Containers[0]
		x.PrimaryContainer, x.Containers = &c, nil
	}
	x.ModelName = ""
	return flatten(x)
}

func modelContent(m *smapi.DescribeModelOutput) map[string]any {
	return modelContentIn(&smapi.CreateModelInput{
		PrimaryContainer:       m.PrimaryContainer,
		Containers:             m.Containers,
		ExecutionRoleArn:       m.ExecutionRoleArn,
		EnableNetworkIsolation: m.EnableNetworkIsolation,
		Serai:                  m.Serai,
	})
}

func configContentIn(c *smapi.CreateEndpointConfigInput) map[string]any {
	x := *c
	x.Tags = nil
	x.EndpointConfigName = ""
	return flatten(x)
}

func configContent(c *smapi.DescribeEndpointConfigOutput) map[string]any {
	return configContentIn(&smapi.CreateEndpointConfigInput{
		ProductionVariants:       c.ProductionVariants,
		ShadowProductionVariants: c.ShadowProductionVariants,
		DataCaptureConfig:        c.DataCaptureConfig,
		KmsKeyId:                 c.KmsKeyId,
		Serai:                    c.Serai,
	})
}

// diffFields lists the flattened fields that differ, sorted:
// "path: old → new", with "(none)" for an absent side.
func diffFields(old, new map[string]any) []string {
	keys := map[string]bool{}
	for k := range old {
		keys[k] = true
	}
	for k := range new {
		keys[k] = true
	}
	var out []string
	for k := range keys {
		a, inA := old[k]
		b, inB := new[k]
		switch {
		case inA && inB && fmt.Sprint(a) == fmt.Sprint(b):
		case !inA:
			out = append(out, fmt.Sprintf("+ %s: %s", k, show(b)))
		case !inB:
			out = append(out, fmt.Sprintf("- %s: %s", k, show(a)))
		default:
			out = append(out, fmt.Sprintf("~ %s: %s → %s", k, show(a), show(b)))
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i][2:] < out[j][2:] })
	return out
}
