// Package jobspec owns serai's HCL spec language: the artifact_store, model,
// endpoint_config and endpoint blocks, their parsing and every validation
// rule, with positioned diagnostics in HCL's own format.
//
// It must not touch Nomad, Consul or Vault: it turns bytes into a validated
// Spec and nothing else. Compiling a Spec into Nomad jobs is the scheduler
// package's work.
package jobspec

import (
	"github.com/hashicorp/hcl/v2"
)

// Spec is every object declared across one or more spec files, after
// validation. Maps are keyed by object name.
type Spec struct {
	ArtifactStores  map[string]*ArtifactStore
	Models          map[string]*Model
	EndpointConfigs map[string]*EndpointConfig
	Endpoints       map[string]*Endpoint
}

// file is the top level of one spec file as gohcl decodes it.
type file struct {
	ArtifactStores  []*ArtifactStore  `hcl:"artifact_store,block"`
	Models          []*Model          `hcl:"model,block"`
	EndpointConfigs []*EndpointConfig `hcl:"endpoint_config,block"`
	Endpoints       []*Endpoint       `hcl:"endpoint,block"`
}

// ArtifactStore is an S3-compatible store. Everything here is non-secret;
// the keys live in Vault at the path Vault describes.
type ArtifactStore struct {
	Name      string      `hcl:"name,label"`
	Endpoint  string      `hcl:"endpoint,optional"`
	Region    string      `hcl:"region,optional"`
	PathStyle bool        `hcl:"path_style,optional"`
	Vault     *StoreVault `hcl:"vault,block"`
	// AllowedPrincipals are the SigV4 access key IDs that may name the
	// store in their models ("*": any authenticated caller). Stores are
	// operator-owned: `serai apply` sends this block as an operator
	// operation, which only an operator's key may make.
	AllowedPrincipals []string `hcl:"allowed_principals,optional"`

	Body     hcl.Body  `hcl:",body"`
	DefRange hcl.Range `hcl:",def_range"`
}

// StoreVault says where Vault keeps a store's credentials: KV v2 static
// keys (the default) or an AWS secrets engine role.
type StoreVault struct {
	KVMount  string `hcl:"kv_mount,optional"`
	KVPath   string `hcl:"kv_path,optional"`
	AWSMount string `hcl:"aws_mount,optional"`
	AWSRole  string `hcl:"aws_role,optional"`

	Body hcl.Body `hcl:",body"`
}

// Model is SageMaker's CreateModel: an artifact plus a container (image) or
// a command, and the environment the server starts with.
type Model struct {
	Name            string            `hcl:"name,label"`
	Artifact        string            `hcl:"artifact,optional"`
	SHA256          string            `hcl:"sha256,optional"`
	ArtifactStore   string            `hcl:"artifact_store,optional"`
	Image           string            `hcl:"image,optional"`
	Command         string            `hcl:"command,optional"`
	Args            []string          `hcl:"args,optional"`
	Driver          string            `hcl:"driver,optional"`
	Environment     map[string]string `hcl:"environment,optional"`
	DownloadTimeout string            `hcl:"download_timeout,optional"`
	StartupTimeout  string            `hcl:"startup_timeout,optional"`

	Body     hcl.Body  `hcl:",body"`
	DefRange hcl.Range `hcl:",def_range"`
}

// EndpointConfig is SageMaker's CreateEndpointConfig.
type EndpointConfig struct {
	Name           string       `hcl:"name,label"`
	Datacenters    []string     `hcl:"datacenters,optional"`
	Variants       []*Variant   `hcl:"variant,block"`
	ShadowVariants []*Variant   `hcl:"shadow_variant,block"`
	DataCapture    *DataCapture `hcl:"data_capture,block"`

	Body     hcl.Body  `hcl:",body"`
	DefRange hcl.Range `hcl:",def_range"`
}

// Variant is a production (or shadow) variant: one Nomad task group.
type Variant struct {
	Name          string   `hcl:"name,label"`
	Model         string   `hcl:"model"`
	InstanceType  string   `hcl:"instance_type"`
	InstanceCount *int     `hcl:"instance_count,optional"`
	Weight        *float64 `hcl:"weight,optional"`
	// SamplingPercent is the share of requests mirrored to a shadow variant.
	SamplingPercent *int         `hcl:"sampling_percent,optional"`
	Resources       *Resources   `hcl:"resources,block"`
	Autoscaling     *Autoscaling `hcl:"autoscaling,block"`

	Body     hcl.Body  `hcl:",body"`
	DefRange hcl.Range `hcl:",def_range"`

	// Shadow is set by the parser for shadow_variant blocks.
	Shadow bool
}

// Resources overrides what the instance type gives.
type Resources struct {
	CPU      *int `hcl:"cpu,optional"`
	MemoryMB *int `hcl:"memory,optional"`
	GPU      *int `hcl:"gpu,optional"`

	Body hcl.Body `hcl:",body"`
}

