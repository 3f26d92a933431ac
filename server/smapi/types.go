package smapi

import "time"

// Tag is a SageMaker resource tag.
type Tag struct {
	Key   string `json:"Key"`
	Value string `json:"Value"`
}

// ContainerDefinition is SageMaker's PrimaryContainer / Containers[i].
type ContainerDefinition struct {
	Image             string            `json:"Image,omitempty"`
	ModelDataUrl      string            `json:"ModelDataUrl,omitempty"`
	Environment       map[string]string `json:"Environment,omitempty"`
	ContainerHostname string            `json:"ContainerHostname,omitempty"`
	Mode              string            `json:"Mode,omitempty"`
}

// CreateModelInput is CreateModel's request.
type CreateModelInput struct {
	ModelName              string                `json:"ModelName"`
	PrimaryContainer       *ContainerDefinition  `json:"PrimaryContainer,omitempty"`
	Containers             []ContainerDefinition `json:"Containers,omitempty"`
	ExecutionRoleArn       string                `json:"ExecutionRoleArn,omitempty"`
	EnableNetworkIsolation bool                  `json:"EnableNetworkIsolation,omitempty"`
	Tags                   []Tag                 `json:"Tags,omitempty"`
	Serai                  *ModelExtension       `json:"Serai,omitempty"`
}

// ModelExtension is what a serai model needs beyond SageMaker's fields.
type ModelExtension struct {
	// ArtifactStore is the S3-compatible store ModelDataUrl lives in;
	// its credentials stay in Vault. Absent: AWS S3 with the store name
	// "default".
	ArtifactStore *ArtifactStore `json:"ArtifactStore,omitempty"`
	// ModelDataSha256 pins the artifact (hex sha256 as downloaded).
	ModelDataSha256 string `json:"ModelDataSha256,omitempty"`
	// Command runs a program with exec/raw_exec instead of an image.
	Command string   `json:"Command,omitempty"`
	Args    []string `json:"Args,omitempty"`
	// Driver is the Nomad task driver: docker (images), exec (default for
	// commands) or raw_exec.
	Driver string `json:"Driver,omitempty"`
	// DownloadTimeout and StartupTimeout are Go durations ("15m").
	DownloadTimeout string `json:"DownloadTimeout,omitempty"`
	StartupTimeout  string `json:"StartupTimeout,omitempty"`
}

// ArtifactStore is an S3-compatible artifact store (non-secret settings).
type ArtifactStore struct {
	Name      string      `json:"Name"`
	Endpoint  string      `json:"Endpoint,omitempty"`
	Region    string      `json:"Region,omitempty"`
	PathStyle bool        `json:"PathStyle,omitempty"`
	Vault     *StoreVault `json:"Vault,omitempty"`
}

// StoreVault says where Vault keeps a store's keys.
type StoreVault struct {
	KVMount  string `json:"KVMount,omitempty"`
	KVPath   string `json:"KVPath,omitempty"`
	AWSMount string `json:"AWSMount,omitempty"`
	AWSRole  string `json:"AWSRole,omitempty"`
}

// CreateModelOutput is CreateModel's answer.
type CreateModelOutput struct {
	ModelArn string `json:"ModelArn"`
}

// DescribeModelOutput is DescribeModel's answer.
type DescribeModelOutput struct {
	ModelName              string                `json:"ModelName"`
	ModelArn               string                `json:"ModelArn"`
	PrimaryContainer       *ContainerDefinition  `json:"PrimaryContainer,omitempty"`
	Containers             []ContainerDefinition `json:"Containers,omitempty"`
	ExecutionRoleArn       string                `json:"ExecutionRoleArn,omitempty"`
	EnableNetworkIsolation bool                  `json:"EnableNetworkIsolation"`
	CreationTime           Time                  `json:"CreationTime"`
	Serai                  *ModelExtension       `json:"Serai,omitempty"`
}

// ProductionVariant is one entry of ProductionVariants or
// ShadowProductionVariants.
type ProductionVariant struct {
	VariantName          string            `json:"VariantName"`
	ModelName            string            `json:"ModelName,omitempty"`
	InitialInstanceCount *int              `json:"InitialInstanceCount,omitempty"`
	InstanceType         string            `json:"InstanceType,omitempty"`
	InitialVariantWeight *float64          `json:"InitialVariantWeight,omitempty"`
	Serai                *VariantExtension `json:"Serai,omitempty"`
}

