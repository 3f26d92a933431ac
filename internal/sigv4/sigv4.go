// Package sigv4 checks AWS Signature Version 4 Authorization headers on
// the server side. Verifier holds every check the router and the
// control-plane API make, so both answer alike: Precheck (one
// AWS4-HMAC-SHA256 header, a known static key, the configured service and
// region, a signed X-Amz-Date within MaxSkew) needs no body, so callers
// refuse before buffering one; Verify checks the signature over the body
// that arrived. Refusals are *Error with AWS's codes and messages. The S3
// test servers use the lower-level ParseAuthorization and Verify.
//
// It does not re-implement the algorithm: Verify rebuilds the request as
// the client signed it (method, path, query, host, content length and the
// headers named in SignedHeaders) and signs it again with the
// aws-sdk-go-v2 v4 signer and the secret the server knows, then compares
// the two signatures in constant time. The SDK's signer is the reference,
// so what passes here is what the SDKs produce; the AWS SigV4 test suite
// (testdata/aws-sig-v4-test-suite, TestAWSSuite) checks it against AWS's
// own vectors.
//
// Known limits of verifying with the SDK signer: a client that signs one
// of the headers the SDK never signs (User-Agent, Expect,
// X-Amzn-Trace-Id, Transfer-Encoding, Authorization), that dates its
// request with Date instead of X-Amz-Date, or that signs
// "content-length: 0" fails verification; so does one that normalises
// the path (removes dot segments, collapses repeated slashes) before
// signing, as AWS's services other than S3 do: the path is signed as it
// arrived. serai's paths hold no dot segments or repeated slashes, and
// the AWS SDKs, the AWS CLI and curl --aws-sigv4 do none of the others.
//
// It verifies only; key files and error answers belong to its callers,
// and it never logs or returns a secret.
package sigv4

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"net/http"
	"net/textproto"
	"net/url"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
)

// Algorithm is the only signing algorithm accepted.
const Algorithm = "AWS4-HMAC-SHA256"

// TimeFormat is the layout of X-Amz-Date.
const TimeFormat = "20060102T150405Z"

// EmptyPayloadHash is the hex SHA-256 of no bytes.
const EmptyPayloadHash = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

// Authorization is a parsed "AWS4-HMAC-SHA256 Credential=..., SignedHeaders=...,
// Signature=..." header.
type Authorization struct {
	AccessKeyID string
	// Date, Region and Service are the credential scope
	// (AKID/Date/Region/Service/aws4_request).
	Date    string
	Region  string
	Service string
	// SignedHeaders is the list as sent: lower case, ';'-separated.
	SignedHeaders string
	// Signature is 64 lower-case hex digits.
	Signature string
}

// ErrNotSigV4 means the header uses another scheme than AWS4-HMAC-SHA256.
var ErrNotSigV4 = errors.New("authorization is not " + Algorithm)

// ParseError says what is wrong with an AWS4-HMAC-SHA256 header, without
// quoting it (it may carry a signature).
type ParseError struct{ Msg string }

func (e *ParseError) Error() string { return e.Msg }

// ParseAuthorization parses an Authorization header value. It returns
// ErrNotSigV4 for other schemes and a *ParseError for a malformed
// AWS4-HMAC-SHA256 header.
func ParseAuthorization(v string) (*Authorization, error) {
	a := new(Authorization)
	if err := parseAuthorization(v, a); err != nil {
		return nil, err
	}
	return a, nil
}

// parseAuthorization fills a; it cuts rather than splits, so parsing
// allocates nothing (it runs twice on every verified request).
func parseAuthorization(v string, a *Authorization) error {
	rest, ok := strings.CutPrefix(v, Algorithm+" ")
	if !ok {
		return ErrNotSigV4
	}
	var cred, signed, sig string
	var seenCred, seenSigned, seenSig bool
	for more := true; more; {
		var part string
		part, rest, more = strings.Cut(rest, ",")
		k, val, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok {
			return &ParseError{"Authorization header has a component that is not a key=value pair."}
		}
		var dup bool
		switch k {
		case "Credential":
			dup, seenCred, cred = seenCred, true, val
		case "SignedHeaders":
			dup, seenSigned, signed = seenSigned, true, val
		case "Signature":
			dup, seenSig, sig = seenSig, true, val
		default:
			return &ParseError{"Authorization header has an unknown component " + quoteKey(k) + "."}
		}
		if dup {
			return &ParseError{"Authorization header repeats the '" + k + "' parameter."}
		}
	}
	switch {
	case !seenCred:
		return &ParseError{"Authorization header requires 'Credential' parameter."}
	case !seenSigned:
		return &ParseError{"Authorization header requires 'SignedHeaders' parameter."}
	case !seenSig:
		return &ParseError{"Authorization header requires 'Signature' parameter."}
	}
	var scope [5]string
	n := 0
	for more := true; more; n++ {
		if n == len(scope) {
			n++ // six or more parts
			break
		}
		scope[n], cred, more = strings.Cut(cred, "/")
	}
	if n != 5 || scope[4] != "aws4_request" {
		return &ParseError{"Credential must have the form <access key ID>/<date>/<region>/<service>/aws4_request."}
	}
	for _, s := range scope[:4] {
		if s == "" {
			return &ParseError{"Credential must have the form <access key ID>/<date>/<region>/<service>/aws4_request."}
		}
	}
	if len(scope[1]) != 8 || !allDigits(scope[1]) {
		return &ParseError{"Credential scope date must be YYYYMMDD."}
	}
	if len(sig) != 64 || !lowerHex(sig) {
		return &ParseError{"Signature must be 64 lower-case hexadecimal digits."}
	}
	if signed == "" || hasUpper(signed) {
		return &ParseError{"SignedHeaders must be a non-empty list of lower-case header names."}
	}
	*a = Authorization{
		AccessKeyID: scope[0], Date: scope[1], Region: scope[2], Service: scope[3],
		SignedHeaders: signed, Signature: sig,
	}
	return nil
}

