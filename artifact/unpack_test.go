package artifact

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestFetchFileTarGz(t *testing.T) {
	sb := newSandbox(t)
	art := tarGz(t,
		tdir("./"),
		tfile("./model.bin", "weights"),
		tentry{name: "./code/serve.py", typ: tar.TypeReg, body: "print('hi')", mode: 0o4755}, // setuid is dropped
		tfile("deep/er/nested.txt", "implicit parents"),
		tsymlink("latest", "model.bin"),
		tsymlink("code/weights", "../model.bin"),
		thardlink("model-copy.bin", "model.bin"),
	)
	url := sb.put(t, "model.tar.gz", art)
	res, err := Fetch(context.Background(), Config{ModelName: "m", URL: url, SHA256: sum(art), Dir: sb.modelDir, Logger: testLogger(t)})
	if err != nil {
		t.Fatalf("Fetch: %v", err)
	}
	if res.Format != FormatTarGz || res.SHA256 != sum(art) || res.Bytes != int64(len(art)) || res.Files != 6 {
		t.Errorf("result = %+v", res)
	}
	for name, want := range map[string]string{"model.bin": "weights", "latest": "weights", "code/weights": "weights", "model-copy.bin": "weights", "deep/er/nested.txt": "implicit parents"} {
		got, err := os.ReadFile(filepath.Join(sb.modelDir, name))
		if err != nil || string(got) != want {
			t.Errorf("%s = %q, %v; want %q", name, got, err, want)
		}
	}
	st, err := os.Stat(filepath.Join(sb.modelDir, "code", "serve.py"))
	if err != nil || st.Mode().Perm() != 0o755 || st.Mode()&os.ModeSetuid != 0 {
		t.Errorf("serve.py mode = %v, %v; want -rwxr-xr-x without setuid", st.Mode(), err)
	}
	if st, _ := os.Stat(sb.modelDir); st == nil || st.Mode().Perm() != 0o755 {
		t.Errorf("model dir mode = %v", st.Mode())
	}
	// No staging dir is left beside the model.
	entries, _ := os.ReadDir(filepath.Dir(sb.modelDir))
	for _, e := range entries {
		if strings.Contains(e.Name(), "serai-fetch-") {
			t.Errorf("staging dir left behind: %s", e.Name())
		}
	}

	// A re-run (nomad alloc restart -all-tasks) finds the model in place.
	res, err = Fetch(context.Background(), Config{URL: url, SHA256: sum(art), Dir: sb.modelDir})
	if err != nil || !res.AlreadyPresent {
		t.Fatalf("second Fetch = %+v, %v; want AlreadyPresent", res, err)
	}

	// A different artifact replaces the model dir in one step.
	art2 := tarGz(t, tfile("v2.bin", "new"))
	url2 := sb.put(t, "model2.tar.gz", art2)
	if _, err := Fetch(context.Background(), Config{URL: url2, Dir: sb.modelDir}); err != nil {
		t.Fatalf("replacing Fetch: %v", err)
	}
	got := snapshot(t, sb.modelDir)
	if want := []string{". d---------", "v2.bin ----------"}; !slices.Equal(got, want) {
		t.Errorf("model dir after replacement = %q, want %q", got, want)
	}
}

func TestFetchPlainTarAndSingleFile(t *testing.T) {
	sb := newSandbox(t)
	url := sb.put(t, "model.tar", tarBytes(t, tfile("a.txt", "A")))
	res, err := Fetch(context.Background(), Config{URL: url, Dir: sb.modelDir})
	if err != nil || res.Format != FormatTar {
		t.Fatalf("tar: %+v, %v", res, err)
	}
	if b, _ := os.ReadFile(filepath.Join(sb.modelDir, "a.txt")); string(b) != "A" {
		t.Errorf("a.txt = %q", b)
	}

	sb = newSandbox(t)
	onnx := bytes.Repeat([]byte("onnx!"), 1000)
	url = sb.put(t, "model.onnx", onnx)
	res, err = Fetch(context.Background(), Config{URL: url, Dir: sb.modelDir})
	if err != nil || res.Format != FormatFile {
		t.Fatalf("single file: %+v, %v", res, err)
	}
	if b, _ := os.ReadFile(filepath.Join(sb.modelDir, "model.onnx")); !bytes.Equal(b, onnx) {
		t.Errorf("model.onnx has %d bytes, want %d", len(b), len(onnx))
	}
}

