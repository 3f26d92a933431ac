package router

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"log"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// The server side's fast path. net/http's server costs the router about a
// fifth of its CPU per InvokeEndpoint and most of what it allocates (a
// header map and URL per request, a goroutine and a read per request to
// notice a client hang-up, deadline resets, the header clone at
// WriteHeader; docs/performance.md). fastServer serves the requests the
// router exists for, plain-HTTP/1.1 POST /endpoints/{name}/invocations and
// /invocations-response-stream with a Content-Length body that arrives
// whole within splitWait (head and body within 16 KiB; across a real
// network a request over one TCP segment arrives in several reads), on
// its own connection loop, with the same Router as handler. Every
// connection that sends anything else goes to net/http, bytes already
// read included, for the rest of its life: HTTP/2, /ping and /metrics, chunked or
// large bodies, a request whose rest takes longer than splitWait (a slow
// client: net/http's header and body timeouts apply from there), Expect,
// Connection and Upgrade headers,
// HTTP/1.0, and anything else its parser does not take. The parser takes a
// subset of what net/http's server takes and reads it the same way
// (FuzzFastParseAgainstNetHTTP); the ResponseWriter answers as net/http's
// does (TestFastResponseMatchesNetHTTP); every router test runs through it.
// With TLS, Serve terminates it at the listener: the connection is a
// *tls.Conn whose handshake runs at the first read, under the idle
// deadline, and what the loop and net/http read is the decrypted stream.
//
// Per connection two goroutines live as long as the connection: the reader
// parses a request, hands it to the handler goroutine and goes straight
// back to reading the connection. That pending read is the hang-up
// detector net/http starts per request: when it ends in EOF or an error
// while a request is in flight, the connection's context (which is every
// request's context on it) is cancelled, which aborts the model call.
// Bytes it reads instead are the next (pipelined) request, dispatched once
// the handler is done, so answers keep their order. The idle timeout is a
// read deadline pushed forward at most once a second, not per request.
//
// Deadlines, from the net/http server's timeouts (the Router's Config):
// a new connection must deliver its first request's head within
// ReadHeaderTimeout, later ones come within IdleTimeout; a request that
// has not arrived whole within splitWait of its first bytes goes to
// net/http, whose ReadHeaderTimeout and ReadTimeout then bound the rest.
// Every answer gets its own write deadline: the one its handler sets
// (http.ResponseController.SetWriteDeadline: an invocation's is the model
// timeout plus WriteTimeout), or else WriteTimeout from its first write,
// armed by that write. One deadline call per request, and never a stale
// one: a deadline an earlier request set once outlived it on a kept-alive
// connection, and cut a later answer (TestDeadlineStaleAfterInvocationOnKeptAliveConnection).
// A write that fails closes the connection at once, so a client that
// stopped reading loses it at its deadline, not at the idle timeout.

// connServer is what Serve runs: net/http's server, or fastServer in
// front of one.
type connServer interface {
	Serve(net.Listener) error
	Shutdown(context.Context) error
	Close() error
}

var (
	_ connServer = (*http.Server)(nil)
	_ connServer = (*fastServer)(nil)
)

const (
	// fastBufSize bounds a fast request: head and body must fit.
	fastBufSize = 16 << 10
	// idleRearm: the read deadline that bounds an idle connection is
	// pushed forward at most this often, not per request.
	idleRearm = time.Second
	// splitWait bounds how long the fast path waits for the rest of a
	// request that could be a fast one. The rest of a request split by
	// the network follows within a round trip; a client slower than this
	// is net/http's.
	splitWait = time.Second
)

type fastServer struct {
	srv     *http.Server // the fallback, and the timeouts and handler
	handoff *handoffListener

	mu       sync.Mutex
	conns    map[*fastConn]struct{}
	ln       net.Listener
	shutting atomic.Bool
	wg       sync.WaitGroup

	// served and handedOff count requests served here and connections
	// given to net/http, split the requests whose rest the fast path
	// waited for (tests check the fast path is taken).
	served, handedOff, split atomic.Int64

	splitWait time.Duration
}

func newFastServer(srv *http.Server) *fastServer {
	return &fastServer{srv: srv, conns: map[*fastConn]struct{}{}, splitWait: splitWait,
		handoff: &handoffListener{conns: make(chan net.Conn), closed: make(chan struct{})}}
}

