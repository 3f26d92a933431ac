package reconcile

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	nomadapi "github.com/hashicorp/nomad/api"

	"github.com/seraihq/serai/contract"
	"github.com/seraihq/serai/policies"
	"github.com/seraihq/serai/server/records"
)

// Fakes of the cluster for unit tests of the state machine. The
// integration and e2e suites run the real adapters on real agents.

var errInjected = errors.New("injected failure")

// faults fails the call whose number (counted across all fakes) is in
// failAt.
type faults struct {
	mu     sync.Mutex
	calls  int
	failAt map[int]bool
}

func (f *faults) hit(what string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	if f.failAt[f.calls] {
		return fmt.Errorf("%s: %w", what, errInjected)
	}
	return nil
}

type fakeJob struct {
	groups  map[string]int
	running bool
}

type fakeCluster struct {
	*faults
	mu      sync.Mutex
	jobs    map[string]*fakeJob
	stopped []string
	health  map[string]JobHealth // overrides by job ID
	passing map[GV]int
	routes  map[string]*contract.Routes
	vault   map[string][]string // model -> endpoints
	creds   map[string]policies.StoreCredentials
	lastJob *nomadapi.Job
	samples map[int]map[string]records.MetricSample
	// errorRate, when set for a generation, makes every Sample call add
	// 100 invocations times the generation's share of traffic, that
	// fraction of them 5xx: traffic that grows as the bake goes on.
	errorRate map[int]float64
	scaled    []string
	autoUp    bool // new jobs become healthy and passing at once
	failJobs  map[string]string
	// hang makes every Nomad call about these endpoints' jobs block until
	// its context ends, as a stopped (SIGSTOP) Nomad would.
	hang map[string]bool
	// inflight and peak count Nomad calls under way at once; hung counts
	// the calls that hung.
	inflight, peak, hung int
	// noMetrics: routers are registered but none answers.
	noMetrics bool
}

// nomadCall waits like a hung Nomad when the job's endpoint hangs, and
// counts calls in flight. The returned func ends the call.
func (c *fakeCluster) nomadCall(ctx context.Context, jobID string) (func(), error) {
	ep, _, _ := contract.ParseJobID(jobID)
	c.mu.Lock()
	c.inflight++
	if c.inflight > c.peak {
		c.peak = c.inflight
	}
	hang := c.hang[ep]
	if hang {
		c.hung++
	}
	c.mu.Unlock()
	done := func() {
		c.mu.Lock()
		c.inflight--
		c.mu.Unlock()
	}
	if hang {
		<-ctx.Done()
		done()
		return func() {}, fmt.Errorf("nomad %s: %w", jobID, ctx.Err())
	}
	return done, nil
}

func newFakeCluster() *fakeCluster {
	return &fakeCluster{
		faults:    &faults{failAt: map[int]bool{}},
		jobs:      map[string]*fakeJob{},
		health:    map[string]JobHealth{},
		passing:   map[GV]int{},
		routes:    map[string]*contract.Routes{},
		vault:     map[string][]string{},
		creds:     map[string]policies.StoreCredentials{},
		samples:   map[int]map[string]records.MetricSample{},
		failJobs:  map[string]string{},
		hang:      map[string]bool{},
		autoUp:    true,
		errorRate: map[int]float64{},
	}
}

func (c *fakeCluster) Register(ctx context.Context, job *nomadapi.Job) error {
	if err := c.hit("register"); err != nil {
		return err
	}
	end, err := c.nomadCall(ctx, *job.ID)
	if err != nil {
		return err
	}
	defer end()
	c.mu.Lock()
	defer c.mu.Unlock()
	c.lastJob = job
	j := &fakeJob{groups: map[string]int{}, running: true}
	if prev, ok := c.jobs[*job.ID]; ok && prev.running {
		j.groups = prev.groups // PreserveCounts
	} else {
		for _, g := range job.TaskGroups {
			j.groups[*g.Name] = *g.Count
		}
	}
	c.jobs[*job.ID] = j
	if c.autoUp {
		_, gen, _ := contract.ParseJobID(*job.ID)
		for g, n := range j.groups {
			c.passing[GV{gen, strings.TrimPrefix(g, "shadow-")}] = n
		}
	}
	return nil
}

