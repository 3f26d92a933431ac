package upstream

import (
	"bufio"
	"bytes"
	"io"
	"net/http"
	"strings"
	"testing"
)

// netHTTPRead reads an answer the way net/http's Transport does for a
// POST: http.ReadResponse, skipping up to five 1xx answers other than 101.
func netHTTPRead(data []byte) (*http.Response, []byte, error, error) {
	br := bufio.NewReader(bytes.NewReader(data))
	req := &http.Request{Method: http.MethodPost}
	for n := 0; ; n++ {
		resp, err := http.ReadResponse(br, req)
		if err != nil {
			return nil, nil, err, nil
		}
		if resp.StatusCode >= 100 && resp.StatusCode < 200 && resp.StatusCode != 101 {
			if n >= max1xxResponses {
				return nil, nil, io.ErrUnexpectedEOF, nil
			}
			continue
		}
		body, berr := io.ReadAll(resp.Body)
		return resp, body, nil, berr
	}
}

// FuzzAgainstNetHTTP feeds the same answer bytes to Reader and to
// net/http's response reader. Where net/http refuses the framing (head or
// body), Reader refuses too; where Reader reads an answer whole, net/http
// reads the same status, the same passed-through headers and the same
// body. Reader may refuse more (README "Model answers": obs-fold, other
// transfer codings, control characters in values, header limits).
// Run: go test ./router/internal/upstream -run '^$' -fuzz FuzzAgainstNetHTTP -fuzzminimizetime 1s
func FuzzAgainstNetHTTP(f *testing.F) {
	for _, s := range []string{
		"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nhel\r\n2\r\nlo\r\n0\r\nX-Trailer: 1\r\n\r\n",
		"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nto the close",
		"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
		"HTTP/1.1 204 No Content\r\nContent-Length: 3\r\n\r\n",
		"HTTP/1.1 500 Internal Server Error\r\nX-Amzn-SageMaker-Custom-Attributes: a=b\r\nContent-Length: 4\r\n\r\nboom",
		"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
		"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
		"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel",
		"HTTP/1.1 101 Switching Protocols\r\n\r\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		r := NewReader(bufio.NewReader(bytes.NewReader(data)))
		var h Head
		err := r.ReadHead(&h)
		var body []byte
		if err == nil {
			body, err = io.ReadAll(r.Body(&h))
		}
		resp, nbody, nerr, nberr := netHTTPRead(data)
		if nerr != nil || nberr != nil {
			if err == nil {
				t.Fatalf("net/http refuses (head: %v, body: %v), Reader accepts: %+v body %q", nerr, nberr, h, body)
			}
			return
		}
		if err != nil {
			return // stricter than net/http, by design
		}
		if resp.StatusCode != h.Status {
			t.Fatalf("status: Reader %d, net/http %d", h.Status, resp.StatusCode)
		}
		if !bytes.Equal(body, nbody) {
			t.Fatalf("body: Reader %q, net/http %q", body, nbody)
		}
		var ct []string
		if v, ok := resp.Header["Content-Type"]; ok {
			ct = v[:1]
		}
		if strings.Join(ct, "\x00") != strings.Join(h.ContentType, "\x00") || (ct == nil) != (h.ContentType == nil) {
			t.Fatalf("Content-Type: Reader %q, net/http %q", h.ContentType, ct)
		}
		if ca := resp.Header.Get("X-Amzn-Sagemaker-Custom-Attributes"); ca != h.CustomAttrs {
			t.Fatalf("custom attributes: Reader %q, net/http %q", h.CustomAttrs, ca)
		}
		if resp.Close && !h.Close {
			t.Fatalf("net/http would not reuse the connection, Reader would: %+v", h)
		}
	})
}
