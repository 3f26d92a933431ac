package router

import (
	"bytes"
	"io"
	"math"
	"net/http"
	"sync"
	"testing"
)

// TestWeightedSplitOverRealBackends sends 20,000 requests through the router
// to two real HTTP backends weighted 0.9/0.1 and checks the observed split
// within ±1.5 percentage points (about 4.7 standard deviations at p = 0.1,
// so a failure means a bug, not bad luck). Then a TargetVariant must win
// every time.
func TestWeightedSplitOverRealBackends(t *testing.T) {
	a, b := model(t, "a", nil), model(t, "b", nil)
	e := newEnv(t, Config{})
	e.rt.SetRoutes("demo", oneGen("demo", "a", 0.9, "b", 0.1))
	e.rt.SetInstances("demo", []Instance{inst("a1", addrOf(a), "a", 1), inst("b1", addrOf(b), "b", 1)})

	const total = 20000
	const workers = 8
	counts := map[string]int{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	url := e.srv.URL + "/endpoints/demo/invocations"
	send := func(n int, target string) {
		defer wg.Done()
		local := map[string]int{}
		for range n {
			req, _ := http.NewRequest(http.MethodPost, url, bytes.NewReader([]byte("x")))
			if target != "" {
				req.Header.Set("X-Amzn-SageMaker-Target-Variant", target)
			}
			resp, err := e.client.Do(req)
			if err != nil {
				t.Error(err)
				return
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			v := resp.Header.Get("X-Amzn-Invoked-Production-Variant")
			if resp.StatusCode != 200 || v != string(body) {
				t.Errorf("status %d, header %q, body %q", resp.StatusCode, v, body)
				return
			}
			local[v]++
		}
		mu.Lock()
		for k, v := range local {
			counts[k] += v
		}
		mu.Unlock()
	}
	for range workers {
		wg.Add(1)
		go send(total/workers, "")
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	share := float64(counts["b"]) / total
	t.Logf("a=%d b=%d: b share %.2f%%", counts["a"], counts["b"], 100*share)
	if counts["a"]+counts["b"] != total {
		t.Fatalf("counts %v do not add up to %d", counts, total)
	}
	if math.Abs(share-0.1) > 0.015 {
		t.Errorf("b got %.2f%% of traffic, want 10%% ± 1.5pp", 100*share)
	}

	clear(counts)
	for range workers {
		wg.Add(1)
		go send(250, "b")
	}
	wg.Wait()
	if counts["b"] != 250*workers {
		t.Errorf("TargetVariant b: %v", counts)
	}
}

// TestPickDistribution checks the alias tables and the generation ×
// variant product without HTTP, over many picks.
func TestPickDistribution(t *testing.T) {
	e := newEnv(t, Config{})
	r := &Routes{Version: 1, Endpoint: "demo", Generations: []Generation{
		{Generation: 3, Weight: 3, Variants: []Variant{{Name: "a", Weight: 0.8}, {Name: "b", Weight: 0.2}}},
		{Generation: 4, Weight: 1, Variants: []Variant{{Name: "a", Weight: 1}, {Name: "z", Weight: 0}}},
	}}
	if err := r.Validate(); err != nil {
		t.Fatal(err)
	}
	e.rt.SetRoutes("demo", r)
	e.rt.SetInstances("demo", []Instance{
		inst("a3", "127.0.0.1:1", "a", 3), inst("a3b", "127.0.0.1:2", "a", 3),
		inst("b3", "127.0.0.1:3", "b", 3),
		inst("a4", "127.0.0.1:4", "a", 4),
		inst("z4", "127.0.0.1:5", "z", 4),
	})
	ep := e.rt.table.Load().endpoints["demo"]
	const n = 400000
	got := map[[2]any]int{}
	perInstance := map[string]int{}
	for range n {
		s, in, perr := ep.choose("")
		if perr != pickOK {
			t.Fatal(perr)
		}
		got[[2]any{s.generation, s.variant}]++
		perInstance[in.id]++
	}
	want := map[[2]any]float64{{3, "a"}: 0.6, {3, "b"}: 0.15, {4, "a"}: 0.25}
	for k, w := range want {
		if f := float64(got[k]) / n; math.Abs(f-w) > 0.005 {
			t.Errorf("%v: %.4f, want %.4f", k, f, w)
		}
	}
	if got[[2]any{4, "z"}] != 0 {
		t.Errorf("weight-0 variant z was picked %d times", got[[2]any{4, "z"}])
	}
	// Two instances of (3, a) with nothing in flight split evenly.
	if d := math.Abs(float64(perInstance["a3"]-perInstance["a3b"])) / float64(got[[2]any{3, "a"}]); d > 0.02 {
		t.Errorf("instances of one slot split unevenly: %v", perInstance)
	}

	// Targeting a: generation 3 vs 4 by generation weight (3:1).
	g3 := 0
	for range n {
		s, _, _ := ep.choose("a")
		if s.variant != "a" {
			t.Fatal("target ignored")
		}
		if s.generation == 3 {
			g3++
		}
	}
	if f := float64(g3) / n; math.Abs(f-0.75) > 0.005 {
		t.Errorf("target a: generation 3 share %.4f, want 0.75", f)
	}
	// z has weight 0 but a target still reaches it.
	if s, _, perr := ep.choose("z"); perr != pickOK || s.variant != "z" {
		t.Errorf("target z: %v", perr)
	}

	// Without healthy instances, b's share goes to the others.
	e.rt.SetInstances("demo", []Instance{inst("a3", "127.0.0.1:1", "a", 3), inst("a4", "127.0.0.1:4", "a", 4)})
	ep = e.rt.table.Load().endpoints["demo"]
	g3 = 0
	for range n {
		s, _, _ := ep.choose("")
		if s.variant == "b" {
			t.Fatal("variant without instances picked")
		}
		if s.generation == 3 {
			g3++
		}
	}
	if f := float64(g3) / n; math.Abs(f-0.6/0.85) > 0.005 {
		t.Errorf("after b lost its instances, (3,a) share %.4f, want %.4f", f, 0.6/0.85)
	}
	if _, _, perr := ep.choose("b"); perr != pickNoInstance {
		t.Errorf("target b without instances: %v, want no instance", perr)
	}
}

func TestLeastOutstandingPrefersIdleInstance(t *testing.T) {
	s := &slot{insts: []*instance{{id: "busy"}, {id: "idle"}}}
	s.insts[0].inflight.Store(10)
	for range 1000 {
		if s.pickInstance().id != "idle" {
			t.Fatal("power of two choices picked the busier of two instances")
		}
	}
}

func TestAliasExact(t *testing.T) {
	// Walk every column and both coin outcomes: probabilities must be
	// the weights exactly (up to 2^-32).
	for _, w := range [][]float64{{1}, {1, 1}, {0.9, 0.1}, {3, 0, 1}, {0, 0}, {1, 2, 3, 4, 5}} {
		a := newAlias(w)
		var sum float64
		for _, x := range w {
			sum += x
		}
		p := make([]float64, len(w))
		for col := range w {
			k := 1.0
			if !a.keepAll[col] {
				k = float64(a.thresh[col]) / (1 << 32)
			}
			p[col] += k / float64(len(w))
			p[a.alias[col]] += (1 - k) / float64(len(w))
		}
		for i := range w {
			want := 1 / float64(len(w))
			if sum > 0 {
				want = w[i] / sum
			}
			if math.Abs(p[i]-want) > 1e-9 {
				t.Errorf("weights %v: p[%d]=%v, want %v", w, i, p[i], want)
			}
		}
	}
}
