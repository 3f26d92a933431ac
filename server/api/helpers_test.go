package api

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/seraihq/serai/server/records"
	"github.com/seraihq/serai/server/smapi"
)

// clock is a settable test clock.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// fakeObserver answers with fixed observations.
type fakeObserver struct {
	mu  sync.Mutex
	obs map[string]Observation
	err error
}

func (f *fakeObserver) Observe(_ context.Context, endpoint string) (Observation, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.obs[endpoint], f.err
}

type env struct {
	t     testing.TB
	h     *Handler
	kv    records.KV
	store records.Store
	clock *clock
	obs   *fakeObserver
}

func newEnv(t testing.TB) *env {
	return newEnvKV(t, records.NewMemKV())
}

func newEnvKV(t testing.TB, kv records.KV) *env {
	t.Helper()
	e := &env{t: t, kv: kv, store: records.Store{KV: kv}, clock: newClock(), obs: &fakeObserver{obs: map[string]Observation{}}}
	h, err := New(Config{Store: e.store, Region: "eu-west-1", Account: "123456789012", Observer: e.obs, Now: e.clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	e.h = h
	return e
}

// result is one answer.
type result struct {
	status int
	body   []byte
	header http.Header
}

func (r result) errType() string {
	var e smapi.Error
	_ = json.Unmarshal(r.body, &e)
	return e.Type
}

func (r result) message() string {
	var e smapi.Error
	_ = json.Unmarshal(r.body, &e)
	return e.Message
}

func (r result) decode(t testing.TB, v any) {
	t.Helper()
	if err := json.Unmarshal(r.body, v); err != nil {
		t.Fatalf("answer %s: %v", r.body, err)
	}
}

// call posts one operation; body is marshalled unless it is a string.
func (e *env) call(op string, body any) result {
	var b []byte
	switch v := body.(type) {
	case string:
		b = []byte(v)
	default:
		var err error
		if b, err = json.Marshal(v); err != nil {
			e.t.Fatal(err)
		}
	}
	req := httptest.NewRequest(http.MethodPost, "/", bytes.NewReader(b))
	req.Header.Set("Content-Type", ContentType)
	req.Header.Set("X-Amz-Target", TargetPrefix+op)
	w := httptest.NewRecorder()
	e.h.ServeHTTP(w, req)
	return result{status: w.Code, body: w.Body.Bytes(), header: w.Header()}
}

// ok calls and requires 200.
func (e *env) ok(op string, body any) result {
	e.t.Helper()
	r := e.call(op, body)
	if r.status != http.StatusOK {
		e.t.Fatalf("%s: status %d %s", op, r.status, r.body)
	}
	return r
}

// fails calls and requires an error of code whose message contains msg.
func (e *env) fails(op string, body any, status int, code, msg string) result {
	e.t.Helper()
	r := e.call(op, body)
	if r.status != status || r.errType() != code || !strings.Contains(r.message(), msg) {
		e.t.Fatalf("%s: got %d %s %q; want %d %s containing %q", op, r.status, r.errType(), r.message(), status, code, msg)
	}
	if r.header.Get("X-Amzn-Errortype") != code {
		e.t.Fatalf("%s: X-Amzn-ErrorType %q, want %q", op, r.header.Get("X-Amzn-Errortype"), code)
	}
	return r
}

// snapshot is every key and index of the store, to prove a refused
// request wrote nothing.
func (e *env) snapshot() map[string]uint64 {
	e.t.Helper()
	pairs, err := e.kv.List(context.Background(), "serai/")
	if err != nil {
		e.t.Fatal(err)
	}
	out := map[string]uint64{}
	for _, p := range pairs {
		out[p.Key] = p.Index
	}
	return out
}

func (e *env) unchanged(before map[string]uint64, what string) {
	e.t.Helper()
	after := e.snapshot()
	if len(after) != len(before) {
		e.t.Fatalf("%s wrote: keys %v -> %v", what, before, after)
	}
	for k, v := range before {
		if after[k] != v {
			e.t.Fatalf("%s wrote %s (index %d -> %d)", what, k, v, after[k])
		}
	}
}

func ptr[T any](v T) *T { return &v }

func model(name string) smapi.CreateModelInput {
	return smapi.CreateModelInput{
		ModelName:        name,
		PrimaryContainer: &smapi.ContainerDefinition{Image: "registry.local/" + strings.ToLower(name) + ":1"},
	}
}

func config(name string, variants ...smapi.ProductionVariant) smapi.CreateEndpointConfigInput {
	return smapi.CreateEndpointConfigInput{EndpointConfigName: name, ProductionVariants: variants}
}

func variant(name, model string, count int, weight float64) smapi.ProductionVariant {
	return smapi.ProductionVariant{VariantName: name, ModelName: model, InstanceType: "ml.m5.large", InitialInstanceCount: ptr(count), InitialVariantWeight: ptr(weight)}
}

// seed creates model m1, m2 and configs c1 (m1) and c2 (m1 + m2).
func (e *env) seed() {
	e.t.Helper()
	e.ok("CreateModel", model("m1"))
	e.ok("CreateModel", model("m2"))
	e.ok("CreateEndpointConfig", config("c1", variant("a", "m1", 2, 1)))
	e.ok("CreateEndpointConfig", config("c2", variant("a", "m1", 1, 3), variant("b", "m2", 1, 1)))
}

// serve does what the reconciler does when an operation completes: the
// endpoint runs config cfg as generation gen, InService, no operation.
func (e *env) serve(name, cfg string, gen int) {
	e.t.Helper()
	var c records.EndpointConfig
	if _, err := e.store.Get(context.Background(), records.KindEndpointConfig, cfg, &c); err != nil {
		e.t.Fatal(err)
	}
	_, err := records.Update(context.Background(), e.store, records.KindEndpoint, name, func(ep *records.Endpoint) error {
		g := records.Generation{Generation: gen, ConfigName: cfg, Weight: 1}
		for _, v := range c.Spec.ProductionVariants {
			w := 1.0
			if v.InitialVariantWeight != nil {
				w = *v.InitialVariantWeight
			}
			g.Variants = append(g.Variants, records.VariantWeight{Name: v.VariantName, Weight: w})
		}
		ep.Generations = []records.Generation{g}
		ep.ConfigName = cfg
		ep.NextGeneration = gen + 1
		ep.Op = nil
		ep.SetStatus(smapi.StatusInService, "", e.clock.Now())
		return nil
	})
	if err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) endpoint(name string) *records.Endpoint {
	e.t.Helper()
	var ep records.Endpoint
	if _, err := e.store.Get(context.Background(), records.KindEndpoint, name, &ep); err != nil {
		e.t.Fatal(err)
	}
	return &ep
}
