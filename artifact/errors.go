package artifact

import (
	"errors"
)

// Kinds of failure a caller (and a person reading the fetch task's log) can
// act on. Every error Fetch returns wraps exactly one of them; test with
// errors.Is.
var (
	// ErrNotFound: the bucket, key or file does not exist.
	ErrNotFound = errors.New("artifact not found")
	// ErrAccessDenied: the store refused the credentials or the request.
	ErrAccessDenied = errors.New("access denied")
	// ErrChecksumMismatch: the artifact's sha256 differs from the one the model pins.
	ErrChecksumMismatch = errors.New("checksum mismatch")
	// ErrUnsafeArchive: the archive tries to write outside its directory,
	// holds links pointing outside, or holds devices.
	ErrUnsafeArchive = errors.New("unsafe archive")
	// ErrLimitExceeded: the unpacked artifact is larger, or has more files,
	// than the configured limits allow.
	ErrLimitExceeded = errors.New("limit exceeded")
	// ErrCorrupt: the artifact is not a readable archive (bad gzip or tar data).
	ErrCorrupt = errors.New("corrupt artifact")
	// ErrChanged: the object changed while it was being downloaded.
	ErrChanged = errors.New("artifact changed during download")
	// ErrTimeout: the download deadline (SERAI_DOWNLOAD_TIMEOUT) passed.
	ErrTimeout = errors.New("download deadline exceeded")
	// ErrUnavailable: the store kept failing with transient errors until the
	// retries ran out.
	ErrUnavailable = errors.New("store unavailable")
	// ErrRefused: the store answered with a definitive error other than
	// not-found or access-denied (e.g. 400 Bad Request).
	ErrRefused = errors.New("store refused the request")
	// ErrLocal: writing the model on this node failed (disk full,
	// permissions of the alloc dir).
	ErrLocal = errors.New("local filesystem error")
	// ErrInvalidConfig: the URL, checksum or limits given are unusable.
	ErrInvalidConfig = errors.New("invalid fetch configuration")
)

// Error carries a message written for the person reading the task log. The
// message is built from redacted locations only, never from credentials or
// raw URLs (which may be presigned), so it is always safe to print.
type Error struct {
	Kind error
	Msg  string
	// Err is the underlying cause, kept for errors.Is/As. Its text is not
	// part of Error() unless the message already includes a sanitized form.
	Err error
}

func (e *Error) Error() string { return e.Msg }

func (e *Error) Unwrap() []error {
	if e.Err == nil {
		return []error{e.Kind}
	}
	return []error{e.Kind, e.Err}
}

func newError(kind error, cause error, msg string) *Error {
	return &Error{Kind: kind, Msg: msg, Err: cause}
}
