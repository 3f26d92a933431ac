package router

import "context"

// Instance is one healthy model server of an endpoint as a discovery backend
// sees it.
type Instance struct {
	// ID identifies the instance within its endpoint across updates; the
	// router keeps connection pools, in-flight counts and outlier state per
	// ID and address.
	ID         string
	Address    string // host:port
	Variant    string
	Generation int
	Model      string
	Shadow     bool
}

// Discovery is a source of routing tables and healthy instances. Consul is
// the first backend; Nomad-native services (with routes kept in Nomad
// variables) would be a second one, hence this seam.
//
// Contract for implementations:
//   - Run blocks until ctx is done and then returns ctx.Err().
//   - Every call on the Sink replaces what was known before for that
//     endpoint; instances must be the healthy and trusted ones only: an
//     instance with no health check of its own is not healthy, and one
//     whose registration does not prove it belongs to the generation it
//     claims (for Consul, contract.TrustedMeta) is not trusted. A backend
//     whose Sink is also an UntrustedCounter reports how many it left out.
//   - A backend never reports an empty set because of its own errors: when
//     it cannot reach its source it calls ReportSync with the error and
//     leaves the last state in place.
type Discovery interface {
	Run(ctx context.Context, sink Sink) error
}

// Sink receives discovery updates. The Router implements it; all methods are
// safe for concurrent use.
type Sink interface {
	// SetRoutes installs endpoint's routing table; nil removes the endpoint.
	SetRoutes(endpoint string, routes *Routes)
	// SetInstances replaces endpoint's healthy instances.
	SetInstances(endpoint string, instances []Instance)
	// ReportSync tells whether source (a backend-chosen name such as
	// "consul/kv") is in sync (err == nil) or failing. It drives the
	// discovery freshness metrics and the "serving a stale table" log lines.
	ReportSync(source string, err error)
	// ForgetSource drops a source that no longer exists (its endpoint was
	// removed), so it cannot hold the freshness metrics down.
	ForgetSource(source string)
}

// UntrustedCounter is implemented by a Sink that counts the instances a
// backend found registered for an endpoint but refused to use.
type UntrustedCounter interface {
	// SetUntrusted replaces endpoint's count; 0 clears it.
	SetUntrusted(endpoint string, n int)
}
