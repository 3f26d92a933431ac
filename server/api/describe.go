package api

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/seraihq/serai/contract"
	"github.com/seraihq/serai/jobspec"
	"github.com/seraihq/serai/server/records"
	"github.com/seraihq/serai/server/smapi"
)

// describeEndpoint renders the endpoint record (see docs/api.md for the
// mapping), with live counts from the Observer.
func (h *Handler) describeEndpoint(ctx context.Context, in *smapi.DescribeEndpointInput) (*smapi.DescribeEndpointOutput, error) {
	var f fieldErrors
	f.name("endpointName", in.EndpointName)
	if err := f.err(); err != nil {
		return nil, err
	}
	var ep records.Endpoint
	if _, err := h.cfg.Store.Get(ctx, records.KindEndpoint, in.EndpointName, &ep); err != nil {
		if errors.Is(err, records.ErrNotFound) {
			return nil, notFoundEndpoint(h.arn(arnEndpoint, in.EndpointName))
		}
		var corrupt *records.CorruptError
		if errors.As(err, &corrupt) {
			return corruptEndpoint(h.arn(arnEndpoint, in.EndpointName), in.EndpointName, corrupt), nil
		}
		return nil, err
	}
	out := &smapi.DescribeEndpointOutput{
		EndpointName:         ep.Name,
		EndpointArn:          ep.ARN,
		EndpointConfigName:   ep.ConfigName,
		EndpointStatus:       ep.Status,
		FailureReason:        ep.FailureReason,
		CreationTime:         smapi.NewTime(ep.CreationTime),
		LastModifiedTime:     smapi.NewTime(ep.LastModifiedTime),
		LastDeploymentConfig: ep.Deployment,
		Serai:                &smapi.EndpointStatusExtension{StatusHistory: ep.History, AutoRollback: ep.AutoRollback},
	}
	for _, g := range ep.Generations {
		out.Serai.Generations = append(out.Serai.Generations, smapi.GenerationSummary{
			Generation: g.Generation, JobID: contract.JobID(ep.Name, g.Generation), ConfigName: g.ConfigName, Weight: g.Weight,
		})
	}

	obs := h.observe(ctx, ep.Name)
	configs := map[string]*records.EndpointConfig{}
	config := func(name string) *records.EndpointConfig {
		if name == "" {
			return nil
		}
		if c, ok := configs[name]; ok {
			return c
		}
		var c records.EndpointConfig
		if _, err := h.cfg.Store.Get(ctx, records.KindEndpointConfig, name, &c); err != nil {
			// Deleting a config an endpoint relies on is refused, so this
			// is a store error; render what the record says.
			h.log.Debug("describe: endpoint config unreadable", "endpoint", ep.Name, "endpoint_config", name, "error", err)
			configs[name] = nil
			return nil
		}
		configs[name] = &c
		return &c
	}
	models := map[string]*records.Model{}
	image := func(model string) string {
		m, ok := models[model]
		if !ok {
			var rec records.Model
			if _, err := h.cfg.Store.Get(ctx, records.KindModel, model, &rec); err == nil {
				m = &rec
			}
			models[model] = m
		}
		if m == nil || m.Spec.PrimaryContainer == nil {
			return ""
		}
		return m.Spec.PrimaryContainer.Image
	}

	op := ep.Op
	// The generation and config the ProductionVariants describe: the live
	// one, or while creating, the one being deployed.
	liveCfgName := ep.ConfigName
	live := ep.LiveGeneration()
	if liveCfgName == "" && op != nil {
		liveCfgName = op.ConfigName
		out.EndpointConfigName = op.ConfigName
		live = ep.Generation(op.Target)
	}
	vstatus := variantStatus(op)
	if c := config(liveCfgName); c != nil {
		creating := op != nil && op.Kind == records.OpCreate
		var st []smapi.VariantStatus
		if creating || (op != nil && (op.Kind == records.OpWeights || op.Kind == records.OpDelete)) {
			st = vstatus
		}
		gen := 0
		if live != nil {
			gen = live.Generation
		}
		for _, v := range c.Spec.ProductionVariants {
			s := smapi.ProductionVariantSummary{
				VariantName:          v.VariantName,
				CurrentWeight:        variantWeight(live, v),
				DesiredInstanceCount: count(v),
				VariantStatus:        st,
			}
			s.DesiredWeight = s.CurrentWeight
			countRequested := false
			if op != nil && op.Kind == records.OpWeights {
				for _, d := range op.Weights {
					if d.VariantName != v.VariantName {
						continue
					}
					if d.DesiredWeight != nil {
						s.DesiredWeight = *d.DesiredWeight
					}
					if d.DesiredInstanceCount != nil {
						s.DesiredInstanceCount, countRequested = *d.DesiredInstanceCount, true
					}
				}
			}
			if o, ok := obs[GV{gen, v.VariantName}]; ok && gen > 0 {
				s.CurrentInstanceCount = o.Passing
				if !countRequested {
					s.DesiredInstanceCount = o.Desired
				}
				s.DeployedImages = deployed(image(v.ModelName), o.Image, ep.LastModifiedTime)
			}
			out.ProductionVariants = append(out.ProductionVariants, s)
			if vs := variantScaling(gen, v, obs); vs != nil {
				out.Serai.Scaling = append(out.Serai.Scaling, *vs)
			}
		}
		for _, v := range c.Spec.ShadowProductionVariants {
			s := smapi.ProductionVariantSummary{
				VariantName:          v.VariantName,
				DesiredInstanceCount: count(v),
				VariantStatus:        st,
			}
			if v.InitialVariantWeight != nil {
				s.CurrentWeight, s.DesiredWeight = *v.InitialVariantWeight, *v.InitialVariantWeight
			}
			if o, ok := obs[GV{gen, v.VariantName}]; ok && gen > 0 {
				s.CurrentInstanceCount, s.DesiredInstanceCount = o.Passing, o.Desired
				s.DeployedImages = deployed(image(v.ModelName), o.Image, ep.LastModifiedTime)
			}
			out.ShadowProductionVariants = append(out.ShadowProductionVariants, s)
		}
		if dc := c.Spec.DataCaptureConfig; dc != nil {
			s := &smapi.DataCaptureConfigSummary{EnableCapture: dc.EnableCapture == nil || *dc.EnableCapture, DestinationS3Uri: dc.DestinationS3Uri}
			if dc.InitialSamplingPercentage != nil {
				s.CurrentSamplingPercentage = *dc.InitialSamplingPercentage
			}
			s.CaptureStatus = "Stopped"
			if s.EnableCapture {
				s.CaptureStatus = "Started"
			}
			out.DataCaptureConfig = s
		}
	}

	if op != nil && op.Kind == records.OpUpdate {
		p := &smapi.PendingDeploymentSummary{EndpointConfigName: op.ConfigName, StartTime: smapi.NewTime(op.StartTime)}
		target := ep.Generation(op.Target)
		if c := config(op.ConfigName); c != nil {
			for _, v := range c.Spec.ProductionVariants {
				s := smapi.PendingProductionVariantSummary{
					VariantName:          v.VariantName,
					CurrentWeight:        variantWeight(target, v),
					DesiredInstanceCount: count(v),
					InstanceType:         v.InstanceType,
					VariantStatus:        vstatus,
				}
				s.DesiredWeight = s.CurrentWeight
				if target != nil {
					if o, ok := obs[GV{target.Generation, v.VariantName}]; ok {
						s.CurrentInstanceCount, s.DesiredInstanceCount = o.Passing, o.Desired
						s.DeployedImages = deployed(image(v.ModelName), o.Image, op.StartTime)
					}
				}
				p.ProductionVariants = append(p.ProductionVariants, s)
			}
		}
		out.PendingDeploymentSummary = p
	}
	return out, nil
}

