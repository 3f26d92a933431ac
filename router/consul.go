package router

import (
	"cmp"
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	consulapi "github.com/hashicorp/consul/api"
	"github.com/hashicorp/go-hclog"

	"github.com/seraihq/serai/contract"
	"github.com/seraihq/serai/internal/names"
)

// ConsulConfig configures ConsulDiscovery.
type ConsulConfig struct {
	Client *consulapi.Client
	Logger hclog.Logger

	// WaitTime is how long a blocking query may wait for a change
	// (default 60 s). Changes arrive as soon as they happen regardless.
	WaitTime time.Duration
	// MinInterval spaces the queries of one watch, so a flapping service
	// cannot make the router hammer Consul (default 50 ms).
	MinInterval time.Duration
	// RetryMin and RetryMax bound the back-off after a failed query
	// (defaults 250 ms and 5 s).
	RetryMin, RetryMax time.Duration
	// EndpointWatches is how many endpoints may each have their own
	// blocking health query (default 64). Every blocking query holds one
	// HTTP connection to the agent, and Consul allows one address 200
	// (limits.http_max_conns_per_client); past this many endpoints the
	// router watches all their health with one query instead (see
	// sharedHealth). Negative: always the one query.
	EndpointWatches int
}

// ConsulDiscovery watches Consul: the KV prefix serai/routes/ for routing
// tables, and for each endpoint found there the passing instances of service
// serai-<endpoint>. All watches are blocking queries, so a change reaches
// the router in one round trip.
type ConsulDiscovery struct {
	cfg ConsulConfig
	log hclog.Logger

	// untrusted holds, per endpoint, the instances left out last time
	// and why, so each is logged once while it stays registered.
	mu        sync.Mutex
	untrusted map[string]map[string]string
}

// NewConsulDiscovery returns a Discovery backed by Consul.
func NewConsulDiscovery(cfg ConsulConfig) *ConsulDiscovery {
	if cfg.Logger == nil {
		cfg.Logger = hclog.NewNullLogger()
	}
	if cfg.WaitTime <= 0 {
		cfg.WaitTime = 60 * time.Second
	}
	if cfg.MinInterval <= 0 {
		cfg.MinInterval = 50 * time.Millisecond
	}
	if cfg.RetryMin <= 0 {
		cfg.RetryMin = 250 * time.Millisecond
	}
	if cfg.RetryMax <= 0 {
		cfg.RetryMax = 5 * time.Second
	}
	if cfg.EndpointWatches == 0 {
		cfg.EndpointWatches = 64
	}
	return &ConsulDiscovery{cfg: cfg, log: cfg.Logger.Named("consul"), untrusted: map[string]map[string]string{}}
}

const kvSource = "consul/kv"

func healthSource(endpoint string) string { return "consul/health/" + endpoint }

type endpointWatch struct {
	cancel context.CancelFunc
	done   chan struct{}
}

