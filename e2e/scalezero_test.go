package e2e

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/sagemakerruntime"
	"github.com/aws/smithy-go"

	"github.com/seraihq/serai/contract"
	"github.com/seraihq/serai/policies"
)

// Scale from zero in TestScaleFromZero: each router holds at most
// zeroQueue requests per endpoint; the burst sends zeroExtra more.
const (
	zeroQueue = 4
	zeroExtra = 3
)

// TestScaleFromZero runs scale from zero with nothing stubbed: a variant
// with min_capacity 0 is created at 0 instances; a burst through one of
// two `serai router`s is held (the first zeroQueue requests) or refused at
// once with ModelNotReadyException (the rest), the router's wake key makes
// the leading `serai server` scale the group to 1, and every held request
// is answered by that instance — the first answer's wait is the cold
// start. After the load stops the real Nomad Autoscaler scales the idle
// variant back to 0 (the query reads 0 invocations), and a request through
// the other router, by the unmodified AWS SDK, is held and answered again.
// Nothing hangs: every request returns within the model timeout.
func TestScaleFromZero(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	as := newAutoscaleStack(t, ctx, "--hold-queue-length", fmt.Sprint(zeroQueue))
	nomad, sm, promAddr, routers := as.nomad, as.sm, as.promAddr, as.routers
	sc := scaling{count: 0, min: 0, max: 2, out: 10 * time.Second, in: 20 * time.Second, eval: 5 * time.Second}
	as.apply(t, ctx, autoscaleSpec(as.store.URL, as.modelServer, as.sum, sc))
	jobID := contract.JobID(endpointName, 1)
	w := &scaleWatch{t: t, nomad: nomad.Client, jobID: jobID, routers: routers, min: sc.max, max: 0}
	w.sample()
	if w.count != 0 || !w.routersSee(0) {
		t.Fatalf("created at 0 instances: Nomad count %d, routers see %v", w.count, w.healthy)
	}
	if d := describe(t, ctx, sm); aws.ToInt32(d.ProductionVariants[0].DesiredInstanceCount) != 0 {
		t.Errorf("DescribeEndpoint at zero: %s", variantCounts(d.ProductionVariants))
	}

	// Prometheus must have scraped both routers before the burst, or the
	// burst's invocations are a counter's first sample, which rate() does
	// not count, and the idle period would look shorter than it is.
	waitUntil(t, ctx, "Prometheus scrapes both routers", time.Minute, func() bool {
		v, ok := promQuery(promAddr, `count(`+policies.MetricInvocations+`{endpoint="`+endpointName+`",variant="v1"})`)
		return ok && v == 2
	})

	// The burst, all through router 0.
	url0 := "http://" + routers[0] + "/endpoints/" + endpointName + "/invocations"
	type answer struct {
		status int
		code   string
		took   time.Duration
		err    error
	}
	n := zeroQueue + zeroExtra
	answers := make([]answer, n)
	var wg sync.WaitGroup
	start := time.Now()
	for i := range answers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := http.Post(url0, "text/csv", strings.NewReader(payload))
			a := answer{err: err}
			if err == nil {
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				a.status, a.code = resp.StatusCode, resp.Header.Get("X-Amzn-ErrorType")
			}
			a.took = time.Since(start)
			answers[i] = a
		}()
	}
	wg.Wait()
	sort.Slice(answers, func(i, j int) bool { return answers[i].took < answers[j].took })
	var ok, refused []answer
	for _, a := range answers {
		switch {
		case a.err != nil:
			t.Errorf("request failed: %v", a.err)
		case a.status == 200:
			ok = append(ok, a)
		case a.status == 429 && a.code == "ModelNotReadyException":
			refused = append(refused, a)
		default:
			t.Errorf("answered %d %s", a.status, a.code)
		}
	}
	if len(ok) != zeroQueue || len(refused) != zeroExtra {
		t.Fatalf("burst of %d with a queue of %d: %d answered, %d refused; want %d and %d", n, zeroQueue, len(ok), len(refused), zeroQueue, zeroExtra)
	}
	coldBurst := ok[0].took
	w.sample()
	if w.count != 1 {
		t.Errorf("after the wake: Nomad count %d, want 1", w.count)
	}
	events := scaleEvents(t, nomad.Client, jobID, "v1")
	if !strings.Contains(events, "0→1") {
		t.Errorf("no 0→1 scaling event: %s", events)
	}
	m0 := routerMetrics(t, routers[0])
	for _, want := range []string{
		`serai_router_hold_outcomes_total{endpoint="iris",outcome="sent"} 4`,
		`serai_router_hold_outcomes_total{endpoint="iris",outcome="full"} 3`,
		`serai_router_cold_start_seconds_count{endpoint="iris",generation="1",variant="v1"} 4`,
		`serai_router_held_requests{endpoint="iris",generation="1",variant="v1"} 0`,
	} {
		if !strings.Contains(m0, want) {
			t.Errorf("router metrics lack %q", want)
		}
	}

	// Idle: the autoscaler scales the variant back to 0 once the 1-minute
	// rate window holds no invocation.
	idleFrom := time.Now()
	waitUntil(t, ctx, "the idle variant scaled to 0 in both routers", 4*time.Minute, func() bool {
		w.sample()
		return w.count == 0 && w.routersSee(0)
	})
	toZero := time.Since(idleFrom)
	if d := describe(t, ctx, sm); aws.ToInt32(d.ProductionVariants[0].DesiredInstanceCount) != 0 {
		t.Errorf("DescribeEndpoint after scale-in: %s", variantCounts(d.ProductionVariants))
	}

	// One request through the other router, by the AWS SDK: held, then
	// answered.
	rt := sagemakerruntime.New(sagemakerruntime.Options{
		Region: "us-east-1", BaseEndpoint: aws.String("http://" + routers[1]),
		Credentials: credentials.NewStaticCredentialsProvider("AKIDSERAIE2E", "secret", ""),
	})
	start = time.Now()
	ans, err := rt.InvokeEndpoint(ctx, &sagemakerruntime.InvokeEndpointInput{
		EndpointName: aws.String(endpointName), ContentType: aws.String("text/csv"), Body: []byte(payload),
	})
	coldOne := time.Since(start)
	if err != nil {
		var ae smithy.APIError
		if errors.As(err, &ae) {
			t.Fatalf("InvokeEndpoint after scale to zero: %s: %s (after %s)", ae.ErrorCode(), ae.ErrorMessage(), coldOne)
		}
		t.Fatalf("InvokeEndpoint after scale to zero: %v", err)
	}
	if aws.ToString(ans.InvokedProductionVariant) != "v1" || len(ans.Body) == 0 {
		t.Errorf("answer %q from %q", ans.Body, aws.ToString(ans.InvokedProductionVariant))
	}
	w.sample()
	t.Logf("RESULT scale from zero: burst of %d through one router (queue %d): %d refused with 429 ModelNotReadyException within %s, %d held and answered; cold start to the first answer %s",
		n, zeroQueue, len(refused), refused[len(refused)-1].took.Round(time.Millisecond), len(ok), coldBurst.Round(100*time.Millisecond))
	t.Logf("RESULT scale from zero: idle → scaled to 0 in %s (1m rate window, %s scale-in cooldown); then one request by the AWS SDK through the other router: cold start to the answer %s; scaling events %s",
		toZero.Round(100*time.Millisecond), sc.in, coldOne.Round(100*time.Millisecond), scaleEvents(t, nomad.Client, jobID, "v1"))
	for _, e := range groupEvents(t, nomad.Client, jobID, "v1") {
		if e.Count != nil {
			t.Logf("scaling event %d→%d: %s %v", e.PreviousCount, *e.Count, e.Message, e.Meta)
		}
	}
	if w.min < sc.min || w.max > sc.max {
		t.Errorf("count left min..max: saw %d..%d", w.min, w.max)
	}
}
