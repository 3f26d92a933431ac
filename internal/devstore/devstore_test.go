package devstore

import (
	"context"
	"io"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
)

func client(url string, k Keys) *s3.Client {
	return s3.New(s3.Options{
		Region: "us-east-1", BaseEndpoint: aws.String(url), UsePathStyle: true,
		Credentials: credentials.NewStaticCredentialsProvider(k.AccessKeyID, k.SecretAccessKey, ""),
	})
}

// TestSurvivesRestart: objects and keys outlive the process; requests
// signed with other keys are refused.
func TestSurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	s, err := Open(dir, "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.EnsureBucket("b"); err != nil {
		t.Fatal(err)
	}
	if _, err := client(s.URL, s.Keys).PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String("b"), Key: aws.String("k"), Body: strings.NewReader("hello")}); err != nil {
		t.Fatalf("put: %v", err)
	}
	keys := s.Keys
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s, err = Open(dir, "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if s.Keys != keys {
		t.Fatalf("keys changed across restart")
	}
	if err := s.EnsureBucket("b"); err != nil {
		t.Fatal(err)
	}
	out, err := client(s.URL, s.Keys).GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String("b"), Key: aws.String("k")})
	if err != nil {
		t.Fatalf("get after restart: %v", err)
	}
	b, _ := io.ReadAll(out.Body)
	if string(b) != "hello" {
		t.Fatalf("got %q", b)
	}
	_, err = client(s.URL, Keys{AccessKeyID: keys.AccessKeyID, SecretAccessKey: "wrong"}).GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String("b"), Key: aws.String("k")})
	if err == nil || !strings.Contains(err.Error(), "SignatureDoesNotMatch") {
		t.Fatalf("wrong secret: %v", err)
	}
	if _, err := Open(dir, "0.0.0.0:0"); err == nil {
		t.Fatal("a non-loopback address was accepted")
	}
}
