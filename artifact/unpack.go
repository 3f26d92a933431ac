package artifact

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"
)

// Limits bound what an artifact may unpack to. They exist because a model
// tarball is input from whoever can write to the bucket: a few kilobytes of
// gzip can expand to terabytes.
type Limits struct {
	// MaxTotalBytes caps the sum of all unpacked file sizes.
	MaxTotalBytes int64
	// MaxFileBytes caps any single file.
	MaxFileBytes int64
	// MaxFiles caps the number of entries (files, directories and links).
	MaxFiles int
}

// DefaultLimits are sized for large models (tens of GB of weights) while
// still stopping a decompression bomb before it fills a client's disk.
func DefaultLimits() Limits {
	return Limits{MaxTotalBytes: 64 << 30, MaxFileBytes: 64 << 30, MaxFiles: 100_000}
}

func (l Limits) withDefaults() Limits {
	d := DefaultLimits()
	if l.MaxTotalBytes <= 0 {
		l.MaxTotalBytes = d.MaxTotalBytes
	}
	if l.MaxFileBytes <= 0 || l.MaxFileBytes > l.MaxTotalBytes {
		l.MaxFileBytes = min(d.MaxFileBytes, l.MaxTotalBytes)
	}
	if l.MaxFiles <= 0 {
		l.MaxFiles = d.MaxFiles
	}
	return l
}

// Format is what the artifact turned out to be.
type Format string

const (
	FormatTarGz Format = "tar.gz"
	FormatTar   Format = "tar"
	// FormatFile is an artifact that is not an archive: it is placed in the
	// model dir under its own name (e.g. a single .onnx or .gguf file).
	FormatFile Format = "file"
)

// trailerSlack is how much data past a tar's end-of-archive marker is read
// (to check the gzip trailer and finish the checksum) beyond the remaining
// size budget: real archives pad to a 10 KiB record.
const trailerSlack = 1 << 20

// unpackStream sniffs the artifact and writes its contents below dir. dir
// must be empty and private to this fetch: nothing in it is visible to the
// model until the caller renames it into place.
func unpackStream(r io.Reader, dir, fileName string, limits Limits) (Format, int, int64, error) {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return "", 0, 0, newError(ErrLocal, err, fmt.Sprintf("opening staging dir: %v", err))
	}
	defer root.Close()
	x := &extractor{root: root, limits: limits.withDefaults()}

	br := bufio.NewReaderSize(r, 64<<10)
	head, err := br.Peek(512)
	if err != nil && !errors.Is(err, io.EOF) {
		return "", 0, 0, streamError(err)
	}
	var format Format
	switch {
	case len(head) >= 2 && head[0] == 0x1f && head[1] == 0x8b:
		format = FormatTarGz
		gz, err := gzip.NewReader(br)
		if err != nil {
			return format, 0, 0, streamError(err)
		}
		gbr := bufio.NewReaderSize(gz, 64<<10)
		inner, err := gbr.Peek(512)
		if err != nil && !errors.Is(err, io.EOF) {
			return format, 0, 0, streamError(err)
		}
		if !isTarHeader(inner) {
			return format, 0, 0, newError(ErrCorrupt, nil, "artifact is gzip-compressed but does not contain a tar archive (serai expects model.tar.gz, a plain .tar, or a single uncompressed file)")
		}
		if err := x.tar(gbr); err != nil {
			return format, x.files, x.total, err
		}
		// Reading the gzip stream to its end checks its CRC and length
		// trailer; the budget stops a bomb hidden after the tar's end.
		budget := x.limits.MaxTotalBytes - x.total + trailerSlack
		n, err := io.Copy(io.Discard, io.LimitReader(gbr, budget+1))
		if err != nil {
			return format, x.files, x.total, streamError(err)
		}
		if n > budget {
			return format, x.files, x.total, newError(ErrLimitExceeded, nil, fmt.Sprintf("archive has more than %s of data after its end-of-archive marker", FormatSize(budget)))
		}
	case isTarHeader(head):
		format = FormatTar
		if err := x.tar(br); err != nil {
			return format, x.files, x.total, err
		}
	default:
		format = FormatFile
		if err := x.single(br, fileName); err != nil {
			return format, x.files, x.total, err
		}
	}
	return format, x.files, x.total, nil
}

// streamError keeps download errors (already explained) as they are and
// calls anything else the archive's fault.
func streamError(err error) error {
	var fe *Error
	if errors.As(err, &fe) || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	if errors.Is(err, io.ErrUnexpectedEOF) {
		return newError(ErrCorrupt, err, "artifact ends in the middle of the archive (truncated upload?)")
	}
	return newError(ErrCorrupt, err, fmt.Sprintf("artifact is not a valid archive: %v", err))
}

