package apply

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/seraihq/serai/server/client"
	"github.com/seraihq/serai/server/smapi"
)

// Goal is the state a watch waits for.
type Goal struct {
	// Config, when set, is the config the endpoint must end InService
	// with (CreateEndpoint, UpdateEndpoint): InService with another one
	// means the update was rolled back.
	Config string
	// Deleted waits for the endpoint to disappear (DeleteEndpoint).
	Deleted bool
}

// Snapshot is one observed state of an endpoint, reported when what a
// person would see changes.
type Snapshot struct {
	Endpoint string
	Elapsed  time.Duration
	// Status is the EndpointStatus, or "Deleted".
	Status string
	// Text is the rendered state (see Render), without the elapsed time.
	Text string
	// Describe is the answer observed (nil once deleted).
	Describe *smapi.DescribeEndpointOutput
}

// StatusDeleted is the pseudo-status of an endpoint that is gone.
const StatusDeleted = "Deleted"

// Watcher polls DescribeEndpoint until an operation ends.
type Watcher struct {
	API Describer
	// Interval between polls (default 2 s).
	Interval time.Duration
	// Report, if set, is called with each new state (not with repeats).
	Report func(Snapshot)
	// Grace is how long polling goes on while the server cannot be
	// reached or answers 5xx (after the client's own retries): the
	// operation runs on whichever server leads, and the one polled may
	// be restarting (default 30 s).
	Grace time.Duration
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// transient tells whether a failed poll may be tried again: no answer,
// or a 5xx one.
func transient(err error) bool {
	var e *client.Error
	if errors.As(err, &e) {
		return e.StatusCode >= 500
	}
	return !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded)
}

// FailedError is an operation that ended without reaching its goal.
type FailedError struct {
	Endpoint string
	Status   string
	// RolledBack: the endpoint is InService again on its previous config.
	RolledBack bool
	Config     string // the config it runs
	Reason     string
}

func (e *FailedError) Error() string {
	reason := e.Reason
	if reason == "" {
		reason = "no reason given"
	}
	if e.RolledBack {
		return fmt.Sprintf("endpoint %q: update rolled back; it is %s with endpoint_config %q: %s", e.Endpoint, e.Status, e.Config, reason)
	}
	return fmt.Sprintf("endpoint %q is %s: %s", e.Endpoint, e.Status, reason)
}

// Wait polls the endpoint until it reaches the goal (nil error, with the
// last answer; nil answer once deleted) or cannot (*FailedError), or ctx
// ends.
func (w Watcher) Wait(ctx context.Context, name string, goal Goal) (*smapi.DescribeEndpointOutput, error) {
	interval := w.Interval
	if interval <= 0 {
		interval = 2 * time.Second
	}
	now := w.Now
	if now == nil {
		now = time.Now
	}
	grace := w.Grace
	if grace <= 0 {
		grace = 30 * time.Second
	}
	start := now()
	last := ""
	var failingSince time.Time
	report := func(s Snapshot) {
		if w.Report == nil || s.Text == last {
			return
		}
		last = s.Text
		s.Endpoint, s.Elapsed = name, now().Sub(start)
		w.Report(s)
	}
	for {
		d, err := w.API.DescribeEndpoint(ctx, &smapi.DescribeEndpointInput{EndpointName: name})
		switch {
		case client.IsNotFound(err) && goal.Deleted:
			report(Snapshot{Status: StatusDeleted, Text: StatusDeleted})
			return nil, nil
		case client.IsNotFound(err):
			return nil, &FailedError{Endpoint: name, Status: StatusDeleted, Reason: "the endpoint was deleted while being watched"}
		case err != nil && transient(err) && ctx.Err() == nil:
			if failingSince.IsZero() {
				failingSince = now()
			}
			if now().Sub(failingSince) > grace {
				return nil, fmt.Errorf("endpoint %q: gave up polling after %s: %w", name, grace, err)
			}
		case err != nil:
			return nil, err
		}
		if err != nil {
			if !sleep(ctx, interval) {
				return nil, fmt.Errorf("endpoint %q: %w", name, ctx.Err())
			}
			continue
		}
		failingSince = time.Time{}
		report(Snapshot{Status: d.EndpointStatus, Text: Render(d), Describe: d})
		if done, err := reached(d, goal); done {
			return d, err
		}
		if !sleep(ctx, interval) {
			return d, fmt.Errorf("endpoint %q: still %s: %w", name, d.EndpointStatus, ctx.Err())
		}
	}
}

// sleep waits d unless ctx ends first (false).
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// reached tells whether the watch is over, and if so how it ended.
func reached(d *smapi.DescribeEndpointOutput, goal Goal) (bool, error) {
	fail := func(rolledBack bool) error {
		return &FailedError{Endpoint: d.EndpointName, Status: d.EndpointStatus, RolledBack: rolledBack, Config: d.EndpointConfigName, Reason: d.FailureReason}
	}
	switch d.EndpointStatus {
	case smapi.StatusInService:
		if goal.Deleted {
			return false, nil
		}
		if goal.Config != "" && d.EndpointConfigName != goal.Config {
			return true, fail(true)
		}
		// The API clears FailureReason when an operation starts; one
		// that ends InService with a reason did not do what was asked.
		if goal.Config == "" && d.FailureReason != "" {
			return true, fail(false)
		}
		return true, nil
	case smapi.StatusFailed, smapi.StatusUpdateRollbackFailed, smapi.StatusOutOfService:
		return true, fail(false)
	}
	return false, nil
}

