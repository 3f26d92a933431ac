// Package s3test runs a real S3-protocol server (gofakes3, in memory) on a
// loopback port for tests, with two things gofakes3 lacks: SigV4
// signature checking, so wrong credentials are refused as a real store
// refuses them, and fault injection (truncated and stalled bodies, errors).
// It is for tests only and listens on loopback alone.
package s3test

import (
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	"github.com/johannesboyne/gofakes3"
	"github.com/johannesboyne/gofakes3/backend/s3mem"

	"github.com/seraihq/serai/internal/sigv4"
)

// Fault tells the server what to do with one GET of an object. The zero
// value serves it normally.
type Fault struct {
	// TruncateAfter > 0 closes the connection after that many body bytes;
	// TruncateNow closes it before any body byte.
	TruncateAfter int64
	TruncateNow   bool
	// StallAfter > 0 stops sending (without closing) after that many bytes
	// until the client gives up or the request ends.
	StallAfter int64
	// Status, when non-zero, answers with that HTTP status and an S3 error.
	Status int
}

// Request is one request the server saw, for assertions.
type Request struct {
	Method string
	Path   string
	Range  string
	Status int
}

// Server is the S3 store on loopback.
type Server struct {
	URL     string
	Region  string
	Backend gofakes3.Backend

	mu      sync.Mutex
	keys    map[string]string // access key ID -> secret
	fault   func(n int, r *http.Request) Fault
	gets    int
	history []Request
}

// New starts a server accepting the given access key and secret. It stops
// when the test ends.
func New(t testing.TB, accessKey, secretKey string) *Server {
	t.Helper()
	return NewAt(t, "127.0.0.1", accessKey, secretKey)
}

// NewAt is New listening on host, an address of this machine (e.g. a test
// cluster's bridge address, which its network namespaces can reach).
func NewAt(t testing.TB, host, accessKey, secretKey string) *Server {
	t.Helper()
	backend := s3mem.New()
	faker := gofakes3.New(backend, gofakes3.WithAutoBucket(false))
	s := &Server{Region: "us-east-1", Backend: backend, keys: map[string]string{accessKey: secretKey}}
	inner := faker.Server()
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.serve(inner, w, r)
	}))
	ln, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		t.Fatalf("s3test: listen on %s: %v", host, err)
	}
	srv.Listener.Close()
	srv.Listener = ln
	srv.Start()
	t.Cleanup(srv.Close)
	s.URL = srv.URL
	return s
}

// AddKey accepts another access key (e.g. a Vault-issued one).
func (s *Server) AddKey(accessKey, secretKey string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.keys[accessKey] = secretKey
}

// Bucket creates a bucket.
func (s *Server) Bucket(t testing.TB, name string) {
	t.Helper()
	if err := s.Backend.CreateBucket(name); err != nil {
		t.Fatalf("s3test: create bucket %s: %v", name, err)
	}
}

// Put stores an object straight into the backend (no HTTP), streaming from r.
func (s *Server) Put(t testing.TB, bucket, key string, r io.Reader, size int64) {
	t.Helper()
	if _, err := s.Backend.PutObject(bucket, key, map[string]string{"Last-Modified": time.Now().UTC().Format(http.TimeFormat)}, r, size, nil); err != nil {
		t.Fatalf("s3test: put %s/%s: %v", bucket, key, err)
	}
}

// SetFault installs fn, called with the 1-based count of object GETs so far.
func (s *Server) SetFault(fn func(n int, r *http.Request) Fault) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.fault = fn
	s.gets = 0
}

// Requests returns what the server saw so far.
func (s *Server) Requests() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Request(nil), s.history...)
}

func (s *Server) serve(inner http.Handler, w http.ResponseWriter, r *http.Request) {
	rec := &recorder{ResponseWriter: w, status: http.StatusOK, done: r.Context().Done()}
	defer func() {
		s.mu.Lock()
		s.history = append(s.history, Request{Method: r.Method, Path: r.URL.Path, Range: r.Header.Get("Range"), Status: rec.status})
		s.mu.Unlock()
	}()
	if code, msg := s.checkAuth(r); code != "" {
		writeError(rec, http.StatusForbidden, code, msg)
		return
	}
	var f Fault
	if r.Method == http.MethodGet && isObjectPath(r.URL.Path) {
		s.mu.Lock()
		s.gets++
		n, fn := s.gets, s.fault
		s.mu.Unlock()
		if fn != nil {
			f = fn(n, r)
		}
	}
	if f.Status != 0 {
		writeError(rec, f.Status, "InternalError", "injected failure")
		return
	}
	if f.TruncateNow || f.TruncateAfter > 0 || f.StallAfter > 0 {
		rec.fault = f
	}
	inner.ServeHTTP(rec, r)
}

