package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/sagemakerruntime"
	"github.com/urfave/cli/v2"

	"github.com/seraihq/serai/internal/devstack"
	"github.com/seraihq/serai/internal/devstore"
)

// devBucket is the embedded store's bucket for artifacts.
const devBucket = "serai-dev"

func devCommand() *cli.Command {
	return &cli.Command{
		Name:  "dev",
		Usage: "run a complete local stack (Nomad, Consul, Vault, an S3 store, serai server and router) in the foreground",
		Description: "Starts Nomad, Consul and Vault/OpenBao dev agents on loopback (from PATH or ~/.cache/serai/bin),\n" +
			"an S3-protocol artifact store whose data lives in --data-dir, and serai's server and router; wires\n" +
			"Vault for Nomad workload identity and the store's keys; prints the addresses and the environment\n" +
			"to export. --example also trains the bundled Iris example, uploads it, applies a two-variant\n" +
			"endpoint \"iris\" and invokes it once. Ctrl-C stops everything it started.",
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "example", Usage: "deploy and invoke the bundled two-variant Iris example (needs the source checkout and go)"},
			&cli.StringFlag{Name: "data-dir", Value: defaultDevDataDir(), Usage: "where the store's objects and keys live across restarts"},
			&cli.StringFlag{Name: "source", Value: ".", Usage: "the serai checkout (--example builds examples/model-server from it)"},
			&cli.StringFlag{Name: "server-listen", Value: "127.0.0.1:8090", Usage: "serai server address"},
			&cli.StringFlag{Name: "router-listen", Value: "127.0.0.1:8081", Usage: "serai router address"},
			&cli.StringFlag{Name: "store-listen", Value: "127.0.0.1:8333", Usage: "artifact store address (loopback)"},
			&cli.DurationFlag{Name: "download-timeout", Value: 20 * time.Second, Usage: "how long to try downloading a missing agent with hc-install (0: never download)"},
		},
		Action: runDev,
	}
}

func defaultDevDataDir() string {
	d, err := os.UserCacheDir()
	if err != nil {
		return filepath.Join(os.TempDir(), "serai-dev-data")
	}
	return filepath.Join(d, "serai", "dev")
}

