package reconcile

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/seraihq/serai/contract"
	"github.com/seraihq/serai/jobspec"
	"github.com/seraihq/serai/policies"
	"github.com/seraihq/serai/scheduler"
	"github.com/seraihq/serai/server/records"
	"github.com/seraihq/serai/server/smapi"
	"github.com/seraihq/serai/server/translate"
)

// Config wires a Reconciler.
type Config struct {
	Store     records.Store
	Nomad     Nomad
	Instances Instances
	Routes    Routes
	// Vault may be nil when no model uses an artifact store (https or
	// file artifacts); a model that needs Vault then fails to deploy with
	// a reason saying so.
	Vault   Vault
	Metrics Metrics
	// Wakes, when set, are the routers' scale-from-zero signals, carried
	// out every tick (HandleWakes).
	Wakes WakeKV
	// Compile holds the compiler's site options.
	Compile scheduler.Options
	Logger  hclog.Logger
	// Now is the clock (tests move it).
	Now func() time.Time
	// Tick is how often every endpoint with an operation is stepped.
	Tick time.Duration
	// DrainPeriod is how long a deleted endpoint's instances keep running
	// after its routing table is gone, for requests already in flight.
	DrainPeriod time.Duration
	// HealthTimeout bounds how long a new generation may take to become
	// healthy when Nomad reports neither success nor failure.
	HealthTimeout time.Duration
	// Backoff is the first retry delay after a failed step; it doubles up
	// to MaxBackoff.
	Backoff, MaxBackoff time.Duration
	// StepTimeout is the deadline of one endpoint's step: every call it
	// makes to Nomad, Consul and Vault ends by then. A hung agent costs
	// that endpoint's step this long, then the step fails (and is retried
	// with back-off); it never holds up another endpoint.
	StepTimeout time.Duration
	// Workers bounds how many endpoints are stepped at once. An endpoint
	// whose step is still running (waiting on a hung agent, say) is not
	// stepped again until it ends, and occupies one worker meanwhile.
	Workers int
	// MetricsGrace is how long a bake may go without a judgement of the
	// routers' metrics (no router answered a scrape) and still move
	// traffic on. Past it, an update with rollback thresholds holds where
	// it is rather than promote a generation nobody has judged, and rolls
	// back if the hold outlasts its maximum execution time.
	MetricsGrace time.Duration
}

// DefaultConfig returns the defaults for the timing fields.
func DefaultConfig() Config {
	return Config{
		Tick:          time.Second,
		DrainPeriod:   5 * time.Second,
		HealthTimeout: 20 * time.Minute,
		Backoff:       time.Second,
		MaxBackoff:    30 * time.Second,
		StepTimeout:   30 * time.Second,
		Workers:       4,
		MetricsGrace:  time.Minute,
	}
}

func (c Config) withDefaults() Config {
	d := DefaultConfig()
	if c.Tick <= 0 {
		c.Tick = d.Tick
	}
	if c.DrainPeriod <= 0 {
		c.DrainPeriod = d.DrainPeriod
	}
	if c.HealthTimeout <= 0 {
		c.HealthTimeout = d.HealthTimeout
	}
	if c.Backoff <= 0 {
		c.Backoff = d.Backoff
	}
	if c.MaxBackoff <= 0 {
		c.MaxBackoff = d.MaxBackoff
	}
	if c.StepTimeout <= 0 {
		c.StepTimeout = d.StepTimeout
	}
	if c.Workers <= 0 {
		c.Workers = d.Workers
	}
	if c.MetricsGrace <= 0 {
		c.MetricsGrace = d.MetricsGrace
	}
	if c.Logger == nil {
		c.Logger = hclog.NewNullLogger()
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return c
}

// Validate reports missing dependencies and impossible settings (zero
// durations and counts mean the default).
func (c Config) Validate() error {
	var errs []error
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"Tick", c.Tick}, {"DrainPeriod", c.DrainPeriod}, {"HealthTimeout", c.HealthTimeout}, {"Backoff", c.Backoff},
		{"MaxBackoff", c.MaxBackoff}, {"StepTimeout", c.StepTimeout}, {"MetricsGrace", c.MetricsGrace}} {
		if d.v < 0 {
			errs = append(errs, fmt.Errorf("reconcile: %s must not be negative (got %s)", d.name, d.v))
		}
	}
	if c.Workers < 0 {
		errs = append(errs, fmt.Errorf("reconcile: Workers must not be negative (got %d)", c.Workers))
	}
	if c.Store.KV == nil {
		errs = append(errs, errors.New("reconcile: Store is required"))
	}
	if c.Nomad == nil || c.Instances == nil || c.Routes == nil || c.Metrics == nil {
		errs = append(errs, errors.New("reconcile: Nomad, Instances, Routes and Metrics are required"))
	}
	return errors.Join(errs...)
}

// Reconciler drives endpoints to their recorded state. Run it on the
// leader only.
type Reconciler struct {
	cfg Config
	log hclog.Logger

	mu sync.Mutex
	// published is the routing table last written per endpoint (encoded);
	// empty after a restart, so the first step of each endpoint rewrites
	// its table from the record.
	published map[string]string
	retry     map[string]retryState
	// running holds the endpoints whose step is under way (or waiting for
	// a worker), so a slow step is never started twice.
	running map[string]bool
	// corrupt is each corrupt endpoint record's last logged error, so the
	// log says it once, not every tick.
	corrupt map[string]string
	// judged is when each baking generation's metrics were last judged
	// (see Config.MetricsGrace). Empty after a restart: a new leader
	// judges before it promotes.
	judged map[string]time.Time
	// workers is the worker semaphore; vault serialises Vault writes,
	// which are computed from every endpoint's record.
	workers chan struct{}
	vault   chan struct{}
	// waking: HandleWakes is running.
	waking atomic.Bool
}

