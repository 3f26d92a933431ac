package artifact

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
)

// RetryPolicy bounds how hard a download tries before failing closed.
type RetryPolicy struct {
	// Initial and Max bound the exponential back-off between attempts.
	Initial time.Duration
	Max     time.Duration
	// MaxAttempts is how many attempts in a row may fail without receiving
	// a single byte. Attempts that make progress reset the count, so a
	// flaky connection to a large artifact still finishes.
	MaxAttempts int
	// StallTimeout aborts (and retries) an attempt that receives nothing
	// for this long, so a silent connection cannot eat the whole deadline.
	StallTimeout time.Duration
}

// DefaultRetryPolicy fits a store on the same network as the Nomad clients.
func DefaultRetryPolicy() RetryPolicy {
	return RetryPolicy{Initial: 500 * time.Millisecond, Max: 30 * time.Second, MaxAttempts: 8, StallTimeout: time.Minute}
}

func (p RetryPolicy) withDefaults() RetryPolicy {
	d := DefaultRetryPolicy()
	if p.Initial <= 0 {
		p.Initial = d.Initial
	}
	if p.Max <= 0 {
		p.Max = d.Max
	}
	if p.Max < p.Initial {
		p.Max = p.Initial
	}
	if p.MaxAttempts <= 0 {
		p.MaxAttempts = d.MaxAttempts
	}
	if p.StallTimeout <= 0 {
		p.StallTimeout = d.StallTimeout
	}
	return p
}

// resumableReader presents an object as one stream even when connections
// drop: on a transient error it reconnects at the current offset (pinning
// the object's ETag so a replaced object is detected, not spliced in).
type resumableReader struct {
	ctx    context.Context
	src    opener
	policy RetryPolicy
	log    hclog.Logger

	off  atomic.Int64 // bytes delivered so far; read by the progress logger
	size atomic.Int64 // total size, -1 while unknown
	etag string

	body     io.ReadCloser
	attempt  context.Context // the current connection's context
	cancel   context.CancelCauseFunc
	stall    *time.Timer
	eof      bool
	failures int // consecutive attempts without progress
	attempts int
	lastErr  error
}

func newResumableReader(ctx context.Context, src opener, policy RetryPolicy, log hclog.Logger) *resumableReader {
	r := &resumableReader{ctx: ctx, src: src, policy: policy.withDefaults(), log: log}
	r.size.Store(-1)
	return r
}

func (r *resumableReader) Read(p []byte) (int, error) {
	for {
		if r.eof {
			return 0, io.EOF
		}
		if r.body == nil {
			if err := r.connect(); err != nil {
				return 0, err
			}
		}
		n, err := r.body.Read(p)
		if n > 0 {
			r.off.Add(int64(n))
			r.failures = 0
			r.stall.Reset(r.policy.StallTimeout)
		}
		if err == nil {
			return n, nil
		}
		var cause error
		if errors.Is(err, io.EOF) {
			size := r.size.Load()
			if size < 0 || r.off.Load() >= size {
				r.closeBody()
				r.eof = true
				return n, io.EOF
			}
			cause = fmt.Errorf("connection closed after %d of %d bytes: %w", r.off.Load(), size, io.ErrUnexpectedEOF)
		} else {
			cause = fmt.Errorf("connection lost at byte %d: %w", r.off.Load(), r.attemptCause(err))
		}
		r.closeBody()
		if r.ctx.Err() != nil {
			return n, r.ctxError()
		}
		if !isTransient(cause) {
			return n, newError(ErrCorrupt, cause, fmt.Sprintf("reading %s: %v", r.src, cause))
		}
		r.lastErr = cause
		if n > 0 {
			// Deliver what arrived; the next Read reconnects.
			return n, nil
		}
		if err := r.backoff(cause); err != nil {
			return 0, err
		}
	}
}

// attemptCause prefers the stall cause over the generic "context canceled"
// the body read reports when the stall timer fired.
func (r *resumableReader) attemptCause(err error) error {
	if r.attempt != nil && errors.Is(context.Cause(r.attempt), errStalled) {
		return fmt.Errorf("%w (%s)", errStalled, r.policy.StallTimeout)
	}
	return err
}

