package scheduler

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/hashicorp/nomad/api"
)

// Jobs is the slice of Nomad's Jobs API the lifecycle needs; *api.Jobs
// satisfies it, and tests of the waiting logic can use a fake.
type Jobs interface {
	RegisterOpts(job *api.Job, opts *api.RegisterOptions, q *api.WriteOptions) (*api.JobRegisterResponse, *api.WriteMeta, error)
	LatestDeployment(jobID string, q *api.QueryOptions) (*api.Deployment, *api.QueryMeta, error)
}

// Register submits a compiled job. PreserveCounts keeps the counts the
// autoscaler set when a generation is re-registered; without it Nomad resets
// every group to the count in the spec.
func Register(ctx context.Context, jobs Jobs, job *api.Job) (string, error) {
	q := (&api.WriteOptions{}).WithContext(ctx)
	resp, _, err := jobs.RegisterOpts(job, &api.RegisterOptions{PreserveCounts: true}, q)
	if err != nil {
		return "", fmt.Errorf("register job %s: %w", deref(job.ID), err)
	}
	if resp.Warnings != "" {
		return resp.EvalID, &RegisterWarning{JobID: deref(job.ID), Warnings: resp.Warnings}
	}
	return resp.EvalID, nil
}

// RegisterWarning carries Nomad's warnings for a job that was registered.
type RegisterWarning struct {
	JobID    string
	Warnings string
}

func (w *RegisterWarning) Error() string {
	return fmt.Sprintf("job %s registered with warnings: %s", w.JobID, w.Warnings)
}

// ErrDeploymentFailed is returned (wrapped) when Nomad marks a deployment
// failed or cancelled.
var ErrDeploymentFailed = errors.New("deployment failed")

// WaitDeployment blocks until the job's latest deployment is successful,
// fails, or ctx ends. It uses Nomad's blocking queries, so it wakes as soon
// as the deployment changes rather than on a polling period.
func WaitDeployment(ctx context.Context, jobs Jobs, jobID string) (*api.Deployment, error) {
	var index uint64
	for {
		q := (&api.QueryOptions{WaitIndex: index, WaitTime: 30 * time.Second}).WithContext(ctx)
		d, meta, err := jobs.LatestDeployment(jobID, q)
		if err != nil {
			if ctx.Err() != nil {
				return nil, fmt.Errorf("wait for deployment of %s: %w", jobID, ctx.Err())
			}
			// A transient error: back off briefly and start the blocking
			// query afresh.
			index = 0
			select {
			case <-ctx.Done():
				return nil, fmt.Errorf("wait for deployment of %s: %w (last error: %v)", jobID, ctx.Err(), err)
			case <-time.After(time.Second):
			}
			continue
		}
		if d != nil {
			switch d.Status {
			case api.DeploymentStatusSuccessful:
				return d, nil
			case api.DeploymentStatusFailed, api.DeploymentStatusCancelled:
				return d, fmt.Errorf("job %s deployment %s: %w: %s", jobID, d.ID, ErrDeploymentFailed, d.StatusDescription)
			}
		}
		// Reset when the index goes backwards (a restored or new leader), as
		// the autoscaler's blocking loops do.
		if meta.LastIndex < index {
			index = 0
		} else {
			index = meta.LastIndex
		}
	}
}
