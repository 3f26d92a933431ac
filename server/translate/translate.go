// Package translate is the one translation between serai's HCL spec
// language (jobspec) and SageMaker's API shapes (smapi): FromSpec turns
// parsed files into the requests `serai apply` sends, ToSpec turns accepted
// requests back into a jobspec.Spec that jobspec validates and the
// scheduler compiles. An HCL file and the equivalent API calls therefore
// produce identical records.
//
// It must not talk to any agent or store; it maps shapes and nothing else.
package translate

import (
	"fmt"
	"math"
	"reflect"
	"time"

	"github.com/seraihq/serai/jobspec"
	"github.com/seraihq/serai/server/smapi"
)

// Requests are the API calls that create a spec's objects, each kind in
// name order (dependency order is stores, models, configs, endpoints).
type Requests struct {
	// Stores are operator operations (Serai.PutArtifactStore): a caller
	// without an operator key cannot make them, and models only name
	// stores.
	Stores          []smapi.PutArtifactStoreInput
	Models          []smapi.CreateModelInput
	EndpointConfigs []smapi.CreateEndpointConfigInput
	Endpoints       []smapi.CreateEndpointInput
}

// FromSpec translates a validated spec into API requests. Artifact stores
// are operator-owned records: each artifact_store block becomes a
// PutArtifactStore request, and models and data capture carry only the
// store's name.
func FromSpec(s *jobspec.Spec) Requests {
	var r Requests
	for _, n := range jobspec.SortedNames(s.ArtifactStores) {
		st := s.ArtifactStores[n]
		r.Stores = append(r.Stores, smapi.PutArtifactStoreInput{ArtifactStore: *Store(st), AllowedPrincipals: append([]string(nil), st.AllowedPrincipals...)})
	}
	for _, n := range jobspec.SortedNames(s.Models) {
		r.Models = append(r.Models, Model(s, s.Models[n]))
	}
	for _, n := range jobspec.SortedNames(s.EndpointConfigs) {
		r.EndpointConfigs = append(r.EndpointConfigs, EndpointConfig(s, s.EndpointConfigs[n]))
	}
	for _, n := range jobspec.SortedNames(s.Endpoints) {
		r.Endpoints = append(r.Endpoints, Endpoint(s.Endpoints[n]))
	}
	return r
}

// Model translates one model.
func Model(s *jobspec.Spec, m *jobspec.Model) smapi.CreateModelInput {
	in := smapi.CreateModelInput{
		ModelName: m.Name,
		PrimaryContainer: &smapi.ContainerDefinition{
			Image:        m.Image,
			ModelDataUrl: m.Artifact,
			Environment:  cloneMap(m.Environment),
		},
	}
	ext := &smapi.ModelExtension{
		ModelDataSha256: m.SHA256,
		Command:         m.Command,
		Args:            append([]string(nil), m.Args...),
		Driver:          m.Driver,
		DownloadTimeout: m.DownloadTimeout,
		StartupTimeout:  m.StartupTimeout,
	}
	if len(ext.Args) == 0 {
		ext.Args = nil
	}
	if m.ArtifactStore != "" {
		ext.ArtifactStore = &smapi.ArtifactStore{Name: m.ArtifactStore}
	}
	if !reflect.ValueOf(*ext).IsZero() {
		in.Serai = ext
	}
	return in
}

// Store translates an artifact_store block into the operator record's
// settings.
func Store(st *jobspec.ArtifactStore) *smapi.ArtifactStore {
	out := &smapi.ArtifactStore{Name: st.Name, Endpoint: st.Endpoint, Region: st.Region, PathStyle: st.PathStyle}
	if v := st.Vault; v != nil {
		out.Vault = &smapi.StoreVault{KVMount: v.KVMount, KVPath: v.KVPath, AWSMount: v.AWSMount, AWSRole: v.AWSRole}
	}
	return out
}