func (c *fakeCluster) Health(ctx context.Context, id string) (JobHealth, error) {
	if err := c.hit("health"); err != nil {
		return JobHealth{}, err
	}
	end, err := c.nomadCall(ctx, id)
	if err != nil {
		return JobHealth{}, err
	}
	defer end()
	c.mu.Lock()
	defer c.mu.Unlock()
	j, ok := c.jobs[id]
	if !ok || !j.running {
		return JobHealth{}, nil
	}
	if reason, bad := c.failJobs[id]; bad {
		return JobHealth{Exists: true, Failed: true, Reason: reason, Desired: j.groups}, nil
	}
	if h, ok := c.health[id]; ok {
		h.Desired = j.groups
		return h, nil
	}
	return JobHealth{Exists: true, Done: true, Desired: copyMap(j.groups)}, nil
}

func (c *fakeCluster) Scale(_ context.Context, id, group string, n int, _ string) error {
	if err := c.hit("scale"); err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	j, ok := c.jobs[id]
	if !ok {
		return fmt.Errorf("job %s not found", id)
	}
	j.groups[group] = n
	c.scaled = append(c.scaled, fmt.Sprintf("%s/%s=%d", id, group, n))
	if c.autoUp {
		_, gen, _ := contract.ParseJobID(id)
		c.passing[GV{gen, group}] = n
	}
	return nil
}

func (c *fakeCluster) Stop(ctx context.Context, id string) error {
	if err := c.hit("stop"); err != nil {
		return err
	}
	end, err := c.nomadCall(ctx, id)
	if err != nil {
		return err
	}
	defer end()
	c.mu.Lock()
	defer c.mu.Unlock()
	if j, ok := c.jobs[id]; ok && j.running {
		j.running = false
		c.stopped = append(c.stopped, id)
		_, gen, _ := contract.ParseJobID(id)
		for gv := range c.passing {
			if gv.Generation == gen {
				delete(c.passing, gv)
			}
		}
	}
	delete(c.jobs, id)
	return nil
}

func (c *fakeCluster) Jobs(_ context.Context, endpoint string) ([]string, error) {
	if err := c.hit("jobs"); err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []string
	for id := range c.jobs {
		if ep, _, ok := contract.ParseJobID(id); ok && ep == endpoint {
			out = append(out, id)
		}
	}
	sort.Strings(out)
	return out, nil
}

func (c *fakeCluster) Passing(_ context.Context, endpoint string) (map[GV]int, error) {
	if err := c.hit("passing"); err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return copyMap(c.passing), nil
}

func (c *fakeCluster) Put(_ context.Context, r *contract.Routes) error {
	if err := c.hit("routes put"); err != nil {
		return err
	}
	b, err := contract.EncodeRoutes(r)
	if err != nil {
		return err
	}
	back, _ := contract.DecodeRoutes(b)
	c.mu.Lock()
	defer c.mu.Unlock()
	c.routes[r.Endpoint] = back
	return nil
}

func (c *fakeCluster) Delete(_ context.Context, endpoint string) error {
	if err := c.hit("routes delete"); err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.routes, endpoint)
	return nil
}

func (c *fakeCluster) EnsureModel(_ context.Context, model string, creds policies.StoreCredentials, endpoints []string) error {
	if err := c.hit("vault ensure"); err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.vault[model] = append([]string(nil), endpoints...)
	c.creds[model] = creds
	return nil
}

func (c *fakeCluster) RemoveModel(_ context.Context, model string) error {
	if err := c.hit("vault remove"); err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.vault, model)
	return nil
}

func (c *fakeCluster) Sample(_ context.Context, _ string, gen int) (map[string]records.MetricSample, error) {
	if err := c.hit("metrics"); err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.noMetrics {
		return nil, fmt.Errorf("fake routers: %w", ErrNoMetrics)
	}
	if rate, ok := c.errorRate[gen]; ok {
		for _, rt := range c.routes {
			for _, g := range rt.Generations {
				if g.Generation == gen {
					if c.samples[gen] == nil {
						c.samples[gen] = map[string]records.MetricSample{}
					}
					s := c.samples[gen]["r1"]
					s.Invocations += 100 * g.Weight
					s.Errors5xx += 100 * g.Weight * rate
					c.samples[gen]["r1"] = s
				}
			}
		}
	}
	out := map[string]records.MetricSample{}
	for k, v := range c.samples[gen] {
		out[k] = v
	}
	return out, nil
}

func (c *fakeCluster) running() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []string
	for id, j := range c.jobs {
		if j.running {
			out = append(out, id)
		}
	}
	sort.Strings(out)
	return out
}

func (c *fakeCluster) table(endpoint string) *contract.Routes {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.routes[endpoint]
}

func copyMap[K comparable, V any](m map[K]V) map[K]V {
	out := make(map[K]V, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// clock is a manual clock.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}
