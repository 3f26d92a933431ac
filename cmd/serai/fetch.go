package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"syscall"

	"github.com/seraihq/serai/artifact"
	"github.com/urfave/cli/v2"
)

// fetchModelCommand is the Nomad prestart task. Its settings come from the
// job's env (docs/contracts.md), each also a flag for running it by hand.
// The store credentials are read from the AWS_* variables only, never from
// flags, so they cannot show up in a process listing.
func fetchModelCommand() *cli.Command {
	return &cli.Command{
		Name:  "fetch-model",
		Usage: "download, verify and unpack a model artifact (Nomad prestart task)",
		Description: `Downloads the artifact at --url (s3://bucket/key from the artifact store,
https:// or file://), checks its sha256 when one is pinned, and unpacks a
.tar.gz (or .tar) into --model-dir atomically: the directory appears complete
or not at all. A non-archive artifact is placed in --model-dir under its own
name. Store credentials come only from AWS_ACCESS_KEY_ID,
AWS_SECRET_ACCESS_KEY and AWS_SESSION_TOKEN, which Nomad renders from Vault.`,
		Flags: append([]cli.Flag{
			&cli.StringFlag{Name: "model-name", EnvVars: []string{"SERAI_MODEL_NAME"}, Usage: "model name, for logs"},
			&cli.StringFlag{Name: "url", EnvVars: []string{"SERAI_MODEL_URL"}, Usage: "artifact `URL`: s3://bucket/key, https://… or file:///…"},
			&cli.StringFlag{Name: "sha256", EnvVars: []string{"SERAI_MODEL_SHA256"}, Usage: "expected sha256 (hex) of the artifact as downloaded; empty skips the check"},
			&cli.StringFlag{Name: "model-dir", EnvVars: []string{"SERAI_MODEL_DIR"}, Usage: "`DIR` where the unpacked model must appear"},
			&cli.DurationFlag{Name: "timeout", EnvVars: []string{"SERAI_DOWNLOAD_TIMEOUT"}, Value: artifact.DefaultTimeout, Usage: "give up after this long (SageMaker's ModelDataDownloadTimeout)"},
			&cli.StringFlag{Name: "store-name", EnvVars: []string{"SERAI_STORE_NAME"}, Usage: "artifact store name, for logs and errors"},
			&cli.StringFlag{Name: "store-endpoint", EnvVars: []string{"SERAI_STORE_ENDPOINT"}, Usage: "S3 endpoint `URL`; empty means AWS S3"},
			&cli.StringFlag{Name: "store-region", EnvVars: []string{"SERAI_STORE_REGION"}, Value: artifact.DefaultRegion, Usage: "S3 region"},
			&cli.StringFlag{Name: "store-path-style", EnvVars: []string{"SERAI_STORE_PATH_STYLE"}, Value: "false", Usage: "address buckets as endpoint/bucket (true) instead of bucket.endpoint; MinIO, Ceph and SeaweedFS usually need true"},
			&cli.StringFlag{Name: "max-unpacked-size", EnvVars: []string{"SERAI_MAX_UNPACKED_SIZE"}, Value: "64GiB", Usage: "refuse archives that unpack to more than this"},
			&cli.StringFlag{Name: "max-file-size", EnvVars: []string{"SERAI_MAX_FILE_SIZE"}, Value: "64GiB", Usage: "refuse archives holding a file larger than this"},
			&cli.IntFlag{Name: "max-files", EnvVars: []string{"SERAI_MAX_FILES"}, Value: artifact.DefaultLimits().MaxFiles, Usage: "refuse archives with more entries than this"},
			&cli.DurationFlag{Name: "stall-timeout", EnvVars: []string{"SERAI_STALL_TIMEOUT"}, Value: artifact.DefaultRetryPolicy().StallTimeout, Usage: "retry a connection that delivers nothing for this long"},
			&cli.IntFlag{Name: "max-attempts", EnvVars: []string{"SERAI_MAX_ATTEMPTS"}, Value: artifact.DefaultRetryPolicy().MaxAttempts, Usage: "give up after this many attempts in a row that receive nothing"},
			&cli.DurationFlag{Name: "progress-interval", EnvVars: []string{"SERAI_PROGRESS_INTERVAL"}, Value: artifact.DefaultProgressInterval, Usage: "log bytes and rate this often while downloading"},
		}, logFlags("trace, debug, info, warn or error", true)...),
		Action: fetchModel,
	}
}