// Serve accepts connections on ln until it is closed.
func (s *fastServer) Serve(ln net.Listener) error {
	s.mu.Lock()
	if s.shutting.Load() {
		s.mu.Unlock()
		ln.Close()
		return http.ErrServerClosed
	}
	s.ln = ln
	s.handoff.addr = ln.Addr()
	s.mu.Unlock()
	httpErr := make(chan error, 1)
	go func() { httpErr <- s.srv.Serve(s.handoff) }()
	var tempDelay time.Duration
	for {
		c, err := ln.Accept()
		if err != nil {
			if s.shutting.Load() {
				return http.ErrServerClosed
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				tempDelay = min(max(2*tempDelay, 5*time.Millisecond), time.Second)
				time.Sleep(tempDelay)
				continue
			}
			s.handoff.Close()
			<-httpErr
			return err
		}
		tempDelay = 0
		fc := &fastConn{s: s, c: c, work: make(chan struct{}), idle: make(chan struct{}, 1)}
		s.mu.Lock()
		if s.shutting.Load() {
			s.mu.Unlock()
			c.Close()
			continue
		}
		s.conns[fc] = struct{}{}
		s.wg.Add(1)
		s.mu.Unlock()
		go fc.serve()
	}
}

// Shutdown stops accepting, closes idle connections, lets busy ones finish
// their request, and shuts the fallback server down likewise.
func (s *fastServer) Shutdown(ctx context.Context) error {
	s.shutting.Store(true)
	s.mu.Lock()
	if s.ln != nil {
		s.ln.Close()
	}
	for fc := range s.conns {
		fc.closeIfIdle()
	}
	s.mu.Unlock()
	herr := s.srv.Shutdown(ctx)
	s.handoff.Close()
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
		return herr
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Close closes the listener and every connection at once.
func (s *fastServer) Close() error {
	s.shutting.Store(true)
	s.mu.Lock()
	if s.ln != nil {
		s.ln.Close()
	}
	for fc := range s.conns {
		fc.c.Close()
	}
	s.mu.Unlock()
	s.handoff.Close()
	return s.srv.Close()
}

func (s *fastServer) forget(fc *fastConn) {
	s.mu.Lock()
	delete(s.conns, fc)
	s.mu.Unlock()
	s.wg.Done()
}

// handoffListener feeds net/http the connections fastServer gives up.
type handoffListener struct {
	addr   net.Addr
	conns  chan net.Conn
	once   sync.Once
	closed chan struct{}
}

func (l *handoffListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.closed:
		return nil, net.ErrClosed
	}
}

func (l *handoffListener) Close() error {
	l.once.Do(func() { close(l.closed) })
	return nil
}

func (l *handoffListener) Addr() net.Addr { return l.addr }

func (l *handoffListener) give(c net.Conn) {
	select {
	case l.conns <- c:
	case <-l.closed:
		c.Close()
	}
}

// prefixConn replays bytes already read before reading the connection.
type prefixConn struct {
	net.Conn
	prefix []byte
}

func (c *prefixConn) Read(p []byte) (int, error) {
	if len(c.prefix) > 0 {
		n := copy(p, c.prefix)
		c.prefix = c.prefix[n:]
		return n, nil
	}
	return c.Conn.Read(p)
}

// fastConn is one client connection on the fast path.
type fastConn struct {
	s    *fastServer
	c    net.Conn
	br   *bufio.Reader
	ctx  connCtx
	work chan struct{} // reader → handler: req is ready
	idle chan struct{} // handler → reader: done with req

	busy    atomic.Bool
	closing atomic.Bool

	req  fastRequest
	resp fastResponse

	remote   string
	armedAt  time.Time
	lastHost string
	lastCT   []byte
	lastCTv  string
}

func (fc *fastConn) closeIfIdle() {
	fc.closing.Store(true)
	if !fc.busy.Load() {
		fc.c.Close()
	}
}

