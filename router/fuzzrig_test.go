package router

import (
	"fmt"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
)

// fuzzRig is one router (with its front server and client) and one
// scripted model for a whole fuzzing process; each input gets its own
// endpoint, instance and connection pool, and its own script.
//
// A router and a model per input opened two listening ports per input,
// and the TIME_WAIT sockets their closes leave hold a port for a minute:
// at a few hundred inputs a second the fuzzer ran out of ephemeral ports
// within half a minute ("listen tcp 127.0.0.1:0: bind: address already in
// use"), and the 10 s runs of scripts/test came within reach of it as the
// cached corpus grew. With listeners that live as long as the process,
// a closed connection's TIME_WAIT sits on a port already taken.
//
// Inputs do not see each other: an input ends by removing its endpoint
// (which closes its pooled connections) and waiting until the model has
// closed every connection, so the next starts with none open and its
// requests counted from 1. A failing input replays alone in a new process
// and meets the same state.
type fuzzRig struct {
	env   *testEnv
	model *scriptedModel
	serve atomic.Pointer[func(int, net.Conn, *http.Request) bool]
	n     int

	logMu sync.Mutex
	logTo *testing.T // the current input's, for the router's log
}

func newFuzzRig(f *testing.F, cfg Config) *fuzzRig {
	r := &fuzzRig{}
	cfg.Logger = hclog.New(&hclog.LoggerOptions{Name: "router", Level: hclog.Warn, Output: rigLog{r}})
	r.model = newScriptedModel(f, func(n int, c net.Conn, req *http.Request) bool {
		return (*r.serve.Load())(n, c, req)
	})
	r.env = newEnv(f, cfg)
	return r
}

// input readies a fresh endpoint whose one instance is the model running
// serve, with the given invocation timeout, and returns its name.
func (r *fuzzRig) input(t *testing.T, timeout time.Duration, serve func(int, net.Conn, *http.Request) bool) string {
	r.n++
	name := fmt.Sprintf("fuzz%d", r.n)
	r.logMu.Lock()
	r.logTo = t
	r.logMu.Unlock()
	r.model.reqs.Store(0)
	r.model.mu.Lock()
	r.model.seen = nil
	r.model.mu.Unlock()
	r.serve.Store(&serve)

	routeTo(r.env.rt, name, r.model.addr, timeout)
	t.Cleanup(func() {
		r.env.rt.SetRoutes(name, nil)
		// Every exchange of the input has ended by now, so each model
		// connection is closed by the model (after its answer) or by
		// the router (pooled ones, closed with the endpoint) at once.
		for deadline := time.Now().Add(5 * time.Second); r.model.openConns() != 0; time.Sleep(time.Millisecond) {
			if time.Now().After(deadline) {
				t.Errorf("%d model connections still open 5s after the input's endpoint was removed", r.model.openConns())
				break
			}
		}
		r.logMu.Lock()
		r.logTo = nil
		r.logMu.Unlock()
	})
	return name
}

type rigLog struct{ r *fuzzRig }

func (w rigLog) Write(p []byte) (int, error) {
	w.r.logMu.Lock()
	defer w.r.logMu.Unlock()
	if w.r.logTo != nil {
		w.r.logTo.Log(string(p))
	}
	return len(p), nil
}
