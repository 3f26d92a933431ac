package artifact

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// FuzzUnpack feeds arbitrary bytes to fetch-model as a model.tar.gz (raw
// and gzipped): it must never panic, and whatever it does, nothing may
// appear outside the model dir but the source file and, on success, the
// fetch marker beside the model dir.
// Run: go test ./artifact -run '^$' -fuzz FuzzUnpack -fuzztime 60s
func FuzzUnpack(f *testing.F) {
	f.Add([]byte{})
	f.Add(tarBytes(f, tfile("model.bin", "weights"), tdir("d/")))
	f.Add(tarBytes(f, tsymlink("escape", "../../../etc/passwd")))
	f.Add(tarBytes(f, tfile("../outside.txt", "x")))
	f.Add(tarBytes(f, thardlink("h", "/etc/passwd")))
	f.Add(gz(f, tarBytes(f, tfile("a/b/c.txt", "nested"))))
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, body := range [][]byte{b, gz(t, b)} {
			sb := newSandbox(t)
			url := sb.put(t, "model.tar.gz", body)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			_, err := Fetch(ctx, Config{URL: url, Dir: sb.modelDir, Limits: Limits{MaxTotalBytes: 1 << 20, MaxFileBytes: 1 << 20, MaxFiles: 100}})
			cancel()
			for _, p := range snapshot(t, sb.root) {
				name := strings.SplitN(p, " ", 2)[0]
				switch {
				case name == ".", name == "alloc", name == "alloc/data", name == "src", name == "src/model.tar.gz":
				case name == "alloc/data/model" || strings.HasPrefix(name, "alloc/data/model/"):
					if err != nil {
						t.Fatalf("failed fetch (%v) left %s", err, p)
					}
				case err == nil && strings.HasPrefix(name, "alloc/data/.model.serai-fetch"):
				default:
					t.Fatalf("fetch (err=%v) wrote outside the model dir: %s", err, filepath.Clean(p))
				}
			}
			os.RemoveAll(sb.root)
		}
	})
}
