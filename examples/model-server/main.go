// Command model-server is a small but real model server for serai's examples
// and end-to-end tests. It speaks the SageMaker hosting container contract:
//
//	model-server serve     GET /ping, POST /invocations on $SAGEMAKER_BIND_TO_PORT (8080),
//	                       model from $SM_MODEL_DIR (/opt/ml/model)
//	model-server train     fit a softmax regression on a CSV and write
//	                       model.json + model.tar.gz
//	model-server train-text  fit a word-level n-gram text generator on a
//	                       text file; serve then streams generated tokens
//
// See README.md for the request and response formats.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"
)

// shutdownGrace stays under the 30 s SageMaker (and serai's jobs) allow
// between SIGTERM and SIGKILL.
const shutdownGrace = 25 * time.Second

func main() {
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	if err := run(os.Args[1:], os.Stdout, log); err != nil {
		fmt.Fprintln(os.Stderr, "model-server:", err)
		os.Exit(1)
	}
}

func run(args []string, stdout io.Writer, log *slog.Logger) error {
	if len(args) == 0 {
		return errors.New("usage: model-server serve | train | train-text [flags]")
	}
	switch args[0] {
	case "serve":
		ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
		defer stop()
		return serve(ctx, args[1:], log)
	case "train":
		return train(args[1:], stdout)
	case "train-text":
		return trainText(args[1:], stdout)
	default:
		return fmt.Errorf("unknown command %q: want serve, train or train-text", args[0])
	}
}

func serve(ctx context.Context, args []string, log *slog.Logger) error {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	listen := fs.String("listen", "", "address to listen on (default: :8080, the container contract; with $SAGEMAKER_BIND_TO_PORT set, $NOMAD_IP_http:$SAGEMAKER_BIND_TO_PORT)")
	modelDir := fs.String("model-dir", "", "directory holding model.json (default: $SM_MODEL_DIR or /opt/ml/model)")
	tokenDelay := fs.Duration("token-delay", 0, "text models: pause before each streamed token (default: $TOKEN_DELAY or 0)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *tokenDelay == 0 && os.Getenv("TOKEN_DELAY") != "" {
		d, err := time.ParseDuration(os.Getenv("TOKEN_DELAY"))
		if err != nil || d < 0 {
			return fmt.Errorf("TOKEN_DELAY=%q: want a duration such as 20ms", os.Getenv("TOKEN_DELAY"))
		}
		*tokenDelay = d
	}
	if *listen == "" {
		*listen = defaultListen()
	}
	if *modelDir == "" {
		*modelDir = envOr("SM_MODEL_DIR", "/opt/ml/model")
	}
	// Exiting when the model cannot be loaded lets the scheduler report
	// and restart the task; a server that answers /ping with errors
	// forever would only hide it.
	var handler http.Handler
	var desc []any
	if f, err := modelFormatOf(*modelDir); err == nil && f == textFormat {
		tm, err := LoadTextModel(*modelDir)
		if err != nil {
			return fmt.Errorf("loading model from %s: %w", *modelDir, err)
		}
		ts := NewTextServer(tm, *tokenDelay, log)
		ts.Instance = instanceName()
		handler = ts.Handler()
		desc = []any{"version", tm.Version, "kind", "text", "order", tm.Order, "token_delay", *tokenDelay}
	} else {
		m, err := LoadModel(*modelDir)
		if err != nil {
			return fmt.Errorf("loading model from %s: %w", *modelDir, err)
		}
		ms := NewServer(m, log)
		ms.Instance = instanceName()
		handler = ms.Handler()
		desc = []any{"version", m.Version, "features", m.Features}
	}
	flt, err := faultsFromEnv()
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	log.Info("serving", append([]any{"addr", ln.Addr().String(), "model_dir", *modelDir}, desc...)...)
	srv := &http.Server{
		Handler:           flt.wrap(handler),
		ReadHeaderTimeout: 10 * time.Second,
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	log.Info("shutting down")
	sctx, cancel := context.WithTimeout(context.Background(), shutdownGrace)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		return fmt.Errorf("graceful shutdown: %w", err)
	}
	return nil
}

