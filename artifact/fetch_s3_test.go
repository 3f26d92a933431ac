package artifact

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/seraihq/serai/internal/s3test"
)

const (
	testAccessKey = "AKIASERAITEST0000001"
	testSecretKey = "s3cr3t/serai+test+key+do+not+log+000000"
)

func TestMain(m *testing.M) {
	// Belt and braces: the S3 client is built without any loader that would
	// probe instance metadata, but a future change must not start to.
	os.Setenv("AWS_EC2_METADATA_DISABLED", "true")
	os.Exit(m.Run())
}

type s3Fixture struct {
	srv  *s3test.Server
	art  []byte
	url  string
	sb   *sandbox
	cfg  Config
	logs *bytes.Buffer
}

func newS3Fixture(t *testing.T) *s3Fixture {
	t.Helper()
	srv := s3test.New(t, testAccessKey, testSecretKey)
	srv.Bucket(t, "models")
	art := tarGz(t, tfile("model.bin", noise(400000)), tfile("config.json", `{"k":1}`))
	srv.Put(t, "models", "churn/v3/model.tar.gz", bytes.NewReader(art), int64(len(art)))
	sb := newSandbox(t)
	f := &s3Fixture{srv: srv, art: art, url: "s3://models/churn/v3/model.tar.gz", sb: sb}
	f.cfg = Config{
		ModelName:   "churn",
		URL:         f.url,
		SHA256:      sum(art),
		Dir:         sb.modelDir,
		Timeout:     20 * time.Second,
		Store:       Store{Name: "minio-main", Endpoint: srv.URL, Region: "us-east-1", PathStyle: true},
		Credentials: Credentials{AccessKeyID: testAccessKey, SecretAccessKey: testSecretKey},
		Retry:       fastRetry(),
		Logger:      testLogger(t),
	}
	return f
}

// fail runs a fetch expected to fail and checks it failed closed: the right
// kind, no model dir, no staging dir, and no credential in the message.
func (f *s3Fixture) fail(t *testing.T, cfg Config, want error) error {
	t.Helper()
	before := snapshot(t, f.sb.root)
	_, err := Fetch(context.Background(), cfg)
	if !errors.Is(err, want) {
		t.Fatalf("err = %v, want %v", err, want)
	}
	t.Logf("failed as expected: %v", err)
	if after := snapshot(t, f.sb.root); !slices.Equal(before, after) {
		t.Errorf("files changed after a failed fetch:\nbefore %q\nafter  %q", before, after)
	}
	for _, secret := range []string{testSecretKey, testAccessKey, cfg.Credentials.SecretAccessKey, cfg.Credentials.AccessKeyID} {
		if secret != "" && strings.Contains(err.Error(), secret) {
			t.Errorf("error message contains a credential: %v", err)
		}
	}
	return err
}

func TestS3HappyPath(t *testing.T) {
	f := newS3Fixture(t)
	res, err := Fetch(context.Background(), f.cfg)
	if err != nil {
		t.Fatalf("Fetch: %v", err)
	}
	if res.SHA256 != sum(f.art) || res.Format != FormatTarGz || res.Files != 2 {
		t.Errorf("result = %+v", res)
	}
	b, err := os.ReadFile(filepath.Join(f.sb.modelDir, "config.json"))
	if err != nil || string(b) != `{"k":1}` {
		t.Errorf("config.json = %q, %v", b, err)
	}
	reqs := f.srv.Requests()
	if len(reqs) != 1 || reqs[0].Path != "/models/churn/v3/model.tar.gz" || reqs[0].Status != http.StatusOK {
		t.Errorf("requests = %+v, want one path-style GET", reqs)
	}
}

func TestS3MissingKeyAndBucket(t *testing.T) {
	f := newS3Fixture(t)
	cfg := f.cfg
	cfg.URL = "s3://models/churn/v4/model.tar.gz"
	err := f.fail(t, cfg, ErrNotFound)
	if !strings.Contains(err.Error(), `no such key "churn/v4/model.tar.gz" in bucket "models"`) || !strings.Contains(err.Error(), "minio-main") {
		t.Errorf("message does not say what is missing where: %v", err)
	}
	cfg.URL = "s3://nobucket/model.tar.gz"
	err = f.fail(t, cfg, ErrNotFound)
	if !strings.Contains(err.Error(), `no such bucket "nobucket"`) {
		t.Errorf("message does not name the bucket: %v", err)
	}
}