func (r *resumableReader) connect() error {
	for {
		actx, cancel := context.WithCancelCause(r.ctx)
		r.attempt = actx
		r.attempts++
		resp, err := r.src.open(actx, r.off.Load(), r.etag)
		if err == nil {
			err = r.accept(resp)
			if err == nil {
				r.cancel = cancel
				r.stall = time.AfterFunc(r.policy.StallTimeout, func() { cancel(errStalled) })
				return nil
			}
			_ = resp.body.Close()
		}
		cancel(nil)
		if r.ctx.Err() != nil {
			return r.ctxError()
		}
		if !isTransient(err) {
			return err
		}
		r.lastErr = err
		if err := r.backoff(err); err != nil {
			return err
		}
	}
}

// accept checks that a (re)opened body continues the same object at the
// right offset, skipping ahead when the server ignored the Range.
func (r *resumableReader) accept(resp *response) error {
	off := r.off.Load()
	if r.etag == "" {
		r.etag = resp.etag
	} else if resp.etag != "" && resp.etag != r.etag {
		return newError(ErrChanged, nil, fmt.Sprintf("%s changed while it was being downloaded (ETag %s, now %s); the task will start over", r.src, r.etag, resp.etag))
	}
	if size := r.size.Load(); size < 0 {
		r.size.Store(resp.size)
	} else if resp.size >= 0 && resp.size != size {
		return newError(ErrChanged, nil, fmt.Sprintf("%s changed while it was being downloaded (size %d, now %d)", r.src, size, resp.size))
	}
	if resp.start > off {
		return newError(errTransient, nil, fmt.Sprintf("%s: store answered from byte %d, wanted %d", r.src, resp.start, off))
	}
	if skip := off - resp.start; skip > 0 {
		if r.attempts > 1 {
			r.log.Debug("store ignored the range request; skipping bytes already received", "bytes", skip)
		}
		if _, err := io.CopyN(io.Discard, resp.body, skip); err != nil {
			return newError(errTransient, err, fmt.Sprintf("%s: skipping to byte %d: %v", r.src, off, err))
		}
	}
	r.body = resp.body
	return nil
}

func (r *resumableReader) backoff(cause error) error {
	r.failures++
	if r.failures >= r.policy.MaxAttempts {
		return newError(ErrUnavailable, cause, fmt.Sprintf("giving up on %s after %d attempts in a row without progress; last error: %v", r.src, r.failures, cause))
	}
	d := r.policy.Initial << (r.failures - 1)
	if d <= 0 || d > r.policy.Max {
		d = r.policy.Max
	}
	// Full jitter keeps many tasks fetching the same model from retrying in step.
	d = d/2 + rand.N(d/2+1)
	r.log.Warn("download attempt failed; retrying", "attempt", r.failures,
		"offset", r.off.Load(), "retry_in", d.Round(time.Millisecond), "error", cause.Error())
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-r.ctx.Done():
		return r.ctxError()
	}
}

func (r *resumableReader) ctxError() error {
	err := r.ctx.Err()
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(context.Cause(r.ctx), context.DeadlineExceeded) {
		msg := fmt.Sprintf("%s: download did not finish before the deadline (SERAI_DOWNLOAD_TIMEOUT) after %s received", r.src, FormatSize(r.off.Load()))
		if r.lastErr != nil {
			msg += "; last error: " + r.lastErr.Error()
		}
		return newError(ErrTimeout, err, msg)
	}
	return err
}

func (r *resumableReader) closeBody() {
	if r.stall != nil {
		r.stall.Stop()
		r.stall = nil
	}
	if r.body != nil {
		_ = r.body.Close()
		r.body = nil
	}
	if r.cancel != nil {
		r.cancel(nil)
		r.cancel = nil
	}
}

// Close releases the current connection.
func (r *resumableReader) Close() error {
	r.closeBody()
	return nil
}