// serve is the reader goroutine.
func (fc *fastConn) serve() {
	defer fc.s.forget(fc)
	fc.br = bufio.NewReaderSize(fc.c, fastBufSize)
	fc.remote = fc.c.RemoteAddr().String()
	fc.ctx.init()
	fc.resp.fc = fc
	fc.req.hdr = make(http.Header, 8)
	fc.resp.hdr = make(http.Header, 8)
	handlerDone := make(chan struct{})
	go fc.handle(handlerDone)
	defer func() {
		close(fc.work)
		<-handlerDone
	}()
	idleTimeout := fc.s.srv.IdleTimeout
	if idleTimeout <= 0 {
		idleTimeout = fc.s.srv.ReadTimeout // as net/http
	}
	// A new connection has sent nothing yet: like net/http, it gets
	// ReadHeaderTimeout for its first request's head, not IdleTimeout.
	hdrArmed := false
	if hdrTimeout := fc.s.srv.ReadHeaderTimeout; hdrTimeout > 0 {
		fc.c.SetReadDeadline(time.Now().Add(hdrTimeout))
		hdrArmed = true
	}
	// Pushed forward at most once a second, and often enough that a short
	// idle timeout cannot pass between two pushes on a busy connection.
	rearm := idleRearm
	if idleTimeout > 0 {
		rearm = min(rearm, idleTimeout/4)
	}
	deadline := func(now time.Time) time.Time {
		if idleTimeout <= 0 {
			return time.Time{}
		}
		return now.Add(idleTimeout)
	}
	for {
		// Re-armed whether or not the next request is already buffered:
		// a client that sends each request as soon as it has the last
		// answer usually has it there (the hang-up detector read it), and
		// a deadline armed only when nothing was buffered expired under
		// steady load, closing a busy connection IdleTimeout after it
		// opened (TestFastPathBusyConnectionOutlivesIdleTimeout).
		if now := time.Now(); !hdrArmed && now.Sub(fc.armedAt) > rearm {
			fc.c.SetReadDeadline(deadline(now))
			fc.armedAt = now
		}
		if fc.br.Buffered() == 0 {
			if _, err := fc.br.Peek(1); err != nil {
				fc.c.Close()
				return
			}
		}
		if fc.closing.Load() {
			fc.c.Close()
			return
		}
		n, res := fc.req.parse(fc)
		if res == fastPartial {
			n, res = fc.awaitRest()
			if res == fastClosed {
				fc.c.Close()
				return
			}
			hdrArmed = true // to re-arm below
		}
		if res != fastWhole {
			fc.giveUp()
			return
		}
		if hdrArmed {
			// The hang-up detector below reads under the idle deadline.
			now := time.Now()
			fc.c.SetReadDeadline(deadline(now))
			fc.armedAt = now
			hdrArmed = false
		}
		fc.br.Discard(n)
		fc.s.served.Add(1)
		fc.busy.Store(true)
		fc.work <- struct{}{}
		// The hang-up detector: wait for the next request's bytes (or the
		// client's end) while the handler runs.
		for {
			_, err := fc.br.Peek(1)
			if err == nil {
				break
			}
			if isTimeout(err) && fc.busy.Load() {
				// The idle deadline passed during a long request.
				now := time.Now()
				fc.c.SetReadDeadline(deadline(now))
				fc.armedAt = now
				continue
			}
			fc.ctx.cancel()
			<-fc.idle
			fc.c.Close()
			return
		}
		<-fc.idle
		if fc.resp.closeAfter || fc.closing.Load() {
			fc.c.Close()
			return
		}
	}
}

var crlfcrlf = []byte("\r\n\r\n")

// awaitRest reads the rest of a request that could be a fast one, for at
// most splitWait: a request split by the network then takes the fast path
// (before, its connection went to net/http for good). A slower client's
// request is notFast, handed with what it sent to net/http, whose header
// and body timeouts then apply. The caller re-arms the read deadline.
func (fc *fastConn) awaitRest() (int, parseResult) {
	fc.s.split.Add(1)
	fc.c.SetReadDeadline(time.Now().Add(fc.s.splitWait))
	for {
		// parse says fastPartial only while the buffer has room.
		if _, err := fc.br.Peek(fc.br.Buffered() + 1); err != nil {
			if isTimeout(err) {
				return 0, notFast
			}
			return 0, fastClosed
		}
		if fc.closing.Load() {
			return 0, fastClosed
		}
		if n, res := fc.req.parse(fc); res != fastPartial {
			return n, res
		}
	}
}

// giveUp hands the connection, with what was read of it, to net/http.
func (fc *fastConn) giveUp() {
	fc.s.handedOff.Add(1)
	b, _ := fc.br.Peek(fc.br.Buffered())
	prefix := append([]byte(nil), b...)
	fc.c.SetReadDeadline(time.Time{})
	fc.s.handoff.give(&prefixConn{Conn: fc.c, prefix: prefix})
}

