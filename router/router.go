package router

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// MaxBodyBytes is SageMaker's real-time payload limit (6 MB).
const MaxBodyBytes = 6291456

// DefaultStreamTimeout bounds a response stream when Config sets none.
const DefaultStreamTimeout = 10 * time.Minute

// Client timeouts when Config sets none (see Config.ReadHeaderTimeout).
const (
	DefaultReadHeaderTimeout = 10 * time.Second
	// DefaultReadTimeout: bodies are at most 6 MB; two minutes is generous
	// for any client that is actually sending.
	DefaultReadTimeout  = 2 * time.Minute
	DefaultWriteTimeout = 30 * time.Second
	DefaultIdleTimeout  = 2 * time.Minute
)

// Memory sizing. The router's memory is its baseline (runtime, routing
// tables, discovery, connection buffers: tens of MiB at a thousand
// endpoints), request bodies held in flight (charged to the body budget),
// and garbage between collections. Bodies get half of what is left after
// the baseline, so the garbage a collection has not yet reclaimed still
// fits (`serai router` sets the runtime's soft limit to MemoryLimit less
// the baseline, so it collects before that half is used):
//
//	BodyBudget = (MemoryLimit − MemoryBaseline) / 2
//
// 128 MiB (the router's Nomad job) gives 48 MiB: six 6 MB bodies at once
// (each holds an 8 MiB buffer), or thousands of small ones.
const (
	// DefaultMemoryLimit is assumed when neither Config nor the
	// environment says how much memory the router has.
	DefaultMemoryLimit = 512 << 20
	// MemoryBaseline is what the router holds besides request bodies.
	MemoryBaseline = 32 << 20
	// MinMemoryLimit leaves a budget of two maximum-size bodies (an 8 MiB
	// buffer each): 64 MiB.
	MinMemoryLimit = MemoryBaseline + 2*2*(8<<20)
)

// BodyBudget is the request-body budget (Config.MaxBufferedBytes) for a
// process allowed memoryLimit bytes; negative when the limit is below the
// baseline.
func BodyBudget(memoryLimit int64) int64 { return (memoryLimit - MemoryBaseline) / 2 }

