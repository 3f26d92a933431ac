package router

import (
	"github.com/seraihq/serai/contract"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metric names follow SageMaker's CloudWatch metrics where one exists
// (Invocations, Invocation4XXErrors, ModelLatency, OverheadLatency), in
// Prometheus spelling. Endpoint and variant labels are taken from the routing
// table, never from request input, so a client cannot grow the series count.
// Errors that happen before a variant is chosen carry variant="" and
// generation="". The generation label keeps blue and green apart while a
// deployment shifts traffic, and is what each generation's autoscaling
// policy selects on (docs/contracts.md).
type metrics struct {
	invocations  *prometheus.CounterVec
	errors4xx    *prometheus.CounterVec
	errors5xx    *prometheus.CounterVec
	modelLatency *prometheus.HistogramVec
	overhead     *prometheus.HistogramVec
	inFlight     *prometheus.GaugeVec
	healthy      *prometheus.GaugeVec
	ejected      *prometheus.GaugeVec
	ejections    *prometheus.CounterVec
	retries      *prometheus.CounterVec
	held         *prometheus.GaugeVec
	coldStart    *prometheus.HistogramVec
	holdOutcomes *prometheus.CounterVec

	streams *streamVecs

	shadowInvocations *prometheus.CounterVec
	shadowErrors      *prometheus.CounterVec
	shadowLatency     *prometheus.HistogramVec
	shadowDropped     *prometheus.CounterVec

	rejected           *prometheus.CounterVec
	rejBadPath         prometheus.Counter
	rejMethod          prometheus.Counter
	rejUnknownEndpoint prometheus.Counter
	rejOverloaded      prometheus.Counter
	rejBodyBudget      prometheus.Counter
	rejNotSynced       prometheus.Counter
	rejAuth            prometheus.Counter

	discoveryUp       prometheus.Gauge
	untrusted         *prometheus.GaugeVec
	discoveryErrors   prometheus.Counter
	tableUpdates      prometheus.Counter
	tableLastUpdate   prometheus.Gauge
	discoveryLastSync prometheus.Gauge

	mu       sync.Mutex
	variants map[[3]string]*variantMetrics
	shadows  map[[3]string]*shadowMetrics
}

// variantMetrics holds the children of one (endpoint, variant, generation) so the hot
// path touches no label map.
type variantMetrics struct {
	invocations  prometheus.Counter
	errors4xx    prometheus.Counter
	errors5xx    prometheus.Counter
	modelLatency prometheus.Observer
	overhead     prometheus.Observer
	inFlight     prometheus.Gauge
	healthy      prometheus.Gauge
	ejected      prometheus.Gauge
	ejections    prometheus.Counter
	retries      prometheus.Counter
	held         prometheus.Gauge
	coldStart    prometheus.Observer
	stream       *streamMetrics
}

type shadowMetrics struct {
	invocations prometheus.Counter
	errors      prometheus.Counter
	latency     prometheus.Observer
	dropped     prometheus.Counter
}

// coldStartBuckets span a model already on the node (about a second) to
// SageMaker's invocation timeout.
var coldStartBuckets = []float64{0.5, 1, 2, 5, 10, 15, 20, 30, 45, 60, 120}

// latencyBuckets spans 100µs (router overhead) to 60s (model timeout).
var latencyBuckets = []float64{
	0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
	0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60,
}

func newMetrics(reg prometheus.Registerer, staleness func() float64) *metrics {
	ev := []string{contract.LabelEndpoint, contract.LabelVariant, contract.LabelGeneration}
	m := &metrics{
		invocations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: contract.MetricInvocations, Help: "InvokeEndpoint requests routed to a variant.",
		}, ev),
		errors4xx: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: contract.MetricInvocation4xx, Help: "Invocations answered with a 4xx status (the model's for model errors, the router's otherwise).",
		}, ev),
		errors5xx: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: contract.MetricInvocation5xx, Help: "Invocations answered with a 5xx status, including model 5xx, model timeouts and no healthy instance.",
		}, ev),
		modelLatency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: contract.MetricModelLatency, Help: "Time the model took to answer, as seen from the router (SageMaker ModelLatency).", Buckets: latencyBuckets,
		}, ev),
		overhead: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "serai_router_overhead_latency_seconds", Help: "Time the router added on top of the model (SageMaker OverheadLatency).", Buckets: latencyBuckets,
		}, ev),
		inFlight: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "serai_router_in_flight_requests", Help: "Requests currently being served by a variant.",
		}, ev),
		healthy: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: contract.MetricHealthyInstances, Help: "Instances passing their health checks, per variant named in the routing table.",
		}, ev),
		ejected: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "serai_router_ejected_instances", Help: "Healthy instances currently ejected by outlier detection.",
		}, ev),
		ejections: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "serai_router_instance_ejections_total", Help: "Times an instance was ejected after repeated failures.",
		}, ev),
		retries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "serai_router_retries_total", Help: "Requests retried on another instance after a connection failure.",
		}, ev),
		held: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: contract.MetricHeldRequests, Help: "Requests held while the variant scales from zero (a request waiting for several variants counts for each).",
		}, ev),
		coldStart: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "serai_router_cold_start_seconds", Help: "How long a request was held while its variant scaled from zero, counted when it is sent.", Buckets: coldStartBuckets,
		}, ev),
		holdOutcomes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "serai_router_hold_outcomes_total", Help: "Requests held while a variant scaled from zero, by how the hold ended: sent, full (queue full, 429), timeout (429), gone (the client hung up), no_instance (the variant stopped scaling from zero, 503), draining (the router shut down, 503).",
		}, []string{contract.LabelEndpoint, "outcome"}),
		shadowInvocations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "serai_router_shadow_invocations_total", Help: "Mirrored requests sent to a shadow variant.",
		}, ev),
		shadowErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "serai_router_shadow_errors_total", Help: "Mirrored requests that failed or got a non-2xx answer.",
		}, ev),
		shadowLatency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "serai_router_shadow_model_latency_seconds", Help: "Model latency of mirrored requests.", Buckets: latencyBuckets,
		}, ev),
		shadowDropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "serai_router_shadow_dropped_total", Help: "Sampled requests not mirrored because the shadow budget was full or no instance was healthy.",
		}, ev),
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "serai_router_rejected_requests_total", Help: "Requests refused before an endpoint was resolved, by reason.",
		}, []string{"reason"}),
		discoveryUp: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "serai_router_discovery_up", Help: "1 when every discovery watch is in sync, 0 while any is failing and the router serves its last known table.",
		}),
		untrusted: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: MetricUntrustedInstances, Help: "Instances registered under an endpoint's service that the router ignores: no health check of their own, or service meta that does not name the job and generation their tags claim.",
		}, []string{contract.LabelEndpoint}),
		discoveryErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "serai_router_discovery_errors_total", Help: "Failed discovery queries.",
		}),
		tableUpdates: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "serai_router_routing_table_updates_total", Help: "Routing table rebuilds.",
		}),
		tableLastUpdate: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "serai_router_routing_table_last_update_timestamp_seconds", Help: "Unix time of the last routing table rebuild.",
		}),
		discoveryLastSync: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "serai_router_discovery_last_sync_timestamp_seconds", Help: "Unix time discovery last reported a successful sync.",
		}),
		variants: map[[3]string]*variantMetrics{},
		shadows:  map[[3]string]*shadowMetrics{},
	}
	staleGauge := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "serai_router_discovery_staleness_seconds",
		Help: "How long the oldest failing discovery watch has been failing; 0 when all are in sync.",
	}, staleness)
	reg.MustRegister(m.invocations, m.errors4xx, m.errors5xx, m.modelLatency, m.overhead,
		m.inFlight, m.healthy, m.ejected, m.ejections, m.retries, m.held, m.coldStart, m.holdOutcomes,
		m.shadowInvocations, m.shadowErrors, m.shadowLatency, m.shadowDropped,
		m.rejected, m.discoveryUp, m.untrusted, m.discoveryErrors, m.tableUpdates, m.tableLastUpdate,
		m.discoveryLastSync, staleGauge)
	m.streams = newStreamVecs(reg, ev)
	m.discoveryUp.Set(1)
	m.rejBadPath = m.rejected.WithLabelValues("bad_path")
	m.rejMethod = m.rejected.WithLabelValues("bad_method")
	m.rejUnknownEndpoint = m.rejected.WithLabelValues("unknown_endpoint")
	m.rejOverloaded = m.rejected.WithLabelValues("overloaded")
	m.rejBodyBudget = m.rejected.WithLabelValues("body_budget")
	m.rejNotSynced = m.rejected.WithLabelValues("not_synced")
	m.rejAuth = m.rejected.WithLabelValues("auth")
	return m
}