// corruptEndpoint describes an endpoint whose record does not decode:
// Failed, with the key and the decode error, so the one endpoint shows
// what is wrong and how to mend it while every other endpoint is served
// as usual. The reconciler leaves such an endpoint alone (its jobs and
// routing table stay as they were), so it may well still serve traffic.
func corruptEndpoint(arn, name string, c *records.CorruptError) *smapi.DescribeEndpointOutput {
	return &smapi.DescribeEndpointOutput{
		EndpointName:   name,
		EndpointArn:    arn,
		EndpointStatus: smapi.StatusFailed,
		FailureReason:  corruptReason(c),
	}
}

// corruptReason is the FailureReason of an endpoint whose record is
// corrupt (the reconciler logs the same words).
func corruptReason(c *records.CorruptError) string {
	return fmt.Sprintf("record %s is corrupt (%v): the reconciler leaves this endpoint as it was until the key is rewritten or the endpoint deleted (DeleteEndpoint)", c.Key, c.Err)
}

// observe asks the Observer, bounded in time; on error or without one
// there are no live counts.
func (h *Handler) observe(ctx context.Context, endpoint string) map[GV]VariantObservation {
	if h.cfg.Observer == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, h.cfg.ObserveTimeout)
	defer cancel()
	o, err := h.cfg.Observer.Observe(ctx, endpoint)
	if err != nil {
		h.log.Debug("describe: no live counts", "endpoint", endpoint, "error", err)
		return nil
	}
	return o.Variants
}