func fetchModel(c *cli.Context) error {
	if c.NArg() > 0 {
		return cli.Exit(fmt.Sprintf("serai fetch-model: unexpected arguments %q (settings are flags or SERAI_* variables)", c.Args().Slice()), exitUsage)
	}
	usage := func(format string, args ...any) error {
		return cli.Exit("serai fetch-model: "+fmt.Sprintf(format, args...), exitUsage)
	}
	for _, f := range []struct{ flag, env string }{{"url", "SERAI_MODEL_URL"}, {"model-dir", "SERAI_MODEL_DIR"}} {
		if c.String(f.flag) == "" {
			return usage("--%s (%s) is required", f.flag, f.env)
		}
	}
	pathStyle, err := strconv.ParseBool(fetchOrDefault(c.String("store-path-style"), "false"))
	if err != nil {
		return usage("--store-path-style (SERAI_STORE_PATH_STYLE) must be true or false, not %q", c.String("store-path-style"))
	}
	limits := artifact.Limits{MaxFiles: c.Int("max-files")}
	if limits.MaxTotalBytes, err = artifact.ParseSize(c.String("max-unpacked-size")); err != nil || limits.MaxTotalBytes <= 0 {
		return usage("--max-unpacked-size: %v", fetchPositive(err))
	}
	if limits.MaxFileBytes, err = artifact.ParseSize(c.String("max-file-size")); err != nil || limits.MaxFileBytes <= 0 {
		return usage("--max-file-size: %v", fetchPositive(err))
	}
	if limits.MaxFiles <= 0 {
		return usage("--max-files must be positive")
	}
	if c.Duration("timeout") <= 0 {
		return usage("--timeout (SERAI_DOWNLOAD_TIMEOUT) must be positive")
	}
	log, err := newLogger(c, "fetch-model")
	if err != nil {
		return err
	}
	retry := artifact.DefaultRetryPolicy()
	retry.StallTimeout = c.Duration("stall-timeout")
	retry.MaxAttempts = c.Int("max-attempts")

	cfg := artifact.Config{
		ModelName: c.String("model-name"),
		URL:       c.String("url"),
		SHA256:    c.String("sha256"),
		Dir:       c.String("model-dir"),
		Timeout:   c.Duration("timeout"),
		Store: artifact.Store{
			Name:      c.String("store-name"),
			Endpoint:  c.String("store-endpoint"),
			Region:    fetchOrDefault(c.String("store-region"), artifact.DefaultRegion),
			PathStyle: pathStyle,
		},
		Credentials:      artifact.CredentialsFromEnv(os.LookupEnv),
		Limits:           limits,
		Retry:            retry,
		ProgressInterval: c.Duration("progress-interval"),
		Logger:           log,
	}

	// Nomad stops a prestart task with SIGINT/SIGTERM (e.g. the allocation
	// is stopped mid-download); cancelling lets the staging dir be removed.
	ctx, stop := signal.NotifyContext(c.Context, os.Interrupt, syscall.SIGTERM)
	defer stop()
	if _, err := artifact.Fetch(ctx, cfg); err != nil {
		code := exitError
		if errors.Is(err, artifact.ErrInvalidConfig) {
			code = exitUsage
		}
		if errors.Is(err, context.Canceled) {
			return cli.Exit("serai fetch-model: interrupted; nothing was installed", code)
		}
		return cli.Exit("serai fetch-model: "+err.Error(), code)
	}
	return nil
}

func fetchOrDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

func fetchPositive(err error) error {
	if err != nil {
		return err
	}
	return errors.New("must be positive")
}
