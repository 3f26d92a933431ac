package api

import (
	"context"
	"errors"
	"strings"

	"github.com/seraihq/serai/server/records"
	"github.com/seraihq/serai/server/smapi"
	"github.com/seraihq/serai/server/translate"
)

// DefaultArtifactStore is the store an s3:// ModelDataUrl is read from
// when the request names none (as the AWS SDKs never do). Like every
// store it is an operator record: until an operator puts a store named
// "default" that allows the caller, such models are refused.
const DefaultArtifactStore = "default"

func (h *Handler) createModel(ctx context.Context, in *smapi.CreateModelInput) (*smapi.CreateModelOutput, error) {
	var f fieldErrors
	f.name("modelName", in.ModelName)
	f.tags("tags", in.Tags)
	spec := *in
	spec.Tags = nil
	switch {
	case len(spec.Containers) > 1:
		f.bad("containers", len(spec.Containers), "Member must have length less than or equal to 1 (serai runs one container per model; use PrimaryContainer)")
	case len(spec.Containers) == 1 && spec.PrimaryContainer != nil:
		f.bad("containers", 1, "Member must be absent when primaryContainer is set")
	case len(spec.Containers) == 1:
		// One entry of Containers is PrimaryContainer by another name.
		c := spec.Containers[0]
		spec.PrimaryContainer, spec.Containers = &c, nil
	}
	if c := spec.PrimaryContainer; c != nil {
		if c.Mode != "" && c.Mode != "SingleModel" {
			f.bad("primaryContainer.mode", c.Mode, "Member must satisfy enum value set: [SingleModel] (serai does not serve multi-model endpoints)")
		}
	}
	// SageMaker models name S3 artifacts without a store; serai needs one
	// (its Vault path holds the keys), so the documented default applies.
	if c := spec.PrimaryContainer; c != nil && strings.HasPrefix(c.ModelDataUrl, "s3://") && (spec.Serai == nil || spec.Serai.ArtifactStore == nil) {
		x := smapi.ModelExtension{}
		if spec.Serai != nil {
			x = *spec.Serai
		}
		x.ArtifactStore = &smapi.ArtifactStore{Name: DefaultArtifactStore}
		spec.Serai = &x
	}
	if x := spec.Serai; x != nil {
		f.storeMember("serai.artifactStore", x.ArtifactStore)
	}
	if c := spec.PrimaryContainer; c != nil {
		f.artifactURL(c.ModelDataUrl, spec.Serai, h.cfg.AllowFileArtifacts)
	}
	if spec.EnableNetworkIsolation {
		f.bad("enableNetworkIsolation", true, "Member must be false: serai does not isolate model servers from the network (docs/api.md)")
	}
	if err := f.err(); err != nil {
		return nil, err
	}
	arn := h.arn(arnModel, in.ModelName)
	rec := &records.Model{Name: in.ModelName, ARN: arn, CreationTime: h.cfg.Now().UTC(), Spec: spec, Tags: in.Tags, Principal: principal(ctx)}
	exists := validationf("Cannot create already existing model %q.", arn)
	err := retry(ctx, func() error {
		stores := h.newStoreRefs()
		if spec.Serai != nil {
			if err := stores.named(ctx, "serai.artifactStore.name", spec.Serai.ArtifactStore); err != nil {
				return err
			}
		}
		if err := semantic(translate.Input{Stores: stores.settings(), Models: []*smapi.CreateModelInput{&spec}}); err != nil {
			return err
		}
		if err := h.admitModel(&spec); err != nil {
			return err
		}
		taken, err := nameTaken(ctx, h.cfg.Store, records.KindModel, in.ModelName, func(m *records.Model) string { return m.Name })
		if err != nil {
			return err
		}
		if taken {
			return exists
		}
		return h.create(ctx, records.KindModel, in.ModelName, rec, stores.touches()...)
	})
	if err != nil {
		return nil, err
	}
	h.log.Info("model created", "model", in.ModelName)
	return &smapi.CreateModelOutput{ModelArn: arn}, nil
}

