package server

import (
	"context"
	"net/http"
	"testing"
	"time"

	consulapi "github.com/hashicorp/consul/api"
	nomadapi "github.com/hashicorp/nomad/api"

	"github.com/seraihq/serai/contract"
	"github.com/seraihq/serai/internal/testagents"
	"github.com/seraihq/serai/server/reconcile"
	"github.com/seraihq/serai/server/records"
)

// idle is a cluster with nothing in it: the lock test needs a reconciler,
// not a deployment.
type idle struct{}

func (idle) Register(context.Context, *nomadapi.Job) error { return nil }
func (idle) Health(context.Context, string) (reconcile.JobHealth, error) {
	return reconcile.JobHealth{}, nil
}
func (idle) Scale(context.Context, string, string, int, string) error { return nil }
func (idle) Stop(context.Context, string) error                       { return nil }
func (idle) Jobs(context.Context, string) ([]string, error)           { return nil, nil }
func (idle) Passing(context.Context, string) (map[reconcile.GV]int, error) {
	return nil, nil
}
func (idle) Put(context.Context, *contract.Routes) error { return nil }
func (idle) Delete(context.Context, string) error        { return nil }
func (idle) Sample(context.Context, string, int) (map[string]records.MetricSample, error) {
	return nil, nil
}

func leader(t *testing.T, c *consulapi.Client) string {
	p, _, err := c.KV().Get(contract.LeaderKey, nil)
	if err != nil {
		t.Fatal(err)
	}
	if p == nil || p.Session == "" {
		return ""
	}
	return string(p.Value)
}

func start(t *testing.T, c *testagents.Consul, id string) (context.CancelFunc, <-chan struct{}, string) {
	ctx, cancel := context.WithCancel(context.Background())
	addrc := make(chan string, 1)
	done := make(chan struct{})
	var runErr error
	cfg := Config{
		Listen: "127.0.0.1:0", ID: id, Consul: c.Client, AliveTTL: time.Second,
		API: http.NotFoundHandler(),
		Reconcile: reconcile.Config{Store: records.Store{KV: records.ConsulKV{KV: c.Client.KV()}},
			Nomad: idle{}, Instances: idle{}, Routes: idle{}, Metrics: idle{}},
	}
	go func() { runErr = Run(ctx, cfg, func(a string) { addrc <- a }); close(done) }()
	t.Cleanup(func() {
		cancel()
		<-done
		if runErr != nil {
			t.Errorf("server %s: %v", id, runErr)
		}
	})
	select {
	case a := <-addrc:
		return cancel, done, a
	case <-done:
		t.Fatalf("server %s: %v", id, runErr)
	}
	return nil, nil, ""
}

func waitFor(t *testing.T, what string, limit time.Duration, ok func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for time.Since(start) < limit {
		if ok() {
			return time.Since(start)
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("%s: not within %s", what, limit)
	return 0
}

// Exactly one server leads; when it stops, another takes the lock at once.
func TestLeaderLockHandover(t *testing.T) {
	c := testagents.StartConsul(t)
	stopA, doneA, addrA := start(t, c, "a")
	waitFor(t, "a leads", 30*time.Second, func() bool { return leader(t, c.Client) == "a" })
	_, _, addrB := start(t, c, "b")
	for _, a := range []string{addrA, addrB} {
		resp, err := http.Get("http://" + a + "/ping")
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("ping %s: %v %v", a, err, resp)
		}
		resp.Body.Close()
	}
	time.Sleep(2 * time.Second)
	if got := leader(t, c.Client); got != "a" {
		t.Fatalf("leader changed to %q while a was alive", got)
	}
	began := time.Now()
	stopA()
	<-doneA
	waitFor(t, "b takes over", 30*time.Second, func() bool { return leader(t, c.Client) == "b" })
	t.Logf("RESULT leader handover after graceful stop: %s", time.Since(began).Round(time.Millisecond))
}