// VariantExtension: resources, autoscaling and shadow sampling, which
// SageMaker keeps elsewhere (Application Auto Scaling) or derives.
type VariantExtension struct {
	Resources   *Resources   `json:"Resources,omitempty"`
	Autoscaling *Autoscaling `json:"Autoscaling,omitempty"`
	// SamplingPercent is the share of requests mirrored to a shadow
	// variant (1..100).
	SamplingPercent *int `json:"SamplingPercent,omitempty"`
}

// Resources override the instance type's cpu (MHz), memory (MB) and GPUs.
type Resources struct {
	CPU      *int `json:"CPU,omitempty"`
	MemoryMB *int `json:"MemoryMB,omitempty"`
	GPU      *int `json:"GPU,omitempty"`
}

// Autoscaling is target tracking on invocations per instance per minute.
type Autoscaling struct {
	MinCapacity                  int     `json:"MinCapacity"`
	MaxCapacity                  int     `json:"MaxCapacity"`
	TargetInvocationsPerInstance float64 `json:"TargetInvocationsPerInstance"`
	ScaleInCooldown              string  `json:"ScaleInCooldown,omitempty"`
	ScaleOutCooldown             string  `json:"ScaleOutCooldown,omitempty"`
	EvaluationInterval           string  `json:"EvaluationInterval,omitempty"`
}

// CaptureOption is one DataCaptureConfig.CaptureOptions entry.
type CaptureOption struct {
	CaptureMode string `json:"CaptureMode"` // Input | Output
}

// DataCaptureConfig is SageMaker's data capture.
type DataCaptureConfig struct {
	EnableCapture             *bool           `json:"EnableCapture,omitempty"`
	InitialSamplingPercentage *int            `json:"InitialSamplingPercentage,omitempty"`
	DestinationS3Uri          string          `json:"DestinationS3Uri"`
	CaptureOptions            []CaptureOption `json:"CaptureOptions,omitempty"`
}

// CreateEndpointConfigInput is CreateEndpointConfig's request.
type CreateEndpointConfigInput struct {
	EndpointConfigName       string                   `json:"EndpointConfigName"`
	ProductionVariants       []ProductionVariant      `json:"ProductionVariants"`
	ShadowProductionVariants []ProductionVariant      `json:"ShadowProductionVariants,omitempty"`
	DataCaptureConfig        *DataCaptureConfig       `json:"DataCaptureConfig,omitempty"`
	KmsKeyId                 string                   `json:"KmsKeyId,omitempty"`
	Tags                     []Tag                    `json:"Tags,omitempty"`
	Serai                    *EndpointConfigExtension `json:"Serai,omitempty"`
}

// EndpointConfigExtension: where the variants run, and the store data
// capture writes to.
type EndpointConfigExtension struct {
	Datacenters []string `json:"Datacenters,omitempty"`
	// DataCaptureStore is the artifact store of DestinationS3Uri.
	DataCaptureStore *ArtifactStore `json:"DataCaptureStore,omitempty"`
}

// CreateEndpointConfigOutput is CreateEndpointConfig's answer.
type CreateEndpointConfigOutput struct {
	EndpointConfigArn string `json:"EndpointConfigArn"`
}

// DescribeEndpointConfigOutput is DescribeEndpointConfig's answer.
type DescribeEndpointConfigOutput struct {
	EndpointConfigName       string                   `json:"EndpointConfigName"`
	EndpointConfigArn        string                   `json:"EndpointConfigArn"`
	ProductionVariants       []ProductionVariant      `json:"ProductionVariants"`
	ShadowProductionVariants []ProductionVariant      `json:"ShadowProductionVariants,omitempty"`
	DataCaptureConfig        *DataCaptureConfig       `json:"DataCaptureConfig,omitempty"`
	KmsKeyId                 string                   `json:"KmsKeyId,omitempty"`
	CreationTime             Time                     `json:"CreationTime"`
	Serai                    *EndpointConfigExtension `json:"Serai,omitempty"`
}

