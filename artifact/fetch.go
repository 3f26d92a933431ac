// Package artifact downloads, verifies and unpacks model artifacts: the
// work of `serai fetch-model`, the prestart task of every model group.
//
// A fetch streams the artifact once: the bytes are hashed as they arrive and
// unpacked into a private staging directory next to the model dir, and the
// staging directory is renamed into place only after the archive unpacked
// cleanly and (when the model pins one) the sha256 matched. A model dir is
// therefore either absent or complete, never half-written. Transient store
// errors resume the download at the byte where it stopped, with back-off,
// until the deadline (SageMaker's ModelDataDownloadTimeout).
//
// Streaming rather than verify-then-unpack keeps disk use at one copy of the
// model; the price is that the unpacker sees bytes before the checksum is
// known, which is why it is hardened for hostile input whether or not a
// checksum is pinned.
//
// It must not touch Vault, Nomad or Consul: credentials arrive in its
// Config (from the environment the Vault template rendered), and it never
// logs or returns them.
package artifact

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"
)

// Defaults from docs/contracts.md.
const (
	DefaultTimeout = 15 * time.Minute
	DefaultRegion  = "us-east-1"
	// DefaultProgressInterval spaces progress lines so a large download
	// shows it is alive without flooding the task log.
	DefaultProgressInterval = 10 * time.Second
)

// Store is an artifact store's non-secret settings.
type Store struct {
	Name      string
	Endpoint  string // empty: AWS S3
	Region    string
	PathStyle bool
}

// Credentials are the store keys the Vault template rendered into the
// task's environment. They print as redacted so that no log line or error
// built with %v can leak them.
type Credentials struct {
	AccessKeyID     string
	SecretAccessKey string
	SessionToken    string
}

func (Credentials) String() string   { return "Credentials{redacted}" }
func (Credentials) GoString() string { return "artifact.Credentials{redacted}" }

// CredentialsFromEnv reads the standard AWS variables through lookup
// (os.LookupEnv in the binary). Nothing else is consulted: no shared config
// files, no instance metadata.
func CredentialsFromEnv(lookup func(string) (string, bool)) Credentials {
	get := func(k string) string {
		v, _ := lookup(k)
		return strings.TrimSpace(v)
	}
	return Credentials{
		AccessKeyID:     get("AWS_ACCESS_KEY_ID"),
		SecretAccessKey: get("AWS_SECRET_ACCESS_KEY"),
		SessionToken:    get("AWS_SESSION_TOKEN"),
	}
}

// Config describes one fetch. Only URL and Dir are required.
type Config struct {
	ModelName string
	URL       string
	// SHA256 is the hex digest of the artifact as downloaded (the .tar.gz,
	// not its contents); empty skips verification.
	SHA256  string
	Dir     string
	Timeout time.Duration

	Store       Store
	Credentials Credentials
	Limits      Limits
	Retry       RetryPolicy

	// ProgressInterval is how often a running download logs bytes and rate.
	ProgressInterval time.Duration
	Logger           hclog.Logger
	// HTTPClient is used for https artifacts and S3 stores; nil builds one
	// that honours the proxy variables and never decompresses.
	HTTPClient *http.Client
}

// Result describes a finished fetch.
type Result struct {
	Format Format
	Bytes  int64 // artifact size as downloaded
	SHA256 string
	Files  int
	// Unpacked is the total size of the unpacked files.
	Unpacked int64
	// AlreadyPresent is set when the model dir already held this artifact
	// from an earlier run of the task, and nothing was downloaded.
	AlreadyPresent bool
	Duration       time.Duration
}

// marker records what a model dir holds, beside it (not inside: the model
// dir belongs to the model server). It lets a re-run prestart task, e.g.
// after `nomad alloc restart -all-tasks`, skip a download it already did.
type marker struct {
	URLHash string `json:"url_sha256"`
	SHA256  string `json:"artifact_sha256"`
	Bytes   int64  `json:"bytes"`
	At      string `json:"fetched_at"`
}

func markerPath(dir string) string {
	return filepath.Join(filepath.Dir(dir), "."+filepath.Base(dir)+".serai-fetch.json")
}

func urlHash(raw string) string {
	h := sha256.Sum256([]byte(raw))
	return hex.EncodeToString(h[:])
}

