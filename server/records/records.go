package records

import (
	"time"

	"github.com/seraihq/serai/server/smapi"
)

// Model is a CreateModel request as accepted, with its identity. Models are
// immutable; only Tags change.
type Model struct {
	Name         string                 `json:"name"`
	ARN          string                 `json:"arn"`
	CreationTime time.Time              `json:"creation_time"`
	Spec         smapi.CreateModelInput `json:"spec"` // Spec.Tags is always empty: see Tags
	Tags         []smapi.Tag            `json:"tags,omitempty"`
	// Principal is the access key ID that created the model ("" when
	// the server runs without authentication), for audit.
	Principal string `json:"principal,omitempty"`
}

// ArtifactStore is an operator-owned artifact store: its non-secret
// settings, where Vault keeps its keys, and who may name it. Models and
// data capture refer to a store by name only; the reconciler reads this
// record when it compiles a generation and writes the model's Vault
// policy, so a model can reach no credential path but its store's.
type ArtifactStore struct {
	Name         string    `json:"name"`
	CreationTime time.Time `json:"creation_time"`
	// Settings is the store as the operator defined it (Name repeated).
	Settings smapi.ArtifactStore `json:"settings"`
	// AllowedPrincipals are the SigV4 access key IDs whose requests may
	// name the store ("*": any authenticated caller). Operators may always
	// name it.
	AllowedPrincipals []string `json:"allowed_principals,omitempty"`
}

// Allows reports whether principal may name the store.
func (s *ArtifactStore) Allows(principal string) bool {
	for _, p := range s.AllowedPrincipals {
		if p == "*" || (principal != "" && p == principal) {
			return true
		}
	}
	return false
}

// EndpointConfig is a CreateEndpointConfig request as accepted. Immutable
// but for Tags.
type EndpointConfig struct {
	Name         string                          `json:"name"`
	ARN          string                          `json:"arn"`
	CreationTime time.Time                       `json:"creation_time"`
	Spec         smapi.CreateEndpointConfigInput `json:"spec"` // Spec.Tags is always empty
	Tags         []smapi.Tag                     `json:"tags,omitempty"`
}

// Operation kinds an endpoint can be in the middle of.
const (
	OpCreate  = "create"
	OpUpdate  = "update"
	OpWeights = "weights"
	OpDelete  = "delete"
)

// Phases of an operation, in the order the reconciler runs them. Each is
// one idempotent step; the record names the phase to resume at. The API
// starts operations at PhaseStart and reads the phase for VariantStatus.
const (
	PhaseStart       = "start"
	PhaseRegister    = "register"
	PhaseWaitHealthy = "wait-healthy"
	PhaseActivate    = "activate"
	PhaseShift       = "shift"
	PhaseBake        = "bake"
	PhaseTermWait    = "terminate-wait"
	PhaseRetire      = "retire"
	PhaseRollback    = "rollback"
	PhaseFail        = "fail"
	PhaseScale       = "scale"
	PhaseDrain       = "drain"
	PhaseStop        = "stop"
)

// Endpoint is an endpoint's desired state, what is live, and the operation
// under way. The API handlers start operations (set Op and Status); the
// reconciler carries them out step by step, writing the record before each
// effect that depends on it, so a reconciler restarted anywhere resumes
// from the record alone.
type Endpoint struct {
	Name             string      `json:"name"`
	ARN              string      `json:"arn"`
	CreationTime     time.Time   `json:"creation_time"`
	LastModifiedTime time.Time   `json:"last_modified_time"`
	Tags             []smapi.Tag `json:"tags,omitempty"`

	// ConfigName is the config the endpoint runs once no operation is
	// under way (the last successfully deployed one).
	ConfigName string `json:"config_name"`
	// Deployment is the policy updates follow (CreateEndpoint's or the
	// last UpdateEndpoint's, as SageMaker retains it).
	Deployment   *smapi.DeploymentConfig `json:"deployment,omitempty"`
	AutoRollback *smapi.AutoRollback     `json:"auto_rollback,omitempty"`

	Status        string               `json:"status"`
	FailureReason string               `json:"failure_reason,omitempty"`
	History       []smapi.StatusChange `json:"history,omitempty"`

	// Generations are the Nomad jobs that exist for this endpoint (one
	// normally, two during a blue/green update), with the traffic share
	// the routing table gives each. The routing table is written from
	// these after the record is: no generation takes traffic without the
	// record saying so.
	Generations []Generation `json:"generations,omitempty"`
	// NextGeneration is the number the next new generation gets; never
	// reused, so a job ID is never reused either.
	NextGeneration int `json:"next_generation"`

	Op *Operation `json:"op,omitempty"`
}

