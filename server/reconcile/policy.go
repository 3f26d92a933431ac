package reconcile

import (
	"context"
	"fmt"
	"math"
	"time"

	nomadapi "github.com/hashicorp/nomad/api"

	"github.com/seraihq/serai/server/records"
	"github.com/seraihq/serai/server/smapi"
)

type nomadJob = nomadapi.Job

// targetShare is the new generation's share of traffic after traffic step
// `step` (0-based) of the policy: all at once takes everything; canary
// takes the canary share, then everything; linear adds one step size per
// step until everything.
func targetShare(p *smapi.DeploymentConfig, step int) float64 {
	trc := trafficRouting(p)
	switch trc.Type {
	case smapi.TrafficCanary:
		if step == 0 && trc.CanarySize != nil {
			return percent(trc.CanarySize)
		}
	case smapi.TrafficLinear:
		if trc.LinearStepSize != nil {
			s := percent(trc.LinearStepSize)
			if s > 0 {
				return math.Min(1, float64(step+1)*s)
			}
		}
	}
	return 1
}

// percent reads a capacity size as a traffic fraction. INSTANCE_COUNT
// sizes have no meaning for a router that splits requests, not instances;
// the API refuses them, so only CAPACITY_PERCENT reaches here.
func percent(c *smapi.CapacitySize) float64 {
	return math.Max(0, math.Min(1, c.Value/100))
}

func trafficRouting(p *smapi.DeploymentConfig) smapi.TrafficRoutingConfiguration {
	if p == nil || p.BlueGreenUpdatePolicy == nil {
		return smapi.TrafficRoutingConfiguration{Type: smapi.TrafficAllAtOnce}
	}
	return p.BlueGreenUpdatePolicy.TrafficRoutingConfiguration
}

// waitInterval is how long each traffic step bakes.
func waitInterval(p *smapi.DeploymentConfig) time.Duration {
	return time.Duration(trafficRouting(p).WaitIntervalInSeconds) * time.Second
}

// terminationWait is how long the old generation stays up, idle, after
// the last bake: SageMaker's TerminationWaitInSeconds (default 0).
func terminationWait(p *smapi.DeploymentConfig) time.Duration {
	if p == nil || p.BlueGreenUpdatePolicy == nil || p.BlueGreenUpdatePolicy.TerminationWaitInSeconds == nil {
		return 0
	}
	return time.Duration(*p.BlueGreenUpdatePolicy.TerminationWaitInSeconds) * time.Second
}

// judge compares what the new generation did since the bake began with the
// rollback thresholds. It returns a reason when one is breached.
func (r *Reconciler) judge(ctx context.Context, endpoint string, op *records.Operation) (string, error) {
	ar := op.AutoRollback
	if ar == nil || (ar.MaxErrorRate == nil && ar.MaxP99Latency == "") {
		return "", nil
	}
	cur, err := r.cfg.Metrics.Sample(ctx, endpoint, op.Target)
	if err != nil {
		return "", err
	}
	r.mu.Lock()
	r.judged[judgedKey(endpoint, op.Target)] = r.cfg.Now()
	r.mu.Unlock()
	return Judge(op.Baseline, cur, ar, op.Target), nil
}

// needsMetrics: the update has rollback thresholds, so traffic moves on
// only on a judgement of the routers' metrics.
func needsMetrics(op *records.Operation) bool {
	ar := op.AutoRollback
	return ar != nil && (ar.MaxErrorRate != nil || ar.MaxP99Latency != "")
}

// lastJudged is when the generation op deploys was last judged on
// metrics from at least one router (zero: not by this reconciler).
func (r *Reconciler) lastJudged(endpoint string, op *records.Operation) time.Time {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.judged[judgedKey(endpoint, op.Target)]
}

func judgedKey(endpoint string, gen int) string { return fmt.Sprintf("%s/%d", endpoint, gen) }

// Judge is the rollback decision on two samples of every router's
// counters. A router that restarted (counters below the baseline) counts
// from zero.
func Judge(base, cur map[string]records.MetricSample, ar *smapi.AutoRollback, gen int) string {
	d := delta(base, cur)
	min := 1.0
	if ar.MinInvocations != nil && *ar.MinInvocations > 0 {
		min = float64(*ar.MinInvocations)
	}
	if d.Invocations < min {
		return ""
	}
	if ar.MaxErrorRate != nil {
		rate := d.Errors5xx / d.Invocations
		if rate > *ar.MaxErrorRate {
			return fmt.Sprintf("generation %d answered 5xx to %.1f%% of %.0f invocations (max_error_rate %.1f%%)", gen, rate*100, d.Invocations, *ar.MaxErrorRate*100)
		}
	}
	if ar.MaxP99Latency != "" {
		max, err := time.ParseDuration(ar.MaxP99Latency)
		if err == nil && max > 0 {
			if p99, ok := quantile(d, 0.99); ok && p99 > max.Seconds() {
				shown := "beyond the largest bucket"
				if !math.IsInf(p99, 1) {
					shown = time.Duration(p99 * float64(time.Second)).Round(time.Millisecond).String()
				}
				return fmt.Sprintf("generation %d p99 model latency %s over %.0f invocations exceeds max_p99_latency %s", gen, shown, d.Invocations, max)
			}
		}
	}
	return ""
}

func delta(base, cur map[string]records.MetricSample) records.MetricSample {
	var out records.MetricSample
	buckets := map[float64]float64{}
	for id, c := range cur {
		b, ok := base[id]
		if !ok || c.Invocations < b.Invocations || c.LatencyCount < b.LatencyCount {
			b = records.MetricSample{}
		}
		out.Invocations += c.Invocations - b.Invocations
		out.Errors5xx += math.Max(0, c.Errors5xx-b.Errors5xx)
		out.LatencyCount += c.LatencyCount - b.LatencyCount
		prev := map[float64]float64{}
		for _, x := range b.Latency {
			prev[x.UpperBound] = x.Count
		}
		for _, x := range c.Latency {
			buckets[x.UpperBound] += x.Count - prev[x.UpperBound]
		}
	}
	for le, n := range buckets {
		out.Latency = append(out.Latency, records.Bucket{UpperBound: le, Count: n})
	}
	sortBuckets(out.Latency)
	return out
}

// quantile is Prometheus' histogram_quantile on cumulative buckets without
// interpolation: the upper bound of the first bucket holding the q-th
// observation. Beyond the last finite bucket it answers +Inf.
func quantile(s records.MetricSample, q float64) (float64, bool) {
	if s.LatencyCount <= 0 || len(s.Latency) == 0 {
		return 0, false
	}
	rank := q * s.LatencyCount
	for _, b := range s.Latency {
		if b.Count >= rank {
			return b.UpperBound, true
		}
	}
	return math.Inf(1), true
}

func sortBuckets(b []records.Bucket) {
	for i := 1; i < len(b); i++ {
		for j := i; j > 0 && b[j].UpperBound < b[j-1].UpperBound; j-- {
			b[j], b[j-1] = b[j-1], b[j]
		}
	}
}
