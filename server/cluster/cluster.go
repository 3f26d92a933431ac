// Package cluster adapts the real agents to the control plane's small
// interfaces: Nomad (register, health, scale, stop, list), Consul (passing
// instances, routing tables, the routers to scrape), Vault (policies) and
// the routers' own Prometheus metrics.
//
// It holds no state and decides nothing: server/reconcile decides, this
// package only asks and tells the agents. It must not read or write the
// control plane's records.
package cluster

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	consulapi "github.com/hashicorp/consul/api"
	"github.com/hashicorp/go-hclog"
	nomadapi "github.com/hashicorp/nomad/api"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/seraihq/serai/contract"
	"github.com/seraihq/serai/scheduler"
	"github.com/seraihq/serai/server/reconcile"
	"github.com/seraihq/serai/server/records"
	"github.com/seraihq/serai/server/smapi"
)

var (
	_ reconcile.Nomad     = (*Nomad)(nil)
	_ reconcile.Instances = (*Consul)(nil)
	_ reconcile.Routes    = (*Consul)(nil)
	_ reconcile.Metrics   = (*RouterMetrics)(nil)
)

// Nomad talks to Nomad's HTTP API.
type Nomad struct{ Client *nomadapi.Client }

// Register implements reconcile.Nomad (PreserveCounts: see scheduler).
func (n *Nomad) Register(ctx context.Context, job *nomadapi.Job) error {
	_, err := scheduler.Register(ctx, n.Client.Jobs(), job)
	return err
}

func isNotFound(err error) bool {
	var ue nomadapi.UnexpectedResponseError
	if errors.As(err, &ue) && ue.StatusCode() == http.StatusNotFound {
		return true
	}
	return err != nil && strings.Contains(err.Error(), "404")
}

// Health implements reconcile.Nomad. Success is the latest deployment of
// the job's current version succeeding; failure is that deployment
// failing, explained by the first unhealthy allocation's last task event.
func (n *Nomad) Health(ctx context.Context, jobID string) (reconcile.JobHealth, error) {
	q := (&nomadapi.QueryOptions{}).WithContext(ctx)
	job, _, err := n.Client.Jobs().Info(jobID, q)
	if isNotFound(err) {
		return reconcile.JobHealth{}, nil
	}
	if err != nil {
		return reconcile.JobHealth{}, fmt.Errorf("nomad job %s: %w", jobID, err)
	}
	if job.Stop != nil && *job.Stop {
		return reconcile.JobHealth{}, nil
	}
	h := reconcile.JobHealth{Exists: true, Desired: map[string]int{}}
	for _, g := range job.TaskGroups {
		if g.Name != nil && g.Count != nil {
			h.Desired[*g.Name] = *g.Count
		}
	}
	d, _, err := n.Client.Jobs().LatestDeployment(jobID, q)
	if err != nil {
		return h, fmt.Errorf("nomad deployment of %s: %w", jobID, err)
	}
	// Consul's passing instances are the reconciler's real test of
	// "up"; Nomad's deployment adds the failure signal and keeps "done"
	// from racing ahead of a rollout still placing allocations.
	switch {
	case d == nil:
		h.Done = true
	case d.Status == nomadapi.DeploymentStatusSuccessful:
		h.Done = true
	case (d.Status == nomadapi.DeploymentStatusFailed || d.Status == nomadapi.DeploymentStatusCancelled) && (job.Version == nil || d.JobVersion == *job.Version):
		h.Failed = true
		h.Reason = n.failureReason(ctx, jobID, d)
	case d.Status != nomadapi.DeploymentStatusRunning && d.Status != nomadapi.DeploymentStatusPending && d.Status != nomadapi.DeploymentStatusPaused:
		// An older version's finished deployment (scaling makes no new one).
		h.Done = true
	default:
		// Nomad fails a deployment only at its progress deadline, after
		// rescheduling unhealthy allocations for minutes. An allocation of
		// this version that missed its healthy deadline (the model's
		// startup_timeout) is answer enough for a rollout.
		if reason, bad := n.unhealthyAlloc(ctx, jobID, d.JobVersion); bad {
			h.Failed, h.Reason = true, fmt.Sprintf("job %s: %s", jobID, reason)
		}
	}
	return h, nil
}