// handle is the handler goroutine.
func (fc *fastConn) handle(done chan struct{}) {
	defer close(done)
	for range fc.work {
		fc.serveOne()
		fc.busy.Store(false)
		if fc.closing.Load() || fc.resp.writeFailed {
			// A failed write (a client that stopped reading, past its
			// deadline) leaves nothing to say on the connection: closing
			// it here ends the reader's wait too.
			fc.c.Close()
		}
		fc.idle <- struct{}{}
	}
}

func (fc *fastConn) serveOne() {
	r := fc.req.build(fc)
	w := &fc.resp
	w.reset()
	defer func() {
		if p := recover(); p != nil {
			w.closeAfter = true
			fc.c.Close()
			if p != http.ErrAbortHandler {
				logf(fc.s.srv.ErrorLog, "http: panic serving %s: %v", fc.remote, p)
			}
		}
	}()
	fc.s.srv.Handler.ServeHTTP(w, r)
	w.finish()
}

func logf(l *log.Logger, format string, args ...any) {
	if l != nil {
		l.Printf(format, args...)
	}
}

// fastRequest is one parsed request; its storage is reused.
type fastRequest struct {
	path          string
	host          string
	hdr           http.Header
	contentLength int64
	body          []byte
	bodyR         bodyReader
	vals          []string
	r             *http.Request
	url           url.URL
}

var errNotFast = errors.New("not for the fast path")

type parseResult int

const (
	notFast     parseResult = iota // net/http's
	fastWhole                      // parsed, ready to serve
	fastPartial                    // could be a fast request; the rest has not arrived
	fastClosed                     // the client went away, or the server is closing
)

// fastPrefix starts every request the fast path takes.
const fastPrefix = "POST /endpoints/"

// parse parses the request at the start of fc.br if it is whole there
// and for the fast path, and returns its length (head and body).
func (fr *fastRequest) parse(fc *fastConn) (int, parseResult) {
	b, _ := fc.br.Peek(fc.br.Buffered())
	i := bytes.Index(b, crlfcrlf)
	if i < 0 {
		// The head so far could still start a fast request.
		if k := min(len(b), len(fastPrefix)); len(b) < fastBufSize && string(b[:k]) == fastPrefix[:k] {
			return 0, fastPartial
		}
		return 0, notFast
	}
	headLen := i + 4
	head, err := parseFastHead(b[:headLen], fr.hdr, fr.vals[:0], fc)
	if err != nil || int64(headLen)+head.contentLength > fastBufSize {
		return 0, notFast
	}
	if int64(len(b)-headLen) < head.contentLength {
		return 0, fastPartial
	}
	fr.vals = head.vals
	fr.path = head.path
	fr.host = head.host
	fr.contentLength = head.contentLength
	fr.body = append(fr.body[:0], b[headLen:headLen+int(head.contentLength)]...)
	return headLen + int(head.contentLength), fastWhole
}

type fastHead struct {
	path          string
	host          string
	contentLength int64
	vals          []string
}

