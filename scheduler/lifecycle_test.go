package scheduler

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/hashicorp/nomad/api"
)

// fakeJobs replays a list of deployment states, one per blocking query.
type fakeJobs struct {
	states  []*api.Deployment
	indexes []uint64
	errs    []error
	calls   int
	seen    []uint64
	opts    *api.RegisterOptions
}

func (f *fakeJobs) RegisterOpts(job *api.Job, opts *api.RegisterOptions, q *api.WriteOptions) (*api.JobRegisterResponse, *api.WriteMeta, error) {
	f.opts = opts
	return &api.JobRegisterResponse{EvalID: "eval-1"}, &api.WriteMeta{}, nil
}

func (f *fakeJobs) LatestDeployment(jobID string, q *api.QueryOptions) (*api.Deployment, *api.QueryMeta, error) {
	i := f.calls
	f.calls++
	f.seen = append(f.seen, q.WaitIndex)
	if i < len(f.errs) && f.errs[i] != nil {
		return nil, nil, f.errs[i]
	}
	return f.states[i], &api.QueryMeta{LastIndex: f.indexes[i]}, nil
}

func TestRegisterPreservesCounts(t *testing.T) {
	f := &fakeJobs{}
	if _, err := Register(context.Background(), f, &api.Job{ID: ptr("serai-x.g1")}); err != nil {
		t.Fatal(err)
	}
	if f.opts == nil || !f.opts.PreserveCounts {
		t.Fatal("register must set PreserveCounts so autoscaled counts survive")
	}
}

func TestWaitDeployment(t *testing.T) {
	running := &api.Deployment{ID: "d1", Status: api.DeploymentStatusRunning}
	f := &fakeJobs{
		states:  []*api.Deployment{nil, running, running, {ID: "d1", Status: api.DeploymentStatusSuccessful}},
		indexes: []uint64{5, 9, 3, 12},
	}
	d, err := WaitDeployment(context.Background(), f, "serai-x.g1")
	if err != nil || d.Status != api.DeploymentStatusSuccessful {
		t.Fatalf("d=%v err=%v", d, err)
	}
	// The index goes backwards at the third answer (3 < 9): the loop must
	// restart its blocking query from 0 instead of waiting on a future index.
	want := []uint64{0, 5, 9, 0}
	for i, w := range want {
		if f.seen[i] != w {
			t.Fatalf("wait indexes = %v, want %v", f.seen, want)
		}
	}
}

func TestWaitDeploymentFailed(t *testing.T) {
	f := &fakeJobs{
		states:  []*api.Deployment{{ID: "d1", Status: api.DeploymentStatusFailed, StatusDescription: "Failed due to unhealthy allocations"}},
		indexes: []uint64{4},
	}
	_, err := WaitDeployment(context.Background(), f, "serai-x.g1")
	if !errors.Is(err, ErrDeploymentFailed) {
		t.Fatalf("err = %v", err)
	}
}

func TestWaitDeploymentContext(t *testing.T) {
	f := &fakeJobs{errs: []error{errors.New("connection refused"), errors.New("connection refused")}}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if _, err := WaitDeployment(ctx, f, "serai-x.g1"); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v", err)
	}
}