// unhealthyAlloc finds an allocation of the given job version that its
// deployment marked unhealthy.
func (n *Nomad) unhealthyAlloc(ctx context.Context, jobID string, version uint64) (string, bool) {
	allocs, _, err := n.Client.Jobs().Allocations(jobID, false, (&nomadapi.QueryOptions{}).WithContext(ctx))
	if err != nil {
		return "", false
	}
	for _, a := range allocs {
		if a.JobVersion != version || a.DeploymentStatus == nil || a.DeploymentStatus.Healthy == nil || *a.DeploymentStatus.Healthy {
			continue
		}
		return "an allocation did not become healthy within its healthy deadline (the model's startup_timeout): " + describeAlloc(a), true
	}
	return "", false
}

// failureReason names the variant, the allocation and the task's last
// event: what a person needs to act.
func (n *Nomad) failureReason(ctx context.Context, jobID string, d *nomadapi.Deployment) string {
	base := fmt.Sprintf("Nomad deployment %s of job %s %s: %s", short(d.ID), jobID, d.Status, d.StatusDescription)
	allocs, _, err := n.Client.Jobs().Allocations(jobID, true, (&nomadapi.QueryOptions{}).WithContext(ctx))
	if err != nil {
		return base
	}
	sort.Slice(allocs, func(i, j int) bool { return allocs[i].ModifyTime > allocs[j].ModifyTime })
	for _, a := range allocs {
		if a.DeploymentStatus != nil && a.DeploymentStatus.Healthy != nil && *a.DeploymentStatus.Healthy {
			continue
		}
		if a.DeploymentStatus == nil && a.ClientStatus == nomadapi.AllocClientStatusRunning {
			continue
		}
		return base + "; " + describeAlloc(a)
	}
	return base
}

func describeAlloc(a *nomadapi.AllocationListStub) string {
	out := fmt.Sprintf("variant %s: allocation %s (%s)", a.TaskGroup, short(a.ID), a.ClientStatus)
	names := make([]string, 0, len(a.TaskStates))
	for t := range a.TaskStates {
		names = append(names, t)
	}
	sort.Strings(names)
	// The model task's story first, then the fetch task's.
	sort.SliceStable(names, func(i, j int) bool { return names[i] == "model" })
	for _, t := range names {
		ts := a.TaskStates[t]
		if ts == nil || len(ts.Events) == 0 {
			continue
		}
		ev := ts.Events[len(ts.Events)-1]
		msg := ev.DisplayMessage
		if msg == "" {
			msg = ev.Type
		}
		if ts.Failed || ev.Type != nomadapi.TaskStarted {
			return out + fmt.Sprintf(": task %s: %s: %s", t, ev.Type, msg)
		}
	}
	if a.ClientStatus == nomadapi.AllocClientStatusRunning {
		return out + ": the model task runs but its health check (GET /ping) is not passing"
	}
	return out
}

// cappedReader fails once more than left bytes are read: a truncated
// answer must not pass for a whole one.
type cappedReader struct {
	r    io.Reader
	left int64
}

func (c *cappedReader) Read(p []byte) (int, error) {
	if c.left < 0 {
		return 0, errScrapeTooLarge
	}
	if int64(len(p)) > c.left+1 {
		p = p[:c.left+1]
	}
	n, err := c.r.Read(p)
	c.left -= int64(n)
	if c.left < 0 {
		return 0, errScrapeTooLarge
	}
	return n, err
}

var errScrapeTooLarge = fmt.Errorf("metrics answer larger than the %d bytes a router may send", maxScrapeBytes)

// maxScrapeBytes bounds what one router's /metrics may make the server
// parse (a router serves a few hundred kilobytes for thousands of
// endpoints).
const maxScrapeBytes = 64 << 20

