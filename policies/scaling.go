package policies

import (
	"fmt"
	"github.com/seraihq/serai/contract"
	"strconv"
	"time"
)

// Names of the router's Prometheus series the scaling query reads.
const (
	MetricInvocations      = contract.MetricInvocations
	MetricHealthyInstances = contract.MetricHealthyInstances
	MetricHeldRequests     = contract.MetricHeldRequests
)

// Defaults follow SageMaker's target-tracking defaults (300 s cooldowns) and
// the autoscaler's usual one-minute evaluation.
const (
	DefaultCooldown           = 300 * time.Second
	DefaultEvaluationInterval = time.Minute
	CheckName                 = "invocations_per_instance"
	PrometheusSource          = "prometheus"
	TargetValueStrategy       = "target-value"
)

// Scaling is what the spec asks of one variant's autoscaling.
type Scaling struct {
	Endpoint   string
	Variant    string
	Generation int
	// Target is invocations per instance per minute
	// (SageMakerVariantInvocationsPerInstance).
	Target             float64
	ScaleInCooldown    time.Duration
	ScaleOutCooldown   time.Duration
	EvaluationInterval time.Duration
}

// Query is the PromQL the check runs: invocations per minute over the last
// minute, summed over every router (each router counts only the requests it
// routed), plus the requests the routers hold right now for the variant
// (scale from zero: each held request is an invocation not yet counted),
// divided by the instances healthy in Consul as one router sees them.
// Every router reports the same healthy-instance count, so the gauge is
// taken with max() across routers, never summed: summing would multiply the
// divisor by the number of routers and halve the measured load with each
// router added. max() also ignores a router whose view still lags behind.
// The target-value strategy's ratio (metric / target) then scales the count
// directly; from 0 instances the autoscaler takes ceil(metric / target),
// so any held request asks for one instance.
//
// When no router has counted an invocation for the variant yet, the rate is
// taken as 0 as long as some router reports the variant (so an idle variant
// scales in); when no router reports it at all (Prometheus cannot scrape any
// router) the query returns no sample and the autoscaler takes no action,
// rather than reading lost metrics as no load. clamp_min keeps a variant with
// no healthy instance from dividing by zero.
func (s Scaling) Query() string {
	sel := fmt.Sprintf(`{endpoint=%q,variant=%q,generation="%d"}`, s.Endpoint, s.Variant, s.Generation)
	healthy := fmt.Sprintf(`max(%s%s)`, MetricHealthyInstances, sel)
	return fmt.Sprintf(`((sum(rate(%s%s[1m])) or (%s * 0)) * 60 + (sum(%s%s) or (%s * 0))) / clamp_min(%s, 1)`,
		MetricInvocations, sel, healthy, MetricHeldRequests, sel, healthy, healthy)
}

// NomadPolicy returns the task group scaling block's `policy` as Nomad
// stores it when parsed from HCL (blocks become lists of single-key maps),
// which is the shape the Nomad Autoscaler's policy parser reads.
func (s Scaling) NomadPolicy() map[string]any {
	in, out, eval := s.ScaleInCooldown, s.ScaleOutCooldown, s.EvaluationInterval
	if in == 0 {
		in = DefaultCooldown
	}
	if out == 0 {
		out = DefaultCooldown
	}
	if eval == 0 {
		eval = DefaultEvaluationInterval
	}
	return map[string]any{
		"cooldown":             in.String(),
		"cooldown_on_scale_up": out.String(),
		"evaluation_interval":  eval.String(),
		"check": []any{
			map[string]any{
				CheckName: []any{
					map[string]any{
						"source":       PrometheusSource,
						"query":        s.Query(),
						"query_window": "1m",
						"strategy": []any{
							map[string]any{
								TargetValueStrategy: []any{
									map[string]any{"target": s.Target},
								},
							},
						},
					},
				},
			},
		},
	}
}

// Check is one autoscaler check read back from a Nomad policy document.
type Check struct {
	Name     string
	Source   string
	Query    string
	Strategy string
	Target   float64
}

// ParseNomadPolicy reads the checks back out of a policy document as the
// autoscaler would, after a JSON round trip through Nomad. It exists so
// tests (and `serai` diagnostics) can prove the compiled policy says what
// the spec asked for.
func ParseNomadPolicy(p map[string]any) ([]Check, error) {
	var out []Check
	checks, ok := p["check"].([]any)
	if !ok {
		return nil, fmt.Errorf("policy has no check list")
	}
	for _, c := range checks {
		named, ok := c.(map[string]any)
		if !ok {
			return nil, fmt.Errorf("check is %T, want an object", c)
		}
		for name, body := range named {
			b, err := single(body)
			if err != nil {
				return nil, fmt.Errorf("check %q: %w", name, err)
			}
			ck := Check{Name: name}
			ck.Source, _ = b["source"].(string)
			ck.Query, _ = b["query"].(string)
			strats, ok := b["strategy"].([]any)
			if !ok || len(strats) != 1 {
				return nil, fmt.Errorf("check %q: want exactly one strategy", name)
			}
			sm, ok := strats[0].(map[string]any)
			if !ok || len(sm) != 1 {
				return nil, fmt.Errorf("check %q: malformed strategy", name)
			}
			for sname, sbody := range sm {
				cfg, err := single(sbody)
				if err != nil {
					return nil, fmt.Errorf("check %q strategy %q: %w", name, sname, err)
				}
				ck.Strategy = sname
				switch t := cfg["target"].(type) {
				case float64:
					ck.Target = t
				case string:
					if ck.Target, err = strconv.ParseFloat(t, 64); err != nil {
						return nil, fmt.Errorf("check %q: target %q: %w", name, t, err)
					}
				default:
					return nil, fmt.Errorf("check %q: target is %T", name, cfg["target"])
				}
			}
			out = append(out, ck)
		}
	}
	return out, nil
}

func single(v any) (map[string]any, error) {
	list, ok := v.([]any)
	if !ok || len(list) != 1 {
		return nil, fmt.Errorf("want a list of one block, got %T", v)
	}
	m, ok := list[0].(map[string]any)
	if !ok {
		return nil, fmt.Errorf("block is %T, want an object", list[0])
	}
	return m, nil
}
