package router

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"hash/crc32"
	"io"
	"net/http"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws/protocol/eventstream"
)

// InvokeEndpointWithResponseStream: POST /endpoints/{name}/invocations-response-stream.
//
// The model answers POST /invocations with an HTTP/1.1 chunked body, as on
// SageMaker; every chunk becomes one PayloadPart event of the AWS
// event-stream framing (prelude and message CRCs; the bytes the AWS SDK's
// encoder writes, see appendPayloadPart), in order. A chunk leaves at once unless the next chunk (or the
// end of the body) is already in the router's read buffer: then they leave
// together in one write, as the chunks arrived together. So no part waits
// for one that has not arrived, and a burst of parts costs one write and
// one flush instead of one each. A chunk larger than maxPartBytes is sent
// as several events. Bodies that are not chunked are relayed as they
// arrive, one event per read.
//
// Until the model's first body byte arrives nothing has been written, so
// every failure up to then (no instance, connection refused, model error
// status, timeout, a connection cut before the first byte) is the ordinary
// JSON error of InvokeEndpoint. After it, the HTTP status is out and the
// failure becomes a ModelStreamError event: ErrorCode StreamBroken when the
// model's answer breaks (connection reset, malformed chunking), and
// ModelInvocationTimeExceeded when the stream outlives Config.StreamTimeout.
// A client that hangs up aborts the model's connection.

const (
	hdrSMAccept      = "X-Amzn-Sagemaker-Accept"
	hdrSMContentType = "X-Amzn-Sagemaker-Content-Type"

	eventStreamContentType = "application/vnd.amazon.eventstream"

	// maxPartBytes bounds one PayloadPart; a larger model chunk is split.
	maxPartBytes = 64 << 10

	// ModelStreamError codes, as SageMaker sends them.
	StreamBroken                = "StreamBroken"
	ModelInvocationTimeExceeded = "ModelInvocationTimeExceeded"
)

// eventWriter frames events onto the client's response and flushes each.
type eventWriter struct {
	w   http.ResponseWriter
	rc  *http.ResponseController
	enc *eventstream.Encoder
	buf []byte // one framed PayloadPart

	// Every write must finish within writeTimeout (a stream is long: the
	// deadline its request set bounds only the whole of it, end), so a
	// client that stops reading loses the stream then, not at its end.
	// The deadline moves at most every writeTimeout/4, not per part.
	writeTimeout time.Duration
	end          time.Time
	armedAt      time.Time
}

func newEventWriter(w http.ResponseWriter, writeTimeout time.Duration, end time.Time) *eventWriter {
	return &eventWriter{w: w, rc: http.NewResponseController(w), enc: eventstream.NewEncoder(),
		writeTimeout: writeTimeout, end: end}
}

// arm moves the write deadline to writeTimeout from now (never past end).
func (ew *eventWriter) arm() {
	if now := time.Now(); now.Sub(ew.armedAt) > ew.writeTimeout/4 {
		d := now.Add(ew.writeTimeout)
		if d.After(ew.end) {
			d = ew.end
		}
		ew.rc.SetWriteDeadline(d)
		ew.armedAt = now
	}
}

var (
	payloadPartHeaders = eventstream.Headers{
		{Name: ":event-type", Value: eventstream.StringValue("PayloadPart")},
		{Name: ":content-type", Value: eventstream.StringValue("application/octet-stream")},
		{Name: ":message-type", Value: eventstream.StringValue("event")},
	}
	modelStreamErrorHeaders = eventstream.Headers{
		{Name: ":exception-type", Value: eventstream.StringValue("ModelStreamError")},
		{Name: ":content-type", Value: eventstream.StringValue("application/json")},
		{Name: ":message-type", Value: eventstream.StringValue("exception")},
	}
	internalStreamFailureHeaders = eventstream.Headers{
		{Name: ":exception-type", Value: eventstream.StringValue("InternalStreamFailure")},
		{Name: ":content-type", Value: eventstream.StringValue("application/json")},
		{Name: ":message-type", Value: eventstream.StringValue("exception")},
	}
)

