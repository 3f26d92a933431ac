// Package client is a Go client for serai's control-plane API: SageMaker's
// own hosting protocol (POST / with X-Amz-Target: SageMaker.<Operation>
// and application/x-amz-json-1.1 bodies), with the request and answer
// shapes of server/smapi.
//
//	c, err := client.New(client.Config{Addr: "http://127.0.0.1:8090"})
//	out, err := c.DescribeEndpoint(ctx, &smapi.DescribeEndpointInput{EndpointName: "churn"})
//	if client.IsNotFound(err) { ... }
//	var e *client.Error
//	if errors.As(err, &e) { ... e.Type, e.Message ... }
//
// Error answers become *Error with SageMaker's error code ("__type") and
// message. Read operations (Describe*, List*, ListTags) are retried with
// back-off when the server answers 503 or cannot be reached; nothing that
// writes is ever retried, since a write whose answer was lost may have
// happened. With Credentials set, every request is signed with AWS
// Signature Version 4 for service "sagemaker" (serai server
// --sigv4-keys).
//
// It speaks HTTP to one serai server and nothing else: no Nomad, Consul or
// Vault, and no interpretation of the answers beyond decoding them.
package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	"github.com/aws/aws-sdk-go-v2/credentials"

	"github.com/seraihq/serai/internal/sigv4"
	"github.com/seraihq/serai/internal/tlsreload"
	"github.com/seraihq/serai/server/smapi"
)

// DefaultAddr is where `serai server` listens by default.
const DefaultAddr = "http://127.0.0.1:8090"

// Environment variables FromEnv reads.
const (
	EnvAddr            = "SERAI_ADDR"
	EnvAccessKeyID     = "SERAI_ACCESS_KEY_ID"
	EnvSecretAccessKey = "SERAI_SECRET_ACCESS_KEY"
	EnvRegion          = "SERAI_REGION"
	// EnvCACert is a PEM CA file trusted for an https:// SERAI_ADDR
	// instead of the system's roots.
	EnvCACert = "SERAI_CA_CERT"
)

// SigV4Service is the service requests are signed for.
const SigV4Service = "sagemaker"

const (
	targetPrefix     = "SageMaker."
	contentType      = "application/x-amz-json-1.1"
	maxResponseBytes = 16 << 20
)

// Config configures a Client.
type Config struct {
	// Addr is the server's base URL (default DefaultAddr). A bare
	// host:port means http.
	Addr string
	// HTTPClient sends the requests (default: a client with a 60 s
	// timeout).
	HTTPClient *http.Client
	// Credentials, when set, sign every request with SigV4 for service
	// "sagemaker" in Region. Nil sends unsigned requests.
	Credentials aws.CredentialsProvider
	// Region is the region of the signature's scope; it must be the
	// server's --region (default "us-east-1").
	Region string
	// ReadAttempts is how many times a read is tried when the server
	// answers 503 or cannot be reached (default 5).
	ReadAttempts int
	// Backoff is the first delay between read attempts; it doubles up to
	// MaxBackoff (defaults 200 ms, 3 s).
	Backoff, MaxBackoff time.Duration
}

// DefaultConfig holds the defaults.
func DefaultConfig() Config {
	return Config{Addr: DefaultAddr, Region: "us-east-1", ReadAttempts: 5, Backoff: 200 * time.Millisecond, MaxBackoff: 3 * time.Second}
}

func (c Config) withDefaults() Config {
	d := DefaultConfig()
	if c.Addr == "" {
		c.Addr = d.Addr
	}
	if !strings.Contains(c.Addr, "://") {
		c.Addr = "http://" + c.Addr
	}
	c.Addr = strings.TrimRight(c.Addr, "/")
	if c.Region == "" {
		c.Region = d.Region
	}
	if c.ReadAttempts <= 0 {
		c.ReadAttempts = d.ReadAttempts
	}
	if c.Backoff <= 0 {
		c.Backoff = d.Backoff
	}
	if c.MaxBackoff <= 0 {
		c.MaxBackoff = d.MaxBackoff
	}
	if c.HTTPClient == nil {
		c.HTTPClient = &http.Client{Timeout: 60 * time.Second}
	}
	return c
}