// Fetch downloads cfg.URL and makes its contents appear at cfg.Dir.
func Fetch(ctx context.Context, cfg Config) (*Result, error) {
	start := time.Now()
	log := cfg.Logger
	if log == nil {
		log = hclog.NewNullLogger()
	}
	if cfg.Dir == "" {
		return nil, newError(ErrInvalidConfig, nil, "no model dir given (SERAI_MODEL_DIR)")
	}
	if cfg.URL == "" {
		return nil, newError(ErrInvalidConfig, nil, "no artifact URL given (SERAI_MODEL_URL)")
	}
	want := strings.ToLower(strings.TrimSpace(cfg.SHA256))
	if want != "" {
		if b, err := hex.DecodeString(want); err != nil || len(b) != sha256.Size {
			return nil, newError(ErrInvalidConfig, nil, fmt.Sprintf("pinned sha256 %q is not 64 hex digits", cfg.SHA256))
		}
	}
	loc, err := parseLocation(cfg.URL)
	if err != nil {
		return nil, err
	}
	dir, err := filepath.Abs(cfg.Dir)
	if err != nil {
		return nil, newError(ErrInvalidConfig, err, fmt.Sprintf("model dir %q: %v", cfg.Dir, err))
	}
	hc := cfg.HTTPClient
	if hc == nil {
		hc = newHTTPClient()
	}
	var src opener
	switch loc.scheme {
	case "s3":
		if ep := cfg.Store.Endpoint; ep != "" {
			if u, err := url.Parse(ep); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
				return nil, newError(ErrInvalidConfig, nil, fmt.Sprintf("store endpoint %q must be a URL such as https://minio.example.com:9000 (SERAI_STORE_ENDPOINT)", ep))
			}
		}
		src = newS3Source(loc, cfg.Store, cfg.Credentials, hc)
	case "https":
		src = &httpsSource{u: loc.url, client: hc}
	default:
		src = &fileSource{path: loc.path}
	}
	log = log.With("artifact", src.String())
	if cfg.ModelName != "" {
		log = log.With("model", cfg.ModelName)
	}

	if m, ok := readMarker(dir); ok && m.URLHash == urlHash(cfg.URL) && (want == "" || want == m.SHA256) {
		log.Info("model dir already holds this artifact; nothing to do", "dir", dir, "sha256", m.SHA256)
		return &Result{AlreadyPresent: true, SHA256: m.SHA256, Bytes: m.Bytes, Duration: time.Since(start)}, nil
	}

	timeout := cfg.Timeout
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()

	parent := filepath.Dir(dir)
	if err := os.MkdirAll(parent, 0o755); err != nil {
		return nil, newError(ErrLocal, err, fmt.Sprintf("creating %q: %v", parent, err))
	}
	removeStale(parent, filepath.Base(dir), log)
	// The staging dir is a sibling of the model dir so the final rename
	// stays on one filesystem and is atomic.
	work, err := os.MkdirTemp(parent, stagingPrefix(dir))
	if err != nil {
		return nil, newError(ErrLocal, err, fmt.Sprintf("creating a staging dir in %q: %v", parent, err))
	}
	defer os.RemoveAll(work)
	tree := filepath.Join(work, "model")
	if err := os.Mkdir(tree, 0o700); err != nil {
		return nil, newError(ErrLocal, err, fmt.Sprintf("creating staging dir: %v", err))
	}

	log.Info("fetching model artifact", "dir", dir, "timeout", timeout, "sha256_pinned", want != "")
	rr := newResumableReader(ctx, src, cfg.Retry, log)
	defer rr.Close()
	stopProgress := logProgress(ctx, rr, cfg.ProgressInterval, log)
	h := sha256.New()
	format, files, unpacked, err := unpackStream(io.TeeReader(rr, h), tree, src.name(), cfg.Limits)
	if err == nil {
		// Whatever follows the archive still counts toward the checksum.
		_, err = io.Copy(h, rr)
		if err != nil {
			err = streamError(err)
		}
	}
	stopProgress()
	if err != nil {
		return nil, fetchFailed(ctx, rr, err)
	}
	got := hex.EncodeToString(h.Sum(nil))
	size := rr.off.Load()
	if want != "" && got != want {
		return nil, newError(ErrChecksumMismatch, nil, fmt.Sprintf(
			"checksum mismatch for %s: the model pins sha256 %s but the downloaded artifact (%d bytes) has sha256 %s; nothing was installed", src, want, size, got))
	}
	if err := checkLinks(tree); err != nil {
		return nil, err
	}
	if err := install(tree, dir); err != nil {
		return nil, err
	}
	writeMarker(dir, marker{URLHash: urlHash(cfg.URL), SHA256: got, Bytes: size, At: time.Now().UTC().Format(time.RFC3339)}, log)
	res := &Result{Format: format, Bytes: size, SHA256: got, Files: files, Unpacked: unpacked, Duration: time.Since(start)}
	log.Info("model installed", "dir", dir, "format", string(format), "bytes", size, "size", FormatSize(size),
		"files", files, "unpacked", FormatSize(unpacked), "sha256", got, "took", res.Duration.Round(time.Millisecond),
		"rate", rate(size, res.Duration))
	return res, nil
}

