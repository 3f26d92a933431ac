package artifact

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"net/url"
	"os"
	"path"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// opener fetches an object from a byte offset on. It is called again after
// a transient failure so a large download resumes instead of starting over.
type opener interface {
	// open returns the body starting at offset, or at an earlier offset the
	// caller must skip (servers that ignore Range). etag, when non-empty, is
	// the validator from the first response: the store must refuse (or
	// signal) a changed object.
	open(ctx context.Context, offset int64, etag string) (*response, error)
	// String is the artifact location with anything secret removed.
	String() string
	// name is the file name a non-archive artifact gets in the model dir.
	name() string
}

type response struct {
	body   io.ReadCloser
	start  int64 // offset of the first body byte
	size   int64 // total object size, -1 when the store did not say
	etag   string
	header string // e.g. Content-Encoding; only for diagnostics
}

// location is a parsed artifact URL.
type location struct {
	scheme string // s3, https, file
	bucket string // s3
	key    string // s3
	path   string // file
	url    *url.URL
}

func parseLocation(raw string) (location, error) {
	u, err := url.Parse(raw)
	if err != nil {
		// url.Parse echoes the input, which may be a presigned URL: keep it out.
		return location{}, newError(ErrInvalidConfig, nil, "artifact URL is not a valid URL")
	}
	switch u.Scheme {
	case "s3":
		key := strings.TrimPrefix(u.Path, "/")
		if u.Host == "" || key == "" {
			return location{}, newError(ErrInvalidConfig, nil, fmt.Sprintf("artifact URL %q must look like s3://bucket/key", redactURL(u)))
		}
		return location{scheme: "s3", bucket: u.Host, key: key, url: u}, nil
	case "https":
		if u.Host == "" {
			return location{}, newError(ErrInvalidConfig, nil, "artifact URL https:// has no host")
		}
		return location{scheme: "https", url: u}, nil
	case "file":
		if u.Host != "" && u.Host != "localhost" {
			return location{}, newError(ErrInvalidConfig, nil, fmt.Sprintf("artifact URL %q: file URLs must be file:///absolute/path", redactURL(u)))
		}
		if !path.IsAbs(u.Path) {
			return location{}, newError(ErrInvalidConfig, nil, "artifact URL: file URLs must be file:///absolute/path")
		}
		return location{scheme: "file", path: u.Path, url: u}, nil
	case "http":
		return location{}, newError(ErrInvalidConfig, nil, fmt.Sprintf("artifact URL %q uses plain http: use https://, or s3:// with the store's endpoint", redactURL(u)))
	default:
		return location{}, newError(ErrInvalidConfig, nil, fmt.Sprintf("artifact URL scheme %q is not supported (use s3://, https:// or file://)", u.Scheme))
	}
}

// redactURL drops user info, query and fragment: presigned URLs carry their
// signature (and sometimes a session token) in the query.
func redactURL(u *url.URL) string {
	c := *u
	c.User = nil
	c.RawQuery = ""
	c.ForceQuery = false
	c.Fragment = ""
	c.RawFragment = ""
	return c.String()
}

// isTransient reports whether trying again could succeed. Network failures,
// truncated bodies, throttling and server errors are; anything the store
// answered definitively (404, 403, bad request) is not.
func isTransient(err error) bool {
	if err == nil {
		return false
	}
	var fe *Error
	if errors.As(err, &fe) {
		return errors.Is(fe.Kind, errTransient)
	}
	if errors.Is(err, errStalled) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.ECONNREFUSED) ||
		errors.Is(err, syscall.EPIPE) || errors.Is(err, syscall.ECONNABORTED) {
		return true
	}
	var ne net.Error
	if errors.As(err, &ne) {
		return true
	}
	var oe *net.OpError
	return errors.As(err, &oe)
}

// tlsTrustError recognises certificate failures, which no retry fixes.
func tlsTrustError(err error) (string, bool) {
	var (
		verify   *tls.CertificateVerificationError
		unknown  x509.UnknownAuthorityError
		hostname x509.HostnameError
		invalid  x509.CertificateInvalidError
	)
	if errors.As(err, &verify) || errors.As(err, &unknown) || errors.As(err, &hostname) || errors.As(err, &invalid) {
		return fmt.Sprintf("the server's TLS certificate is not trusted (%v); if it is signed by a private CA, give the fetch task the CA bundle through SSL_CERT_FILE", err), true
	}
	return "", false
}

// errTransient marks opener errors worth a retry; it never reaches callers
// of Fetch (the retry loop turns exhaustion into ErrUnavailable).
var errTransient = errors.New("transient")

// errStalled is the cause set when no byte arrived within the stall timeout.
var errStalled = errors.New("no data received within the stall timeout")

// transientStatus reports whether an HTTP status is worth retrying.
func transientStatus(code int) bool {
	return code >= 500 || code == http.StatusTooManyRequests || code == http.StatusRequestTimeout
}

// httpsSource downloads from an https URL, resuming with Range/If-Range.
type httpsSource struct {
	u      *url.URL
	client *http.Client
}

func (s *httpsSource) String() string { return redactURL(s.u) }

func (s *httpsSource) name() string { return path.Base(s.u.Path) }

