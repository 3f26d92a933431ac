package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"strconv"
	"strings"
)

// maxPayload is SageMaker's limit for a real-time invocation payload.
const maxPayload = 6 << 20

// VersionHeader carries the answering model's version on every /invocations
// response, so callers can tell variants apart whatever the body format.
const VersionHeader = "X-Model-Version"

// Server answers the SageMaker container contract for one loaded model.
type Server struct {
	model *Model // nil: not loaded, /ping fails
	log   *slog.Logger
	// Instance, when set, is answered in X-Amzn-SageMaker-Custom-Attributes
	// as instance=<Instance> (as the text server does), which SageMaker and
	// serai's router return to the caller: tests see which instance
	// answered.
	Instance string
}

// customAttrsHeader is SageMaker's opaque header, passed from the caller to
// the model and from the model back to the caller.
const customAttrsHeader = "X-Amzn-SageMaker-Custom-Attributes"

// NewServer serves m; m may be nil for a server that is up but not ready.
func NewServer(m *Model, log *slog.Logger) *Server {
	return &Server{model: m, log: log}
}

// Handler routes /ping and /invocations.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /ping", s.ping)
	mux.HandleFunc("POST /invocations", s.invocations)
	return mux
}

func (s *Server) ping(w http.ResponseWriter, _ *http.Request) {
	if s.model == nil {
		http.Error(w, "model not loaded", http.StatusServiceUnavailable)
		return
	}
	w.WriteHeader(http.StatusOK)
}

// jsonRequest is the JSON input: rows of numbers, or objects keyed by
// feature name (extra keys ignored).
type jsonRequest struct {
	Instances []json.RawMessage `json:"instances"`
}

type jsonResponse struct {
	ModelVersion string       `json:"model_version"`
	Predictions  []Prediction `json:"predictions"`
}

func (s *Server) invocations(w http.ResponseWriter, r *http.Request) {
	m := s.model
	if m == nil {
		http.Error(w, "model not loaded", http.StatusServiceUnavailable)
		return
	}
	ctype, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil {
		http.Error(w, "missing or malformed Content-Type; use text/csv or application/json", http.StatusUnsupportedMediaType)
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxPayload))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			http.Error(w, "payload larger than 6 MB", http.StatusRequestEntityTooLarge)
			return
		}
		http.Error(w, "reading body: "+err.Error(), http.StatusBadRequest)
		return
	}

	var rows [][]float64
	switch ctype {
	case "text/csv":
		rows, err = parseCSVRows(body)
	case "application/json":
		rows, err = parseJSONRows(body, m)
	default:
		http.Error(w, "unsupported Content-Type "+ctype+"; use text/csv or application/json", http.StatusUnsupportedMediaType)
		return
	}
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	if len(rows) == 0 {
		http.Error(w, "no rows in request", http.StatusBadRequest)
		return
	}
	preds := make([]Prediction, len(rows))
	for i, row := range rows {
		in, err := m.Inputs(row)
		if err != nil {
			http.Error(w, fmt.Sprintf("row %d: %v", i+1, err), http.StatusBadRequest)
			return
		}
		preds[i] = m.Predict(in)
	}

	w.Header().Set(VersionHeader, m.Version)
	if s.Instance != "" {
		w.Header().Set(customAttrsHeader, "instance="+s.Instance)
	}
	if wantsCSV(r.Header.Get("Accept"), ctype) {
		w.Header().Set("Content-Type", "text/csv")
		var b bytes.Buffer
		for _, p := range preds {
			b.WriteString(p.Label)
			b.WriteByte('\n')
		}
		w.Write(b.Bytes())
		return
	}
	w.Header().Set("Content-Type", "application/json")
	if err := json.NewEncoder(w).Encode(jsonResponse{ModelVersion: m.Version, Predictions: preds}); err != nil {
		s.log.Warn("writing response", "err", err)
	}
}

// wantsCSV picks the response format: an explicit Accept of one of the two
// formats wins, otherwise the answer comes in the request's format.
func wantsCSV(accept, requestType string) bool {
	for _, part := range strings.Split(accept, ",") {
		t, _, err := mime.ParseMediaType(strings.TrimSpace(part))
		if err != nil {
			continue
		}
		switch t {
		case "text/csv":
			return true
		case "application/json":
			return false
		}
	}
	return requestType == "text/csv"
}

// parseCSVRows reads one row of numbers per line; blank lines are skipped.
func parseCSVRows(body []byte) ([][]float64, error) {
	var rows [][]float64
	sc := bufio.NewScanner(bytes.NewReader(body))
	sc.Buffer(make([]byte, 64<<10), maxPayload)
	line := 0
	for sc.Scan() {
		line++
		text := strings.TrimSpace(sc.Text())
		if text == "" {
			continue
		}
		fields := strings.Split(text, ",")
		row := make([]float64, len(fields))
		for j, f := range fields {
			v, err := strconv.ParseFloat(strings.TrimSpace(f), 64)
			if err != nil {
				return nil, fmt.Errorf("line %d, value %d: %q is not a number", line, j+1, f)
			}
			row[j] = v
		}
		rows = append(rows, row)
	}
	return rows, sc.Err()
}

func parseJSONRows(body []byte, m *Model) ([][]float64, error) {
	var req jsonRequest
	if err := json.Unmarshal(body, &req); err != nil {
		return nil, fmt.Errorf("JSON body: %v", err)
	}
	if req.Instances == nil {
		return nil, errors.New(`JSON body needs "instances": [[...], ...] or [{"feature": value, ...}, ...]`)
	}
	rows := make([][]float64, len(req.Instances))
	for i, raw := range req.Instances {
		var arr []float64
		if err := json.Unmarshal(raw, &arr); err == nil {
			rows[i] = arr
			continue
		}
		var obj map[string]float64
		if err := json.Unmarshal(raw, &obj); err != nil {
			return nil, fmt.Errorf("instance %d: want an array of numbers or an object of feature: number", i+1)
		}
		row := make([]float64, len(m.Features))
		for j, f := range m.Features {
			v, ok := obj[f]
			if !ok {
				return nil, fmt.Errorf("instance %d: missing feature %q", i+1, f)
			}
			row[j] = v
		}
		rows[i] = row
	}
	return rows, nil
}