// Traffic routing types of a blue/green update.
const (
	TrafficAllAtOnce = "ALL_AT_ONCE"
	TrafficCanary    = "CANARY"
	TrafficLinear    = "LINEAR"
)

// Capacity size types.
const (
	CapacityPercent  = "CAPACITY_PERCENT"
	CapacityInstance = "INSTANCE_COUNT"
)

// CapacitySize is SageMaker's CanarySize / LinearStepSize.
type CapacitySize struct {
	Type  string  `json:"Type"`
	Value float64 `json:"Value"`
}

// TrafficRoutingConfiguration says how traffic moves to the new fleet.
type TrafficRoutingConfiguration struct {
	Type                  string        `json:"Type"`
	WaitIntervalInSeconds int           `json:"WaitIntervalInSeconds"`
	CanarySize            *CapacitySize `json:"CanarySize,omitempty"`
	LinearStepSize        *CapacitySize `json:"LinearStepSize,omitempty"`
}

// BlueGreenUpdatePolicy is SageMaker's blue/green deployment.
type BlueGreenUpdatePolicy struct {
	TrafficRoutingConfiguration      TrafficRoutingConfiguration `json:"TrafficRoutingConfiguration"`
	TerminationWaitInSeconds         *int                        `json:"TerminationWaitInSeconds,omitempty"`
	MaximumExecutionTimeoutInSeconds *int                        `json:"MaximumExecutionTimeoutInSeconds,omitempty"`
}

// Alarm names a CloudWatch alarm; serai has no CloudWatch and refuses them
// (its rollback thresholds ride in the endpoint extension).
type Alarm struct {
	AlarmName string `json:"AlarmName"`
}

// AutoRollbackConfig is SageMaker's alarm-based rollback.
type AutoRollbackConfig struct {
	Alarms []Alarm `json:"Alarms,omitempty"`
}

// DeploymentConfig is SageMaker's DeploymentConfig.
type DeploymentConfig struct {
	BlueGreenUpdatePolicy     *BlueGreenUpdatePolicy `json:"BlueGreenUpdatePolicy,omitempty"`
	AutoRollbackConfiguration *AutoRollbackConfig    `json:"AutoRollbackConfiguration,omitempty"`
}

// EndpointExtension carries the auto-rollback thresholds serai evaluates
// from the routers' own metrics while a new generation bakes.
type EndpointExtension struct {
	AutoRollback *AutoRollback `json:"AutoRollback,omitempty"`
}

// AutoRollback thresholds; a nil field is not checked.
type AutoRollback struct {
	MaxErrorRate     *float64 `json:"MaxErrorRate,omitempty"`
	MaxP99Latency    string   `json:"MaxP99Latency,omitempty"`
	MinInvocations   *int     `json:"MinInvocations,omitempty"`
	EvaluationPeriod string   `json:"EvaluationPeriod,omitempty"`
}

// CreateEndpointInput is CreateEndpoint's request.
type CreateEndpointInput struct {
	EndpointName       string             `json:"EndpointName"`
	EndpointConfigName string             `json:"EndpointConfigName"`
	DeploymentConfig   *DeploymentConfig  `json:"DeploymentConfig,omitempty"`
	Tags               []Tag              `json:"Tags,omitempty"`
	Serai              *EndpointExtension `json:"Serai,omitempty"`
}

// CreateEndpointOutput is CreateEndpoint's answer.
type CreateEndpointOutput struct {
	EndpointArn string `json:"EndpointArn"`
}

// UpdateEndpointInput is UpdateEndpoint's request.
type UpdateEndpointInput struct {
	EndpointName                     string             `json:"EndpointName"`
	EndpointConfigName               string             `json:"EndpointConfigName"`
	DeploymentConfig                 *DeploymentConfig  `json:"DeploymentConfig,omitempty"`
	RetainAllVariantProperties       bool               `json:"RetainAllVariantProperties,omitempty"`
	ExcludeRetainedVariantProperties []map[string]any   `json:"ExcludeRetainedVariantProperties,omitempty"`
	RetainDeploymentConfig           bool               `json:"RetainDeploymentConfig,omitempty"`
	Serai                            *EndpointExtension `json:"Serai,omitempty"`
}

// UpdateEndpointOutput is UpdateEndpoint's answer.
type UpdateEndpointOutput struct {
	EndpointArn string `json:"EndpointArn"`
}