// defaultListen follows the container contract: every interface, port
// 8080. Under Nomad's exec/raw_exec drivers (which set
// SAGEMAKER_BIND_TO_PORT) it binds the port and address Nomad allocated for
// the "http" port instead, which keeps test agents on loopback. In a
// container NOMAD_IP_http is the host's address, which the container does
// not have, so it is ignored there.
func defaultListen() string {
	port := os.Getenv("SAGEMAKER_BIND_TO_PORT")
	if port == "" {
		return ":8080"
	}
	return net.JoinHostPort(os.Getenv("NOMAD_IP_http"), port)
}

// instanceName is what the server answers as instance=<name>: Nomad's
// allocation ID (set for every driver, containers included), else the host
// name (in a container, its short ID).
func instanceName() string {
	if id := os.Getenv("NOMAD_ALLOC_ID"); id != "" {
		return id
	}
	h, _ := os.Hostname()
	return h
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

func train(args []string, stdout io.Writer) error {
	def := DefaultTrainOptions()
	fs := flag.NewFlagSet("train", flag.ContinueOnError)
	data := fs.String("data", "examples/data/iris.csv", "training CSV with a header; last column is the label")
	version := fs.String("version", "", "model version recorded in model.json and every response (required)")
	features := fs.String("features", "all", `features to use: "all", a column prefix such as "sepal", or a comma list of columns`)
	out := fs.String("out", "", "directory to write model.json and model.tar.gz to (required)")
	epochs := fs.Int("epochs", def.Epochs, "gradient descent epochs")
	lr := fs.Float64("learning-rate", def.LearningRate, "gradient descent step size")
	seed := fs.Uint64("seed", def.Seed, "seed for the train/test split")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *version == "" || *out == "" {
		return errors.New("train: --version and --out are required")
	}
	d, err := ReadCSVFile(*data)
	if err != nil {
		return err
	}
	feats, err := ResolveFeatures(*features, d.Columns)
	if err != nil {
		return err
	}
	opts := def
	opts.Version, opts.Features, opts.Epochs, opts.LearningRate, opts.Seed = *version, feats, *epochs, *lr, *seed
	m, err := Train(d, opts)
	if err != nil {
		return err
	}
	if err := m.Save(*out); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "model %s on %v: train accuracy %.3f (%d rows), test accuracy %.3f (%d rows); wrote %s/model.json and %s/model.tar.gz\n",
		m.Version, m.Features, m.Training.TrainAccuracy, m.Training.Rows, m.Training.TestAccuracy, m.Training.TestRows, *out, *out)
	return nil
}

func trainText(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("train-text", flag.ContinueOnError)
	data := fs.String("data", "examples/data/opticks.txt", "training text (UTF-8)")
	version := fs.String("version", "", "model version recorded in model.json and every response (required)")
	order := fs.Int("order", 2, "n-gram order: tokens of context (1 = bigram, 2 = trigram)")
	out := fs.String("out", "", "directory to write model.json and model.tar.gz to (required)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *version == "" || *out == "" {
		return errors.New("train-text: --version and --out are required")
	}
	b, err := os.ReadFile(*data)
	if err != nil {
		return err
	}
	m, err := TrainText(string(b), filepath.Base(*data), *version, *order)
	if err != nil {
		return fmt.Errorf("train-text: %w", err)
	}
	if err := m.Save(*out); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "text model %s (order %d) on %s: %d tokens, vocabulary %d, held-out perplexity %.1f (%d tokens); wrote %s/model.json and %s/model.tar.gz\n",
		m.Version, m.Order, m.Training.Source, m.Training.Tokens, len(m.Vocab), m.Training.HeldOutPerplex, m.Training.HeldOutTokens, *out, *out)
	return nil
}
