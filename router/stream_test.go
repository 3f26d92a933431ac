package router

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/protocol/eventstream"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/sagemakerruntime"
	"github.com/aws/aws-sdk-go-v2/service/sagemakerruntime/types"
)

func smClient(url string) *sagemakerruntime.Client {
	return sagemakerruntime.New(sagemakerruntime.Options{
		Region:           "us-east-1",
		BaseEndpoint:     aws.String(url),
		Credentials:      credentials.NewStaticCredentialsProvider("AKIDEXAMPLE", "secret", ""),
		RetryMaxAttempts: 1,
	})
}

// sdkSettle is how long the models of the SDK streaming tests wait before
// their first byte. aws-sdk-go-v2 closes the request body as soon as the
// response head arrives, while net/http's transport may still be finishing
// the request write (its final body read and close); the write then fails
// and the transport closes the connection under the event-stream reader
// ("use of closed network connection"). On loopback a model answering
// within about a millisecond hits that window; across a real network the
// request write has long finished. The router is not involved: a plain
// net/http client reads the same streams cleanly (FuzzStreamFraming).
const sdkSettle = 20 * time.Millisecond

// readStream collects an SDK stream's PayloadParts and its final error.
func readStream(t testing.TB, out *sagemakerruntime.InvokeEndpointWithResponseStreamOutput) ([][]byte, error) {
	t.Helper()
	st := out.GetStream()
	defer st.Close()
	var got [][]byte
	for ev := range st.Events() {
		switch v := ev.(type) {
		case *types.ResponseStreamMemberPayloadPart:
			got = append(got, v.Value.Bytes)
		default:
			t.Fatalf("unexpected event %T", ev)
		}
	}
	return got, st.Err()
}

// TestStreamSDK: the unmodified SDK client reads every PayloadPart in order,
// one per chunk the model wrote, byte-identical, with the response headers
// SageMaker sends.
func TestStreamSDK(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	var chunks [][]byte
	for i := 0; i < 40; i++ {
		c := make([]byte, 1+rng.IntN(3000))
		for j := range c {
			c[j] = byte(rng.UintN(256))
		}
		chunks = append(chunks, c)
	}
	chunks = append(chunks, bytes.Repeat([]byte("L"), 150<<10)) // split into 64 KiB parts
	var sawAccept, sawType, sawAttrs string
	m := model(t, "a", func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		sawAccept, sawType, sawAttrs = r.Header.Get("Accept"), r.Header.Get("Content-Type"), r.Header.Get("X-Amzn-SageMaker-Custom-Attributes")
		time.Sleep(sdkSettle)
		w.Header().Set("Content-Type", "application/x-tokens")
		w.Header().Set("X-Amzn-SageMaker-Custom-Attributes", "tokens=41")
		for _, c := range chunks {
			w.Write(c)
			w.(http.Flusher).Flush()
		}
	})
	e := newEnv(t, Config{})
	e.rt.SetRoutes("gen", oneGen("gen", "v1", 1))
	e.rt.SetInstances("gen", []Instance{inst("a1", addrOf(m), "v1", 1)})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	out, err := smClient(e.srv.URL).InvokeEndpointWithResponseStream(ctx, &sagemakerruntime.InvokeEndpointWithResponseStreamInput{
		EndpointName:     aws.String("gen"),
		Body:             []byte("hello"),
		ContentType:      aws.String("text/plain"),
		Accept:           aws.String("application/x-tokens"),
		CustomAttributes: aws.String("max=5"),
	})
	if err != nil {
		t.Fatalf("InvokeEndpointWithResponseStream: %v", err)
	}
	if aws.ToString(out.ContentType) != "application/x-tokens" || aws.ToString(out.InvokedProductionVariant) != "v1" ||
		aws.ToString(out.CustomAttributes) != "tokens=41" {
		t.Errorf("headers: type %q variant %q attrs %q", aws.ToString(out.ContentType), aws.ToString(out.InvokedProductionVariant), aws.ToString(out.CustomAttributes))
	}
	got, err := readStream(t, out)
	if err != nil {
		t.Fatalf("stream error: %v", err)
	}
	var want [][]byte
	for _, c := range chunks {
		for len(c) > maxPartBytes {
			want = append(want, c[:maxPartBytes])
			c = c[maxPartBytes:]
		}
		want = append(want, c)
	}
	if len(got) != len(want) {
		t.Fatalf("%d events, want %d (one per chunk)", len(got), len(want))
	}
	for i := range want {
		if !bytes.Equal(got[i], want[i]) {
			t.Fatalf("event %d differs from chunk %d (%d vs %d bytes)", i, i, len(got[i]), len(want[i]))
		}
	}
	if sawAccept != "application/x-tokens" || sawType != "text/plain" || sawAttrs != "max=5" {
		t.Errorf("model saw Accept %q, Content-Type %q, attrs %q", sawAccept, sawType, sawAttrs)
	}
	var total int
	for _, c := range chunks {
		total += len(c)
	}
	resp, body := e.get("/metrics")
	mustStatus(t, resp, body, 200)
	labels := `{endpoint="gen",generation="1",variant="v1"}`
	for _, want := range []string{
		"serai_router_stream_first_byte_seconds_count" + labels + " 1",
		"serai_router_stream_duration_seconds_count" + labels + " 1",
		"serai_router_stream_bytes_total" + labels + " " + fmt.Sprint(total),
		"serai_router_invocations_total" + labels + " 1",
	} {
		if !strings.Contains(string(body), want+"\n") {
			t.Errorf("/metrics lacks %s", want)
		}
	}
}

