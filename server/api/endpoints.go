package api

import (
	"context"
	"errors"
	"strings"

	"github.com/seraihq/serai/server/records"
	"github.com/seraihq/serai/server/smapi"
	"github.com/seraihq/serai/server/translate"
)

// deployment checks SageMaker's DeploymentConfig members that jobspec
// does not know about (it sees the translated policy).
func (f *fieldErrors) deployment(path string, d *smapi.DeploymentConfig) {
	if d == nil {
		return
	}
	if ar := d.AutoRollbackConfiguration; ar != nil && len(ar.Alarms) > 0 {
		f.bad(path+".autoRollbackConfiguration.alarms", len(ar.Alarms),
			"Member must be empty: serai has no CloudWatch alarms; set the thresholds in Serai.AutoRollback (docs/api.md)")
	}
	bg := d.BlueGreenUpdatePolicy
	if bg == nil {
		return
	}
	p := path + ".blueGreenUpdatePolicy"
	trc := bg.TrafficRoutingConfiguration
	switch trc.Type {
	case "":
		f.null(p + ".trafficRoutingConfiguration.type")
	case smapi.TrafficAllAtOnce, smapi.TrafficCanary, smapi.TrafficLinear:
	default:
		f.bad(p+".trafficRoutingConfiguration.type", trc.Type, "Member must satisfy enum value set: [ALL_AT_ONCE, CANARY, LINEAR]")
	}
	if w := trc.WaitIntervalInSeconds; w < 0 || w > 3600 {
		f.bad(p+".trafficRoutingConfiguration.waitIntervalInSeconds", w, "Member must have value between 0 and 3600")
	}
	for name, c := range map[string]*smapi.CapacitySize{"canarySize": trc.CanarySize, "linearStepSize": trc.LinearStepSize} {
		if c == nil {
			continue
		}
		switch c.Type {
		case smapi.CapacityPercent:
		case smapi.CapacityInstance:
			f.bad(p+".trafficRoutingConfiguration."+name+".type", c.Type,
				"Member must be CAPACITY_PERCENT: serai's routers shift a share of requests, not of instances")
		default:
			f.bad(p+".trafficRoutingConfiguration."+name+".type", c.Type, "Member must satisfy enum value set: [CAPACITY_PERCENT]")
		}
	}
	if t := bg.TerminationWaitInSeconds; t != nil && (*t < 0 || *t > 3600) {
		f.bad(p+".terminationWaitInSeconds", *t, "Member must have value between 0 and 3600")
	}
	if t := bg.MaximumExecutionTimeoutInSeconds; t != nil && (*t < 600 || *t > 28800) {
		f.bad(p+".maximumExecutionTimeoutInSeconds", *t, "Member must have value between 600 and 28800")
	}
}

// loadConfig reads a config and its models for deploying it.
func (h *Handler) loadConfig(ctx context.Context, name string) (loaded[records.EndpointConfig], []loaded[records.Model], error) {
	c, err := load[records.EndpointConfig](ctx, h.cfg.Store, records.KindEndpointConfig, name)
	if errors.Is(err, records.ErrNotFound) {
		return c, nil, notFoundConfig(h.arn(arnEndpointConfig, name))
	}
	if err != nil {
		return c, nil, err
	}
	models, err := h.loadModels(ctx, &c.v.Spec)
	return c, models, err
}