// Config tunes a Router. The zero value of every field means its default.
type Config struct {
	Logger hclog.Logger

	// Registry receives the router's metrics and is served on /metrics.
	// Nil means a fresh registry with Go and process collectors.
	Registry *prometheus.Registry

	// Timeout is the model timeout for endpoints whose routing table sets
	// none (default 60 s, SageMaker's).
	Timeout time.Duration
	// MaxBodyBytes caps request bodies (default 6,291,456, SageMaker's).
	MaxBodyBytes int64
	// MaxInFlight caps concurrent invocations; beyond it the router answers
	// 503 at once instead of queueing (default 10,000). A request takes a
	// slot only once its body has arrived, so idle or slow clients cannot
	// hold slots.
	MaxInFlight int64
	// MemoryLimit is the memory the router's process may use (its Nomad
	// job's memory, say); the body budget is derived from it when
	// MaxBufferedBytes is not set (BodyBudget). Default DefaultMemoryLimit.
	// The router does not enforce it on the Go runtime: `serai router`
	// also sets it as the runtime's soft memory limit
	// (runtime/debug.SetMemoryLimit), which a library must not do for its
	// host.
	MemoryLimit int64
	// MaxBufferedBytes caps the memory held by request bodies in flight,
	// shadow copies included (default BodyBudget(MemoryLimit)). Bodies are
	// buffered so a failed connection can be retried and a sample mirrored
	// to shadow variants. The budget is charged by buffer capacity as bytes
	// arrive (a 6 MB body holds an 8 MiB buffer), never from an announced
	// Content-Length. A request that finds it spent is answered 429
	// ThrottlingException with Retry-After.
	MaxBufferedBytes int64

	// Client-side timeouts, as net/http's Server fields of the same names,
	// on the fast path and on net/http alike. ReadHeaderTimeout (default
	// 10 s) bounds reading a request's head and ReadTimeout (default 2 min)
	// the whole request, from its first byte. WriteTimeout (default 30 s)
	// bounds how long a client may take to receive its answer: from the
	// request for answers the router gives itself, and on top of the model
	// timeout (StreamTimeout for a response stream, where every write must
	// also finish within it) for answers that wait for a model. A client
	// that stops reading loses its connection then. IdleTimeout (default
	// 2 min) closes a kept-alive connection with no request.
	ReadHeaderTimeout time.Duration
	ReadTimeout       time.Duration
	WriteTimeout      time.Duration
	IdleTimeout       time.Duration

	// DialTimeout bounds connecting to an instance (default 2 s).
	DialTimeout time.Duration
	// IdleConnTimeout closes keep-alive connections idle this long
	// (default 60 s).
	IdleConnTimeout time.Duration
	// MaxIdleConnsPerInstance bounds each instance's keep-alive pool
	// (default 512).
	MaxIdleConnsPerInstance int

	// Outlier detection: an instance with OutlierFailures consecutive
	// connection failures, timeouts or 502/503/504 answers is ejected for
	// OutlierBaseEjection times the number of its recent ejections, at most
	// OutlierMaxEjection (defaults 5, 10 s, 5 min). Negative
	// OutlierFailures disables ejection.
	OutlierFailures     int
	OutlierBaseEjection time.Duration
	OutlierMaxEjection  time.Duration

	// MaxShadowInFlight bounds concurrent mirrored requests; samples beyond
	// it are dropped and counted (default 256).
	MaxShadowInFlight int64

	// Account names the "account" in SageMaker-style messages
	// ("Endpoint x of account <Account> not found.").
	Account string

	// SigV4Keys, when non-nil, turns on AWS Signature Version 4
	// verification of invocations: access key ID → secret access key.
	// Requests must carry an AWS4-HMAC-SHA256 Authorization header signed
	// for service "sagemaker" with one of these keys, an X-Amz-Date within
	// 15 minutes of the router's clock, and the SHA-256 of the body actually
	// sent; anything else is answered 403 with the error AWS gives
	// (MissingAuthenticationTokenException, UnrecognizedClientException,
	// InvalidSignatureException, IncompleteSignatureException). A non-nil
	// empty map is an error, so a key file that loaded nothing cannot turn
	// authentication off. The map is copied. Nil: signature headers are
	// accepted and ignored. See LoadSigV4Keys.
	SigV4Keys map[string]string
	// SigV4Region, when set, is the only region signatures may be scoped
	// to. Empty accepts any region: a client pointed at a custom endpoint
	// URL signs for whatever region its SDK is configured with.
	SigV4Region string

	// StreamTimeout bounds a whole InvokeEndpointWithResponseStream answer,
	// from sending the request to the model's last chunk (default 10 min);
	// the first byte must still come within the endpoint's model timeout.
	// A stream cut by it ends with a ModelInvocationTimeExceeded event.
	StreamTimeout time.Duration

	// SessionKeys turns on stateful sessions (SessionId): HMAC-SHA256 keys
	// of at least 32 bytes that every router of the fleet shares. The first
	// signs new session IDs; all verify. Nil: a SessionId header is
	// refused with a ValidationError. See sessions.go and LoadSessionKeys.
	SessionKeys [][]byte

	// Authenticate, when set, runs before an invocation's body is read; an
	// error answers 403 AccessDeniedException. With SigV4Keys it runs only
	// on requests whose signature has been verified (after the body is
	// read), so it can authorize by access key ID. Without either, AWS
	// signature headers are accepted and ignored.
	Authenticate func(*http.Request) error

	// Waker, when set, turns on scale from zero (scalezero.go): a request
	// for a variant the routing table marks scale_from_zero that finds no
	// instance is held while the Waker signals the control plane through
	// Consul KV, instead of answered 503. Nil: such requests get 503.
	Waker *Waker
	// HoldQueueLength bounds the requests held per endpoint while a
	// variant scales from zero; more are answered 429 at once (default
	// 256).
	HoldQueueLength int
}

