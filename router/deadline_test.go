package router

import (
	"bufio"
	"io"
	"testing"
	"time"
)

// The write deadline an invocation sets (model timeout + WriteTimeout) was
// left on a kept-alive fast-path connection: a later request answered
// without a model call (an unknown endpoint, a refused signature, a 503)
// found it passed, its answer failed to write and the client saw its
// connection cut instead of an error (with the defaults, any such answer
// 90 s after an invocation on the same connection). Each request now has
// its own deadline.
func TestDeadlineStaleAfterInvocationOnKeptAliveConnection(t *testing.T) {
	m := model(t, "a", nil)
	e := newEnv(t, Config{WriteTimeout: 200 * time.Millisecond})
	routeTo(e.rt, "ep", addrOf(m), 300*time.Millisecond)
	c := e.dial()
	br := bufio.NewReader(c)
	io.WriteString(c, fastReq)
	if code, body := readAnswer(t, br); code != 200 {
		t.Fatalf("invocation: %d %q", code, body)
	}
	// Past the deadline the invocation set (300 ms + 200 ms).
	time.Sleep(700 * time.Millisecond)
	io.WriteString(c, "POST /endpoints/nope/invocations HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi")
	if code, body := readAnswer(t, br); code != 400 {
		t.Fatalf("unknown endpoint on the same connection: %d %q, want 400", code, body)
	}
	// And the connection still serves.
	io.WriteString(c, fastReq)
	if code, body := readAnswer(t, br); code != 200 {
		t.Fatalf("invocation after: %d %q", code, body)
	}
	if n := e.fast.served.Load(); n != 3 {
		t.Errorf("fast path served %d of 3", n)
	}
}