// parseFastHead parses a request head ending in CRLF CRLF into hdr
// (cleared first). It accepts only what net/http's server reads the same
// way and what the router's fast path serves; anything else is errNotFast.
// ic, when set, interns repeated values per connection.
func parseFastHead(b []byte, hdr http.Header, vals []string, ic *fastConn) (fastHead, error) {
	var h fastHead
	clear(hdr)
	h.contentLength = -1
	line, rest, ok := bytes.Cut(b, []byte("\r\n"))
	if !ok {
		return h, errNotFast
	}
	// Request line: POST SP /endpoints/{name}/invocations SP HTTP/1.1
	m, line, ok := bytes.Cut(line, []byte(" "))
	if !ok || string(m) != "POST" {
		return h, errNotFast
	}
	target, proto, ok := bytes.Cut(line, []byte(" "))
	if !ok || string(proto) != "HTTP/1.1" || !bytes.HasPrefix(target, []byte("/endpoints/")) {
		return h, errNotFast
	}
	var name []byte
	switch {
	case bytes.HasSuffix(target, []byte("/invocations")):
		name = target[len("/endpoints/"):max(len("/endpoints/"), len(target)-len("/invocations"))]
	case bytes.HasSuffix(target, []byte("/invocations-response-stream")):
		name = target[len("/endpoints/"):max(len("/endpoints/"), len(target)-len("/invocations-response-stream"))]
	}
	for _, c := range target {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '/' || c == '_') {
			return h, errNotFast
		}
	}
	if len(name) == 0 || bytes.IndexByte(name, '/') >= 0 {
		return h, errNotFast
	}
	if ic != nil && ic.req.path != "" && ic.req.path == string(target) {
		h.path = ic.req.path
	} else {
		h.path = string(target)
	}
	hosts := 0
	for {
		line, rest, ok = bytes.Cut(rest, []byte("\r\n"))
		if !ok {
			return h, errNotFast
		}
		if len(line) == 0 {
			break
		}
		k, v, ok := bytes.Cut(line, []byte(":"))
		if !ok || len(k) == 0 {
			return h, errNotFast
		}
		for _, c := range k {
			if !isTokenByte(c) {
				return h, errNotFast
			}
		}
		v = trimOWS(v)
		for _, c := range v {
			if c < 0x20 && c != '\t' || c == 0x7f {
				return h, errNotFast
			}
		}
		key := canonicalKey(k)
		switch key {
		case "Host":
			hosts++
			if !validFastHost(v) {
				return h, errNotFast
			}
			if ic != nil && ic.lastHost == string(v) {
				h.host = ic.lastHost
			} else {
				h.host = string(v)
				if ic != nil {
					ic.lastHost = h.host
				}
			}
			continue
		case "Content-Length":
			if h.contentLength >= 0 || len(v) == 0 || len(v) > 6 {
				return h, errNotFast
			}
			n := int64(0)
			for _, c := range v {
				if c < '0' || c > '9' {
					return h, errNotFast
				}
				n = n*10 + int64(c-'0')
			}
			h.contentLength = n
		case "Connection":
			// keep-alive is HTTP/1.1's default (Python's requests sends
			// it); anything else (close, upgrade, hop-by-hop names) is
			// net/http's.
			if !bytes.EqualFold(v, []byte("keep-alive")) {
				return h, errNotFast
			}
		case "Transfer-Encoding", "Expect", "Upgrade", "Te", "Trailer", "Http2-Settings", "Proxy-Connection", "Keep-Alive", "Pragma":
			return h, errNotFast
		}
		var sv string
		if key == "Content-Type" && ic != nil {
			if ic.lastCTv != "" && bytes.Equal(v, ic.lastCT) {
				sv = ic.lastCTv
			} else {
				sv = string(v)
				ic.lastCT = append(ic.lastCT[:0], v...)
				ic.lastCTv = sv
			}
		} else {
			sv = string(v)
		}
		if old, ok := hdr[key]; ok {
			hdr[key] = append(old, sv)
			continue
		}
		vals = append(vals, sv)
		hdr[key] = vals[len(vals)-1 : len(vals) : len(vals)]
	}
	if hosts != 1 || h.contentLength < 0 {
		return h, errNotFast
	}
	h.vals = vals
	return h, nil
}

// validFastHost admits host[:port] names and IPv4/IPv6 literals, a subset
// of what net/http's server accepts.
func validFastHost(v []byte) bool {
	if len(v) == 0 {
		return false
	}
	for _, c := range v {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '-' || c == ':' || c == '[' || c == ']' || c == '_') {
			return false
		}
	}
	return true
}

func trimOWS(v []byte) []byte {
	for len(v) > 0 && (v[0] == ' ' || v[0] == '\t') {
		v = v[1:]
	}
	for len(v) > 0 && (v[len(v)-1] == ' ' || v[len(v)-1] == '\t') {
		v = v[:len(v)-1]
	}
	return v
}

func isTokenByte(c byte) bool {
	switch {
	case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		return true
	}
	switch c {
	case '!', '#', '$', '%', '&', '\'', '*', '+', '-', '.', '^', '_', '`', '|', '~':
		return true
	}
	return false
}

// commonKeys are canonical header keys returned without allocating.
var commonKeys = map[string]string{}

func init() {
	for _, k := range []string{"Host", "Content-Length", "Content-Type", "Accept", "User-Agent", "Authorization",
		"X-Amz-Date", "X-Amz-Content-Sha256", "X-Amz-Security-Token", "Amz-Sdk-Invocation-Id", "Amz-Sdk-Request",
		"Accept-Encoding", hdrCustomAttrs, hdrTargetVariant, hdrInferenceID, "X-Amzn-Sagemaker-Session-Id",
		"Transfer-Encoding", "Expect", "Connection", "Upgrade", "Te", "Trailer", "Keep-Alive", "Proxy-Connection", "Http2-Settings", "Pragma"} {
		commonKeys[k] = k
	}
}