// isObjectPath reports a path-style object path: /bucket/key.
func isObjectPath(p string) bool {
	p = strings.TrimPrefix(p, "/")
	i := strings.IndexByte(p, '/')
	return i > 0 && i < len(p)-1
}

// checkAuth verifies a SigV4 Authorization header by signing the same
// request again with the secret the server knows and comparing signatures
// (internal/sigv4): the SDK's own signer is the reference, so this checks
// what a real store checks without re-implementing the algorithm.
func (s *Server) checkAuth(r *http.Request) (code, msg string) {
	auth := r.Header.Get("Authorization")
	if auth == "" {
		return "AccessDenied", "Anonymous access is denied"
	}
	a, err := sigv4.ParseAuthorization(auth)
	if errors.Is(err, sigv4.ErrNotSigV4) {
		return "AccessDenied", "unsupported authorization"
	}
	if err != nil {
		return "AuthorizationHeaderMalformed", err.Error()
	}
	s.mu.Lock()
	secret, ok := s.keys[a.AccessKeyID]
	s.mu.Unlock()
	if !ok {
		return "InvalidAccessKeyId", "The AWS Access Key Id you provided does not exist in our records."
	}
	when, err := sigv4.SigningTime(r)
	if err != nil {
		return "AccessDenied", err.Error()
	}
	creds := aws.Credentials{SecretAccessKey: secret, SessionToken: r.Header.Get("X-Amz-Security-Token")}
	res, err := sigv4.Verify(r.Context(), s3Signer, r, a, creds, r.Header.Get("X-Amz-Content-Sha256"), when)
	if err != nil {
		return "AccessDenied", "cannot verify signature"
	}
	if res != sigv4.Match {
		return "SignatureDoesNotMatch", "The request signature we calculated does not match the signature you provided. Check your key and signing method."
	}
	return "", ""
}

// s3Signer signs as S3 clients do: S3 paths are not escaped twice.
var s3Signer = v4.NewSigner(func(o *v4.SignerOptions) { o.DisableURIPathEscaping = true })

func writeError(w http.ResponseWriter, status int, code, msg string) {
	type errorXML struct {
		XMLName   xml.Name `xml:"Error"`
		Code      string
		Message   string
		RequestID string `xml:"RequestId"`
	}
	b, _ := xml.Marshal(errorXML{Code: code, Message: msg, RequestID: "s3test"})
	w.Header().Set("Content-Type", "application/xml")
	w.WriteHeader(status)
	_, _ = fmt.Fprintf(w, "%s%s", xml.Header, b)
}

// recorder notes the status and applies body faults.
type recorder struct {
	http.ResponseWriter
	status  int
	fault   Fault
	written int64
	done    <-chan struct{}
}

func (r *recorder) WriteHeader(code int) {
	r.status = code
	r.ResponseWriter.WriteHeader(code)
}

func (r *recorder) Write(p []byte) (int, error) {
	f := r.fault
	limit := int64(-1)
	switch {
	case f.TruncateNow:
		limit = 0
	case f.TruncateAfter > 0:
		limit = f.TruncateAfter
	case f.StallAfter > 0:
		limit = f.StallAfter
	}
	if limit < 0 || r.written+int64(len(p)) <= limit {
		n, err := r.ResponseWriter.Write(p)
		r.written += int64(n)
		return n, err
	}
	keep := limit - r.written
	if keep > 0 {
		n, _ := r.ResponseWriter.Write(p[:keep])
		r.written += int64(n)
	}
	if fl, ok := r.ResponseWriter.(http.Flusher); ok {
		fl.Flush()
	}
	if f.StallAfter > 0 {
		// Hold the connection open and silent until the client hangs up.
		<-r.done
	}
	// Closes the connection mid-body; the client sees an unexpected EOF.
	panic(http.ErrAbortHandler)
}

func (r *recorder) Flush() {
	if fl, ok := r.ResponseWriter.(http.Flusher); ok {
		fl.Flush()
	}
}
