package router

import (
	"encoding/json"
	"net/http"
	"strconv"
	"unicode/utf8"
)

// SageMaker runtime error codes. The AWS SDKs read the code from the
// X-Amzn-ErrorType header and the fields from the JSON body, so both carry
// it.
const (
	CodeValidation         = "ValidationError"
	CodeModel              = "ModelError"
	CodeServiceUnavailable = "ServiceUnavailable"
	CodeInternalFailure    = "InternalFailure"
	CodeAccessDenied       = "AccessDeniedException"
	CodeUnknownOperation   = "UnknownOperationException"
	CodeThrottling         = "ThrottlingException"
)

// ErrorBody is the JSON body of an error answer. OriginalStatusCode and
// OriginalMessage are set for ModelError only, as SageMaker does.
type ErrorBody struct {
	Type               string `json:"__type"`
	Message            string `json:"Message"`
	OriginalStatusCode int    `json:"OriginalStatusCode,omitempty"`
	OriginalMessage    string `json:"OriginalMessage,omitempty"`
}

func writeError(w http.ResponseWriter, status int, code, msg string) {
	writeErrorBody(w, status, &ErrorBody{Type: code, Message: msg})
}

func writeErrorBody(w http.ResponseWriter, status int, b *ErrorBody) {
	out, err := json.Marshal(b)
	if err != nil {
		out = []byte(`{"__type":"InternalFailure","Message":"error encoding failed"}`)
	}
	h := w.Header()
	h["Content-Type"] = []string{"application/json"}
	h["X-Amzn-Errortype"] = []string{b.Type}
	h["Content-Length"] = []string{strconv.Itoa(len(out))}
	w.WriteHeader(status)
	w.Write(out)
}

// modelMessage renders a model's error body for OriginalMessage: binary
// bodies become a placeholder rather than mojibake.
func modelMessage(b []byte) string {
	if utf8.Valid(b) {
		return string(b)
	}
	return "<" + strconv.Itoa(len(b)) + " bytes of non-UTF-8 data>"
}