// Validate reports what is wrong with the configuration.
func (c Config) Validate() error {
	c = c.withDefaults()
	u, err := url.Parse(c.Addr)
	if err != nil {
		return fmt.Errorf("client: address %q: %w", c.Addr, err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("client: address %q must be http(s)://host:port", c.Addr)
	}
	return nil
}

// FromEnv returns the configuration the environment gives: SERAI_ADDR,
// SERAI_CA_CERT (an HTTPClient trusting that CA), and SERAI_ACCESS_KEY_ID /
// SERAI_SECRET_ACCESS_KEY / SERAI_REGION for SigV4. It deliberately does not read AWS_* keys: those are for AWS, and
// serai should not sign with them by accident.
func FromEnv() (Config, error) {
	c := DefaultConfig()
	if a := os.Getenv(EnvAddr); a != "" {
		c.Addr = a
	}
	if r := os.Getenv(EnvRegion); r != "" {
		c.Region = r
	}
	if f := os.Getenv(EnvCACert); f != "" {
		hc, err := HTTPClientTrusting(f)
		if err != nil {
			return c, fmt.Errorf("client: %s: %w", EnvCACert, err)
		}
		c.HTTPClient = hc
	}
	id, secret := os.Getenv(EnvAccessKeyID), os.Getenv(EnvSecretAccessKey)
	switch {
	case id != "" && secret != "":
		c.Credentials = credentials.NewStaticCredentialsProvider(id, secret, "")
	case id != "" || secret != "":
		return c, fmt.Errorf("client: set both %s and %s, or neither", EnvAccessKeyID, EnvSecretAccessKey)
	}
	return c, c.Validate()
}

// HTTPClientTrusting is the default HTTPClient, trusting the CA
// certificates of the PEM file caFile instead of the system's roots.
func HTTPClientTrusting(caFile string) (*http.Client, error) {
	tc, err := tlsreload.ClientConfig(caFile)
	if err != nil {
		return nil, err
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = tc
	return &http.Client{Timeout: 60 * time.Second, Transport: tr}, nil
}

// Client calls one serai server. It is safe for concurrent use.
type Client struct {
	cfg    Config
	signer *v4.Signer
}

// New returns a Client.
func New(cfg Config) (*Client, error) {
	cfg = cfg.withDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	c := &Client{cfg: cfg}
	if cfg.Credentials != nil {
		if _, ok := cfg.Credentials.(*aws.CredentialsCache); !ok {
			cfg.Credentials = aws.NewCredentialsCache(cfg.Credentials)
			c.cfg = cfg
		}
		c.signer = v4.NewSigner()
	}
	return c, nil
}

// Addr is the server's base URL.
func (c *Client) Addr() string { return c.cfg.Addr }

// Error is an error answer: SageMaker's error code and message.
type Error struct {
	Operation  string
	StatusCode int
	// Type is the error code ("ValidationException", "ResourceInUse",
	// "ServiceUnavailable", ...), without any namespace prefix.
	Type    string
	Message string
}

func (e *Error) Error() string {
	return fmt.Sprintf("%s: %s: %s", e.Operation, e.Type, e.Message)
}

// IsNotFound tells whether err says the named resource does not exist:
// SageMaker answers ValidationException "Could not find ..." (which the
// SDK waiters and Terraform match), or ResourceNotFound.
func IsNotFound(err error) bool {
	var e *Error
	if !errors.As(err, &e) {
		return false
	}
	return e.Type == smapi.ErrResourceNotFound ||
		(e.Type == smapi.ErrValidation && strings.HasPrefix(e.Message, "Could not find"))
}

// retryable tells whether a read may be tried again.
func retryable(err error) bool {
	var e *Error
	if errors.As(err, &e) {
		return e.StatusCode == http.StatusServiceUnavailable
	}
	var te *transportError
	return errors.As(err, &te)
}

// transportError is a request that got no answer.
type transportError struct{ err error }

func (e *transportError) Error() string { return e.err.Error() }
func (e *transportError) Unwrap() error { return e.err }

// Call sends operation op with body in and decodes the answer into out
// (which may be nil). read says whether op only reads, and so may be
// retried.
func (c *Client) Call(ctx context.Context, op string, in, out any, read bool) error {
	body, err := json.Marshal(in)
	if err != nil {
		return fmt.Errorf("%s: encoding request: %w", op, err)
	}
	attempts := 1
	if read {
		attempts = c.cfg.ReadAttempts
	}
	delay := c.cfg.Backoff
	for i := 1; ; i++ {
		err = c.once(ctx, op, body, out)
		if err == nil || i >= attempts || !retryable(err) || ctx.Err() != nil {
			break
		}
		// Full jitter, so many CLIs do not come back at once.
		d := delay/2 + rand.N(delay/2+1)
		t := time.NewTimer(d)
		select {
		case <-ctx.Done():
			t.Stop()
			return err
		case <-t.C:
		}
		delay = min(2*delay, c.cfg.MaxBackoff)
	}
	var te *transportError
	if errors.As(err, &te) {
		return fmt.Errorf("%s: serai server at %s: %w", op, c.cfg.Addr, te.err)
	}
	return err
}

func (c *Client) once(ctx context.Context, op string, body []byte, out any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.cfg.Addr+"/", bytes.NewReader(body))
	if err != nil {
		return err
	}
	target := targetPrefix + op
	if operatorOps[op] {
		target = smapi.OperatorTargetPrefix + op
	}
	req.Header.Set("X-Amz-Target", target)
	req.Header.Set("Content-Type", contentType)
	if c.signer != nil {
		creds, err := c.cfg.Credentials.Retrieve(ctx)
		if err != nil {
			return fmt.Errorf("%s: retrieving credentials: %w", op, err)
		}
		if err := c.signer.SignHTTP(ctx, creds, req, sigv4.PayloadHash(body), SigV4Service, c.cfg.Region, time.Now()); err != nil {
			return fmt.Errorf("%s: signing: %w", op, err)
		}
	}
	resp, err := c.cfg.HTTPClient.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("%s: %w", op, ctx.Err())
		}
		return &transportError{err}
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseBytes))
	if err != nil {
		return &transportError{fmt.Errorf("reading the answer: %w", err)}
	}
	if resp.StatusCode != http.StatusOK {
		return decodeError(op, resp, b)
	}
	if out == nil || len(bytes.TrimSpace(b)) == 0 {
		return nil
	}
	if err := json.Unmarshal(b, out); err != nil {
		return fmt.Errorf("%s: decoding the answer: %w", op, err)
	}
	return nil
}

