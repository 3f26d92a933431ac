package router

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"reflect"
	"testing"
	"time"
)

// seen is what net/http's server handed its handler.
type seen struct {
	method, path, uri, host string
	header                  http.Header
	contentLength           int64
	body                    string
}

// FuzzFastParseAgainstNetHTTP sends the same request bytes to a real
// net/http server and to the fast path's parser. Whatever the fast path
// takes, net/http's server takes too and hands its handler the same
// method, path, Host, headers, Content-Length and body; the fast path may
// refuse more (it hands those connections to net/http).
// Run: go test ./router -run '^$' -fuzz FuzzFastParseAgainstNetHTTP -fuzzminimizetime 1s
func FuzzFastParseAgainstNetHTTP(f *testing.F) {
	for _, s := range []string{
		"POST /endpoints/ep/invocations HTTP/1.1\r\nHost: 127.0.0.1:8081\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}",
		"POST /endpoints/ep/invocations HTTP/1.1\r\nhost: a\r\ncontent-length: 0\r\naccept: */*\r\nx-amzn-sagemaker-custom-attributes:  a=b \r\n\r\n",
		"POST /endpoints/ep/invocations HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nX-A: 1\r\nX-A: 2\r\n\r\nabc",
		"POST /endpoints/ep/invocations HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
		"POST /endpoints/ep/invocations HTTP/1.1\r\nHost: a\r\nHost: b\r\nContent-Length: 0\r\n\r\n",
		"POST /endpoints/ep/invocations HTTP/1.1\r\nHost: a b\r\nContent-Length: 0\r\n\r\n",
		"POST /endpoints/ep/invocations HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
		"POST /endpoints/ep/invocations HTTP/1.1\r\nHost: a\r\nContent-Length: 01\r\n\r\nx",
		"POST /endpoints/ep/invocations HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx",
		"POST /endpoints/ep/invocations HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n folded\r\n\r\n",
		"POST /endpoints/ep/invocations HTTP/1.1\r\nHost: a\r\nPragma: no-cache\r\nContent-Length: 0\r\n\r\n",
		"POST /endpoints/ep/invocations HTTP/1.1\r\nHost: a\r\nX-Bin: \x80\xff\r\nContent-Length: 0\r\n\r\n",
		"POST /endpoints/ep/invocations HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\nx",
		"POST /endpoints//invocations HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n",
		"POST /endpoints/a/b/invocations HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n",
		"GET /ping HTTP/1.1\r\nHost: a\r\n\r\n",
		"POST /endpoints/ep/invocations HTTP/1.1\r\nHost: a\r\nConnection: Keep-Alive\r\nContent-Length: 0\r\n\r\n",
		"POST /endpoints/ep/invocations HTTP/1.1\r\nHost: a\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
		"POST /endpoints/ep/invocations-response-stream HTTP/1.1\r\nHost: a\r\nX-Amzn-SageMaker-Accept: text/plain\r\nContent-Length: 1\r\n\r\nx",
		"POST /endpoints/invocations HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n",
	} {
		f.Add([]byte(s))
	}
	got := make(chan seen, 1)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		got <- seen{r.Method, r.URL.Path, r.RequestURI, r.Host, r.Header, r.ContentLength, string(b)}
	}))
	srv.Config.MaxHeaderBytes = 64 << 10
	srv.Start()
	defer srv.Close()
	f.Fuzz(func(t *testing.T, data []byte) {
		var fast *seen
		if i := bytes.Index(data, crlfcrlf); i >= 0 && i+4 <= fastBufSize {
			hdr := http.Header{}
			h, err := parseFastHead(data[:i+4], hdr, nil, nil)
			if err == nil && int64(len(data)-i-4) >= h.contentLength && i+4+int(h.contentLength) <= fastBufSize {
				fast = &seen{http.MethodPost, h.path, h.path, h.host, hdr, h.contentLength, string(data[i+4 : i+4+int(h.contentLength)])}
			}
		}
		if fast == nil {
			return // the connection would go to net/http itself
		}
		c, err := net.Dial("tcp", srv.Listener.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Write(data); err != nil {
			t.Fatal(err)
		}
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatalf("net/http's server did not answer %q: %v", data, err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("fast path takes %q, net/http's server answers %d", data, resp.StatusCode)
		}
		s := <-got
		if len(s.header) == 0 {
			s.header = http.Header{}
		}
		if !reflect.DeepEqual(&s, fast) {
			t.Fatalf("%q:\nnet/http: %+v\nfast:     %+v", data, s, *fast)
		}
	})
}