// canonicalKey is textproto.CanonicalMIMEHeaderKey for token keys, without
// an allocation for the common ones.
func canonicalKey(k []byte) string {
	var buf [64]byte
	if len(k) <= len(buf) {
		c := buf[:len(k)]
		upper := true
		for i, b := range k {
			if upper && b >= 'a' && b <= 'z' {
				b -= 'a' - 'A'
			} else if !upper && b >= 'A' && b <= 'Z' {
				b += 'a' - 'A'
			}
			c[i] = b
			upper = b == '-'
		}
		if s, ok := commonKeys[string(c)]; ok {
			return s
		}
		return string(c)
	}
	return http.CanonicalHeaderKey(string(k))
}

// build makes the *http.Request the handler sees. One Request (carrying
// the connection's context) serves every request of the connection: the
// router keeps nothing of it past ServeHTTP, which returns before the next
// request is parsed.
func (fr *fastRequest) build(fc *fastConn) *http.Request {
	r := fr.r
	if r == nil {
		r = (&http.Request{}).WithContext(&fc.ctx)
		fr.r = r
	}
	fr.url = url.URL{Path: fr.path}
	fr.bodyR.Reset(fr.body)
	r.Method = http.MethodPost
	r.URL = &fr.url
	r.Proto, r.ProtoMajor, r.ProtoMinor = "HTTP/1.1", 1, 1
	r.Header = fr.hdr
	r.Body = &fr.bodyR
	if fr.contentLength == 0 {
		r.Body = http.NoBody
	}
	r.GetBody = nil
	r.ContentLength = fr.contentLength
	r.TransferEncoding = nil
	r.Close = false
	r.Host = fr.host
	r.Form, r.PostForm, r.MultipartForm, r.Trailer = nil, nil, nil, nil
	r.RemoteAddr = fc.remote
	r.RequestURI = fr.path
	r.TLS = nil
	r.Response = nil
	r.Pattern = ""
	return r
}

// bodyReader is a request body held in memory.
type bodyReader struct{ bytes.Reader }

func (*bodyReader) Close() error { return nil }

// fastResponse is the handler's http.ResponseWriter; its storage is reused.
// The head waits in buf until the first write that must leave (a flush, a
// full buffer, the handler's end), so a short answer leaves whole in one
// write with its Content-Length; a longer one of unknown length, or one
// flushed before its end (a stream), is sent chunked.
type fastResponse struct {
	fc          *fastConn
	hdr         http.Header
	status      int
	wroteHeader bool
	headOut     bool // the head is in buf (sent or about to be)
	chunked     bool
	closeAfter  bool
	writeFailed bool
	deadlineSet bool   // this answer's write deadline is armed
	buf         []byte // bytes to send: head and, unless chunked, body
	cbuf        []byte // chunked: body not yet framed
	spare       []byte // writeHead's other buffer
	written     int64  // body bytes the handler wrote
	dateSec     int64
	date        []byte
}

var (
	_ http.ResponseWriter = (*fastResponse)(nil)
	_ http.Flusher        = (*fastResponse)(nil)
)

// fastMaxBuffered is how much body is held before it is sent.
const fastMaxBuffered = 32 << 10

func (w *fastResponse) reset() {
	clear(w.hdr)
	w.status = 0
	w.wroteHeader = false
	w.headOut = false
	w.chunked = false
	w.closeAfter = false
	w.writeFailed = false
	w.deadlineSet = false
	w.written = 0
	w.buf = w.buf[:0]
	w.cbuf = w.cbuf[:0]
}

func (w *fastResponse) Header() http.Header { return w.hdr }

func (w *fastResponse) WriteHeader(code int) {
	if w.wroteHeader {
		return
	}
	if code < 100 || code > 999 {
		panic("invalid WriteHeader code " + strconv.Itoa(code))
	}
	w.wroteHeader = true
	w.status = code
	if cl := w.hdr[hdrContentLength]; len(cl) == 1 && (w.hdr[hdrContentType] != nil || !bodyAllowed(code)) {
		// The length and type are known: the head can go out with the
		// first bytes. (Without a type, net/http sniffs the body's first
		// bytes, so the head waits for them.)
		w.writeHead(-1)
	}
}

// SetWriteDeadline is for http.ResponseController: the answer's deadline,
// instead of WriteTimeout from its first write.
func (w *fastResponse) SetWriteDeadline(t time.Time) error {
	w.deadlineSet = true
	return w.fc.c.SetWriteDeadline(t)
}

