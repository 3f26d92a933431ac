package router

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"

	"github.com/seraihq/serai/internal/sigv4"
)

// SigV4Service is the service name invocations are signed for, as with
// SageMaker's runtime API.
const SigV4Service = "sagemaker"

// SigV4MaxSkew is how far X-Amz-Date may be from the router's clock, either
// way, as with AWS.
const SigV4MaxSkew = 15 * time.Minute

// Error codes of authentication failures, as AWS's JSON services answer
// them (HTTP 403). The SDKs surface them as API errors with this code.
const (
	CodeMissingAuthenticationToken = "MissingAuthenticationTokenException"
	CodeIncompleteSignature        = "IncompleteSignatureException"
	CodeUnrecognizedClient         = "UnrecognizedClientException"
	CodeInvalidSignature           = "InvalidSignatureException"
)

const (
	msgMissingToken     = "Missing Authentication Token"
	msgInvalidToken     = "The security token included in the request is invalid."
	msgSignatureInvalid = "The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method. Consult the service documentation for details."
)

// sigv4Auth verifies AWS Signature Version 4 on invocations with a static
// key table. The table can be replaced while the router serves (key
// rotation, Router.SetSigV4Keys); everything else is fixed once built.
type sigv4Auth struct {
	keys   sigv4.KeyTable
	region string // "" accepts any
	now    func() time.Time
}

func newSigV4Auth(keys map[string]string, region string) (*sigv4Auth, error) {
	a := &sigv4Auth{region: region, now: time.Now}
	if err := a.setKeys(keys); err != nil {
		return nil, err
	}
	return a, nil
}

// setKeys checks and installs a new key table; on error the old one stays.
func (a *sigv4Auth) setKeys(keys map[string]string) error {
	if len(keys) == 0 {
		return errors.New("router: SigV4Keys is set but holds no key (nil turns authentication off)")
	}
	if err := a.keys.Set(keys); err != nil {
		return fmt.Errorf("router: SigV4Keys: %w", err)
	}
	return nil
}

// authError is one refused request: the SageMaker-style code and message
// the client sees, and a reason for the debug log. None carries a
// signature or secret.
type authError struct {
	code, msg string
	akid      string
	reason    string
}

// signedRequest is a request whose headers passed the checks; its
// signature is verified once the body has arrived.
type signedRequest struct {
	auth *sigv4.Authorization
	when time.Time
}