// DesiredWeightAndCapacity is one entry of
// UpdateEndpointWeightsAndCapacities.
type DesiredWeightAndCapacity struct {
	VariantName          string   `json:"VariantName"`
	DesiredWeight        *float64 `json:"DesiredWeight,omitempty"`
	DesiredInstanceCount *int     `json:"DesiredInstanceCount,omitempty"`
}

// UpdateEndpointWeightsAndCapacitiesInput is that operation's request.
type UpdateEndpointWeightsAndCapacitiesInput struct {
	EndpointName                string                     `json:"EndpointName"`
	DesiredWeightsAndCapacities []DesiredWeightAndCapacity `json:"DesiredWeightsAndCapacities"`
}

// Endpoint statuses (SageMaker's EndpointStatus).
const (
	StatusOutOfService         = "OutOfService"
	StatusCreating             = "Creating"
	StatusInService            = "InService"
	StatusUpdating             = "Updating"
	StatusSystemUpdating       = "SystemUpdating"
	StatusRollingBack          = "RollingBack"
	StatusDeleting             = "Deleting"
	StatusFailed               = "Failed"
	StatusUpdateRollbackFailed = "UpdateRollbackFailed"
)

// Variant statuses (SageMaker's VariantStatus).
const (
	VariantCreating          = "Creating"
	VariantUpdating          = "Updating"
	VariantDeleting          = "Deleting"
	VariantActivatingTraffic = "ActivatingTraffic"
	VariantBaking            = "Baking"
)

// VariantStatus is one entry of ProductionVariantSummary.VariantStatus.
type VariantStatus struct {
	Status        string `json:"Status"`
	StatusMessage string `json:"StatusMessage,omitempty"`
	StartTime     Time   `json:"StartTime"`
}

// DeployedImage is one entry of DeployedImages.
type DeployedImage struct {
	SpecifiedImage string `json:"SpecifiedImage,omitempty"`
	ResolvedImage  string `json:"ResolvedImage,omitempty"`
	ResolutionTime Time   `json:"ResolutionTime"`
}

// ProductionVariantSummary describes one live variant.
type ProductionVariantSummary struct {
	VariantName          string          `json:"VariantName"`
	DeployedImages       []DeployedImage `json:"DeployedImages,omitempty"`
	CurrentWeight        float64         `json:"CurrentWeight"`
	DesiredWeight        float64         `json:"DesiredWeight"`
	CurrentInstanceCount int             `json:"CurrentInstanceCount"`
	DesiredInstanceCount int             `json:"DesiredInstanceCount"`
	VariantStatus        []VariantStatus `json:"VariantStatus,omitempty"`
}

// PendingProductionVariantSummary describes a variant of the config being
// deployed.
type PendingProductionVariantSummary struct {
	VariantName          string          `json:"VariantName"`
	DeployedImages       []DeployedImage `json:"DeployedImages,omitempty"`
	CurrentWeight        float64         `json:"CurrentWeight"`
	DesiredWeight        float64         `json:"DesiredWeight"`
	CurrentInstanceCount int             `json:"CurrentInstanceCount"`
	DesiredInstanceCount int             `json:"DesiredInstanceCount"`
	InstanceType         string          `json:"InstanceType,omitempty"`
	VariantStatus        []VariantStatus `json:"VariantStatus,omitempty"`
}

// PendingDeploymentSummary is present while an update is under way.
type PendingDeploymentSummary struct {
	EndpointConfigName string                            `json:"EndpointConfigName"`
	ProductionVariants []PendingProductionVariantSummary `json:"ProductionVariants,omitempty"`
	StartTime          Time                              `json:"StartTime"`
}

// DataCaptureConfigSummary is DescribeEndpoint's data capture state.
type DataCaptureConfigSummary struct {
	EnableCapture             bool   `json:"EnableCapture"`
	CaptureStatus             string `json:"CaptureStatus"`
	CurrentSamplingPercentage int    `json:"CurrentSamplingPercentage"`
	DestinationS3Uri          string `json:"DestinationS3Uri"`
}