func runDev(c *cli.Context) error {
	start := time.Now()
	if c.NArg() > 0 {
		return cli.Exit("serai dev: takes no arguments", exitUsage)
	}
	out := c.App.Writer
	ctx, stop := signal.NotifyContext(c.Context, os.Interrupt, syscall.SIGTERM)
	defer stop()

	// Agents first: without them nothing else is worth doing.
	var bins devstack.Binaries
	for _, a := range []struct {
		agent devstack.Agent
		dst   *string
	}{{devstack.ConsulAgent, &bins.Consul}, {devstack.VaultAgent, &bins.Vault}, {devstack.NomadAgent, &bins.Nomad}} {
		p, err := devstack.Ensure(ctx, a.agent, c.Duration("download-timeout"))
		if err != nil {
			return cli.Exit("serai dev: "+oneLine(err.Error()), exitError)
		}
		*a.dst = p
	}
	self, err := os.Executable()
	if err != nil {
		return cli.Exit(fmt.Sprintf("serai dev: %v", err), exitError)
	}
	dataDir, err := filepath.Abs(c.String("data-dir"))
	if err != nil {
		return cli.Exit(fmt.Sprintf("serai dev: %v", err), exitUsage)
	}
	binDir := filepath.Join(dataDir, "bin")

	// The example's model server builds and trains while the agents start.
	var example chan exampleResult
	if c.Bool("example") {
		example = make(chan exampleResult, 1)
		go func() { example <- prepareExample(ctx, c.String("source"), dataDir) }()
	}

	store, err := devstore.Open(dataDir, c.String("store-listen"))
	if err != nil {
		return cli.Exit(fmt.Sprintf("serai dev: artifact store: %v", err), exitError)
	}
	defer store.Close()
	if err := store.EnsureBucket(devBucket); err != nil {
		return cli.Exit(fmt.Sprintf("serai dev: artifact store: %v", err), exitError)
	}

	fmt.Fprintf(out, "serai dev: starting Consul, %s and Nomad on loopback...\n", filepath.Base(bins.Vault))
	stack, err := devstack.Start(ctx, bins, binDir) // stops what it started when it fails
	if err == nil {
		defer func() {
			fmt.Fprintln(out, "serai dev: stopping (jobs, then Nomad, Vault, Consul)...")
			if err := stack.Stop(context.Background()); err != nil {
				fmt.Fprintf(c.App.ErrWriter, "serai dev: stop: %v\n", err)
			}
			fmt.Fprintln(out, "serai dev: stopped; nothing left running")
		}()
	}
	if err != nil {
		if ctx.Err() != nil {
			return nil // interrupted while starting: stopped cleanly above
		}
		return cli.Exit(fmt.Sprintf("serai dev: %v", err), exitError)
	}
	if _, err := stack.Vault.KVv2("secret").Put(ctx, "serai/stores/dev", map[string]any{
		"access_key_id": store.Keys.AccessKeyID, "secret_access_key": store.Keys.SecretAccessKey,
	}); err != nil {
		return cli.Exit(fmt.Sprintf("serai dev: writing the store's keys to Vault: %v", err), exitError)
	}

	// The dev store is an operator record like any other: the server puts
	// it from its --stores file at start.
	storesPath := filepath.Join(stack.Dir, "stores.hcl")
	if err := os.WriteFile(storesPath, []byte(devStoreBlock(store.URL)), 0o600); err != nil {
		return cli.Exit(fmt.Sprintf("serai dev: %v", err), exitError)
	}
	serverURL := "http://" + c.String("server-listen")
	routerURL := "http://" + c.String("router-listen")
	env := stack.Env()
	if _, err := stack.Run("serai-server", self, []string{"server", "--listen", c.String("server-listen"), "--id", "dev",
		"--serai-binary", self, "--router-url", routerURL, "--tick", "250ms", "--drain-period", "2s",
		"--consul-addr", stack.ConsulAddr, "--nomad-addr", stack.NomadAddr, "--vault-addr", stack.VaultAddr,
		"--stores", storesPath, "--allow-file-artifacts",
		// A dev stack runs models as host processes (the example does).
		"--allow-drivers", "raw_exec,exec,docker"}, env); err != nil {
		return cli.Exit(fmt.Sprintf("serai dev: %v", err), exitError)
	}
	if _, err := stack.Run("serai-router", self, []string{"router", "--listen", c.String("router-listen"), "--consul-addr", stack.ConsulAddr}, nil); err != nil {
		return cli.Exit(fmt.Sprintf("serai dev: %v", err), exitError)
	}
	for _, u := range []string{serverURL, routerURL} {
		if err := waitPing(ctx, u+"/ping"); err != nil {
			return cli.Exit(fmt.Sprintf("serai dev: %s: %v (logs in %s)", u, err, stack.Dir), exitError)
		}
	}

	fmt.Fprintf(out, `serai dev: ready in %.1fs
  router     %s   (SageMaker runtime: POST /endpoints/NAME/invocations)
  server     %s   (SageMaker API; serai apply, serai endpoint ...)
  Nomad UI   %s/ui
  Consul UI  http://%s/ui
  Vault      %s   (token %s)
  store      %s   (bucket %s; artifact_store "dev"; data in %s)
  logs       %s   (removed on exit)

export SERAI_ADDR=%s
export SERAI_ROUTER_ADDR=%s
export NOMAD_ADDR=%s
export CONSUL_HTTP_ADDR=%s
export VAULT_ADDR=%s
export VAULT_TOKEN=%s
export PATH=%s:$PATH

Ctrl-C stops everything.
`, time.Since(start).Seconds(), routerURL, serverURL, stack.NomadAddr, stack.ConsulAddr, stack.VaultAddr, stack.VaultToken,
		store.URL, devBucket, dataDir, stack.Dir,
		serverURL, routerURL, stack.NomadAddr, stack.ConsulAddr, stack.VaultAddr, stack.VaultToken, binDir)

	if example != nil {
		var res exampleResult
		select {
		case res = <-example:
		case <-ctx.Done():
			return nil
		}
		if res.err != nil {
			return cli.Exit(fmt.Sprintf("serai dev: --example: %v", res.err), exitError)
		}
		if err := runExample(ctx, out, self, serverURL, routerURL, store, dataDir, res); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return cli.Exit(fmt.Sprintf("serai dev: --example: %v", err), exitError)
		}
		fmt.Fprintf(out, "serai dev: example answered %.1fs after start\n", time.Since(start).Seconds())
	}
	<-ctx.Done()
	fmt.Fprintln(out)
	return nil
}

func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}