type retryState struct {
	next  time.Time
	delay time.Duration
}

// New returns a Reconciler.
func New(cfg Config) (*Reconciler, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	return &Reconciler{cfg: cfg, log: cfg.Logger.Named("reconcile"), published: map[string]string{}, retry: map[string]retryState{},
		running: map[string]bool{}, corrupt: map[string]string{}, judged: map[string]time.Time{},
		workers: make(chan struct{}, cfg.Workers), vault: make(chan struct{}, 1)}, nil
}

// Run steps every endpoint each Tick until ctx ends. A tick does not wait
// for the steps it started: an endpoint whose step is still running is
// skipped until it ends, while the others go on being stepped.
func (r *Reconciler) Run(ctx context.Context) error {
	t := time.NewTicker(r.cfg.Tick)
	defer t.Stop()
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		r.dispatch(ctx, &wg)
		// The wake signals are one more job beside the endpoints' steps,
		// under the same deadline, never two at once.
		if r.cfg.Wakes != nil && r.waking.CompareAndSwap(false, true) {
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer r.waking.Store(false)
				wctx, cancel := context.WithTimeout(ctx, r.cfg.StepTimeout)
				defer cancel()
				if n, err := HandleWakes(wctx, r.cfg.Wakes, r.cfg.Nomad, r.cfg.Instances); err != nil && ctx.Err() == nil {
					r.log.Warn("scale-from-zero signals: will retry", "error", r.deadline(wctx, err))
				} else if n > 0 {
					r.log.Info("scaled from zero on the routers' signal", "groups", n)
				}
			}()
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}

// Pass steps every endpoint once and waits for those steps. Endpoints are
// independent: one failing, hanging or corrupt does not hold the others
// back.
func (r *Reconciler) Pass(ctx context.Context) {
	var wg sync.WaitGroup
	r.dispatch(ctx, &wg)
	wg.Wait()
}

// dispatch starts a step for every endpoint that is due and not already
// being stepped, at most Workers at a time.
func (r *Reconciler) dispatch(ctx context.Context, wg *sync.WaitGroup) {
	lctx, cancel := context.WithTimeout(ctx, r.cfg.StepTimeout)
	defer cancel()
	listed, err := records.ListAll[records.Endpoint](lctx, r.cfg.Store, records.KindEndpoint)
	if err != nil {
		if ctx.Err() == nil {
			r.log.Warn("listing endpoints failed; will retry", "error", r.deadline(lctx, err))
		}
		return
	}
	r.noteCorrupt(listed.Corrupt)
	for _, ep := range listed.Records {
		name := ep.Name
		if ctx.Err() != nil {
			return
		}
		if !r.claim(name) {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer r.release(name)
			select {
			case r.workers <- struct{}{}:
			case <-ctx.Done():
				return
			}
			defer func() { <-r.workers }()
			err := r.Step(ctx, name)
			r.settle(name, err)
			if err != nil && ctx.Err() == nil && !errors.Is(err, records.ErrConflict) {
				r.log.Warn("step failed; will retry with back-off", "endpoint", name, "error", err)
			}
		}()
	}
}

// claim marks the endpoint as being stepped when it is due and not
// already running.
func (r *Reconciler) claim(name string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.running[name] || r.cfg.Now().Before(r.retry[name].next) {
		return false
	}
	r.running[name] = true
	return true
}

func (r *Reconciler) release(name string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.running, name)
}

// noteCorrupt logs each corrupt endpoint record once (again when its
// error changes). Such an endpoint is not stepped: its jobs and routing
// table stay as they were, and the API describes it as Failed with the
// key and the error, until someone rewrites or deletes the key.
func (r *Reconciler) noteCorrupt(corrupt []*records.CorruptError) {
	r.mu.Lock()
	defer r.mu.Unlock()
	seen := map[string]bool{}
	for _, c := range corrupt {
		seen[c.Key] = true
		if r.corrupt[c.Key] != c.Error() {
			r.corrupt[c.Key] = c.Error()
			r.log.Error("endpoint record is corrupt: endpoint left as it is until the key is rewritten or the endpoint deleted (DeleteEndpoint)", "key", c.Key, "error", c.Err)
		}
	}
	for k := range r.corrupt {
		if !seen[k] {
			delete(r.corrupt, k)
		}
	}
}

// deadline names the step deadline in an error it caused.
func (r *Reconciler) deadline(ctx context.Context, err error) error {
	if err != nil && errors.Is(ctx.Err(), context.DeadlineExceeded) && !errors.Is(err, ErrStepDeadline) {
		return fmt.Errorf("%w (%s): %w", ErrStepDeadline, r.cfg.StepTimeout, err)
	}
	return err
}

// ErrStepDeadline: a step did not finish within Config.StepTimeout (an
// agent hung or answered too slowly).
var ErrStepDeadline = errors.New("step deadline exceeded")

func (r *Reconciler) settle(name string, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if err == nil || errors.Is(err, records.ErrConflict) {
		delete(r.retry, name)
		return
	}
	st := r.retry[name]
	if st.delay == 0 {
		st.delay = r.cfg.Backoff
	} else if st.delay *= 2; st.delay > r.cfg.MaxBackoff {
		st.delay = r.cfg.MaxBackoff
	}
	st.next = r.cfg.Now().Add(st.delay)
	r.retry[name] = st
}

// work is one endpoint record being stepped, with the index it was read at.
type work struct {
	ep  *records.Endpoint
	idx uint64
	// parent is the context the step's deadline was set on: a failure
	// caused by that deadline is still written to the record under a
	// fresh one.
	parent context.Context
}

