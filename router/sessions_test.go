package router

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sagemakerruntime"
	"github.com/aws/aws-sdk-go-v2/service/sagemakerruntime/types"
)

// statefulModel is a model with SageMaker's stateful-session contract: it
// opens a session on NEW_SESSION, counts the requests of each session, and
// closes one when the body says "close".
func statefulModel(t testing.TB, name string) *httptest.Server {
	var mu sync.Mutex
	sessions := map[string]int{}
	n := 0
	return model(t, name, func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		time.Sleep(sdkSettle)
		sid := r.Header.Get("X-Amzn-SageMaker-Session-Id")
		mu.Lock()
		defer mu.Unlock()
		switch {
		case sid == NewSession:
			n++
			sid = fmt.Sprintf("%s-s%d", name, n)
			sessions[sid] = 0
			w.Header().Set("X-Amzn-SageMaker-Session-Id", sid+"; Expires=2030-01-01T00:00:00Z")
		case sid != "":
			if _, ok := sessions[sid]; !ok {
				http.Error(w, "unknown session "+sid, http.StatusBadRequest)
				return
			}
			sessions[sid]++
			if string(b) == "close" {
				delete(sessions, sid)
				w.Header().Set("X-Amzn-SageMaker-Closed-Session-Id", sid)
			}
		}
		fmt.Fprintf(w, "%s %s %d", name, sid, sessions[sid])
	})
}

var testSessionKey = []byte("0123456789abcdef0123456789abcdef")