// Run implements Discovery.
func (d *ConsulDiscovery) Run(ctx context.Context, sink Sink) error {
	tables := map[string]uint64{} // endpoint → its table's ModifyIndex
	watches := map[string]*endpointWatch{}
	var shared *sharedHealth
	var wg sync.WaitGroup
	stopWatch := func(name string) {
		ew := watches[name]
		ew.cancel()
		<-ew.done
		delete(watches, name)
	}
	defer func() {
		for _, w := range watches {
			w.cancel()
		}
		if shared != nil {
			shared.stop()
		}
		wg.Wait()
	}()
	// Remember rejected tables so a bad write is logged once, not on
	// every blocking query return.
	rejected := map[string]uint64{}

	w := &blockingWatch{d: d, source: kvSource, sink: sink}
	for {
		pairs, _, err := w.next(ctx, func(q *consulapi.QueryOptions) (any, *consulapi.QueryMeta, error) {
			return d.cfg.Client.KV().List(RoutesKeyPrefix, q)
		})
		if err != nil {
			return err
		}
		seen := map[string]bool{}
		nowRejected := map[string]uint64{}
		reject := func(key string, index uint64, msg string, args ...any) {
			if rejected[key] != index {
				d.log.Error(msg, append([]any{"key", key}, args...)...)
			}
			nowRejected[key] = index
		}
		for _, p := range pairs.(consulapi.KVPairs) {
			name := strings.TrimPrefix(p.Key, RoutesKeyPrefix)
			if name == "" || strings.Contains(name, "/") {
				continue
			}
			if !names.Valid(name) {
				reject(p.Key, p.ModifyIndex, "ignoring routing table under an invalid endpoint name")
				continue
			}
			if idx, ok := tables[name]; ok && idx == p.ModifyIndex {
				seen[name] = true
				continue
			}
			routes, err := DecodeRoutes(p.Value)
			if err == nil && routes.Endpoint != name {
				err = fmt.Errorf("table names endpoint %q but sits under key %s", routes.Endpoint, p.Key)
			}
			if err != nil {
				reject(p.Key, p.ModifyIndex, "rejected routing table; keeping the previous one", "error", err)
				if _, ok := tables[name]; ok {
					seen[name] = true // the previous table stays
				}
				continue
			}
			seen[name] = true
			sink.SetRoutes(name, routes)
			if _, ok := tables[name]; !ok {
				d.log.Info("watching endpoint", "endpoint", name)
			}
			tables[name] = p.ModifyIndex
		}
		rejected = nowRejected

		// Removed endpoints: no watch may write their instances after
		// this, then they go.
		if shared != nil {
			shared.setEndpoints(seen)
		}
		for name := range tables {
			if seen[name] {
				continue
			}
			if watches[name] != nil {
				stopWatch(name)
			}
			delete(tables, name)
			d.forgetUntrusted(name, sink)
			sink.SetInstances(name, nil)
			sink.SetRoutes(name, nil)
			sink.ForgetSource(healthSource(name))
		}

		if d.cfg.EndpointWatches < 0 || len(tables) > d.cfg.EndpointWatches {
			if shared == nil {
				d.log.Info("watching the health of all endpoints with one query", "endpoints", len(tables), "endpoint_watches", d.cfg.EndpointWatches)
				for name := range watches {
					// The shared watch takes over from the last instances
					// this one set.
					stopWatch(name)
					sink.ForgetSource(healthSource(name))
				}
				shared = d.startShared(ctx, sink, &wg)
				shared.setEndpoints(seen)
			}
			// A running shared watch was given seen above.
			continue
		}
		if shared != nil {
			d.log.Info("watching each endpoint's health with its own query", "endpoints", len(tables))
			shared.stop()
			shared = nil
		}
		for name := range tables {
			if watches[name] != nil {
				continue
			}
			wctx, cancel := context.WithCancel(ctx)
			ew := &endpointWatch{cancel: cancel, done: make(chan struct{})}
			watches[name] = ew
			wg.Add(1)
			go func(name string, done chan struct{}) {
				defer wg.Done()
				defer close(done)
				d.watchHealth(wctx, name, sink)
			}(name, ew.done)
		}
	}
}

func (d *ConsulDiscovery) watchHealth(ctx context.Context, endpoint string, sink Sink) {
	w := &blockingWatch{d: d, source: healthSource(endpoint), sink: sink}
	var last []Instance
	first := true
	for {
		res, _, err := w.next(ctx, func(q *consulapi.QueryOptions) (any, *consulapi.QueryMeta, error) {
			return d.cfg.Client.Health().Service(ServiceName(endpoint), "", true, q)
		})
		if err != nil {
			return
		}
		insts := d.instances(endpoint, res.([]*consulapi.ServiceEntry), sink)
		if first || !slices.Equal(insts, last) {
			sink.SetInstances(endpoint, insts)
			last, first = insts, false
		}
	}
}

