package router

import "net/http"

// unsupportedHeaders are the SageMaker runtime request headers the router
// does not carry out. A client that sends one asked for something specific
// (a model of a multi-model endpoint, one container of a pipeline, an
// inference component, explanations); answering from whatever the router
// would pick instead would silently give it something else, so the request
// is refused with a ValidationError naming the header. Remove a header from
// this list in the change that carries it out.
var unsupportedHeaders = [...]struct{ key, member string }{
	{"X-Amzn-Sagemaker-Target-Model", "TargetModel"},
	{"X-Amzn-Sagemaker-Target-Container-Hostname", "TargetContainerHostname"},
	{"X-Amzn-Sagemaker-Inference-Component", "InferenceComponentName"},
	{"X-Amzn-Sagemaker-Enable-Explanations", "EnableExplanations"},
	{"X-Amzn-Sagemaker-Prefix-Aware-Id", "PrefixAwareId"},
}

// checkUnsupported returns the ValidationError message for the first
// unsupported header present, or "".
func checkUnsupported(h http.Header) string {
	for _, u := range unsupportedHeaders {
		if v, ok := h[u.key]; ok && len(v) > 0 {
			return u.member + " (header " + u.key + ") is not supported by this endpoint: serai's router does not carry it out, and would otherwise answer from a model or container you did not ask for."
		}
	}
	return ""
}