// EndpointConfig translates one endpoint config.
func EndpointConfig(s *jobspec.Spec, c *jobspec.EndpointConfig) smapi.CreateEndpointConfigInput {
	in := smapi.CreateEndpointConfigInput{EndpointConfigName: c.Name}
	for _, v := range c.Variants {
		in.ProductionVariants = append(in.ProductionVariants, variant(v))
	}
	for _, v := range c.ShadowVariants {
		in.ShadowProductionVariants = append(in.ShadowProductionVariants, variant(v))
	}
	ext := &smapi.EndpointConfigExtension{Datacenters: append([]string(nil), c.Datacenters...)}
	if len(ext.Datacenters) == 0 {
		ext.Datacenters = nil
	}
	if dc := c.DataCapture; dc != nil {
		out := &smapi.DataCaptureConfig{
			EnableCapture:             dc.Enabled,
			InitialSamplingPercentage: dc.SamplingPercent,
			DestinationS3Uri:          dc.Destination,
		}
		for _, m := range dc.Capture {
			out.CaptureOptions = append(out.CaptureOptions, smapi.CaptureOption{CaptureMode: captureMode[m]})
		}
		in.DataCaptureConfig = out
		if dc.ArtifactStore != "" {
			ext.DataCaptureStore = &smapi.ArtifactStore{Name: dc.ArtifactStore}
		}
	}
	if !reflect.ValueOf(*ext).IsZero() {
		in.Serai = ext
	}
	return in
}

var captureMode = map[string]string{"input": "Input", "output": "Output"}

func variant(v *jobspec.Variant) smapi.ProductionVariant {
	out := smapi.ProductionVariant{
		VariantName:          v.Name,
		ModelName:            v.Model,
		InitialInstanceCount: cloneP(v.InstanceCount),
		InstanceType:         v.InstanceType,
		InitialVariantWeight: cloneP(v.Weight),
	}
	ext := &smapi.VariantExtension{SamplingPercent: cloneP(v.SamplingPercent)}
	if r := v.Resources; r != nil {
		ext.Resources = &smapi.Resources{CPU: cloneP(r.CPU), MemoryMB: cloneP(r.MemoryMB), GPU: cloneP(r.GPU)}
	}
	if a := v.Autoscaling; a != nil {
		ext.Autoscaling = &smapi.Autoscaling{
			MinCapacity:                  a.MinCapacity,
			MaxCapacity:                  a.MaxCapacity,
			TargetInvocationsPerInstance: a.TargetInvocationsPerInstance,
			ScaleInCooldown:              a.ScaleInCooldown,
			ScaleOutCooldown:             a.ScaleOutCooldown,
			EvaluationInterval:           a.EvaluationInterval,
		}
	}
	if !reflect.ValueOf(*ext).IsZero() {
		out.Serai = ext
	}
	return out
}

// Endpoint translates one endpoint.
func Endpoint(e *jobspec.Endpoint) smapi.CreateEndpointInput {
	in := smapi.CreateEndpointInput{EndpointName: e.Name, EndpointConfigName: e.Config}
	d := e.Deployment
	if d == nil {
		return in
	}
	in.DeploymentConfig = DeploymentConfig(d)
	if ar := d.AutoRollback; ar != nil {
		in.Serai = &smapi.EndpointExtension{AutoRollback: &smapi.AutoRollback{
			MaxErrorRate:     cloneP(ar.MaxErrorRate),
			MaxP99Latency:    ar.MaxP99Latency,
			MinInvocations:   cloneP(ar.MinInvocations),
			EvaluationPeriod: ar.EvaluationCycle,
		}}
	}
	return in
}

// DeploymentConfig translates a deployment block into SageMaker's
// blue/green policy. Durations become whole seconds (SageMaker's unit);
// jobspec validation has already checked they parse.
func DeploymentConfig(d *jobspec.Deployment) *smapi.DeploymentConfig {
	trc := smapi.TrafficRoutingConfiguration{
		Type:                  smapi.TrafficAllAtOnce,
		WaitIntervalInSeconds: seconds(d.WaitInterval),
	}
	switch d.Strategy {
	case jobspec.StrategyCanary:
		trc.Type = smapi.TrafficCanary
		if d.CanarySize != nil {
			trc.CanarySize = &smapi.CapacitySize{Type: smapi.CapacityPercent, Value: *d.CanarySize}
		}
	case jobspec.StrategyLinear:
		trc.Type = smapi.TrafficLinear
		if d.LinearStepSize != nil {
			trc.LinearStepSize = &smapi.CapacitySize{Type: smapi.CapacityPercent, Value: *d.LinearStepSize}
		}
	}
	bg := &smapi.BlueGreenUpdatePolicy{TrafficRoutingConfiguration: trc}
	if d.TerminationWait != "" {
		bg.TerminationWaitInSeconds = ptr(seconds(d.TerminationWait))
	}
	if d.MaximumExecutionTimeout != "" {
		bg.MaximumExecutionTimeoutInSeconds = ptr(seconds(d.MaximumExecutionTimeout))
	}
	return &smapi.DeploymentConfig{BlueGreenUpdatePolicy: bg}
}

