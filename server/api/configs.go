package api

import (
	"context"
	"errors"
	"math"
	"strings"

	"github.com/seraihq/serai/jobspec"
	"github.com/seraihq/serai/server/records"
	"github.com/seraihq/serai/server/smapi"
	"github.com/seraihq/serai/server/translate"
)

func (f *fieldErrors) variants(path string, vs []smapi.ProductionVariant) {
	for i, v := range vs {
		p := member(path, i)
		f.name(p+".variantName", v.VariantName)
		f.name(p+".modelName", v.ModelName)
		if v.InstanceType == "" {
			f.null(p + ".instanceType")
		}
		if v.InitialInstanceCount != nil && *v.InitialInstanceCount < 0 {
			f.bad(p+".initialInstanceCount", *v.InitialInstanceCount, "Member must have value greater than or equal to 0")
		}
		if v.InitialVariantWeight != nil && *v.InitialVariantWeight < 0 {
			f.bad(p+".initialVariantWeight", *v.InitialVariantWeight, "Member must have value greater than or equal to 0")
		}
	}
}

// normalizeConfig turns what SageMaker expresses with its own members
// into serai's terms, so the SDKs need no extension:
//   - a shadow variant's InitialVariantWeight is SageMaker's way to say
//     which share of requests it mirrors (its weight over the production
//     variants' total): it becomes Serai.SamplingPercent;
//   - an s3:// data capture destination without a store uses the default
//     store, as models do.
func normalizeConfig(in smapi.CreateEndpointConfigInput) smapi.CreateEndpointConfigInput {
	var total float64
	for _, v := range in.ProductionVariants {
		if v.InitialVariantWeight == nil {
			total += jobspec.DefaultWeight
		} else if *v.InitialVariantWeight > 0 {
			total += *v.InitialVariantWeight
		}
	}
	shadows := make([]smapi.ProductionVariant, len(in.ShadowProductionVariants))
	for i, v := range in.ShadowProductionVariants {
		if v.InitialVariantWeight != nil && *v.InitialVariantWeight > 0 && total > 0 && (v.Serai == nil || v.Serai.SamplingPercent == nil) {
			x := smapi.VariantExtension{}
			if v.Serai != nil {
				x = *v.Serai
			}
			pct := int(math.Round(100 * *v.InitialVariantWeight / total))
			x.SamplingPercent = ptrTo(max(1, min(100, pct)))
			v.Serai, v.InitialVariantWeight = &x, nil
		}
		shadows[i] = v
	}
	if len(shadows) > 0 {
		in.ShadowProductionVariants = shadows
	}
	if dc := in.DataCaptureConfig; dc != nil && strings.HasPrefix(dc.DestinationS3Uri, "s3://") && (in.Serai == nil || in.Serai.DataCaptureStore == nil) {
		x := smapi.EndpointConfigExtension{}
		if in.Serai != nil {
			x = *in.Serai
		}
		x.DataCaptureStore = &smapi.ArtifactStore{Name: DefaultArtifactStore}
		in.Serai = &x
	}
	return in
}

func ptrTo[T any](v T) *T { return &v }

// loadModels reads the models a config lists; the first missing one is
// SageMaker's "Could not find model".
func (h *Handler) loadModels(ctx context.Context, spec *smapi.CreateEndpointConfigInput) ([]loaded[records.Model], error) {
	var out []loaded[records.Model]
	for _, name := range modelNames(&records.EndpointConfig{Spec: *spec}) {
		m, err := load[records.Model](ctx, h.cfg.Store, records.KindModel, name)
		if errors.Is(err, records.ErrNotFound) {
			return nil, notFoundModel(h.arn(arnModel, name))
		}
		if err != nil {
			return nil, err
		}
		out = append(out, m)
	}
	return out, nil
}

func modelSpecs(ms []loaded[records.Model]) []*smapi.CreateModelInput {
	out := make([]*smapi.CreateModelInput, 0, len(ms))
	for _, m := range ms {
		out = append(out, &m.v.Spec)
	}
	return out
}

func touches[T any](ls []loaded[T]) []records.TxnOp {
	out := make([]records.TxnOp, 0, len(ls))
	for _, l := range ls {
		out = append(out, l.touch())
	}
	return out
}

