package router

import (
	"io"
	"net"
	"net/http"
	"testing"
	"time"
)

// FuzzModelResponse: whatever bytes a model answers with, the router
// answers its client (or cuts the connection) without panicking, and is
// still healthy for the next request.
// Run: go test ./router -run '^$' -fuzz FuzzModelResponse -fuzzminimizetime 1s
func FuzzModelResponse(f *testing.F) {
	for _, s := range []string{
		okAnswer,
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
		"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 4\r\n\r\nboom",
		"HTTP/1.0 200 OK\r\n\r\nclose-delimited",
		"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n",
		"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
	} {
		f.Add([]byte(s))
	}
	rig := newFuzzRig(f, Config{OutlierFailures: -1})
	e := rig.env
	f.Fuzz(func(t *testing.T, answerBytes []byte) {
		ep := rig.input(t, 300*time.Millisecond, func(n int, c net.Conn, req *http.Request) bool {
			// Read the body first: closing with unread bytes makes the
			// kernel send a reset instead of a clean close.
			io.Copy(io.Discard, req.Body)
			if n == 1 {
				c.Write(answerBytes)
				return false
			}
			c.Write([]byte(okAnswer))
			return true
		})
		if resp, _, err := e.tryInvoke(ep, []byte("x")); err == nil && (resp.StatusCode < 200 || resp.StatusCode > 599) {
			t.Fatalf("router answered status %d", resp.StatusCode)
		}
		// A well-framed first answer leaves its connection pooled, and the
		// model's close can race the next request on it: the router does
		// not resend a POST it already wrote (neither does net/http), so
		// one 424 is allowed before the router must answer again.
		var resp *http.Response
		var body []byte
		var err error
		for attempt := 0; attempt < 2; attempt++ {
			resp, body, err = e.tryInvoke(ep, []byte("x"))
			if err == nil && resp.StatusCode == http.StatusOK && string(body) == "ok" {
				return
			}
		}
		t.Fatalf("router not healthy after a bad answer: %v %v %q", err, resp, body)
	})
}