// EncodePayloadPart writes one PayloadPart event carrying p to w. It is
// what the router sends per model chunk; tests and fuzzers use it too.
func EncodePayloadPart(enc *eventstream.Encoder, w io.Writer, p []byte) error {
	return enc.Encode(w, eventstream.Message{Headers: payloadPartHeaders, Payload: p})
}

// payloadPartHead is the encoded headers of every PayloadPart (by the
// SDK's header encoder), so a part's framing is two lengths and two CRCs.
var payloadPartHead = func() []byte {
	var b bytes.Buffer
	if err := eventstream.EncodeHeaders(&b, payloadPartHeaders); err != nil {
		panic(err)
	}
	return b.Bytes()
}()

// appendPayloadPart appends to dst the bytes EncodePayloadPart writes for
// p (TestAppendPayloadPartMatchesSDK), without the SDK encoder's
// allocations and per-field writes: on a stream of small parts those were
// a quarter of the router's CPU. The framing (AWS event stream): total
// length, headers length, CRC-32 of those 8 bytes, headers, payload,
// CRC-32 of all before it; big-endian.
func appendPayloadPart(dst, p []byte) []byte {
	start := len(dst)
	total := 12 + len(payloadPartHead) + len(p) + 4
	dst = binary.BigEndian.AppendUint32(dst, uint32(total))
	dst = binary.BigEndian.AppendUint32(dst, uint32(len(payloadPartHead)))
	dst = binary.BigEndian.AppendUint32(dst, crc32.ChecksumIEEE(dst[start:start+8]))
	dst = append(dst, payloadPartHead...)
	dst = append(dst, p...)
	return binary.BigEndian.AppendUint32(dst, crc32.ChecksumIEEE(dst[start:]))
}

// EncodeModelStreamError writes a ModelStreamError exception event.
func EncodeModelStreamError(enc *eventstream.Encoder, w io.Writer, code, msg string) error {
	b, _ := json.Marshal(struct {
		Message   string `json:"Message"`
		ErrorCode string `json:"ErrorCode"`
	}{msg, code})
	return enc.Encode(w, eventstream.Message{Headers: modelStreamErrorHeaders, Payload: b})
}

func encodeInternalStreamFailure(enc *eventstream.Encoder, w io.Writer, msg string) error {
	b, _ := json.Marshal(struct {
		Message string `json:"Message"`
	}{msg})
	return enc.Encode(w, eventstream.Message{Headers: internalStreamFailureHeaders, Payload: b})
}

// part frames p as one PayloadPart. With flush false it stays in the
// response's buffer, to leave with the parts after it in one write: the
// caller passes false only when the next part is already in hand.
func (ew *eventWriter) part(p []byte, flush bool) error {
	ew.buf = appendPayloadPart(ew.buf[:0], p)
	ew.arm()
	if _, err := ew.w.Write(ew.buf); err != nil {
		return &errClientWrite{err}
	}
	if !flush {
		return nil
	}
	if err := ew.rc.Flush(); err != nil {
		return &errClientWrite{err}
	}
	return nil
}

func (ew *eventWriter) modelError(code, msg string) {
	ew.arm()
	if EncodeModelStreamError(ew.enc, ew.w, code, msg) == nil {
		ew.rc.Flush()
	}
}

// partReader yields a model's body one chunk at a time: each call returns
// the bytes of one HTTP/1.1 chunk (or up to len(buf) of it), never bytes
// of two chunks, so chunk boundaries survive as event boundaries.
type partReader struct {
	br      *bufio.Reader
	pc      *pconn
	chunked bool
	plain   io.Reader // non-chunked bodies
	left    int64     // bytes left in the current chunk
	done    bool
}

