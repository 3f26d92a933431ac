package router

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
)

func TestInvokePassesRequestAndAnswerThrough(t *testing.T) {
	var got struct {
		path, ct, accept, attrs, id, body string
	}
	m := model(t, "a", func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		got.path, got.ct, got.accept = r.URL.Path, r.Header.Get("Content-Type"), r.Header.Get("Accept")
		got.attrs, got.id, got.body = r.Header.Get("X-Amzn-SageMaker-Custom-Attributes"), r.Header.Get("X-Amzn-SageMaker-Inference-Id"), string(b)
		w.Header().Set("Content-Type", "application/x-answer")
		w.Header().Set("X-Amzn-SageMaker-Custom-Attributes", "trace=1")
		w.Write([]byte(`{"score":0.7}`))
	})
	e := newEnv(t, Config{})
	e.rt.SetRoutes("demo", oneGen("demo", "a", 1))
	e.rt.SetInstances("demo", []Instance{inst("i1", addrOf(m), "a", 1)})

	resp, body := e.invoke("demo", []byte("1,2,3"),
		"Content-Type", "text/csv", "Accept", "application/json",
		"X-Amzn-SageMaker-Custom-Attributes", "c000b4f9-df62-4c85-a0bf-7c525f9104a4",
		"X-Amzn-SageMaker-Inference-Id", "req-42",
		"Authorization", "AWS4-HMAC-SHA256 Credential=AKID/20240101/us-east-1/sagemaker/aws4_request, SignedHeaders=host, Signature=abc",
		"X-Amz-Date", "20240101T000000Z")
	mustStatus(t, resp, body, 200)
	if string(body) != `{"score":0.7}` {
		t.Errorf("body %q", body)
	}
	if v := header(resp, "X-Amzn-Invoked-Production-Variant"); v != "a" {
		t.Errorf("invoked variant %q", v)
	}
	if v := header(resp, "Content-Type"); v != "application/x-answer" {
		t.Errorf("content type %q", v)
	}
	if v := header(resp, "X-Amzn-SageMaker-Custom-Attributes"); v != "trace=1" {
		t.Errorf("custom attributes answer %q", v)
	}
	want := struct{ path, ct, accept, attrs, id, body string }{"/invocations", "text/csv", "application/json", "c000b4f9-df62-4c85-a0bf-7c525f9104a4", "req-42", "1,2,3"}
	if got != want {
		t.Errorf("model saw %+v, want %+v", got, want)
	}
}

func TestInvokeEmptyBodyAndNoContentType(t *testing.T) {
	m := model(t, "a", func(w http.ResponseWriter, r *http.Request) {
		w.Header()["Content-Type"] = nil
		w.WriteHeader(200)
	})
	e := newEnv(t, Config{})
	e.rt.SetRoutes("demo", oneGen("demo", "a", 1))
	e.rt.SetInstances("demo", []Instance{inst("i1", addrOf(m), "a", 1)})
	resp, body := e.invoke("demo", nil)
	mustStatus(t, resp, body, 200)
	if len(body) != 0 || resp.Header.Get("Content-Type") != "" {
		t.Errorf("body %q content type %q", body, resp.Header.Get("Content-Type"))
	}
}

func decodeErr(t *testing.T, resp *http.Response, body []byte) ErrorBody {
	t.Helper()
	var eb ErrorBody
	if err := json.Unmarshal(body, &eb); err != nil {
		t.Fatalf("error body is not JSON: %v: %s", err, body)
	}
	if h := resp.Header.Get("X-Amzn-ErrorType"); h != eb.Type {
		t.Errorf("X-Amzn-ErrorType %q, body __type %q", h, eb.Type)
	}
	return eb
}

func TestUnknownEndpointIsValidationError(t *testing.T) {
	e := newEnv(t, Config{})
	resp, body := e.invoke("nope", []byte("x"))
	mustStatus(t, resp, body, 400)
	eb := decodeErr(t, resp, body)
	if eb.Type != CodeValidation || eb.Message != "Endpoint nope of account serai not found." {
		t.Errorf("got %+v", eb)
	}
}

func TestTargetVariant(t *testing.T) {
	a, b := model(t, "a", nil), model(t, "b", nil)
	e := newEnv(t, Config{})
	// b has weight 0: only a target reaches it.
	e.rt.SetRoutes("demo", oneGen("demo", "a", 1, "b", 0, "c", 1))
	e.rt.SetInstances("demo", []Instance{inst("a1", addrOf(a), "a", 1), inst("b1", addrOf(b), "b", 1)})

	for range 20 {
		resp, body := e.invoke("demo", []byte("x"))
		mustStatus(t, resp, body, 200)
		if string(body) != "a" {
			t.Fatalf("untargeted request reached %q (b has weight 0, c no instance)", body)
		}
	}
	for range 20 {
		resp, body := e.invoke("demo", []byte("x"), "X-Amzn-SageMaker-Target-Variant", "b")
		mustStatus(t, resp, body, 200)
		if string(body) != "b" || header(resp, "X-Amzn-Invoked-Production-Variant") != "b" {
			t.Fatalf("targeted request reached %q", body)
		}
	}
	resp, body := e.invoke("demo", []byte("x"), "X-Amzn-SageMaker-Target-Variant", "zzz")
	mustStatus(t, resp, body, 400)
	if eb := decodeErr(t, resp, body); eb.Type != CodeValidation || !strings.Contains(eb.Message, "zzz") {
		t.Errorf("unknown variant: %+v", eb)
	}
	// c is in the table but has no instance: a target does not fall back.
	resp, body = e.invoke("demo", []byte("x"), "X-Amzn-SageMaker-Target-Variant", "c")
	mustStatus(t, resp, body, 503)
	if eb := decodeErr(t, resp, body); eb.Type != CodeServiceUnavailable {
		t.Errorf("variant without instances: %+v", eb)
	}
}

