package router

import (
	"net/http"
	"testing"
	"time"
)

// TestJanitorSweepsUnroutedInstances: an instance that takes no untargeted
// traffic (weight 0, reached only through TargetVariant) still has its idle
// connections closed after IdleConnTimeout, like every other instance.
func TestJanitorSweepsUnroutedInstances(t *testing.T) {
	a, b := model(t, "a", nil), model(t, "b", nil)
	e := newEnv(t, Config{IdleConnTimeout: 200 * time.Millisecond})
	e.rt.SetRoutes("demo", oneGen("demo", "a", 1, "b", 0))
	e.rt.SetInstances("demo", []Instance{inst("a", addrOf(a), "a", 1), inst("b", addrOf(b), "b", 1)})
	resp, body := e.invoke("demo", []byte("x"), "X-Amzn-SageMaker-Target-Variant", "b")
	mustStatus(t, resp, body, http.StatusOK)

	idleOf := func(id string) int {
		e.rt.mu.Lock()
		defer e.rt.mu.Unlock()
		for _, in := range e.rt.live["demo"] {
			if in.id == id {
				in.pool.mu.Lock()
				defer in.pool.mu.Unlock()
				return len(in.pool.idle)
			}
		}
		return -1
	}
	if n := idleOf("b"); n != 1 {
		t.Fatalf("weight-0 instance has %d idle connections after a targeted request, want 1", n)
	}
	waitFor(t, 3*time.Second, "idle connection of the weight-0 instance to be swept", func() bool { return idleOf("b") == 0 })
}