func short(id string) string {
	if len(id) > 8 {
		return id[:8]
	}
	return id
}

// Scale implements reconcile.Nomad with Nomad's scale API: no new job
// version, no allocation restarted.
func (n *Nomad) Scale(ctx context.Context, jobID, group string, count int, reason string) error {
	c := count
	_, _, err := n.Client.Jobs().Scale(jobID, group, &c, "serai: "+reason, false, map[string]any{"source": "serai"}, (&nomadapi.WriteOptions{}).WithContext(ctx))
	if err != nil {
		return fmt.Errorf("scale %s/%s to %d: %w", jobID, group, count, err)
	}
	return nil
}

// Stop implements reconcile.Nomad: deregister and purge.
func (n *Nomad) Stop(ctx context.Context, jobID string) error {
	_, _, err := n.Client.Jobs().Deregister(jobID, true, (&nomadapi.WriteOptions{}).WithContext(ctx))
	if err != nil && !isNotFound(err) {
		return fmt.Errorf("stop %s: %w", jobID, err)
	}
	return nil
}

// Jobs implements reconcile.Nomad.
func (n *Nomad) Jobs(ctx context.Context, endpoint string) ([]string, error) {
	stubs, _, err := n.Client.Jobs().List((&nomadapi.QueryOptions{Prefix: contract.ServiceName(endpoint) + ".g"}).WithContext(ctx))
	if err != nil {
		return nil, fmt.Errorf("list jobs of %s: %w", endpoint, err)
	}
	var out []string
	for _, s := range stubs {
		if ep, _, ok := contract.ParseJobID(s.ID); ok && ep == endpoint {
			out = append(out, s.ID)
		}
	}
	sort.Strings(out)
	return out, nil
}

// Desired returns each group's count of a job (nil when it does not exist).
func (n *Nomad) Desired(ctx context.Context, jobID string) (map[string]int, error) {
	h, err := n.Health(ctx, jobID)
	if err != nil || !h.Exists {
		return nil, err
	}
	return h.Desired, nil
}

// MaxScalingEvents is how many of a group's scaling events Observe keeps.
const MaxScalingEvents = 5

// ScalingEvents returns each group's last scaling events (at most
// MaxScalingEvents, oldest first) from Nomad's job scale status, where the
// Nomad Autoscaler's actions and errors and serai's own scale requests are
// recorded. A missing job has none.
func (n *Nomad) ScalingEvents(ctx context.Context, jobID string) (map[string][]smapi.ScalingEvent, error) {
	st, _, err := n.Client.Jobs().ScaleStatus(jobID, (&nomadapi.QueryOptions{}).WithContext(ctx))
	if isNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("nomad scale status of %s: %w", jobID, err)
	}
	out := map[string][]smapi.ScalingEvent{}
	for group, g := range st.TaskGroups {
		out[group] = ScalingEventsOf(g.Events, MaxScalingEvents)
	}
	return out, nil
}

// ScalingEventsOf converts Nomad's scaling events to the API's, keeping the
// newest max, oldest first.
func ScalingEventsOf(events []nomadapi.ScalingEvent, max int) []smapi.ScalingEvent {
	ev := append([]nomadapi.ScalingEvent(nil), events...)
	sort.SliceStable(ev, func(i, j int) bool { return ev[i].Time < ev[j].Time })
	if len(ev) > max {
		ev = ev[len(ev)-max:]
	}
	var out []smapi.ScalingEvent
	for _, e := range ev {
		se := smapi.ScalingEvent{
			Time:          smapi.NewTime(time.Unix(0, int64(e.Time))),
			PreviousCount: int(e.PreviousCount),
			Message:       e.Message,
			Error:         e.Error,
			Source:        scalingSource(e),
		}
		if e.Count != nil {
			c := int(*e.Count)
			se.Count = &c
		}
		out = append(out, se)
	}
	return out
}