func (c *Config) setDefaults() {
	if c.Logger == nil {
		c.Logger = hclog.NewNullLogger()
	}
	if c.Timeout <= 0 {
		c.Timeout = DefaultTimeout
	}
	if c.MaxBodyBytes <= 0 {
		c.MaxBodyBytes = MaxBodyBytes
	}
	if c.MaxInFlight <= 0 {
		c.MaxInFlight = 10000
	}
	if c.MemoryLimit <= 0 {
		c.MemoryLimit = DefaultMemoryLimit
	}
	if c.MaxBufferedBytes <= 0 {
		c.MaxBufferedBytes = BodyBudget(c.MemoryLimit)
	}
	if c.ReadHeaderTimeout <= 0 {
		c.ReadHeaderTimeout = DefaultReadHeaderTimeout
	}
	if c.ReadTimeout <= 0 {
		c.ReadTimeout = DefaultReadTimeout
	}
	if c.WriteTimeout <= 0 {
		c.WriteTimeout = DefaultWriteTimeout
	}
	if c.IdleTimeout <= 0 {
		c.IdleTimeout = DefaultIdleTimeout
	}
	if c.DialTimeout <= 0 {
		c.DialTimeout = 2 * time.Second
	}
	if c.IdleConnTimeout <= 0 {
		c.IdleConnTimeout = 60 * time.Second
	}
	if c.MaxIdleConnsPerInstance <= 0 {
		c.MaxIdleConnsPerInstance = 512
	}
	if c.OutlierFailures == 0 {
		c.OutlierFailures = 5
	}
	if c.OutlierBaseEjection <= 0 {
		c.OutlierBaseEjection = 10 * time.Second
	}
	if c.OutlierMaxEjection <= 0 {
		c.OutlierMaxEjection = 5 * time.Minute
	}
	if c.MaxShadowInFlight <= 0 {
		c.MaxShadowInFlight = 256
	}
	if c.StreamTimeout <= 0 {
		c.StreamTimeout = DefaultStreamTimeout
	}
	if c.Account == "" {
		c.Account = "serai"
	}
	if c.HoldQueueLength <= 0 {
		c.HoldQueueLength = DefaultHoldQueueLength
	}
}

// Router is the invoke data plane: an http.Handler serving the SageMaker
// runtime API from a routing table fed by a Discovery backend through the
// Sink methods.
type Router struct {
	cfg      Config
	log      hclog.Logger
	m        *metrics
	registry *prometheus.Registry
	metricsH http.Handler
	up       *upstreamConfig
	sigv4    *sigv4Auth    // nil: no signature verification
	sessions *sessionCodec // nil: stateful sessions off

	table atomic.Pointer[table]

	inFlight       atomic.Int64
	buffered       atomic.Int64
	shadowInFlight atomic.Int64
	shadowWG       sync.WaitGroup
	draining       atomic.Bool
	bufs           bufPool
	// awaitingSync is set while discovery has not yet synced once, so an
	// unknown endpoint means "not loaded yet" (503), not "does not exist".
	awaitingSync atomic.Bool

	// shadowCtx ends mirrored requests when the router closes.
	shadowCtx    context.Context
	shadowCancel context.CancelFunc

	mu         sync.Mutex
	routes     map[string]*Routes
	discovered map[string][]Instance
	live       map[string]map[string]*instance
	syncs      map[string]*syncState
	holds      map[string]*HoldQueue // scale from zero, per endpoint
	rescue     []*pconn              // busy on instances just retired (rescue.go)
	closed     bool

	stopJanitor chan struct{}
	janitorDone chan struct{}
}

type syncState struct {
	ok    bool
	since time.Time // start of the current failure
}