func (e *testEnv) get(path string) (*http.Response, []byte) {
	e.t.Helper()
	resp, err := e.client.Get(e.srv.URL + path)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, b
}

// TestStreamErrors: errors before the first byte are the ordinary typed
// errors; after it they are ModelStreamError events the SDK decodes into
// *types.ModelStreamError with SageMaker's ErrorCode.
func TestStreamErrors(t *testing.T) {
	broken := model(t, "a", func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		time.Sleep(sdkSettle)
		w.Write([]byte("tok1 "))
		w.(http.Flusher).Flush()
		w.Write([]byte("tok2 "))
		w.(http.Flusher).Flush()
		c, _, err := http.NewResponseController(w).Hijack()
		if err == nil {
			c.Close() // mid-chunk-stream: the chunked body never ends
		}
	})
	stalled := model(t, "b", func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		time.Sleep(sdkSettle)
		w.Write([]byte("tok1 "))
		w.(http.Flusher).Flush()
		<-r.Context().Done()
	})
	failing := model(t, "c", func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "no tokens today", http.StatusInternalServerError)
	})
	e := newEnv(t, Config{StreamTimeout: 500 * time.Millisecond})
	e.rt.SetRoutes("gen", oneGen("gen", "broken", 1, "stalled", 0, "failing", 0))
	e.rt.SetInstances("gen", []Instance{
		inst("a1", addrOf(broken), "broken", 1), inst("b1", addrOf(stalled), "stalled", 1), inst("c1", addrOf(failing), "failing", 1)})
	sm := smClient(e.srv.URL)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	call := func(variant string) (*sagemakerruntime.InvokeEndpointWithResponseStreamOutput, error) {
		return smClient(e.srv.URL).InvokeEndpointWithResponseStream(ctx, &sagemakerruntime.InvokeEndpointWithResponseStreamInput{
			EndpointName: aws.String("gen"), Body: []byte("x"), ContentType: aws.String("text/plain"), TargetVariant: aws.String(variant)})
	}
	for _, tc := range []struct{ variant, code string }{{"broken", StreamBroken}, {"stalled", ModelInvocationTimeExceeded}} {
		out, err := call(tc.variant)
		if err != nil {
			t.Fatalf("%s: %v", tc.variant, err)
		}
		got, err := readStream(t, out)
		if len(got) == 0 || string(got[0]) != "tok1 " {
			t.Errorf("%s: parts before the error: %q", tc.variant, got)
		}
		var mse *types.ModelStreamError
		if !errors.As(err, &mse) {
			t.Fatalf("%s: want *types.ModelStreamError, got %T %v", tc.variant, err, err)
		}
		if aws.ToString(mse.ErrorCode_) != tc.code {
			t.Errorf("%s: ErrorCode %q, want %q (%s)", tc.variant, aws.ToString(mse.ErrorCode_), tc.code, mse.ErrorMessage())
		}
	}
	_, body := e.get("/metrics")
	for _, want := range []string{
		`serai_router_stream_errors_total{code="StreamBroken",endpoint="gen",generation="1",variant="broken"} 1`,
		`serai_router_stream_errors_total{code="ModelInvocationTimeExceeded",endpoint="gen",generation="1",variant="stalled"} 1`,
	} {
		if !strings.Contains(string(body), want+"\n") {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	_, err := call("failing")
	var me *types.ModelError
	if !errors.As(err, &me) || aws.ToInt32(me.OriginalStatusCode) != 500 {
		t.Fatalf("want *types.ModelError with status 500, got %T %v", err, err)
	}
	_, err = sm.InvokeEndpointWithResponseStream(ctx, &sagemakerruntime.InvokeEndpointWithResponseStreamInput{
		EndpointName: aws.String("gen"), Body: []byte("x"), InferenceComponentName: aws.String("ic1")})
	var ve *types.ValidationError
	if !errors.As(err, &ve) || !strings.Contains(ve.ErrorMessage(), "InferenceComponentName") {
		t.Fatalf("want *types.ValidationError naming InferenceComponentName, got %T %v", err, err)
	}
	_, err = sm.InvokeEndpointWithResponseStream(ctx, &sagemakerruntime.InvokeEndpointWithResponseStreamInput{
		EndpointName: aws.String("gen"), Body: []byte("x"), SessionId: aws.String(NewSession)})
	if !errors.As(err, &ve) {
		t.Fatalf("NEW_SESSION on the stream: want *types.ValidationError, got %T %v", err, err)
	}
}

// TestStreamClientHangUpCancelsModel: a client that goes away mid-stream
// ends the model's request.
func TestStreamClientHangUpCancelsModel(t *testing.T) {
	cancelled := make(chan struct{})
	m := model(t, "a", func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		for i := 0; ; i++ {
			select {
			case <-r.Context().Done():
				close(cancelled)
				return
			case <-time.After(10 * time.Millisecond):
			}
			fmt.Fprintf(w, "tok%d ", i)
			w.(http.Flusher).Flush()
		}
	})
	e := newEnv(t, Config{})
	e.rt.SetRoutes("gen", oneGen("gen", "v1", 1))
	e.rt.SetInstances("gen", []Instance{inst("a1", addrOf(m), "v1", 1)})
	ctx, cancel := context.WithCancel(context.Background())
	out, err := smClient(e.srv.URL).InvokeEndpointWithResponseStream(ctx, &sagemakerruntime.InvokeEndpointWithResponseStreamInput{
		EndpointName: aws.String("gen"), Body: []byte("x")})
	if err != nil {
		t.Fatal(err)
	}
	<-out.GetStream().Events()
	cancel()
	out.GetStream().Close()
	select {
	case <-cancelled:
	case <-time.After(5 * time.Second):
		t.Fatal("the model kept generating after the client left")
	}
}

