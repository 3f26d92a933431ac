package router

import (
	"errors"
	"time"
)

// Rescue: a request sent to an instance whose link or host has just died
// waits, unanswered, until the model timeout (SageMaker's default is a
// minute), although discovery drops the instance within seconds. When an
// instance leaves the routing table, each request still waiting on it for
// the head of its answer is checked against the kernel's count of the
// bytes the instance acknowledged on that connection (TCP_INFO
// tcpi_bytes_acked). If it acknowledged none of the request, the request
// is taken back and sent, once, to another instance, as a request whose
// connection failed is. One that the instance acknowledged, even in part,
// stays: the model may be running it. The check waits until the request
// has been out for ackGrace: a live peer acknowledges within a round trip
// plus its delayed-ACK timer (at most 200 ms on Linux), so an instance
// leaving in good health (a scale-in, an update) keeps its requests.
// Not acknowledged does not strictly mean not received (the instance's
// ACK may be what was lost); the instance has left the table, so an
// answer from it could not be relied on either.

const (
	phaseAnswered int32 = iota // no request waits for a head on the connection
	phaseAwaiting              // a request waits for its answer's head
	phaseRescued               // taken back by rescue
)

// defaultAckGrace is upstreamConfig.ackGrace unless a test sets it.
const defaultAckGrace = 500 * time.Millisecond

var errRescued = errors.New("rescued")

// scheduleRescue checks pc once its request has been out for ackGrace.
func (pc *pconn) scheduleRescue() {
	if pc.phase.Load() != phaseAwaiting {
		return
	}
	wait := pc.pool.cfg.ackGrace - time.Since(time.Unix(0, pc.sentAt.Load()))
	if wait > 0 {
		time.AfterFunc(wait, pc.rescue)
		return
	}
	pc.rescue()
}

// rescue takes back the request on pc if the instance acknowledged none
// of it: send then reports a connect failure, which the router retries
// on another instance.
func (pc *pconn) rescue() {
	if pc.phase.Load() != phaseAwaiting {
		return
	}
	before := pc.sentBefore.Load()
	acked, ok := pc.pool.cfg.bytesAcked(pc)
	// The kernel counts the SYN as one byte acknowledged
	// (TestKernelBytesAcked); a request's head is far longer than one.
	if !ok || acked > before+1 || pc.sentBefore.Load() != before {
		return
	}
	if pc.phase.CompareAndSwap(phaseAwaiting, phaseRescued) {
		pc.c.SetDeadline(aLongTimeAgo)
	}
}