// SigningTime parses the request's X-Amz-Date.
func SigningTime(r *http.Request) (time.Time, error) {
	v := r.Header.Get("X-Amz-Date")
	if v == "" {
		return time.Time{}, errors.New("missing X-Amz-Date header")
	}
	t, err := time.Parse(TimeFormat, v)
	if err != nil {
		return time.Time{}, errors.New("X-Amz-Date must have the form YYYYMMDD'T'HHMMSS'Z'")
	}
	return t, nil
}

// PayloadHash is the hex SHA-256 of body, as signed.
func PayloadHash(body []byte) string {
	if len(body) == 0 {
		return EmptyPayloadHash
	}
	sum := sha256.Sum256(body)
	return hex.EncodeToString(sum[:])
}

// Result says why Verify refused a signature; it is for logs and never
// carries a signature or secret.
type Result int

const (
	// Match: the signatures are equal.
	Match Result = iota
	// Mismatch: the signatures differ (wrong secret, altered request).
	Mismatch
	// HeadersDiffer: the client signed headers that are absent, or that
	// the SDK signer does not sign, so the lists differ.
	HeadersDiffer
)

func (r Result) String() string {
	return [...]string{"match", "signature mismatch", "signed headers differ"}[r]
}

// Verify signs the request again with creds (the secret the server holds
// for a.AccessKeyID, and the session token the client sent, if any),
// payloadHash and signedAt (from X-Amz-Date), using signer, and compares
// the result with a.Signature. r is not modified. The credential scope
// comes from a; checking it (service, region, date) is the caller's job.
//
// The canonical host is r.Host exactly as received, so a client that
// signed for one host name and connected through another (a proxy that
// rewrites Host) fails, as with AWS. The canonical path is the path as it
// arrived on the wire (r.RequestURI), URI-encoded once more, as AWS's
// services other than S3 do and the SDKs sign: so "/ሴ" and "/%E1%88%B4",
// which Go decodes alike, are different requests to the signature.
// Dot segments and repeated slashes are kept as sent: like the Go SDK,
// and unlike AWS's other services, the path is not normalised.
func Verify(ctx context.Context, signer *v4.Signer, r *http.Request, a *Authorization, creds aws.Credentials, payloadHash string, signedAt time.Time) (Result, error) {
	// No URL scheme, so the signer strips no "default" port from the host:
	// the canonical host is the Host header as it arrived.
	u := &url.URL{Host: r.Host, Path: r.URL.Path, RawPath: r.URL.RawPath, RawQuery: r.URL.RawQuery}
	if p := wirePath(r.RequestURI); p != "" && p != u.EscapedPath() {
		// The signer takes the path of an Opaque "//host/path" as already
		// escaped (and escapes it once more, as AWS's services do); it
		// cuts the leading "//" and starts the path at the next '/'.
		u.Opaque = "//" + p
	}
	again := &http.Request{Method: r.Method, URL: u, Host: r.Host, Header: make(http.Header, strings.Count(a.SignedHeaders, ";")+1)}
	for rest, more := a.SignedHeaders, true; more; {
		var h string
		h, rest, more = strings.Cut(rest, ";")
		switch h {
		case "host":
			// From again.Host.
		case "content-length":
			// Go's server keeps the length in r.ContentLength; the signer
			// takes it from the request, not the header map.
			again.ContentLength = r.ContentLength
		default:
			k := textproto.CanonicalMIMEHeaderKey(h)
			if v, ok := r.Header[k]; ok {
				again.Header[k] = v
			}
		}
	}
	creds.AccessKeyID = a.AccessKeyID
	if err := signer.SignHTTP(ctx, creds, again, payloadHash, a.Service, a.Region, signedAt); err != nil {
		return Mismatch, err
	}
	var got Authorization
	if v := again.Header["Authorization"]; len(v) != 1 {
		return Mismatch, errors.New("the signer wrote no Authorization header")
	} else if err := parseAuthorization(v[0], &got); err != nil {
		return Mismatch, err
	}
	if got.SignedHeaders != a.SignedHeaders {
		return HeadersDiffer, nil
	}
	if !hmac.Equal([]byte(got.Signature), []byte(a.Signature)) {
		return Mismatch, nil
	}
	return Match, nil
}

// wirePath is the path of an origin-form request target as the client
// sent it, or "" when there is none (a request built in code, an
// absolute-form target, "*").
func wirePath(requestURI string) string {
	if requestURI == "" || requestURI[0] != '/' {
		return ""
	}
	if i := strings.IndexByte(requestURI, '?'); i >= 0 {
		return requestURI[:i]
	}
	return requestURI
}

func hasUpper(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c >= 'A' && c <= 'Z' || c >= 0x80 {
			return true
		}
	}
	return false
}

func allDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

func lowerHex(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// quoteKey quotes a component name for a message, cut short and without
// control characters.
func quoteKey(k string) string {
	if len(k) > 32 {
		k = k[:32]
	}
	b := []byte(k)
	for i, c := range b {
		if c < ' ' || c >= 0x7f || c == '\'' {
			b[i] = '?'
		}
	}
	return "'" + string(b) + "'"
}
