package s3test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/smithy-go"
)

func TestMain(m *testing.M) {
	os.Setenv("AWS_EC2_METADATA_DISABLED", "true")
	os.Exit(m.Run())
}

func client(srv *Server, ak, sk string) *s3.Client {
	return s3.New(s3.Options{
		BaseEndpoint: aws.String(srv.URL),
		Region:       srv.Region,
		UsePathStyle: true,
		Credentials:  credentials.NewStaticCredentialsProvider(ak, sk, ""),
	})
}

// TestSignedRequestsThroughTheSDK: uploads and downloads signed by the AWS
// SDK pass the signature check; wrong secrets and unknown keys do not.
func TestSignedRequestsThroughTheSDK(t *testing.T) {
	ctx := context.Background()
	srv := New(t, "AKIATEST", "secret")
	srv.Bucket(t, "b")
	good := client(srv, "AKIATEST", "secret")
	body := bytes.Repeat([]byte("model "), 10000)
	if _, err := good.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String("b"), Key: aws.String("dir/model.tar.gz"), Body: bytes.NewReader(body)}); err != nil {
		t.Fatalf("signed PutObject: %v", err)
	}
	out, err := good.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String("b"), Key: aws.String("dir/model.tar.gz")})
	if err != nil {
		t.Fatalf("signed GetObject: %v", err)
	}
	got, _ := io.ReadAll(out.Body)
	out.Body.Close()
	if !bytes.Equal(got, body) {
		t.Errorf("read back %d bytes, want %d", len(got), len(body))
	}
	for name, c := range map[string]*s3.Client{
		"SignatureDoesNotMatch": client(srv, "AKIATEST", "wrong"),
		"InvalidAccessKeyId":    client(srv, "AKIAOTHER", "secret"),
	} {
		_, err := c.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String("b"), Key: aws.String("dir/model.tar.gz")})
		var ae smithy.APIError
		if !errors.As(err, &ae) || ae.ErrorCode() != name {
			t.Errorf("want %s, got %v", name, err)
		}
		_, err = c.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String("b"), Key: aws.String("x"), Body: strings.NewReader("x")})
		if !errors.As(err, &ae) || ae.ErrorCode() != name {
			t.Errorf("put: want %s, got %v", name, err)
		}
	}
}