func (h *Handler) createEndpoint(ctx context.Context, in *smapi.CreateEndpointInput) (*smapi.CreateEndpointOutput, error) {
	var f fieldErrors
	f.name("endpointName", in.EndpointName)
	f.name("endpointConfigName", in.EndpointConfigName)
	f.deployment("deploymentConfig", in.DeploymentConfig)
	f.tags("tags", in.Tags)
	if err := f.err(); err != nil {
		return nil, err
	}
	arn := h.arn(arnEndpoint, in.EndpointName)
	exists := validationf("Cannot create already existing endpoint %q.", arn)
	err := retry(ctx, func() error {
		taken, err := nameTaken(ctx, h.cfg.Store, records.KindEndpoint, in.EndpointName, func(e *records.Endpoint) string { return e.Name })
		if err != nil {
			return err
		}
		if taken {
			return exists
		}
		cfg, models, err := h.loadConfig(ctx, in.EndpointConfigName)
		if err != nil {
			return err
		}
		spec := *in
		spec.Tags = nil
		stores, err := h.storesOf(ctx, models, &cfg.v.Spec)
		if err != nil {
			return err
		}
		if err := semantic(translate.Input{
			Stores:          stores,
			Models:          modelSpecs(models),
			EndpointConfigs: []*smapi.CreateEndpointConfigInput{&cfg.v.Spec},
			Endpoints:       []*smapi.CreateEndpointInput{&spec},
		}); err != nil {
			return err
		}
		now := h.cfg.Now().UTC()
		ep := &records.Endpoint{
			Name:           in.EndpointName,
			ARN:            arn,
			CreationTime:   now,
			Tags:           in.Tags,
			Deployment:     in.DeploymentConfig,
			NextGeneration: 1,
			Op: &records.Operation{
				Kind:       records.OpCreate,
				Phase:      records.PhaseStart,
				StartTime:  now,
				PhaseStart: now,
				ConfigName: in.EndpointConfigName,
				Policy:     in.DeploymentConfig,
			},
		}
		if in.Serai != nil {
			ep.AutoRollback = in.Serai.AutoRollback
			ep.Op.AutoRollback = in.Serai.AutoRollback
		}
		ep.SetStatus(smapi.StatusCreating, "", now)
		return h.create(ctx, records.KindEndpoint, in.EndpointName, ep, append(touches(models), cfg.touch())...)
	})
	if err != nil {
		return nil, err
	}
	h.log.Info("endpoint created", "endpoint", in.EndpointName, "endpoint_config", in.EndpointConfigName)
	return &smapi.CreateEndpointOutput{EndpointArn: arn}, nil
}

// loadEndpoint reads an endpoint; missing is SageMaker's "Could not find
// endpoint".
func (h *Handler) loadEndpoint(ctx context.Context, name string) (loaded[records.Endpoint], error) {
	ep, err := load[records.Endpoint](ctx, h.cfg.Store, records.KindEndpoint, name)
	if errors.Is(err, records.ErrNotFound) {
		return ep, notFoundEndpoint(h.arn(arnEndpoint, name))
	}
	return ep, err
}

// updatable refuses changes to an endpoint with an operation under way
// (as SageMaker does) or one that never came up.
func updatable(ep *records.Endpoint) *apiError {
	switch {
	case ep.Status == smapi.StatusInService && ep.Op == nil:
		return nil
	case ep.Status == smapi.StatusFailed || ep.Status == smapi.StatusUpdateRollbackFailed:
		return validationf("Cannot update endpoint %q in status %s: delete it and create it again.", ep.ARN, ep.Status)
	}
	return validationf("Cannot update in-progress endpoint %q.", ep.ARN)
}