func (h *Handler) createEndpointConfig(ctx context.Context, in *smapi.CreateEndpointConfigInput) (*smapi.CreateEndpointConfigOutput, error) {
	var f fieldErrors
	f.name("endpointConfigName", in.EndpointConfigName)
	switch n := len(in.ProductionVariants); {
	case in.ProductionVariants == nil:
		f.null("productionVariants")
	case n == 0:
		f.bad("productionVariants", "[]", "Member must have length greater than or equal to 1")
	case n > jobspec.MaxVariants:
		f.bad("productionVariants", n, "Member must have length less than or equal to 10")
	}
	f.variants("productionVariants", in.ProductionVariants)
	f.variants("shadowProductionVariants", in.ShadowProductionVariants)
	if in.KmsKeyId != "" {
		f.bad("kmsKeyId", in.KmsKeyId, "Member must be absent: serai attaches no encrypted volumes (docs/api.md)")
	}
	if dc := in.DataCaptureConfig; dc != nil && dc.DestinationS3Uri == "" {
		f.null("dataCaptureConfig.destinationS3Uri")
	}
	for i, v := range in.ShadowProductionVariants {
		if v.InitialVariantWeight != nil && *v.InitialVariantWeight == 0 && (v.Serai == nil || v.Serai.SamplingPercent == nil) {
			f.bad(member("shadowProductionVariants", i)+".initialVariantWeight", 0.0, "Member must be greater than 0: a shadow variant's weight sets the share of requests mirrored to it")
		}
	}
	f.tags("tags", in.Tags)
	if x := in.Serai; x != nil {
		f.storeMember("serai.dataCaptureStore", x.DataCaptureStore)
	}
	if err := f.err(); err != nil {
		return nil, err
	}
	spec := normalizeConfig(*in)
	spec.Tags = nil
	arn := h.arn(arnEndpointConfig, in.EndpointConfigName)
	exists := validationf("Cannot create already existing endpoint configuration %q.", arn)
	rec := &records.EndpointConfig{Name: in.EndpointConfigName, ARN: arn, CreationTime: h.cfg.Now().UTC(), Spec: spec, Tags: in.Tags}
	err := retry(ctx, func() error {
		taken, err := nameTaken(ctx, h.cfg.Store, records.KindEndpointConfig, in.EndpointConfigName, func(c *records.EndpointConfig) string { return c.Name })
		if err != nil {
			return err
		}
		if taken {
			return exists
		}
		models, err := h.loadModels(ctx, &spec)
		if err != nil {
			return err
		}
		stores := h.newStoreRefs()
		if spec.Serai != nil {
			if err := stores.named(ctx, "serai.dataCaptureStore.name", spec.Serai.DataCaptureStore); err != nil {
				return err
			}
		}
		for _, m := range models {
			if x := m.v.Spec.Serai; x != nil {
				if err := stores.of(ctx, x.ArtifactStore); err != nil {
					return err
				}
			}
		}
		if err := semantic(translate.Input{Stores: stores.settings(), Models: modelSpecs(models), EndpointConfigs: []*smapi.CreateEndpointConfigInput{&spec}}); err != nil {
			return err
		}
		return h.create(ctx, records.KindEndpointConfig, in.EndpointConfigName, rec, append(touches(models), stores.touches()...)...)
	})
	if err != nil {
		return nil, err
	}
	h.log.Info("endpoint config created", "endpoint_config", in.EndpointConfigName)
	return &smapi.CreateEndpointConfigOutput{EndpointConfigArn: arn}, nil
}

func (h *Handler) describeEndpointConfig(ctx context.Context, in *smapi.DescribeEndpointConfigInput) (*smapi.DescribeEndpointConfigOutput, error) {
	var f fieldErrors
	f.name("endpointConfigName", in.EndpointConfigName)
	if err := f.err(); err != nil {
		return nil, err
	}
	var c records.EndpointConfig
	if _, err := h.cfg.Store.Get(ctx, records.KindEndpointConfig, in.EndpointConfigName, &c); err != nil {
		if errors.Is(err, records.ErrNotFound) {
			return nil, notFoundConfig(h.arn(arnEndpointConfig, in.EndpointConfigName))
		}
		return nil, err
	}
	return &smapi.DescribeEndpointConfigOutput{
		EndpointConfigName:       c.Name,
		EndpointConfigArn:        c.ARN,
		ProductionVariants:       c.Spec.ProductionVariants,
		ShadowProductionVariants: c.Spec.ShadowProductionVariants,
		DataCaptureConfig:        c.Spec.DataCaptureConfig,
		KmsKeyId:                 c.Spec.KmsKeyId,
		CreationTime:             smapi.NewTime(c.CreationTime),
		Serai:                    c.Spec.Serai,
	}, nil
}

// deleteEndpointConfig refuses (ResourceInUse) while any endpoint record
// relies on the config: as its live config, as the config an operation
// deploys, or as a generation's (during a blue/green update, and until a
// delete has finished). SageMaker lets it go and leaves the endpoint
// unable to scale or update; serai's reconciler reads the config to
// deploy, so it stays.
func (h *Handler) deleteEndpointConfig(ctx context.Context, in *smapi.DeleteEndpointConfigInput) (*struct{}, error) {
	var f fieldErrors
	f.name("endpointConfigName", in.EndpointConfigName)
	if err := f.err(); err != nil {
		return nil, err
	}
	arn := h.arn(arnEndpointConfig, in.EndpointConfigName)
	err := retry(ctx, func() error {
		c, err := load[records.EndpointConfig](ctx, h.cfg.Store, records.KindEndpointConfig, in.EndpointConfigName)
		if errors.Is(err, records.ErrNotFound) {
			return notFoundConfig(arn)
		}
		if err != nil {
			return err
		}
		eps, _, err := records.List[records.Endpoint](ctx, h.cfg.Store, records.KindEndpoint)
		if err != nil {
			return err
		}
		for _, ep := range eps {
			for _, cn := range endpointRefs(ep) {
				if cn == in.EndpointConfigName {
					return inUsef("Cannot delete endpoint configuration %q: endpoint %q (%s) uses it. Delete the endpoint or update it to another configuration first.",
						arn, ep.Name, ep.Status)
				}
			}
		}
		return h.cfg.Store.Delete(ctx, records.KindEndpointConfig, in.EndpointConfigName, c.idx)
	})
	if err != nil {
		return nil, err
	}
	h.log.Info("endpoint config deleted", "endpoint_config", in.EndpointConfigName)
	return &struct{}{}, nil
}