func TestFetchChecksumMismatchNamesBothSums(t *testing.T) {
	sb := newSandbox(t)
	art := tarGz(t, tfile("model.bin", "weights"))
	url := sb.put(t, "model.tar.gz", art)
	before := snapshot(t, sb.root)
	wrong := strings.Repeat("ab", 32)
	_, err := Fetch(context.Background(), Config{URL: url, SHA256: wrong, Dir: sb.modelDir})
	if !errors.Is(err, ErrChecksumMismatch) {
		t.Fatalf("err = %v, want ErrChecksumMismatch", err)
	}
	if !strings.Contains(err.Error(), wrong) || !strings.Contains(err.Error(), sum(art)) {
		t.Errorf("error does not name both sums: %v", err)
	}
	if after := snapshot(t, sb.root); !slices.Equal(before, after) {
		t.Errorf("files changed after a failed fetch:\nbefore %q\nafter  %q", before, after)
	}
}

func TestFetchRejectsBadConfig(t *testing.T) {
	sb := newSandbox(t)
	for name, cfg := range map[string]Config{
		"no url":       {Dir: sb.modelDir},
		"no dir":       {URL: "file:///x"},
		"bad sha":      {URL: "file:///x", Dir: sb.modelDir, SHA256: "xyz"},
		"plain http":   {URL: "http://example.invalid/m.tar.gz", Dir: sb.modelDir},
		"ftp":          {URL: "ftp://example.invalid/m.tar.gz", Dir: sb.modelDir},
		"s3 no key":    {URL: "s3://bucket", Dir: sb.modelDir},
		"file remote":  {URL: "file://host/x", Dir: sb.modelDir},
		"bad endpoint": {URL: "s3://b/k", Dir: sb.modelDir, Store: Store{Endpoint: "minio:9000"}},
	} {
		if _, err := Fetch(context.Background(), cfg); !errors.Is(err, ErrInvalidConfig) {
			t.Errorf("%s: err = %v, want ErrInvalidConfig", name, err)
		}
	}
	if _, err := Fetch(context.Background(), Config{URL: "file://" + filepath.Join(sb.src, "missing.tar.gz"), Dir: sb.modelDir}); !errors.Is(err, ErrNotFound) {
		t.Errorf("missing file: err = %v, want ErrNotFound", err)
	}
}

