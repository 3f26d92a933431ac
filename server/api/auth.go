package api

import (
	"fmt"
	"net/http"
	"time"

	"github.com/seraihq/serai/internal/sigv4"
)

// SigV4Service is the service requests are signed for, as with
// SageMaker's API.
const SigV4Service = "sagemaker"

// SigV4MaxSkew is how far X-Amz-Date may be from the server's clock.
const SigV4MaxSkew = sigv4.DefaultMaxSkew

// authenticator adapts internal/sigv4's Verifier, which holds every check
// (the router uses the same one), to the API's error answers.
type authenticator struct{ v *sigv4.Verifier }

type signedRequest = sigv4.Signed

// newAuthenticator accepts signatures scoped to region only: the API is
// regional, as SageMaker's is.
func newAuthenticator(keys map[string]string, region string, now func() time.Time) (*authenticator, error) {
	cfg := sigv4.DefaultConfig()
	cfg.Service, cfg.Region, cfg.Now = SigV4Service, region, now
	v, err := sigv4.NewVerifier(cfg, keys)
	if err != nil {
		return nil, fmt.Errorf("api: %w", err)
	}
	return &authenticator{v: v}, nil
}

func (a *authenticator) setKeys(keys map[string]string) error {
	if err := a.v.SetKeys(keys); err != nil {
		return fmt.Errorf("api: %w", err)
	}
	return nil
}

// denied is the API's answer to a refused request; the reason and access
// key ID go to the log as its cause.
func denied(e *sigv4.Error) *apiError {
	return &apiError{status: http.StatusForbidden, code: e.Code, msg: e.Message, cause: e}
}

// precheck does every check that needs no body.
func (a *authenticator) precheck(r *http.Request) (*signedRequest, *apiError) {
	s, e := a.v.Precheck(r)
	if e != nil {
		return nil, denied(e)
	}
	return s, nil
}

// verify recomputes the signature over the request and its body.
func (a *authenticator) verify(r *http.Request, s *signedRequest, body []byte) *apiError {
	if e := a.v.Verify(r.Context(), r, s, body); e != nil {
		return denied(e)
	}
	return nil
}