// New builds a Router with an empty table. Call Close when done.
func New(cfg Config) (*Router, error) {
	cfg.setDefaults()
	if cfg.MaxBodyBytes > 64<<20 {
		return nil, errors.New("router: MaxBodyBytes above 64 MiB is not supported")
	}
	if cfg.MemoryLimit < MinMemoryLimit {
		return nil, fmt.Errorf("router: MemoryLimit %d bytes is below the minimum of %d MiB (the baseline and two 6 MB requests)",
			cfg.MemoryLimit, MinMemoryLimit>>20)
	}
	rt := &Router{
		cfg:         cfg,
		log:         cfg.Logger,
		routes:      map[string]*Routes{},
		discovered:  map[string][]Instance{},
		live:        map[string]map[string]*instance{},
		syncs:       map[string]*syncState{},
		holds:       map[string]*HoldQueue{},
		stopJanitor: make(chan struct{}),
		janitorDone: make(chan struct{}),
		up: &upstreamConfig{
			dialTimeout: cfg.DialTimeout,
			idleTimeout: cfg.IdleConnTimeout,
			maxIdle:     cfg.MaxIdleConnsPerInstance,
			dialer:      &net.Dialer{KeepAlive: 30 * time.Second},
			ackGrace:    defaultAckGrace,
			bytesAcked:  kernelBytesAcked,
		},
	}
	if cfg.SigV4Keys != nil {
		a, err := newSigV4Auth(cfg.SigV4Keys, cfg.SigV4Region)
		if err != nil {
			return nil, err
		}
		rt.sigv4 = a
		rt.cfg.SigV4Keys = nil // the copy in rt.sigv4 is the one used
	}
	if cfg.SessionKeys != nil {
		c, err := newSessionCodec(cfg.SessionKeys)
		if err != nil {
			return nil, err
		}
		rt.sessions = c
		rt.cfg.SessionKeys = nil // the copy in rt.sessions is the one used
	}
	rt.shadowCtx, rt.shadowCancel = context.WithCancel(context.Background())
	rt.registry = cfg.Registry
	if rt.registry == nil {
		rt.registry = prometheus.NewRegistry()
		rt.registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	}
	rt.m = newMetrics(rt.registry, rt.staleness)
	rt.metricsH = promhttp.HandlerFor(rt.registry, promhttp.HandlerOpts{})
	rt.table.Store(&table{endpoints: map[string]*endpoint{}})
	go rt.janitor()
	return rt, nil
}

// Registry is the registry /metrics serves.
func (rt *Router) Registry() *prometheus.Registry { return rt.registry }

// SetRoutes implements Sink.
func (rt *Router) SetRoutes(name string, routes *Routes) {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	if rt.closed {
		return
	}
	rt.awaitingSync.Store(false)
	if routes == nil {
		if _, ok := rt.routes[name]; !ok {
			return
		}
		delete(rt.routes, name)
		rt.log.Info("endpoint removed from routing table", "endpoint", name)
	} else {
		rt.routes[name] = routes
	}
	rt.rebuildLocked(name)
}

// SetInstances implements Sink.
func (rt *Router) SetInstances(name string, instances []Instance) {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	if rt.closed {
		return
	}
	rt.discovered[name] = append([]Instance(nil), instances...)
	if len(instances) == 0 {
		delete(rt.discovered, name)
	}
	rt.rebuildLocked(name)
}

// SetUntrusted implements UntrustedCounter.
func (rt *Router) SetUntrusted(endpoint string, n int) {
	if n == 0 {
		rt.m.untrusted.DeleteLabelValues(endpoint)
		return
	}
	rt.m.untrusted.WithLabelValues(endpoint).Set(float64(n))
}

var _ UntrustedCounter = (*Router)(nil)

