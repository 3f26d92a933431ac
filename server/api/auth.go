package api

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"

	"github.com/seraihq/serai/internal/sigv4"
	"github.com/seraihq/serai/server/smapi"
)

// SigV4Service is the service requests are signed for, as with
// SageMaker's API.
const SigV4Service = "sagemaker"

// SigV4MaxSkew is how far X-Amz-Date may be from the server's clock.
const SigV4MaxSkew = 15 * time.Minute

const (
	msgMissingToken     = "Missing Authentication Token"
	msgInvalidToken     = "The security token included in the request is invalid."
	msgSignatureInvalid = "The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method. Consult the service documentation for details."
)

// authenticator verifies AWS Signature Version 4 with a static key table,
// with the same checks and answers as the router's (router/sigv4.go); the
// verification itself is internal/sigv4's.
type authenticator struct {
	keys   sigv4.KeyTable
	region string
	now    func() time.Time
}

type signedRequest struct {
	auth *sigv4.Authorization
	when time.Time
}

func newAuthenticator(keys map[string]string, region string, now func() time.Time) (*authenticator, error) {
	a := &authenticator{region: region, now: now}
	if err := a.setKeys(keys); err != nil {
		return nil, err
	}
	return a, nil
}

func (a *authenticator) setKeys(keys map[string]string) error {
	if err := a.keys.Set(keys); err != nil {
		return fmt.Errorf("api: %w", err)
	}
	return nil
}

func denied(code, msg string) *apiError {
	return &apiError{status: http.StatusForbidden, code: code, msg: msg}
}

// precheck does every check that needs no body.
func (a *authenticator) precheck(r *http.Request) (*signedRequest, *apiError) {
	v, ok := r.Header["Authorization"]
	if !ok || len(v) == 0 || v[0] == "" {
		if r.URL.Query().Has("X-Amz-Signature") {
			return nil, denied(smapi.ErrIncompleteSignature, "Presigned URLs are not supported; sign the Authorization header.")
		}
		return nil, denied(smapi.ErrMissingAuthToken, msgMissingToken)
	}
	if len(v) > 1 {
		return nil, denied(smapi.ErrIncompleteSignature, "Only one Authorization header may be sent.")
	}
	au, err := sigv4.ParseAuthorization(v[0])
	if errors.Is(err, sigv4.ErrNotSigV4) {
		return nil, denied(smapi.ErrIncompleteSignature, "Authorization header must use "+sigv4.Algorithm+".")
	}
	if err != nil {
		return nil, denied(smapi.ErrIncompleteSignature, err.Error())
	}
	if _, _, ok := a.keys.Lookup(au.AccessKeyID); !ok {
		return nil, denied(smapi.ErrUnrecognizedClient, msgInvalidToken)
	}
	if _, ok := r.Header["X-Amz-Security-Token"]; ok {
		return nil, denied(smapi.ErrUnrecognizedClient, msgInvalidToken)
	}
	if au.Service != SigV4Service {
		return nil, denied(smapi.ErrInvalidSignature, "Credential should be scoped to correct service: '"+SigV4Service+"'.")
	}
	if au.Region != a.region {
		return nil, denied(smapi.ErrInvalidSignature, "Credential should be scoped to a valid region.")
	}
	when, err := sigv4.SigningTime(r)
	if err != nil {
		return nil, denied(smapi.ErrIncompleteSignature, "Authorization requires a valid X-Amz-Date header: "+err.Error()+".")
	}
	if !strings.Contains(";"+au.SignedHeaders+";", ";x-amz-date;") {
		return nil, denied(smapi.ErrIncompleteSignature, "SignedHeaders must include x-amz-date.")
	}
	if d := when.Format("20060102"); d != au.Date {
		return nil, denied(smapi.ErrInvalidSignature, fmt.Sprintf("Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP: '%s' != '%s', from 'X-Amz-Date'.", au.Date, d))
	}
	now := a.now().UTC()
	if when.Before(now.Add(-SigV4MaxSkew)) || when.After(now.Add(SigV4MaxSkew)) {
		return nil, denied(smapi.ErrInvalidSignature, fmt.Sprintf("Signature expired or not yet current: %s is more than 15 minutes from the server's time %s.",
			when.Format(sigv4.TimeFormat), now.Format(sigv4.TimeFormat)))
	}
	return &signedRequest{auth: au, when: when}, nil
}

// verify recomputes the signature over the request and its body.
func (a *authenticator) verify(r *http.Request, s *signedRequest, body []byte) *apiError {
	hash := sigv4.PayloadHash(body)
	if v, ok := r.Header["X-Amz-Content-Sha256"]; ok && (len(v) != 1 || v[0] != hash) {
		return denied(smapi.ErrInvalidSignature, "The provided 'x-amz-content-sha256' header does not match what was computed.")
	}
	secret, signer, ok := a.keys.Lookup(s.auth.AccessKeyID)
	if !ok {
		return denied(smapi.ErrUnrecognizedClient, msgInvalidToken)
	}
	// A signer per request: the SDK signer caches derived keys by access
	// key ID, region, service and day, not by secret, so a shared one
	// would keep accepting a rotated-out secret (and refuse the new one)
	// until midnight UTC. Deriving costs four HMACs.
	res, err := sigv4.Verify(r.Context(), signer, r, s.auth, aws.Credentials{SecretAccessKey: secret}, hash, s.when)
	if err != nil || res != sigv4.Match {
		return denied(smapi.ErrInvalidSignature, msgSignatureInvalid)
	}
	return nil
}
