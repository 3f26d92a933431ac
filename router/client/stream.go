package client

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws/protocol/eventstream"
)

// Stream is an InvokeEndpointWithResponseStream answer: the model's parts
// in order, as the router relays them.
//
//	s, err := c.InvokeStream(ctx, &client.Input{EndpointName: "gen", ContentType: "text/plain", Body: prompt})
//	defer s.Close()
//	for {
//		part, err := s.Next()
//		if err == io.EOF { break }
//		var mse *client.ModelStreamError
//		if errors.As(err, &mse) { ... mse.ErrorCode ... }
//		os.Stdout.Write(part)
//	}
type Stream struct {
	ContentType              string // the model's, from X-Amzn-SageMaker-Content-Type
	InvokedProductionVariant string
	CustomAttributes         string

	body   io.ReadCloser
	br     *bufio.Reader
	dec    *eventstream.Decoder
	buf    []byte
	cancel context.CancelFunc
	err    error
}

// ModelStreamError is a failure of the model after its stream began;
// ErrorCode is SageMaker's: StreamBroken or ModelInvocationTimeExceeded.
type ModelStreamError struct {
	ErrorCode string
	Message   string
}

func (e *ModelStreamError) Error() string {
	return "ModelStreamError " + e.ErrorCode + ": " + e.Message
}

// InvokeStream calls an endpoint with InvokeEndpointWithResponseStream.
// Errors before the stream begins are those of Invoke; the stream itself is
// bounded only by ctx (Config.Timeout bounds the wait for its start).
func (c *Client) InvokeStream(ctx context.Context, in *Input) (*Stream, error) {
	if in.EndpointName == "" {
		return nil, errors.New("client: EndpointName is required")
	}
	return withRouter(ctx, c, func(base string) (*Stream, error) { return c.streamOnce(ctx, base, in) })
}

func (c *Client) streamOnce(ctx context.Context, base string, in *Input) (*Stream, error) {
	ctx, cancel := context.WithCancel(ctx)
	req, err := c.newRequest(ctx, base, "/invocations-response-stream", in)
	if err != nil {
		cancel()
		return nil, err
	}
	start := time.AfterFunc(c.cfg.Timeout, cancel)
	resp, err := c.http.Do(req)
	start.Stop()
	if err != nil {
		cancel()
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		defer cancel()
		defer resp.Body.Close()
		body, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseBytes))
		if err != nil {
			return nil, fmt.Errorf("client: reading response: %w", err)
		}
		return nil, decodeError(resp, body)
	}
	return &Stream{
		ContentType:              resp.Header.Get("X-Amzn-SageMaker-Content-Type"),
		InvokedProductionVariant: resp.Header.Get("X-Amzn-Invoked-Production-Variant"),
		CustomAttributes:         resp.Header.Get("X-Amzn-SageMaker-Custom-Attributes"),
		body:                     resp.Body,
		br:                       bufio.NewReader(resp.Body),
		dec:                      eventstream.NewDecoder(),
		cancel:                   cancel,
	}, nil
}

// Next returns the next part as soon as it arrives; the slice is valid
// until the next call. It returns io.EOF after the last part, and
// *ModelStreamError when the model failed mid-stream.
func (s *Stream) Next() ([]byte, error) {
	if s.err != nil {
		return nil, s.err
	}
	if _, err := s.br.Peek(1); err == io.EOF {
		s.err = io.EOF
		return nil, s.err
	}
	msg, err := s.dec.Decode(s.br, s.buf[:0])
	if err != nil {
		s.err = fmt.Errorf("client: reading the event stream: %w", err)
		return nil, s.err
	}
	s.buf = msg.Payload[:0]
	str := func(name string) string {
		if v := msg.Headers.Get(name); v != nil {
			return v.String()
		}
		return ""
	}
	switch str(":message-type") {
	case "event":
		if t := str(":event-type"); t != "PayloadPart" {
			return s.Next() // unknown events are skipped, as the SDK does
		}
		return msg.Payload, nil
	case "exception":
		var p struct{ Message, ErrorCode string }
		json.Unmarshal(msg.Payload, &p)
		if str(":exception-type") == "ModelStreamError" {
			s.err = &ModelStreamError{ErrorCode: p.ErrorCode, Message: p.Message}
		} else {
			s.err = &APIError{StatusCode: http.StatusOK, Code: str(":exception-type"), Message: p.Message}
		}
		return nil, s.err
	default:
		s.err = fmt.Errorf("client: unexpected event-stream message type %q", str(":message-type"))
		return nil, s.err
	}
}

// Close ends the stream; a stream still running is cancelled, which stops
// the model's generation.
func (s *Stream) Close() error {
	s.cancel()
	return s.body.Close()
}