func isTarHeader(b []byte) bool {
	if len(b) < 512 {
		return false
	}
	b = b[:512]
	if bytes.Equal(b[257:262], []byte("ustar")) {
		return true
	}
	if bytes.Count(b, []byte{0}) == 512 {
		return true // an empty archive starts with its end marker
	}
	// Pre-POSIX (v7) headers have no magic; their checksum identifies them.
	field := strings.Trim(string(b[148:156]), " \x00")
	want, err := strconv.ParseInt(field, 8, 64)
	if err != nil {
		return false
	}
	var sum int64
	for i, c := range b {
		if i >= 148 && i < 156 {
			c = ' '
		}
		sum += int64(c)
	}
	return sum == want
}

type extractor struct {
	root   *os.Root
	limits Limits
	files  int
	total  int64
}

func unsafeErr(name, why string) error {
	return newError(ErrUnsafeArchive, nil, fmt.Sprintf("archive entry %q %s; refusing to unpack", name, why))
}

// cleanName rejects names that could land outside the archive root. It is
// deliberately stricter than path.Clean: "a/../b" is refused, not tidied,
// since no honest packer writes it.
func cleanName(name string) (string, error) {
	if name == "" {
		return "", unsafeErr(name, "has an empty name")
	}
	if strings.HasPrefix(name, "/") {
		return "", unsafeErr(name, "has an absolute path")
	}
	for _, part := range strings.Split(name, "/") {
		if part == ".." {
			return "", unsafeErr(name, "contains '..'")
		}
	}
	return path.Clean(name), nil
}

func (x *extractor) count(name string) error {
	x.files++
	if x.files > x.limits.MaxFiles {
		return newError(ErrLimitExceeded, nil, fmt.Sprintf("archive has more than %d entries (at %q); raise the file-count limit if the model really needs them", x.limits.MaxFiles, name))
	}
	return nil
}

func (x *extractor) tar(r io.Reader) error {
	tr := tar.NewReader(r)
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return streamError(err)
		}
		if err := x.entry(tr, hdr); err != nil {
			return err
		}
	}
}

func (x *extractor) entry(tr *tar.Reader, hdr *tar.Header) error {
	name, err := cleanName(hdr.Name)
	if err != nil {
		return err
	}
	if hdr.Typeflag == tar.TypeXGlobalHeader {
		return nil
	}
	if name == "." {
		return nil // the archive root itself ("./")
	}
	if err := x.count(name); err != nil {
		return err
	}
	switch hdr.Typeflag {
	case tar.TypeDir:
		return x.fsErr(name, x.root.MkdirAll(name, 0o755))
	case tar.TypeReg, tar.TypeRegA, tar.TypeGNUSparse:
		return x.file(tr, name, hdr.Size, fs.FileMode(hdr.Mode))
	case tar.TypeSymlink:
		return x.symlink(name, hdr.Linkname)
	case tar.TypeLink:
		return x.hardlink(name, hdr.Linkname)
	case tar.TypeChar, tar.TypeBlock:
		return unsafeErr(name, "is a device file")
	case tar.TypeFifo:
		return unsafeErr(name, "is a named pipe")
	default:
		return unsafeErr(name, fmt.Sprintf("has unsupported type %q", hdr.Typeflag))
	}
}

func (x *extractor) parent(name string) error {
	if dir := path.Dir(name); dir != "." {
		return x.fsErr(name, x.root.MkdirAll(dir, 0o755))
	}
	return nil
}

func (x *extractor) reserve(name string, size int64) error {
	if size < 0 {
		return unsafeErr(name, "has a negative size")
	}
	if size > x.limits.MaxFileBytes {
		return newError(ErrLimitExceeded, nil, fmt.Sprintf("archive entry %q is %s, over the %s per-file limit", name, FormatSize(size), FormatSize(x.limits.MaxFileBytes)))
	}
	if x.total+size > x.limits.MaxTotalBytes {
		return newError(ErrLimitExceeded, nil, fmt.Sprintf("archive unpacks to more than %s (at %q); raise the size limit if the model really is that large", FormatSize(x.limits.MaxTotalBytes), name))
	}
	x.total += size
	return nil
}

func (x *extractor) file(r io.Reader, name string, size int64, mode fs.FileMode) error {
	if err := x.reserve(name, size); err != nil {
		return err
	}
	if err := x.parent(name); err != nil {
		return err
	}
	// O_EXCL: a second entry with the same name (a classic way to swap a
	// checked file for a link) is refused rather than overwriting.
	f, err := x.root.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return x.fsErr(name, err)
	}
	n, err := io.Copy(f, io.LimitReader(r, size))
	if err == nil && n < size {
		err = io.ErrUnexpectedEOF
	}
	if err != nil {
		_ = f.Close()
		var fe *Error
		if errors.As(err, &fe) || errors.Is(err, io.ErrUnexpectedEOF) {
			return streamError(err)
		}
		// Read errors from the archive and write errors to disk look
		// alike here; the *os.PathError tells them apart.
		var pe *fs.PathError
		if errors.As(err, &pe) {
			return x.fsErr(name, err)
		}
		return streamError(err)
	}
	// Model servers often run as another user than the fetch task:
	// everything is world-readable, nothing is setuid.
	perm := mode.Perm()&0o755 | 0o644
	if err := f.Chmod(perm); err != nil {
		_ = f.Close()
		return x.fsErr(name, err)
	}
	return x.fsErr(name, f.Close())
}