// TestFetchRejectsMaliciousArchives feeds hostile tarballs through the whole
// fetch and checks each is refused with nothing written anywhere: the
// sandbox (which contains the alloc dir and more) is byte-for-byte the same
// tree afterwards, and nothing appeared above it.
func TestFetchRejectsMaliciousArchives(t *testing.T) {
	small := Limits{MaxTotalBytes: 8 << 20, MaxFileBytes: 4 << 20, MaxFiles: 50}
	manyFiles := make([]tentry, 0, 60)
	for i := range 60 {
		manyFiles = append(manyFiles, tfile("f/"+strings.Repeat("x", i+1), ""))
	}
	outsideName := "serai-artifact-test-escape-" + filepath.Base(t.TempDir())
	cases := []struct {
		name    string
		art     []byte
		limits  Limits
		wantErr error
	}{
		{"dotdot", tarGz(t, tfile("../../../../"+outsideName, "x")), Limits{}, ErrUnsafeArchive},
		{"dotdot deep", tarGz(t, tfile("ok.txt", "fine"), tfile("a/b/../../../../../../"+outsideName, "x")), Limits{}, ErrUnsafeArchive},
		{"dotdot dir", tarGz(t, tdir("../up")), Limits{}, ErrUnsafeArchive},
		{"absolute", tarGz(t, tfile("/tmp/"+outsideName, "x")), Limits{}, ErrUnsafeArchive},
		{"symlink absolute", tarGz(t, tsymlink("passwd", "/etc/passwd")), Limits{}, ErrUnsafeArchive},
		{"symlink up", tarGz(t, tsymlink("up", "../../..")), Limits{}, ErrUnsafeArchive},
		{"write through symlink", tarGz(t, tsymlink("d", "."), tsymlink("d/e", ".."), tfile("d/e/"+outsideName, "x")), Limits{}, ErrUnsafeArchive},
		// Each link's text looks inside, but a/l resolves through b/d (which
		// points two levels up from a/b) to the parent of the root.
		{"symlink chain", tarGz(t, tdir("a/b"), tsymlink("a/b/d", "../.."), tsymlink("a/l", "b/d/..")), Limits{}, ErrUnsafeArchive},
		{"dangling symlink", tarGz(t, tsymlink("later", "not-yet")), Limits{}, ErrUnsafeArchive},
		{"hardlink outside", tarGz(t, thardlink("shadow", "../../../etc/shadow")), Limits{}, ErrUnsafeArchive},
		{"hardlink absolute", tarGz(t, thardlink("shadow", "/etc/shadow")), Limits{}, ErrUnsafeArchive},
		{"device", tarGz(t, tentry{name: "null", typ: tar.TypeChar, mode: 0o666}), Limits{}, ErrUnsafeArchive},
		{"fifo", tarGz(t, tentry{name: "pipe", typ: tar.TypeFifo, mode: 0o666}), Limits{}, ErrUnsafeArchive},
		{"duplicate", tarGz(t, tfile("a", "1"), tfile("a", "2")), Limits{}, ErrUnsafeArchive},
		{"file over link", tarGz(t, tdir("sub"), tsymlink("x", "sub"), tfile("x", "replaces the link?")), Limits{}, ErrUnsafeArchive},
		{"bomb one big file", tarGz(t, tentry{name: "zeros", typ: tar.TypeReg, zeros: 64 << 20, mode: 0o644}), small, ErrLimitExceeded},
		{"bomb total", tarGz(t,
			tentry{name: "z1", typ: tar.TypeReg, zeros: 3 << 20, mode: 0o644},
			tentry{name: "z2", typ: tar.TypeReg, zeros: 3 << 20, mode: 0o644},
			tentry{name: "z3", typ: tar.TypeReg, zeros: 3 << 20, mode: 0o644}), small, ErrLimitExceeded},
		{"bomb after end", gz(t, append(tarBytes(t, tfile("a", "1")), make([]byte, 16<<20)...)), small, ErrLimitExceeded},
		{"too many files", tarGz(t, manyFiles...), small, ErrLimitExceeded},
		{"gzip not tar", gz(t, []byte(strings.Repeat("not a tar ", 100))), Limits{}, ErrCorrupt},
		{"truncated", tarGz(t, tfile("model.bin", strings.Repeat("w", 100000)))[:200], Limits{}, ErrCorrupt},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			sb := newSandbox(t)
			url := sb.put(t, "model.tar.gz", tc.art)
			before := snapshot(t, sb.root)
			_, err := Fetch(context.Background(), Config{URL: url, Dir: sb.modelDir, Limits: tc.limits, Logger: testLogger(t)})
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("err = %v, want %v", err, tc.wantErr)
			}
			t.Logf("refused: %v", err)
			if after := snapshot(t, sb.root); !slices.Equal(before, after) {
				t.Errorf("files changed after a refused fetch:\nbefore %q\nafter  %q", before, after)
			}
			for _, p := range []string{filepath.Join(filepath.Dir(sb.root), outsideName), filepath.Join("/tmp", outsideName)} {
				if _, err := os.Lstat(p); err == nil {
					_ = os.Remove(p)
					t.Errorf("%s was written outside the target dir", p)
				}
			}
		})
	}
}

func TestParseSize(t *testing.T) {
	for in, want := range map[string]int64{"1024": 1024, "64GiB": 64 << 30, "500MB": 500e6, "2.5G": 5 << 29, "10 MiB": 10 << 20, "7B": 7} {
		got, err := ParseSize(in)
		if err != nil || got != want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "lots", "-1GiB", "GiB"} {
		if _, err := ParseSize(in); err == nil {
			t.Errorf("ParseSize(%q) succeeded", in)
		}
	}
}

func TestCredentialsNeverPrint(t *testing.T) {
	c := Credentials{AccessKeyID: "AKIDSECRETLOOKING", SecretAccessKey: "very-secret", SessionToken: "tok"}
	cfg := Config{Credentials: c}
	for _, s := range []string{c.String(), c.GoString(), fmt.Sprintf("%v", c), fmt.Sprintf("%+v", c), fmt.Sprintf("%#v", c), fmt.Sprintf("%+v", cfg), fmt.Sprintf("%#v", cfg)} {
		if strings.Contains(s, "very-secret") || strings.Contains(s, "AKIDSECRETLOOKING") {
			t.Errorf("credentials leaked in %q", s)
		}
	}
}
