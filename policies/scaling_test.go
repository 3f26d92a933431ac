package policies

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

var testScaling = Scaling{Endpoint: "churn", Variant: "champion", Generation: 2, Target: 600}

// TestQueryShape: the divisor is one router's view of the healthy
// instances (max across routers), never their sum, and every series the
// query reads is the variant's and generation's.
func TestQueryShape(t *testing.T) {
	q := testScaling.Query()
	sel := `{endpoint="churn",variant="champion",generation="2"}`
	for _, want := range []string{
		`sum(rate(` + MetricInvocations + sel + `[1m]))`,
		`clamp_min(max(` + MetricHealthyInstances + sel + `), 1)`,
		`sum(` + MetricHeldRequests + sel + `)`,
		`* 60 +`,
	} {
		if !strings.Contains(q, want) {
			t.Errorf("query lacks %q:\n%s", want, q)
		}
	}
	if strings.Contains(q, "sum("+MetricHealthyInstances) || strings.Contains(q, "count(") {
		t.Errorf("query adds up the routers' healthy-instance gauges:\n%s", q)
	}
	if n := strings.Count(q, sel); n != 5 {
		t.Errorf("query selects the variant %d times, want 5 (each series read):\n%s", n, q)
	}
}

// TestQueryArithmetic evaluates the query with Prometheus's own engine
// (promtool test rules) on series as two and three routers export them: the
// result is invocations per minute per instance whatever the number of
// routers.
func TestQueryArithmetic(t *testing.T) {
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		t.Skip("promtool not on PATH (install Debian's prometheus package)")
	}
	sel := func(router string) string {
		return fmt.Sprintf(`{endpoint="churn",variant="champion",generation="2",instance=%q}`, router)
	}
	other := `{endpoint="churn",variant="challenger",generation="2",instance="r1"}`
	series := func(name, router, values string) string {
		return fmt.Sprintf("      - series: '%s%s'\n        values: '%s'\n", name, sel(router), values)
	}
	// 15 s samples. Each of two routers routes 10 req/s (150 per sample):
	// 20 req/s = 1200/min over 2 healthy instances = 600 per instance.
	// Router r3 joins later and still sees 1 instance; max() ignores it.
	twoRouters := series(MetricInvocations, "r1", "0+150x12") +
		series(MetricInvocations, "r2", "0+150x12") +
		series(MetricHealthyInstances, "r1", "2x12") +
		series(MetricHealthyInstances, "r2", "2x12") +
		series(MetricHealthyInstances, "r3", "1x12") +
		fmt.Sprintf("      - series: '%s%s'\n        values: '0+1500x12'\n", MetricInvocations, other)
	// An idle variant: the routers report it but never counted a request.
	idle := series(MetricHealthyInstances, "r1", "3x12") + series(MetricHealthyInstances, "r2", "3x12")
	// A variant with no healthy instance: no division by zero.
	none := series(MetricInvocations, "r1", "0+15x12") + series(MetricHealthyInstances, "r1", "0x12")
	// Scaled to zero, two routers holding 3 and 2 requests: 5, so the
	// autoscaler asks for ceil(5/600) = 1 instance.
	held := series(MetricHealthyInstances, "r1", "0x12") + series(MetricHealthyInstances, "r2", "0x12") +
		series(MetricHeldRequests, "r1", "3x12") + series(MetricHeldRequests, "r2", "2x12")
	q := strings.ReplaceAll(testScaling.Query(), "'", "''")
	test := func(input, want string) string {
		return "  - interval: 15s\n    input_series:\n" + input +
			"    promql_expr_test:\n      - expr: '" + q + "'\n        eval_time: 2m\n        exp_samples:\n" + want
	}
	doc := "tests:\n" +
		test(twoRouters, "          - labels: '{}'\n            value: 600\n") +
		test(idle, "          - labels: '{}'\n            value: 0\n") +
		test(none, "          - labels: '{}'\n            value: 60\n") +
		test(held, "          - labels: '{}'\n            value: 5\n") +
		// No router reports the variant at all: no sample, no action.
		"  - interval: 15s\n    input_series:\n" +
		fmt.Sprintf("      - series: 'up%s'\n        values: '1x12'\n", sel("r1")) +
		"    promql_expr_test:\n      - expr: '" + q + "'\n        eval_time: 2m\n        exp_samples: []\n"
	path := filepath.Join(t.TempDir(), "query_test.yml")
	if err := os.WriteFile(path, []byte(doc), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(promtool, "test", "rules", path).CombinedOutput()
	if err != nil {
		t.Fatalf("promtool test rules: %v\n%s\n--- test file:\n%s", err, out, doc)
	}
}