// fetchFailed turns a cancelled context into the deadline error when that
// is what happened, since a reader further up may only have seen
// "context canceled".
func fetchFailed(ctx context.Context, rr *resumableReader, err error) error {
	var fe *Error
	if errors.As(err, &fe) {
		return err
	}
	if ctx.Err() != nil {
		if e := rr.ctxError(); e != nil {
			var te *Error
			if errors.As(e, &te) {
				return te
			}
		}
	}
	return err
}

func stagingPrefix(dir string) string { return "." + filepath.Base(dir) + ".serai-fetch-" }

// removeStale deletes staging dirs a killed earlier run left behind. Only
// one fetch task runs per allocation, so anything with our prefix is ours.
func removeStale(parent, base string, log hclog.Logger) {
	matches, _ := filepath.Glob(filepath.Join(parent, "."+base+".serai-fetch-*"))
	for _, m := range matches {
		if st, err := os.Lstat(m); err == nil && st.IsDir() {
			log.Info("removing staging dir left by an interrupted fetch", "path", m)
			_ = os.RemoveAll(m)
		}
	}
}

// install renames the staging tree into place. When the model dir already
// exists (a re-run for a different artifact) the two are exchanged
// atomically, so the model dir never disappears even for a moment.
func install(tree, dir string) error {
	if err := os.Rename(tree, dir); err == nil {
		return nil
	} else if !errors.Is(err, fs.ErrExist) && !isNotEmpty(err) {
		return newError(ErrLocal, err, fmt.Sprintf("moving the model into %q: %v", dir, err))
	}
	if err := exchange(tree, dir); err != nil {
		return newError(ErrLocal, err, fmt.Sprintf("replacing the existing model dir %q: %v", dir, err))
	}
	// tree now holds the previous model; the deferred RemoveAll of the
	// staging dir disposes of it.
	return nil
}

func readMarker(dir string) (marker, bool) {
	var m marker
	if st, err := os.Stat(dir); err != nil || !st.IsDir() {
		return m, false
	}
	b, err := os.ReadFile(markerPath(dir))
	if err != nil || json.Unmarshal(b, &m) != nil || m.URLHash == "" || m.SHA256 == "" {
		return m, false
	}
	return m, true
}

func writeMarker(dir string, m marker, log hclog.Logger) {
	b, _ := json.Marshal(m)
	p := markerPath(dir)
	tmp := p + ".tmp"
	if err := os.WriteFile(tmp, b, 0o644); err == nil {
		err = os.Rename(tmp, p)
		if err == nil {
			return
		}
	}
	// Only an optimisation for re-runs: the model is installed either way.
	log.Debug("could not record the fetched artifact beside the model dir", "path", p)
	_ = os.Remove(tmp)
}

func rate(n int64, d time.Duration) string {
	if d <= 0 {
		return "-"
	}
	return FormatSize(int64(float64(n)/d.Seconds())) + "/s"
}

// logProgress logs bytes received and throughput every interval until the
// returned stop function is called.
func logProgress(ctx context.Context, rr *resumableReader, interval time.Duration, log hclog.Logger) func() {
	if interval <= 0 {
		interval = DefaultProgressInterval
	}
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		t := time.NewTicker(interval)
		defer t.Stop()
		start := time.Now()
		var last int64
		lastAt := start
		for {
			select {
			case <-done:
				return
			case <-ctx.Done():
				return
			case now := <-t.C:
				n := rr.off.Load()
				args := []any{"received", FormatSize(n), "bytes", n,
					"rate", rate(n-last, now.Sub(lastAt)), "avg_rate", rate(n, now.Sub(start))}
				if size := rr.size.Load(); size > 0 {
					args = append(args, "total", FormatSize(size), "percent", fmt.Sprintf("%.1f", 100*float64(n)/float64(size)))
				}
				log.Info("downloading", args...)
				last, lastAt = n, now
			}
		}
	}()
	return func() {
		close(done)
		<-finished
	}
}
