package router

import (
	"errors"
	"fmt"
	"net/http"

	"github.com/seraihq/serai/internal/sigv4"
)

// SigV4Service is the service name invocations are signed for, as with
// SageMaker's runtime API.
const SigV4Service = "sagemaker"

// SigV4MaxSkew is how far X-Amz-Date may be from the router's clock, either
// way, as with AWS.
const SigV4MaxSkew = sigv4.DefaultMaxSkew

// Error codes of authentication failures, as AWS's JSON services answer
// them (HTTP 403). The SDKs surface them as API errors with this code.
const (
	CodeMissingAuthenticationToken = sigv4.CodeMissingAuthenticationToken
	CodeIncompleteSignature        = sigv4.CodeIncompleteSignature
	CodeUnrecognizedClient         = sigv4.CodeUnrecognizedClient
	CodeInvalidSignature           = sigv4.CodeInvalidSignature
)

// sigv4Auth adapts internal/sigv4's Verifier, which holds every check, to
// the router: the key table can be replaced while the router serves (key
// rotation, Router.SetSigV4Keys); everything else is fixed once built.
type sigv4Auth struct{ v *sigv4.Verifier }

// signedRequest is a request whose headers passed the checks; its
// signature is verified once the body has arrived.
type signedRequest = sigv4.Signed

// authError is one refused request: the code and message the client sees,
// and a reason and access key ID for the debug log.
type authError = sigv4.Error

func newSigV4Auth(keys map[string]string, region string) (*sigv4Auth, error) {
	if len(keys) == 0 {
		return nil, errNoSigV4Keys
	}
	cfg := sigv4.DefaultConfig()
	cfg.Service, cfg.Region = SigV4Service, region
	v, err := sigv4.NewVerifier(cfg, keys)
	if err != nil {
		return nil, fmt.Errorf("router: SigV4: %w", err)
	}
	return &sigv4Auth{v: v}, nil
}

var errNoSigV4Keys = errors.New("router: SigV4Keys is set but holds no key (nil turns authentication off)")

// setKeys checks and installs a new key table; on error the old one stays.
func (a *sigv4Auth) setKeys(keys map[string]string) error {
	if len(keys) == 0 {
		return errNoSigV4Keys
	}
	if err := a.v.SetKeys(keys); err != nil {
		return fmt.Errorf("router: SigV4Keys: %w", err)
	}
	return nil
}

// precheck does every check that needs no body (sigv4.Verifier.Precheck).
// It runs before the endpoint is looked up and before the body is read,
// so callers without a known key learn nothing about endpoints and cost
// no memory budget.
func (a *sigv4Auth) precheck(r *http.Request) (*signedRequest, *authError) {
	return a.v.Precheck(r)
}

// verify recomputes the signature over the request and the body that
// arrived.
func (a *sigv4Auth) verify(r *http.Request, s *signedRequest, body []byte) *authError {
	return a.v.Verify(r.Context(), r, s, body)
}

// refuseAuth answers 403 and counts the refusal.
func (rt *Router) refuseAuth(w http.ResponseWriter, name string, ae *authError) {
	rt.m.rejAuth.Inc()
	if rt.log.IsDebug() {
		rt.log.Debug("invocation refused: authentication failed", "endpoint", truncString(name, 64),
			"error_type", ae.Code, "reason", ae.Reason, "access_key_id", truncString(ae.AccessKeyID, 128))
	}
	writeError(w, http.StatusForbidden, ae.Code, ae.Message)
}

// authenticateEarly reads and verifies the body of a signed request before
// answering about an endpoint the router does not serve, so only
// authenticated callers learn which endpoints exist. It reports whether
// the caller may be answered; if not, it has answered.
func (rt *Router) authenticateEarly(w http.ResponseWriter, r *http.Request, name string, s *signedRequest) bool {
	if r.ContentLength > rt.cfg.MaxBodyBytes {
		rt.tooLarge(w, r.ContentLength)
		return false
	}
	bp, body, n, err := rt.readBody(r)
	if bp != nil {
		defer rt.releaseBody(bp)
	}
	switch {
	case n > rt.cfg.MaxBodyBytes:
		rt.tooLarge(w, -1)
		return false
	case err == errBodyBudget:
		rt.bodyBudgetSpent(w, r)
		return false
	case err != nil:
		writeError(w, http.StatusBadRequest, CodeValidation, "Could not read the request body: "+err.Error())
		return false
	}
	if ae := rt.sigv4.verify(r, s, body); ae != nil {
		rt.refuseAuth(w, name, ae)
		return false
	}
	return true
}

// LoadSigV4Keys reads a key table for Config.SigV4Keys from a file that
// only its owner (and group) may read. Two formats:
//
//	# text: one "ACCESS_KEY_ID SECRET_ACCESS_KEY" pair a line,
//	# blank lines and lines starting with # ignored
//	AKIAEXAMPLE0000001 wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY
//
//	{"AKIAEXAMPLE0000001": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"}
//
// (JSON when the first non-blank character is '{'). Access key IDs are
// 1–128 letters, digits, '_', '-' or '.'; secrets at least 16 characters
// without spaces or control characters. A repeated ID, an empty table, or
// a file other users may read or write is an error. Errors name the file
// and line, never a secret.
func LoadSigV4Keys(path string) (map[string]string, error) { return sigv4.LoadKeys(path) }
