package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"unicode/utf8"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/sagemakerruntime"
	"github.com/aws/aws-sdk-go-v2/service/sagemakerruntime/types"
	"github.com/aws/smithy-go"
	"github.com/urfave/cli/v2"
)

// invokeCommand calls an endpoint through a router with the AWS SDK's
// SageMaker Runtime client, exactly as an application would: InvokeEndpoint,
// or InvokeEndpointWithResponseStream with --stream.
func invokeCommand() *cli.Command {
	return &cli.Command{
		Name:      "invoke",
		Usage:     "invoke an endpoint through a serai router (InvokeEndpoint, or InvokeEndpointWithResponseStream with --stream)",
		ArgsUsage: "ENDPOINT",
		Description: "Sends the body to the endpoint with the AWS SDK SageMaker Runtime client. The answer's body goes to stdout\n" +
			"(with --stream, each PayloadPart as it arrives); a new or closed session ID goes to stderr. With --output json,\n" +
			"stdout gets one JSON object (with --stream, one per event). Requests are signed (SigV4) when AWS_ACCESS_KEY_ID\n" +
			"and AWS_SECRET_ACCESS_KEY are set, and sent unsigned otherwise.",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "body", Usage: "`FILE` holding the request body, or - for stdin"},
			&cli.StringFlag{Name: "content-type", Usage: "MIME type of the body"},
			&cli.StringFlag{Name: "accept", Usage: "MIME type wanted for the answer"},
			&cli.StringFlag{Name: "target-variant", Usage: "production variant to send the request to"},
			&cli.StringFlag{Name: "custom-attributes", Usage: "opaque value passed to the model"},
			&cli.StringFlag{Name: "inference-id", Usage: "identifier of this inference"},
			&cli.StringFlag{Name: "session-id", Usage: "NEW_SESSION to open a stateful session, or the ID of an open one"},
			&cli.BoolFlag{Name: "stream", Usage: "InvokeEndpointWithResponseStream: print each part as it arrives"},
			&cli.StringFlag{Name: "router", EnvVars: []string{"SERAI_ROUTER_ADDR"}, Value: "http://127.0.0.1:8081", Usage: "router `URL` (http:// or https://)"},
			caCertFlag(),
			&cli.StringFlag{Name: "region", Value: "us-east-1", Usage: "region to sign requests for"},
			&cli.StringFlag{Name: "output", Usage: "json: print the answer (or each event) as JSON"},
		},
		// ENDPOINT comes first and flags after it, which urfave/cli's own
		// parsing (flags first) refuses: invokeArgs parses them instead.
		SkipFlagParsing: true,
		Action:          runInvoke,
	}
}

// invokeArgs parses flags placed before or after the endpoint argument
// with the command's own flag definitions.
func invokeArgs(c *cli.Context) (*cli.Context, error) {
	set := flag.NewFlagSet("invoke", flag.ContinueOnError)
	set.SetOutput(io.Discard)
	for _, f := range c.Command.Flags {
		if err := f.Apply(set); err != nil {
			return nil, err
		}
	}
	args := c.Args().Slice()
	var pos []string
	for {
		if err := set.Parse(args); err != nil {
			return nil, err
		}
		if set.NArg() == 0 {
			break
		}
		pos = append(pos, set.Arg(0))
		args = set.Args()[1:]
	}
	if err := set.Parse(pos); err != nil { // leaves only positionals in Args
		return nil, err
	}
	nc := cli.NewContext(c.App, set, c)
	nc.Command = c.Command
	return nc, nil
}

// invokeOutput is the JSON form of an answer; Body is a string when the
// answer is UTF-8 text, BodyBase64 otherwise.
type invokeOutput struct {
	Body                     *string `json:",omitempty"`
	BodyBase64               []byte  `json:",omitempty"`
	ContentType              string  `json:",omitempty"`
	InvokedProductionVariant string  `json:",omitempty"`
	CustomAttributes         string  `json:",omitempty"`
	NewSessionId             string  `json:",omitempty"`
	ClosedSessionId          string  `json:",omitempty"`
}

func setBody(o *invokeOutput, b []byte) {
	if utf8.Valid(b) {
		s := string(b)
		o.Body = &s
		return
	}
	o.BodyBase64 = b
}

