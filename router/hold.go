package router

import (
	"context"
	"errors"
	"sync"
	"time"
)

// Scale from zero (issue 13): a request for a variant with no instance is
// held, not refused, while the control plane starts one. HoldQueue is the
// per-endpoint queue: bounded in length (Max) and in wait (MaxWait,
// SageMaker's invocation timeout); past either bound the caller answers
// SageMaker's ModelNotReadyException-style 429. Held requests are let go in
// arrival order as soon as an instance passes its check.

// Errors a held request ends with instead of being sent.
var (
	// ErrHoldFull: the queue already holds Max requests.
	ErrHoldFull = errors.New("hold queue full")
	// ErrHoldTimeout: no instance became ready within MaxWait.
	ErrHoldTimeout = errors.New("no instance became ready in time")
)

// HoldQueue holds requests until Release. The zero value is not usable;
// use NewHoldQueue.
type HoldQueue struct {
	max     int
	maxWait time.Duration

	mu      sync.Mutex
	cond    *sync.Cond
	waiters []*holdWaiter // arrival order
	// released numbers the requests Release let go; out is the next one
	// allowed to return, so held requests leave in arrival order.
	released, out uint64
}

type holdWaiter struct {
	ready chan struct{}
	order uint64 // set by Release
}

// NewHoldQueue returns a queue of at most max requests, each held at most
// maxWait.
func NewHoldQueue(max int, maxWait time.Duration) *HoldQueue {
	q := &HoldQueue{max: max, maxWait: maxWait}
	q.cond = sync.NewCond(&q.mu)
	return q
}

// Len is the number of requests held now (serai_router_held_requests).
func (q *HoldQueue) Len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.waiters)
}

// Hold blocks until Release lets this request go (nil, with how long it
// was held), MaxWait passes (ErrHoldTimeout), ctx ends (the client hung
// up: ctx.Err()), or at once when the queue is full (ErrHoldFull). first
// is true for the request that found the queue empty: the caller sends the
// wake signal then.
func (q *HoldQueue) Hold(ctx context.Context, first func()) (time.Duration, error) {
	start := time.Now()
	w := &holdWaiter{ready: make(chan struct{})}
	q.mu.Lock()
	if len(q.waiters) >= q.max {
		q.mu.Unlock()
		return 0, ErrHoldFull
	}
	q.waiters = append(q.waiters, w)
	wasEmpty := len(q.waiters) == 1
	q.mu.Unlock()
	if wasEmpty && first != nil {
		first()
	}
	timer := time.NewTimer(q.maxWait)
	defer timer.Stop()
	select {
	case <-w.ready:
		q.takeTurn(w)
		return time.Since(start), nil
	case <-timer.C:
		if q.leave(w) {
			return time.Since(start), ErrHoldTimeout
		}
	case <-ctx.Done():
		if q.leave(w) {
			return time.Since(start), ctx.Err()
		}
	}
	// Released at the same moment it gave up: it was let go, so it goes
	// (and must take its turn, or the ones after it would wait forever).
	<-w.ready
	q.takeTurn(w)
	return time.Since(start), nil
}

// takeTurn returns once every request released before w has returned.
func (q *HoldQueue) takeTurn(w *holdWaiter) {
	q.mu.Lock()
	for q.out != w.order {
		q.cond.Wait()
	}
	q.out++
	q.cond.Broadcast()
	q.mu.Unlock()
}

// leave removes w if still held; false when Release already took it.
func (q *HoldQueue) leave(w *holdWaiter) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	for i, x := range q.waiters {
		if x == w {
			q.waiters = append(q.waiters[:i], q.waiters[i+1:]...)
			return true
		}
	}
	return false
}

// Release lets every held request go, in arrival order, and returns how
// many. The router calls it when the variant gets a passing instance.
func (q *HoldQueue) Release() int {
	q.mu.Lock()
	ws := q.waiters
	q.waiters = nil
	for _, w := range ws {
		w.order = q.released
		q.released++
	}
	q.mu.Unlock()
	for _, w := range ws {
		close(w.ready)
	}
	return len(ws)
}
