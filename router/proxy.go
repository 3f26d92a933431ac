package router

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/seraihq/serai/internal/names"
)

// Canonical header keys, looked up in the request's header map directly so
// no key is canonicalised per request.
const (
	hdrContentType    = "Content-Type"
	hdrAccept         = "Accept"
	hdrCustomAttrs    = "X-Amzn-Sagemaker-Custom-Attributes"
	hdrTargetVariant  = "X-Amzn-Sagemaker-Target-Variant"
	hdrInferenceID    = "X-Amzn-Sagemaker-Inference-Id"
	hdrInvokedVariant = "X-Amzn-Invoked-Production-Variant"
	hdrContentLength  = "Content-Length"
)

// maxModelErrorBody is how much of a model's error answer is kept for
// OriginalMessage; longer bodies are cut and their connection closed.
const maxModelErrorBody = 64 << 10

// ServeHTTP routes the SageMaker runtime API, /ping and /metrics.
func (rt *Router) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p := r.URL.Path
	if rest, ok := strings.CutPrefix(p, "/endpoints/"); ok {
		name, op, found := strings.Cut(rest, "/")
		stream := op == "invocations-response-stream"
		if !found || (op != "invocations" && !stream) {
			rt.m.rejBadPath.Inc()
			writeError(w, http.StatusNotFound, CodeUnknownOperation, "No operation matches "+strconv.Quote(truncString(p, 256))+".")
			return
		}
		if r.Method != http.MethodPost {
			rt.m.rejMethod.Inc()
			w.Header()["Allow"] = []string{"POST"}
			writeError(w, http.StatusMethodNotAllowed, CodeUnknownOperation, "InvokeEndpoint takes POST, not "+truncString(r.Method, 16)+".")
			return
		}
		rt.invoke(w, r, name, stream)
		return
	}
	switch p {
	case "/ping":
		if rt.draining.Load() {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		w.WriteHeader(http.StatusOK)
	case "/metrics":
		rt.metricsH.ServeHTTP(w, r)
	default:
		rt.m.rejBadPath.Inc()
		writeError(w, http.StatusNotFound, CodeUnknownOperation, "No operation matches "+strconv.Quote(truncString(p, 256))+".")
	}
}

// armAnswer bounds how long a client that stops reading can hold this
// request: the answer may wait for the model, then gets WriteTimeout to
// leave. The server (net/http's WriteTimeout, the fast path per answer)
// sets WriteTimeout for answers that do not come through invoke.
func (rt *Router) armAnswer(w http.ResponseWriter, e *endpoint, stream bool) {
	wait := e.timeout
	if stream {
		wait = rt.cfg.StreamTimeout
	}
	http.NewResponseController(w).SetWriteDeadline(time.Now().Add(wait + rt.cfg.WriteTimeout))
}