func (pc *pconn) partReader(h *respHead) *partReader {
	p := &partReader{br: pc.br, pc: pc, chunked: h.Chunked}
	if !h.Chunked {
		p.plain = pc.bodyReader(h)
	}
	return p
}

// next fills buf with the next part. It returns io.EOF once the body (and
// for chunked bodies its trailer) is fully read, and the connection is
// positioned at the next response.
func (p *partReader) next(buf []byte) (int, error) {
	if p.done {
		return 0, io.EOF
	}
	if !p.chunked {
		n, err := p.plain.Read(buf)
		if err == io.EOF {
			p.done = true
			if n > 0 {
				return n, nil
			}
		}
		return n, err
	}
	if p.left == 0 {
		n, err := p.chunkHeader()
		if err != nil {
			return 0, err
		}
		if n == 0 {
			if err := p.trailer(); err != nil {
				return 0, err
			}
			p.done = true
			return 0, io.EOF
		}
		p.left = n
	}
	want := min(int64(len(buf)), p.left)
	n, err := io.ReadFull(p.br, buf[:want])
	p.left -= int64(n)
	if err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return n, err
	}
	if p.left == 0 {
		if err := p.crlf(); err != nil {
			return n, err
		}
	}
	return n, nil
}

// ready reports whether the next call to next(buf) with len(buf) == size
// returns from bytes already read from the model, without waiting on the
// connection: then the part just read need not be flushed on its own, as
// the next one (or the end of the body) follows at once. It errs towards
// false (a flush), never towards holding a part back.
func (p *partReader) ready(size int) bool {
	if p.done {
		return false
	}
	b, _ := p.br.Peek(p.br.Buffered())
	if !p.chunked {
		return false // one part per read; nothing to gain
	}
	need := func(left int64) int64 {
		if left > int64(size) {
			return int64(size)
		}
		return left + 2 // the data and its CRLF
	}
	if p.left > 0 {
		return int64(len(b)) >= need(p.left)
	}
	i := bytes.IndexByte(b, '\n')
	if i < 0 {
		return false
	}
	line := b[:i]
	if k := len(line); k > 0 && line[k-1] == '\r' {
		line = line[:k-1]
	}
	n, err := parseChunkSize(line)
	if err != nil {
		return true // next reports the error without waiting
	}
	rest := b[i+1:]
	if n == 0 {
		// The last chunk: ready once its (usually empty) trailer ended.
		return bytes.HasPrefix(rest, []byte("\r\n")) || bytes.HasPrefix(rest, []byte("\n")) ||
			bytes.Contains(rest, []byte("\n\r\n")) || bytes.Contains(rest, []byte("\n\n"))
	}
	return int64(len(rest)) >= need(n)
}

// maxChunkSize keeps a chunk size within what int64 arithmetic handles.
const maxChunkSize = 1 << 40

func (p *partReader) chunkHeader() (int64, error) {
	line, err := p.pc.readLine()
	if err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return 0, err
	}
	return parseChunkSize(line)
}

// parseChunkSize parses a chunk-size line (without its line end).
func parseChunkSize(line []byte) (int64, error) {
	// chunk-size [ chunk-ext ]: extensions are ignored, as RFC 9112 allows.
	for i, c := range line {
		if c == ';' || c == ' ' || c == '\t' {
			line = line[:i]
			break
		}
	}
	if len(line) == 0 || len(line) > 11 {
		return 0, &errProtocol{Msg: fmt.Sprintf("bad chunk size %q", truncate(line, 32))}
	}
	var n int64
	for _, c := range line {
		var d byte
		switch {
		case c >= '0' && c <= '9':
			d = c - '0'
		case c >= 'a' && c <= 'f':
			d = c - 'a' + 10
		case c >= 'A' && c <= 'F':
			d = c - 'A' + 10
		default:
			return 0, &errProtocol{Msg: fmt.Sprintf("bad chunk size %q", truncate(line, 32))}
		}
		n = n<<4 | int64(d)
	}
	if n > maxChunkSize {
		return 0, &errProtocol{Msg: "chunk too large"}
	}
	return n, nil
}