// MetricUntrustedInstances is the per-endpoint gauge of instances the
// router refuses to use (SetUntrusted).
const MetricUntrustedInstances = "serai_router_untrusted_instances"

// endpointLevel holds the error counters of requests refused before a
// variant was chosen (variant=""); only the error fields are set.
func (m *metrics) endpointLevel(endpoint string) *variantMetrics {
	m.mu.Lock()
	defer m.mu.Unlock()
	k := seriesKey(endpoint, "", 0)
	if v, ok := m.variants[k]; ok {
		return v
	}
	v := &variantMetrics{
		errors4xx: m.errors4xx.WithLabelValues(k[:]...),
		errors5xx: m.errors5xx.WithLabelValues(k[:]...),
	}
	m.variants[k] = v
	return v
}

// shadowInstances holds the instance gauges of a shadow variant, whose
// traffic is counted by the shadow_* metrics instead.
func (m *metrics) shadowInstances(endpoint, variant string, generation int) *variantMetrics {
	m.mu.Lock()
	defer m.mu.Unlock()
	k := seriesKey(endpoint, variant, generation)
	if v, ok := m.variants[k]; ok {
		return v
	}
	v := &variantMetrics{
		healthy:   m.healthy.WithLabelValues(k[:]...),
		ejected:   m.ejected.WithLabelValues(k[:]...),
		ejections: m.ejections.WithLabelValues(k[:]...),
	}
	m.variants[k] = v
	return v
}