// invoke serves InvokeEndpoint and, with stream, InvokeEndpointWithResponseStream
// (stream.go): admission is the same, the answer differs.
func (rt *Router) invoke(w http.ResponseWriter, r *http.Request, name string, stream bool) {
	start := time.Now()
	// With SigV4 on, the header checks come before anything else, and the
	// signature over the body is checked once the body is in.
	var signed *signedRequest
	if rt.sigv4 != nil {
		var ae *authError
		if signed, ae = rt.sigv4.precheck(r); ae != nil {
			closeUnreadBody(w, r)
			rt.refuseAuth(w, name, ae)
			return
		}
	}
	e := rt.table.Load().endpoints[name]
	if e == nil {
		if signed != nil && !rt.authenticateEarly(w, r, name, signed) {
			return
		}
		if rt.awaitingSync.Load() {
			rt.m.rejNotSynced.Inc()
			writeError(w, http.StatusServiceUnavailable, CodeServiceUnavailable, "The router has not loaded its routing table yet; retry later.")
			return
		}
		rt.m.rejUnknownEndpoint.Inc()
		if !names.Valid(name) {
			writeError(w, http.StatusBadRequest, CodeValidation,
				"1 validation error detected: Value "+strconv.Quote(truncString(name, 256))+" at 'endpointName' failed to satisfy constraint: Member must satisfy regular expression pattern: ^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}")
			return
		}
		writeError(w, http.StatusBadRequest, CodeValidation, "Endpoint "+name+" of account "+rt.cfg.Account+" not found.")
		return
	}
	if rt.cfg.Authenticate != nil && signed == nil {
		if err := rt.cfg.Authenticate(r); err != nil {
			closeUnreadBody(w, r)
			e.em.errors4xx.Inc()
			writeError(w, http.StatusForbidden, CodeAccessDenied, err.Error())
			return
		}
	}

	// Refuse oversized bodies from the header alone, before reading a byte.
	if r.ContentLength > rt.cfg.MaxBodyBytes {
		e.em.errors4xx.Inc()
		rt.tooLarge(w, r.ContentLength)
		return
	}
	h := r.Header
	req := outRequest{
		contentType: first(h[hdrContentType]),
		accept:      first(h[hdrAccept]),
		customAttrs: first(h[hdrCustomAttrs]),
		inferenceID: first(h[hdrInferenceID]),
	}
	if stream {
		req.accept = first(h[hdrSMAccept])
	}
	target := first(h[hdrTargetVariant])
	badHeaders := validateHeaders(&req, target)
	if badHeaders == "" {
		badHeaders = checkUnsupported(h)
	}
	sess, msg := rt.parseSession(h, stream)
	if badHeaders == "" {
		badHeaders = msg
	}
	// A signed request hears about its headers only once it is verified:
	// otherwise the 400 would tell a caller holding a key ID but no secret
	// that the endpoint exists.
	if badHeaders != "" && signed == nil {
		e.em.errors4xx.Inc()
		writeError(w, http.StatusBadRequest, CodeValidation, badHeaders)
		return
	}

	// The body is charged to the memory budget as it arrives, and the
	// concurrency limit is taken once it is all here: a client that
	// announces a body and sends it slowly, or never, holds neither.
	bp, body, n, err := rt.readBody(r)
	if bp != nil {
		defer rt.releaseBody(bp)
	}
	// Every answer from here, refusals included, gets its write deadline
	// now: net/http's WriteTimeout ran from the end of the head, and the
	// body may have taken longer than that to arrive.
	rt.armAnswer(w, e, stream)
	if n > rt.cfg.MaxBodyBytes {
		e.em.errors4xx.Inc()
		rt.tooLarge(w, -1)
		return
	}
	if err == errBodyBudget {
		e.em.errors4xx.Inc()
		rt.bodyBudgetSpent(w, r)
		return
	}
	if err != nil {
		e.em.errors4xx.Inc()
		writeError(w, http.StatusBadRequest, CodeValidation, "Could not read the request body: "+err.Error())
		return
	}
	req.body = body
	if signed != nil {
		if ae := rt.sigv4.verify(r, signed, body); ae != nil {
			rt.refuseAuth(w, name, ae)
			return
		}
		if rt.cfg.Authenticate != nil {
			if err := rt.cfg.Authenticate(r); err != nil {
				e.em.errors4xx.Inc()
				writeError(w, http.StatusForbidden, CodeAccessDenied, err.Error())
				return
			}
		}
		if badHeaders != "" {
			e.em.errors4xx.Inc()
			writeError(w, http.StatusBadRequest, CodeValidation, badHeaders)
			return
		}
	}

	if rt.inFlight.Add(1) > rt.cfg.MaxInFlight {
		rt.inFlight.Add(-1)
		rt.m.rejOverloaded.Inc()
		e.em.errors5xx.Inc()
		writeError(w, http.StatusServiceUnavailable, CodeServiceUnavailable, "The router is at its concurrency limit; retry later.")
		return
	}
	defer rt.inFlight.Add(-1)

	var s *slot
	var in *instance
	perr := pickOK
	if sess.token != "" {
		st, msg := rt.resolveSession(e, sess, target, &req)
		if msg != "" {
			e.em.errors4xx.Inc()
			writeError(w, http.StatusBadRequest, CodeValidation, msg)
			return
		}
		s, in = st.s, st.in
	} else {
		if sess.open {
			req.sessionID = NewSession
		}
		s, in, perr = e.choose(target)
		if rt.cfg.Waker != nil {
			if perr == pickNoInstance && len(e.wakeFor(target)) > 0 {
				var outcome string
				e, s, in, perr, outcome = rt.holdForInstance(r.Context(), e, target, start)
				rt.m.holdOutcomes.WithLabelValues(name, outcome).Inc()
				rt.armAnswer(w, e, stream) // the hold took part of the first deadline
				switch outcome {
				case holdFull, holdTimeout:
					notReady(w, e, target, outcome)
					return
				case holdDraining:
					draining(w, e)
					return
				case holdGone:
					return
				}
			} else if target == "" && e.sleeping != nil {
				rt.signalWake(name, e.sleeping)
			}
		}
	}
	switch perr {
	case pickUnknownVariant:
		e.em.errors4xx.Inc()
		writeError(w, http.StatusBadRequest, CodeValidation,
			"The variant "+strconv.Quote(truncString(target, 64))+" specified in TargetVariant does not exist for endpoint "+name+".")
		return
	case pickNoInstance:
		e.em.errors5xx.Inc()
		if target != "" {
			writeError(w, http.StatusServiceUnavailable, CodeServiceUnavailable, "Variant "+target+" of endpoint "+name+" has no healthy instance.")
		} else {
			writeError(w, http.StatusServiceUnavailable, CodeServiceUnavailable, "Endpoint "+name+" has no healthy instance.")
		}
		return
	}

	if len(e.shadows) > 0 {
		rt.mirror(e, &req)
	}

	ctx := r.Context()
	var res exchangeResult
	for attempt := 0; ; attempt++ {
		if stream {
			sres := rt.streamExchange(ctx, w, e, s, in, &req, sess.token)
			res = sres.exchangeResult
			if res.outcome != outConnectFailed || attempt > 0 || sess.token != "" {
				rt.reportStream(w, e, s, &sres, start)
				return
			}
		} else {
			res = rt.exchange(ctx, w, e, s, in, &req, sess.token)
		}
		// A session lives on its instance: never move it.
		if res.outcome != outConnectFailed || attempt > 0 || sess.token != "" {
			break
		}
		// Nothing reached the instance: safe to try another one, once,
		// from the table as it is now (a rescued request's instance has
		// just left it).
		if cur := rt.table.Load().endpoints[name]; cur != nil {
			e = cur
		}
		s2, in2 := e.chooseExcept(target, in)
		if in2 == nil {
			break
		}
		s.vm.retries.Inc()
		s, in = s2, in2
	}

	vm := s.vm
	vm.invocations.Inc()
	switch res.outcome {
	case outOK:
		vm.modelLatency.Observe(res.modelEnd.Sub(res.modelStart).Seconds())
		vm.overhead.Observe(res.modelStart.Sub(start).Seconds())
	case outModelError:
		vm.modelLatency.Observe(res.modelEnd.Sub(res.modelStart).Seconds())
		vm.overhead.Observe(res.modelStart.Sub(start).Seconds())
		rt.writeOutcome(w, e, s, &res)
	case outTimeout, outBroken, outConnectFailed:
		rt.writeOutcome(w, e, s, &res)
	case outClientGone:
		// Nobody to answer; not the instance's fault.
	case outAbort:
		// The model failed mid-body after the answer started: drop the
		// client connection so it cannot mistake a cut body for a whole one.
		vm.errors5xx.Inc()
		panic(http.ErrAbortHandler)
	}
	if rt.log.IsDebug() {
		rt.log.Debug("invoke", "endpoint", name, "variant", s.variant, "generation", s.generation,
			"instance", in.addr, "outcome", res.outcome.String(), "status", res.status,
			"total", time.Since(start), "inference_id", req.inferenceID)
	}
}