// DescribeEndpointOutput is DescribeEndpoint's answer.
type DescribeEndpointOutput struct {
	EndpointName             string                     `json:"EndpointName"`
	EndpointArn              string                     `json:"EndpointArn"`
	EndpointConfigName       string                     `json:"EndpointConfigName"`
	ProductionVariants       []ProductionVariantSummary `json:"ProductionVariants,omitempty"`
	ShadowProductionVariants []ProductionVariantSummary `json:"ShadowProductionVariants,omitempty"`
	DataCaptureConfig        *DataCaptureConfigSummary  `json:"DataCaptureConfig,omitempty"`
	EndpointStatus           string                     `json:"EndpointStatus"`
	FailureReason            string                     `json:"FailureReason,omitempty"`
	CreationTime             Time                       `json:"CreationTime"`
	LastModifiedTime         Time                       `json:"LastModifiedTime"`
	LastDeploymentConfig     *DeploymentConfig          `json:"LastDeploymentConfig,omitempty"`
	PendingDeploymentSummary *PendingDeploymentSummary  `json:"PendingDeploymentSummary,omitempty"`
	Serai                    *EndpointStatusExtension   `json:"Serai,omitempty"`
}

// EndpointStatusExtension: what DescribeEndpoint tells beyond SageMaker.
type EndpointStatusExtension struct {
	// Generations are the live Nomad jobs and their share of traffic.
	Generations []GenerationSummary `json:"Generations,omitempty"`
	// StatusHistory is the sequence of statuses with times, newest last.
	StatusHistory []StatusChange `json:"StatusHistory,omitempty"`
	AutoRollback  *AutoRollback  `json:"AutoRollback,omitempty"`
	// Scaling is, per live variant with autoscaling or a scaling record,
	// its policy and its last scaling events.
	Scaling []VariantScaling `json:"Scaling,omitempty"`
}

// VariantScaling is one variant's autoscaling: the policy its config asks
// for and the last changes of its instance count as Nomad recorded them
// (the Nomad Autoscaler's actions and errors, serai's own scale requests).
type VariantScaling struct {
	VariantName string         `json:"VariantName"`
	Generation  int            `json:"Generation"`
	Policy      *Autoscaling   `json:"Policy,omitempty"`
	Events      []ScalingEvent `json:"Events,omitempty"`
}

// ScalingEvent is one entry of Nomad's scaling record of a task group,
// oldest first.
type ScalingEvent struct {
	Time          Time `json:"Time"`
	PreviousCount int  `json:"PreviousCount"`
	// Count is the new count; nil for an event that changed none (an
	// autoscaler error or a skipped action).
	Count   *int   `json:"Count,omitempty"`
	Message string `json:"Message,omitempty"`
	Error   bool   `json:"Error,omitempty"`
	// Source is who asked: the Nomad Autoscaler ("nomad-autoscaler"),
	// serai ("serai"), or "" when the event does not say.
	Source string `json:"Source,omitempty"`
}

// GenerationSummary is one live generation.
type GenerationSummary struct {
	Generation int     `json:"Generation"`
	JobID      string  `json:"JobID"`
	ConfigName string  `json:"EndpointConfigName"`
	Weight     float64 `json:"Weight"`
}

// StatusChange is one entry of the status history.
type StatusChange struct {
	Status string `json:"Status"`
	Time   Time   `json:"Time"`
	Reason string `json:"Reason,omitempty"`
}

// Summaries for the List operations.
type (
	ModelSummary struct {
		ModelName    string `json:"ModelName"`
		ModelArn     string `json:"ModelArn"`
		CreationTime Time   `json:"CreationTime"`
	}
	EndpointConfigSummary struct {
		EndpointConfigName string `json:"EndpointConfigName"`
		EndpointConfigArn  string `json:"EndpointConfigArn"`
		CreationTime       Time   `json:"CreationTime"`
	}
	EndpointSummary struct {
		EndpointName     string `json:"EndpointName"`
		EndpointArn      string `json:"EndpointArn"`
		CreationTime     Time   `json:"CreationTime"`
		LastModifiedTime Time   `json:"LastModifiedTime"`
		EndpointStatus   string `json:"EndpointStatus"`
	}
)

// Time is a timestamp as the AWS JSON protocols write it: epoch seconds as
// a JSON number with fractional part.
type Time struct{ time.Time }
