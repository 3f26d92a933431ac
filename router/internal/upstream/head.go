// Package upstream is the router's HTTP/1.1 client side, seen from the
// router through a small boundary: a Pool gets a connection to one model
// instance, a Conn does one exchange (write the request, read the answer's
// head, hand out its body) and is released as reusable or not. The router
// implements them with its pooled keep-alive connections (router/upstream.go);
// this package owns the part that decides framing, Reader: how an answer's
// head is read and where its body ends. A connection whose framing is
// misread serves the next request another request's answer, so Reader is
// strict (README "Model answers") and fuzzed against net/http's response
// reader (FuzzAgainstNetHTTP): where net/http refuses an answer's framing,
// Reader refuses it too, and where Reader accepts one, net/http reads the
// same status, passed-through headers and body.
//
// It must not import the router or know about routing, metrics or
// SageMaker errors.
package upstream

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http/httputil"
	"time"
)

const (
	maxResponseHeaderBytes = 64 << 10
	maxResponseHeaderLines = MaxHeaderLines
	// max1xxResponses bounds the informational answers (100 Continue,
	// 103 Early Hints) skipped before the final one, as net/http does.
	max1xxResponses = 5
)

// MaxHeaderLines bounds an answer's header and trailer lines.
const MaxHeaderLines = 256

// Pool hands out connections to one model instance.
type Pool[Req any] interface {
	// Get returns a connection for one exchange, its deadline set;
	// an idle one when one is still open, else a new one.
	Get(ctx context.Context, deadline time.Time) (Conn[Req], error)
}

// Conn is one keep-alive connection, used for one exchange at a time.
type Conn[Req any] interface {
	// Exchange writes req and reads the answer's head into h (1xx
	// answers skipped). On error the connection must be released as not
	// reusable.
	Exchange(ctx context.Context, req Req, h *Head) error
	// Body reads the answer's body as h frames it.
	Body(h *Head) io.Reader
	// Release ends the exchange: the connection goes back to its pool when
	// reusable (the body was read exactly and h.Close is false), else it
	// is closed.
	Release(reusable bool)
}

// Head is the part of a model's answer the router uses.
type Head struct {
	Status      int
	ContentType []string // nil when the model sent none
	CustomAttrs string
	// NewSession and ClosedSession are the model's stateful-session
	// answers (X-Amzn-SageMaker-Session-Id, -Closed-Session-Id).
	NewSession    string
	ClosedSession string
	ContentLength int64 // -1 when unknown
	Chunked       bool
	Close         bool // the connection cannot be reused after this answer
	NoBody        bool
}

// Reader reads answers from one connection. It keeps per-connection state
// (the last Content-Type seen, a reusable body reader), so a steady stream
// of answers allocates nothing.
type Reader struct {
	BR *bufio.Reader

	fixed fixedBody

	// lastCT caches the last Content-Type seen on this connection: a model
	// answers with the same one every time, so the string and the header
	// slice are reused instead of allocated per response.
	lastCT  []byte
	lastCTv []string
}

// NewReader reads answers from br.
func NewReader(br *bufio.Reader) *Reader {
	r := &Reader{BR: br}
	r.fixed.br = br
	return r
}

// ProtocolError is a malformed response from the instance.
type ProtocolError struct{ Msg string }

func (e *ProtocolError) Error() string { return "malformed response from model: " + e.Msg }

// ReadHead reads the status line and headers, skipping 1xx answers.
func (r *Reader) ReadHead(h *Head) error {
	for n := 0; ; n++ {
		if err := r.readOneHead(h); err != nil {
			return err
		}
		if h.Status >= 200 || h.Status == 101 {
			break
		}
		if n >= max1xxResponses {
			return &ProtocolError{"too many 1xx informational responses"}
		}
	}
	if h.Status == 101 {
		return &ProtocolError{"unexpected 101 Switching Protocols"}
	}
	if h.Status == 204 || h.Status == 304 {
		h.NoBody = true
		h.ContentLength = 0
		h.Chunked = false
	}
	if !h.Chunked && h.ContentLength < 0 && !h.NoBody {
		// Delimited by close: the connection cannot be reused.
		h.Close = true
	}
	return nil
}

