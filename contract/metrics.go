package contract

// Router metric names other parts query: the compiled scaling policies
// (through the Nomad Autoscaler's Prometheus source) and the control
// plane's auto-rollback (scraping the routers directly). The router defines
// its series with these names; renaming one silently breaks scaling and
// rollback, so they live here.
const (
	// MetricInvocations counts invocations routed to a variant.
	MetricInvocations = "serai_router_invocations_total"
	// MetricInvocation5xx counts invocations answered 5xx.
	MetricInvocation5xx = "serai_router_invocation_5xx_errors_total"
	// MetricInvocation4xx counts invocations answered 4xx.
	MetricInvocation4xx = "serai_router_invocation_4xx_errors_total"
	// MetricModelLatency is the model latency histogram (seconds).
	MetricModelLatency = "serai_router_model_latency_seconds"
	// MetricHealthyInstances is the per-variant healthy instance gauge.
	MetricHealthyInstances = "serai_router_healthy_instances"
	// MetricHeldRequests is the per-variant gauge of requests a router
	// holds while the variant scales from zero: the scaling query counts
	// them as load, so a woken variant is not scaled back to zero while
	// its first requests wait.
	MetricHeldRequests = "serai_router_held_requests"
)

// Labels every per-variant router series carries.
const (
	LabelEndpoint   = "endpoint"
	LabelVariant    = "variant"
	LabelGeneration = "generation"
)
