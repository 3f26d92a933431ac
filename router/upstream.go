package router

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http/httputil"
	"strconv"
	"sync"
	"syscall"
	"time"
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

// errProtocol is a malformed response from the instance.
type errProtocol struct{ msg string }

func (e *errProtocol) Error() string { return "malformed response from model: " + e.msg }

var aLongTimeAgo = time.Unix(1, 0)

const (
	maxResponseHeaderBytes = 64 << 10
	maxResponseHeaderLines = 256
	// max1xxResponses bounds the informational answers (100 Continue,
	// 103 Early Hints) skipped before the final one, as net/http does.
	max1xxResponses = 5
	// inlineBodyMax is the largest request body copied next to the headers
	// so the whole request leaves in one write.
	inlineBodyMax = 16 << 10
)

type upstreamConfig struct {
	dialTimeout time.Duration
	idleTimeout time.Duration
	maxIdle     int
	dialer      *net.Dialer
}

// connPool holds the idle keep-alive connections to one instance. Its mutex
// guards a slice push or pop only.
type connPool struct {
	addr string
	cfg  *upstreamConfig

	mu     sync.Mutex
	idle   []*pconn
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

	fixed fixedBody

	// lastCT caches the last Content-Type seen on this connection: a model
	// answers with the same one every time, so the string and the header
	// slice are reused instead of allocated per response.
	lastCT  []byte
	lastCTv []string
	lastCL  int64
	lastCLv []string
}

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