func (r *Reader) readOneHead(h *Head) error {
	*h = Head{ContentLength: -1}
	line, err := r.readLine()
	if err != nil {
		return err
	}
	// "HTTP/1.1 200 OK"
	if len(line) < 12 || !bytes.HasPrefix(line, []byte("HTTP/1.")) || (line[7] != '0' && line[7] != '1') ||
		line[8] != ' ' || (len(line) > 12 && line[12] != ' ') {
		return &ProtocolError{fmt.Sprintf("bad status line %q", truncate(line, 64))}
	}
	http10 := line[7] == '0'
	code := 0
	for _, c := range line[9:12] {
		if c < '0' || c > '9' {
			return &ProtocolError{fmt.Sprintf("bad status code in %q", truncate(line, 64))}
		}
		code = code*10 + int(c-'0')
	}
	if code < 100 {
		return &ProtocolError{fmt.Sprintf("bad status code %d", code)}
	}
	h.Status = code
	keepAlive, hasCL, hasTE := false, false, false
	// A field sent twice that should be sent once (a broken model): the
	// first one counts, which is what net/http's Header.Get, and so the
	// router's other paths and most clients, would read.
	hasCA, hasNS, hasCS := false, false, false
	clLen := 0
	total := len(line)
	for n := 0; ; n++ {
		line, err := r.readLine()
		if err != nil {
			return err
		}
		if len(line) == 0 {
			break
		}
		total += len(line)
		if n >= maxResponseHeaderLines || total > maxResponseHeaderBytes {
			return &ProtocolError{"response headers too large"}
		}
		if line[0] == ' ' || line[0] == '\t' {
			return &ProtocolError{"obsolete header line folding"}
		}
		colon := bytes.IndexByte(line, ':')
		if colon <= 0 || !validHeaderLine(line, colon) {
			// Includes "Name : value": a name the router would not
			// recognise while the model meant it (RFC 9112 5.1).
			return &ProtocolError{fmt.Sprintf("bad header line %q", truncate(line, 64))}
		}
		name := line[:colon]
		value := bytes.Trim(line[colon+1:], " \t")
		switch {
		case len(name) == 12 && asciiEqualFold(name, "content-type"):
			if h.ContentType == nil {
				h.ContentType = r.internCT(value)
			}
		case len(name) == 14 && asciiEqualFold(name, "content-length"):
			n, ok := parseLength(value)
			// Repeated only as the same text, as net/http insists: "02"
			// and "2" are one number but two readings to a stricter peer.
			// Digits only, so equal value and equal length is equal text.
			if !ok || (h.ContentLength >= 0 && (h.ContentLength != n || len(value) != clLen)) {
				return &ProtocolError{"bad Content-Length"}
			}
			h.ContentLength = n
			clLen = len(value)
			hasCL = true
		case len(name) == 17 && asciiEqualFold(name, "transfer-encoding"):
			// Only "chunked", once: the router passes bodies on unchanged,
			// so it cannot take other codings (gzip would reach the client
			// undecoded), and anything else is how framing desyncs start.
			// net/http's client refuses the same.
			if hasTE || !asciiEqualFold(value, "chunked") {
				return &ProtocolError{fmt.Sprintf("unsupported Transfer-Encoding %q", truncate(value, 64))}
			}
			hasTE = true
			h.Chunked = true
		case len(name) == 10 && asciiEqualFold(name, "connection"):
			if containsToken(value, "close") {
				h.Close = true
			}
			if containsToken(value, "keep-alive") {
				keepAlive = true
			}
		case len(name) == 34 && asciiEqualFold(name, "x-amzn-sagemaker-custom-attributes"):
			if !hasCA {
				h.CustomAttrs, hasCA = string(value), true
			}
		case len(name) == 27 && asciiEqualFold(name, "x-amzn-sagemaker-session-id"):
			if !hasNS {
				h.NewSession, hasNS = string(value), true
			}
		case len(name) == 34 && asciiEqualFold(name, "x-amzn-sagemaker-closed-session-id"):
			if !hasCS {
				h.ClosedSession, hasCS = string(value), true
			}
		}
	}
	if h.Chunked {
		// Transfer-Encoding did not exist in HTTP/1.0 and net/http ignores
		// it there (reading to the close): the two readings differ, so
		// the answer is refused rather than guessed at.
		if http10 {
			return &ProtocolError{"Transfer-Encoding in an HTTP/1.0 answer"}
		}
		h.ContentLength = -1
		// Transfer-Encoding overrides Content-Length, but a message with
		// both is suspect (RFC 9112 6.1, 6.3): read it as chunked, then do
		// not trust the connection again.
		if hasCL {
			h.Close = true
		}
	}
	if http10 && !keepAlive {
		h.Close = true
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

// ReadLine reads one line of at most the buffer's size, without its CRLF
// or LF, for readers of other framings on the same connection (the
// router's event streams).
func (r *Reader) ReadLine() ([]byte, error) { return r.readLine() }

func (r *Reader) readLine() ([]byte, error) {
	line, err := r.BR.ReadSlice('\n')
	if err == bufio.ErrBufferFull {
		return nil, &ProtocolError{"header line too long"}
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

func (r *Reader) internCT(v []byte) []string {
	if r.lastCTv != nil && bytes.Equal(v, r.lastCT) {
		return r.lastCTv
	}
	s := string(v)
	r.lastCT = append(r.lastCT[:0], v...)
	r.lastCTv = []string{s}
	return r.lastCTv
}

// Body returns a reader for the body of the answer whose head h is. A
// chunked body's trailer section is read and dropped at its end, so the
// connection is positioned at the next answer once Body returns io.EOF.
func (r *Reader) Body(h *Head) io.Reader {
	switch {
	case h.NoBody:
		r.fixed.n = 0
		return &r.fixed
	case h.Chunked:
		return &chunkedBody{r: httputil.NewChunkedReader(r.BR), hr: r}
	case h.ContentLength >= 0:
		r.fixed.n = h.ContentLength
		return &r.fixed
	default:
		return r.BR
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
	hr   *Reader
	done bool
}

func (c *chunkedBody) Read(p []byte) (int, error) {
	if c.done {
		return 0, io.EOF
	}
	n, err := c.r.Read(p)
	if err == io.EOF {
		for i := 0; ; i++ {
			line, lerr := c.hr.BR.ReadSlice('\n')
			switch {
			case lerr == io.EOF:
				// Cut before the trailer's end: not a whole answer.
				return n, io.ErrUnexpectedEOF
			case lerr == bufio.ErrBufferFull:
				return n, &ProtocolError{"trailer line too long"}
			case lerr != nil:
				return n, lerr
			case !bytes.HasSuffix(line, []byte("\r\n")):
				// net/http insists on CRLF here too.
				return n, &ProtocolError{"trailer line not ended by CRLF"}
			}
			line = line[:len(line)-2]
			if len(line) == 0 {
				break
			}
			if i >= maxResponseHeaderLines {
				return n, &ProtocolError{"trailer too large"}
			}
			// Trailer fields are dropped, but must be fields: anything
			// else means the chunk framing was misread.
			colon := bytes.IndexByte(line, ':')
			if line[0] == ' ' || line[0] == '\t' || colon <= 0 || !validHeaderLine(line, colon) {
				return n, &ProtocolError{fmt.Sprintf("bad trailer line %q", truncate(line, 64))}
			}
		}
		c.done = true
	}
	return n, err
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
		if asciiEqualFold(bytes.Trim(tok, " \t"), lower) {
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
