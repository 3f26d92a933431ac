package router

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/seraihq/serai/contract"
)

// streamVecs are the metrics of InvokeEndpointWithResponseStream, per
// (endpoint, variant, generation). Streamed invocations also count in the
// invocation and error counters every invocation does; model latency is
// not observed for them, since a stream's duration is the model's pace of
// generation, not its latency.
type streamVecs struct {
	ttfb     *prometheus.HistogramVec
	duration *prometheus.HistogramVec
	bytes    *prometheus.CounterVec
	errors   *prometheus.CounterVec
}

type streamMetrics struct {
	ttfb     prometheus.Observer
	duration prometheus.Observer
	bytes    prometheus.Counter
	errors   *prometheus.CounterVec // curried: code label left
}

// streamDurationBuckets reach past the default 10-minute stream timeout.
var streamDurationBuckets = []float64{0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1200}

func newStreamVecs(reg prometheus.Registerer, ev []string) *streamVecs {
	v := &streamVecs{
		ttfb: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "serai_router_stream_first_byte_seconds", Help: "Time from sending a streamed invocation to the model's first body byte (time to first token).", Buckets: latencyBuckets,
		}, ev),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "serai_router_stream_duration_seconds", Help: "Time from sending a streamed invocation to the end of the model's stream.", Buckets: streamDurationBuckets,
		}, ev),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "serai_router_stream_bytes_total", Help: "Payload bytes relayed in PayloadPart events.",
		}, ev),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "serai_router_stream_errors_total", Help: "ModelStreamError events sent mid-stream, by ErrorCode (StreamBroken, ModelInvocationTimeExceeded).",
		}, append(append([]string(nil), ev...), "code")),
	}
	reg.MustRegister(v.ttfb, v.duration, v.bytes, v.errors)
	return v
}

func (v *streamVecs) child(k [3]string) *streamMetrics {
	return &streamMetrics{
		ttfb:     v.ttfb.WithLabelValues(k[:]...),
		duration: v.duration.WithLabelValues(k[:]...),
		bytes:    v.bytes.WithLabelValues(k[:]...),
		errors:   v.errors.MustCurryWith(seriesLabels(k)),
	}
}

func (v *streamVecs) forget(k [3]string) {
	v.ttfb.DeleteLabelValues(k[:]...)
	v.duration.DeleteLabelValues(k[:]...)
	v.bytes.DeleteLabelValues(k[:]...)
	v.errors.DeletePartialMatch(seriesLabels(k))
}

func seriesLabels(k [3]string) prometheus.Labels {
	return prometheus.Labels{contract.LabelEndpoint: k[0], contract.LabelVariant: k[1], contract.LabelGeneration: k[2]}
}