func (h *Handler) updateEndpoint(ctx context.Context, in *smapi.UpdateEndpointInput) (*smapi.UpdateEndpointOutput, error) {
	var f fieldErrors
	f.name("endpointName", in.EndpointName)
	f.name("endpointConfigName", in.EndpointConfigName)
	f.deployment("deploymentConfig", in.DeploymentConfig)
	if in.RetainAllVariantProperties {
		f.bad("retainAllVariantProperties", true, "Member must be false: a serai update deploys the new configuration as written (docs/api.md)")
	}
	if len(in.ExcludeRetainedVariantProperties) > 0 {
		f.bad("excludeRetainedVariantProperties", len(in.ExcludeRetainedVariantProperties), "Member must be empty: serai retains no variant properties")
	}
	if err := f.err(); err != nil {
		return nil, err
	}
	var arn string
	err := retry(ctx, func() error {
		l, err := h.loadEndpoint(ctx, in.EndpointName)
		if err != nil {
			return err
		}
		ep := l.v
		arn = ep.ARN
		if err := updatable(ep); err != nil {
			return err
		}
		cfg, models, err := h.loadConfig(ctx, in.EndpointConfigName)
		if err != nil {
			return err
		}
		// SageMaker: the request's policy, else the last one when asked
		// to retain it, else the default (blue/green, all at once).
		policy := in.DeploymentConfig
		if policy == nil && in.RetainDeploymentConfig {
			policy = ep.Deployment
		}
		ar := ep.AutoRollback
		if in.Serai != nil && in.Serai.AutoRollback != nil {
			ar = in.Serai.AutoRollback
		}
		stores, err := h.storesOf(ctx, models, &cfg.v.Spec)
		if err != nil {
			return err
		}
		if err := semantic(translate.Input{
			Stores:          stores,
			Models:          modelSpecs(models),
			EndpointConfigs: []*smapi.CreateEndpointConfigInput{&cfg.v.Spec},
			Endpoints: []*smapi.CreateEndpointInput{{
				EndpointName: in.EndpointName, EndpointConfigName: in.EndpointConfigName,
				DeploymentConfig: policy, Serai: &smapi.EndpointExtension{AutoRollback: ar},
			}},
		}); err != nil {
			return err
		}
		now := h.cfg.Now().UTC()
		ep.Deployment = policy
		ep.AutoRollback = ar
		ep.FailureReason = ""
		ep.Op = &records.Operation{
			Kind:         records.OpUpdate,
			Phase:        records.PhaseStart,
			StartTime:    now,
			PhaseStart:   now,
			ConfigName:   in.EndpointConfigName,
			Policy:       policy,
			AutoRollback: ar,
		}
		ep.SetStatus(smapi.StatusUpdating, "", now)
		ep.LastModifiedTime = now
		return h.replace(ctx, records.KindEndpoint, ep.Name, ep, l.idx, append(touches(models), cfg.touch())...)
	})
	if err != nil {
		return nil, err
	}
	h.log.Info("endpoint update started", "endpoint", in.EndpointName, "endpoint_config", in.EndpointConfigName)
	return &smapi.UpdateEndpointOutput{EndpointArn: arn}, nil
}