// instances turns endpoint's passing service entries into Instances,
// sorted by ID. It leaves out, counts and logs once the entries it cannot
// trust: Consul calls a service with no checks passing, but nothing has
// seen it answer, and an entry whose meta does not name the job and
// generation its tags claim was not registered by that generation's Nomad
// job. Filtering here, when the table is built, keeps the request path
// as it was.
func (d *ConsulDiscovery) instances(endpoint string, entries []*consulapi.ServiceEntry, sink Sink) []Instance {
	var insts []Instance
	untrusted := map[string]string{} // instance ID → why
	for _, e := range entries {
		if e.Service == nil {
			continue
		}
		node := ""
		if e.Node != nil {
			node = e.Node.Node
		}
		id := node + "/" + e.Service.ID
		tags, why, ok := contract.TrustInstance(endpoint, e.Service.Tags, e.Service.Meta, ownChecks(e))
		if !ok {
			untrusted[id] = why
			continue
		}
		host := e.Service.Address
		if host == "" && e.Node != nil {
			host = e.Node.Address
		}
		if host == "" || e.Service.Port <= 0 {
			continue
		}
		insts = append(insts, Instance{
			ID:         id,
			Address:    net.JoinHostPort(host, strconv.Itoa(e.Service.Port)),
			Variant:    tags.Variant,
			Generation: tags.Generation,
			Model:      tags.Model,
			Shadow:     tags.Shadow,
		})
	}
	slices.SortFunc(insts, func(a, b Instance) int { return strings.Compare(a.ID, b.ID) })
	d.reportUntrusted(endpoint, untrusted, sink)
	return insts
}

// ownChecks counts the entry's checks of its service (not its node's).
// Entries come from a passing-only query, so every check it has passes.
func ownChecks(e *consulapi.ServiceEntry) int {
	n := 0
	for _, c := range e.Checks {
		if c != nil && c.ServiceID != "" && c.ServiceID == e.Service.ID {
			n++
		}
	}
	return n
}

// reportUntrusted logs at warn each instance newly left out (or left out
// for a new reason) and hands the count to the sink.
func (d *ConsulDiscovery) reportUntrusted(endpoint string, now map[string]string, sink Sink) {
	d.mu.Lock()
	before := d.untrusted[endpoint]
	for id, why := range now {
		if before[id] != why {
			d.log.Warn("ignoring an instance the router cannot trust; check who registers this service (docs/security.md, Consul ACLs)",
				"endpoint", endpoint, "service", ServiceName(endpoint), "instance", id, "reason", why)
		}
	}
	if len(now) == 0 {
		delete(d.untrusted, endpoint)
	} else {
		d.untrusted[endpoint] = now
	}
	d.mu.Unlock()
	if c, ok := sink.(UntrustedCounter); ok {
		c.SetUntrusted(endpoint, len(now))
	}
}

// forgetUntrusted drops a removed endpoint's untrusted instances.
func (d *ConsulDiscovery) forgetUntrusted(endpoint string, sink Sink) {
	d.mu.Lock()
	delete(d.untrusted, endpoint)
	d.mu.Unlock()
	if c, ok := sink.(UntrustedCounter); ok {
		c.SetUntrusted(endpoint, 0)
	}
}

const (
	sharedSource      = "consul/health"
	sharedFetchSource = "consul/health/fetch"
	// sharedFetches bounds the instance fetches in flight at once, well
	// under the agent's per-client connection limit.
	sharedFetches = 8
	// sharedFilter selects the checks that decide which serai instances
	// pass: theirs, and every node's own (serfHealth, maintenance), since
	// a failed node fails its services without touching their checks.
	sharedFilter = `ServiceName matches "^` + contract.ServicePrefix + `" or ServiceName == ""`
	// pendingPrint is the fingerprint of an endpoint never fetched; no
	// real fingerprint equals it.
	pendingPrint = "\x00pending"
)

// sharedHealth watches the health of many endpoints with one blocking
// query on /v1/health/state/any (filtered to serai's services and the
// nodes' own checks) and fetches an endpoint's passing instances, without
// blocking, when its fingerprint changes: which checks it has, on which
// nodes, with which status and tags, and the status of those nodes' own
// checks. That is one connection held, not one per endpoint, at the price
// of a round trip more per change and of waking on every check change in
// the datacenter (answered with the filtered list; one wake per
// MinInterval at most). An instance re-registered with a new address but
// the same checks, status and tags is not noticed until its checks
// change; Nomad gives a moved instance a new service ID.
type sharedHealth struct {
	d      *ConsulDiscovery
	sink   Sink
	cancel context.CancelFunc
	done   chan struct{}
	poke   chan struct{}

	mu        sync.Mutex
	endpoints map[string]string // endpoint → fingerprint of what was last set
}

func (d *ConsulDiscovery) startShared(ctx context.Context, sink Sink, wg *sync.WaitGroup) *sharedHealth {
	ctx, cancel := context.WithCancel(ctx)
	s := &sharedHealth{d: d, sink: sink, cancel: cancel, done: make(chan struct{}), poke: make(chan struct{}, 1),
		endpoints: map[string]string{}}
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer close(s.done)
		s.run(ctx)
	}()
	return s
}