// TestResponseCap: a non-streaming answer over 6 MB is refused with a
// ModelError, not relayed.
func TestResponseCap(t *testing.T) {
	m := model(t, "a", func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Length", fmt.Sprint(MaxBodyBytes+1))
		w.Write(make([]byte, MaxBodyBytes+1))
	})
	e := newEnv(t, Config{})
	e.rt.SetRoutes("big", oneGen("big", "v1", 1))
	e.rt.SetInstances("big", []Instance{inst("a1", addrOf(m), "v1", 1)})
	resp, body := e.invoke("big", []byte("x"))
	mustStatus(t, resp, body, http.StatusFailedDependency)
	if eb := decodeErr(t, resp, body); eb.Type != CodeModel || !strings.Contains(eb.Message, "6291456-byte response payload limit") {
		t.Errorf("error %+v", eb)
	}
}

// TestUnsupportedHeaders: every SageMaker header the router does not carry
// out is refused by name, never ignored.
func TestUnsupportedHeaders(t *testing.T) {
	m := model(t, "a", nil)
	e := newEnv(t, Config{})
	e.rt.SetRoutes("ep", oneGen("ep", "v1", 1))
	e.rt.SetInstances("ep", []Instance{inst("a1", addrOf(m), "v1", 1)})
	for _, u := range unsupportedHeaders {
		resp, body := e.invoke("ep", []byte("x"), u.key, "something")
		mustStatus(t, resp, body, 400)
		if eb := decodeErr(t, resp, body); eb.Type != CodeValidation || !strings.Contains(eb.Message, u.member) {
			t.Errorf("%s: %+v", u.key, eb)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := smClient(e.srv.URL).InvokeEndpoint(ctx, &sagemakerruntime.InvokeEndpointInput{
		EndpointName: aws.String("ep"), Body: []byte("x"), TargetModel: aws.String("model-a.tar.gz")})
	var ve *types.ValidationError
	if !errors.As(err, &ve) || !strings.Contains(ve.ErrorMessage(), "TargetModel") {
		t.Fatalf("want *types.ValidationError naming TargetModel, got %T %v", err, err)
	}
	resp, body := e.invoke("ep", []byte("x"))
	mustStatus(t, resp, body, 200)
}

// TestStreamSigV4: with SigV4 on, the SDK's signed streaming call passes
// and a wrong secret is refused before the model is called.
func TestStreamSigV4(t *testing.T) {
	var calls atomic.Int32
	m := model(t, "a", func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		io.Copy(io.Discard, r.Body)
		time.Sleep(sdkSettle)
		w.Write([]byte("signed "))
		w.(http.Flusher).Flush()
		w.Write([]byte("tokens"))
	})
	e := newEnv(t, Config{SigV4Keys: map[string]string{"AKIDSTREAM": "stream-secret"}})
	e.rt.SetRoutes("gen", oneGen("gen", "v1", 1))
	e.rt.SetInstances("gen", []Instance{inst("a1", addrOf(m), "v1", 1)})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := sdkClient(e, "AKIDSTREAM", "stream-secret").InvokeEndpointWithResponseStream(ctx, &sagemakerruntime.InvokeEndpointWithResponseStreamInput{
		EndpointName: aws.String("gen"), Body: []byte("x"), ContentType: aws.String("text/plain")})
	if err != nil {
		t.Fatal(err)
	}
	parts, err := readStream(t, out)
	if err != nil || len(parts) != 2 || string(parts[0])+string(parts[1]) != "signed tokens" {
		t.Fatalf("parts %q, %v", parts, err)
	}
	_, err = sdkClient(e, "AKIDSTREAM", "wrong").InvokeEndpointWithResponseStream(ctx, &sagemakerruntime.InvokeEndpointWithResponseStreamInput{
		EndpointName: aws.String("gen"), Body: []byte("x"), ContentType: aws.String("text/plain")})
	wantAPIError(t, err, "InvalidSignatureException", "")
	if calls.Load() != 1 {
		t.Fatalf("model called %d times", calls.Load())
	}
}

// TestStreamOutlivesServerReadTimeout: a stream longer than the HTTP
// server's ReadTimeout (which net/http leaves armed while the handler runs,
// and whose expiry cancels the request) is not cut.
func TestStreamOutlivesServerReadTimeout(t *testing.T) {
	m := model(t, "a", func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		for i := range 8 {
			select {
			case <-r.Context().Done():
				return
			case <-time.After(50 * time.Millisecond):
			}
			fmt.Fprintf(w, "t%d ", i)
			w.(http.Flusher).Flush()
		}
	})
	rt, err := New(Config{Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer rt.Close()
	srv := httptest.NewUnstartedServer(rt)
	srv.Config.ReadTimeout = 100 * time.Millisecond
	srv.Start()
	defer srv.Close()
	rt.SetRoutes("gen", oneGen("gen", "v1", 1))
	rt.SetInstances("gen", []Instance{inst("a1", addrOf(m), "v1", 1)})
	// A body of unknown length (chunked) is read to its end, which is
	// when net/http starts watching the connection under ReadTimeout.
	resp, err := http.Post(srv.URL+"/endpoints/gen/invocations-response-stream", "text/plain", io.MultiReader(strings.NewReader("x")))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	dec := eventstream.NewDecoder()
	n := 0
	for {
		msg, err := dec.Decode(resp.Body, nil)
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("after %d parts: %v", n, err)
		}
		if mt := msg.Headers.Get(":message-type").String(); mt != "event" {
			t.Fatalf("after %d parts: %s %s", n, mt, msg.Payload)
		}
		n++
	}
	if n != 8 {
		t.Fatalf("%d parts, want 8", n)
	}
}

// TestStreamHangUpDuringStall: a client that leaves while the model is
// silent mid-stream still cancels the model's request at once, not at the
// next token or the stream timeout.
func TestStreamHangUpDuringStall(t *testing.T) {
	cancelled := make(chan struct{})
	m := model(t, "a", func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		time.Sleep(sdkSettle)
		w.Write([]byte("first "))
		w.(http.Flusher).Flush()
		<-r.Context().Done()
		close(cancelled)
	})
	e := newEnv(t, Config{})
	e.rt.SetRoutes("gen", oneGen("gen", "v1", 1))
	e.rt.SetInstances("gen", []Instance{inst("a1", addrOf(m), "v1", 1)})
	ctx, cancel := context.WithCancel(context.Background())
	out, err := smClient(e.srv.URL).InvokeEndpointWithResponseStream(ctx, &sagemakerruntime.InvokeEndpointWithResponseStreamInput{
		EndpointName: aws.String("gen"), Body: []byte("x")})
	if err != nil {
		t.Fatal(err)
	}
	<-out.GetStream().Events()
	cancel()
	out.GetStream().Close()
	select {
	case <-cancelled:
	case <-time.After(5 * time.Second):
		t.Fatal("the model's request outlived the client by 5s")
	}
}