// scalingSource tells who asked for a scaling event: serai marks its own
// requests with meta source=serai; the autoscaler's meta keys start with
// nomad_autoscaler or name its policy.
func scalingSource(e nomadapi.ScalingEvent) string {
	if s, ok := e.Meta["source"].(string); ok {
		return s
	}
	for k := range e.Meta {
		if strings.HasPrefix(k, "nomad_autoscaler") || k == "nomad_policy_id" {
			return "nomad-autoscaler"
		}
	}
	return ""
}

// Consul reads instances and writes routing tables. With Session set (the
// session holding the leader lock contract.LeaderKey; see Fenced), every
// routing-table write and delete is a Consul transaction that first checks
// the session still holds the lock, so a leader that lost the lock in the
// middle of a step cannot overwrite the table its successor wrote.
type Consul struct {
	Client  *consulapi.Client
	Session string
}

// Fenced returns a copy whose routing-table writes hold only while session
// holds the leader lock. The server calls it for each leadership term.
func (c *Consul) Fenced(session string) reconcile.Routes {
	cp := *c
	cp.Session = session
	return &cp
}

// ErrNotLeader: a fenced write found the lock held by another session (or
// by none).
var ErrNotLeader = errors.New("this server no longer holds the leader lock " + contract.LeaderKey)

// Passing implements reconcile.Instances.
func (c *Consul) Passing(ctx context.Context, endpoint string) (map[reconcile.GV]int, error) {
	entries, _, err := c.Client.Health().Service(contract.ServiceName(endpoint), "", true, (&consulapi.QueryOptions{}).WithContext(ctx))
	if err != nil {
		return nil, fmt.Errorf("consul health of %s: %w", contract.ServiceName(endpoint), err)
	}
	out := map[reconcile.GV]int{}
	for _, e := range entries {
		if e.Service == nil {
			continue
		}
		// The instances a router would use, no others: a rogue
		// registration must not make a generation look healthy.
		own := 0
		for _, c := range e.Checks {
			if c != nil && c.ServiceID != "" && c.ServiceID == e.Service.ID {
				own++
			}
		}
		if t, _, ok := contract.TrustInstance(endpoint, e.Service.Tags, e.Service.Meta, own); ok {
			out[reconcile.GV{Generation: t.Generation, Variant: t.Variant}]++
		}
	}
	return out, nil
}

// Put implements reconcile.Routes.
func (c *Consul) Put(ctx context.Context, r *contract.Routes) error {
	b, err := contract.EncodeRoutes(r)
	if err != nil {
		return err
	}
	if err := c.write(ctx, &consulapi.KVTxnOp{Verb: consulapi.KVSet, Key: contract.RoutesKey(r.Endpoint), Value: b}); err != nil {
		return fmt.Errorf("write routing table of %s: %w", r.Endpoint, err)
	}
	return nil
}

// Delete implements reconcile.Routes.
func (c *Consul) Delete(ctx context.Context, endpoint string) error {
	if err := c.write(ctx, &consulapi.KVTxnOp{Verb: consulapi.KVDelete, Key: contract.RoutesKey(endpoint)}); err != nil {
		return fmt.Errorf("delete routing table of %s: %w", endpoint, err)
	}
	return nil
}

// write applies op, behind the lock check when fenced.
func (c *Consul) write(ctx context.Context, op *consulapi.KVTxnOp) error {
	wo := (&consulapi.WriteOptions{}).WithContext(ctx)
	if c.Session == "" {
		var err error
		if op.Verb == consulapi.KVDelete {
			_, err = c.Client.KV().Delete(op.Key, wo)
		} else {
			_, err = c.Client.KV().Put(&consulapi.KVPair{Key: op.Key, Value: op.Value}, wo)
		}
		return err
	}
	ops := consulapi.TxnOps{
		{KV: &consulapi.KVTxnOp{Verb: consulapi.KVCheckSession, Key: contract.LeaderKey, Session: c.Session}},
		{KV: op},
	}
	ok, resp, _, err := c.Client.Txn().Txn(ops, (&consulapi.QueryOptions{}).WithContext(ctx))
	if err != nil {
		return err
	}
	if !ok {
		for _, e := range resp.Errors {
			if e.OpIndex == 0 {
				return fmt.Errorf("%w (%s)", ErrNotLeader, e.What)
			}
		}
		var what []string
		for _, e := range resp.Errors {
			what = append(what, e.What)
		}
		return fmt.Errorf("transaction refused: %s", strings.Join(what, "; "))
	}
	return nil
}

