// Package client invokes serai endpoints through a serai router, for Go
// services that live in the same Consul cluster.
//
// It finds routers as the healthy instances of Consul service serai-router
// (or uses fixed addresses), sends InvokeEndpoint requests with the
// SageMaker runtime headers, retries once on another router when a
// connection cannot be made, and turns error answers into typed errors:
//
//	c, err := client.New(client.Config{Consul: consulClient})
//	out, err := c.Invoke(ctx, &client.Input{EndpointName: "churn", ContentType: "application/json", Body: payload})
//	var me *client.ModelError
//	if errors.As(err, &me) { ... me.OriginalStatusCode, me.OriginalMessage ... }
//
// InvokeStream calls InvokeEndpointWithResponseStream and hands back the
// model's parts as they arrive (stream.go); Input.SessionID carries
// SageMaker's stateful sessions.
//
// For routers that require AWS Signature Version 4 (serai router
// --sigv4-keys), set Credentials: every request is then signed for service
// "sagemaker" with the aws-sdk-go-v2 signer, as the AWS SDK would sign it:
//
//	c, err := client.New(client.Config{Consul: consulClient,
//		Credentials: credentials.NewStaticCredentialsProvider(akid, secret, "")})
//
// A Client is safe for concurrent use and keeps connections alive between
// calls; it starts no goroutines. It only reads Consul's catalog of
// healthy routers and never talks to model instances directly.
package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	consulapi "github.com/hashicorp/consul/api"

	"github.com/seraihq/serai/contract"
	"github.com/seraihq/serai/internal/sigv4"
)

// DefaultService is the Consul service routers register as.
const DefaultService = "serai-router"

// maxResponseBytes bounds what Invoke reads from a router: SageMaker's
// response limit plus room for framing.
const maxResponseBytes = 8 << 20

// Config configures a Client. Either Consul or Addresses is required.
type Config struct {
	// Consul finds routers: passing instances of Service.
	Consul  *consulapi.Client
	Service string // default "serai-router"
	// Addresses are fixed router addresses (host:port), used instead of
	// Consul.
	Addresses []string
	// Scheme is "http" or "https" for routers whose registration does not
	// say (default "http"). Routers registered with TLS carry meta
	// scheme=https.
	Scheme string
	// HTTPClient sends the requests; its Timeout, if any, applies on top
	// of Timeout. Default: keep-alive transport without compression.
	HTTPClient *http.Client
	// Timeout bounds one attempt (default 70 s: the router's 60 s model
	// timeout plus margin, so the router's ModelError arrives first).
	Timeout time.Duration
	// RefreshInterval is how long one Consul lookup is reused (default
	// 10 s). A connection failure forces a fresh lookup.
	RefreshInterval time.Duration

	// Credentials, when set, sign every request with AWS Signature
	// Version 4 for service "sagemaker" (routers run with --sigv4-keys
	// require it). Wrapped in an aws.CredentialsCache unless it is one.
	// Nil sends unsigned requests.
	Credentials aws.CredentialsProvider
	// Region is the region in the signature's scope (default "us-east-1";
	// the router accepts any unless it is configured with one).
	Region string
}

// Client invokes endpoints through serai routers.
type Client struct {
	cfg    Config
	http   *http.Client
	signer *v4.Signer // nil without Credentials

	mu        sync.Mutex
	routers   []string // base URLs
	fetchedAt time.Time
}