func waitPing(ctx context.Context, url string) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if resp, err := http.DefaultClient.Do(req); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("no answer on %s: %w", url, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// exampleResult is the built model server and the two trained versions.
type exampleResult struct {
	modelServer string
	artifacts   map[string]string // version -> model.tar.gz
	err         error
}

// prepareExample builds examples/model-server into dataDir/bin and trains
// v1 (sepal features only) and v2 (all four features) on the Iris data.
func prepareExample(ctx context.Context, source, dataDir string) exampleResult {
	src := filepath.Join(source, "examples", "model-server")
	if _, err := os.Stat(filepath.Join(src, "main.go")); err != nil {
		return exampleResult{err: fmt.Errorf("%s not found: run serai dev --example from the serai checkout (or pass --source)", src)}
	}
	goBin, err := exec.LookPath("go")
	if err != nil {
		return exampleResult{err: errors.New("go not on PATH: --example builds examples/model-server with the Go toolchain")}
	}
	bin := filepath.Join(dataDir, "bin", "model-server")
	build := exec.CommandContext(ctx, goBin, "build", "-o", bin, "./examples/model-server")
	build.Dir = source
	if b, err := build.CombinedOutput(); err != nil {
		return exampleResult{err: fmt.Errorf("building the model server: %v\n%s", err, b)}
	}
	res := exampleResult{modelServer: bin, artifacts: map[string]string{}}
	for v, features := range map[string]string{"v1": "sepal", "v2": "all"} {
		dir := filepath.Join(dataDir, "example", v)
		cmd := exec.CommandContext(ctx, bin, "train", "--version", v, "--features", features,
			"--data", filepath.Join(source, "examples", "data", "iris.csv"), "--out", dir)
		if b, err := cmd.CombinedOutput(); err != nil {
			return exampleResult{err: fmt.Errorf("training %s: %v\n%s", v, err, b)}
		}
		res.artifacts[v] = filepath.Join(dir, "model.tar.gz")
	}
	return res
}

// runExample uploads the artifacts, applies the two-variant endpoint with
// `serai apply` and invokes it once with the AWS SDK.
func runExample(ctx context.Context, out io.Writer, self, serverURL, routerURL string, store *devstore.Store, dataDir string, res exampleResult) error {
	sums := map[string]string{}
	for v, path := range res.artifacts {
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		sum := sha256.Sum256(b)
		sums[v] = hex.EncodeToString(sum[:])
		if err := store.Put(devBucket, "iris/"+v+"/model.tar.gz", bytes.NewReader(b), int64(len(b))); err != nil {
			return fmt.Errorf("uploading %s: %w", v, err)
		}
	}
	spec := filepath.Join(dataDir, "example", "iris.hcl")
	if err := os.WriteFile(spec, []byte(exampleSpec(store.URL, sums)), 0o644); err != nil {
		return err
	}
	fmt.Fprintf(out, "serai dev: applying %s (uploaded to s3://%s/iris/v1 and v2)\n", spec, devBucket)
	apply := exec.CommandContext(ctx, self, "apply", "--addr", serverURL, spec)
	apply.Stdout, apply.Stderr = out, out
	if err := apply.Run(); err != nil {
		return fmt.Errorf("serai apply: %w", err)
	}
	rt := sagemakerruntime.New(sagemakerruntime.Options{
		Region: "us-east-1", BaseEndpoint: aws.String(routerURL),
		Credentials: credentials.NewStaticCredentialsProvider("dev", "dev", ""),
	})
	body := "5.1,3.5,1.4,0.2"
	ictx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	ans, err := rt.InvokeEndpoint(ictx, &sagemakerruntime.InvokeEndpointInput{
		EndpointName: aws.String("iris"), ContentType: aws.String("text/csv"), Body: []byte(body),
	})
	if err != nil {
		return fmt.Errorf("invoking iris: %w", err)
	}
	fmt.Fprintf(out, "serai dev: invoked iris with %s → variant %s answered %s\n", body, aws.ToString(ans.InvokedProductionVariant), strings.TrimSpace(string(ans.Body)))
	fmt.Fprintf(out, "           try: serai invoke iris --content-type text/csv --body - <<< '6.7,3.0,5.2,2.3'\n")
	return nil
}

// devStoreBlock is the dev store's artifact_store block: the server's
// --stores file and the example spec declare it alike, so applying the
// example leaves the record as it is.
func devStoreBlock(storeURL string) string {
	return fmt.Sprintf(`artifact_store "dev" {
  endpoint   = %q
  path_style = true
}
`, storeURL)
}

// exampleSpec is the two-variant Iris endpoint on the dev stack. The model
// server is found on the Nomad agent's PATH (serai dev puts its bin dir
// there).
func exampleSpec(storeURL string, sums map[string]string) string {
	var b strings.Builder
	b.WriteString("# Written by serai dev --example: two trained Iris models, 80/20.\n")
	b.WriteString(devStoreBlock(storeURL))
	for _, v := range []string{"v1", "v2"} {
		fmt.Fprintf(&b, `
model "iris-%s" {
  artifact        = "s3://%s/iris/%s/model.tar.gz"
  sha256          = %q
  artifact_store  = "dev"
  command         = "model-server"
  driver          = "raw_exec"
  startup_timeout = "30s"
}
`, v, devBucket, v, sums[v])
	}
	b.WriteString(`
endpoint_config "iris-dev" {
  variant "v1" {
    model         = "iris-v1"
    instance_type = "ml.t3.medium"
    weight        = 80
    resources {
      cpu    = 100
      memory = 64
    }
  }
  variant "v2" {
    model         = "iris-v2"
    instance_type = "ml.t3.medium"
    weight        = 20
    resources {
      cpu    = 100
      memory = 64
    }
  }
}

endpoint "iris" {
  config = "iris-dev"
}
`)
	return b.String()
}