func runInvoke(c *cli.Context) error {
	usage := func(format string, a ...any) error {
		return cli.Exit("serai invoke: "+fmt.Sprintf(format, a...), exitUsage)
	}
	for _, a := range c.Args().Slice() {
		if a == "-h" || a == "--help" || a == "-help" {
			if p := c.Lineage(); len(p) > 1 {
				return cli.ShowCommandHelp(p[1], "invoke")
			}
			return nil
		}
	}
	c, err := invokeArgs(c)
	if err != nil {
		return usage("%v", err)
	}
	if c.NArg() != 1 {
		return usage("takes exactly one argument, the endpoint name")
	}
	for _, name := range []string{"body", "content-type"} {
		if c.String(name) == "" {
			return usage("--%s is required", name)
		}
	}
	out := c.String("output")
	if out != "" && out != "json" {
		return usage("--output %q: the only format is json", out)
	}
	var body []byte
	if p := c.String("body"); p == "-" {
		body, err = io.ReadAll(os.Stdin)
	} else {
		body, err = os.ReadFile(p)
	}
	if err != nil {
		return usage("--body: %v", err)
	}
	opt := func(name string) *string {
		if v := c.String(name); v != "" {
			return aws.String(v)
		}
		return nil
	}
	var creds aws.CredentialsProvider = aws.AnonymousCredentials{}
	if id, secret := os.Getenv("AWS_ACCESS_KEY_ID"), os.Getenv("AWS_SECRET_ACCESS_KEY"); id != "" && secret != "" {
		creds = credentials.NewStaticCredentialsProvider(id, secret, os.Getenv("AWS_SESSION_TOKEN"))
	}
	hc, err := awsHTTPClient(c.String("ca-cert"), "ca-cert")
	if err != nil {
		return usage("%v", err)
	}
	sm := sagemakerruntime.New(sagemakerruntime.Options{
		Region:           c.String("region"),
		BaseEndpoint:     aws.String(c.String("router")),
		Credentials:      creds,
		RetryMaxAttempts: 1,
		HTTPClient:       hc,
	})
	ctx, stop := signal.NotifyContext(c.Context, os.Interrupt, syscall.SIGTERM)
	defer stop()
	stdout, stderr := c.App.Writer, c.App.ErrWriter
	enc := json.NewEncoder(stdout)

	if !c.Bool("stream") {
		res, err := sm.InvokeEndpoint(ctx, &sagemakerruntime.InvokeEndpointInput{
			EndpointName: aws.String(c.Args().First()), Body: body,
			ContentType: opt("content-type"), Accept: opt("accept"), TargetVariant: opt("target-variant"),
			CustomAttributes: opt("custom-attributes"), InferenceId: opt("inference-id"), SessionId: opt("session-id"),
		})
		if err != nil {
			return invokeError(err)
		}
		if out == "json" {
			o := invokeOutput{
				ContentType: aws.ToString(res.ContentType), InvokedProductionVariant: aws.ToString(res.InvokedProductionVariant),
				CustomAttributes: aws.ToString(res.CustomAttributes), NewSessionId: aws.ToString(res.NewSessionId),
				ClosedSessionId: aws.ToString(res.ClosedSessionId),
			}
			setBody(&o, res.Body)
			return enc.Encode(o)
		}
		stdout.Write(res.Body)
		if res.NewSessionId != nil {
			fmt.Fprintln(stderr, "NewSessionId:", *res.NewSessionId)
		}
		if res.ClosedSessionId != nil {
			fmt.Fprintln(stderr, "ClosedSessionId:", *res.ClosedSessionId)
		}
		return nil
	}

	res, err := sm.InvokeEndpointWithResponseStream(ctx, &sagemakerruntime.InvokeEndpointWithResponseStreamInput{
		EndpointName: aws.String(c.Args().First()), Body: body,
		ContentType: opt("content-type"), Accept: opt("accept"), TargetVariant: opt("target-variant"),
		CustomAttributes: opt("custom-attributes"), InferenceId: opt("inference-id"), SessionId: opt("session-id"),
	})
	if err != nil {
		return invokeError(err)
	}
	st := res.GetStream()
	defer st.Close()
	if out == "json" {
		if err := enc.Encode(invokeOutput{ContentType: aws.ToString(res.ContentType),
			InvokedProductionVariant: aws.ToString(res.InvokedProductionVariant), CustomAttributes: aws.ToString(res.CustomAttributes)}); err != nil {
			return err
		}
	}
	for ev := range st.Events() {
		p, ok := ev.(*types.ResponseStreamMemberPayloadPart)
		if !ok {
			continue
		}
		if out == "json" {
			var o struct {
				PayloadPart invokeOutput
			}
			setBody(&o.PayloadPart, p.Value.Bytes)
			if err := enc.Encode(o); err != nil {
				return err
			}
			continue
		}
		if _, err := stdout.Write(p.Value.Bytes); err != nil {
			return err
		}
	}
	if err := st.Err(); err != nil {
		if out != "json" {
			fmt.Fprintln(stdout)
		}
		return invokeError(err)
	}
	if out != "json" {
		fmt.Fprintln(stdout)
	}
	return nil
}

// invokeError prints an API error as "Code: message" (the model's own
// status and message for a ModelError) and exits 1.
func invokeError(err error) error {
	var me *types.ModelError
	if errors.As(err, &me) && me.OriginalStatusCode != nil {
		return cli.Exit(fmt.Sprintf("serai invoke: ModelError: %s (model status %d)", me.ErrorMessage(), aws.ToInt32(me.OriginalStatusCode)), exitError)
	}
	var mse *types.ModelStreamError
	if errors.As(err, &mse) {
		return cli.Exit(fmt.Sprintf("serai invoke: ModelStreamError %s: %s", aws.ToString(mse.ErrorCode_), mse.ErrorMessage()), exitError)
	}
	var ae smithy.APIError
	if errors.As(err, &ae) {
		return cli.Exit(fmt.Sprintf("serai invoke: %s: %s", ae.ErrorCode(), ae.ErrorMessage()), exitError)
	}
	if errors.Is(err, context.Canceled) {
		return cli.Exit("serai invoke: interrupted", exitError)
	}
	return cli.Exit("serai invoke: "+err.Error(), exitError)
}
