package router

import (
	"context"
	"errors"
	"sync"
	"time"
)

// Scale from zero (issue 13): a request for a variant with no instance is
// held, not refused, while the control plane starts one. HoldQueue is the
// per-endpoint queue, bounded in length; each Hold is bounded in wait by
// its caller (SageMaker's invocation timeout). Past either bound the
// caller answers ModelNotReadyException (429). Held requests are let go
// in arrival order when an instance passes its check, and take turns
// choosing an instance in that order (Turn.Done), so the first request
// held is the first one sent.

// Errors a held request ends with instead of being sent.
var (
	// ErrHoldFull: the queue already holds its maximum.
	ErrHoldFull = errors.New("hold queue full")
	// ErrHoldTimeout: no instance became ready within the wait.
	ErrHoldTimeout = errors.New("no instance became ready in time")
)

// HoldQueue holds requests until Release. Use NewHoldQueue.
type HoldQueue struct {
	max int

	mu      sync.Mutex
	cond    *sync.Cond
	waiters []*holdWaiter // arrival order
	// released numbers the requests Release let go; out is the number of
	// the one whose turn it is.
	released, out uint64
	// epoch counts Releases, so a request that looked at the routing table
	// before a Release it then missed is let go at once (HoldSince).
	epoch uint64
}

type holdWaiter struct {
	ready chan struct{}
	order uint64 // set by Release
}

// NewHoldQueue returns a queue of at most max requests.
func NewHoldQueue(max int) *HoldQueue {
	q := &HoldQueue{max: max}
	q.cond = sync.NewCond(&q.mu)
	return q
}

// Len is the number of requests held now.
func (q *HoldQueue) Len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.waiters)
}

// Turn is a released request's place in line. Its holder chooses an
// instance and then calls Done, which lets the next released request go;
// Done is idempotent, so a caller can also defer it for early returns.
type Turn struct {
	q    *HoldQueue
	once sync.Once
}

// Done ends this request's turn.
func (t *Turn) Done() {
	if t == nil {
		return
	}
	t.once.Do(func() {
		t.q.mu.Lock()
		t.q.out++
		t.q.cond.Broadcast()
		t.q.mu.Unlock()
	})
}

// Epoch is the number of Releases so far.
func (q *HoldQueue) Epoch() uint64 {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.epoch
}

// Hold is HoldSince the current epoch.
func (q *HoldQueue) Hold(ctx context.Context, wait time.Duration) (*Turn, time.Duration, error) {
	return q.HoldSince(ctx, wait, q.Epoch())
}

// HoldSince blocks until Release lets this request go and every request
// released before it has called Done (a Turn, and how long it was held),
// until wait passes (ErrHoldTimeout), until ctx ends (the client hung up:
// ctx.Err()), or returns at once when the queue is full (ErrHoldFull).
// When a Release happened after epoch (Epoch, read before the caller
// looked for an instance), the request is let go at once, taking its turn
// after those already released: the change it missed may have brought
// the instance it needs.
func (q *HoldQueue) HoldSince(ctx context.Context, wait time.Duration, epoch uint64) (*Turn, time.Duration, error) {
	start := time.Now()
	w := &holdWaiter{ready: make(chan struct{})}
	q.mu.Lock()
	if len(q.waiters) >= q.max {
		q.mu.Unlock()
		return nil, 0, ErrHoldFull
	}
	if q.epoch != epoch {
		w.order = q.released
		q.released++
		q.mu.Unlock()
		return q.takeTurn(w), 0, nil
	}
	q.waiters = append(q.waiters, w)
	q.mu.Unlock()
	timer := time.NewTimer(wait)
	defer timer.Stop()
	select {
	case <-w.ready:
		return q.takeTurn(w), time.Since(start), nil
	case <-timer.C:
		if q.leave(w) {
			return nil, time.Since(start), ErrHoldTimeout
		}
	case <-ctx.Done():
		if q.leave(w) {
			return nil, time.Since(start), ctx.Err()
		}
	}
	// Released at the same moment it gave up: it was let go, so it goes
	// (and takes its turn, or the ones after it would wait forever).
	<-w.ready
	return q.takeTurn(w), time.Since(start), nil
}

// takeTurn waits until every request released before w has called Done.
func (q *HoldQueue) takeTurn(w *holdWaiter) *Turn {
	q.mu.Lock()
	for q.out != w.order {
		q.cond.Wait()
	}
	q.mu.Unlock()
	return &Turn{q: q}
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
// many. The router calls it when the endpoint's routing changes so that a
// held request may now find an instance.
func (q *HoldQueue) Release() int {
	q.mu.Lock()
	q.epoch++
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