func (p *partReader) crlf() error {
	line, err := p.pc.readLine()
	if err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return err
	}
	if len(line) != 0 {
		return &errProtocol{Msg: "chunk data longer than its size"}
	}
	return nil
}

func (p *partReader) trailer() error {
	for i := 0; ; i++ {
		line, err := p.pc.readLine()
		if err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return err
		}
		if len(line) == 0 {
			return nil
		}
		if i >= maxResponseHeaderLines {
			return &errProtocol{Msg: "trailer too large"}
		}
	}
}

// streamResult extends exchangeResult with what a stream measured.
type streamResult struct {
	exchangeResult
	started    bool // the 200 head and at least zero events are out
	firstByte  time.Time
	bytes      int64
	parts      int
	streamCode string // ModelStreamError code sent, if any
}

// streamExchange sends req to one instance and relays its answer as an
// event stream. Before res.started nothing has been written to w.
func (rt *Router) streamExchange(ctx context.Context, w http.ResponseWriter, e *endpoint, s *slot, in *instance, req *outRequest, token string) (res streamResult) {
	vm := s.vm
	in.inflight.Add(1)
	vm.inFlight.Inc()
	defer func() {
		in.inflight.Add(-1)
		vm.inFlight.Dec()
	}()

	var h respHead
	pc, stop, ok := rt.call(ctx, e, vm, in, req, &h, &res.exchangeResult)
	if !ok {
		return res
	}

	bp := rt.getBuf(maxPartBytes)
	defer rt.putBuf(bp)
	buf := (*bp)[:maxPartBytes]
	parts := pc.partReader(&h)
	var ew *eventWriter
	start := func() error {
		hdr := w.Header()
		hdr[hdrContentType] = []string{eventStreamContentType}
		if h.ContentType != nil {
			hdr[hdrSMContentType] = h.ContentType
		}
		hdr[hdrInvokedVariant] = s.header
		if h.CustomAttrs != "" {
			hdr[hdrCustomAttrs] = []string{h.CustomAttrs}
		}
		if err := rt.sessionHeaders(hdr, e, in, req, token, &h); err != nil {
			return err
		}
		w.WriteHeader(http.StatusOK)
		ew = newEventWriter(w, rt.cfg.WriteTimeout, res.modelStart.Add(rt.cfg.StreamTimeout+rt.cfg.WriteTimeout))
		res.started = true
		// The first byte was bounded by the model timeout; the rest of the
		// stream by the stream timeout.
		pc.c.SetDeadline(res.modelStart.Add(rt.cfg.StreamTimeout))
		if ctx.Err() != nil {
			pc.abortFn() // the client left while the deadline moved
		}
		return nil
	}
	for {
		n, err := parts.next(buf)
		if n > 0 {
			if !res.started {
				res.firstByte = time.Now()
				if serr := start(); serr != nil {
					rt.finish(pc, stop, false)
					res.modelEnd = time.Now()
					res.err = serr
					res.outcome = outBroken
					return res
				}
			}
			// Coalesce: a part whose successor is already buffered
			// leaves with it in one write (still one event each); a part
			// that is all there is leaves at once.
			if werr := ew.part(buf[:n], err != nil || !parts.ready(len(buf))); werr != nil {
				rt.finish(pc, stop, false)
				res.modelEnd = time.Now()
				res.outcome = outClientGone
				return res
			}
			res.bytes += int64(n)
			res.parts++
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			rt.finish(pc, stop, false)
			res.modelEnd = time.Now()
			res.err = err
			if ctx.Err() != nil {
				res.outcome = outClientGone
				return res
			}
			if !res.started {
				res.outcome = rt.classify(ctx, in, vm, err)
				return res
			}
			rt.instanceFailed(in, vm, err)
			res.outcome = outAbort
			// Counted before the event leaves, so a client that reads the
			// error and then the metrics sees it counted.
			if isTimeout(err) {
				res.streamCode = ModelInvocationTimeExceeded
				vm.stream.errors.WithLabelValues(res.streamCode).Inc()
				ew.modelError(ModelInvocationTimeExceeded, fmt.Sprintf(
					"Variant %s of endpoint %s did not finish its response stream within %s.", s.variant, e.name, rt.cfg.StreamTimeout))
			} else {
				res.streamCode = StreamBroken
				vm.stream.errors.WithLabelValues(res.streamCode).Inc()
				ew.modelError(StreamBroken, fmt.Sprintf(
					"The response stream from variant %s of endpoint %s broke: %v.", s.variant, e.name, err))
			}
			return res
		}
	}
	res.modelEnd = time.Now()
	rt.finish(pc, stop, !h.Close)
	if ew != nil {
		// The stream's end is written after this returns: it gets its own
		// WriteTimeout, however long the model paused before its EOF.
		ew.arm()
	}
	if !res.started {
		// An empty answer: an empty stream.
		res.firstByte = res.modelEnd
		if serr := start(); serr != nil {
			res.err = serr
			res.outcome = outBroken
			return res
		}
	}
	rt.instanceOK(in)
	res.status = http.StatusOK
	res.outcome = outOK
	return res
}

