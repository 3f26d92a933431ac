package router

import (
	"context"
	"fmt"
	"github.com/seraihq/serai/contract"
	"math/rand/v2"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	consulapi "github.com/hashicorp/consul/api"
	"github.com/hashicorp/go-hclog"

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
}

// ConsulDiscovery watches Consul: the KV prefix serai/routes/ for routing
// tables, and for each endpoint found there the passing instances of service
// serai-<endpoint>. All watches are blocking queries, so a change reaches
// the router in one round trip.
type ConsulDiscovery struct {
	cfg ConsulConfig
	log hclog.Logger
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
	return &ConsulDiscovery{cfg: cfg, log: cfg.Logger.Named("consul")}
}

const kvSource = "consul/kv"

func healthSource(endpoint string) string { return "consul/health/" + endpoint }

type endpointWatch struct {
	cancel      context.CancelFunc
	done        chan struct{}
	modifyIndex uint64
}

// Run implements Discovery.
func (d *ConsulDiscovery) Run(ctx context.Context, sink Sink) error {
	watches := map[string]*endpointWatch{}
	var wg sync.WaitGroup
	defer func() {
		for _, w := range watches {
			w.cancel()
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
			seen[name] = true
			ew := watches[name]
			if ew != nil && ew.modifyIndex == p.ModifyIndex {
				continue
			}
			routes, err := DecodeRoutes(p.Value)
			if err == nil && routes.Endpoint != name {
				err = fmt.Errorf("table names endpoint %q but sits under key %s", routes.Endpoint, p.Key)
			}
			if err != nil {
				reject(p.Key, p.ModifyIndex, "rejected routing table; keeping the previous one", "error", err)
				continue
			}
			sink.SetRoutes(name, routes)
			if ew != nil {
				ew.modifyIndex = p.ModifyIndex
				continue
			}
			wctx, cancel := context.WithCancel(ctx)
			ew = &endpointWatch{cancel: cancel, done: make(chan struct{}), modifyIndex: p.ModifyIndex}
			watches[name] = ew
			wg.Add(1)
			go func(name string, done chan struct{}) {
				defer wg.Done()
				defer close(done)
				d.watchHealth(wctx, name, sink)
			}(name, ew.done)
			d.log.Info("watching endpoint", "endpoint", name)
		}
		rejected = nowRejected
		for name, ew := range watches {
			if seen[name] {
				continue
			}
			ew.cancel()
			<-ew.done
			delete(watches, name)
			sink.SetInstances(name, nil)
			sink.SetRoutes(name, nil)
			sink.ForgetSource(healthSource(name))
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
		var insts []Instance
		for _, e := range res.([]*consulapi.ServiceEntry) {
			if e.Service == nil {
				continue
			}
			tags, ok := contract.ParseTags(e.Service.Tags)
			if !ok {
				d.log.Debug("instance without valid variant/generation tags ignored", "endpoint", endpoint, "service_id", e.Service.ID)
				continue
			}
			host := e.Service.Address
			if host == "" && e.Node != nil {
				host = e.Node.Address
			}
			if host == "" || e.Service.Port <= 0 {
				continue
			}
			node := ""
			if e.Node != nil {
				node = e.Node.Node
			}
			insts = append(insts, Instance{
				ID:         node + "/" + e.Service.ID,
				Address:    net.JoinHostPort(host, strconv.Itoa(e.Service.Port)),
				Variant:    tags.Variant,
				Generation: tags.Generation,
				Model:      tags.Model,
				Shadow:     tags.Shadow,
			})
		}
		slices.SortFunc(insts, func(a, b Instance) int { return strings.Compare(a.ID, b.ID) })
		if first || !slices.Equal(insts, last) {
			sink.SetInstances(endpoint, insts)
			last, first = insts, false
		}
	}
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
