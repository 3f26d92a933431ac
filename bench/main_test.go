package bench

import (
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"testing"
)

var (
	fullRun  = flag.Bool("bench.full", false, "run the whole comparison (minutes) instead of the smoke run")
	outPath  = flag.String("bench.out", "", "write the report here (Markdown), the plot beside it (.png)")
	duration = flag.Duration("bench.duration", 0, "measured time of each wrk run (default 2s)")
	roundsF  = flag.Int("bench.rounds", 0, "rounds per point, interleaved over the targets; the median is kept (default 3 full, 1 smoke)")
	targetsF = flag.String("bench.targets", "", "comma-separated targets to measure (default all whose binary is found)")
	connsF   = flag.String("bench.conns", "", "comma-separated connection counts (default 1,16,64,256 full, 64 smoke)")
	sizesF   = flag.String("bench.sizes", "", "comma-separated answer sizes, of 1k, 256k and stream (default all full, 1k smoke)")
	baseline = flag.String("bench.baseline", "", "also measure `serai router` built from this git revision, as target serai-base (before/after in one run)")
	seraiEnv = flag.String("bench.serai-env", "", "space-separated VAR=value pairs for the router's environment (GOGC=400, GOMAXPROCS=1, ...), for experiments")
	scaleN   = flag.Int("bench.endpoints", 0, "endpoints for the control-data scale, 10 instances each (default 1000 full, 20 smoke)")
)

// backendEnv tells a re-executed test binary to be a backend instance:
// "addr1k,addr256k,name".
const backendEnv = "SERAI_BENCH_BACKEND"

func TestMain(m *testing.M) {
	if spec := os.Getenv(backendEnv); spec != "" {
		if err := runBackend(spec); err != nil {
			fmt.Fprintln(os.Stderr, "backend:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	if spec := os.Getenv(routerEnv); spec != "" {
		if err := runProfiledRouter(spec); err != nil {
			fmt.Fprintln(os.Stderr, "router:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// answer sizes the backend serves, one port each. "stream" is a 1 KiB
// answer sent as streamParts chunks, each flushed: the model side of
// InvokeEndpointWithResponseStream.
var sizes = []struct {
	name   string
	n      int
	stream bool
}{{"1k", 1 << 10, false}, {"256k", 256 << 10, false}, {"stream", 1 << 10, true}}

// streamParts is how many chunks a streamed answer comes in.
const streamParts = 8

// requestBody is the small JSON payload every request carries.
const requestBody = `{"instances":[[0.12,0.34,0.56,0.78,0.9,0.11,0.13,0.15]]}`

// jsonAnswer is a JSON document of exactly n bytes.
func jsonAnswer(n int) []byte {
	head := `{"predictions":[0.12,0.88],"model":"bench","pad":"`
	tail := `"}`
	return []byte(head + strings.Repeat("x", n-len(head)-len(tail)) + tail)
}

// runBackend is one model instance: a plain net/http server answering POST
// /invocations with a fixed JSON answer, one listener per answer size. It
// counts the requests it served (GET /stats) so the bench can check the
// 9:1 split every proxy should produce (one count per process, both
// sizes). SIGINT from the harness ends it.
func runBackend(spec string) error {
	addrs := strings.Split(spec, ",")
	if len(addrs) != len(sizes) {
		return fmt.Errorf("want %d addresses, got %q", len(sizes), spec)
	}
	var served atomic.Int64
	errc := make(chan error, len(addrs))
	for i, addr := range addrs {
		body := jsonAnswer(sizes[i].n)
		length := []string{strconv.Itoa(len(body))}
		stream := sizes[i].stream
		mux := http.NewServeMux()
		mux.HandleFunc("POST /invocations", func(w http.ResponseWriter, r *http.Request) {
			io.Copy(io.Discard, r.Body)
			served.Add(1)
			h := w.Header()
			h["Content-Type"] = []string{"application/json"}
			if stream {
				// Chunked, one flush per part, as a model streaming tokens.
				f := w.(http.Flusher)
				part := len(body) / streamParts
				for p := 0; p < len(body); p += part {
					w.Write(body[p:min(p+part, len(body))])
					f.Flush()
				}
				return
			}
			h["Content-Length"] = length
			w.Write(body)
		})
		mux.HandleFunc("GET /ping", func(w http.ResponseWriter, r *http.Request) {})
		mux.HandleFunc("GET /stats", func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprint(w, served.Load())
		})
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			return err
		}
		srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 5 * time.Minute}
		go func() { errc <- srv.Serve(ln) }()
	}
	return <-errc
}