// RouterMetrics scrapes every passing serai-router instance's /metrics,
// all at once (at most Workers at a time), each scrape bounded by
// ScrapeTimeout, over the scheme the router's service meta names
// (contract.RouterMetaScheme).
type RouterMetrics struct {
	Consul *consulapi.Client
	// HTTP scrapes the routers; set its TLS config to trust the routers'
	// CA when they serve https (default: DefaultRouterClient).
	HTTP *http.Client
	// Workers bounds the scrapes in flight (default DefaultScrapeWorkers).
	Workers int
	// ScrapeTimeout bounds one router's scrape (default
	// DefaultScrapeTimeout): a hung router costs one scrape this long.
	ScrapeTimeout time.Duration
	Logger        hclog.Logger
}

// Defaults of RouterMetrics.
const (
	DefaultScrapeWorkers = 16
	DefaultScrapeTimeout = 2 * time.Second
)

// DefaultRouterClient is the scrape client when none is given: timeouts
// at every stage as a backstop to the per-scrape deadline, and the
// system's roots for https.
func DefaultRouterClient() *http.Client {
	return &http.Client{
		Timeout: 10 * time.Second,
		Transport: &http.Transport{
			Proxy:                 nil, // routers are reached directly, never through a proxy from the environment
			DialContext:           (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
			TLSHandshakeTimeout:   5 * time.Second,
			ResponseHeaderTimeout: 5 * time.Second,
			IdleConnTimeout:       90 * time.Second,
			MaxIdleConnsPerHost:   2,
		},
	}
}

// Sample implements reconcile.Metrics. A router that cannot be scraped is
// left out (logged), its share of the traffic unjudged this time; when
// routers are registered and none answers, the error wraps
// reconcile.ErrNoMetrics so the reconciler holds the rollout rather than
// promote on no data.
func (m *RouterMetrics) Sample(ctx context.Context, endpoint string, generation int) (map[string]records.MetricSample, error) {
	entries, _, err := m.Consul.Health().Service(contract.RouterServiceName, "", true, (&consulapi.QueryOptions{}).WithContext(ctx))
	if err != nil {
		return nil, fmt.Errorf("consul: find routers: %w", err)
	}
	urls := map[string]string{} // service ID → metrics URL
	for _, e := range entries {
		if e.Service == nil {
			continue
		}
		host := e.Service.Address
		if host == "" && e.Node != nil {
			host = e.Node.Address
		}
		scheme := "http"
		if e.Service.Meta[contract.RouterMetaScheme] == "https" {
			scheme = "https"
		}
		urls[e.Service.ID] = scheme + "://" + net.JoinHostPort(host, strconv.Itoa(e.Service.Port)) + "/metrics"
	}
	return m.scrapeAll(ctx, urls, endpoint, generation)
}

// scrapeAll scrapes each router (id → metrics URL) in parallel.
func (m *RouterMetrics) scrapeAll(ctx context.Context, urls map[string]string, endpoint string, generation int) (map[string]records.MetricSample, error) {
	workers, timeout, client, log := m.Workers, m.ScrapeTimeout, m.HTTP, m.Logger
	if workers <= 0 {
		workers = DefaultScrapeWorkers
	}
	if timeout <= 0 {
		timeout = DefaultScrapeTimeout
	}
	if client == nil {
		client = defaultRouterClient
	}
	if log == nil {
		log = hclog.NewNullLogger()
	}
	var (
		mu     sync.Mutex
		out    = map[string]records.MetricSample{}
		failed []string
		wg     sync.WaitGroup
		sem    = make(chan struct{}, workers)
	)
	for id, url := range urls {
		wg.Add(1)
		go func() {
			defer wg.Done()
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				return
			}
			defer func() { <-sem }()
			sctx, cancel := context.WithTimeout(ctx, timeout)
			defer cancel()
			s, err := scrape(sctx, client, url, endpoint, generation, maxScrapeBytes)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				failed = append(failed, id)
				log.Warn("router metrics: no data from this router this time", "router", id, "url", url, "error", err)
				return
			}
			out[id] = s
		}()
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if len(urls) > 0 && len(out) == 0 {
		sort.Strings(failed)
		return nil, fmt.Errorf("%w (%d routers registered, none answered within %s: %s)", reconcile.ErrNoMetrics, len(urls), timeout, strings.Join(failed, ", "))
	}
	return out, nil
}