// countingListener counts the writes to the connections it accepts.
type countingListener struct {
	net.Listener
	writes atomic.Int64
}

func (l *countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &countingConn{Conn: c, n: &l.writes}, nil
}

type countingConn struct {
	net.Conn
	n *atomic.Int64
}

func (c *countingConn) Write(b []byte) (int, error) {
	c.n.Add(1)
	return c.Conn.Write(b)
}

// TestStreamCoalescesBufferedParts: chunks that reach the router together
// leave it in one write, still one PayloadPart each, in order.
func TestStreamCoalescesBufferedParts(t *testing.T) {
	words := []string{"one ", "two ", "three ", "four ", "five ", "six ", "seven ", "eight"}
	m := model(t, "a", func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		c, bw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			t.Error(err)
			return
		}
		defer c.Close()
		// The whole chunked answer in one write, so it arrives at once.
		var b strings.Builder
		b.WriteString("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n")
		for _, w := range words {
			fmt.Fprintf(&b, "%x\r\n%s\r\n", len(w), w)
		}
		b.WriteString("0\r\n\r\n")
		bw.WriteString(b.String())
		bw.Flush()
		// Keep the connection open until the router has read the answer.
		io.Copy(io.Discard, c)
	})
	rt, err := New(Config{Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer rt.Close()
	srv := httptest.NewUnstartedServer(rt)
	cl := &countingListener{Listener: srv.Listener}
	srv.Listener = cl
	srv.Start()
	defer srv.Close()
	rt.SetRoutes("gen", oneGen("gen", "v1", 1))
	rt.SetInstances("gen", []Instance{inst("a1", addrOf(m), "v1", 1)})
	resp, err := http.Post(srv.URL+"/endpoints/gen/invocations-response-stream", "text/plain", strings.NewReader("x"))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	dec := eventstream.NewDecoder()
	var got []string
	for {
		msg, err := dec.Decode(resp.Body, nil)
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("after %d parts: %v", len(got), err)
		}
		if mt := msg.Headers.Get(":message-type").String(); mt != "event" {
			t.Fatalf("after %d parts: %s %s", len(got), mt, msg.Payload)
		}
		got = append(got, string(msg.Payload))
	}
	if strings.Join(got, "|") != strings.Join(words, "|") {
		t.Fatalf("parts %q, want %q", got, words)
	}
	if n := cl.writes.Load(); n != 1 {
		t.Errorf("%d writes to the client, want 1 (head, 8 parts and the end together)", n)
	}
}

// appendPayloadPart frames a part exactly as the AWS SDK's encoder does.
func TestAppendPayloadPartMatchesSDK(t *testing.T) {
	enc := eventstream.NewEncoder()
	rng := rand.New(rand.NewPCG(3, 4))
	for _, n := range []int{0, 1, 2, 3, 17, 128, 1000, 4096, 65535, maxPartBytes} {
		p := make([]byte, n)
		for i := range p {
			p[i] = byte(rng.UintN(256))
		}
		var want bytes.Buffer
		if err := EncodePayloadPart(enc, &want, p); err != nil {
			t.Fatal(err)
		}
		prefix := []byte("kept")
		got := appendPayloadPart(prefix, p)
		if !bytes.Equal(got[:4], []byte("kept")) || !bytes.Equal(got[4:], want.Bytes()) {
			t.Fatalf("%d-byte part: framing differs from the SDK encoder's", n)
		}
	}
}
