package artifact

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"path"
	"strconv"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/smithy-go"
	"github.com/aws/smithy-go/logging"
)

// s3Source downloads from any S3-compatible store with the SDK doing the
// signing. The aws.Config is built by hand rather than loaded: loading would
// read shared config files and could probe instance metadata, and the fetch
// task must use only the credentials Vault rendered into its environment.
type s3Source struct {
	client    *s3.Client
	bucket    string
	key       string
	store     Store
	anonymous bool
}

func newS3Source(loc location, store Store, creds Credentials, hc *http.Client) *s3Source {
	region := store.Region
	if region == "" {
		region = DefaultRegion
	}
	cfg := aws.Config{
		Region:     region,
		HTTPClient: hc,
		// Retries are ours (with resume and a deadline); the SDK's would
		// multiply them.
		Retryer: func() aws.Retryer { return aws.NopRetryer{} },
		Logger:  logging.Nop{},
	}
	anonymous := creds.AccessKeyID == "" && creds.SecretAccessKey == ""
	if anonymous {
		cfg.Credentials = aws.AnonymousCredentials{}
	} else {
		cfg.Credentials = credentials.NewStaticCredentialsProvider(creds.AccessKeyID, creds.SecretAccessKey, creds.SessionToken)
	}
	client := s3.NewFromConfig(cfg, func(o *s3.Options) {
		if store.Endpoint != "" {
			o.BaseEndpoint = aws.String(store.Endpoint)
		}
		o.UsePathStyle = store.PathStyle
		o.DisableS3ExpressSessionAuth = aws.Bool(true)
		o.DisableLogOutputChecksumValidationSkipped = true
	})
	return &s3Source{client: client, bucket: loc.bucket, key: loc.key, store: store, anonymous: anonymous}
}

func (s *s3Source) String() string { return "s3://" + s.bucket + "/" + s.key }

func (s *s3Source) name() string { return path.Base(s.key) }

func (s *s3Source) where() string {
	ep := s.store.Endpoint
	if ep == "" {
		ep = "AWS S3"
	}
	if s.store.Name != "" {
		return fmt.Sprintf("store %q (%s)", s.store.Name, ep)
	}
	return ep
}

func (s *s3Source) open(ctx context.Context, offset int64, etag string) (*response, error) {
	in := &s3.GetObjectInput{Bucket: aws.String(s.bucket), Key: aws.String(s.key)}
	if offset > 0 {
		in.Range = aws.String("bytes=" + strconv.FormatInt(offset, 10) + "-")
		if etag != "" {
			in.IfMatch = aws.String(etag)
		}
	}
	out, err := s.client.GetObject(ctx, in)
	if err != nil {
		return nil, s.mapError(ctx, err)
	}
	r := &response{body: out.Body, start: 0, size: -1, etag: aws.ToString(out.ETag)}
	if out.ContentRange != nil {
		start, total, ok := parseContentRange(*out.ContentRange)
		if !ok {
			_ = out.Body.Close()
			return nil, newError(errTransient, nil, fmt.Sprintf("GET %s: unusable Content-Range in the store's answer", s))
		}
		r.start, r.size = start, total
	} else if out.ContentLength != nil {
		r.size = *out.ContentLength
	}
	return r, nil
}

func (s *s3Source) mapError(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	var nsk *types.NoSuchKey
	if errors.As(err, &nsk) {
		return newError(ErrNotFound, err, fmt.Sprintf("no such key %q in bucket %q on %s: check the model's artifact URL", s.key, s.bucket, s.where()))
	}
	code, msg := "", ""
	var ae smithy.APIError
	if errors.As(err, &ae) {
		code, msg = ae.ErrorCode(), ae.ErrorMessage()
	}
	status := 0
	var re *awshttp.ResponseError
	if errors.As(err, &re) {
		status = re.HTTPStatusCode()
	}
	detail := code
	if msg != "" {
		detail += ": " + msg
	}
	switch code {
	case "NoSuchKey", "NotFound":
		return newError(ErrNotFound, err, fmt.Sprintf("no such key %q in bucket %q on %s: check the model's artifact URL", s.key, s.bucket, s.where()))
	case "NoSuchBucket":
		return newError(ErrNotFound, err, fmt.Sprintf("no such bucket %q on %s: check the model's artifact URL and the store's endpoint", s.bucket, s.where()))
	case "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken", "ExpiredToken",
		"TokenRefreshRequired", "AllAccessDisabled", "AccountProblem", "InvalidSecurity":
		return s.denied(err, detail)
	case "PreconditionFailed":
		return newError(ErrChanged, err, fmt.Sprintf("%s changed on %s while it was being downloaded; the task will start over", s, s.where()))
	case "SlowDown", "InternalError", "ServiceUnavailable", "RequestTimeout", "RequestTimeTooSkewed", "OperationAborted":
		return newError(errTransient, err, fmt.Sprintf("GET %s on %s: %s", s, s.where(), detail))
	}
	switch {
	case status == http.StatusNotFound:
		return newError(ErrNotFound, err, fmt.Sprintf("no such key %q in bucket %q on %s (HTTP 404): check the model's artifact URL", s.key, s.bucket, s.where()))
	case status == http.StatusForbidden || status == http.StatusUnauthorized:
		return s.denied(err, fmt.Sprintf("HTTP %d", status))
	case status == http.StatusPreconditionFailed:
		return newError(ErrChanged, err, fmt.Sprintf("%s changed on %s while it was being downloaded", s, s.where()))
	case status != 0 && !transientStatus(status):
		return newError(ErrRefused, err, fmt.Sprintf("GET %s on %s: HTTP %d %s", s, s.where(), status, detail))
	}
	if m, ok := tlsTrustError(err); ok {
		return newError(ErrRefused, err, fmt.Sprintf("GET %s on %s: %s", s, s.where(), m))
	}
	// Network-level failures: the SDK's text names the operation and the
	// endpoint (never the credentials, which travel in signed headers).
	return newError(errTransient, err, fmt.Sprintf("GET %s on %s: %v", s, s.where(), err))
}

func (s *s3Source) denied(err error, detail string) error {
	hint := "check the keys at the store's Vault path and that they may read this bucket"
	if s.anonymous {
		hint = "no AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY were in the environment, so the request was anonymous; is the Vault template rendering secrets/store.env for this task?"
	}
	return newError(ErrAccessDenied, err, fmt.Sprintf("access denied reading %s on %s (%s): %s", s, s.where(), detail, hint))
}
