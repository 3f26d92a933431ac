package router

import (
	"context"
	"errors"
	"net/http"
	"time"
)

// Scale from zero, the request side. A variant the routing table marks
// scale_from_zero may have no instance. A request that finds none for it
// is held in its endpoint's HoldQueue (bounded in length by
// Config.HoldQueueLength, in wait by the endpoint's model timeout) while
// the router writes the variant's wake key to Consul; the leading serai
// server scales the variant's group from 0 to 1. Every routing change of
// the endpoint releases the queue; released requests look for an instance
// again in arrival order and are held again if there is still none. Past
// the bounds the client gets ModelNotReadyException (429).

// CodeModelNotReady is SageMaker's error for a model that cannot take the
// request yet (429).
const CodeModelNotReady = "ModelNotReadyException"

// DefaultHoldQueueLength bounds the requests held per endpoint.
const DefaultHoldQueueLength = 256

// wakeWriteTimeout bounds one wake-key write to Consul.
const wakeWriteTimeout = 10 * time.Second

// Outcomes of a hold (serai_router_hold_outcomes_total).
const (
	holdSent       = "sent"
	holdFull       = "full"
	holdTimeout    = "timeout"
	holdGone       = "gone"
	holdNoInstance = "no_instance"
	holdDraining   = "draining"
)

// wakeFor is what a request for target (or "" for any variant) that found
// no instance waits for: the sleeping scale-from-zero slots.
func (e *endpoint) wakeFor(target string) []*slot {
	if e.wake == nil {
		return nil
	}
	return e.wake[target]
}

// signalWake asks the control plane to start the slots' variants; cheap
// when the signal was sent recently.
func (rt *Router) signalWake(endpoint string, slots []*slot) {
	for _, s := range slots {
		rt.cfg.Waker.Signal(endpoint, s.generation, s.variant, wakeWriteTimeout, func(err error) {
			rt.log.Warn("could not write the wake signal; the next held request retries", "endpoint", endpoint, "variant", s.variant, "generation", s.generation, "error", err)
		})
	}
}

// holdQueue is endpoint's queue, made on first use.
func (rt *Router) holdQueue(endpoint string) *HoldQueue {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	q := rt.holds[endpoint]
	if q == nil {
		q = NewHoldQueue(rt.cfg.HoldQueueLength)
		rt.holds[endpoint] = q
	}
	return q
}

// releaseHeldLocked lets the endpoint's held requests look again; called
// under rt.mu after every rebuild of the endpoint.
func (rt *Router) releaseHeldLocked(endpoint string, removed bool) {
	q := rt.holds[endpoint]
	if q == nil {
		return
	}
	q.Release()
	if removed {
		delete(rt.holds, endpoint)
	}
}

// holdForInstance holds a request that found no instance for a sleeping
// variant until one can take it. It returns the endpoint as it is then
// (the one passed in when it is gone), the chosen slot and instance when
// the outcome is holdSent, and the pick error of the last look otherwise
// (pickUnknownVariant when the target left the routing table).
func (rt *Router) holdForInstance(ctx context.Context, e *endpoint, target string, start time.Time) (*endpoint, *slot, *instance, pickError, string) {
	q := rt.holdQueue(e.name)
	deadline := start.Add(e.timeout)
	var turn *Turn
	defer turn.Done()
	held := false
	for {
		epoch := q.Epoch()
		cur := rt.table.Load().endpoints[e.name]
		if cur == nil {
			return e, nil, nil, pickNoInstance, holdNoInstance
		}
		e = cur
		s, in, perr := e.choose(target)
		turn.Done()
		if perr == pickOK {
			if held {
				s.vm.coldStart.Observe(time.Since(start).Seconds())
			}
			return e, s, in, pickOK, holdSent
		}
		wake := e.wakeFor(target)
		if perr != pickNoInstance || len(wake) == 0 {
			return e, nil, nil, perr, holdNoInstance
		}
		if rt.draining.Load() {
			return e, nil, nil, perr, holdDraining
		}
		rt.signalWake(e.name, wake)
		wait := time.Until(deadline)
		if wait <= 0 {
			return e, nil, nil, perr, holdTimeout
		}
		for _, s := range wake {
			s.vm.held.Inc()
		}
		var err error
		turn, _, err = q.HoldSince(ctx, wait, epoch)
		for _, s := range wake {
			s.vm.held.Dec()
		}
		held = true
		switch {
		case errors.Is(err, ErrHoldFull):
			return e, nil, nil, perr, holdFull
		case errors.Is(err, ErrHoldTimeout):
			return e, nil, nil, perr, holdTimeout
		case err != nil:
			return e, nil, nil, perr, holdGone
		}
	}
}

// draining answers a held request when the router shuts down.
func draining(w http.ResponseWriter, e *endpoint) {
	e.em.errors5xx.Inc()
	writeError(w, http.StatusServiceUnavailable, CodeServiceUnavailable, "The router is shutting down; retry on another router.")
}

// notReady answers a request whose hold ran past its bounds.
func notReady(w http.ResponseWriter, e *endpoint, target, outcome string) {
	what := "Endpoint " + e.name
	if target != "" {
		what = "Variant " + target + " of endpoint " + e.name
	}
	msg := what + " is scaling from zero and did not get a ready instance within " + e.timeout.String() + "; retry later."
	if outcome == holdFull {
		msg = what + " is scaling from zero and already holds the most requests it can; retry later."
	}
	e.em.errors4xx.Inc()
	writeError(w, http.StatusTooManyRequests, CodeModelNotReady, msg)
}