// reportStream writes the error answer of a stream that failed before it
// started and records the stream's metrics.
func (rt *Router) reportStream(w http.ResponseWriter, e *endpoint, s *slot, res *streamResult, start time.Time) {
	vm := s.vm
	sm := vm.stream
	vm.invocations.Inc()
	if !res.firstByte.IsZero() {
		sm.ttfb.Observe(res.firstByte.Sub(res.modelStart).Seconds())
		sm.duration.Observe(res.modelEnd.Sub(res.modelStart).Seconds())
		sm.bytes.Add(float64(res.bytes))
		vm.overhead.Observe(res.modelStart.Sub(start).Seconds())
	}
	if res.started {
		if res.outcome == outAbort {
			vm.errors5xx.Inc()
		}
		return
	}
	rt.writeOutcome(w, e, s, &res.exchangeResult)
}

// writeOutcome writes the JSON error of a failed exchange whose answer has
// not started; it is shared by InvokeEndpoint and the streaming path.
func (rt *Router) writeOutcome(w http.ResponseWriter, e *endpoint, s *slot, res *exchangeResult) {
	vm := s.vm
	name := e.name
	switch res.outcome {
	case outModelError:
		if res.status >= 500 {
			vm.errors5xx.Inc()
		} else {
			vm.errors4xx.Inc()
		}
		writeErrorBody(w, http.StatusFailedDependency, &ErrorBody{
			Type: CodeModel,
			Message: fmt.Sprintf("Received %s error (%d) from variant %s of endpoint %s with message %q.",
				errorClass(res.status), res.status, s.variant, name, truncString(res.message, 1024)),
			OriginalStatusCode: res.status,
			OriginalMessage:    res.message,
		})
	case outTimeout:
		vm.errors5xx.Inc()
		writeErrorBody(w, http.StatusFailedDependency, &ErrorBody{
			Type: CodeModel,
			Message: fmt.Sprintf("Your invocation timed out after %s while waiting for a response from variant %s of endpoint %s. Review the model latency metrics, resolve the issue, and try again.",
				e.timeout, s.variant, name),
		})
	case outBroken:
		vm.errors5xx.Inc()
		writeErrorBody(w, http.StatusFailedDependency, &ErrorBody{
			Type: CodeModel,
			Message: fmt.Sprintf("Variant %s of endpoint %s did not return a complete response: %v.",
				s.variant, name, res.err),
		})
	case outConnectFailed:
		vm.errors5xx.Inc()
		writeError(w, http.StatusServiceUnavailable, CodeServiceUnavailable,
			fmt.Sprintf("No instance of variant %s of endpoint %s accepted a connection: %v.", s.variant, name, res.err))
	}
}
