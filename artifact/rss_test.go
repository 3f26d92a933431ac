package artifact_test

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/seraihq/serai/artifact"
	"github.com/seraihq/serai/internal/s3test"
)

const (
	bigAccessKey = "AKIASERAIBIGTEST0001"
	bigSecretKey = "big-artifact-secret-key-0000000000000000"
)

// prng is a fast incompressible byte source, so the archive really is as
// large as its contents and nothing can be buffered cheaply by accident.
type prng struct{ r *rand.ChaCha8 }

func (p prng) Read(b []byte) (int, error) { return p.r.Read(b) }

// bigArtifact builds a .tar.gz of about size bytes: a few large files as a
// model's weights would be, stored without compression.
func bigArtifact(t *testing.T, size int64) ([]byte, string) {
	t.Helper()
	var buf bytes.Buffer
	buf.Grow(int(size + size/100))
	zw, _ := gzip.NewWriterLevel(&buf, gzip.NoCompression)
	tw := tar.NewWriter(zw)
	src := prng{rand.NewChaCha8([32]byte{1})}
	const files = 4
	for i := range files {
		n := size / files
		hdr := &tar.Header{Name: "weights/part-" + string(rune('0'+i)) + ".bin", Mode: 0o644, Size: n, ModTime: time.Unix(1700000000, 0)}
		if err := tw.WriteHeader(hdr); err != nil {
			t.Fatal(err)
		}
		if _, err := io.CopyN(tw, src, n); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	h := sha256.Sum256(buf.Bytes())
	return buf.Bytes(), hex.EncodeToString(h[:])
}

// TestFetch200MBBoundedMemory runs the serai binary against a 200 MB
// artifact on the loopback S3 server and reports the process's peak RSS:
// the download is streamed through hashing and unpacking, never held.
func TestFetch200MBBoundedMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: skipping the 200 MB fetch")
	}
	bin := buildSerai(t)
	srv := s3test.New(t, bigAccessKey, bigSecretKey)
	srv.Bucket(t, "models")
	start := time.Now()
	art, sum := bigArtifact(t, 200<<20)
	srv.Put(t, "models", "big/model.tar.gz", bytes.NewReader(art), int64(len(art)))
	size := int64(len(art))
	art = nil // the server holds its own copy
	t.Logf("generated and stored a %s artifact in %s", artifact.FormatSize(size), time.Since(start).Round(time.Millisecond))

	modelDir := filepath.Join(t.TempDir(), "alloc", "data", "model")
	env := map[string]string{
		"SERAI_MODEL_NAME":        "big",
		"SERAI_MODEL_URL":         "s3://models/big/model.tar.gz",
		"SERAI_MODEL_SHA256":      sum,
		"SERAI_MODEL_DIR":         modelDir,
		"SERAI_DOWNLOAD_TIMEOUT":  "2m",
		"SERAI_STORE_NAME":        "loopback",
		"SERAI_STORE_ENDPOINT":    srv.URL,
		"SERAI_STORE_REGION":      "us-east-1",
		"SERAI_STORE_PATH_STYLE":  "true",
		"SERAI_PROGRESS_INTERVAL": "1s",
		"AWS_ACCESS_KEY_ID":       bigAccessKey,
		"AWS_SECRET_ACCESS_KEY":   bigSecretKey,
	}
	r := runSerai(t, bin, env, "fetch-model")
	t.Logf("fetch-model output:\n%s", r.stderr)
	if r.code != 0 {
		t.Fatalf("fetch-model exited %d", r.code)
	}
	rate := float64(size) / r.elapsed.Seconds() / (1 << 20)
	t.Logf("RESULT artifact: peak RSS of serai fetch-model for a %s artifact: %s (took %s, %.0f MiB/s)",
		artifact.FormatSize(size), artifact.FormatSize(r.peakRSS), r.elapsed.Round(time.Millisecond), rate)
	if r.peakRSS == 0 {
		t.Error("could not read the child's peak RSS")
	}
	if r.peakRSS > 100<<20 {
		t.Errorf("peak RSS %s is over 100 MiB: the artifact is being buffered", artifact.FormatSize(r.peakRSS))
	}
	var total int64
	for i := range 4 {
		st, err := os.Stat(filepath.Join(modelDir, "weights", "part-"+string(rune('0'+i))+".bin"))
		if err != nil {
			t.Fatal(err)
		}
		total += st.Size()
	}
	if total != 200<<20 {
		t.Errorf("unpacked %d bytes, want %d", total, 200<<20)
	}
	noSecrets(t, "fetch-model's log", r.stderr+r.stdout, bigSecretKey, bigAccessKey)
}
