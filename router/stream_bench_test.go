package router

import (
	"bufio"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	smithyes "github.com/aws/smithy-go/eventstream"
)

// pacedModel streams benchTokens chunks per request, sending each only when
// the client has received the previous one, so every chunk's latency is
// measured alone (no queueing behind the one before).
type pacedModel struct {
	ack  chan struct{}
	sent [benchTokens]time.Time
}

const benchTokens = 16

func (m *pacedModel) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	io.Copy(io.Discard, r.Body)
	w.Header().Set("Content-Type", "text/plain")
	rc := http.NewResponseController(w)
	for i := range benchTokens {
		if i > 0 {
			select {
			case <-m.ack:
			case <-r.Context().Done():
				return
			}
		}
		m.sent[i] = time.Now()
		io.WriteString(w, " token")
		rc.Flush()
	}
}

// BenchmarkStreamTokens measures time to first token (request sent to
// first chunk received) and per-chunk latency (model's write to the
// client's receipt) for a 16-token stream, straight from the model
// (chunked HTTP/1.1) and through the router (event stream), over loopback.
// Run: go test ./router -run '^$' -bench StreamTokens -benchtime 2000x
func BenchmarkStreamTokens(b *testing.B) {
	for _, via := range []string{"direct", "router"} {
		b.Run(via, func(b *testing.B) {
			m := &pacedModel{ack: make(chan struct{}, 1)}
			ms := model(b, "v", m.ServeHTTP)
			url := ms.URL + "/invocations"
			if via == "router" {
				e := newEnv(b, Config{})
				e.rt.SetRoutes("gen", oneGen("gen", "v", 1))
				e.rt.SetInstances("gen", []Instance{inst("i", addrOf(ms), "v", 1)})
				url = e.srv.URL + "/endpoints/gen/invocations-response-stream"
			}
			client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 4, DisableCompression: true}}
			dec := smithyes.NewDecoder()
			buf := make([]byte, 64<<10)
			var ttft, chunk time.Duration
			b.ResetTimer()
			for range b.N {
				start := time.Now()
				resp, err := client.Post(url, "text/plain", strings.NewReader("prompt"))
				if err != nil {
					b.Fatal(err)
				}
				br := bufio.NewReaderSize(resp.Body, 64<<10)
				for i := range benchTokens {
					if via == "router" {
						msg, err := dec.Decode(br, buf[:0])
						if err != nil || string(msg.Payload) != " token" {
							b.Fatalf("event %d: %v %q", i, err, msg.Payload)
						}
					} else {
						n, err := br.Read(buf)
						if err == io.EOF && n > 0 {
							err = nil // the last chunk may come with the end
						}
						if err != nil || string(buf[:n]) != " token" {
							b.Fatalf("chunk %d: %v %q", i, err, buf[:n])
						}
					}
					now := time.Now()
					if i == 0 {
						ttft += now.Sub(start)
					} else {
						chunk += now.Sub(m.sent[i])
					}
					if i < benchTokens-1 {
						m.ack <- struct{}{}
					}
				}
				io.Copy(io.Discard, br)
				resp.Body.Close()
			}
			b.StopTimer()
			b.ReportMetric(float64(ttft.Microseconds())/float64(b.N), "ttft-µs")
			b.ReportMetric(float64(chunk.Microseconds())/float64(b.N*(benchTokens-1)), "chunk-µs")
		})
	}
}