func (h *Handler) updateWeights(ctx context.Context, in *smapi.UpdateEndpointWeightsAndCapacitiesInput) (*smapi.UpdateEndpointWeightsAndCapacitiesOutput, error) {
	var f fieldErrors
	f.name("endpointName", in.EndpointName)
	switch n := len(in.DesiredWeightsAndCapacities); {
	case in.DesiredWeightsAndCapacities == nil:
		f.null("desiredWeightsAndCapacities")
	case n == 0:
		f.bad("desiredWeightsAndCapacities", "[]", "Member must have length greater than or equal to 1")
	case n > 10:
		f.bad("desiredWeightsAndCapacities", n, "Member must have length less than or equal to 10")
	}
	seen := map[string]bool{}
	for i, d := range in.DesiredWeightsAndCapacities {
		p := member("desiredWeightsAndCapacities", i)
		f.name(p+".variantName", d.VariantName)
		if seen[d.VariantName] {
			f.bad(p+".variantName", d.VariantName, "Member must be unique within the list")
		}
		seen[d.VariantName] = true
		if d.DesiredWeight == nil && d.DesiredInstanceCount == nil {
			f.null(p + ".desiredWeight")
		}
		if d.DesiredWeight != nil && *d.DesiredWeight < 0 {
			f.bad(p+".desiredWeight", *d.DesiredWeight, "Member must have value greater than or equal to 0")
		}
		if d.DesiredInstanceCount != nil && *d.DesiredInstanceCount < 0 {
			f.bad(p+".desiredInstanceCount", *d.DesiredInstanceCount, "Member must have value greater than or equal to 0")
		}
	}
	if err := f.err(); err != nil {
		return nil, err
	}
	var arn string
	err := retry(ctx, func() error {
		l, err := h.loadEndpoint(ctx, in.EndpointName)
		if err != nil {
			return err
		}
		ep := l.v
		arn = ep.ARN
		if err := updatable(ep); err != nil {
			return err
		}
		var cfg records.EndpointConfig
		if _, err := h.cfg.Store.Get(ctx, records.KindEndpointConfig, ep.ConfigName, &cfg); err != nil {
			if errors.Is(err, records.ErrNotFound) {
				return notFoundConfig(h.arn(arnEndpointConfig, ep.ConfigName))
			}
			return err
		}
		variants := map[string]smapi.ProductionVariant{}
		var all []string
		for _, v := range cfg.Spec.ProductionVariants {
			variants[v.VariantName] = v
			all = append(all, v.VariantName)
		}
		weights := map[string]float64{}
		if g := ep.LiveGeneration(); g != nil {
			for _, v := range g.Variants {
				weights[v.Name] = v.Weight
			}
		}
		for _, d := range in.DesiredWeightsAndCapacities {
			v, ok := variants[d.VariantName]
			if !ok {
				return validationf("The variant name %q is not present in endpoint %q (endpoint configuration %q has production variants %s).",
					d.VariantName, ep.ARN, ep.ConfigName, strings.Join(all, ", "))
			}
			if d.DesiredInstanceCount != nil && *d.DesiredInstanceCount == 0 &&
				(v.Serai == nil || v.Serai.Autoscaling == nil || v.Serai.Autoscaling.MinCapacity != 0) {
				return validationf("DesiredInstanceCount 0 for variant %q of endpoint %q is allowed only when the variant autoscales with MinCapacity 0.",
					d.VariantName, ep.ARN)
			}
			if d.DesiredWeight != nil {
				weights[d.VariantName] = *d.DesiredWeight
			}
		}
		var total float64
		for _, w := range weights {
			total += w
		}
		if total <= 0 {
			return validationf("The desired weights of endpoint %q would all be 0, so no variant would receive traffic.", ep.ARN)
		}
		now := h.cfg.Now().UTC()
		ep.FailureReason = ""
		ep.Op = &records.Operation{
			Kind:       records.OpWeights,
			Phase:      records.PhaseStart,
			StartTime:  now,
			PhaseStart: now,
			Weights:    in.DesiredWeightsAndCapacities,
		}
		ep.SetStatus(smapi.StatusUpdating, "", now)
		ep.LastModifiedTime = now
		return h.replace(ctx, records.KindEndpoint, ep.Name, ep, l.idx)
	})
	if err != nil {
		return nil, err
	}
	h.log.Info("endpoint weights and capacities update started", "endpoint", in.EndpointName)
	return &smapi.UpdateEndpointWeightsAndCapacitiesOutput{EndpointArn: arn}, nil
}

// deleteEndpoint starts a delete in any status; it replaces an operation
// under way (the reconciler drains and removes whatever exists). A
// second delete while one runs changes nothing.
func (h *Handler) deleteEndpoint(ctx context.Context, in *smapi.DeleteEndpointInput) (*struct{}, error) {
	var f fieldErrors
	f.name("endpointName", in.EndpointName)
	if err := f.err(); err != nil {
		return nil, err
	}
	err := retry(ctx, func() error {
		l, err := h.loadEndpoint(ctx, in.EndpointName)
		var corrupt *records.CorruptError
		if errors.As(err, &corrupt) {
			// Deleting is the way out of a corrupt record: the delete
			// needs nothing the record held (it stops every job of the
			// endpoint by name and removes its routing table).
			h.log.Warn("deleting an endpoint whose record is corrupt", "key", corrupt.Key, "error", corrupt.Err)
			l.v, err = &records.Endpoint{Name: in.EndpointName, ARN: h.arn(arnEndpoint, in.EndpointName)}, nil
		}
		if err != nil {
			return err
		}
		ep := l.v
		if ep.Status == smapi.StatusDeleting || (ep.Op != nil && ep.Op.Kind == records.OpDelete) {
			return nil
		}
		now := h.cfg.Now().UTC()
		ep.Op = &records.Operation{Kind: records.OpDelete, Phase: records.PhaseStart, StartTime: now, PhaseStart: now}
		ep.SetStatus(smapi.StatusDeleting, "", now)
		ep.LastModifiedTime = now
		return h.replace(ctx, records.KindEndpoint, ep.Name, ep, l.idx)
	})
	if err != nil {
		return nil, err
	}
	h.log.Info("endpoint delete started", "endpoint", in.EndpointName)
	return &struct{}{}, nil
}
