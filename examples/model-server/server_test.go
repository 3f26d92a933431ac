package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestMain lets the test binary double as the model-server binary, so the
// process-level test below exercises main() with real signals.
func TestMain(m *testing.M) {
	if os.Getenv("MODEL_SERVER_TEST_MAIN") == "1" {
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func quietLog() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func invoke(t *testing.T, h http.Handler, ctype, accept, body string) *httptest.ResponseRecorder {
	t.Helper()
	req := httptest.NewRequest(http.MethodPost, "/invocations", strings.NewReader(body))
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	if accept != "" {
		req.Header.Set("Accept", accept)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

func TestPing(t *testing.T) {
	for _, tc := range []struct {
		model *Model
		want  int
	}{{nil, http.StatusServiceUnavailable}, {trainIris(t, "v1", "sepal"), http.StatusOK}} {
		rec := httptest.NewRecorder()
		NewServer(tc.model, quietLog()).Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/ping", nil))
		if rec.Code != tc.want {
			t.Errorf("ping with model %v: %d, want %d", tc.model != nil, rec.Code, tc.want)
		}
	}
}

func TestInvocationsCSV(t *testing.T) {
	h := NewServer(trainIris(t, "v2", "all"), quietLog()).Handler()
	rec := invoke(t, h, "text/csv; charset=utf-8", "", "5.1,3.5,1.4,0.2\n\n7.0,3.2,4.7,1.4\r\n6.3,3.3,6.0,2.5\n")
	if rec.Code != http.StatusOK {
		t.Fatalf("status %d: %s", rec.Code, rec.Body)
	}
	if got := rec.Header().Get("Content-Type"); got != "text/csv" {
		t.Errorf("Content-Type = %q", got)
	}
	if got := rec.Header().Get(VersionHeader); got != "v2" {
		t.Errorf("%s = %q, want v2", VersionHeader, got)
	}
	want := "Iris-setosa\nIris-versicolor\nIris-virginica\n"
	if rec.Body.String() != want {
		t.Errorf("body = %q, want %q", rec.Body, want)
	}

	// Same CSV, JSON answer on request.
	rec = invoke(t, h, "text/csv", "application/json", "5.1,3.5,1.4,0.2\n")
	var resp jsonResponse
	if err := json.Unmarshal(rec.Body.Bytes(), &resp); err != nil || len(resp.Predictions) != 1 || resp.Predictions[0].Label != "Iris-setosa" {
		t.Errorf("CSV in, JSON out: %s (%v)", rec.Body, err)
	}
}

func TestInvocationsJSON(t *testing.T) {
	v1 := NewServer(trainIris(t, "v1", "sepal"), quietLog()).Handler()
	v2 := NewServer(trainIris(t, "v2", "all"), quietLog()).Handler()
	// One body for both versions: full rows and named features work for
	// a model that uses only some of them.
	body := `{"instances": [[6.3, 2.5, 5.0, 1.9], {"sepal_length": 6.3, "sepal_width": 2.5, "petal_length": 5.0, "petal_width": 1.9, "colour": 3}]}`
	for _, tc := range []struct {
		h       http.Handler
		version string
		label   string
	}{{v1, "v1", "Iris-versicolor"}, {v2, "v2", "Iris-virginica"}} {
		rec := invoke(t, tc.h, "application/json", "", body)
		if rec.Code != http.StatusOK {
			t.Fatalf("%s: status %d: %s", tc.version, rec.Code, rec.Body)
		}
		if rec.Header().Get("Content-Type") != "application/json" {
			t.Errorf("Content-Type = %q", rec.Header().Get("Content-Type"))
		}
		var resp jsonResponse
		if err := json.Unmarshal(rec.Body.Bytes(), &resp); err != nil {
			t.Fatal(err)
		}
		if resp.ModelVersion != tc.version || len(resp.Predictions) != 2 {
			t.Fatalf("%s: response %+v", tc.version, resp)
		}
		for _, p := range resp.Predictions {
			if p.Label != tc.label {
				t.Errorf("%s: label %s, want %s", tc.version, p.Label, tc.label)
			}
			var sum float64
			for _, v := range p.Probabilities {
				sum += v
			}
			if len(p.Probabilities) != 3 || sum < 0.999 || sum > 1.001 {
				t.Errorf("%s: probabilities %v", tc.version, p.Probabilities)
			}
		}
	}

	// v1 also takes rows of just its own features.
	rec := invoke(t, v1, "application/json", "text/csv", `{"instances": [[5.0, 3.6]]}`)
	if rec.Code != http.StatusOK || rec.Body.String() != "Iris-setosa\n" {
		t.Errorf("v1 with two features: %d %q", rec.Code, rec.Body)
	}
}

func TestInvocationsErrors(t *testing.T) {
	h := NewServer(trainIris(t, "v1", "sepal"), quietLog()).Handler()
	for name, tc := range map[string]struct {
		ctype, body string
		want        int
	}{
		"no content type":  {"", "1,2", http.StatusUnsupportedMediaType},
		"wrong type":       {"text/plain", "1,2", http.StatusUnsupportedMediaType},
		"not a number":     {"text/csv", "1,x", http.StatusBadRequest},
		"wrong width":      {"text/csv", "1,2,3", http.StatusBadRequest},
		"empty":            {"text/csv", "\n\n", http.StatusBadRequest},
		"bad json":         {"application/json", "{", http.StatusBadRequest},
		"no instances":     {"application/json", `{"rows": []}`, http.StatusBadRequest},
		"missing feature":  {"application/json", `{"instances": [{"sepal_length": 1}]}`, http.StatusBadRequest},
		"instance of junk": {"application/json", `{"instances": ["a"]}`, http.StatusBadRequest},
		"too large":        {"text/csv", strings.Repeat("1,2\n", maxPayload/4+1), http.StatusRequestEntityTooLarge},
	} {
		rec := invoke(t, h, tc.ctype, "", tc.body)
		if rec.Code != tc.want {
			t.Errorf("%s: status %d, want %d (%s)", name, rec.Code, tc.want, strings.TrimSpace(rec.Body.String()))
		}
	}
	rec := invoke(t, NewServer(nil, quietLog()).Handler(), "text/csv", "", "1,2")
	if rec.Code != http.StatusServiceUnavailable {
		t.Errorf("no model: status %d", rec.Code)
	}
	rec = httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/invocations", nil))
	if rec.Code != http.StatusMethodNotAllowed {
		t.Errorf("GET /invocations: %d", rec.Code)
	}
}

func TestDefaultListen(t *testing.T) {
	t.Setenv("SAGEMAKER_BIND_TO_PORT", "")
	t.Setenv("NOMAD_IP_http", "")
	if got := defaultListen(); got != ":8080" {
		t.Errorf("defaultListen() = %q, want :8080", got)
	}
	// In a container Nomad sets NOMAD_IP_http to the host's address, which
	// the container does not have: the contract's :8080 wins.
	t.Setenv("NOMAD_IP_http", "10.0.0.7")
	if got := defaultListen(); got != ":8080" {
		t.Errorf("in a container: defaultListen() = %q, want :8080", got)
	}
	t.Setenv("SAGEMAKER_BIND_TO_PORT", "9001")
	t.Setenv("NOMAD_IP_http", "127.0.0.1")
	if got := defaultListen(); got != "127.0.0.1:9001" {
		t.Errorf("defaultListen() = %q, want 127.0.0.1:9001", got)
	}
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func waitPing(t *testing.T, base string, exited <-chan struct{}) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-exited:
			t.Fatal("server exited before answering /ping")
		default:
		}
		resp, err := http.Get(base + "/ping")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatal("server never answered /ping with 200")
}

// TestServeProcess runs the binary as Nomad would: `serve`, port and model
// dir from the environment, SIGTERM to stop.
func TestServeProcess(t *testing.T) {
	dir := t.TempDir()
	if err := trainIris(t, "v1", "sepal").Save(dir); err != nil {
		t.Fatal(err)
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	port := freePort(t)
	var logs bytes.Buffer
	cmd := exec.Command(exe, "serve")
	cmd.Env = append(os.Environ(),
		"MODEL_SERVER_TEST_MAIN=1",
		"SAGEMAKER_BIND_TO_PORT="+strconv.Itoa(port),
		"NOMAD_IP_http=127.0.0.1",
		"SM_MODEL_DIR="+dir,
	)
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	var waitErr error
	go func() { waitErr = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		select {
		case <-exited:
		default:
			cmd.Process.Kill()
			<-exited
		}
	})

	base := "http://127.0.0.1:" + strconv.Itoa(port)
	waitPing(t, base, exited)
	resp, err := http.Post(base+"/invocations", "text/csv", strings.NewReader("6.3,2.5,5.0,1.9\n"))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.Header.Get(VersionHeader) != "v1" || string(b) != "Iris-versicolor\n" {
		t.Errorf("invocation: %s %q", resp.Header.Get(VersionHeader), b)
	}

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-exited:
		if waitErr != nil {
			t.Errorf("exit after SIGTERM: %v\n%s", waitErr, logs.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("still running 10s after SIGTERM\n%s", logs.String())
	}
	if !strings.Contains(logs.String(), "shutting down") {
		t.Errorf("no graceful shutdown in log:\n%s", logs.String())
	}
}

func TestServeFailsWithoutModel(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := serve(ctx, []string{"--listen", "127.0.0.1:0", "--model-dir", t.TempDir()}, quietLog())
	if err == nil || !strings.Contains(err.Error(), "model.json") {
		t.Errorf("serve without a model: %v", err)
	}
}

func TestTrainCommand(t *testing.T) {
	out := t.TempDir()
	var stdout bytes.Buffer
	err := run([]string{"train", "--data", irisPath, "--version", "v1", "--features", "sepal", "--out", out}, &stdout, quietLog())
	if err != nil {
		t.Fatal(err)
	}
	m, err := LoadModel(out)
	if err != nil {
		t.Fatal(err)
	}
	if m.Version != "v1" || len(m.Features) != 2 {
		t.Errorf("trained %s on %v", m.Version, m.Features)
	}
	if !strings.Contains(stdout.String(), "test accuracy") {
		t.Errorf("stdout: %q", stdout.String())
	}
	if _, err := os.Stat(out + "/model.tar.gz"); err != nil {
		t.Error(err)
	}
	if err := run([]string{"train", "--out", out}, io.Discard, quietLog()); err == nil {
		t.Error("train without --version accepted")
	}
	if err := run([]string{"bogus"}, io.Discard, quietLog()); err == nil {
		t.Error("unknown command accepted")
	}
}

func TestFaultInjection(t *testing.T) {
	t.Setenv("MODEL_SERVER_PING_STATUS", "503")
	t.Setenv("MODEL_SERVER_ERROR_EVERY", "3")
	f, err := faultsFromEnv()
	if err != nil {
		t.Fatal(err)
	}
	ok := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {})
	h := f.wrap(ok)
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/ping", nil))
	if rec.Code != 503 {
		t.Errorf("ping %d", rec.Code)
	}
	var fails int
	for i := 0; i < 9; i++ {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("POST", "/invocations", nil))
		if rec.Code == 500 {
			fails++
		}
	}
	if fails != 3 {
		t.Errorf("%d of 9 failed, want 3", fails)
	}
	t.Setenv("MODEL_SERVER_ERROR_EVERY", "0")
	if _, err := faultsFromEnv(); err == nil {
		t.Error("0 accepted")
	}
}

func TestInstanceAttribute(t *testing.T) {
	s := NewServer(trainIris(t, "v2", "all"), quietLog())
	s.Instance = "c0ffee"
	for _, tc := range []struct{ attrs, want string }{
		{"", "instance=c0ffee"},
		{"trace=1", "instance=c0ffee"},
	} {
		req := httptest.NewRequest(http.MethodPost, "/invocations", strings.NewReader("5.1,3.5,1.4,0.2\n"))
		req.Header.Set("Content-Type", "text/csv")
		if tc.attrs != "" {
			req.Header.Set("X-Amzn-SageMaker-Custom-Attributes", tc.attrs)
		}
		rec := httptest.NewRecorder()
		s.Handler().ServeHTTP(rec, req)
		if got := rec.Header().Get("X-Amzn-SageMaker-Custom-Attributes"); rec.Code != http.StatusOK || got != tc.want {
			t.Errorf("attributes %q: status %d, answer attributes %q, want %q", tc.attrs, rec.Code, got, tc.want)
		}
	}
}