// New returns a Client.
func New(cfg Config) (*Client, error) {
	if cfg.Consul == nil && len(cfg.Addresses) == 0 {
		return nil, errors.New("client: Consul or Addresses is required")
	}
	if cfg.Service == "" {
		cfg.Service = DefaultService
	}
	if cfg.Scheme == "" {
		cfg.Scheme = "http"
	}
	if cfg.Scheme != "http" && cfg.Scheme != "https" {
		return nil, fmt.Errorf("client: scheme %q is not http or https", cfg.Scheme)
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 70 * time.Second
	}
	if cfg.RefreshInterval <= 0 {
		cfg.RefreshInterval = 10 * time.Second
	}
	hc := cfg.HTTPClient
	if hc == nil {
		hc = &http.Client{Transport: &http.Transport{
			Proxy:               nil,
			DialContext:         (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
			MaxIdleConns:        256,
			MaxIdleConnsPerHost: 64,
			IdleConnTimeout:     90 * time.Second,
			DisableCompression:  true,
			ForceAttemptHTTP2:   true,
			TLSHandshakeTimeout: 10 * time.Second,
		}}
	}
	c := &Client{cfg: cfg, http: hc}
	if cfg.Credentials != nil {
		if _, ok := cfg.Credentials.(*aws.CredentialsCache); !ok {
			c.cfg.Credentials = aws.NewCredentialsCache(cfg.Credentials)
		}
		if c.cfg.Region == "" {
			c.cfg.Region = "us-east-1"
		}
		c.signer = v4.NewSigner()
	}
	for _, a := range cfg.Addresses {
		c.routers = append(c.routers, cfg.Scheme+"://"+a)
	}
	return c, nil
}

// Close releases idle connections.
func (c *Client) Close() { c.http.CloseIdleConnections() }

// Input is one InvokeEndpoint call.
type Input struct {
	EndpointName     string
	Body             []byte
	ContentType      string
	Accept           string
	CustomAttributes string
	TargetVariant    string
	InferenceID      string
	// SessionID is "NEW_SESSION" to open a stateful session (Invoke only),
	// or the ID of an open one.
	SessionID string
}

// Output is the model's answer.
type Output struct {
	Body                     []byte
	ContentType              string
	InvokedProductionVariant string
	CustomAttributes         string
	// NewSessionID is the opened session's ID and expiry
	// ("<id>; Expires=<time>"); ClosedSessionID the ID of a session the
	// request closed.
	NewSessionID    string
	ClosedSessionID string
}

// Invoke calls an endpoint. Errors answered by the router are
// *ValidationError, *ModelError, *ServiceUnavailableError or *APIError;
// ErrNoRouter means no router could be found or reached.
func (c *Client) Invoke(ctx context.Context, in *Input) (*Output, error) {
	if in.EndpointName == "" {
		return nil, errors.New("client: EndpointName is required")
	}
	return withRouter(ctx, c, func(base string) (*Output, error) { return c.invokeOnce(ctx, base, in) })
}

// withRouter runs call against a random router; when the request never
// left (a connection error), it looks again and tries one other router.
func withRouter[T any](ctx context.Context, c *Client, call func(base string) (*T, error)) (*T, error) {
	routers, err := c.lookup(ctx, false)
	if err != nil {
		return nil, err
	}
	base := routers[rand.IntN(len(routers))]
	out, err := call(base)
	if err == nil || !isConnectError(err) || ctx.Err() != nil {
		return out, err
	}
	routers, lerr := c.lookup(ctx, true)
	var others []string
	for _, r := range routers {
		if r != base {
			others = append(others, r)
		}
	}
	if lerr != nil || len(others) == 0 {
		return nil, fmt.Errorf("%w: %w", ErrNoRouter, err)
	}
	out, err = call(others[rand.IntN(len(others))])
	if err != nil && isConnectError(err) {
		return nil, fmt.Errorf("%w: %w", ErrNoRouter, err)
	}
	return out, err
}

func (c *Client) invokeOnce(ctx context.Context, base string, in *Input) (*Output, error) {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
	defer cancel()
	req, err := c.newRequest(ctx, base, "/invocations", in)
	if err != nil {
		return nil, err
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseBytes))
	if err != nil {
		return nil, fmt.Errorf("client: reading response: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, decodeError(resp, body)
	}
	return &Output{
		Body:                     body,
		ContentType:              resp.Header.Get("Content-Type"),
		InvokedProductionVariant: resp.Header.Get("X-Amzn-Invoked-Production-Variant"),
		CustomAttributes:         resp.Header.Get("X-Amzn-SageMaker-Custom-Attributes"),
		NewSessionID:             resp.Header.Get("X-Amzn-SageMaker-New-Session-Id"),
		ClosedSessionID:          resp.Header.Get("X-Amzn-SageMaker-Closed-Session-Id"),
	}, nil
}

// newRequest builds and, with Credentials, signs one request to a router;
// op is "/invocations" or "/invocations-response-stream".
func (c *Client) newRequest(ctx context.Context, base, op string, in *Input) (*http.Request, error) {
	u := base + "/endpoints/" + url.PathEscape(in.EndpointName) + op
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, bytes.NewReader(in.Body))
	if err != nil {
		return nil, err
	}
	h := req.Header
	if in.ContentType != "" {
		h.Set("Content-Type", in.ContentType)
	}
	if in.Accept != "" {
		if op == "/invocations" {
			h.Set("Accept", in.Accept)
		} else {
			h.Set("X-Amzn-SageMaker-Accept", in.Accept)
		}
	}
	if in.SessionID != "" {
		h.Set("X-Amzn-SageMaker-Session-Id", in.SessionID)
	}
	if in.CustomAttributes != "" {
		h.Set("X-Amzn-SageMaker-Custom-Attributes", in.CustomAttributes)
	}
	if in.TargetVariant != "" {
		h.Set("X-Amzn-SageMaker-Target-Variant", in.TargetVariant)
	}
	if in.InferenceID != "" {
		h.Set("X-Amzn-SageMaker-Inference-Id", in.InferenceID)
	}
	if c.signer != nil {
		// Signed per attempt: the host is part of the signature.
		creds, err := c.cfg.Credentials.Retrieve(ctx)
		if err != nil {
			return nil, fmt.Errorf("client: retrieving credentials: %w", err)
		}
		if err := c.signer.SignHTTP(ctx, creds, req, sigv4.PayloadHash(in.Body), "sagemaker", c.cfg.Region, time.Now()); err != nil {
			return nil, fmt.Errorf("client: signing: %w", err)
		}
	}
	return req, nil
}

