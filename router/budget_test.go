package router

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

// With SigV4 on, a request whose signature headers fail is refused before
// a byte of its body is read, on net/http (a large body; with Expect:
// 100-continue the client is never invited to send it) and from the fast
// path (a small body that never comes), so an unauthenticated caller
// cannot make the router buffer anything or wait for a body.
func TestSigV4HeadersCheckedBeforeBody(t *testing.T) {
	e, _ := signedEnv(t, Config{ReadTimeout: time.Hour, ReadHeaderTimeout: time.Hour})
	date := time.Now().UTC().Format("20060102T150405Z")
	auths := map[string]string{
		"no Authorization": "",
		"unknown key": "Authorization: AWS4-HMAC-SHA256 Credential=AKIDUNKNOWN/" + date[:8] + "/us-east-1/sagemaker/aws4_request, SignedHeaders=host;x-amz-date, Signature=0123\r\n" +
			"X-Amz-Date: " + date + "\r\n",
		"expired": "Authorization: AWS4-HMAC-SHA256 Credential=" + testAKID + "/20200101/us-east-1/sagemaker/aws4_request, SignedHeaders=host;x-amz-date, Signature=0123\r\n" +
			"X-Amz-Date: 20200101T000000Z\r\n",
	}
	for name, auth := range auths {
		for _, size := range []int{6_000_000, 100} {
			t.Run(fmt.Sprintf("%s/%d", name, size), func(t *testing.T) {
				c := e.dial()
				expect := ""
				if size > fastBufSize {
					expect = "Expect: 100-continue\r\n"
				}
				fmt.Fprintf(c, "POST /endpoints/demo/invocations HTTP/1.1\r\nHost: x\r\nContent-Type: text/csv\r\n%s%sContent-Length: %d\r\n\r\n", auth, expect, size)
				resp, err := http.ReadResponse(bufio.NewReader(c), nil)
				if err != nil {
					t.Fatalf("no answer without the body: %v", err)
				}
				resp.Body.Close()
				if resp.StatusCode != http.StatusForbidden {
					t.Fatalf("status %d, want 403 (a 100 Continue invites the body)", resp.StatusCode)
				}
				if typ := resp.Header.Get("X-Amzn-ErrorType"); !strings.HasSuffix(typ, "Exception") {
					t.Errorf("error type %q", typ)
				}
				if n := e.rt.buffered.Load(); n != 0 {
					t.Errorf("%d bytes charged to the body budget", n)
				}
			})
		}
	}
}

// When the body budget is spent, a request the fast path read whole is
// answered 429 ThrottlingException with Retry-After on a connection that
// stays open (the client retries on it, not on a new one); on net/http,
// whose body may still be arriving, the connection closes.
func TestBudgetSpentAnswers(t *testing.T) {
	m := model(t, "a", nil)
	e := newEnv(t, Config{MaxBufferedBytes: 1 << 10}) // less than the smallest buffer
	routeTo(e.rt, "ep", addrOf(m), 0)
	c := e.dial()
	br := bufio.NewReader(c)
	for i := range 2 {
		io.WriteString(c, fastReq)
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("X-Amzn-ErrorType") != CodeThrottling ||
			resp.Header.Get("Retry-After") == "" || resp.Close {
			t.Fatalf("request %d: %d %v, want 429 ThrottlingException with Retry-After, kept alive", i, resp.StatusCode, resp.Header)
		}
	}
	// net/http: the connection closes.
	resp, body := e.invoke("ep", bytes.Repeat([]byte("x"), 64<<10))
	mustStatus(t, resp, body, http.StatusTooManyRequests)
	if !resp.Close {
		t.Error("net/http answer keeps a connection whose body was not read")
	}
	if n := e.metricLine(`serai_router_rejected_requests_total{reason="body_budget"}`); n != "3" {
		t.Errorf("body_budget rejections counted %q, want 3", n)
	}
}