// conn is the connection to write the answer to, its write deadline armed.
func (w *fastResponse) conn() net.Conn {
	if !w.deadlineSet {
		w.deadlineSet = true
		var t time.Time // none, as net/http without WriteTimeout
		if d := w.fc.s.srv.WriteTimeout; d > 0 {
			t = time.Now().Add(d)
		}
		w.fc.c.SetWriteDeadline(t)
	}
	return w.fc.c
}

// failed records a write error: the connection is closed after the
// handler (and the handler's next write fails at once).
func (w *fastResponse) failed() {
	w.closeAfter = true
	w.writeFailed = true
}

func (w *fastResponse) Write(p []byte) (int, error) {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	if !bodyAllowed(w.status) {
		return 0, http.ErrBodyNotAllowed
	}
	w.written += int64(len(p))
	if w.chunked {
		w.cbuf = append(w.cbuf, p...)
		if len(w.cbuf) >= fastMaxBuffered {
			if err := w.sendChunk(false); err != nil {
				return 0, err
			}
		}
		return len(p), nil
	}
	if w.headOut && len(w.buf)+len(p) >= fastMaxBuffered {
		// A large body: what is buffered and p leave in one writev,
		// without copying p.
		bufs := net.Buffers{w.buf, p}
		_, err := bufs.WriteTo(w.conn())
		w.buf = w.buf[:0]
		if err != nil {
			w.failed()
			return 0, err
		}
		return len(p), nil
	}
	w.buf = append(w.buf, p...)
	if len(w.buf) >= fastMaxBuffered {
		if err := w.FlushError(); err != nil {
			return 0, err
		}
	}
	return len(p), nil
}

// Flush is http.Flusher.
func (w *fastResponse) Flush() { w.FlushError() }

// FlushError sends what is buffered (http.ResponseController.Flush).
func (w *fastResponse) FlushError() error {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	if !w.headOut {
		if w.hdr[hdrContentLength] != nil || !bodyAllowed(w.status) {
			w.writeHead(-1)
		} else {
			// The length is unknown and the answer starts: chunked.
			// What is buffered is body, and sets the sniffed type.
			if w.hdr[hdrContentType] == nil && len(w.buf) > 0 {
				w.hdr[hdrContentType] = []string{http.DetectContentType(w.buf)}
			}
			w.cbuf = append(w.cbuf[:0], w.buf...)
			w.buf = w.buf[:0]
			w.chunked = true
			w.writeHead(-1)
		}
	}
	if w.chunked {
		return w.sendChunk(false)
	}
	if len(w.buf) == 0 {
		return nil
	}
	return w.flush()
}

// sendChunk frames what cbuf holds as one chunk (and with last the end of
// the body) and sends it with whatever head is waiting, in one write.
func (w *fastResponse) sendChunk(last bool) error {
	if len(w.cbuf) > 0 {
		w.buf = strconv.AppendInt(w.buf, int64(len(w.cbuf)), 16)
		w.buf = append(w.buf, "\r\n"...)
		w.buf = append(w.buf, w.cbuf...)
		w.buf = append(w.buf, "\r\n"...)
		w.cbuf = w.cbuf[:0]
	}
	if last {
		w.buf = append(w.buf, "0\r\n\r\n"...)
	}
	if len(w.buf) == 0 {
		return nil
	}
	return w.flush()
}

func (w *fastResponse) flush() error {
	_, err := w.conn().Write(w.buf)
	if cap(w.buf) > 128<<10 {
		w.buf = nil
	} else {
		w.buf = w.buf[:0]
	}
	if err != nil {
		w.failed()
	}
	return err
}

func bodyAllowed(status int) bool {
	return !(status >= 100 && status <= 199 || status == 204 || status == 304)
}