// stop returns once the watch can set no more instances.
func (s *sharedHealth) stop() {
	s.cancel()
	<-s.done
	s.sink.ForgetSource(sharedSource)
	s.sink.ForgetSource(sharedFetchSource)
}

// setEndpoints makes names the endpoints watched. Once it returns, no
// instances are set for an endpoint not in names; new ones are fetched
// at once.
func (s *sharedHealth) setEndpoints(names map[string]bool) {
	s.mu.Lock()
	added := false
	for n := range s.endpoints {
		if !names[n] {
			delete(s.endpoints, n)
		}
	}
	for n := range names {
		if _, ok := s.endpoints[n]; !ok {
			s.endpoints[n] = pendingPrint
			added = true
		}
	}
	s.mu.Unlock()
	if added {
		s.wake()
	}
}

func (s *sharedHealth) wake() {
	select {
	case s.poke <- struct{}{}:
	default:
	}
}

func (s *sharedHealth) run(ctx context.Context) {
	// The blocking query runs on its own so a change lands while
	// fetches for the previous one are in flight; only the latest
	// checks matter.
	latest := make(chan consulapi.HealthChecks, 1)
	queried := make(chan struct{})
	// Nothing of this watch reports after stop returns.
	defer func() { <-queried }()
	go func() {
		defer close(queried)
		w := &blockingWatch{d: s.d, source: sharedSource, sink: s.sink}
		for {
			res, _, err := w.next(ctx, func(q *consulapi.QueryOptions) (any, *consulapi.QueryMeta, error) {
				q.Filter = sharedFilter
				return s.d.cfg.Client.Health().State(consulapi.HealthAny, q)
			})
			if err != nil {
				return
			}
			select {
			case <-latest:
			default:
			}
			latest <- res.(consulapi.HealthChecks)
		}
	}()
	var checks consulapi.HealthChecks
	have := false
	failures := 0
	for {
		select {
		case <-ctx.Done():
			return
		case checks = <-latest:
			have = true
		case <-s.poke:
		}
		if !have {
			// The first answer comes at once (index 0 does not block);
			// fetching before it would fetch everything twice.
			continue
		}
		prints := fingerprints(checks)
		s.mu.Lock()
		var todo []string
		for ep, fp := range s.endpoints {
			if fp != prints[ep] {
				todo = append(todo, ep)
			}
		}
		s.mu.Unlock()
		if len(todo) == 0 {
			continue
		}
		var (
			errMu    sync.Mutex
			failed   int
			firstErr error
		)
		sem := make(chan struct{}, sharedFetches)
		var fetches sync.WaitGroup
		for _, ep := range todo {
			sem <- struct{}{}
			fetches.Add(1)
			go func(ep string) {
				defer fetches.Done()
				defer func() { <-sem }()
				q := (&consulapi.QueryOptions{AllowStale: true}).WithContext(ctx)
				entries, _, err := s.d.cfg.Client.Health().Service(ServiceName(ep), "", true, q)
				if err != nil {
					if ctx.Err() == nil {
						errMu.Lock()
						failed++
						if firstErr == nil {
							firstErr = err
						}
						errMu.Unlock()
					}
					return
				}
				s.mu.Lock()
				defer s.mu.Unlock()
				if _, ok := s.endpoints[ep]; !ok || ctx.Err() != nil {
					return // no longer watched
				}
				// Under s.mu, so a removed endpoint's untrusted count,
				// once cleared, stays cleared.
				insts := s.d.instances(ep, entries, s.sink)
				s.endpoints[ep] = prints[ep]
				s.sink.SetInstances(ep, insts)
			}(ep)
		}
		fetches.Wait()
		if ctx.Err() != nil {
			return
		}
		if failed == 0 {
			failures = 0
			s.sink.ReportSync(sharedFetchSource, nil)
			continue
		}
		// What failed keeps its print, so it is fetched again: after a
		// back-off, or sooner if the checks change.
		failures++
		s.sink.ReportSync(sharedFetchSource, fmt.Errorf("%d of %d endpoints' instances: %w", failed, len(todo), firstErr))
		back := min(s.d.cfg.RetryMin<<min(failures-1, 10), s.d.cfg.RetryMax)
		time.AfterFunc(back, s.wake)
	}
}