// lookup returns router base URLs, from the cache unless it is stale or
// force is set. A failed refresh falls back to the cached list.
func (c *Client) lookup(ctx context.Context, force bool) ([]string, error) {
	c.mu.Lock()
	cached := c.routers
	fresh := time.Since(c.fetchedAt) < c.cfg.RefreshInterval
	c.mu.Unlock()
	if c.cfg.Consul == nil {
		return cached, nil
	}
	if len(cached) > 0 && fresh && !force {
		return cached, nil
	}
	q := (&consulapi.QueryOptions{AllowStale: true}).WithContext(ctx)
	entries, _, err := c.cfg.Consul.Health().Service(c.cfg.Service, "", true, q)
	if err != nil {
		if len(cached) > 0 {
			return cached, nil
		}
		return nil, fmt.Errorf("%w: looking up %s in Consul: %w", ErrNoRouter, c.cfg.Service, err)
	}
	var routers []string
	for _, e := range entries {
		if e.Service == nil || e.Service.Port <= 0 {
			continue
		}
		host := e.Service.Address
		if host == "" && e.Node != nil {
			host = e.Node.Address
		}
		if host == "" {
			continue
		}
		scheme := c.cfg.Scheme
		if s := e.Service.Meta[contract.RouterMetaScheme]; s == "http" || s == "https" {
			scheme = s
		}
		routers = append(routers, scheme+"://"+net.JoinHostPort(host, strconv.Itoa(e.Service.Port)))
	}
	if len(routers) == 0 {
		return nil, fmt.Errorf("%w: Consul has no passing instance of %s", ErrNoRouter, c.cfg.Service)
	}
	c.mu.Lock()
	c.routers, c.fetchedAt = routers, time.Now()
	c.mu.Unlock()
	return routers, nil
}

// isConnectError reports a failure to connect: the request was not sent,
// so another router may be tried.
func isConnectError(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial"
}

// ErrNoRouter means no router could be found or connected to.
var ErrNoRouter = errors.New("client: no reachable serai router")

// ValidationError is a request the router refused (400, 413): unknown
// endpoint or variant, body too large, bad headers.
type ValidationError struct {
	StatusCode int
	Message    string
}

func (e *ValidationError) Error() string {
	return fmt.Sprintf("ValidationError (%d): %s", e.StatusCode, e.Message)
}

// ModelError is an error answer, timeout or broken connection from the
// model (HTTP 424). OriginalStatusCode is 0 when the model gave no answer.
type ModelError struct {
	Message            string
	OriginalStatusCode int
	OriginalMessage    string
}

func (e *ModelError) Error() string { return "ModelError: " + e.Message }

// ServiceUnavailableError means the endpoint had no healthy instance or the
// router was overloaded (HTTP 503); retrying later may succeed.
type ServiceUnavailableError struct {
	Message string
}

func (e *ServiceUnavailableError) Error() string { return "ServiceUnavailable: " + e.Message }

// APIError is any other error answer, among them authentication
// failures (403): Code is then MissingAuthenticationTokenException,
// UnrecognizedClientException, InvalidSignatureException or
// IncompleteSignatureException.
type APIError struct {
	StatusCode int
	Code       string
	Message    string
}

func (e *APIError) Error() string {
	return fmt.Sprintf("%s (%d): %s", e.Code, e.StatusCode, e.Message)
}

func decodeError(resp *http.Response, body []byte) error {
	var b struct {
		Type               string `json:"__type"`
		Message            string `json:"Message"`
		LowerMessage       string `json:"message"`
		OriginalStatusCode int    `json:"OriginalStatusCode"`
		OriginalMessage    string `json:"OriginalMessage"`
	}
	_ = json.Unmarshal(body, &b)
	code := resp.Header.Get("X-Amzn-ErrorType")
	if code == "" {
		code = b.Type
	}
	for i := 0; i < len(code); i++ {
		if code[i] == ':' {
			code = code[:i]
			break
		}
	}
	msg := b.Message
	if msg == "" {
		msg = b.LowerMessage
	}
	if msg == "" {
		msg = string(bytes.TrimSpace(body))
		if len(msg) > 512 {
			msg = msg[:512]
		}
	}
	switch code {
	case "ValidationError":
		return &ValidationError{StatusCode: resp.StatusCode, Message: msg}
	case "ModelError":
		return &ModelError{Message: msg, OriginalStatusCode: b.OriginalStatusCode, OriginalMessage: b.OriginalMessage}
	case "ServiceUnavailable":
		return &ServiceUnavailableError{Message: msg}
	}
	if code == "" {
		code = http.StatusText(resp.StatusCode)
	}
	return &APIError{StatusCode: resp.StatusCode, Code: code, Message: msg}
}