// Autoscaling is SageMaker's target tracking on
// SageMakerVariantInvocationsPerInstance, carried out by the Nomad Autoscaler.
type Autoscaling struct {
	MinCapacity                  int     `hcl:"min_capacity"`
	MaxCapacity                  int     `hcl:"max_capacity"`
	TargetInvocationsPerInstance float64 `hcl:"target_invocations_per_instance"`
	ScaleInCooldown              string  `hcl:"scale_in_cooldown,optional"`
	ScaleOutCooldown             string  `hcl:"scale_out_cooldown,optional"`
	EvaluationInterval           string  `hcl:"evaluation_interval,optional"`

	Body hcl.Body `hcl:",body"`
}

// DataCapture is SageMaker's DataCaptureConfig.
type DataCapture struct {
	Enabled         *bool    `hcl:"enabled,optional"`
	SamplingPercent *int     `hcl:"sampling_percent,optional"`
	Destination     string   `hcl:"destination"`
	ArtifactStore   string   `hcl:"artifact_store,optional"`
	Capture         []string `hcl:"capture,optional"`

	Body hcl.Body `hcl:",body"`
}

// Endpoint is SageMaker's CreateEndpoint/UpdateEndpoint: which config is
// live and how a switch to a new config is rolled out.
type Endpoint struct {
	Name       string      `hcl:"name,label"`
	Config     string      `hcl:"config"`
	Deployment *Deployment `hcl:"deployment,block"`

	Body     hcl.Body  `hcl:",body"`
	DefRange hcl.Range `hcl:",def_range"`
}

// Deployment is SageMaker's DeploymentConfig (blue/green traffic routing
// plus auto-rollback).
type Deployment struct {
	Strategy                string        `hcl:"strategy,optional"`
	CanarySize              *float64      `hcl:"canary_size,optional"`
	LinearStepSize          *float64      `hcl:"linear_step_size,optional"`
	WaitInterval            string        `hcl:"wait_interval,optional"`
	TerminationWait         string        `hcl:"termination_wait,optional"`
	MaximumExecutionTimeout string        `hcl:"maximum_execution_timeout,optional"`
	AutoRollback            *AutoRollback `hcl:"auto_rollback,block"`

	Body hcl.Body `hcl:",body"`
}

// AutoRollback holds the thresholds that roll a deployment back while it
// bakes.
type AutoRollback struct {
	MaxErrorRate    *float64 `hcl:"max_error_rate,optional"`
	MaxP99Latency   string   `hcl:"max_p99_latency,optional"`
	MinInvocations  *int     `hcl:"min_invocations,optional"`
	EvaluationCycle string   `hcl:"evaluation_period,optional"`

	Body hcl.Body `hcl:",body"`
}

// Deployment strategies.
const (
	StrategyAllAtOnce = "all_at_once"
	StrategyCanary    = "canary"
	StrategyLinear    = "linear"
)

// Limits and defaults taken from SageMaker.
const (
	MaxVariants             = 10
	DefaultWeight           = 1.0
	DefaultCooldown         = "300s"
	DefaultDownloadTimeout  = "15m"
	DefaultStartupTimeout   = "5m"
	DefaultStoreRegion      = "us-east-1"
	DefaultKVMount          = "secret"
	DefaultAWSMount         = "aws"
	DefaultEvaluationPeriod = "1m"
)

// Nomad task drivers a model runs under.
const (
	DriverDocker  = "docker"
	DriverExec    = "exec"
	DriverRawExec = "raw_exec"
)

// TaskDriver is the Nomad driver the model's tasks run with: docker for
// an image, else the model's driver, exec by default.
func (m *Model) TaskDriver() string {
	switch {
	case m.Image != "":
		return DriverDocker
	case m.Driver != "":
		return m.Driver
	}
	return DriverExec
}

// Count returns the instance count (default 1).
func (v *Variant) Count() int {
	if v.InstanceCount == nil {
		return 1
	}
	return *v.InstanceCount
}

// EffectiveWeight returns the variant weight (SageMaker's default 1.0).
func (v *Variant) EffectiveWeight() float64 {
	if v.Weight == nil {
		return DefaultWeight
	}
	return *v.Weight
}

// CredentialPath is the Vault API path the fetch task's template reads.
func (s *ArtifactStore) CredentialPath() string {
	v := s.Vault
	if v != nil && v.AWSRole != "" {
		mount := v.AWSMount
		if mount == "" {
			mount = DefaultAWSMount
		}
		return mount + "/creds/" + v.AWSRole
	}
	mount, path := DefaultKVMount, "serai/stores/"+s.Name
	if v != nil {
		if v.KVMount != "" {
			mount = v.KVMount
		}
		if v.KVPath != "" {
			path = v.KVPath
		}
	}
	return mount + "/data/" + path
}

// UsesAWSEngine reports whether credentials come from the AWS secrets engine.
func (s *ArtifactStore) UsesAWSEngine() bool {
	return s.Vault != nil && s.Vault.AWSRole != ""
}

// EffectiveRegion returns the configured region or the default.
func (s *ArtifactStore) EffectiveRegion() string {
	if s.Region == "" {
		return DefaultStoreRegion
	}
	return s.Region
}