func (x *extractor) single(r io.Reader, name string) error {
	if name == "" || name == "." || name == "/" || strings.ContainsAny(name, "/\x00") {
		name = "model"
	}
	if err := x.count(name); err != nil {
		return err
	}
	f, err := x.root.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return x.fsErr(name, err)
	}
	limit := min(x.limits.MaxFileBytes, x.limits.MaxTotalBytes)
	n, err := io.Copy(f, io.LimitReader(r, limit+1))
	x.total = n
	if cerr := f.Close(); err == nil && cerr != nil {
		return x.fsErr(name, cerr)
	}
	if err != nil {
		var pe *fs.PathError
		if errors.As(err, &pe) {
			return x.fsErr(name, err)
		}
		return streamError(err)
	}
	if n > limit {
		return newError(ErrLimitExceeded, nil, fmt.Sprintf("artifact is larger than the %s limit", FormatSize(limit)))
	}
	return nil
}

func (x *extractor) symlink(name, target string) error {
	if target == "" {
		return unsafeErr(name, "is a symlink with an empty target")
	}
	if strings.HasPrefix(target, "/") {
		return unsafeErr(name, fmt.Sprintf("is a symlink to the absolute path %q", target))
	}
	if resolved := path.Join(path.Dir(name), target); resolved == ".." || strings.HasPrefix(resolved, "../") {
		return unsafeErr(name, fmt.Sprintf("is a symlink pointing outside the archive (%q)", target))
	}
	if err := x.parent(name); err != nil {
		return err
	}
	// os.Root would follow the link only inside the root while unpacking,
	// but the model server follows it later without such care: the whole
	// tree's links are re-checked once unpacking ends (checkLinks).
	return x.fsErr(name, x.root.Symlink(target, name))
}

func (x *extractor) hardlink(name, target string) error {
	old, err := cleanName(target)
	if err != nil || old == "." {
		return unsafeErr(name, fmt.Sprintf("is a hard link to %q, outside the archive", target))
	}
	st, err := x.root.Lstat(old)
	if err != nil {
		return unsafeErr(name, fmt.Sprintf("is a hard link to %q, which is not an earlier entry of the archive", target))
	}
	if st.IsDir() {
		return unsafeErr(name, "is a hard link to a directory")
	}
	if err := x.parent(name); err != nil {
		return err
	}
	return x.fsErr(name, x.root.Link(old, name))
}

// fsErr classifies a filesystem error while unpacking. os.Root refuses any
// path that resolves outside the root (through ".." or a symlink planted by
// an earlier entry): that is the archive's doing, not the node's.
func (x *extractor) fsErr(name string, err error) error {
	if err == nil {
		return nil
	}
	var fe *Error
	if errors.As(err, &fe) {
		return err
	}
	msg := err.Error()
	switch {
	case strings.Contains(msg, "escapes from parent") || strings.Contains(msg, "path escapes"):
		return unsafeErr(name, "resolves outside the archive through a link")
	case errors.Is(err, fs.ErrExist):
		return unsafeErr(name, "appears twice, or collides with a link")
	case errors.Is(err, fs.ErrNotExist):
		// A parent that is a dangling link, or a file used as a directory.
		return unsafeErr(name, "has a parent that is not a directory of the archive")
	}
	var pe *fs.PathError
	if errors.As(err, &pe) {
		err = pe.Err
	}
	return newError(ErrLocal, err, fmt.Sprintf("writing %q into the model dir: %v", name, err))
}

// checkLinks walks the unpacked tree and resolves every symlink for real.
// Checking each link's target text alone is not enough: a link at a/b
// pointing to "../.." is harmless until another link makes a/ point deeper
// or shallower. Dangling links are refused too, since what they will point
// to is decided by whoever creates the target later. Directories are set to
// 0755 so the model server can read them whatever the umask.
func checkLinks(dir string) error {
	real, err := filepath.EvalSymlinks(dir)
	if err != nil {
		return newError(ErrLocal, err, fmt.Sprintf("resolving staging dir: %v", err))
	}
	return filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return newError(ErrLocal, err, fmt.Sprintf("walking the unpacked model: %v", err))
		}
		rel, _ := filepath.Rel(dir, p)
		if d.IsDir() {
			if err := os.Chmod(p, 0o755); err != nil {
				return newError(ErrLocal, err, fmt.Sprintf("chmod %q: %v", rel, err))
			}
			return nil
		}
		if d.Type()&fs.ModeSymlink == 0 {
			return nil
		}
		target, err := filepath.EvalSymlinks(p)
		if err != nil {
			return unsafeErr(filepath.ToSlash(rel), "is a symlink that points to nothing in the archive")
		}
		if target != real && !strings.HasPrefix(target, real+string(filepath.Separator)) {
			return unsafeErr(filepath.ToSlash(rel), "is a symlink that resolves outside the archive")
		}
		return nil
	})
}