// decodeError reads an AWS JSON 1.1 error: {"__type": ..., "message": ...}
// (some services write "Message"), the type possibly namespaced
// ("com.amazonaws.sagemaker#ValidationException"), or only the
// X-Amzn-ErrorType header.
func decodeError(op string, resp *http.Response, b []byte) *Error {
	e := &Error{Operation: op, StatusCode: resp.StatusCode}
	var body struct {
		Type     string `json:"__type"`
		Message  string `json:"message"`
		MessageU string `json:"Message"`
	}
	if json.Unmarshal(b, &body) == nil {
		e.Type, e.Message = body.Type, body.Message
		if e.Message == "" {
			e.Message = body.MessageU
		}
	}
	if e.Type == "" {
		e.Type = resp.Header.Get("X-Amzn-ErrorType")
	}
	if i := strings.LastIndex(e.Type, "#"); i >= 0 {
		e.Type = e.Type[i+1:]
	}
	if i := strings.Index(e.Type, ":"); i >= 0 {
		e.Type = e.Type[:i]
	}
	if e.Type == "" {
		e.Type = strings.ReplaceAll(http.StatusText(resp.StatusCode), " ", "")
		if e.Type == "" {
			e.Type = fmt.Sprintf("HTTP%d", resp.StatusCode)
		}
	}
	if e.Message == "" {
		e.Message = strings.TrimSpace(string(b))
		if len(e.Message) > 200 {
			e.Message = e.Message[:200] + "…"
		}
		if e.Message == "" {
			e.Message = resp.Status
		}
	}
	return e
}