// save writes the record back (check-and-set), then brings the routing
// table in line with it.
func (r *Reconciler) save(ctx context.Context, w *work) error {
	w.ep.LastModifiedTime = r.cfg.Now()
	if err := r.cfg.Store.Put(ctx, records.KindEndpoint, w.ep.Name, w.ep, w.idx); err != nil {
		return err
	}
	_, idx, err := r.cfg.Store.KV.Get(ctx, records.KindEndpoint.Key(w.ep.Name))
	if err != nil {
		return err
	}
	w.idx = idx
	return r.publish(ctx, w.ep)
}

// Step carries the endpoint's operation one phase forward, as far as it
// can go without waiting, within Config.StepTimeout.
func (r *Reconciler) Step(ctx context.Context, name string) error {
	sctx, cancel := context.WithTimeout(ctx, r.cfg.StepTimeout)
	defer cancel()
	return r.deadline(sctx, r.step(sctx, ctx, name))
}

func (r *Reconciler) step(ctx, parent context.Context, name string) error {
	w := &work{ep: &records.Endpoint{}, parent: parent}
	idx, err := r.cfg.Store.Get(ctx, records.KindEndpoint, name, w.ep)
	if errors.Is(err, records.ErrNotFound) {
		r.forget(name)
		return nil
	}
	if errors.Is(err, records.ErrCorrupt) {
		// Listed fine a moment ago; noteCorrupt will say it next pass.
		return nil
	}
	if err != nil {
		return err
	}
	w.idx = idx
	// Whatever happened before (a crash between a record write and the
	// table write), the table follows the record before anything else.
	if err := r.publish(ctx, w.ep); err != nil {
		return err
	}
	// Several phases may complete in one step (start → register, say);
	// stop when a phase has to wait.
	for i := 0; i < 10 && w.ep.Op != nil; i++ {
		before := w.ep.Op.Phase
		kind := w.ep.Op.Kind
		if err := r.phase(ctx, w); err != nil {
			return err
		}
		if w.ep.Op == nil || (w.ep.Op.Phase == before && w.ep.Op.Kind == kind) {
			break
		}
	}
	return nil
}

func (r *Reconciler) forget(name string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.published, name)
	delete(r.retry, name)
	for k := range r.judged {
		if strings.HasPrefix(k, name+"/") {
			delete(r.judged, k)
		}
	}
}

func (r *Reconciler) phase(ctx context.Context, w *work) error {
	op := w.ep.Op
	switch op.Kind {
	case records.OpCreate, records.OpUpdate:
		return r.deploy(ctx, w)
	case records.OpWeights:
		return r.weights(ctx, w)
	case records.OpDelete:
		return r.delete(ctx, w)
	}
	return fmt.Errorf("endpoint %s: unknown operation %q", w.ep.Name, op.Kind)
}

// setPhase moves to phase p, starting its clock.
func (r *Reconciler) setPhase(w *work, p string) {
	w.ep.Op.Phase = p
	w.ep.Op.PhaseStart = r.cfg.Now()
	w.ep.Op.Attempts = 0
	w.ep.Op.LastError = ""
}

