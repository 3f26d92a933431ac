package sigv4

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
)

// Codes of authentication failures, as AWS's JSON services answer them
// (HTTP 403); the SDKs surface them as API errors with this code.
const (
	CodeMissingAuthenticationToken = "MissingAuthenticationTokenException"
	CodeIncompleteSignature        = "IncompleteSignatureException"
	CodeUnrecognizedClient         = "UnrecognizedClientException"
	CodeInvalidSignature           = "InvalidSignatureException"
)

// AWS's own messages, so clients that match on them keep working.
const (
	msgMissingToken     = "Missing Authentication Token"
	msgInvalidToken     = "The security token included in the request is invalid."
	msgSignatureInvalid = "The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method. Consult the service documentation for details."
)

// DefaultMaxSkew is how far X-Amz-Date may be from the server's clock,
// either way, as with AWS.
const DefaultMaxSkew = 15 * time.Minute

// Config configures a Verifier.
type Config struct {
	// Service is the only service the credential scope may name
	// ("sagemaker"). Required.
	Service string
	// Region, when set, is the only region the credential scope may
	// name; "" accepts any.
	Region string
	// MaxSkew is how far X-Amz-Date may be from Now, either way.
	MaxSkew time.Duration
	// Now is the clock (tests inject one).
	Now func() time.Time
}

// DefaultConfig returns the defaults; Service has none.
func DefaultConfig() Config {
	return Config{MaxSkew: DefaultMaxSkew, Now: time.Now}
}

func (c Config) withDefaults() Config {
	d := DefaultConfig()
	if c.MaxSkew == 0 {
		c.MaxSkew = d.MaxSkew
	}
	if c.Now == nil {
		c.Now = d.Now
	}
	return c
}

// Validate says what is wrong with c, naming the field.
func (c Config) Validate() error {
	var errs []error
	if c.Service == "" {
		errs = append(errs, errors.New("sigv4: Config.Service is empty"))
	} else if !scopePart(c.Service) {
		errs = append(errs, fmt.Errorf("sigv4: Config.Service %q is not a credential scope component", c.Service))
	}
	if c.Region != "" && !scopePart(c.Region) {
		errs = append(errs, fmt.Errorf("sigv4: Config.Region %q is not a credential scope component", c.Region))
	}
	if c.MaxSkew < 0 {
		errs = append(errs, fmt.Errorf("sigv4: Config.MaxSkew %v is negative", c.MaxSkew))
	}
	return errors.Join(errs...)
}

// scopePart: a credential scope component can hold no '/' (it separates
// them) and, being in a header, no space or control character.
func scopePart(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c <= ' ' || c == 0x7f || c == '/' {
			return false
		}
	}
	return true
}

// Verifier checks AWS Signature Version 4 Authorization headers against a
// static key table that can be replaced while it serves (SetKeys); the
// router and the control-plane API each hold one. A request is checked in
// two steps so that the caller can refuse it before reading its body:
// Precheck (header, key, scope, clock) and Verify (the signature over the
// body that arrived).
type Verifier struct {
	cfg  Config
	keys KeyTable
}

// NewVerifier checks cfg and the key table (which must hold a key: an
// empty table would refuse everything, which is never what was meant).
func NewVerifier(cfg Config, keys map[string]string) (*Verifier, error) {
	cfg = cfg.withDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	v := &Verifier{cfg: cfg}
	if err := v.keys.Set(keys); err != nil {
		return nil, err
	}
	return v, nil
}

// SetKeys checks and installs a new key table (key rotation); on error the
// table in use stays. Requests already past Precheck are verified with the
// new table; one whose key was removed is refused.
func (v *Verifier) SetKeys(keys map[string]string) error { return v.keys.Set(keys) }

// Signed is a request whose headers passed Precheck.
type Signed struct {
	// Authorization is the parsed header; AccessKeyID is the principal
	// once Verify has passed.
	Authorization
	// Time is X-Amz-Date.
	Time time.Time
}

// Error is one refused request: AWS's code and message, for the client,
// and a reason and the access key ID the request named (if any), for the
// log. None of it carries a signature or secret. The answer is HTTP 403.
type Error struct {
	Code        string
	Message     string
	Reason      string
	AccessKeyID string
}

func (e *Error) Error() string {
	s := e.Code + ": " + e.Reason
	if e.AccessKeyID != "" {
		id := e.AccessKeyID
		if len(id) > 128 {
			id = id[:128]
		}
		s += " (access key ID " + strconv.Quote(id) + ")"
	}
	return s
}

