package router

import (
	"bufio"
	"fmt"
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