// deploy runs create and update: a new generation beside the old,
// traffic shifted by the policy, baked, the old one retired.
func (r *Reconciler) deploy(ctx context.Context, w *work) error {
	ep, op := w.ep, w.ep.Op
	now := r.cfg.Now()
	switch op.Phase {
	case records.PhaseStart:
		cfg, err := r.config(ctx, op.ConfigName)
		if err != nil && !permanent(err) {
			return r.noteError(ctx, w, fmt.Errorf("endpoint config %q: %w", op.ConfigName, err))
		}
		if err != nil {
			return r.abort(ctx, w, fmt.Sprintf("endpoint config %q cannot be read: %v", op.ConfigName, err))
		}
		if ep.NextGeneration < 1 {
			ep.NextGeneration = 1
		}
		op.Target = ep.NextGeneration
		ep.NextGeneration++
		if op.Kind == records.OpUpdate {
			if live := ep.LiveGeneration(); live != nil {
				op.From = live.Generation
			}
		}
		ep.Generations = append(ep.Generations, newGeneration(op.Target, cfg))
		r.setPhase(w, records.PhaseRegister)
		return r.save(ctx, w)

	case records.PhaseRegister:
		job, models, err := r.compile(ctx, ep.Name, op.Target, op.ConfigName, ep.Deployment)
		if err != nil && !permanent(err) {
			return r.noteError(ctx, w, err)
		}
		if err != nil {
			return r.failDeploy(ctx, w, err.Error())
		}
		if err := r.ensureVault(ctx, ep.Name, models); err != nil {
			return r.noteError(ctx, w, err)
		}
		if err := r.cfg.Nomad.Register(ctx, job); err != nil {
			var warn *scheduler.RegisterWarning
			if !errors.As(err, &warn) {
				return r.noteError(ctx, w, err)
			}
			r.log.Warn("job registered with warnings", "job", *job.ID, "warnings", warn.Warnings)
		}
		r.log.Info("generation registered", "endpoint", ep.Name, "job", *job.ID)
		r.setPhase(w, records.PhaseWaitHealthy)
		return r.save(ctx, w)

	case records.PhaseWaitHealthy:
		healthy, reason, err := r.healthy(ctx, ep.Name, op.Target)
		if err != nil {
			return r.noteError(ctx, w, err)
		}
		switch {
		case reason != "":
			return r.failDeploy(ctx, w, reason)
		case !healthy && now.Sub(op.PhaseStart) > r.healthTimeout(op):
			return r.failDeploy(ctx, w, fmt.Sprintf("generation %d (%s) did not become healthy within %s", op.Target, contract.JobID(ep.Name, op.Target), r.healthTimeout(op)))
		case !healthy:
			return nil
		}
		if op.Kind == records.OpCreate {
			r.setPhase(w, records.PhaseActivate)
			if g := ep.Generation(op.Target); g != nil {
				g.Weight = 1
			}
			return r.save(ctx, w)
		}
		op.Step = 0
		r.setPhase(w, records.PhaseShift)
		return r.save(ctx, w)

	case records.PhaseActivate:
		ep.ConfigName = op.ConfigName
		ep.Op = nil
		ep.FailureReason = ""
		ep.SetStatus(smapi.StatusInService, "", now)
		return r.save(ctx, w)

	case records.PhaseShift:
		share := targetShare(op.Policy, op.Step)
		if from := ep.Generation(op.From); from != nil {
			from.Weight = 1 - share
		}
		if to := ep.Generation(op.Target); to != nil {
			to.Weight = share
		}
		if op.Step == 0 {
			// Judge everything the new generation does from its first
			// traffic on: take its counters once, before it has any.
			// No router answering is no loss here: the generation has had
			// no traffic yet, so a router missing from the baseline
			// counts from zero, which is exact.
			base, err := r.cfg.Metrics.Sample(ctx, ep.Name, op.Target)
			if err != nil && !errors.Is(err, ErrNoMetrics) {
				return r.noteError(ctx, w, fmt.Errorf("router metrics for the bake baseline: %w", err))
			}
			op.Baseline = base
		}
		r.setPhase(w, records.PhaseBake)
		r.log.Info("traffic shifted", "endpoint", ep.Name, "generation", op.Target, "share", share)
		return r.save(ctx, w)

	case records.PhaseBake, records.PhaseTermWait:
		reason, judgeErr := r.judge(ctx, ep.Name, op)
		if judgeErr != nil {
			r.log.Warn("cannot judge the bake this time", "endpoint", ep.Name, "generation", op.Target, "error", judgeErr)
		} else if reason != "" {
			op.Reason = reason
			r.setPhase(w, records.PhaseRollback)
			return r.save(ctx, w)
		}
		if _, reason, err := r.healthy(ctx, ep.Name, op.Target); err == nil && reason != "" {
			op.Reason = reason
			r.setPhase(w, records.PhaseRollback)
			return r.save(ctx, w)
		}
		elapsed := now.Sub(op.PhaseStart)
		if op.Phase == records.PhaseBake && elapsed < waitInterval(op.Policy) {
			return nil
		}
		if op.Phase == records.PhaseTermWait && elapsed < terminationWait(op.Policy) {
			return nil
		}
		// Time to move traffic on: only on a recent judgement.
		if last := r.lastJudged(ep.Name, op); needsMetrics(op) && now.Sub(last) > r.cfg.MetricsGrace {
			if now.Sub(op.StartTime) > r.healthTimeout(op) {
				op.Reason = fmt.Sprintf("no router metrics to judge generation %d for longer than %s, and the update is past its maximum execution time (%s)", op.Target, r.cfg.MetricsGrace, r.healthTimeout(op))
				r.setPhase(w, records.PhaseRollback)
				return r.save(ctx, w)
			}
			held := fmt.Errorf("holding traffic where it is: no router metrics to judge generation %d for longer than %s: %v", op.Target, r.cfg.MetricsGrace, judgeErr)
			if op.LastError == held.Error() {
				return held
			}
			return r.noteError(ctx, w, held)
		}
		if op.Phase == records.PhaseBake {
			if targetShare(op.Policy, op.Step) < 1 {
				op.Step++
				r.setPhase(w, records.PhaseShift)
				return r.save(ctx, w)
			}
			r.setPhase(w, records.PhaseTermWait)
			return r.save(ctx, w)
		}
		// Drop the old generation from the record (and so from the
		// table); op.From still names its job until it is stopped.
		ep.Generations = without(ep.Generations, op.From)
		ep.ConfigName = op.ConfigName
		r.setPhase(w, records.PhaseRetire)
		return r.save(ctx, w)

	case records.PhaseRetire:
		if op.From > 0 {
			if err := r.cfg.Nomad.Stop(ctx, contract.JobID(ep.Name, op.From)); err != nil {
				return r.noteError(ctx, w, err)
			}
		}
		if err := r.refreshVaultFor(ctx, ep.Name); err != nil {
			r.log.Warn("vault roles not refreshed after retiring a generation", "endpoint", ep.Name, "error", err)
		}
		ep.Op = nil
		ep.FailureReason = ""
		ep.SetStatus(smapi.StatusInService, "", now)
		r.log.Info("update complete", "endpoint", ep.Name, "generation", op.Target)
		return r.save(ctx, w)

	case records.PhaseRollback:
		if ep.Status != smapi.StatusRollingBack {
			if from := ep.Generation(op.From); from != nil {
				from.Weight = 1
			}
			if to := ep.Generation(op.Target); to != nil {
				to.Weight = 0
			}
			ep.SetStatus(smapi.StatusRollingBack, op.Reason, now)
			r.log.Warn("rolling back", "endpoint", ep.Name, "generation", op.Target, "reason", op.Reason)
			return r.save(ctx, w)
		}
		if err := r.cfg.Nomad.Stop(ctx, contract.JobID(ep.Name, op.Target)); err != nil {
			return r.noteError(ctx, w, err)
		}
		ep.Generations = without(ep.Generations, op.Target)
		ep.Op = nil
		ep.FailureReason = "Update rolled back: " + op.Reason
		ep.SetStatus(smapi.StatusInService, ep.FailureReason, now)
		return r.save(ctx, w)

	case records.PhaseFail:
		if err := r.cfg.Nomad.Stop(ctx, contract.JobID(ep.Name, op.Target)); err != nil {
			return r.noteError(ctx, w, err)
		}
		ep.Generations = without(ep.Generations, op.Target)
		ep.Op = nil
		ep.FailureReason = op.Reason
		ep.SetStatus(smapi.StatusFailed, op.Reason, now)
		return r.save(ctx, w)
	}
	return fmt.Errorf("endpoint %s: unknown phase %q of %s", ep.Name, op.Phase, op.Kind)
}