type outcome int

const (
	outOK outcome = iota
	outModelError
	outTimeout
	outBroken
	outConnectFailed
	outClientGone
	outAbort
)

func (o outcome) String() string {
	return [...]string{"ok", "model_error", "timeout", "broken", "connect_failed", "client_gone", "abort"}[o]
}

type exchangeResult struct {
	outcome    outcome
	status     int
	message    string
	err        error
	modelStart time.Time
	modelEnd   time.Time
}

// call sends req to one instance and reads the answer's head into h. A
// failure or a non-2xx answer is settled here (the body consumed, the
// instance judged, res filled in) and ok is false; on a 2xx the caller
// relays the body from pc and finishes the connection. The request paths,
// buffered and streamed, share it so they judge answers alike.
func (rt *Router) call(ctx context.Context, e *endpoint, vm *variantMetrics, in *instance, req *outRequest, h *respHead, res *exchangeResult) (*pconn, func() bool, bool) {
	res.modelStart = time.Now()
	pc, stop, err := rt.roundTrip(ctx, in, req, res.modelStart.Add(e.timeout), h)
	if err != nil {
		res.modelEnd = time.Now()
		res.err = err
		res.outcome = rt.classify(ctx, in, vm, err)
		return nil, nil, false
	}
	if h.Status/100 == 2 {
		return pc, stop, true
	}
	msg, clean, err := readLimited(pc.bodyReader(h), maxModelErrorBody)
	rt.finish(pc, stop, clean && err == nil && !h.Close)
	res.modelEnd = time.Now()
	if err != nil {
		res.err = err
		res.outcome = rt.classify(ctx, in, vm, err)
		return nil, nil, false
	}
	if h.Status == http.StatusBadGateway || h.Status == http.StatusServiceUnavailable || h.Status == http.StatusGatewayTimeout {
		rt.instanceFailed(in, vm, fmt.Errorf("model answered %d", h.Status))
	} else {
		rt.instanceOK(in)
	}
	res.outcome = outModelError
	res.status = h.Status
	res.message = modelMessage(msg)
	return nil, nil, false
}