func TestS3WrongCredentials(t *testing.T) {
	f := newS3Fixture(t)
	for name, creds := range map[string]Credentials{
		"wrong secret":     {AccessKeyID: testAccessKey, SecretAccessKey: "not-the-secret-at-all-0000000000000000"},
		"unknown key":      {AccessKeyID: "AKIAUNKNOWN000000000", SecretAccessKey: testSecretKey},
		"stale session":    {AccessKeyID: testAccessKey, SecretAccessKey: "wrong", SessionToken: "token-from-another-lease"},
		"none (anonymous)": {},
	} {
		t.Run(name, func(t *testing.T) {
			cfg := f.cfg
			cfg.Credentials = creds
			err := f.fail(t, cfg, ErrAccessDenied)
			if name == "none (anonymous)" && !strings.Contains(err.Error(), "anonymous") {
				t.Errorf("anonymous denial does not say so: %v", err)
			}
			if creds.SessionToken != "" && strings.Contains(err.Error(), creds.SessionToken) {
				t.Errorf("session token leaked: %v", err)
			}
		})
	}
	// Access denied is definitive: no retries hammering the store.
	if n := len(f.srv.Requests()); n != 4 {
		t.Errorf("store saw %d requests for 4 denied fetches; denials must not be retried", n)
	}
}

func TestS3ChecksumMismatch(t *testing.T) {
	f := newS3Fixture(t)
	cfg := f.cfg
	cfg.SHA256 = strings.Repeat("0", 64)
	err := f.fail(t, cfg, ErrChecksumMismatch)
	if !strings.Contains(err.Error(), cfg.SHA256) || !strings.Contains(err.Error(), sum(f.art)) {
		t.Errorf("message does not name both sums: %v", err)
	}
}

// TestS3MaliciousArchives serves hostile tarballs from the S3 server (the
// full catalogue runs over file:// in TestFetchRejectsMaliciousArchives):
// each is refused with nothing written anywhere in the sandbox.
func TestS3MaliciousArchives(t *testing.T) {
	f := newS3Fixture(t)
	outside := "serai-s3-escape-" + filepath.Base(t.TempDir())
	for name, tc := range map[string]struct {
		art  []byte
		want error
	}{
		"path traversal": {tarGz(t, tfile("ok", "x"), tfile("../../../../"+outside, "pwned")), ErrUnsafeArchive},
		"symlink escape": {tarGz(t, tsymlink("d", "."), tsymlink("d/e", ".."), tfile("d/e/"+outside, "pwned")), ErrUnsafeArchive},
		"zip bomb":       {tarGz(t, tentry{name: "zeros", typ: tar.TypeReg, zeros: 96 << 20, mode: 0o644}), ErrLimitExceeded},
	} {
		t.Run(name, func(t *testing.T) {
			key := "evil/" + strings.ReplaceAll(name, " ", "-") + ".tar.gz"
			f.srv.Put(t, "models", key, bytes.NewReader(tc.art), int64(len(tc.art)))
			cfg := f.cfg
			cfg.URL, cfg.SHA256 = "s3://models/"+key, ""
			cfg.Limits = Limits{MaxTotalBytes: 32 << 20}
			f.fail(t, cfg, tc.want)
			if _, err := os.Lstat(filepath.Join(filepath.Dir(f.sb.root), outside)); err == nil {
				t.Errorf("%s written outside the sandbox", outside)
			}
		})
	}
}

