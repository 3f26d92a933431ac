package router

import (
	"bufio"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/seraihq/serai/router/internal/upstream"
)

// The upstream side is a small HTTP/1.1 client written for exactly one
// exchange: POST /invocations with a buffered body, answered by a model
// server. net/http's Transport would do, but it runs two goroutines per
// connection and hands every request through channels; at the request rates
// this router is measured at (against nginx and HAProxy), that overhead is a
// large share of the whole. This client writes the request with one write
// call, parses only the response headers the SageMaker contract passes on,
// and keeps idle connections in a per-instance LIFO stack.

// errConnect marks failures that happened before any byte of the request
// reached the instance, which makes the request safe to retry elsewhere.
type errConnect struct{ err error }

func (e *errConnect) Error() string { return "connect: " + e.err.Error() }
func (e *errConnect) Unwrap() error { return e.err }

var aLongTimeAgo = time.Unix(1, 0)

const (
	// inlineBodyMax is the largest request body copied next to the headers
	// so the whole request leaves in one write.
	inlineBodyMax = 16 << 10
)

type upstreamConfig struct {
	dialTimeout time.Duration
	idleTimeout time.Duration
	maxIdle     int
	dialer      *net.Dialer
	// ackGrace and bytesAcked: see rescue.go. bytesAcked is the kernel's
	// count unless a test replaces it.
	ackGrace   time.Duration
	bytesAcked func(*pconn) (uint64, bool)
}

// connPool holds the idle keep-alive connections to one instance. Its mutex
// guards a slice push or pop only.
type connPool struct {
	addr string
	cfg  *upstreamConfig

	mu     sync.Mutex
	idle   []*pconn
	busy   map[*pconn]struct{} // out of the pool, open: a request is on them
	closed bool
}

func newConnPool(addr string, cfg *upstreamConfig) *connPool {
	return &connPool{addr: addr, cfg: cfg}
}

type pconn struct {
	pool   *connPool
	c      net.Conn
	br     *bufio.Reader
	wbuf   []byte
	reused bool
	idleAt time.Time

	// Bound once per connection so the hot path allocates no closures.
	abortFn   func()
	rc        syscall.RawConn
	probeFn   func(fd uintptr) bool
	probeBuf  [1]byte
	probeDead bool

	// hr reads answers (framing rules in router/internal/upstream).
	hr *upstream.Reader

	// lastCL caches the Content-Length header value sent to clients:
	// models often answer with bodies of one size.
	lastCL  int64
	lastCLv []string

	// For rescue (rescue.go). sent is owned by the request's goroutine;
	// the rest is read by the rescuer: the bytes this connection had sent
	// before the request on it, when that request left, and whether it
	// still waits for its answer's head.
	sent       uint64
	sentBefore atomic.Uint64
	sentAt     atomic.Int64
	phase      atomic.Int32
}

// respHead is the part of the model's response the router uses.
type respHead = upstream.Head

// The boundary of the upstream client (see router/internal/upstream); the
// hot path calls the concrete methods.
var (
	_ upstream.Pool[*outRequest] = (*connPool)(nil)
	_ upstream.Conn[*outRequest] = (*pconn)(nil)
)

// Get implements upstream.Pool.
func (p *connPool) Get(ctx context.Context, deadline time.Time) (upstream.Conn[*outRequest], error) {
	pc, err := p.get(ctx, deadline)
	if err != nil {
		return nil, err
	}
	return pc, nil
}

// Exchange implements upstream.Conn; it is send without the write error.
func (pc *pconn) Exchange(ctx context.Context, req *outRequest, h *respHead) error {
	_, err := pc.send(ctx, req, h)
	return err
}

// Body implements upstream.Conn.
func (pc *pconn) Body(h *respHead) io.Reader { return pc.bodyReader(h) }

// Release implements upstream.Conn.
func (pc *pconn) Release(reusable bool) {
	if reusable {
		pc.pool.put(pc)
		return
	}
	pc.pool.discard(pc)
}

// errProtocol is a malformed answer (upstream.ProtocolError).
type errProtocol = upstream.ProtocolError

const maxResponseHeaderLines = upstream.MaxHeaderLines

// readLine reads one line of the answer (stream.go's framing).
func (pc *pconn) readLine() ([]byte, error) { return pc.hr.ReadLine() }

func truncate(b []byte, n int) []byte {
	if len(b) > n {
		return b[:n]
	}
	return b
}

// bodyReader returns a reader for the answer's body.
func (pc *pconn) bodyReader(h *respHead) io.Reader { return pc.hr.Body(h) }

// outRequest is what the router sends to a model instance.
type outRequest struct {
	contentType string
	accept      string
	customAttrs string
	inferenceID string
	// sessionID is passed to the model as X-Amzn-SageMaker-Session-Id:
	// NEW_SESSION or the model's own ID of an open session (sessions.go).
	sessionID string
	body      []byte
}