func TestNoHealthyInstanceIs503(t *testing.T) {
	e := newEnv(t, Config{})
	e.rt.SetRoutes("demo", oneGen("demo", "a", 1))
	resp, body := e.invoke("demo", []byte("x"))
	mustStatus(t, resp, body, 503)
	if eb := decodeErr(t, resp, body); eb.Type != CodeServiceUnavailable || !strings.Contains(eb.Message, "demo") {
		t.Errorf("got %+v", eb)
	}
}

func TestMalformedPaths(t *testing.T) {
	e := newEnv(t, Config{})
	e.rt.SetRoutes("demo", oneGen("demo", "a", 1))
	cases := []struct {
		method, path string
		status       int
		code         string
	}{
		{"POST", "/endpoints/", 404, CodeUnknownOperation},
		{"POST", "/endpoints/demo", 404, CodeUnknownOperation},
		{"POST", "/endpoints/demo/", 404, CodeUnknownOperation},
		{"POST", "/endpoints/demo/invocations/extra", 404, CodeUnknownOperation},
		{"POST", "/endpoints//invocations", 400, CodeValidation},
		{"POST", "/endpoints/bad_name!/invocations", 400, CodeValidation},
		{"POST", "/endpoints/" + strings.Repeat("a", 5000) + "/invocations", 400, CodeValidation},
		{"POST", "/endpoints/%2e%2e/invocations", 400, CodeValidation},
		{"GET", "/endpoints/demo/invocations", 405, CodeUnknownOperation},
		{"POST", "/invocations", 404, CodeUnknownOperation},
		{"GET", "/", 404, CodeUnknownOperation},
	}
	for _, c := range cases {
		req, _ := http.NewRequest(c.method, e.srv.URL+c.path, strings.NewReader("x"))
		resp, err := e.client.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", c.method, c.path, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != c.status {
			t.Errorf("%s %.40s: status %d, want %d (%s)", c.method, c.path, resp.StatusCode, c.status, body)
			continue
		}
		if eb := decodeErr(t, resp, body); eb.Type != c.code {
			t.Errorf("%s %.40s: code %q, want %q", c.method, c.path, eb.Type, c.code)
		}
	}
	// The router's own health.
	resp, err := e.client.Get(e.srv.URL + "/ping")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("/ping: %v %v", resp, err)
	}
	resp.Body.Close()
}

func TestBadHeaderValuesRefused(t *testing.T) {
	m := model(t, "a", nil)
	e := newEnv(t, Config{})
	e.rt.SetRoutes("demo", oneGen("demo", "a", 1))
	e.rt.SetInstances("demo", []Instance{inst("i1", addrOf(m), "a", 1)})
	resp, body := e.invoke("demo", []byte("x"), "X-Amzn-SageMaker-Custom-Attributes", strings.Repeat("a", 1025))
	mustStatus(t, resp, body, 400)
	resp, body = e.invoke("demo", []byte("x"), "X-Amzn-SageMaker-Inference-Id", strings.Repeat("a", 65))
	mustStatus(t, resp, body, 400)
}

func TestMetricsExposeVariantSeries(t *testing.T) {
	a := model(t, "a", nil)
	bad := model(t, "b", func(w http.ResponseWriter, r *http.Request) { http.Error(w, "nope", 400) })
	e := newEnv(t, Config{})
	e.rt.SetRoutes("demo", oneGen("demo", "a", 1, "b", 0))
	e.rt.SetInstances("demo", []Instance{inst("a1", addrOf(a), "a", 1), inst("b1", addrOf(bad), "b", 1)})
	e.invoke("demo", []byte("x"))
	e.invoke("demo", []byte("x"), "X-Amzn-SageMaker-Target-Variant", "b")
	e.invoke("unknown-ep", []byte("x"))
	resp, err := e.client.Get(e.srv.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{
		`serai_router_invocations_total{endpoint="demo",generation="1",variant="a"} 1`,
		`serai_router_invocations_total{endpoint="demo",generation="1",variant="b"} 1`,
		`serai_router_invocation_4xx_errors_total{endpoint="demo",generation="1",variant="b"} 1`,
		`serai_router_model_latency_seconds_count{endpoint="demo",generation="1",variant="a"} 1`,
		`serai_router_overhead_latency_seconds_count{endpoint="demo",generation="1",variant="a"} 1`,
		`serai_router_in_flight_requests{endpoint="demo",generation="1",variant="a"} 0`,
		`serai_router_healthy_instances{endpoint="demo",generation="1",variant="a"} 1`,
		`serai_router_rejected_requests_total{reason="unknown_endpoint"} 1`,
		`serai_router_discovery_up 1`,
		`serai_router_discovery_staleness_seconds 0`,
	} {
		if !bytes.Contains(b, []byte(want)) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	if bytes.Contains(b, []byte("unknown-ep")) {
		t.Error("request input leaked into a label value")
	}

	// Removing the endpoint removes its series.
	e.rt.SetRoutes("demo", nil)
	resp, _ = e.client.Get(e.srv.URL + "/metrics")
	b, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if bytes.Contains(b, []byte(`endpoint="demo"`)) {
		t.Error("series of a removed endpoint remain")
	}
}