// TestS3TruncatedDownloadResumes cuts the connection mid-body twice; the
// fetch resumes with a Range request each time and the result is intact.
func TestS3TruncatedDownloadResumes(t *testing.T) {
	f := newS3Fixture(t)
	f.srv.SetFault(func(n int, r *http.Request) s3test.Fault {
		if n <= 2 {
			return s3test.Fault{TruncateAfter: int64(len(f.art) / 3)}
		}
		return s3test.Fault{}
	})
	if _, err := Fetch(context.Background(), f.cfg); err != nil {
		t.Fatalf("Fetch: %v", err)
	}
	reqs := f.srv.Requests()
	if len(reqs) != 3 {
		t.Fatalf("requests = %+v, want 3", reqs)
	}
	third := len(f.art) / 3
	if reqs[0].Range != "" || reqs[1].Range != "bytes="+itoa(third)+"-" || reqs[2].Range != "bytes="+itoa(2*third)+"-" {
		t.Errorf("ranges = %q %q %q, want resumes at %d and %d", reqs[0].Range, reqs[1].Range, reqs[2].Range, third, 2*third)
	}
	if b, _ := os.ReadFile(filepath.Join(f.sb.modelDir, "model.bin")); len(b) != 400000 {
		t.Errorf("model.bin has %d bytes, want 400000", len(b))
	}
}

// TestS3KeepsTruncatingFailsClosed: a store that never delivers a byte
// exhausts the retries and leaves nothing behind.
func TestS3KeepsTruncatingFailsClosed(t *testing.T) {
	f := newS3Fixture(t)
	f.srv.SetFault(func(n int, r *http.Request) s3test.Fault { return s3test.Fault{TruncateNow: true} })
	err := f.fail(t, f.cfg, ErrUnavailable)
	if got := len(f.srv.Requests()); got != f.cfg.Retry.MaxAttempts {
		t.Errorf("store saw %d attempts, want %d", got, f.cfg.Retry.MaxAttempts)
	}
	if !strings.Contains(err.Error(), "attempts") {
		t.Errorf("message does not say it gave up: %v", err)
	}
}

// TestS3DeadlineFailsClosed: a store that keeps answering 503 is retried
// until the deadline, then the fetch fails naming the deadline and the
// store's last answer.
func TestS3DeadlineFailsClosed(t *testing.T) {
	f := newS3Fixture(t)
	f.srv.SetFault(func(n int, r *http.Request) s3test.Fault { return s3test.Fault{Status: http.StatusServiceUnavailable} })
	cfg := f.cfg
	cfg.Timeout = 300 * time.Millisecond
	cfg.Retry = RetryPolicy{Initial: 20 * time.Millisecond, Max: 50 * time.Millisecond, MaxAttempts: 1000}
	err := f.fail(t, cfg, ErrTimeout)
	if !strings.Contains(err.Error(), "SERAI_DOWNLOAD_TIMEOUT") || !strings.Contains(err.Error(), "InternalError") {
		t.Errorf("message should name the deadline and the last error: %v", err)
	}
}