// TestSessionsAcrossRouters: a session opened through one router is served
// by the same instance through another router that shares only the key;
// closing answers the client's session ID; a session whose instance left
// gets SageMaker's error; forged or foreign IDs are refused.
func TestSessionsAcrossRouters(t *testing.T) {
	models := []*httptest.Server{statefulModel(t, "m1"), statefulModel(t, "m2"), statefulModel(t, "m3")}
	var insts []Instance
	for i, m := range models {
		insts = append(insts, inst(fmt.Sprintf("i%d", i+1), addrOf(m), "v1", 1))
	}
	var envs []*testEnv
	for range 2 {
		e := newEnv(t, Config{SessionKeys: [][]byte{testSessionKey}})
		e.rt.SetRoutes("chat", oneGen("chat", "v1", 1))
		e.rt.SetInstances("chat", insts)
		e.rt.SetRoutes("other", oneGen("other", "v1", 1))
		e.rt.SetInstances("other", insts)
		envs = append(envs, e)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	a, b := smClient(envs[0].srv.URL), smClient(envs[1].srv.URL)

	out, err := a.InvokeEndpoint(ctx, &sagemakerruntime.InvokeEndpointInput{
		EndpointName: aws.String("chat"), Body: []byte("hi"), SessionId: aws.String(NewSession)})
	if err != nil {
		t.Fatal(err)
	}
	newID := aws.ToString(out.NewSessionId)
	token, expires, ok := strings.Cut(newID, ";")
	if !ok || strings.TrimSpace(expires) != "Expires=2030-01-01T00:00:00Z" || !validSessionID(token) {
		t.Fatalf("NewSessionId %q", newID)
	}
	owner := strings.Fields(string(out.Body))[0]

	for i := 1; i <= 5; i++ {
		cl := []*sagemakerruntime.Client{a, b}[i%2]
		out, err := cl.InvokeEndpoint(ctx, &sagemakerruntime.InvokeEndpointInput{
			EndpointName: aws.String("chat"), Body: []byte("more"), SessionId: aws.String(token)})
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		f := strings.Fields(string(out.Body))
		if f[0] != owner || f[2] != fmt.Sprint(i) {
			t.Fatalf("request %d reached %q, want %s with count %d", i, out.Body, owner, i)
		}
	}

	// The stream path honours an open session too.
	sout, err := b.InvokeEndpointWithResponseStream(ctx, &sagemakerruntime.InvokeEndpointWithResponseStreamInput{
		EndpointName: aws.String("chat"), Body: []byte("more"), SessionId: aws.String(token)})
	if err != nil {
		t.Fatal(err)
	}
	parts, err := readStream(t, sout)
	if err != nil || len(parts) == 0 || !strings.HasPrefix(string(parts[0]), owner+" ") {
		t.Fatalf("stream in session: %q, %v", parts, err)
	}

	var ve *types.ValidationError
	// A token is bound to its endpoint.
	_, err = a.InvokeEndpoint(ctx, &sagemakerruntime.InvokeEndpointInput{
		EndpointName: aws.String("other"), Body: []byte("x"), SessionId: aws.String(token)})
	if !errors.As(err, &ve) {
		t.Fatalf("token on another endpoint: want ValidationError, got %T %v", err, err)
	}
	// A flipped character is a forgery.
	forged := []byte(token)
	forged[5] = map[bool]byte{true: 'B', false: 'A'}[forged[5] == 'A']
	_, err = b.InvokeEndpoint(ctx, &sagemakerruntime.InvokeEndpointInput{
		EndpointName: aws.String("chat"), Body: []byte("x"), SessionId: aws.String(string(forged))})
	if !errors.As(err, &ve) || !strings.Contains(ve.ErrorMessage(), "Invalid session ID") {
		t.Fatalf("forged token: want ValidationError, got %T %v", err, err)
	}
	// A router with another key cannot open it.
	stranger := newEnv(t, Config{SessionKeys: [][]byte{[]byte("another key, also 32 bytes long!")}})
	stranger.rt.SetRoutes("chat", oneGen("chat", "v1", 1))
	stranger.rt.SetInstances("chat", insts)
	_, err = smClient(stranger.srv.URL).InvokeEndpoint(ctx, &sagemakerruntime.InvokeEndpointInput{
		EndpointName: aws.String("chat"), Body: []byte("x"), SessionId: aws.String(token)})
	if !errors.As(err, &ve) {
		t.Fatalf("foreign key: want ValidationError, got %T %v", err, err)
	}

	// Close.
	out, err = b.InvokeEndpoint(ctx, &sagemakerruntime.InvokeEndpointInput{
		EndpointName: aws.String("chat"), Body: []byte("close"), SessionId: aws.String(token)})
	if err != nil {
		t.Fatal(err)
	}
	if aws.ToString(out.ClosedSessionId) != token {
		t.Fatalf("ClosedSessionId %q, want %q", aws.ToString(out.ClosedSessionId), token)
	}

	// A session whose instance is gone: SageMaker's error, not a move.
	out, err = a.InvokeEndpoint(ctx, &sagemakerruntime.InvokeEndpointInput{
		EndpointName: aws.String("chat"), Body: []byte("hi"), SessionId: aws.String(NewSession)})
	if err != nil {
		t.Fatal(err)
	}
	token2, _, _ := strings.Cut(aws.ToString(out.NewSessionId), ";")
	owner2 := strings.Fields(string(out.Body))[0]
	var rest []Instance
	for i, in := range insts {
		if fmt.Sprintf("m%d", i+1) != owner2 {
			rest = append(rest, in)
		}
	}
	for _, e := range envs {
		e.rt.SetInstances("chat", rest)
	}
	for _, cl := range []*sagemakerruntime.Client{a, b} {
		_, err = cl.InvokeEndpoint(ctx, &sagemakerruntime.InvokeEndpointInput{
			EndpointName: aws.String("chat"), Body: []byte("more"), SessionId: aws.String(token2)})
		if !errors.As(err, &ve) || !strings.Contains(ve.ErrorMessage(), "no longer valid") {
			t.Fatalf("session on a departed instance: want ValidationError, got %T %v", err, err)
		}
	}
}

// TestSessionsOff: without keys a SessionId is refused, never ignored.
func TestSessionsOff(t *testing.T) {
	m := statefulModel(t, "m1")
	e := newEnv(t, Config{})
	e.rt.SetRoutes("chat", oneGen("chat", "v1", 1))
	e.rt.SetInstances("chat", []Instance{inst("i1", addrOf(m), "v1", 1)})
	for _, v := range []string{NewSession, "abc", "bad value!"} {
		resp, body := e.invoke("chat", []byte("x"), "X-Amzn-SageMaker-Session-Id", v)
		mustStatus(t, resp, body, 400)
		if eb := decodeErr(t, resp, body); eb.Type != CodeValidation || !strings.Contains(strings.ToLower(eb.Message), "session") {
			t.Errorf("%q: %+v", v, eb)
		}
	}
}

func TestSessionCodec(t *testing.T) {
	c, err := newSessionCodec([][]byte{testSessionKey})
	if err != nil {
		t.Fatal(err)
	}
	ref := makeInstanceRef("ep", "key")
	long := strings.Repeat("x", MaxModelSessionIDLen)
	tok, err := c.seal("ep", ref, long)
	if err != nil || len(tok) > maxSessionIDLen || !validSessionID(tok) {
		t.Fatalf("longest model ID: %q (%d chars), %v", tok, len(tok), err)
	}
	r2, id, err := c.open("ep", tok)
	if err != nil || r2 != ref || id != long {
		t.Fatalf("open: %v %v", r2, err)
	}
	if _, err := c.seal("ep", ref, long+"x"); err == nil {
		t.Fatal("a model ID too long for a SessionId was sealed")
	}
	// Rotation: a new first key signs, the old one still opens.
	c2, _ := newSessionCodec([][]byte{[]byte("a brand new key of 32 bytes!!!!!"), testSessionKey})
	if _, _, err := c2.open("ep", tok); err != nil {
		t.Fatalf("rotated key set cannot open an old token: %v", err)
	}
	if _, err := newSessionCodec([][]byte{[]byte("short")}); err == nil {
		t.Fatal("short key accepted")
	}
}

func FuzzSessionOpen(f *testing.F) {
	c, _ := newSessionCodec([][]byte{testSessionKey})
	tok, _ := c.seal("ep", makeInstanceRef("ep", "k"), "abc")
	f.Add(tok)
	f.Add("AAAA")
	f.Fuzz(func(t *testing.T, s string) {
		ref, id, err := c.open("ep", s)
		if err != nil {
			return
		}
		// Whatever opens must be exactly what was sealed.
		again, err := c.seal("ep", ref, id)
		if err != nil || again != s {
			t.Fatalf("opened %q but it reseals as %q", s, again)
		}
	})
}