// exchange sends req to one instance. On outOK the answer has been written
// to w; on every other outcome nothing has been written yet, except for
// outAbort.
func (rt *Router) exchange(ctx context.Context, w http.ResponseWriter, e *endpoint, s *slot, in *instance, req *outRequest, token string) (res exchangeResult) {
	vm := s.vm
	in.inflight.Add(1)
	vm.inFlight.Inc()
	defer func() {
		in.inflight.Add(-1)
		vm.inFlight.Dec()
	}()

	var h respHead
	pc, stop, ok := rt.call(ctx, e, vm, in, req, &h, &res)
	if !ok {
		return res
	}

	if h.ContentLength > rt.cfg.MaxBodyBytes {
		// SageMaker's 6 MB cap holds for answers too; a chunked answer
		// that outgrows it is cut below (its head is already out).
		rt.finish(pc, stop, false)
		res.modelEnd = time.Now()
		res.err = fmt.Errorf("its answer of %d bytes exceeds the %d-byte response payload limit", h.ContentLength, rt.cfg.MaxBodyBytes)
		res.outcome = outBroken
		return res
	}
	hdr := w.Header()
	if h.ContentType != nil {
		hdr[hdrContentType] = h.ContentType
	} else {
		hdr[hdrContentType] = nil // no sniffing: the model sent no type
	}
	hdr[hdrInvokedVariant] = s.header
	if h.CustomAttrs != "" {
		hdr[hdrCustomAttrs] = []string{h.CustomAttrs}
	}
	if h.NewSession != "" || h.ClosedSession != "" {
		if err := rt.sessionHeaders(hdr, e, in, req, token, &h); err != nil {
			rt.finish(pc, stop, false)
			res.modelEnd = time.Now()
			res.err = err
			res.outcome = outBroken
			return res
		}
	}
	if !h.Chunked && h.ContentLength >= 0 {
		hdr[hdrContentLength] = pc.contentLengthHeader(h.ContentLength)
	}
	w.WriteHeader(http.StatusOK)
	var err error
	if !h.Chunked && h.ContentLength >= 0 {
		if h.ContentLength <= int64(pc.br.Size()) {
			_, err = pc.relayFixed(w, h.ContentLength, nil)
		} else {
			bp := rt.getBuf(32 << 10)
			_, err = pc.relayFixed(w, h.ContentLength, (*bp)[:32<<10])
			rt.putBuf(bp)
		}
	} else {
		bp := rt.getBuf(32 << 10)
		var n int64
		n, err = relay(w, io.LimitReader(pc.bodyReader(&h), rt.cfg.MaxBodyBytes+1), (*bp)[:32<<10])
		rt.putBuf(bp)
		if err == nil && n > rt.cfg.MaxBodyBytes {
			err = fmt.Errorf("the answer exceeds the %d-byte response payload limit", rt.cfg.MaxBodyBytes)
		}
	}
	res.modelEnd = time.Now()
	rt.finish(pc, stop, err == nil && !h.Close)
	res.status = http.StatusOK
	if err != nil {
		var cw *errClientWrite
		if errors.As(err, &cw) || ctx.Err() != nil {
			res.outcome = outClientGone
			return res
		}
		rt.instanceFailed(in, vm, err)
		res.err = err
		res.outcome = outAbort
		return res
	}
	rt.instanceOK(in)
	res.outcome = outOK
	return res
}

