package reconcile

import (
	"context"
	"errors"

	nomadapi "github.com/hashicorp/nomad/api"

	"github.com/seraihq/serai/contract"
	"github.com/seraihq/serai/policies"
	"github.com/seraihq/serai/server/records"
)

// Nomad is what the reconciler asks of Nomad.
type Nomad interface {
	// Register submits a compiled job (idempotent; keeps scaled counts).
	Register(ctx context.Context, job *nomadapi.Job) error
	// Health reports a job's rollout; a missing job has Exists false.
	Health(ctx context.Context, jobID string) (JobHealth, error)
	// Scale sets one group's count.
	Scale(ctx context.Context, jobID, group string, count int, reason string) error
	// Stop stops and purges a job; a missing job is not an error.
	Stop(ctx context.Context, jobID string) error
	// Jobs lists the IDs of every job of an endpoint (contract.ParseJobID
	// names it), whatever its state.
	Jobs(ctx context.Context, endpoint string) ([]string, error)
}

// JobHealth is a job's state as far as the rollout is concerned.
type JobHealth struct {
	Exists bool
	// Desired is each group's count.
	Desired map[string]int
	// Done: the latest deployment succeeded (or the job needs none).
	Done bool
	// Failed: the latest deployment failed; Reason says why in terms a
	// person can act on (variant, allocation, the task's last event).
	Failed bool
	Reason string
}

// Instances reports passing instances from Consul.
type Instances interface {
	// Passing counts the endpoint's passing instances per generation and
	// variant (shadow variants included, by their variant name).
	Passing(ctx context.Context, endpoint string) (map[GV]int, error)
}

// GV names a variant of a generation.
type GV struct {
	Generation int
	Variant    string
}

// Routes writes routing tables.
type Routes interface {
	Put(ctx context.Context, r *contract.Routes) error
	Delete(ctx context.Context, endpoint string) error
}

// Vault manages per-model policies and roles.
type Vault interface {
	EnsureModel(ctx context.Context, model string, store policies.StoreCredentials, endpoints []string) error
	RemoveModel(ctx context.Context, model string) error
}

// Metrics samples the routers' own counters for one generation of an
// endpoint, keyed by router.
type Metrics interface {
	// Sample answers for the routers that answered: a router that could
	// not be scraped is left out (its share of traffic goes unjudged this
	// time). When routers are registered but none answered, it returns
	// an error wrapping ErrNoMetrics. No router registered at all is an
	// empty sample: no traffic can reach the endpoint, so there is
	// nothing to judge.
	Sample(ctx context.Context, endpoint string, generation int) (map[string]records.MetricSample, error)
}

// ErrNoMetrics: routers are registered but none answered a scrape.
var ErrNoMetrics = errors.New("no router answered the metrics scrape")