// ReportSync implements Sink.
func (rt *Router) ReportSync(source string, err error) {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	st, ok := rt.syncs[source]
	if !ok {
		st = &syncState{ok: true}
		rt.syncs[source] = st
	}
	now := time.Now()
	if err == nil {
		rt.awaitingSync.Store(false)
		if !st.ok {
			rt.log.Info("discovery back in sync", "source", source, "stale_for", now.Sub(st.since).Round(time.Millisecond))
		}
		st.ok = true
		rt.m.discoveryLastSync.Set(float64(now.UnixNano()) / 1e9)
	} else {
		rt.m.discoveryErrors.Inc()
		if st.ok {
			st.ok = false
			st.since = now
			rt.log.Warn("discovery failing; keeping the current routing table until it recovers", "source", source, "error", err)
		}
	}
	rt.updateUpLocked()
}

// ForgetSource implements Sink.
func (rt *Router) ForgetSource(source string) {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	delete(rt.syncs, source)
	rt.updateUpLocked()
}

func (rt *Router) updateUpLocked() {
	up := 1.0
	for _, s := range rt.syncs {
		if !s.ok {
			up = 0
		}
	}
	rt.m.discoveryUp.Set(up)
}

// InSync reports whether every discovery source last reported success.
func (rt *Router) InSync() bool {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	for _, s := range rt.syncs {
		if !s.ok {
			return false
		}
	}
	return true
}

func (rt *Router) staleness() float64 {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	var worst time.Duration
	now := time.Now()
	for _, s := range rt.syncs {
		if !s.ok && now.Sub(s.since) > worst {
			worst = now.Sub(s.since)
		}
	}
	return worst.Seconds()
}

// rebuildLocked reconciles the live instances of one endpoint with
// discovery, compiles it and publishes a new table.
func (rt *Router) rebuildLocked(name string) {
	routes := rt.routes[name]
	live := rt.live[name]
	if live == nil {
		live = map[string]*instance{}
		rt.live[name] = live
	}
	seen := map[string]bool{}
	for _, in := range rt.discovered[name] {
		k := instanceKey(in)
		seen[k] = true
		if _, ok := live[k]; ok {
			continue
		}
		live[k] = &instance{
			key: k, endpoint: name, id: in.ID, addr: in.Address,
			variant: in.Variant, generation: in.Generation, shadow: in.Shadow,
			pool: newConnPool(in.Address, rt.up),
			ref:  makeInstanceRef(name, k),
		}
	}
	for k, in := range live {
		if !seen[k] || routes == nil {
			rt.retireLocked(in)
			delete(live, k)
		}
	}
	if len(live) == 0 {
		delete(rt.live, name)
	}

	old := rt.table.Load()
	next := &table{endpoints: make(map[string]*endpoint, len(old.endpoints)+1)}
	for k, v := range old.endpoints {
		next.endpoints[k] = v
	}
	if routes == nil {
		delete(next.endpoints, name)
		rt.m.forget(name, nil, nil)
	} else {
		next.endpoints[name] = rt.buildEndpoint(name, routes, live)
	}
	rt.table.Store(next)
	rt.m.tableUpdated(time.Now())
	rt.rescueLocked()
	rt.releaseHeldLocked(name, routes == nil)
}

func (rt *Router) retireLocked(in *instance) {
	in.retired = true
	if in.timer != nil {
		in.timer.Stop()
		in.timer = nil
	}
	rt.rescue = append(rt.rescue, in.pool.close()...)
}

// rescueLocked checks the requests still on retired instances
// (rescue.go), once the table without those instances is published, so a
// request taken back is sent elsewhere.
func (rt *Router) rescueLocked() {
	for i, pc := range rt.rescue {
		pc.scheduleRescue()
		rt.rescue[i] = nil
	}
	rt.rescue = rt.rescue[:0]
}

// instanceOK records a successful exchange.
func (rt *Router) instanceOK(in *instance) {
	if in.fails.Load() != 0 {
		in.fails.Store(0)
	}
}