// roundTrip sends the request and reads the response head. On success the
// caller owns pc and must hand it to finish with stop.
func (rt *Router) roundTrip(ctx context.Context, in *instance, req *outRequest, deadline time.Time, h *respHead) (*pconn, func() bool, error) {
	pc, err := in.pool.get(ctx, deadline)
	if err != nil {
		return nil, nil, err
	}
	stop := context.AfterFunc(ctx, pc.abortFn)
	werr, err := pc.send(ctx, req, h)
	if err != nil && werr != nil && pc.reused && ctx.Err() == nil && !isTimeout(werr) {
		// The instance closed this idle connection after the liveness
		// probe, without answering; the request never arrived. Use a
		// fresh connection.
		stop()
		pc.pool.discard(pc)
		pc, err = in.pool.dial(ctx, deadline)
		if err != nil {
			return nil, nil, err
		}
		stop = context.AfterFunc(ctx, pc.abortFn)
		_, err = pc.send(ctx, req, h)
	}
	if err != nil {
		stop()
		pc.pool.discard(pc)
		return nil, nil, err
	}
	return pc, stop, nil
}

// finish returns a connection to its pool if the exchange left it clean.
func (rt *Router) finish(pc *pconn, stop func() bool, reusable bool) {
	// stop is false when the request context fired and poisoned the
	// connection's deadline.
	if stop() && reusable {
		pc.pool.put(pc)
		return
	}
	pc.pool.discard(pc)
}

func (rt *Router) classify(ctx context.Context, in *instance, vm *variantMetrics, err error) outcome {
	if ctx.Err() != nil {
		return outClientGone
	}
	var ce *errConnect
	if errors.As(err, &ce) {
		rt.instanceFailed(in, vm, err)
		return outConnectFailed
	}
	rt.instanceFailed(in, vm, err)
	if isTimeout(err) {
		return outTimeout
	}
	return outBroken
}

// mirror sends a sample of the request to each shadow variant in the
// background. It never blocks the caller and never touches the client's
// answer.
func (rt *Router) mirror(e *endpoint, req *outRequest) {
	for _, sh := range e.shadows {
		if !sh.sampled() {
			continue
		}
		if len(sh.insts) == 0 {
			sh.sm.dropped.Inc()
			continue
		}
		if rt.shadowInFlight.Add(1) > rt.cfg.MaxShadowInFlight {
			rt.shadowInFlight.Add(-1)
			sh.sm.dropped.Inc()
			continue
		}
		// The copy is charged to the body budget like the original.
		bp := rt.chargeBuf(len(req.body))
		if bp == nil {
			rt.shadowInFlight.Add(-1)
			sh.sm.dropped.Inc()
			continue
		}
		sreq := *req
		sreq.body = (*bp)[:len(req.body)]
		copy(sreq.body, req.body)
		in := pickP2C(sh.insts)
		rt.shadowWG.Add(1)
		go rt.runShadow(e.timeout, sh, in, &sreq, bp)
	}
}