// failDeploy ends a deployment whose new generation cannot serve: an
// update rolls back to the old generation, a create fails.
func (r *Reconciler) failDeploy(ctx context.Context, w *work, reason string) error {
	op := w.ep.Op
	op.Reason = reason
	if op.Kind == records.OpUpdate && op.From > 0 {
		r.setPhase(w, records.PhaseRollback)
	} else {
		r.setPhase(w, records.PhaseFail)
	}
	return r.save(ctx, w)
}

// abort ends an operation that cannot even start.
func (r *Reconciler) abort(ctx context.Context, w *work, reason string) error {
	w.ep.Op = nil
	w.ep.FailureReason = reason
	status := smapi.StatusFailed
	if w.ep.LiveGeneration() != nil {
		status = smapi.StatusInService
	}
	w.ep.SetStatus(status, reason, r.cfg.Now())
	return r.save(ctx, w)
}

// noteError records a transient failure on the record (so describe shows
// it) and returns it for back-off.
func (r *Reconciler) noteError(ctx context.Context, w *work, err error) error {
	err = r.deadline(ctx, err)
	w.ep.Op.Attempts++
	w.ep.Op.LastError = err.Error()
	if ctx.Err() != nil && w.parent != nil && w.parent.Err() == nil {
		// The step's deadline passed (a hung agent): the record still
		// says so, under a deadline of its own.
		sctx, cancel := context.WithTimeout(w.parent, r.cfg.StepTimeout)
		defer cancel()
		ctx = sctx
	}
	if serr := r.save(ctx, w); serr != nil {
		return errors.Join(err, serr)
	}
	return err
}

func (r *Reconciler) healthTimeout(op *records.Operation) time.Duration {
	if op.Policy != nil && op.Policy.BlueGreenUpdatePolicy != nil && op.Policy.BlueGreenUpdatePolicy.MaximumExecutionTimeoutInSeconds != nil {
		if d := time.Duration(*op.Policy.BlueGreenUpdatePolicy.MaximumExecutionTimeoutInSeconds) * time.Second; d > 0 {
			return d
		}
	}
	return r.cfg.HealthTimeout
}

// healthy says whether generation gen of endpoint is fully up: Nomad's
// deployment succeeded and Consul has at least the desired number of
// passing instances of every group (what routers will see). reason is set
// when it failed for good.
func (r *Reconciler) healthy(ctx context.Context, endpoint string, gen int) (bool, string, error) {
	h, err := r.cfg.Nomad.Health(ctx, contract.JobID(endpoint, gen))
	if err != nil {
		return false, "", err
	}
	if !h.Exists {
		return false, fmt.Sprintf("job %s is gone from Nomad", contract.JobID(endpoint, gen)), nil
	}
	if h.Failed {
		return false, h.Reason, nil
	}
	if !h.Done {
		return false, "", nil
	}
	passing, err := r.cfg.Instances.Passing(ctx, endpoint)
	if err != nil {
		return false, "", err
	}
	for group, want := range h.Desired {
		variant := group
		if len(group) > len(scheduler.ShadowPrefix) && group[:len(scheduler.ShadowPrefix)] == scheduler.ShadowPrefix {
			variant = group[len(scheduler.ShadowPrefix):]
		}
		if passing[GV{gen, variant}] < want {
			return false, "", nil
		}
	}
	return true, "", nil
}

// weights carries out UpdateEndpointWeightsAndCapacities on the live
// generation: weights through the routing table, counts through Nomad's
// scale API, no allocation restarted.
func (r *Reconciler) weights(ctx context.Context, w *work) error {
	ep, op := w.ep, w.ep.Op
	live := ep.LiveGeneration()
	if live == nil {
		return r.abort(ctx, w, "no live generation to change")
	}
	switch op.Phase {
	case records.PhaseStart:
		for _, d := range op.Weights {
			if d.DesiredWeight == nil {
				continue
			}
			for i := range live.Variants {
				if live.Variants[i].Name == d.VariantName {
					live.Variants[i].Weight = *d.DesiredWeight
				}
			}
		}
		r.setPhase(w, records.PhaseScale)
		return r.save(ctx, w)
	case records.PhaseScale:
		job := contract.JobID(ep.Name, live.Generation)
		for _, d := range op.Weights {
			if d.DesiredInstanceCount == nil {
				continue
			}
			if err := r.cfg.Nomad.Scale(ctx, job, d.VariantName, *d.DesiredInstanceCount, "UpdateEndpointWeightsAndCapacities"); err != nil {
				return r.noteError(ctx, w, err)
			}
		}
		r.setPhase(w, records.PhaseWaitHealthy)
		return r.save(ctx, w)
	case records.PhaseWaitHealthy:
		healthy, reason, err := r.healthy(ctx, ep.Name, live.Generation)
		if err != nil {
			return r.noteError(ctx, w, err)
		}
		now := r.cfg.Now()
		if !healthy && reason == "" && now.Sub(op.PhaseStart) < r.cfg.HealthTimeout {
			return nil
		}
		ep.Op = nil
		ep.FailureReason = reason
		if !healthy && reason == "" {
			ep.FailureReason = fmt.Sprintf("capacity change not complete within %s", r.cfg.HealthTimeout)
		}
		ep.SetStatus(smapi.StatusInService, ep.FailureReason, now)
		return r.save(ctx, w)
	}
	return fmt.Errorf("endpoint %s: unknown phase %q of %s", ep.Name, op.Phase, op.Kind)
}