// get returns a connection with its deadline set, reusing an idle one when
// it is still open.
func (p *connPool) get(ctx context.Context, deadline time.Time) (*pconn, error) {
	now := time.Now()
	for {
		p.mu.Lock()
		n := len(p.idle)
		if n == 0 || p.closed {
			p.mu.Unlock()
			break
		}
		pc := p.idle[n-1]
		p.idle[n-1] = nil
		p.idle = p.idle[:n-1]
		p.busy[pc] = struct{}{}
		p.mu.Unlock()
		if now.Sub(pc.idleAt) > p.cfg.idleTimeout {
			p.discard(pc)
			continue
		}
		if err := pc.c.SetDeadline(deadline); err != nil || !pc.alive() {
			p.discard(pc)
			continue
		}
		pc.reused = true
		return pc, nil
	}
	return p.dial(ctx, deadline)
}

// dial opens a new connection to the instance.
func (p *connPool) dial(ctx context.Context, deadline time.Time) (*pconn, error) {
	// Connecting counts against the model timeout too.
	d := deadline
	if t := time.Now().Add(p.cfg.dialTimeout); p.cfg.dialTimeout > 0 && t.Before(d) {
		d = t
	}
	dctx, cancel := context.WithDeadline(ctx, d)
	defer cancel()
	c, err := p.cfg.dialer.DialContext(dctx, "tcp", p.addr)
	if err != nil {
		return nil, &errConnect{err}
	}
	if err := c.SetDeadline(deadline); err != nil {
		c.Close()
		return nil, &errConnect{err}
	}
	pc := &pconn{pool: p, c: c, br: bufio.NewReaderSize(c, 8<<10), wbuf: make([]byte, 0, 1024)}
	pc.hr = upstream.NewReader(pc.br)
	pc.abortFn = func() { c.SetDeadline(aLongTimeAgo) }
	if sc, ok := c.(syscall.Conn); ok {
		if rc, err := sc.SyscallConn(); err == nil {
			pc.rc = rc
			pc.probeFn = pc.probe
		}
	}
	p.mu.Lock()
	if p.busy == nil {
		p.busy = map[*pconn]struct{}{}
	}
	p.busy[pc] = struct{}{}
	p.mu.Unlock()
	return pc, nil
}

// discard closes a connection taken from the pool.
func (p *connPool) discard(pc *pconn) {
	p.mu.Lock()
	delete(p.busy, pc)
	p.mu.Unlock()
	pc.c.Close()
}

// put returns a connection whose exchange finished cleanly to the pool.
// Bytes already read past the end of the answer mean the model sent more
// than its framing said (a body on a 204, data past Content-Length); they
// would be taken for the next request's answer, so the connection is
// closed instead. Surplus still in the socket is caught by alive.
func (p *connPool) put(pc *pconn) {
	if pc.br.Buffered() != 0 {
		p.discard(pc)
		return
	}
	pc.idleAt = time.Now()
	p.mu.Lock()
	delete(p.busy, pc)
	if p.closed || len(p.idle) >= p.cfg.maxIdle {
		p.mu.Unlock()
		pc.c.Close()
		return
	}
	p.idle = append(p.idle, pc)
	p.mu.Unlock()
}

// sweep closes connections idle for longer than the idle timeout. The
// oldest sit at the bottom of the stack.
func (p *connPool) sweep(now time.Time) {
	p.mu.Lock()
	i := 0
	for i < len(p.idle) && now.Sub(p.idle[i].idleAt) > p.cfg.idleTimeout {
		i++
	}
	stale := append([]*pconn(nil), p.idle[:i]...)
	n := copy(p.idle, p.idle[i:])
	clear(p.idle[n:])
	p.idle = p.idle[:n]
	p.mu.Unlock()
	for _, pc := range stale {
		pc.c.Close()
	}
}

// close closes idle connections and makes put close busy ones when they
// come back. It returns the busy ones, for rescue.
func (p *connPool) close() []*pconn {
	p.mu.Lock()
	p.closed = true
	idle := p.idle
	p.idle = nil
	busy := make([]*pconn, 0, len(p.busy))
	for pc := range p.busy {
		busy = append(busy, pc)
	}
	p.mu.Unlock()
	for _, pc := range idle {
		pc.c.Close()
	}
	return busy
}