func (rt *Router) runShadow(timeout time.Duration, sh *shadowSlot, in *instance, req *outRequest, bp *[]byte) {
	defer rt.shadowWG.Done()
	defer rt.shadowInFlight.Add(-1)
	defer rt.releaseBody(bp)
	in.inflight.Add(1)
	defer in.inflight.Add(-1)
	sh.sm.invocations.Inc()
	ctx := rt.shadowCtx
	var h respHead
	start := time.Now()
	pc, stop, err := rt.roundTrip(ctx, in, req, start.Add(timeout), &h)
	if err == nil {
		// The answer is discarded: read it through without keeping it, so
		// shadow traffic costs no memory per byte of answer.
		var clean bool
		clean, err = discardLimited(pc.bodyReader(&h), rt.cfg.MaxBodyBytes)
		rt.finish(pc, stop, clean && err == nil && !h.Close)
	}
	sh.sm.latency.Observe(time.Since(start).Seconds())
	if err != nil {
		sh.sm.errors.Inc()
		if ctx.Err() == nil {
			rt.instanceFailed(in, sh.vm, err)
		}
		return
	}
	if h.Status/100 != 2 {
		sh.sm.errors.Inc()
	}
	rt.instanceOK(in)
}

func pickP2C(insts []*instance) *instance {
	s := slot{insts: insts}
	return s.pickInstance()
}

// readLimited reads up to limit bytes; clean reports whether the body ended
// within the limit, leaving the connection reusable.
func readLimited(r io.Reader, limit int64) ([]byte, bool, error) {
	b, err := io.ReadAll(io.LimitReader(r, limit))
	if err != nil {
		return b, false, err
	}
	if int64(len(b)) < limit {
		return b, true, nil
	}
	var one [1]byte
	n, _ := r.Read(one[:])
	return b, n == 0, nil
}

// discardLimited reads and drops up to limit bytes; clean reports whether
// the body ended within the limit, leaving the connection reusable.
func discardLimited(r io.Reader, limit int64) (bool, error) {
	n, err := io.Copy(io.Discard, io.LimitReader(r, limit))
	if err != nil || n < limit {
		return err == nil, err
	}
	var one [1]byte
	m, _ := r.Read(one[:])
	return m == 0, nil
}

func (rt *Router) tooLarge(w http.ResponseWriter, n int64) {
	msg := "Request body exceeds the " + strconv.FormatInt(rt.cfg.MaxBodyBytes, 10) + "-byte limit."
	if n >= 0 {
		msg = "Request body of " + strconv.FormatInt(n, 10) + " bytes exceeds the " + strconv.FormatInt(rt.cfg.MaxBodyBytes, 10) + "-byte limit."
	}
	// The rest of the body is never read: tell net/http not to try.
	w.Header()["Connection"] = []string{"close"}
	writeError(w, http.StatusRequestEntityTooLarge, CodeValidation, msg)
}

// closeUnreadBody makes an answer given before the request's body is read
// close the connection, when the body may still be on its way (net/http;
// the fast path has it whole). Otherwise net/http reads the rest of a
// small body before it answers: a caller refused by its headers alone
// would wait for the body it sends, or, sending none, for ReadTimeout.
func closeUnreadBody(w http.ResponseWriter, r *http.Request) {
	if _, whole := r.Body.(*bodyReader); !whole && r.ContentLength != 0 {
		w.Header()["Connection"] = []string{"close"}
	}
}

// bodyFirstBuf is the largest body buffered in one buffer taken before
// any of it arrives; larger bodies grow into bigger buffers as they come.
const bodyFirstBuf = 32 << 10

var errBodyBudget = errors.New("body memory budget exhausted")

// bodyBudgetRetryAfter is the Retry-After of a request refused for the
// body budget: bodies in flight leave within a model call, and the AWS
// SDKs back off on their own schedule anyway.
const bodyBudgetRetryAfter = "1"

// bodyBudgetSpent answers a request whose body the budget cannot hold: 429
// ThrottlingException, which the AWS SDKs retry with their throttling
// back-off (a 503 would be retried too, but as a fault of the service, and
// this is load the client can shed). The rest of the body is never read,
// so the connection closes after the answer, unless the fast path had the
// body whole (a reconnection would only add to the load).
func (rt *Router) bodyBudgetSpent(w http.ResponseWriter, r *http.Request) {
	rt.m.rejBodyBudget.Inc()
	closeUnreadBody(w, r)
	w.Header()["Retry-After"] = []string{bodyBudgetRetryAfter}
	writeError(w, http.StatusTooManyRequests, CodeThrottling, "The router is at its request memory limit; retry later.")
}