// Render is a person's view of an endpoint: status and config, traffic
// split between generations, and per variant its status, healthy/desired
// instances and share of the generation's traffic.
func Render(d *smapi.DescribeEndpointOutput) string { return render(d, false) }

// RenderDetail is Render with, under each live variant, its autoscaling
// policy and last scaling events (`serai endpoint describe`).
func RenderDetail(d *smapi.DescribeEndpointOutput) string { return render(d, true) }

func render(d *smapi.DescribeEndpointOutput, detail bool) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s  endpoint_config %q", d.EndpointStatus, d.EndpointConfigName)
	if p := d.PendingDeploymentSummary; p != nil {
		fmt.Fprintf(&b, " → %q", p.EndpointConfigName)
	}
	if d.Serai != nil && len(d.Serai.Generations) > 1 {
		var parts []string
		var total float64
		for _, g := range d.Serai.Generations {
			total += g.Weight
		}
		for _, g := range d.Serai.Generations {
			parts = append(parts, fmt.Sprintf("g%d %s %s", g.Generation, g.ConfigName, percent(g.Weight, total)))
		}
		fmt.Fprintf(&b, "\n  traffic: %s", strings.Join(parts, ", "))
	}
	var total float64
	for _, v := range d.ProductionVariants {
		total += v.CurrentWeight
	}
	for _, v := range d.ProductionVariants {
		fmt.Fprintf(&b, "\n  variant %-12s %d/%d healthy  weight %g (%s)", v.VariantName, v.CurrentInstanceCount, v.DesiredInstanceCount, v.CurrentWeight, percent(v.CurrentWeight, total))
		if v.DesiredWeight != v.CurrentWeight {
			fmt.Fprintf(&b, " → %g", v.DesiredWeight)
		}
		writeVariantStatus(&b, v.VariantStatus)
		if detail {
			writeScaling(&b, d, v.VariantName)
		}
	}
	for _, v := range d.ShadowProductionVariants {
		fmt.Fprintf(&b, "\n  shadow  %-12s %d/%d healthy", v.VariantName, v.CurrentInstanceCount, v.DesiredInstanceCount)
		writeVariantStatus(&b, v.VariantStatus)
	}
	if p := d.PendingDeploymentSummary; p != nil {
		var total float64
		for _, v := range p.ProductionVariants {
			total += v.CurrentWeight
		}
		for _, v := range p.ProductionVariants {
			fmt.Fprintf(&b, "\n  pending %-12s %d/%d healthy  weight %g (%s)", v.VariantName, v.CurrentInstanceCount, v.DesiredInstanceCount, v.CurrentWeight, percent(v.CurrentWeight, total))
			writeVariantStatus(&b, v.VariantStatus)
		}
	}
	if d.FailureReason != "" {
		fmt.Fprintf(&b, "\n  reason: %s", d.FailureReason)
	}
	return b.String()
}

func writeVariantStatus(b *strings.Builder, st []smapi.VariantStatus) {
	for _, s := range st {
		fmt.Fprintf(b, "  %s", s.Status)
		if s.StatusMessage != "" {
			fmt.Fprintf(b, " (%s)", s.StatusMessage)
		}
	}
}

func percent(w, total float64) string {
	if total <= 0 {
		return "0%"
	}
	return fmt.Sprintf("%.0f%%", 100*w/total)
}

// writeScaling writes a variant's autoscaling policy and last scaling
// events, as DescribeEndpoint's Serai extension reports them.
func writeScaling(b *strings.Builder, d *smapi.DescribeEndpointOutput, variant string) {
	if d.Serai == nil {
		return
	}
	for _, vs := range d.Serai.Scaling {
		if vs.VariantName != variant {
			continue
		}
		if p := vs.Policy; p != nil {
			fmt.Fprintf(b, "\n    autoscaling %d..%d instances, target %g invocations/instance/min", p.MinCapacity, p.MaxCapacity, p.TargetInvocationsPerInstance)
			fmt.Fprintf(b, ", cooldown out %s in %s, every %s", orDefault(p.ScaleOutCooldown, "300s"), orDefault(p.ScaleInCooldown, "300s"), orDefault(p.EvaluationInterval, "1m"))
		}
		for _, e := range vs.Events {
			fmt.Fprintf(b, "\n    %s  ", e.Time.UTC().Format(time.RFC3339))
			switch {
			case e.Error:
				b.WriteString("scaling error")
			case e.Count != nil:
				fmt.Fprintf(b, "scaled %d → %d", e.PreviousCount, *e.Count)
			default:
				fmt.Fprintf(b, "at %d", e.PreviousCount)
			}
			if e.Source != "" {
				fmt.Fprintf(b, " by %s", e.Source)
			}
			if e.Message != "" {
				fmt.Fprintf(b, ": %s", e.Message)
			}
		}
	}
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}