// variantStatus renders the operation's phase as SageMaker's
// VariantStatus list (one entry, since the phase started).
func variantStatus(op *records.Operation) []smapi.VariantStatus {
	if op == nil {
		return nil
	}
	status := smapi.VariantUpdating
	switch op.Kind {
	case records.OpDelete:
		status = smapi.VariantDeleting
	case records.OpCreate, records.OpUpdate:
		switch op.Phase {
		case records.PhaseStart, records.PhaseRegister, records.PhaseWaitHealthy:
			if op.Kind == records.OpCreate {
				status = smapi.VariantCreating
			}
		case records.PhaseActivate, records.PhaseShift:
			status = smapi.VariantActivatingTraffic
		case records.PhaseBake:
			status = smapi.VariantBaking
		}
	}
	return []smapi.VariantStatus{{Status: status, StatusMessage: op.LastError, StartTime: smapi.NewTime(op.PhaseStart)}}
}

// variantWeight is a variant's weight within generation g (relative
// weights, as SageMaker's CurrentWeight), or the config's initial weight
// when the generation does not exist yet.
func variantWeight(g *records.Generation, v smapi.ProductionVariant) float64 {
	if g != nil {
		for _, w := range g.Variants {
			if w.Name == v.VariantName {
				return w.Weight
			}
		}
	}
	if v.InitialVariantWeight != nil {
		return *v.InitialVariantWeight
	}
	return jobspec.DefaultWeight
}

func count(v smapi.ProductionVariant) int {
	if v.InitialInstanceCount != nil {
		return *v.InitialInstanceCount
	}
	return 1
}

func deployed(specified, resolved string, when time.Time) []smapi.DeployedImage {
	if specified == "" && resolved == "" {
		return nil
	}
	return []smapi.DeployedImage{{SpecifiedImage: specified, ResolvedImage: resolved, ResolutionTime: smapi.NewTime(when)}}
}

// variantScaling is a live variant's autoscaling policy (from its config)
// and last scaling events (from the Observer); nil when it has neither.
func variantScaling(gen int, v smapi.ProductionVariant, obs map[GV]VariantObservation) *smapi.VariantScaling {
	vs := smapi.VariantScaling{VariantName: v.VariantName, Generation: gen}
	if v.Serai != nil {
		vs.Policy = v.Serai.Autoscaling
	}
	if o, ok := obs[GV{gen, v.VariantName}]; ok && gen > 0 {
		vs.Events = o.ScalingEvents
	}
	if vs.Policy == nil && len(vs.Events) == 0 {
		return nil
	}
	return &vs
}