// Precheck does every check that needs no body: one Authorization header
// of the AWS4-HMAC-SHA256 scheme (a presigned URL is refused), a known
// access key without a session token, the configured service and region
// in the scope, a valid X-Amz-Date that is signed, matches the scope date
// and is within MaxSkew of the clock.
func (v *Verifier) Precheck(r *http.Request) (*Signed, *Error) {
	h, ok := r.Header["Authorization"]
	if !ok || len(h) == 0 || h[0] == "" {
		if r.URL.Query().Has("X-Amz-Signature") {
			return nil, &Error{Code: CodeIncompleteSignature, Message: "Presigned URLs are not supported; sign the Authorization header.", Reason: "presigned URL"}
		}
		return nil, &Error{Code: CodeMissingAuthenticationToken, Message: msgMissingToken, Reason: "no Authorization header"}
	}
	if len(h) > 1 {
		return nil, &Error{Code: CodeIncompleteSignature, Message: "Only one Authorization header may be sent.", Reason: "repeated Authorization header"}
	}
	s := new(Signed)
	if err := parseAuthorization(h[0], &s.Authorization); err != nil {
		if errors.Is(err, ErrNotSigV4) {
			return nil, &Error{Code: CodeIncompleteSignature, Message: "Authorization header must use " + Algorithm + ".", Reason: "other scheme"}
		}
		return nil, &Error{Code: CodeIncompleteSignature, Message: err.Error(), Reason: "malformed Authorization"}
	}
	au := &s.Authorization
	fail := func(code, msg, reason string) (*Signed, *Error) {
		return nil, &Error{Code: code, Message: msg, Reason: reason, AccessKeyID: au.AccessKeyID}
	}
	if _, _, ok := v.keys.Lookup(au.AccessKeyID); !ok {
		return fail(CodeUnrecognizedClient, msgInvalidToken, "unknown access key ID")
	}
	// Only static keys exist here: a session token was not issued by us.
	if _, ok := r.Header["X-Amz-Security-Token"]; ok {
		return fail(CodeUnrecognizedClient, msgInvalidToken, "session token with a static key")
	}
	if au.Service != v.cfg.Service {
		return fail(CodeInvalidSignature, "Credential should be scoped to correct service: '"+v.cfg.Service+"'.", "wrong service in scope")
	}
	if v.cfg.Region != "" && au.Region != v.cfg.Region {
		return fail(CodeInvalidSignature, "Credential should be scoped to a valid region.", "wrong region in scope")
	}
	when, err := SigningTime(r)
	if err != nil {
		return fail(CodeIncompleteSignature, "Authorization requires a valid X-Amz-Date header: "+err.Error()+".", "no X-Amz-Date")
	}
	if !signsHeader(au.SignedHeaders, "x-amz-date") {
		return fail(CodeIncompleteSignature, "SignedHeaders must include x-amz-date.", "x-amz-date not signed")
	}
	var buf [8]byte
	if d := when.AppendFormat(buf[:0], "20060102"); string(d) != au.Date {
		return fail(CodeInvalidSignature,
			"Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP: '"+au.Date+"' != '"+string(d)+"', from 'X-Amz-Date'.",
			"scope date differs from X-Amz-Date")
	}
	now := v.cfg.Now().UTC()
	if early := now.Add(-v.cfg.MaxSkew); when.Before(early) {
		return fail(CodeInvalidSignature,
			"Signature expired: "+when.Format(TimeFormat)+" is now earlier than "+early.Format(TimeFormat)+" ("+now.Format(TimeFormat)+" - "+skewText(v.cfg.MaxSkew)+")",
			"signature expired")
	}
	if late := now.Add(v.cfg.MaxSkew); when.After(late) {
		return fail(CodeInvalidSignature,
			"Signature not yet current: "+when.Format(TimeFormat)+" is still later than "+late.Format(TimeFormat)+" ("+now.Format(TimeFormat)+" + "+skewText(v.cfg.MaxSkew)+")",
			"signature in the future")
	}
	s.Time = when
	return s, nil
}

// Verify recomputes the signature over r and the body that arrived (its
// SHA-256 is the payload hash, whatever the client claims) with the key
// table in use now, and compares it with the one s carries.
func (v *Verifier) Verify(ctx context.Context, r *http.Request, s *Signed, body []byte) *Error {
	fail := func(code, msg, reason string) *Error {
		return &Error{Code: code, Message: msg, Reason: reason, AccessKeyID: s.AccessKeyID}
	}
	hash := PayloadHash(body)
	if h, ok := r.Header["X-Amz-Content-Sha256"]; ok && (len(h) != 1 || h[0] != hash) {
		return fail(CodeInvalidSignature, "The provided 'x-amz-content-sha256' header does not match what was computed.", "x-amz-content-sha256 differs from the body")
	}
	secret, signer, ok := v.keys.Lookup(s.AccessKeyID)
	if !ok {
		// Rotated out while the body arrived.
		return fail(CodeUnrecognizedClient, msgInvalidToken, "access key ID removed by a key reload")
	}
	res, err := Verify(ctx, signer, r, &s.Authorization, aws.Credentials{SecretAccessKey: secret}, hash, s.Time)
	if err != nil {
		return fail(CodeInvalidSignature, msgSignatureInvalid, "cannot sign again: "+err.Error())
	}
	if res != Match {
		return fail(CodeInvalidSignature, msgSignatureInvalid, res.String())
	}
	return nil
}

// signsHeader reports whether the ';'-separated list holds name.
func signsHeader(list, name string) bool {
	for more := true; more; {
		var h string
		h, list, more = strings.Cut(list, ";")
		if h == name {
			return true
		}
	}
	return false
}

// skewText is AWS's "15 min." for whole minutes.
func skewText(d time.Duration) string {
	if d%time.Minute == 0 {
		return strconv.FormatInt(int64(d/time.Minute), 10) + " min."
	}
	return d.String() + "."
}