// writeHead puts the status line and headers in front of what buf holds.
// n >= 0 is the whole body's length when the handler did not set it.
func (w *fastResponse) writeHead(n int) {
	// The head is built in the spare buffer, the body copied after it,
	// and the two buffers swap: no allocation once both have grown.
	body := w.buf
	head := w.spare[:0]
	head = append(head, "HTTP/1.1 "...)
	head = strconv.AppendInt(head, int64(w.status), 10)
	head = append(head, ' ')
	head = append(head, http.StatusText(w.status)...)
	head = append(head, "\r\n"...)
	if bodyAllowed(w.status) {
		if _, ok := w.hdr[hdrContentLength]; !ok && n >= 0 {
			head = append(head, "Content-Length: "...)
			head = strconv.AppendInt(head, int64(n), 10)
			head = append(head, "\r\n"...)
		}
		if _, ok := w.hdr[hdrContentType]; !ok && len(body) > 0 {
			head = append(head, "Content-Type: "...)
			head = append(head, http.DetectContentType(body)...)
			head = append(head, "\r\n"...)
		}
	}
	if w.chunked {
		head = append(head, "Transfer-Encoding: chunked\r\n"...)
	}
	if _, ok := w.hdr["Date"]; !ok {
		head = append(head, "Date: "...)
		head = append(head, w.dateNow()...)
		head = append(head, "\r\n"...)
	}
	for k, vs := range w.hdr {
		if k == "Connection" {
			for _, v := range vs {
				if v == "close" {
					w.closeAfter = true
				}
			}
		}
		if k == "Transfer-Encoding" || !validHeaderKey(k) {
			continue
		}
		for _, v := range vs {
			head = append(head, k...)
			head = append(head, ": "...)
			head = appendHeaderValue(head, v)
			head = append(head, "\r\n"...)
		}
	}
	head = append(head, "\r\n"...)
	head = append(head, body...)
	w.spare = body[:0]
	if cap(w.spare) > 128<<10 {
		w.spare = nil
	}
	w.buf = head
	w.headOut = true
}

func validHeaderKey(k string) bool {
	if k == "" {
		return false
	}
	for i := 0; i < len(k); i++ {
		if !isTokenByte(k[i]) {
			return false
		}
	}
	return true
}

// appendHeaderValue writes v as net/http does: line breaks become spaces,
// surrounding blanks go.
func appendHeaderValue(b []byte, v string) []byte {
	start := len(b)
	for i := 0; i < len(v); i++ {
		c := v[i]
		if c == '\r' || c == '\n' {
			c = ' '
		}
		b = append(b, c)
	}
	return append(b[:start], trimOWS(b[start:])...)
}

func (w *fastResponse) dateNow() []byte {
	now := time.Now()
	if s := now.Unix(); s != w.dateSec || w.date == nil {
		w.dateSec = s
		w.date = now.UTC().AppendFormat(w.date[:0], http.TimeFormat)
	}
	return w.date
}

// finish sends what the handler left in the buffer.
func (w *fastResponse) finish() {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	if !w.headOut {
		w.writeHead(len(w.buf))
	}
	if w.chunked {
		w.sendChunk(true)
	} else if len(w.buf) > 0 {
		w.flush()
	}
	// A body that does not match the Content-Length the handler set
	// leaves the client unable to find the next answer: close, as
	// net/http does.
	if cl := w.hdr[hdrContentLength]; len(cl) == 1 && bodyAllowed(w.status) {
		if n, err := strconv.ParseInt(cl[0], 10, 64); err != nil || n != w.written {
			w.closeAfter = true
			w.fc.c.Close()
		}
	}
}

// connCtx is the context of every request on one connection: it ends when
// the client hangs up, which ends the connection. It implements AfterFunc
// so context.AfterFunc registers a function without a goroutine.
type connCtx struct {
	mu     sync.Mutex
	done   chan struct{}
	err    error
	funcs  map[*afterFn]struct{}
	closed bool
}

type afterFn struct{ f func() }

func (c *connCtx) init() { c.done = make(chan struct{}) }

func (c *connCtx) Deadline() (time.Time, bool) { return time.Time{}, false }
func (c *connCtx) Done() <-chan struct{}       { return c.done }
func (c *connCtx) Value(any) any               { return nil }

func (c *connCtx) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

func (c *connCtx) cancel() {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return
	}
	c.closed = true
	c.err = context.Canceled
	close(c.done)
	fs := c.funcs
	c.funcs = nil
	c.mu.Unlock()
	for a := range fs {
		go a.f()
	}
}

// AfterFunc is what context.AfterFunc and context.WithCancel use for a
// context that is not one of the context package's own.
func (c *connCtx) AfterFunc(f func()) func() bool {
	a := &afterFn{f: f}
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		go f()
		return func() bool { return false }
	}
	if c.funcs == nil {
		c.funcs = map[*afterFn]struct{}{}
	}
	c.funcs[a] = struct{}{}
	c.mu.Unlock()
	return func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		if _, ok := c.funcs[a]; ok {
			delete(c.funcs, a)
			return true
		}
		return false
	}
}