// respHead is the part of the model's response the router uses.
type respHead struct {
	status      int
	contentType []string // nil when the model sent none
	customAttrs string
	// newSession and closedSession are the model's stateful-session
	// answers (X-Amzn-SageMaker-Session-Id, -Closed-Session-Id).
	newSession    string
	closedSession string
	contentLength int64 // -1 when unknown
	chunked       bool
	close         bool
	noBody        bool
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
		p.mu.Unlock()
		if now.Sub(pc.idleAt) > p.cfg.idleTimeout {
			pc.c.Close()
			continue
		}
		if err := pc.c.SetDeadline(deadline); err != nil || !pc.alive() {
			pc.c.Close()
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
	pc.fixed.br = pc.br
	pc.abortFn = func() { c.SetDeadline(aLongTimeAgo) }
	if sc, ok := c.(syscall.Conn); ok {
		if rc, err := sc.SyscallConn(); err == nil {
			pc.rc = rc
			pc.probeFn = pc.probe
		}
	}
	return pc, nil
}

// put returns a connection whose exchange finished cleanly to the pool.
// Bytes already read past the end of the answer mean the model sent more
// than its framing said (a body on a 204, data past Content-Length); they
// would be taken for the next request's answer, so the connection is
// closed instead. Surplus still in the socket is caught by alive.
func (p *connPool) put(pc *pconn) {
	if pc.br.Buffered() != 0 {
		pc.c.Close()
		return
	}
	pc.idleAt = time.Now()
	p.mu.Lock()
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
// come back.
func (p *connPool) close() {
	p.mu.Lock()
	p.closed = true
	idle := p.idle
	p.idle = nil
	p.mu.Unlock()
	for _, pc := range idle {
		pc.c.Close()
	}
}

// writeRequest sends the request. A failure here on a reused connection
// means the instance closed it while idle: nothing was processed.
func (pc *pconn) writeRequest(r *outRequest) error {
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
	var err error
	if len(r.body) <= inlineBodyMax {
		b = append(b, r.body...)
		_, err = pc.c.Write(b)
	} else {
		bufs := net.Buffers{b, r.body}
		_, err = bufs.WriteTo(pc.c)
	}
	if cap(b) <= 64<<10 {
		pc.wbuf = b[:0]
	} else {
		pc.wbuf = make([]byte, 0, 1024)
	}
	return err
}

// send writes the request and reads the answer's head. werr is the write's
// error. A write fails when the instance stops reading and closes; it may
// have answered first (a server refusing a large body from its head sends
// 413 and closes), and that answer is the one to relay, so the head is
// still read, and the connection is not reused after it.
func (pc *pconn) send(ctx context.Context, req *outRequest, h *respHead) (werr, err error) {
	if werr = pc.writeRequest(req); werr != nil {
		if ctx.Err() != nil || isTimeout(werr) || pc.readHead(h) != nil {
			return werr, werr
		}
		h.close = true
		return werr, nil
	}
	return nil, pc.readHead(h)
}

// readHead reads the status line and headers, skipping 1xx responses.
func (pc *pconn) readHead(h *respHead) error {
	for n := 0; ; n++ {
		if err := pc.readOneHead(h); err != nil {
			return err
		}
		if h.status >= 200 || h.status == 101 {
			break
		}
		if n >= max1xxResponses {
			return &errProtocol{"too many 1xx informational responses"}
		}
	}
	if h.status == 101 {
		return &errProtocol{"unexpected 101 Switching Protocols"}
	}
	if h.status == 204 || h.status == 304 {
		h.noBody = true
		h.contentLength = 0
		h.chunked = false
	}
	if !h.chunked && h.contentLength < 0 && !h.noBody {
		// Delimited by close: the connection cannot be reused.
		h.close = true
	}
	return nil
}

func (pc *pconn) readOneHead(h *respHead) error {
	*h = respHead{contentLength: -1}
	line, err := pc.readLine()
	if err != nil {
		return err
	}
	// "HTTP/1.1 200 OK"
	if len(line) < 12 || !bytes.HasPrefix(line, []byte("HTTP/1.")) || (line[7] != '0' && line[7] != '1') ||
		line[8] != ' ' || (len(line) > 12 && line[12] != ' ') {
		return &errProtocol{fmt.Sprintf("bad status line %q", truncate(line, 64))}
	}
	http10 := line[7] == '0'
	code := 0
	for _, c := range line[9:12] {
		if c < '0' || c > '9' {
			return &errProtocol{fmt.Sprintf("bad status code in %q", truncate(line, 64))}
		}
		code = code*10 + int(c-'0')
	}
	if code < 100 {
		return &errProtocol{fmt.Sprintf("bad status code %d", code)}
	}
	h.status = code
	keepAlive, hasCL, hasTE := false, false, false
	total := len(line)
	for n := 0; ; n++ {
		line, err := pc.readLine()
		if err != nil {
			return err
		}
		if len(line) == 0 {
			break
		}
		total += len(line)
		if n >= maxResponseHeaderLines || total > maxResponseHeaderBytes {
			return &errProtocol{"response headers too large"}
		}
		if line[0] == ' ' || line[0] == '\t' {
			return &errProtocol{"obsolete header line folding"}
		}
		colon := bytes.IndexByte(line, ':')
		if colon <= 0 || !validHeaderLine(line, colon) {
			// Includes "Name : value": a name the router would not
			// recognise while the model meant it (RFC 9112 5.1).
			return &errProtocol{fmt.Sprintf("bad header line %q", truncate(line, 64))}
		}
		name := line[:colon]
		value := bytes.TrimSpace(line[colon+1:])
		switch {
		case len(name) == 12 && asciiEqualFold(name, "content-type"):
			h.contentType = pc.internCT(value)
		case len(name) == 14 && asciiEqualFold(name, "content-length"):
			n, ok := parseLength(value)
			if !ok || (h.contentLength >= 0 && h.contentLength != n) {
				return &errProtocol{"bad Content-Length"}
			}
			h.contentLength = n
			hasCL = true
		case len(name) == 17 && asciiEqualFold(name, "transfer-encoding"):
			// Only "chunked", once: the router passes bodies on unchanged,
			// so it cannot take other codings (gzip would reach the client
			// undecoded), and anything else is how framing desyncs start.
			// net/http's client refuses the same.
			if hasTE || !asciiEqualFold(value, "chunked") {
				return &errProtocol{fmt.Sprintf("unsupported Transfer-Encoding %q", truncate(value, 64))}
			}
			hasTE = true
			h.chunked = true
		case len(name) == 10 && asciiEqualFold(name, "connection"):
			if containsToken(value, "close") {
				h.close = true
			}
			if containsToken(value, "keep-alive") {
				keepAlive = true
			}
		case len(name) == 34 && asciiEqualFold(name, "x-amzn-sagemaker-custom-attributes"):
			h.customAttrs = string(value)
		case len(name) == 27 && asciiEqualFold(name, "x-amzn-sagemaker-session-id"):
			h.newSession = string(value)
		case len(name) == 34 && asciiEqualFold(name, "x-amzn-sagemaker-closed-session-id"):
			h.closedSession = string(value)
		}
	}
	if h.chunked {
		h.contentLength = -1
		// Transfer-Encoding overrides Content-Length, but a message with
		// both, or chunked in HTTP/1.0, is suspect (RFC 9112 6.1, 6.3):
		// read it as chunked, then do not trust the connection again.
		if hasCL || http10 {
			h.close = true
		}
	}
	if http10 && !keepAlive {
		h.close = true
	}
	return nil
}

// validHeaderLine reports whether the field name (line[:colon]) is a token
// and the value holds no control characters but HTAB (RFC 9110 5.1, 5.5).
// Values are passed on to clients, whose HTTP stacks refuse such bytes.
func validHeaderLine(line []byte, colon int) bool {
	for _, c := range line[:colon] {
		if !tokenChar[c] {
			return false
		}
	}
	for _, c := range line[colon+1:] {
		if c < ' ' && c != '\t' || c == 0x7f {
			return false
		}
	}
	return true
}

var tokenChar = func() (t [256]bool) {
	for _, c := range []byte("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ") {
		t[c] = true
	}
	return t
}()

func (pc *pconn) readLine() ([]byte, error) {
	line, err := pc.br.ReadSlice('\n')
	if err == bufio.ErrBufferFull {
		return nil, &errProtocol{"header line too long"}
	}
	if err != nil {
		return nil, err
	}
	line = line[:len(line)-1]
	if n := len(line); n > 0 && line[n-1] == '\r' {
		line = line[:n-1]
	}
	return line, nil
}

// contentLengthHeader is internCT for Content-Length: models often answer
// with bodies of one size.
func (pc *pconn) contentLengthHeader(n int64) []string {
	if pc.lastCLv == nil || pc.lastCL != n {
		pc.lastCL, pc.lastCLv = n, []string{strconv.FormatInt(n, 10)}
	}
	return pc.lastCLv
}

func (pc *pconn) internCT(v []byte) []string {
	if pc.lastCTv != nil && bytes.Equal(v, pc.lastCT) {
		return pc.lastCTv
	}
	s := string(v)
	pc.lastCT = append(pc.lastCT[:0], v...)
	pc.lastCTv = []string{s}
	return pc.lastCTv
}

// bodyReader returns a reader for the response body. For chunked bodies the
// trailer is consumed by finishChunked.
func (pc *pconn) bodyReader(h *respHead) io.Reader {
	switch {
	case h.noBody:
		pc.fixed.n = 0
		return &pc.fixed
	case h.chunked:
		return &chunkedBody{r: httputil.NewChunkedReader(pc.br), pc: pc}
	case h.contentLength >= 0:
		pc.fixed.n = h.contentLength
		return &pc.fixed
	default:
		return pc.br
	}
}

// fixedBody reads exactly n bytes of a Content-Length body.
type fixedBody struct {
	br *bufio.Reader
	n  int64
}

func (f *fixedBody) Read(p []byte) (int, error) {
	if f.n <= 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > f.n {
		p = p[:f.n]
	}
	n, err := f.br.Read(p)
	f.n -= int64(n)
	if err == io.EOF && f.n > 0 {
		err = io.ErrUnexpectedEOF
	}
	if err == nil && f.n == 0 {
		err = io.EOF
	}
	return n, err
}

// chunkedBody reads a chunked body and then its trailer section, so the
// connection is positioned at the next response.
type chunkedBody struct {
	r    io.Reader
	pc   *pconn
	done bool
}

func (c *chunkedBody) Read(p []byte) (int, error) {
	if c.done {
		return 0, io.EOF
	}
	n, err := c.r.Read(p)
	if err == io.EOF {
		for i := 0; ; i++ {
			line, lerr := c.pc.readLine()
			if lerr != nil {
				return n, lerr
			}
			if len(line) == 0 {
				break
			}
			if i >= maxResponseHeaderLines {
				return n, &errProtocol{"trailer too large"}
			}
		}
		c.done = true
	}
	return n, err
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

func asciiEqualFold(b []byte, lower string) bool {
	if len(b) != len(lower) {
		return false
	}
	for i := 0; i < len(b); i++ {
		c := b[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != lower[i] {
			return false
		}
	}
	return true
}

func containsToken(v []byte, lower string) bool {
	for len(v) > 0 {
		var tok []byte
		if i := bytes.IndexByte(v, ','); i >= 0 {
			tok, v = v[:i], v[i+1:]
		} else {
			tok, v = v, nil
		}
		if asciiEqualFold(bytes.TrimSpace(tok), lower) {
			return true
		}
	}
	return false
}

func parseLength(v []byte) (int64, bool) {
	if len(v) == 0 || len(v) > 18 {
		return 0, false
	}
	var n int64
	for _, c := range v {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int64(c-'0')
	}
	return n, true
}

func truncate(b []byte, n int) []byte {
	if len(b) > n {
		return b[:n]
	}
	return b
}

// isTimeout reports a deadline expiry on the connection.
func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
