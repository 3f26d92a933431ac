package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/seraihq/serai/router"
)

// timedWriter records when each write arrived.
type timedWriter struct {
	mu     sync.Mutex
	buf    bytes.Buffer
	writes []time.Time
}

func (w *timedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.writes = append(w.writes, time.Now())
	return w.buf.Write(p)
}

// invokeEnv is a real router with one streaming model behind it.
func invokeEnv(t *testing.T) string {
	t.Helper()
	m := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		if r.Header.Get("Content-Type") != "text/plain" {
			http.Error(w, "want text/plain", http.StatusUnsupportedMediaType)
			return
		}
		w.Header().Set("Content-Type", "text/plain")
		for i := range 5 {
			time.Sleep(30 * time.Millisecond)
			fmt.Fprintf(w, "%s%d ", b, i)
			w.(http.Flusher).Flush()
		}
	}))
	t.Cleanup(m.Close)
	rt, err := router.New(router.Config{})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(rt)
	t.Cleanup(func() { srv.Close(); rt.Close() })
	rt.SetRoutes("gen", &router.Routes{Version: router.RoutesVersion, Endpoint: "gen",
		Generations: []router.Generation{{Generation: 1, Weight: 1, Variants: []router.Variant{{Name: "v1", Weight: 1}}}}})
	rt.SetInstances("gen", []router.Instance{{ID: "i1", Address: m.Listener.Addr().String(), Variant: "v1", Generation: 1}})
	return srv.URL
}

func TestInvokeStreamPrintsAsTokensArrive(t *testing.T) {
	url := invokeEnv(t)
	body := filepath.Join(t.TempDir(), "prompt")
	os.WriteFile(body, []byte("tok"), 0o644)
	var stdout timedWriter
	var stderr bytes.Buffer
	start := time.Now()
	code := run([]string{"serai", "invoke", "gen", "--body", body, "--content-type", "text/plain", "--stream", "--router", url}, &stdout, &stderr)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	if got := stdout.buf.String(); got != "tok0 tok1 tok2 tok3 tok4 \n" {
		t.Fatalf("stdout %q", got)
	}
	if len(stdout.writes) < 5 {
		t.Fatalf("%d writes: tokens were not printed one by one", len(stdout.writes))
	}
	first, last := stdout.writes[0].Sub(start), stdout.writes[4].Sub(start)
	if last-first < 90*time.Millisecond {
		t.Fatalf("first token printed after %s, fifth after %s: not as they arrived", first, last)
	}

	// Non-streaming, JSON output.
	var out bytes.Buffer
	code = run([]string{"serai", "invoke", "gen", "--body", body, "--content-type", "text/plain", "--output", "json", "--router", url}, &out, &stderr)
	var o invokeOutput
	if code != 0 || json.Unmarshal(out.Bytes(), &o) != nil || o.Body == nil || *o.Body != "tok0 tok1 tok2 tok3 tok4 " || o.InvokedProductionVariant != "v1" {
		t.Fatalf("exit %d, %s %s", code, out.String(), stderr.String())
	}

	// An API error is printed with its code and exits 1.
	stderr.Reset()
	code = run([]string{"serai", "invoke", "gen", "--body", body, "--content-type", "text/csv", "--router", url}, io.Discard, &stderr)
	if code != exitError || !strings.Contains(stderr.String(), "ModelError") {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	code = run([]string{"serai", "invoke", "gen", "--content-type", "text/plain", "--router", url}, io.Discard, &stderr)
	if code != exitUsage {
		t.Fatalf("missing --body: exit %d", code)
	}
}