// delete drains traffic first (the routing table goes, in-flight requests
// finish), then stops and purges every job, then removes Vault roles no
// other endpoint needs, then the record.
func (r *Reconciler) delete(ctx context.Context, w *work) error {
	ep, op := w.ep, w.ep.Op
	switch op.Phase {
	case records.PhaseStart:
		r.setPhase(w, records.PhaseDrain)
		return r.save(ctx, w) // publish deletes the table
	case records.PhaseDrain:
		if r.cfg.Now().Sub(op.PhaseStart) < r.cfg.DrainPeriod {
			return nil
		}
		r.setPhase(w, records.PhaseStop)
		return r.save(ctx, w)
	case records.PhaseStop:
		// Every job of the endpoint, not just those the record lists: an
		// operation this delete replaced may have been between retiring
		// a generation from the record and stopping its job.
		jobs, err := r.cfg.Nomad.Jobs(ctx, ep.Name)
		if err != nil {
			return r.noteError(ctx, w, err)
		}
		for _, id := range jobs {
			if err := r.cfg.Nomad.Stop(ctx, id); err != nil {
				return r.noteError(ctx, w, err)
			}
		}
		if err := r.refreshVaultFor(ctx, ep.Name); err != nil {
			return r.noteError(ctx, w, err)
		}
		if err := r.cfg.Store.Delete(ctx, records.KindEndpoint, ep.Name, w.idx); err != nil {
			return err
		}
		r.forget(ep.Name)
		r.log.Info("endpoint deleted", "endpoint", ep.Name)
		w.ep.Op = nil
		return nil
	}
	return fmt.Errorf("endpoint %s: unknown phase %q of %s", ep.Name, op.Phase, op.Kind)
}

func without(gens []records.Generation, g int) []records.Generation {
	out := gens[:0:0]
	for _, x := range gens {
		if x.Generation != g {
			out = append(out, x)
		}
	}
	return out
}

func newGeneration(gen int, cfg *records.EndpointConfig) records.Generation {
	g := records.Generation{Generation: gen, ConfigName: cfg.Name}
	var prodWeight float64
	for _, v := range cfg.Spec.ProductionVariants {
		w := jobspec.DefaultWeight
		if v.InitialVariantWeight != nil {
			w = *v.InitialVariantWeight
		}
		prodWeight += w
		g.Variants = append(g.Variants, records.VariantWeight{Name: v.VariantName, Weight: w,
			ScaleFromZero: v.Serai != nil && v.Serai.Autoscaling != nil && v.Serai.Autoscaling.MinCapacity == 0})
	}
	for _, v := range cfg.Spec.ShadowProductionVariants {
		pct := 100.0
		switch {
		case v.Serai != nil && v.Serai.SamplingPercent != nil:
			pct = float64(*v.Serai.SamplingPercent)
		case v.InitialVariantWeight != nil && prodWeight > 0:
			// SageMaker mirrors shadow weight / production weight.
			pct = min(100, 100**v.InitialVariantWeight/prodWeight)
		}
		if pct > 0 {
			g.Shadows = append(g.Shadows, records.ShadowSampling{Name: v.VariantName, SamplingPercent: pct})
		}
	}
	return g
}

// RoutesFor derives an endpoint's routing table from its record: the
// generations with traffic, their variant weights, their shadows. nil
// means the endpoint has no table (not yet serving, or being deleted).
func RoutesFor(ep *records.Endpoint) *contract.Routes {
	if ep.Op != nil && ep.Op.Kind == records.OpDelete {
		return nil
	}
	rt := &contract.Routes{Version: contract.RoutesVersion, Endpoint: ep.Name}
	for _, g := range ep.Generations {
		if g.Weight <= 0 {
			continue
		}
		gen := contract.Generation{Generation: g.Generation, Weight: g.Weight}
		for _, v := range g.Variants {
			gen.Variants = append(gen.Variants, contract.Variant{Name: v.Name, Weight: v.Weight, ScaleFromZero: v.ScaleFromZero})
		}
		rt.Generations = append(rt.Generations, gen)
		for _, s := range g.Shadows {
			rt.Shadow = append(rt.Shadow, contract.Shadow{Variant: s.Name, Generation: g.Generation, SamplingPercent: s.SamplingPercent})
		}
	}
	if len(rt.Generations) == 0 {
		return nil
	}
	sort.Slice(rt.Generations, func(i, j int) bool { return rt.Generations[i].Generation < rt.Generations[j].Generation })
	return rt
}

// publish writes (or deletes) the routing table the record implies, unless
// this reconciler already wrote exactly that.
func (r *Reconciler) publish(ctx context.Context, ep *records.Endpoint) error {
	rt := RoutesFor(ep)
	key := ""
	if rt != nil {
		b, err := contract.EncodeRoutes(rt)
		if err != nil {
			return fmt.Errorf("endpoint %s: routing table: %w", ep.Name, err)
		}
		key = string(b)
	}
	r.mu.Lock()
	last, known := r.published[ep.Name]
	r.mu.Unlock()
	if known && last == key {
		return nil
	}
	var err error
	if rt == nil {
		err = r.cfg.Routes.Delete(ctx, ep.Name)
	} else {
		err = r.cfg.Routes.Put(ctx, rt)
	}
	if err != nil {
		return fmt.Errorf("endpoint %s: publish routing table: %w", ep.Name, err)
	}
	r.mu.Lock()
	r.published[ep.Name] = key
	r.mu.Unlock()
	return nil
}