// precheck does every check that needs no body: the header is there and
// well formed, the key is known, the scope and the clock are right. It runs
// before the endpoint is looked up, so callers without a known key learn
// nothing about endpoints.
func (a *sigv4Auth) precheck(r *http.Request) (*signedRequest, *authError) {
	v, ok := r.Header["Authorization"]
	if !ok || len(v) == 0 || v[0] == "" {
		if r.URL.Query().Has("X-Amz-Signature") {
			return nil, &authError{code: CodeIncompleteSignature, msg: "Presigned URLs are not supported; sign the Authorization header.", reason: "presigned URL"}
		}
		return nil, &authError{code: CodeMissingAuthenticationToken, msg: msgMissingToken, reason: "no Authorization header"}
	}
	if len(v) > 1 {
		return nil, &authError{code: CodeIncompleteSignature, msg: "Only one Authorization header may be sent.", reason: "repeated Authorization header"}
	}
	au, err := sigv4.ParseAuthorization(v[0])
	if errors.Is(err, sigv4.ErrNotSigV4) {
		return nil, &authError{code: CodeIncompleteSignature, msg: "Authorization header must use " + sigv4.Algorithm + ".", reason: "other scheme"}
	}
	if err != nil {
		return nil, &authError{code: CodeIncompleteSignature, msg: err.Error(), reason: "malformed Authorization"}
	}
	if _, _, ok := a.keys.Lookup(au.AccessKeyID); !ok {
		return nil, &authError{code: CodeUnrecognizedClient, msg: msgInvalidToken, akid: au.AccessKeyID, reason: "unknown access key ID"}
	}
	// Only static keys exist here: a session token was not issued by us.
	if _, ok := r.Header["X-Amz-Security-Token"]; ok {
		return nil, &authError{code: CodeUnrecognizedClient, msg: msgInvalidToken, akid: au.AccessKeyID, reason: "session token with a static key"}
	}
	if au.Service != SigV4Service {
		return nil, &authError{code: CodeInvalidSignature, msg: "Credential should be scoped to correct service: '" + SigV4Service + "'.", akid: au.AccessKeyID, reason: "wrong service in scope"}
	}
	if a.region != "" && au.Region != a.region {
		return nil, &authError{code: CodeInvalidSignature, msg: "Credential should be scoped to a valid region.", akid: au.AccessKeyID, reason: "wrong region in scope"}
	}
	when, err := sigv4.SigningTime(r)
	if err != nil {
		return nil, &authError{code: CodeIncompleteSignature, msg: "Authorization requires a valid X-Amz-Date header: " + err.Error() + ".", akid: au.AccessKeyID, reason: "no X-Amz-Date"}
	}
	if !strings.Contains(";"+au.SignedHeaders+";", ";x-amz-date;") {
		return nil, &authError{code: CodeIncompleteSignature, msg: "SignedHeaders must include x-amz-date.", akid: au.AccessKeyID, reason: "x-amz-date not signed"}
	}
	if d := when.Format("20060102"); d != au.Date {
		return nil, &authError{code: CodeInvalidSignature,
			msg:  "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP: '" + au.Date + "' != '" + d + "', from 'X-Amz-Date'.",
			akid: au.AccessKeyID, reason: "scope date differs from X-Amz-Date"}
	}
	now := a.now().UTC()
	if when.Before(now.Add(-SigV4MaxSkew)) {
		return nil, &authError{code: CodeInvalidSignature,
			msg: "Signature expired: " + when.Format(sigv4.TimeFormat) + " is now earlier than " + now.Add(-SigV4MaxSkew).Format(sigv4.TimeFormat) +
				" (" + now.Format(sigv4.TimeFormat) + " - 15 min.)",
			akid: au.AccessKeyID, reason: "signature expired"}
	}
	if when.After(now.Add(SigV4MaxSkew)) {
		return nil, &authError{code: CodeInvalidSignature,
			msg: "Signature not yet current: " + when.Format(sigv4.TimeFormat) + " is still later than " + now.Add(SigV4MaxSkew).Format(sigv4.TimeFormat) +
				" (" + now.Format(sigv4.TimeFormat) + " + 15 min.)",
			akid: au.AccessKeyID, reason: "signature in the future"}
	}
	return &signedRequest{auth: au, when: when}, nil
}

// verify recomputes the signature over the request and the body that
// arrived (its SHA-256 is the payload hash, whatever the client claims).
func (a *sigv4Auth) verify(r *http.Request, s *signedRequest, body []byte) *authError {
	hash := sigv4.PayloadHash(body)
	if v, ok := r.Header["X-Amz-Content-Sha256"]; ok && (len(v) != 1 || v[0] != hash) {
		return &authError{code: CodeInvalidSignature, msg: "The provided 'x-amz-content-sha256' header does not match what was computed.",
			akid: s.auth.AccessKeyID, reason: "x-amz-content-sha256 differs from the body"}
	}
	secret, signer, ok := a.keys.Lookup(s.auth.AccessKeyID)
	if !ok {
		// Rotated out while the body arrived.
		return &authError{code: CodeUnrecognizedClient, msg: msgInvalidToken, akid: s.auth.AccessKeyID, reason: "access key ID removed by a key reload"}
	}
	creds := aws.Credentials{SecretAccessKey: secret}
	res, err := sigv4.Verify(r.Context(), signer, r, s.auth, creds, hash, s.when)
	if err != nil {
		return &authError{code: CodeInvalidSignature, msg: msgSignatureInvalid, akid: s.auth.AccessKeyID, reason: "cannot sign again: " + err.Error()}
	}
	if res != sigv4.Match {
		return &authError{code: CodeInvalidSignature, msg: msgSignatureInvalid, akid: s.auth.AccessKeyID, reason: res.String()}
	}
	return nil
}

// refuseAuth answers 403 and counts the refusal.
func (rt *Router) refuseAuth(w http.ResponseWriter, name string, ae *authError) {
	rt.m.rejAuth.Inc()
	if rt.log.IsDebug() {
		rt.log.Debug("invocation refused: authentication failed", "endpoint", truncString(name, 64),
			"error_type", ae.code, "reason", ae.reason, "access_key_id", truncString(ae.akid, 128))
	}
	writeError(w, http.StatusForbidden, ae.code, ae.msg)
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
		rt.m.rejOverloaded.Inc()
		w.Header()["Connection"] = []string{"close"}
		writeError(w, http.StatusServiceUnavailable, CodeServiceUnavailable, "The router is at its request memory limit; retry later.")
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