// artifactURL applies the server's policy on artifact URL schemes, beyond
// the spec's syntax: file:// only where the operator allows it (such a URL
// names a file on the Nomad client, the fetch task's own secrets
// included), and a store only for s3:// (a store's keys serve to read
// its objects and nothing else).
func (f *fieldErrors) artifactURL(url string, x *smapi.ModelExtension, allowFile bool) {
	const path = "primaryContainer.modelDataUrl"
	switch {
	case strings.HasPrefix(strings.ToLower(url), "file:") && !allowFile:
		f.bad(path, url, "Member must not be a file:// URL: this server refuses them (serai server --allow-file-artifacts allows them; serai dev does)")
	case url != "" && !strings.HasPrefix(url, "s3://") && x != nil && x.ArtifactStore != nil:
		f.bad("serai.artifactStore", x.ArtifactStore.Name, "Member must be absent unless modelDataUrl is an s3:// URL: a store's keys are for reading its objects")
	}
}

func (h *Handler) describeModel(ctx context.Context, in *smapi.DescribeModelInput) (*smapi.DescribeModelOutput, error) {
	var f fieldErrors
	f.name("modelName", in.ModelName)
	if err := f.err(); err != nil {
		return nil, err
	}
	var m records.Model
	if _, err := h.cfg.Store.Get(ctx, records.KindModel, in.ModelName, &m); err != nil {
		if errors.Is(err, records.ErrNotFound) {
			return nil, notFoundModel(h.arn(arnModel, in.ModelName))
		}
		return nil, err
	}
	return &smapi.DescribeModelOutput{
		ModelName:              m.Name,
		ModelArn:               m.ARN,
		PrimaryContainer:       m.Spec.PrimaryContainer,
		ExecutionRoleArn:       m.Spec.ExecutionRoleArn,
		EnableNetworkIsolation: m.Spec.EnableNetworkIsolation,
		CreationTime:           smapi.NewTime(m.CreationTime),
		Serai:                  m.Spec.Serai,
	}, nil
}

// deleteModel refuses (ResourceInUse) while any endpoint record relies on
// a config that lists the model; a model only unused configs list may
// go, as in SageMaker (those configs then cannot be deployed until the
// model exists again).
func (h *Handler) deleteModel(ctx context.Context, in *smapi.DeleteModelInput) (*struct{}, error) {
	var f fieldErrors
	f.name("modelName", in.ModelName)
	if err := f.err(); err != nil {
		return nil, err
	}
	arn := h.arn(arnModel, in.ModelName)
	err := retry(ctx, func() error {
		// Read the model first: a reference written after this read
		// touches it, so the delete below fails and this runs again.
		m, err := load[records.Model](ctx, h.cfg.Store, records.KindModel, in.ModelName)
		if errors.Is(err, records.ErrNotFound) {
			return notFoundModel(arn)
		}
		if err != nil {
			return err
		}
		eps, _, err := records.List[records.Endpoint](ctx, h.cfg.Store, records.KindEndpoint)
		if err != nil {
			return err
		}
		cfgs := map[string]*records.EndpointConfig{}
		for _, ep := range eps {
			for _, cn := range endpointRefs(ep) {
				c, ok := cfgs[cn]
				if !ok {
					var rec records.EndpointConfig
					if _, err := h.cfg.Store.Get(ctx, records.KindEndpointConfig, cn, &rec); err != nil {
						if errors.Is(err, records.ErrNotFound) {
							continue
						}
						return err
					}
					c = &rec
					cfgs[cn] = c
				}
				for _, mn := range modelNames(c) {
					if mn == in.ModelName {
						return inUsef("Cannot delete model %q: endpoint %q uses it through endpoint configuration %q. Delete the endpoint or update it to a configuration without this model first.",
							arn, ep.Name, cn)
					}
				}
			}
		}
		return h.cfg.Store.Delete(ctx, records.KindModel, in.ModelName, m.idx)
	})
	if err != nil {
		return nil, err
	}
	h.log.Info("model deleted", "model", in.ModelName)
	return &struct{}{}, nil
}