// fingerprints maps each endpoint with serai checks to a string that
// changes when anything that decides its passing instances does.
func fingerprints(checks consulapi.HealthChecks) map[string]string {
	nodes := map[string][]string{}
	perEP := map[string][]*consulapi.HealthCheck{}
	for _, c := range checks {
		if c.ServiceName == "" {
			nodes[c.Node] = append(nodes[c.Node], c.CheckID+"\x01"+c.Status)
			continue
		}
		ep, ok := strings.CutPrefix(c.ServiceName, contract.ServicePrefix)
		if !ok {
			continue
		}
		perEP[ep] = append(perEP[ep], c)
	}
	for _, ns := range nodes {
		slices.Sort(ns)
	}
	out := make(map[string]string, len(perEP))
	var b strings.Builder
	for ep, cs := range perEP {
		slices.SortFunc(cs, func(a, b *consulapi.HealthCheck) int {
			return cmp.Or(strings.Compare(a.Node, b.Node), strings.Compare(a.ServiceID, b.ServiceID), strings.Compare(a.CheckID, b.CheckID))
		})
		b.Reset()
		node := ""
		for _, c := range cs {
			if c.Node != node {
				node = c.Node
				// Node, check and service names cannot hold a NUL; the
				// separators keep one field from running into the next.
				b.WriteString("\x00node\x00" + node)
				for _, nc := range nodes[node] {
					b.WriteString("\x00" + nc)
				}
			}
			b.WriteString("\x00" + c.ServiceID + "\x00" + c.CheckID + "\x00" + c.Status)
			for _, tag := range c.ServiceTags {
				b.WriteString("\x01" + tag)
			}
		}
		out[ep] = b.String()
	}
	return out
}

// blockingWatch runs one Consul blocking query after another, keeping the
// index, backing off on errors and reporting sync status. It is the
// "view" of consul-template cut down to what the router needs.
type blockingWatch struct {
	d         *ConsulDiscovery
	source    string
	sink      Sink
	index     uint64
	lastStart time.Time
	failures  int
}

// next returns the next result whose index differs from the last one seen,
// or an error only when ctx ends.
func (w *blockingWatch) next(ctx context.Context, query func(*consulapi.QueryOptions) (any, *consulapi.QueryMeta, error)) (any, *consulapi.QueryMeta, error) {
	cfg := &w.d.cfg
	for {
		if wait := cfg.MinInterval - time.Since(w.lastStart); wait > 0 {
			if err := sleepCtx(ctx, wait); err != nil {
				return nil, nil, err
			}
		}
		w.lastStart = time.Now()
		index := w.index
		if w.failures > 0 {
			// After an error, ask without blocking: a blocking query
			// on an unchanged index would hold the "back in sync" news
			// until something changes or the wait time runs out.
			index = 0
		}
		q := (&consulapi.QueryOptions{WaitIndex: index, WaitTime: cfg.WaitTime, AllowStale: true}).WithContext(ctx)
		res, meta, err := query(q)
		if ctx.Err() != nil {
			return nil, nil, ctx.Err()
		}
		if err != nil {
			w.failures++
			w.sink.ReportSync(w.source, err)
			back := cfg.RetryMin << min(w.failures-1, 10)
			if back > cfg.RetryMax || back <= 0 {
				back = cfg.RetryMax
			}
			// Jitter so many routers do not retry in lockstep.
			back = back/2 + time.Duration(rand.Int64N(int64(back/2)+1))
			w.d.log.Debug("query failed; retrying", "source", w.source, "in", back, "error", err)
			if err := sleepCtx(ctx, back); err != nil {
				return nil, nil, err
			}
			continue
		}
		w.failures = 0
		w.sink.ReportSync(w.source, nil)
		first := w.index == 0
		changed := meta.LastIndex != w.index
		switch {
		case meta.LastIndex < w.index:
			// Index went backwards (e.g. a Consul snapshot restore):
			// start over rather than block on an index that will not come.
			w.index = 0
		case meta.LastIndex == 0:
			w.index = 1
		default:
			w.index = meta.LastIndex
		}
		if first || changed {
			return res, meta, nil
		}
	}
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
