package cluster

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	consulapi "github.com/hashicorp/consul/api"

	"github.com/seraihq/serai/contract"
	"github.com/seraihq/serai/internal/testagents"
	"github.com/seraihq/serai/server/reconcile"
)

// routerMetricsText is what a router serves for endpoint iris, generation
// 1: n invocations, errs of them 5xx.
func routerMetricsText(n, errs int) string {
	l := fmt.Sprintf(`{%s="iris",%s="v1",%s="1"}`, contract.LabelEndpoint, contract.LabelVariant, contract.LabelGeneration)
	return fmt.Sprintf("# TYPE %s counter\n%s%s %d\n# TYPE %s counter\n%s%s %d\n",
		contract.MetricInvocations, contract.MetricInvocations, l, n,
		contract.MetricInvocation5xx, contract.MetricInvocation5xx, l, errs)
}

func metricsServer(n, errs int) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write([]byte(routerMetricsText(n, errs)))
	})
}

// hungServer accepts a scrape and never answers until the test ends, as
// a router stopped with SIGSTOP would (its kernel still accepts).
func hungServer(t *testing.T, hits *atomic.Int32) *httptest.Server {
	done := make(chan struct{})
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		select {
		case <-done:
		case <-r.Context().Done():
		}
	}))
	t.Cleanup(func() { close(done); s.Close() })
	return s
}

// Routers are scraped in parallel, each bounded by ScrapeTimeout: two
// hung routers cost one scrape timeout, not one each, and the answers of
// the others (one over http, one over https with a private CA) are kept.
func TestScrapeAllParallelOneHung(t *testing.T) {
	var hits atomic.Int32
	plain := httptest.NewServer(metricsServer(10, 1))
	defer plain.Close()
	tlsSrv := httptest.NewTLSServer(metricsServer(20, 2))
	defer tlsSrv.Close()
	hung1, hung2 := hungServer(t, &hits), hungServer(t, &hits)
	m := &RouterMetrics{HTTP: tlsSrv.Client(), Workers: 4, ScrapeTimeout: 300 * time.Millisecond}
	got, err := m.scrapeAll(context.Background(), map[string]string{
		"plain": plain.URL + "/metrics",
		"tls":   tlsSrv.URL + "/metrics",
		"hung1": hung1.URL + "/metrics",
		"hung2": hung2.URL + "/metrics",
	}, "iris", 1)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got["plain"].Invocations != 10 || got["tls"].Invocations != 20 || got["tls"].Errors5xx != 2 {
		t.Fatalf("samples = %+v, want plain (10) and tls (20) only", got)
	}
	if hits.Load() != 2 {
		t.Fatalf("hung routers scraped %d times, want 2 (both in parallel)", hits.Load())
	}
}

// With every router hung the answer is ErrNoMetrics naming them, after
// one scrape timeout, never a wait per router; the worker bound holds.
func TestScrapeAllNoneAnswers(t *testing.T) {
	var hits atomic.Int32
	urls := map[string]string{}
	for i := 0; i < 5; i++ {
		urls["hung"+strconv.Itoa(i)] = hungServer(t, &hits).URL + "/metrics"
	}
	var inflight, peak atomic.Int32
	m := &RouterMetrics{HTTP: &http.Client{Transport: countingTransport{&inflight, &peak}}, Workers: 2, ScrapeTimeout: 100 * time.Millisecond}
	_, err := m.scrapeAll(context.Background(), urls, "iris", 1)
	if !errors.Is(err, reconcile.ErrNoMetrics) {
		t.Fatalf("err = %v, want ErrNoMetrics", err)
	}
	if peak.Load() > 2 {
		t.Fatalf("%d scrapes in flight at once, want at most Workers (2)", peak.Load())
	}
	if hits.Load() != 5 {
		t.Fatalf("%d of 5 routers scraped", hits.Load())
	}
}

type countingTransport struct{ inflight, peak *atomic.Int32 }

func (c countingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	n := c.inflight.Add(1)
	defer c.inflight.Add(-1)
	for {
		p := c.peak.Load()
		if n <= p || c.peak.CompareAndSwap(p, n) {
			break
		}
	}
	return http.DefaultTransport.RoundTrip(r)
}

// On real Consul: the scheme of each router comes from its service meta
// (contract.RouterMetaScheme), and a registered router that hangs is left
// out while the others are judged.
func TestRouterMetricsSchemeFromConsulMeta(t *testing.T) {
	c := testagents.StartConsul(t)
	var hits atomic.Int32
	plain := httptest.NewServer(metricsServer(10, 0))
	defer plain.Close()
	tlsSrv := httptest.NewTLSServer(metricsServer(30, 3))
	defer tlsSrv.Close()
	hung := hungServer(t, &hits)
	register := func(id, raw string, meta map[string]string) {
		u, err := url.Parse(raw)
		if err != nil {
			t.Fatal(err)
		}
		host, port, _ := net.SplitHostPort(u.Host)
		p, _ := strconv.Atoi(port)
		if err := c.Client.Agent().ServiceRegister(&consulapi.AgentServiceRegistration{ID: id, Name: contract.RouterServiceName, Address: host, Port: p, Meta: meta}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Client.Agent().ServiceDeregister(id) })
	}
	register("r-plain", plain.URL, nil)
	register("r-tls", tlsSrv.URL, map[string]string{contract.RouterMetaScheme: "https"})
	register("r-hung", hung.URL, map[string]string{contract.RouterMetaScheme: "http"})
	m := &RouterMetrics{Consul: c.Client, HTTP: tlsSrv.Client(), ScrapeTimeout: 300 * time.Millisecond}
	got, err := m.Sample(context.Background(), "iris", 1)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got["r-plain"].Invocations != 10 || got["r-tls"].Invocations != 30 {
		t.Fatalf("samples = %+v, want r-plain (10, over http) and r-tls (30, over https)", got)
	}
	if hits.Load() != 1 {
		t.Fatalf("hung router scraped %d times", hits.Load())
	}
}

// A router answering more than the cap is no data from that router, not
// a truncated (so understated) sample.
func TestScrapeRefusesOversizedAnswer(t *testing.T) {
	text := routerMetricsText(10, 1)
	srv := httptest.NewServer(metricsServer(10, 1))
	defer srv.Close()
	if _, err := scrape(context.Background(), srv.Client(), srv.URL, "iris", 1, int64(len(text))); err != nil {
		t.Fatalf("answer of exactly the cap: %v", err)
	}
	if _, err := scrape(context.Background(), srv.Client(), srv.URL, "iris", 1, int64(len(text)-1)); !errors.Is(err, errScrapeTooLarge) {
		t.Fatalf("answer one byte over the cap: err = %v, want errScrapeTooLarge", err)
	}
}
