package api

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/seraihq/serai/server/records"
	"github.com/seraihq/serai/server/smapi"
)

// apiError is an answer other than success: HTTP status, SageMaker error
// code and a message that names the field or resource at fault.
type apiError struct {
	status int
	code   string
	msg    string
	cause  error // for the log only; never shown
}

func (e *apiError) Error() string { return e.code + ": " + e.msg }

func validationf(format string, args ...any) *apiError {
	return &apiError{status: http.StatusBadRequest, code: smapi.ErrValidation, msg: fmt.Sprintf(format, args...)}
}

func inUsef(format string, args ...any) *apiError {
	return &apiError{status: http.StatusBadRequest, code: smapi.ErrResourceInUse, msg: fmt.Sprintf(format, args...)}
}

func limitf(format string, args ...any) *apiError {
	return &apiError{status: http.StatusBadRequest, code: smapi.ErrResourceLimit, msg: fmt.Sprintf(format, args...)}
}

// Messages SageMaker answers with; the SDK waiters match the code
// (ValidationException) and Terraform matches the "Could not find" texts.
func notFoundModel(arn string) *apiError {
	return validationf("Could not find model %q.", arn)
}

func notFoundConfig(arn string) *apiError {
	return validationf("Could not find endpoint configuration %q.", arn)
}

func notFoundEndpoint(arn string) *apiError {
	return validationf("Could not find endpoint %q.", arn)
}

// storeError turns a failure of the record store into the client's
// answer: a store that cannot be reached is 503 (the SDKs retry it), a
// cancelled request is answered as such, anything else is 500.
func storeError(err error) *apiError {
	var ae *apiError
	if errors.As(err, &ae) {
		return ae
	}
	var corrupt *records.CorruptError
	switch {
	case errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded):
		return &apiError{status: 499, code: smapi.ErrServiceUnavailable, msg: "The request was cancelled.", cause: err}
	case errors.Is(err, context.DeadlineExceeded):
		return &apiError{status: http.StatusServiceUnavailable, code: smapi.ErrServiceUnavailable,
			msg: "The record store (Consul) did not answer in time; nothing was changed. Retry later.", cause: err}
	case errors.Is(err, records.ErrConflict):
		return &apiError{status: http.StatusServiceUnavailable, code: smapi.ErrServiceUnavailable,
			msg: "The records changed concurrently too often to apply this request; nothing was changed. Retry.", cause: err}
	case errors.As(err, &corrupt):
		return &apiError{status: http.StatusInternalServerError, code: smapi.ErrInternalFailure,
			msg: fmt.Sprintf("Record %s in Consul is corrupt (%v); rewrite or delete that key.", corrupt.Key, corrupt.Err), cause: err}
	}
	return &apiError{status: http.StatusServiceUnavailable, code: smapi.ErrServiceUnavailable,
		msg: "The record store (Consul) is unavailable; nothing was changed. Retry later.", cause: err}
}

// fieldErrors collects SageMaker-style constraint violations:
//
//	2 validation errors detected: Value null at 'modelName' failed to
//	satisfy constraint: Member must not be null; Value '...' at ...
//
// Paths are SageMaker's: lower-camel member names, list entries as
// "productionVariants.1.member.variantName" (1-based).
type fieldErrors []string

func (f *fieldErrors) null(path string) {
	*f = append(*f, fmt.Sprintf("Value null at '%s' failed to satisfy constraint: Member must not be null", path))
}

func (f *fieldErrors) bad(path string, value any, constraint string) {
	*f = append(*f, fmt.Sprintf("Value %s at '%s' failed to satisfy constraint: %s", quoteValue(value), path, constraint))
}

func (f fieldErrors) err() *apiError {
	switch len(f) {
	case 0:
		return nil
	case 1:
		return validationf("1 validation error detected: %s", f[0])
	}
	return validationf("%d validation errors detected: %s", len(f), strings.Join(f, "; "))
}

// quoteValue renders a value as SageMaker does in these messages, cut
// short so an oversized input does not come back whole.
func quoteValue(v any) string {
	s := fmt.Sprint(v)
	if len(s) > 256 {
		s = s[:256] + "..."
	}
	if _, ok := v.(string); ok {
		return "'" + s + "'"
	}
	return s
}

// member is the path of list entry i (0-based) of list path.
func member(path string, i int) string {
	return fmt.Sprintf("%s.%d.member", path, i+1)
}