var defaultRouterClient = DefaultRouterClient()

func scrape(ctx context.Context, client *http.Client, url, endpoint string, generation int, maxBytes int64) (records.MetricSample, error) {
	var s records.MetricSample
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return s, err
	}
	req.Header.Set("Accept", "text/plain;version=0.0.4")
	resp, err := client.Do(req)
	if err != nil {
		return s, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return s, fmt.Errorf("%s: %s", url, resp.Status)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(&cappedReader{r: resp.Body, left: maxBytes})
	if err != nil {
		return s, fmt.Errorf("%s: %w", url, err)
	}
	gen := strconv.Itoa(generation)
	buckets := map[float64]float64{}
	for _, f := range families {
		for _, mt := range f.GetMetric() {
			var ep, g string
			for _, l := range mt.GetLabel() {
				switch l.GetName() {
				case contract.LabelEndpoint:
					ep = l.GetValue()
				case contract.LabelGeneration:
					g = l.GetValue()
				}
			}
			if ep != endpoint || g != gen {
				continue
			}
			switch f.GetName() {
			case contract.MetricInvocations:
				s.Invocations += mt.GetCounter().GetValue()
			case contract.MetricInvocation5xx:
				s.Errors5xx += mt.GetCounter().GetValue()
			case contract.MetricModelLatency:
				h := mt.GetHistogram()
				s.LatencyCount += float64(h.GetSampleCount())
				for _, b := range h.GetBucket() {
					buckets[b.GetUpperBound()] += float64(b.GetCumulativeCount())
				}
			}
		}
	}
	for le, n := range buckets {
		if le < 1e300 { // +Inf is LatencyCount
			s.Latency = append(s.Latency, records.Bucket{UpperBound: le, Count: n})
		}
	}
	sort.Slice(s.Latency, func(i, j int) bool { return s.Latency[i].UpperBound < s.Latency[j].UpperBound })
	return s, nil
}

// NomadHTTPClient is the client the server gives nomad/api: its TLS
// settings (NOMAD_CACERT and the rest, as nomad/api would apply them) and
// timeouts at every stage, a backstop to the reconciler's step deadline
// for any call made without a context.
func NomadHTTPClient(tlsCfg *nomadapi.TLSConfig) (*http.Client, error) {
	c := &http.Client{
		Timeout: 2 * time.Minute, // above the longest blocking query serai makes (30 s)
		Transport: &http.Transport{
			Proxy:                 http.ProxyFromEnvironment,
			DialContext:           (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
			TLSHandshakeTimeout:   10 * time.Second,
			TLSClientConfig:       &tls.Config{MinVersion: tls.VersionTLS12},
			IdleConnTimeout:       90 * time.Second,
			MaxIdleConnsPerHost:   8,
			ExpectContinueTimeout: time.Second,
		},
	}
	if err := nomadapi.ConfigureTLS(c, tlsCfg); err != nil {
		return nil, fmt.Errorf("nomad TLS settings: %w", err)
	}
	return c, nil
}
