package main

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"strings"
	"sync"
	"time"
)

const (
	hdrSessionID       = "X-Amzn-SageMaker-Session-Id"
	hdrClosedSessionID = "X-Amzn-SageMaker-Closed-Session-Id"
	newSession         = "NEW_SESSION"
	// sessionTTL is how long an idle session is kept.
	sessionTTL = 30 * time.Minute
	// maxNewTokens bounds one answer.
	maxNewTokens = 2048
)

// TextServer serves a TextModel: POST /invocations streams generated
// tokens as an HTTP/1.1 chunked answer, one chunk per token, flushed as
// each is generated after the configured per-token delay. It keeps
// SageMaker stateful sessions: the conversation so far is the context the
// next answer continues from.
type TextServer struct {
	model *TextModel
	delay time.Duration
	// Instance, when set, is answered in X-Amzn-SageMaker-Custom-Attributes
	// as instance=<Instance>, so a client (and the e2e suite) can tell
	// which instance holds its session.
	Instance string
	log      *slog.Logger

	mu       sync.Mutex
	sessions map[string]*textSession
}

type textSession struct {
	ctx     []string
	expires time.Time
}

// NewTextServer serves m, waiting delay before each token.
func NewTextServer(m *TextModel, delay time.Duration, log *slog.Logger) *TextServer {
	return &TextServer{model: m, delay: delay, log: log, sessions: map[string]*textSession{}}
}

// Handler routes /ping and /invocations.
func (s *TextServer) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /ping", func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusOK) })
	mux.HandleFunc("POST /invocations", s.invocations)
	return mux
}

// TextRequest is the JSON input; a text/plain body is the prompt alone.
type TextRequest struct {
	Inputs     string         `json:"inputs"`
	Parameters TextParameters `json:"parameters"`
	// Close ends the request's stateful session.
	Close bool `json:"close"`
}

// TextParameters tune one generation.
type TextParameters struct {
	MaxNewTokens int    `json:"max_new_tokens"`
	Seed         uint64 `json:"seed"`
	// TokenDelayMS overrides the server's per-token delay (0: keep it).
	TokenDelayMS int `json:"token_delay_ms"`
}

func (s *TextServer) invocations(w http.ResponseWriter, r *http.Request) {
	ctype, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil {
		http.Error(w, "missing or malformed Content-Type; use text/plain or application/json", http.StatusUnsupportedMediaType)
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxPayload))
	if err != nil {
		http.Error(w, "reading body: "+err.Error(), http.StatusBadRequest)
		return
	}
	req := TextRequest{Parameters: TextParameters{MaxNewTokens: 40}}
	switch ctype {
	case "text/plain":
		req.Inputs = string(body)
	case "application/json":
		if err := json.Unmarshal(body, &req); err != nil {
			http.Error(w, "JSON body: "+err.Error(), http.StatusBadRequest)
			return
		}
	default:
		http.Error(w, "unsupported Content-Type "+ctype+"; use text/plain or application/json", http.StatusUnsupportedMediaType)
		return
	}
	p := req.Parameters
	if p.MaxNewTokens <= 0 || p.MaxNewTokens > maxNewTokens {
		http.Error(w, "parameters.max_new_tokens must be 1 to 2048", http.StatusBadRequest)
		return
	}
	delay := s.delay
	if p.TokenDelayMS > 0 {
		delay = time.Duration(p.TokenDelayMS) * time.Millisecond
	}

	prompt := Tokenize(req.Inputs)
	sid := r.Header.Get(hdrSessionID)
	var sess *textSession
	switch {
	case sid == newSession:
		id, err := newSessionID(s.model.Version)
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		sess = &textSession{}
		s.mu.Lock()
		s.sweepLocked(time.Now())
		s.sessions[id] = sess
		s.mu.Unlock()
		sid = id
	case sid != "":
		s.mu.Lock()
		sess = s.sessions[sid]
		if sess != nil && req.Close {
			delete(s.sessions, sid)
		}
		s.mu.Unlock()
		if sess == nil {
			http.Error(w, "unknown or expired session "+sid, http.StatusBadRequest)
			return
		}
		if req.Close {
			w.Header().Set(hdrClosedSessionID, sid)
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
			io.WriteString(w, "session closed\n")
			return
		}
	case req.Close:
		http.Error(w, "close needs a session (X-Amzn-SageMaker-Session-Id)", http.StatusBadRequest)
		return
	}
	if sess != nil {
		s.mu.Lock()
		sess.ctx = append(sess.ctx, prompt...)
		prompt = append([]string(nil), sess.ctx...)
		sess.expires = time.Now().Add(sessionTTL)
		s.mu.Unlock()
		w.Header().Set(hdrSessionID, sid+"; Expires="+sess.expires.UTC().Format("2006-01-02T15:04:05Z"))
	}

	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set(VersionHeader, s.model.Version)
	if s.Instance != "" {
		w.Header().Set("X-Amzn-SageMaker-Custom-Attributes", "instance="+s.Instance)
	}
	rc := http.NewResponseController(w)
	prev := ""
	if len(prompt) > 0 {
		prev = prompt[len(prompt)-1]
	}
	var out []string
	s.model.Generate(prompt, p.MaxNewTokens, p.Seed, func(tok string) bool {
		if delay > 0 {
			t := time.NewTimer(delay)
			select {
			case <-r.Context().Done():
				t.Stop()
				return false
			case <-t.C:
			}
		}
		if _, err := io.WriteString(w, Detokenize(prev, tok)); err != nil {
			return false
		}
		if err := rc.Flush(); err != nil {
			return false
		}
		prev = tok
		out = append(out, tok)
		return r.Context().Err() == nil
	})
	if sess != nil {
		s.mu.Lock()
		sess.ctx = append(sess.ctx, out...)
		s.mu.Unlock()
	}
}

func (s *TextServer) sweepLocked(now time.Time) {
	for id, ss := range s.sessions {
		if !ss.expires.IsZero() && now.After(ss.expires) {
			delete(s.sessions, id)
		}
	}
}

// newSessionID follows SageMaker's pattern ^[a-zA-Z0-9](-*[a-zA-Z0-9])*$.
func newSessionID(version string) (string, error) {
	var b [12]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", errors.New("no randomness for a session ID")
	}
	v := strings.Map(func(r rune) rune {
		if r < 128 && (r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9') {
			return r
		}
		return -1
	}, version)
	if v == "" {
		v = "s"
	}
	return v + "-" + hex.EncodeToString(b[:]), nil
}
