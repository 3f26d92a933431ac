package router

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	smithyes "github.com/aws/smithy-go/eventstream"
)

// hostileStream is a model's streamed answer described by fuzz input: the
// first byte picks a behaviour, the rest is cut into chunks by length
// bytes.
type hostileStream struct {
	mode   byte // 0 complete, 1 reset mid-stream, 2 stall, 3 slow, 4 raw bytes after the head
	chunks [][]byte
	raw    []byte
}

func parseHostile(in []byte) hostileStream {
	var h hostileStream
	if len(in) == 0 {
		return h
	}
	h.mode, in = in[0]%5, in[1:]
	if h.mode == 4 {
		h.raw = in
		return h
	}
	for len(in) > 0 && len(h.chunks) < 32 {
		n := 1 + int(in[0])%48
		in = in[1:]
		n = min(n, len(in))
		if n == 0 {
			break
		}
		h.chunks = append(h.chunks, in[:n])
		in = in[n:]
	}
	return h
}

// FuzzStreamFraming: whatever a model streams (well-formed, cut by a reset,
// stalled, slow, or garbage framing), the router's event stream decodes
// with the AWS SDK's event-stream decoder (both CRCs checked), its
// PayloadParts are exactly the model's chunks in order (a prefix of them
// when the model failed), and a failure after the first part ends the
// stream with a ModelStreamError carrying SageMaker's ErrorCode.
// Run: go test ./router -run '^$' -fuzz FuzzStreamFraming -fuzzminimizetime 1s
func FuzzStreamFraming(f *testing.F) {
	f.Add([]byte("\x00\x05hello\x01 \x06world!"))
	f.Add([]byte("\x01\x05hello\x05again\x05three"))
	f.Add([]byte("\x02\x03tok\x03tok"))
	f.Add([]byte("\x03\x02ab\x02cd\x02ef"))
	f.Add([]byte("\x04zz\r\nnot hex\r\n"))
	f.Add([]byte("\x04" + "5\r\nhello\r\n0\r\n\r\n"))
	f.Add([]byte("\x02"))
	rig := newFuzzRig(f, Config{OutlierFailures: -1, StreamTimeout: 200 * time.Millisecond})
	e := rig.env
	f.Fuzz(func(t *testing.T, in []byte) {
		hs := parseHostile(in)
		ep := rig.input(t, 300*time.Millisecond, func(n int, c net.Conn, req *http.Request) bool {
			io.Copy(io.Discard, req.Body)
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n")
			if hs.mode == 4 {
				c.Write(hs.raw)
				return false
			}
			for _, ch := range hs.chunks {
				fmt.Fprintf(c, "%x\r\n%s\r\n", len(ch), ch)
				if hs.mode == 3 {
					time.Sleep(time.Millisecond)
				}
			}
			switch hs.mode {
			case 0, 3:
				io.WriteString(c, "0\r\n\r\n")
				return true
			case 1:
				if tc, ok := c.(*net.TCPConn); ok {
					tc.SetLinger(0) // close with a reset
				}
			case 2:
				c.SetReadDeadline(time.Now().Add(2 * time.Second))
				c.Read(make([]byte, 1)) // until the router gives up
			}
			return false
		})
		resp, err := e.client.Post(e.srv.URL+"/endpoints/"+ep+"/invocations-response-stream", "text/plain", strings.NewReader("x"))
		if err != nil {
			t.Fatalf("router cut the connection instead of answering: %v", err)
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatalf("reading the stream: %v", err)
		}
		if resp.StatusCode != http.StatusOK {
			var eb ErrorBody
			if resp.StatusCode != http.StatusFailedDependency || json.Unmarshal(body, &eb) != nil || eb.Type != CodeModel {
				t.Fatalf("status %d, body %q", resp.StatusCode, body)
			}
			if hs.mode == 0 || hs.mode == 3 {
				t.Fatalf("a well-formed stream was refused: %s", body)
			}
			return
		}
		if ct := resp.Header.Get("Content-Type"); ct != eventStreamContentType {
			t.Fatalf("Content-Type %q", ct)
		}
		dec := smithyes.NewDecoder()
		rd := bytes.NewReader(body)
		var parts [][]byte
		var exception string
		for rd.Len() > 0 {
			msg, err := dec.Decode(rd, nil)
			if err != nil {
				t.Fatalf("SDK decoder refused message %d: %v", len(parts), err)
			}
			if exception != "" {
				t.Fatal("a message followed the exception")
			}
			switch mt := msg.Headers.Get(":message-type").String(); mt {
			case "event":
				if et := msg.Headers.Get(":event-type").String(); et != "PayloadPart" {
					t.Fatalf("event type %q", et)
				}
				parts = append(parts, append([]byte(nil), msg.Payload...))
			case "exception":
				if xt := msg.Headers.Get(":exception-type").String(); xt != "ModelStreamError" {
					t.Fatalf("exception type %q", xt)
				}
				var p struct{ Message, ErrorCode string }
				if err := json.Unmarshal(msg.Payload, &p); err != nil || p.Message == "" {
					t.Fatalf("exception payload %q", msg.Payload)
				}
				exception = p.ErrorCode
			default:
				t.Fatalf("message type %q", mt)
			}
		}
		if hs.mode == 4 {
			return // garbage framing: decodable is all that can be asked
		}
		if len(parts) > len(hs.chunks) {
			t.Fatalf("%d parts from %d chunks", len(parts), len(hs.chunks))
		}
		for i, p := range parts {
			if !bytes.Equal(p, hs.chunks[i]) {
				t.Fatalf("part %d is %q, the model wrote %q", i, p, hs.chunks[i])
			}
		}
		switch hs.mode {
		case 0, 3:
			if exception != "" || len(parts) != len(hs.chunks) {
				t.Fatalf("complete stream: %d of %d parts, exception %q", len(parts), len(hs.chunks), exception)
			}
		case 1:
			if exception != StreamBroken {
				t.Fatalf("reset stream ended with %q", exception)
			}
		case 2:
			if exception != ModelInvocationTimeExceeded {
				t.Fatalf("stalled stream ended with %q", exception)
			}
		}
	})
}