func TestS3StalledConnectionIsRetried(t *testing.T) {
	f := newS3Fixture(t)
	f.srv.SetFault(func(n int, r *http.Request) s3test.Fault {
		if n == 1 {
			return s3test.Fault{StallAfter: 1000}
		}
		return s3test.Fault{}
	})
	cfg := f.cfg
	cfg.Retry.StallTimeout = 300 * time.Millisecond
	start := time.Now()
	if _, err := Fetch(context.Background(), cfg); err != nil {
		t.Fatalf("Fetch: %v", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("stalled fetch took %s", d)
	}
	if reqs := f.srv.Requests(); len(reqs) != 2 || reqs[1].Range != "bytes=1000-" {
		t.Errorf("requests = %+v, want a resume at byte 1000", reqs)
	}
}

// TestS3CancelledFetchCleansUp: Nomad stopping the task mid-download
// (SIGTERM cancels the context) leaves no staging dir and no model.
func TestS3CancelledFetchCleansUp(t *testing.T) {
	f := newS3Fixture(t)
	f.srv.SetFault(func(n int, r *http.Request) s3test.Fault { return s3test.Fault{StallAfter: 50000} })
	before := snapshot(t, f.sb.root)
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(300*time.Millisecond, cancel)
	_, err := Fetch(ctx, f.cfg)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	if after := snapshot(t, f.sb.root); !slices.Equal(before, after) {
		t.Errorf("files changed after a cancelled fetch:\nbefore %q\nafter  %q", before, after)
	}
}

func TestS3ProgressIsLogged(t *testing.T) {
	f := newS3Fixture(t)
	f.srv.SetFault(func(n int, r *http.Request) s3test.Fault {
		if n == 1 {
			return s3test.Fault{StallAfter: 5000}
		}
		return s3test.Fault{}
	})
	var logs syncBuffer
	cfg := f.cfg
	cfg.Retry.StallTimeout = 400 * time.Millisecond
	cfg.ProgressInterval = 100 * time.Millisecond
	cfg.Logger = newBufferLogger(&logs)
	if _, err := Fetch(context.Background(), cfg); err != nil {
		t.Fatalf("Fetch: %v", err)
	}
	out := logs.String()
	t.Log(out)
	if !strings.Contains(out, "downloading") || !strings.Contains(out, "received=") || !strings.Contains(out, "rate=") || !strings.Contains(out, "percent=") {
		t.Errorf("no progress line with bytes and rate in the log")
	}
	if strings.Contains(out, testSecretKey) || strings.Contains(out, testAccessKey) {
		t.Errorf("credentials in the log")
	}
}

func TestHTTPSSource(t *testing.T) {
	art := tarGz(t, tfile("model.bin", noise(100000)))
	var hits []string
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits = append(hits, r.URL.RawQuery+"|"+r.Header.Get("Range"))
		if r.URL.Path != "/models/m.tar.gz" {
			http.NotFound(w, r)
			return
		}
		if r.URL.Query().Get("X-Amz-Signature") == "" {
			http.Error(w, "forbidden", http.StatusForbidden)
			return
		}
		if len(hits) == 1 {
			// First attempt: cut off half-way.
			w.Header().Set("Content-Length", itoa(len(art)))
			w.Header().Set("ETag", `"v1"`)
			_, _ = w.Write(art[:len(art)/2])
			w.(http.Flusher).Flush()
			panic(http.ErrAbortHandler)
		}
		w.Header().Set("ETag", `"v1"`)
		http.ServeContent(w, r, "m.tar.gz", time.Unix(1700000000, 0), bytes.NewReader(art))
	}))
	defer srv.Close()
	sb := newSandbox(t)
	presigned := srv.URL + "/models/m.tar.gz?X-Amz-Signature=topsecretsignature&X-Amz-Credential=AKIAPRESIGN"
	cfg := Config{URL: presigned, SHA256: sum(art), Dir: sb.modelDir, HTTPClient: srv.Client(), Retry: fastRetry(), Logger: testLogger(t)}
	if _, err := Fetch(context.Background(), cfg); err != nil {
		t.Fatalf("Fetch: %v", err)
	}
	if len(hits) != 2 || !strings.HasSuffix(hits[1], "|bytes="+itoa(len(art)/2)+"-") {
		t.Errorf("hits = %q, want a resumed range request", hits)
	}

	// Errors carry the URL without its presigned query.
	cfg.URL = srv.URL + "/models/missing.tar.gz?X-Amz-Signature=topsecretsignature"
	_, err := Fetch(context.Background(), cfg)
	if !errors.Is(err, ErrNotFound) || strings.Contains(err.Error(), "topsecretsignature") {
		t.Errorf("err = %v, want a redacted not-found", err)
	}
	cfg.URL = srv.URL + "/models/m.tar.gz"
	if _, err := Fetch(context.Background(), cfg); !errors.Is(err, ErrAccessDenied) {
		t.Errorf("err = %v, want access denied", err)
	}

	// An untrusted certificate is permanent: one attempt, a hint about the CA.
	before := len(hits)
	cfg.URL = presigned
	cfg.Dir = newSandbox(t).modelDir
	cfg.HTTPClient = nil
	_, err = Fetch(context.Background(), cfg)
	if !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), "SSL_CERT_FILE") {
		t.Errorf("untrusted certificate: err = %v", err)
	}
	if len(hits) != before {
		t.Errorf("the handshake failure reached the handler %d times", len(hits)-before)
	}
}