func (r *Reconciler) config(ctx context.Context, name string) (*records.EndpointConfig, error) {
	var c records.EndpointConfig
	if _, err := r.cfg.Store.Get(ctx, records.KindEndpointConfig, name, &c); err != nil {
		return nil, classify(err)
	}
	return &c, nil
}

// transientError marks a failure to read a record that a retry may mend
// (Consul unreachable, a deadline), as opposed to a record that is
// missing or corrupt, which fails the operation with the reason.
type transientError struct{ err error }

func (e *transientError) Error() string { return e.err.Error() }
func (e *transientError) Unwrap() error { return e.err }

func classify(err error) error {
	if err == nil || errors.Is(err, records.ErrNotFound) || errors.Is(err, records.ErrCorrupt) {
		return err
	}
	return &transientError{err}
}

// permanent: err fails the operation (a missing or corrupt record, a
// spec that does not compile) rather than being retried.
func permanent(err error) bool {
	var t *transientError
	return !errors.As(err, &t)
}

// compile builds generation gen's job from the records, through the one
// translation the API validated them with.
func (r *Reconciler) compile(ctx context.Context, endpoint string, gen int, configName string, dep *smapi.DeploymentConfig) (*nomadJob, []*records.Model, error) {
	cfg, err := r.config(ctx, configName)
	if err != nil {
		return nil, nil, fmt.Errorf("endpoint config %q: %w", configName, err)
	}
	in := translate.Input{EndpointConfigs: []*smapi.CreateEndpointConfigInput{&cfg.Spec}}
	var models []*records.Model
	seen := map[string]bool{}
	for _, v := range append(append([]smapi.ProductionVariant(nil), cfg.Spec.ProductionVariants...), cfg.Spec.ShadowProductionVariants...) {
		if seen[v.ModelName] {
			continue
		}
		seen[v.ModelName] = true
		var m records.Model
		if _, err := r.cfg.Store.Get(ctx, records.KindModel, v.ModelName, &m); err != nil {
			return nil, nil, fmt.Errorf("model %q of variant %q: %w", v.ModelName, v.VariantName, classify(err))
		}
		models = append(models, &m)
		in.Models = append(in.Models, &m.Spec)
	}
	in.Endpoints = []*smapi.CreateEndpointInput{{EndpointName: endpoint, EndpointConfigName: configName, DeploymentConfig: dep}}
	// Store settings and Vault paths come from the operator's records as
	// they are now: a store the operator changed applies from the next
	// generation on.
	names := map[string]bool{}
	for _, m := range models {
		if x := m.Spec.Serai; x != nil && x.ArtifactStore != nil {
			names[x.ArtifactStore.Name] = true
		}
	}
	if x := cfg.Spec.Serai; x != nil && x.DataCaptureStore != nil {
		names[x.DataCaptureStore.Name] = true
	}
	for _, n := range jobspec.SortedNames(names) {
		st, err := r.store(ctx, n)
		if err != nil {
			return nil, nil, err
		}
		in.Stores = append(in.Stores, &st.Settings)
	}
	spec, err := translate.ToSpec(in)
	if err != nil {
		return nil, nil, err
	}
	if diags := jobspec.Validate(spec); diags.HasErrors() {
		return nil, nil, fmt.Errorf("records do not validate: %s", strings.Join(jobspec.Details(diags), "; "))
	}
	job, err := scheduler.Compile(spec, endpoint, gen, r.cfg.Compile)
	if err != nil {
		return nil, nil, err
	}
	return job, models, nil
}

// ensureVault gives each model with an artifact store a policy and a role
// bound to every endpoint that uses it (this one included).
func (r *Reconciler) ensureVault(ctx context.Context, endpoint string, models []*records.Model) error {
	unlock, err := r.lockVault(ctx)
	if err != nil {
		return err
	}
	defer unlock()
	users, unknown, err := r.modelUsers(ctx)
	if err != nil {
		return err
	}
	if len(unknown) > 0 {
		// A binding written now may leave out an endpoint whose record
		// (or config) cannot be read; that endpoint is Failed already.
		r.log.Warn("vault roles bound without the endpoints of corrupt records", "endpoint", endpoint, "corrupt", unknown)
	}
	for _, m := range models {
		creds, ok, err := r.storeCredentials(ctx, m)
		if err != nil {
			return err
		}
		if !ok {
			continue
		}
		if r.cfg.Vault == nil {
			return fmt.Errorf("model %q reads artifact store %q, but this server has no Vault client (set VAULT_ADDR and VAULT_TOKEN)", m.Name, creds.Store)
		}
		eps := users[m.Name]
		if !contains(eps, endpoint) {
			eps = append(eps, endpoint)
			sort.Strings(eps)
		}
		if err := r.cfg.Vault.EnsureModel(ctx, m.Name, creds, eps); err != nil {
			return fmt.Errorf("vault policy for model %q: %w", m.Name, err)
		}
	}
	return nil
}