// Generation is one Nomad job of the endpoint.
type Generation struct {
	Generation int     `json:"generation"`
	ConfigName string  `json:"config_name"`
	Weight     float64 `json:"weight"` // share of the endpoint's traffic
	// Variants hold the variant weights inside this generation (set from
	// the config, changed by UpdateEndpointWeightsAndCapacities).
	Variants []VariantWeight `json:"variants"`
	// Shadows are the config's shadow variants and the share of requests
	// mirrored to each.
	Shadows []ShadowSampling `json:"shadows,omitempty"`
}

// ShadowSampling is a shadow variant's mirrored share (percent, 0..100].
type ShadowSampling struct {
	Name            string  `json:"name"`
	SamplingPercent float64 `json:"sampling_percent"`
}

// VariantWeight is a production variant's weight within its generation.
type VariantWeight struct {
	Name   string  `json:"name"`
	Weight float64 `json:"weight"`
	// ScaleFromZero: the variant autoscales with MinCapacity 0, so it may
	// have no instance; routers hold its requests and wake it.
	ScaleFromZero bool `json:"scale_from_zero,omitempty"`
}

// Operation is the work under way on an endpoint.
type Operation struct {
	Kind      string    `json:"kind"`
	Phase     string    `json:"phase"`
	StartTime time.Time `json:"start_time"`
	// PhaseStart is when the current phase (or traffic step) began.
	PhaseStart time.Time `json:"phase_start"`
	// ConfigName is the config being deployed (create, update).
	ConfigName string `json:"config_name,omitempty"`
	// Target is the generation being deployed; From the one it replaces.
	Target int `json:"target,omitempty"`
	From   int `json:"from,omitempty"`
	// Step counts traffic steps taken (canary: 1 after the canary share,
	// linear: one per step).
	Step int `json:"step,omitempty"`
	// Policy is the deployment policy this update follows.
	Policy *smapi.DeploymentConfig `json:"policy,omitempty"`
	// AutoRollback thresholds this update is judged by.
	AutoRollback *smapi.AutoRollback `json:"auto_rollback,omitempty"`
	// Weights is UpdateEndpointWeightsAndCapacities' request.
	Weights []smapi.DesiredWeightAndCapacity `json:"weights,omitempty"`
	// Reason says why a rollback happened (kept for FailureReason).
	Reason string `json:"reason,omitempty"`
	// Attempts counts consecutive failed attempts at the current phase
	// (for back-off and FailureReason).
	Attempts  int    `json:"attempts,omitempty"`
	LastError string `json:"last_error,omitempty"`
	// Baseline holds each router's counters when the current bake began,
	// so rollback judges only what the new generation did since.
	Baseline map[string]MetricSample `json:"baseline,omitempty"`
}

// MetricSample is one router's cumulative series for one generation of an
// endpoint (summed over its variants).
type MetricSample struct {
	Invocations float64 `json:"invocations"`
	Errors5xx   float64 `json:"errors_5xx"`
	// Latency is the model-latency histogram: cumulative counts per
	// finite upper bound (seconds), ascending; LatencyCount is the +Inf
	// bucket (JSON has no infinity).
	Latency      []Bucket `json:"latency,omitempty"`
	LatencyCount float64  `json:"latency_count"`
}

// Bucket is one cumulative histogram bucket.
type Bucket struct {
	UpperBound float64 `json:"le"`
	Count      float64 `json:"count"`
}

// SetStatus changes the status and appends to the history when it changes.
func (e *Endpoint) SetStatus(status, reason string, now time.Time) {
	if e.Status == status && (len(e.History) > 0 && e.History[len(e.History)-1].Reason == reason) {
		return
	}
	e.Status = status
	e.LastModifiedTime = now
	e.History = append(e.History, smapi.StatusChange{Status: status, Time: smapi.NewTime(now), Reason: reason})
	if len(e.History) > maxHistory {
		e.History = e.History[len(e.History)-maxHistory:]
	}
}

const maxHistory = 50

// LiveGeneration is the generation serving the endpoint's current config
// (not the one an operation is deploying), or nil.
func (e *Endpoint) LiveGeneration() *Generation {
	for i := range e.Generations {
		g := &e.Generations[i]
		if g.ConfigName == e.ConfigName && e.ConfigName != "" && (e.Op == nil || g.Generation != e.Op.Target) {
			return g
		}
	}
	return nil
}

// Generation returns the live generation numbered g, or nil.
func (e *Endpoint) Generation(g int) *Generation {
	for i := range e.Generations {
		if e.Generations[i].Generation == g {
			return &e.Generations[i]
		}
	}
	return nil
}