// seconds rounds a Go duration up to whole seconds (0 for "" or invalid).
func seconds(s string) int {
	if s == "" {
		return 0
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 {
		return 0
	}
	return int(math.Ceil(d.Seconds()))
}

// Input is what ToSpec reads: accepted requests, by name, and the
// operator's artifact store records they may name.
type Input struct {
	// Stores are the operator-owned stores (their records' settings).
	// A model or data capture names a store; its definition comes from
	// here alone, whatever else the request's store member holds.
	Stores          []*smapi.ArtifactStore
	Models          []*smapi.CreateModelInput
	EndpointConfigs []*smapi.CreateEndpointConfigInput
	Endpoints       []*smapi.CreateEndpointInput
}

// ToSpec translates API requests into a jobspec.Spec for validation and
// compilation. The spec's stores are in.Stores: a model's or data
// capture's store member contributes its name only, so no request field
// can choose a store's endpoint or Vault path. A store named but absent
// from in.Stores is left for jobspec.Validate to report. It does not
// validate: call jobspec.Validate.
func ToSpec(in Input) (*jobspec.Spec, error) {
	s := &jobspec.Spec{
		ArtifactStores:  map[string]*jobspec.ArtifactStore{},
		Models:          map[string]*jobspec.Model{},
		EndpointConfigs: map[string]*jobspec.EndpointConfig{},
		Endpoints:       map[string]*jobspec.Endpoint{},
	}
	for _, st := range in.Stores {
		if st == nil {
			continue
		}
		if _, ok := s.ArtifactStores[st.Name]; ok {
			return nil, fmt.Errorf("artifact store %q is given twice", st.Name)
		}
		s.ArtifactStores[st.Name] = ToStore(st)
	}
	storeName := func(st *smapi.ArtifactStore) string {
		if st == nil {
			return ""
		}
		return st.Name
	}
	for _, m := range in.Models {
		jm := &jobspec.Model{Name: m.ModelName}
		if c := m.PrimaryContainer; c != nil {
			jm.Image, jm.Artifact, jm.Environment = c.Image, c.ModelDataUrl, cloneMap(c.Environment)
		}
		if x := m.Serai; x != nil {
			jm.ArtifactStore = storeName(x.ArtifactStore)
			jm.SHA256, jm.Command, jm.Driver = x.ModelDataSha256, x.Command, x.Driver
			jm.Args = append([]string(nil), x.Args...)
			if len(jm.Args) == 0 {
				jm.Args = nil
			}
			jm.DownloadTimeout, jm.StartupTimeout = x.DownloadTimeout, x.StartupTimeout
		}
		s.Models[m.ModelName] = jm
	}
	for _, c := range in.EndpointConfigs {
		jc := &jobspec.EndpointConfig{Name: c.EndpointConfigName}
		for _, v := range c.ProductionVariants {
			jc.Variants = append(jc.Variants, toVariant(v, false))
		}
		for _, v := range c.ShadowProductionVariants {
			jc.ShadowVariants = append(jc.ShadowVariants, toVariant(v, true))
		}
		if x := c.Serai; x != nil {
			jc.Datacenters = append([]string(nil), x.Datacenters...)
			if len(jc.Datacenters) == 0 {
				jc.Datacenters = nil
			}
		}
		if dc := c.DataCaptureConfig; dc != nil {
			jd := &jobspec.DataCapture{Enabled: cloneP(dc.EnableCapture), SamplingPercent: cloneP(dc.InitialSamplingPercentage), Destination: dc.DestinationS3Uri}
			for _, o := range dc.CaptureOptions {
				mode := o.CaptureMode
				for k, v := range captureMode {
					if v == o.CaptureMode {
						mode = k
					}
				}
				jd.Capture = append(jd.Capture, mode)
			}
			if c.Serai != nil {
				jd.ArtifactStore = storeName(c.Serai.DataCaptureStore)
			}
			jc.DataCapture = jd
		}
		s.EndpointConfigs[c.EndpointConfigName] = jc
	}
	for _, e := range in.Endpoints {
		je := &jobspec.Endpoint{Name: e.EndpointName, Config: e.EndpointConfigName}
		je.Deployment = toDeployment(e.DeploymentConfig, e.Serai)
		s.Endpoints[e.EndpointName] = je
	}
	return s, nil
}

// ToStore translates an operator store record's settings into the
// spec's artifact_store.
func ToStore(st *smapi.ArtifactStore) *jobspec.ArtifactStore {
	js := &jobspec.ArtifactStore{Name: st.Name, Endpoint: st.Endpoint, Region: st.Region, PathStyle: st.PathStyle}
	if v := st.Vault; v != nil {
		js.Vault = &jobspec.StoreVault{KVMount: v.KVMount, KVPath: v.KVPath, AWSMount: v.AWSMount, AWSRole: v.AWSRole}
	}
	return js
}

func toVariant(v smapi.ProductionVariant, shadow bool) *jobspec.Variant {
	jv := &jobspec.Variant{
		Name:          v.VariantName,
		Model:         v.ModelName,
		InstanceType:  v.InstanceType,
		InstanceCount: cloneP(v.InitialInstanceCount),
		Weight:        cloneP(v.InitialVariantWeight),
		Shadow:        shadow,
	}
	if x := v.Serai; x != nil {
		jv.SamplingPercent = cloneP(x.SamplingPercent)
		if r := x.Resources; r != nil {
			jv.Resources = &jobspec.Resources{CPU: cloneP(r.CPU), MemoryMB: cloneP(r.MemoryMB), GPU: cloneP(r.GPU)}
		}
		if a := x.Autoscaling; a != nil {
			jv.Autoscaling = &jobspec.Autoscaling{
				MinCapacity:                  a.MinCapacity,
				MaxCapacity:                  a.MaxCapacity,
				TargetInvocationsPerInstance: a.TargetInvocationsPerInstance,
				ScaleInCooldown:              a.ScaleInCooldown,
				ScaleOutCooldown:             a.ScaleOutCooldown,
				EvaluationInterval:           a.EvaluationInterval,
			}
		}
	}
	return jv
}

// toDeployment is DeploymentConfig's inverse. Durations come back as
// Go durations of whole seconds ("300s"); FromSpec∘ToSpec keeps them as
// numbers of seconds, which is what the records hold.
func toDeployment(dc *smapi.DeploymentConfig, x *smapi.EndpointExtension) *jobspec.Deployment {
	if dc == nil && (x == nil || x.AutoRollback == nil) {
		return nil
	}
	d := &jobspec.Deployment{}
	if dc != nil && dc.BlueGreenUpdatePolicy != nil {
		bg := dc.BlueGreenUpdatePolicy
		trc := bg.TrafficRoutingConfiguration
		switch trc.Type {
		case smapi.TrafficCanary:
			d.Strategy = jobspec.StrategyCanary
			if trc.CanarySize != nil {
				d.CanarySize = ptr(trc.CanarySize.Value)
			}
		case smapi.TrafficLinear:
			d.Strategy = jobspec.StrategyLinear
			if trc.LinearStepSize != nil {
				d.LinearStepSize = ptr(trc.LinearStepSize.Value)
			}
		case smapi.TrafficAllAtOnce:
			d.Strategy = jobspec.StrategyAllAtOnce
		default:
			d.Strategy = trc.Type // jobspec validation names it
		}
		if trc.WaitIntervalInSeconds > 0 {
			d.WaitInterval = secondsString(trc.WaitIntervalInSeconds)
		}
		if bg.TerminationWaitInSeconds != nil {
			d.TerminationWait = secondsString(*bg.TerminationWaitInSeconds)
		}
		if bg.MaximumExecutionTimeoutInSeconds != nil {
			d.MaximumExecutionTimeout = secondsString(*bg.MaximumExecutionTimeoutInSeconds)
		}
	}
	if x != nil && x.AutoRollback != nil {
		ar := x.AutoRollback
		d.AutoRollback = &jobspec.AutoRollback{
			MaxErrorRate:    cloneP(ar.MaxErrorRate),
			MaxP99Latency:   ar.MaxP99Latency,
			MinInvocations:  cloneP(ar.MinInvocations),
			EvaluationCycle: ar.EvaluationPeriod,
		}
	}
	return d
}

func secondsString(n int) string { return fmt.Sprintf("%ds", n) }

func cloneP[T any](p *T) *T {
	if p == nil {
		return nil
	}
	v := *p
	return &v
}

func ptr[T any](v T) *T { return &v }

func cloneMap(m map[string]string) map[string]string {
	if len(m) == 0 {
		return nil
	}
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}