// refreshVaultFor rewrites the roles of every model with a store so that
// they bind exactly the endpoints whose records still use them, and
// removes the policy and role of models no endpoint uses. endpoint is the
// one that just changed (it may be on its way out).
func (r *Reconciler) refreshVaultFor(ctx context.Context, endpoint string) error {
	if r.cfg.Vault == nil {
		return nil
	}
	unlock, err := r.lockVault(ctx)
	if err != nil {
		return err
	}
	defer unlock()
	users, unknown, err := r.modelUsers(ctx, endpoint)
	if err != nil {
		return err
	}
	models, err := records.ListAll[records.Model](ctx, r.cfg.Store, records.KindModel)
	if err != nil {
		return err
	}
	for _, c := range models.Corrupt {
		unknown = append(unknown, c.Key)
	}
	if len(unknown) > 0 {
		// Which models a corrupt record uses is unknown, so removing or
		// narrowing any role could cut off an endpoint still serving.
		// Leave every role as it is until the records are mended; the
		// next retire or delete refreshes them.
		r.log.Warn("vault roles not refreshed while records are corrupt", "endpoint", endpoint, "corrupt", unknown)
		return nil
	}
	for _, m := range models.Records {
		if !readsStore(m) {
			continue
		}
		eps := users[m.Name]
		if len(eps) == 0 {
			if err := r.cfg.Vault.RemoveModel(ctx, m.Name); err != nil {
				return err
			}
			continue
		}
		creds, _, err := r.storeCredentials(ctx, m)
		if err != nil {
			// No store record to scope the policy by (a record from before
			// stores were records, say): fail closed, so the model reads
			// nothing, and let the other models' roles be refreshed.
			r.log.Warn("model's Vault access removed: its artifact store has no operator record", "model", m.Name, "error", err)
			if err := r.cfg.Vault.RemoveModel(ctx, m.Name); err != nil {
				return err
			}
			continue
		}
		if err := r.cfg.Vault.EnsureModel(ctx, m.Name, creds, eps); err != nil {
			return err
		}
	}
	return nil
}

// lockVault serialises the Vault writes of concurrent steps: each
// computes a model's bindings from every endpoint's record, so two at
// once could write a stale list last.
func (r *Reconciler) lockVault(ctx context.Context) (func(), error) {
	select {
	case r.vault <- struct{}{}:
		return func() { <-r.vault }, nil
	case <-ctx.Done():
		return nil, fmt.Errorf("waiting for another step's vault writes: %w", ctx.Err())
	}
}

// modelUsers maps each model to the endpoints whose live or deploying
// generations use it, leaving out endpoint `leaving` when it is being
// deleted. unknown names the corrupt records (endpoints, configs) whose
// models cannot be told.
func (r *Reconciler) modelUsers(ctx context.Context, leaving ...string) (map[string][]string, []string, error) {
	listed, err := records.ListAll[records.Endpoint](ctx, r.cfg.Store, records.KindEndpoint)
	if err != nil {
		return nil, nil, err
	}
	var unknown []string
	for _, c := range listed.Corrupt {
		unknown = append(unknown, c.Key)
	}
	cfgCache := map[string]*records.EndpointConfig{}
	out := map[string][]string{}
	for _, ep := range listed.Records {
		if contains(leaving, ep.Name) && ep.Op != nil && ep.Op.Kind == records.OpDelete {
			continue
		}
		names := map[string]bool{}
		for _, g := range ep.Generations {
			names[g.ConfigName] = true
		}
		if ep.Op != nil && ep.Op.ConfigName != "" {
			names[ep.Op.ConfigName] = true
		}
		for cn := range names {
			c, ok := cfgCache[cn]
			if !ok {
				if c, err = r.config(ctx, cn); errors.Is(err, records.ErrCorrupt) {
					unknown = append(unknown, records.KindEndpointConfig.Key(cn))
					cfgCache[cn] = nil
					continue
				} else if err != nil && !errors.Is(err, records.ErrNotFound) {
					return nil, nil, err
				}
				cfgCache[cn] = c
			}
			if c == nil {
				continue
			}
			for _, v := range append(append([]smapi.ProductionVariant(nil), c.Spec.ProductionVariants...), c.Spec.ShadowProductionVariants...) {
				if !contains(out[v.ModelName], ep.Name) {
					out[v.ModelName] = append(out[v.ModelName], ep.Name)
				}
			}
		}
	}
	for _, v := range out {
		sort.Strings(v)
	}
	sort.Strings(unknown)
	return out, unknown, nil
}

// storeCredentials is where Vault keeps the keys of the model's store,
// read from the operator's store record: the model record holds the
// store's name only, so no model field chooses the path its policy
// grants. ok is false for a model without a store.
func (r *Reconciler) storeCredentials(ctx context.Context, m *records.Model) (policies.StoreCredentials, bool, error) {
	if !readsStore(m) {
		return policies.StoreCredentials{}, false, nil
	}
	st, err := r.store(ctx, m.Spec.Serai.ArtifactStore.Name)
	if err != nil {
		return policies.StoreCredentials{}, false, fmt.Errorf("model %q: %w", m.Name, err)
	}
	c := policies.StoreCredentials{Store: st.Name}
	if v := st.Settings.Vault; v != nil {
		c.KVMount, c.KVPath, c.AWSMount, c.AWSRole = v.KVMount, v.KVPath, v.AWSMount, v.AWSRole
	}
	return c, true, nil
}

// readsStore: the model's artifact is read through a store, as the
// compiler decides it (s3:// with a store named).
func readsStore(m *records.Model) bool {
	x := m.Spec.Serai
	return x != nil && x.ArtifactStore != nil && strings.HasPrefix(modelURL(m), "s3://")
}

func modelURL(m *records.Model) string {
	if c := m.Spec.PrimaryContainer; c != nil {
		return c.ModelDataUrl
	}
	return ""
}

// store reads an operator store record.
func (r *Reconciler) store(ctx context.Context, name string) (*records.ArtifactStore, error) {
	var st records.ArtifactStore
	if _, err := r.cfg.Store.Get(ctx, records.KindStore, name, &st); err != nil {
		if errors.Is(err, records.ErrNotFound) {
			return nil, fmt.Errorf("artifact store %q has no operator record (serai store put)", name)
		}
		return nil, fmt.Errorf("artifact store %q: %w", name, err)
	}
	return &st, nil
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
