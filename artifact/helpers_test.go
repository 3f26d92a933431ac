package artifact

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
)

// tentry is one tar entry of a test archive. zeros streams that many zero
// bytes as the body, for archives that expand far beyond their size.
type tentry struct {
	name  string
	typ   byte
	body  string
	link  string
	mode  int64
	zeros int64
}

func tfile(name, body string) tentry {
	return tentry{name: name, typ: tar.TypeReg, body: body, mode: 0o644}
}
func tdir(name string) tentry { return tentry{name: name, typ: tar.TypeDir, mode: 0o755} }
func tsymlink(name, target string) tentry {
	return tentry{name: name, typ: tar.TypeSymlink, link: target, mode: 0o777}
}
func thardlink(name, target string) tentry {
	return tentry{name: name, typ: tar.TypeLink, link: target, mode: 0o644}
}

func tarBytes(t testing.TB, entries ...tentry) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		h := &tar.Header{Name: e.name, Typeflag: e.typ, Linkname: e.link, Mode: e.mode, ModTime: time.Unix(1700000000, 0), Format: tar.FormatPAX}
		if e.typ == tar.TypeReg {
			h.Size = int64(len(e.body)) + e.zeros
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatalf("tar header %q: %v", e.name, err)
		}
		if e.typ == tar.TypeReg {
			if _, err := io.WriteString(tw, e.body); err != nil {
				t.Fatal(err)
			}
			if e.zeros > 0 {
				if _, err := io.CopyN(tw, zeroReader{}, e.zeros); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func gz(t testing.TB, b []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&buf, gzip.BestCompression)
	if _, err := zw.Write(b); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func tarGz(t testing.TB, entries ...tentry) []byte { return gz(t, tarBytes(t, entries...)) }

type zeroReader struct{}

func (zeroReader) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

func sum(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

// sandbox is an allocation-like layout: <root>/alloc/data/model is the model
// dir, <root>/src holds file:// artifacts. Everything a fetch may touch is
// below root, so comparing snapshots of root proves nothing leaked out.
type sandbox struct {
	root     string
	modelDir string
	src      string
}

func newSandbox(t testing.TB) *sandbox {
	t.Helper()
	root := t.TempDir()
	s := &sandbox{root: root, modelDir: filepath.Join(root, "alloc", "data", "model"), src: filepath.Join(root, "src")}
	for _, d := range []string{filepath.Dir(s.modelDir), s.src} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return s
}

// put writes an artifact file and returns its file:// URL.
func (s *sandbox) put(t testing.TB, name string, b []byte) string {
	t.Helper()
	p := filepath.Join(s.src, name)
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return "file://" + p
}

// snapshot lists every path below dir with its type (and a symlink's target).
func snapshot(t testing.TB, dir string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		desc := rel + " " + d.Type().String()
		if d.Type()&fs.ModeSymlink != 0 {
			target, _ := os.Readlink(p)
			desc += " -> " + target
		}
		out = append(out, desc)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(out)
	return out
}

func testLogger(t testing.TB) hclog.Logger {
	return hclog.New(&hclog.LoggerOptions{Name: "fetch", Level: hclog.Debug, Output: testWriter{t}})
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// noise is incompressible, so an archive of it is as large as its contents
// and faults injected at a byte offset land mid-body.
func noise(n int) string {
	b := make([]byte, n)
	r := rand.New(rand.NewPCG(1, uint64(n)))
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return string(b)
}

func itoa(n int) string { return strconv.Itoa(n) }

// syncBuffer collects log output written from the fetch and its progress
// goroutine.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func newBufferLogger(w io.Writer) hclog.Logger {
	return hclog.New(&hclog.LoggerOptions{Name: "fetch", Level: hclog.Debug, Output: w})
}

// fastRetry keeps failure tests quick.
func fastRetry() RetryPolicy {
	return RetryPolicy{Initial: 5 * time.Millisecond, Max: 20 * time.Millisecond, MaxAttempts: 4, StallTimeout: 2 * time.Second}
}