func (s *httpsSource) open(ctx context.Context, offset int64, etag string) (*response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.u.String(), nil)
	if err != nil {
		return nil, newError(ErrInvalidConfig, nil, fmt.Sprintf("artifact URL %s: cannot build request", s))
	}
	// Ask for the bytes as stored: transparent decompression would change
	// what the checksum covers.
	req.Header.Set("Accept-Encoding", "identity")
	if offset > 0 {
		req.Header.Set("Range", "bytes="+strconv.FormatInt(offset, 10)+"-")
		if etag != "" && !strings.HasPrefix(etag, "W/") {
			req.Header.Set("If-Range", etag)
		}
	}
	resp, err := s.client.Do(req)
	if err != nil {
		// *url.Error repeats the full URL, query included: report its cause only.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if msg, ok := tlsTrustError(err); ok {
			return nil, newError(ErrRefused, err, fmt.Sprintf("GET %s: %s", s, msg))
		}
		return nil, newError(errTransient, err, fmt.Sprintf("GET %s: %v", s, err))
	}
	switch {
	case resp.StatusCode == http.StatusOK || resp.StatusCode == http.StatusPartialContent:
	default:
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4096))
		_ = resp.Body.Close()
		return nil, httpStatusError(resp.StatusCode, s.String())
	}
	r := &response{body: resp.Body, size: -1, etag: resp.Header.Get("ETag"), header: resp.Header.Get("Content-Encoding")}
	if resp.StatusCode == http.StatusPartialContent {
		start, total, ok := parseContentRange(resp.Header.Get("Content-Range"))
		if !ok {
			_ = resp.Body.Close()
			return nil, newError(errTransient, nil, fmt.Sprintf("GET %s: 206 response without a usable Content-Range", s))
		}
		r.start, r.size = start, total
	} else if resp.ContentLength >= 0 {
		r.size = resp.ContentLength
	}
	return r, nil
}

func httpStatusError(code int, where string) error {
	msg := fmt.Sprintf("GET %s: HTTP %d %s", where, code, http.StatusText(code))
	switch {
	case code == http.StatusNotFound || code == http.StatusGone:
		return newError(ErrNotFound, nil, msg+": check the model's artifact URL")
	case code == http.StatusUnauthorized || code == http.StatusForbidden:
		return newError(ErrAccessDenied, nil, msg+": the server refused the request (an expired presigned URL, or missing authorization)")
	case code == http.StatusPreconditionFailed:
		return newError(ErrChanged, nil, msg+": the artifact changed while it was being downloaded")
	case transientStatus(code):
		return newError(errTransient, nil, msg)
	default:
		return newError(ErrRefused, nil, msg)
	}
}

// parseContentRange reads "bytes 100-199/200".
func parseContentRange(v string) (start, total int64, ok bool) {
	rest, found := strings.CutPrefix(v, "bytes ")
	if !found {
		return 0, 0, false
	}
	rng, tot, found := strings.Cut(rest, "/")
	if !found {
		return 0, 0, false
	}
	first, _, found := strings.Cut(rng, "-")
	if !found {
		return 0, 0, false
	}
	start, err := strconv.ParseInt(first, 10, 64)
	if err != nil {
		return 0, 0, false
	}
	if tot == "*" {
		return start, -1, true
	}
	total, err = strconv.ParseInt(tot, 10, 64)
	if err != nil {
		return 0, 0, false
	}
	return start, total, true
}

// fileSource reads a local file: handy for air-gapped nodes and for tests.
type fileSource struct {
	path string
}

func (s *fileSource) String() string { return "file://" + s.path }

func (s *fileSource) name() string { return path.Base(s.path) }

func (s *fileSource) open(ctx context.Context, offset int64, etag string) (*response, error) {
	f, err := os.Open(s.path)
	if err != nil {
		switch {
		case errors.Is(err, fs.ErrNotExist):
			return nil, newError(ErrNotFound, err, fmt.Sprintf("%s: no such file on this node", s))
		case errors.Is(err, fs.ErrPermission):
			return nil, newError(ErrAccessDenied, err, fmt.Sprintf("%s: permission denied for the fetch task's user", s))
		default:
			return nil, newError(ErrNotFound, err, fmt.Sprintf("%s: %v", s, err))
		}
	}
	st, err := f.Stat()
	if err != nil || !st.Mode().IsRegular() {
		_ = f.Close()
		return nil, newError(ErrNotFound, err, fmt.Sprintf("%s: not a regular file", s))
	}
	tag := strconv.FormatInt(st.Size(), 10) + "-" + strconv.FormatInt(st.ModTime().UnixNano(), 10)
	if etag != "" && etag != tag {
		_ = f.Close()
		return nil, newError(ErrChanged, nil, fmt.Sprintf("%s changed while it was being read", s))
	}
	if _, err := f.Seek(offset, io.SeekStart); err != nil {
		_ = f.Close()
		return nil, newError(errTransient, err, fmt.Sprintf("%s: seek: %v", s, err))
	}
	return &response{body: f, start: offset, size: st.Size(), etag: tag}, nil
}

// newHTTPClient builds the client for https artifacts and S3 stores. No
// overall timeout: a large artifact legitimately takes long, and the fetch
// deadline and stall detection bound it instead.
func newHTTPClient() *http.Client {
	dialer := &net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}
	return &http.Client{Transport: &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           dialer.DialContext,
		TLSHandshakeTimeout:   15 * time.Second,
		ResponseHeaderTimeout: 60 * time.Second,
		ExpectContinueTimeout: time.Second,
		IdleConnTimeout:       90 * time.Second,
		MaxIdleConns:          4,
		ForceAttemptHTTP2:     true,
		// The checksum covers the bytes as stored; never let the transport
		// gunzip a .tar.gz served with Content-Encoding: gzip.
		DisableCompression: true,
	}}
}