func (m *metrics) variant(endpoint, variant string, generation int) *variantMetrics {
	m.mu.Lock()
	defer m.mu.Unlock()
	k := seriesKey(endpoint, variant, generation)
	// A partial entry (a former shadow variant) is replaced by a full one.
	if v, ok := m.variants[k]; ok && v.invocations != nil {
		return v
	}
	v := &variantMetrics{
		invocations:  m.invocations.WithLabelValues(k[:]...),
		errors4xx:    m.errors4xx.WithLabelValues(k[:]...),
		errors5xx:    m.errors5xx.WithLabelValues(k[:]...),
		modelLatency: m.modelLatency.WithLabelValues(k[:]...),
		overhead:     m.overhead.WithLabelValues(k[:]...),
		inFlight:     m.inFlight.WithLabelValues(k[:]...),
		healthy:      m.healthy.WithLabelValues(k[:]...),
		ejected:      m.ejected.WithLabelValues(k[:]...),
		ejections:    m.ejections.WithLabelValues(k[:]...),
		retries:      m.retries.WithLabelValues(k[:]...),
		held:         m.held.WithLabelValues(k[:]...),
		coldStart:    m.coldStart.WithLabelValues(k[:]...),
		stream:       m.streams.child(k),
	}
	m.variants[k] = v
	return v
}

func (m *metrics) shadow(endpoint, variant string, generation int) *shadowMetrics {
	m.mu.Lock()
	defer m.mu.Unlock()
	k := seriesKey(endpoint, variant, generation)
	if v, ok := m.shadows[k]; ok {
		return v
	}
	v := &shadowMetrics{
		invocations: m.shadowInvocations.WithLabelValues(k[:]...),
		errors:      m.shadowErrors.WithLabelValues(k[:]...),
		latency:     m.shadowLatency.WithLabelValues(k[:]...),
		dropped:     m.shadowDropped.WithLabelValues(k[:]...),
	}
	m.shadows[k] = v
	return v
}

// forget deletes the series of variants no longer in any routing table, so
// removed variants do not linger in /metrics forever. keep lists the
// (endpoint, variant) pairs still in use for endpoint.
func (m *metrics) forget(endpoint string, keep map[[3]string]bool, keepShadow map[[3]string]bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for k := range m.variants {
		if k[0] != endpoint || keep[k] {
			continue
		}
		delete(m.variants, k)
		for _, v := range []*prometheus.CounterVec{m.invocations, m.errors4xx, m.errors5xx, m.ejections, m.retries} {
			v.DeleteLabelValues(k[:]...)
		}
		m.modelLatency.DeleteLabelValues(k[:]...)
		m.overhead.DeleteLabelValues(k[:]...)
		m.inFlight.DeleteLabelValues(k[:]...)
		m.held.DeleteLabelValues(k[:]...)
		m.coldStart.DeleteLabelValues(k[:]...)
		m.healthy.DeleteLabelValues(k[:]...)
		m.ejected.DeleteLabelValues(k[:]...)
		m.streams.forget(k)
	}
	if keep == nil {
		m.holdOutcomes.DeletePartialMatch(prometheus.Labels{contract.LabelEndpoint: endpoint})
	}
	for k := range m.shadows {
		if k[0] != endpoint || keepShadow[k] {
			continue
		}
		delete(m.shadows, k)
		m.shadowInvocations.DeleteLabelValues(k[:]...)
		m.shadowErrors.DeleteLabelValues(k[:]...)
		m.shadowLatency.DeleteLabelValues(k[:]...)
		m.shadowDropped.DeleteLabelValues(k[:]...)
	}
}

// seriesKey is the label values of one variant's series; requests refused
// before a variant is chosen have neither variant nor generation.
func seriesKey(endpoint, variant string, generation int) [3]string {
	if variant == "" {
		return [3]string{endpoint, "", ""}
	}
	return [3]string{endpoint, variant, strconv.Itoa(generation)}
}

func (m *metrics) tableUpdated(now time.Time) {
	m.tableUpdates.Inc()
	m.tableLastUpdate.Set(float64(now.UnixNano()) / 1e9)
}