// writeRequest sends the request. A failure here on a reused connection
// means the instance closed it while idle: nothing was processed.
func (pc *pconn) writeRequest(r *outRequest) (int64, error) {
	b := pc.wbuf[:0]
	b = append(b, "POST /invocations HTTP/1.1\r\nHost: "...)
	b = append(b, pc.pool.addr...)
	b = append(b, "\r\nContent-Length: "...)
	b = strconv.AppendInt(b, int64(len(r.body)), 10)
	if r.contentType != "" {
		b = append(b, "\r\nContent-Type: "...)
		b = append(b, r.contentType...)
	}
	if r.accept != "" {
		b = append(b, "\r\nAccept: "...)
		b = append(b, r.accept...)
	}
	if r.customAttrs != "" {
		b = append(b, "\r\nX-Amzn-SageMaker-Custom-Attributes: "...)
		b = append(b, r.customAttrs...)
	}
	if r.inferenceID != "" {
		b = append(b, "\r\nX-Amzn-SageMaker-Inference-Id: "...)
		b = append(b, r.inferenceID...)
	}
	if r.sessionID != "" {
		b = append(b, "\r\nX-Amzn-SageMaker-Session-Id: "...)
		b = append(b, r.sessionID...)
	}
	b = append(b, "\r\n\r\n"...)
	var n int64
	var err error
	if len(r.body) <= inlineBodyMax {
		b = append(b, r.body...)
		var k int
		k, err = pc.c.Write(b)
		n = int64(k)
	} else {
		bufs := net.Buffers{b, r.body}
		n, err = bufs.WriteTo(pc.c)
	}
	if cap(b) <= 64<<10 {
		pc.wbuf = b[:0]
	} else {
		pc.wbuf = make([]byte, 0, 1024)
	}
	return n, err
}

// send writes the request and reads the answer's head. werr is the write's
// error. A write fails when the instance stops reading and closes; it may
// have answered first (a server refusing a large body from its head sends
// 413 and closes), and that answer is the one to relay, so the head is
// still read, and the connection is not reused after it.
func (pc *pconn) send(ctx context.Context, req *outRequest, h *respHead) (werr, err error) {
	pc.sentBefore.Store(pc.sent)
	pc.sentAt.Store(time.Now().UnixNano())
	pc.phase.Store(phaseAwaiting)
	n, werr := pc.writeRequest(req)
	pc.sent += uint64(n)
	if werr != nil {
		if ctx.Err() != nil || isTimeout(werr) || pc.hr.ReadHead(h) != nil {
			err = werr
		} else {
			h.Close = true
		}
	} else {
		err = pc.hr.ReadHead(h)
	}
	if !pc.phase.CompareAndSwap(phaseAwaiting, phaseAnswered) {
		// Rescued: the instance left the table and had acknowledged no
		// byte of this request; whatever the read got is not used.
		return werr, &errConnect{fmt.Errorf("instance %s left the routing table and acknowledged none of the request: %w", pc.pool.addr, cmp.Or(err, errRescued))}
	}
	return werr, err
}

// contentLengthHeader is internCT for Content-Length: models often answer
// with bodies of one size.
func (pc *pconn) contentLengthHeader(n int64) []string {
	if pc.lastCLv == nil || pc.lastCL != n {
		pc.lastCL, pc.lastCLv = n, []string{strconv.FormatInt(n, 10)}
	}
	return pc.lastCLv
}

// relayFixed copies a Content-Length body to w without an intermediate
// copy: what the read buffer holds goes out from there, and once it is
// empty the rest is read straight from the connection into big (when
// given), so a large answer leaves in writes of len(big) bytes instead of
// the read buffer's 8 KiB: a quarter of the system calls for a 256 KiB
// answer with a 32 KiB buffer.
func (pc *pconn) relayFixed(w io.Writer, n int64, big []byte) (int64, error) {
	var written int64
	size := int64(pc.br.Size())
	for n > 0 {
		if len(big) > 0 && pc.br.Buffered() == 0 && n > size {
			m, err := pc.c.Read(big[:min(n, int64(len(big)))])
			if m > 0 {
				k, werr := w.Write(big[:m])
				written += int64(k)
				n -= int64(m)
				if werr != nil {
					return written, &errClientWrite{werr}
				}
			}
			if err != nil {
				if err == io.EOF && n > 0 {
					err = io.ErrUnexpectedEOF
				}
				if n > 0 {
					return written, err
				}
			}
			continue
		}
		want := min(n, size)
		if b := int64(pc.br.Buffered()); b > 0 && b < want {
			want = b
		}
		buf, err := pc.br.Peek(int(want))
		if len(buf) > 0 {
			m, werr := w.Write(buf)
			pc.br.Discard(len(buf))
			written += int64(m)
			n -= int64(len(buf))
			if werr != nil {
				return written, &errClientWrite{werr}
			}
		}
		if err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return written, err
		}
	}
	return written, nil
}

// errClientWrite is a failure writing to the router's client, which is not
// the instance's fault.
type errClientWrite struct{ err error }

func (e *errClientWrite) Error() string { return "writing response to client: " + e.err.Error() }
func (e *errClientWrite) Unwrap() error { return e.err }

// relay copies an arbitrary body reader to w through buf.
func relay(w io.Writer, r io.Reader, buf []byte) (int64, error) {
	var written int64
	for {
		n, err := r.Read(buf)
		if n > 0 {
			m, werr := w.Write(buf[:n])
			written += int64(m)
			if werr != nil {
				return written, &errClientWrite{werr}
			}
		}
		if err == io.EOF {
			return written, nil
		}
		if err != nil {
			return written, err
		}
	}
}

// isTimeout reports a deadline expiry on the connection.
func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