// instanceFailed records a failure and ejects the instance when it crosses
// the threshold. Only the request that crosses it takes the lock.
func (rt *Router) instanceFailed(in *instance, vm *variantMetrics, err error) {
	if rt.cfg.OutlierFailures < 0 {
		return
	}
	if in.fails.Add(1) != int32(rt.cfg.OutlierFailures) {
		return
	}
	rt.mu.Lock()
	defer rt.mu.Unlock()
	if rt.closed || in.retired || in.ejected.Load() {
		return
	}
	now := time.Now()
	if !in.readmitted.IsZero() && now.Sub(in.readmitted) > rt.cfg.OutlierMaxEjection {
		in.ejections = 0
	}
	in.ejections++
	d := time.Duration(in.ejections) * rt.cfg.OutlierBaseEjection
	if d > rt.cfg.OutlierMaxEjection {
		d = rt.cfg.OutlierMaxEjection
	}
	in.ejected.Store(true)
	vm.ejections.Inc()
	rt.log.Warn("instance ejected after repeated failures", "endpoint", in.endpoint, "variant", in.variant,
		"instance", in.id, "address", in.addr, "for", d, "error", err)
	in.timer = time.AfterFunc(d, func() { rt.readmit(in) })
	rt.rebuildLocked(in.endpoint)
}

func (rt *Router) readmit(in *instance) {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	if rt.closed || in.retired {
		return
	}
	in.timer = nil
	in.fails.Store(0)
	in.ejected.Store(false)
	in.readmitted = time.Now()
	rt.log.Info("instance re-admitted", "endpoint", in.endpoint, "variant", in.variant, "instance", in.id)
	rt.rebuildLocked(in.endpoint)
}

// janitor closes idle upstream connections past their idle timeout, which
// the LIFO pools would otherwise keep under light load.
func (rt *Router) janitor() {
	defer close(rt.janitorDone)
	t := time.NewTicker(rt.cfg.IdleConnTimeout / 2)
	defer t.Stop()
	for {
		select {
		case <-rt.stopJanitor:
			return
		case now := <-t.C:
			// Every live instance, not only those the table routes to:
			// ejected and weight-0 instances keep pools too. The mutex is
			// the control plane's; the hot path never takes it.
			rt.mu.Lock()
			for _, live := range rt.live {
				for _, in := range live {
					in.pool.sweep(now)
				}
			}
			rt.mu.Unlock()
		}
	}
}

// SetDraining makes /ping answer 503 so load balancers stop sending new
// requests while in-flight ones finish. Requests held for a variant
// scaling from zero are not worth waiting for then: they are answered 503
// at once, so the client retries on another router.
func (rt *Router) SetDraining(v bool) {
	rt.draining.Store(v)
	if v {
		rt.mu.Lock()
		for _, q := range rt.holds {
			q.Release()
		}
		rt.mu.Unlock()
	}
}

// Close waits for mirrored requests, stops timers and closes idle
// connections. In-flight invocations must be finished first (the HTTP
// server's Shutdown does that).
func (rt *Router) Close() {
	rt.mu.Lock()
	if rt.closed {
		rt.mu.Unlock()
		return
	}
	rt.closed = true
	rt.mu.Unlock()
	close(rt.stopJanitor)
	<-rt.janitorDone
	rt.shadowCancel()
	rt.shadowWG.Wait()
	rt.mu.Lock()
	for _, live := range rt.live {
		for _, in := range live {
			rt.retireLocked(in)
		}
	}
	clear(rt.rescue) // closing: nothing is sent elsewhere
	rt.rescue = nil
	rt.mu.Unlock()
}

func (rt *Router) getBuf(n int) *[]byte { return rt.bufs.get(n) }
func (rt *Router) putBuf(b *[]byte)     { rt.bufs.put(b) }

// SetSigV4Keys replaces the SigV4 key table while the router serves, for key
// rotation; requests already past their header checks finish with the table
// they started with unless their key was removed. It is an error when the
// router was built without SigV4Keys: authentication is turned on or off
// only by a restart, never by a reload. On error the old table stays.
func (rt *Router) SetSigV4Keys(keys map[string]string) error {
	if rt.sigv4 == nil {
		return errors.New("router: SigV4 authentication is off; restart with SigV4Keys to turn it on")
	}
	return rt.sigv4.setKeys(keys)
}