// readBody buffers the request body in pooled buffers, charging each
// buffer's size to the router's body-memory budget (MaxBufferedBytes)
// while it is held. Buffers grow as bytes arrive, so a client announcing
// 6 MB and sending nothing holds one small buffer, not 6 MB. n is the
// number of bytes seen; n > MaxBodyBytes means the body was cut off at
// the limit. err is errBodyBudget when the budget ran out. A non-nil bp
// must be given back with releaseBody.
func (rt *Router) readBody(r *http.Request) (bp *[]byte, body []byte, n int64, err error) {
	if r.ContentLength == 0 || r.Body == nil || r.Body == http.NoBody {
		return nil, nil, 0, nil
	}
	// want: the exact length when announced, else one byte past the limit.
	want := rt.cfg.MaxBodyBytes + 1
	size := int64(4 << 10)
	if r.ContentLength > 0 {
		want = r.ContentLength
		size = min(want, bodyFirstBuf)
	}
	if bp = rt.chargeBuf(int(size)); bp == nil {
		return nil, nil, 0, errBodyBudget
	}
	b := (*bp)[:0]
	for int64(len(b)) < want {
		if len(b) == cap(b) {
			nbp := rt.chargeBuf(int(min(2*int64(cap(b)), want)))
			if nbp == nil {
				// Given back now, not after the answer: in a burst of
				// large bodies, others are growing into the budget too.
				rt.releaseBody(bp)
				return nil, nil, int64(len(b)), errBodyBudget
			}
			nb := append((*nbp)[:0], b...)
			rt.releaseBody(bp)
			bp, b = nbp, nb
		}
		m, err := r.Body.Read(b[len(b):min(int64(cap(b)), want)])
		b = b[:len(b)+m]
		if err == io.EOF {
			if r.ContentLength > 0 && int64(len(b)) < want {
				return bp, nil, int64(len(b)), io.ErrUnexpectedEOF
			}
			return bp, b, int64(len(b)), nil
		}
		if err != nil {
			return bp, nil, int64(len(b)), err
		}
	}
	if r.ContentLength > 0 {
		return bp, b, int64(len(b)), nil
	}
	return bp, nil, int64(len(b)), nil // over the limit
}

// chargeBuf takes a pooled buffer of at least n bytes and charges its
// capacity to the body budget; nil when the budget cannot cover it.
func (rt *Router) chargeBuf(n int) *[]byte {
	bp := rt.getBuf(n)
	if c := int64(cap(*bp)); rt.buffered.Add(c) > rt.cfg.MaxBufferedBytes {
		rt.buffered.Add(-c)
		rt.putBuf(bp)
		return nil
	}
	return bp
}

// releaseBody gives back a buffer taken with chargeBuf.
func (rt *Router) releaseBody(bp *[]byte) {
	rt.buffered.Add(-int64(cap(*bp)))
	rt.putBuf(bp)
}

func validateHeaders(req *outRequest, target string) string {
	switch {
	case len(req.contentType) > 1024:
		return "ContentType is longer than 1024 characters."
	case len(req.accept) > 1024:
		return "Accept is longer than 1024 characters."
	case len(req.customAttrs) > 1024:
		return "CustomAttributes is longer than 1024 characters."
	case len(req.inferenceID) > 64:
		return "InferenceId is longer than 64 characters."
	case len(target) > 1024:
		return "TargetVariant is longer than 1024 characters."
	}
	for _, v := range [...]string{req.contentType, req.accept, req.customAttrs, req.inferenceID, target} {
		for i := 0; i < len(v); i++ {
			if c := v[i]; c < ' ' && c != '\t' || c == 0x7f {
				return "Header values must not contain control characters."
			}
		}
	}
	return ""
}

func first(v []string) string {
	if len(v) == 0 {
		return ""
	}
	return v[0]
}

func errorClass(status int) string {
	if status >= 500 {
		return "server"
	}
	return "client"
}

func truncString(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}
