package main

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/signal"
	"syscall"

	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/hashicorp/go-hclog"
	"github.com/urfave/cli/v2"

	"github.com/seraihq/serai/internal/tlsreload"
	"github.com/seraihq/serai/server/client"
)

// tlsFlags are --tls-cert and --tls-key of the serving commands.
func tlsFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "tls-cert", Usage: "PEM certificate `FILE` (intermediates may follow the leaf); with --tls-key, serve HTTPS (TLS 1.2 or later). SIGHUP reloads it; a pair that fails to load is logged and the one in use stays"},
		&cli.StringFlag{Name: "tls-key", Usage: "PEM private key `FILE` of --tls-cert"},
	}
}

// loadTLS reads --tls-cert and --tls-key: nil without them, an error
// naming the missing flag when only one is given.
func loadTLS(c *cli.Context, cmd string) (*tlsreload.Cert, error) {
	cert, key := c.String("tls-cert"), c.String("tls-key")
	switch {
	case cert == "" && key == "":
		return nil, nil
	case key == "":
		return nil, cli.Exit(fmt.Sprintf("serai %s: --tls-cert needs --tls-key", cmd), exitUsage)
	case cert == "":
		return nil, cli.Exit(fmt.Sprintf("serai %s: --tls-key needs --tls-cert", cmd), exitUsage)
	}
	tc, err := tlsreload.Load(cert, key)
	if err != nil {
		return nil, cli.Exit(fmt.Sprintf("serai %s: --tls-cert/--tls-key: %v", cmd, err), exitUsage)
	}
	return tc, nil
}

// caCertFlag is --ca-cert of the commands that call a server or router.
func caCertFlag() cli.Flag {
	return &cli.StringFlag{Name: "ca-cert", EnvVars: []string{client.EnvCACert},
		Usage: "PEM CA `FILE` trusted for https:// addresses instead of the system's roots"}
}

// awsHTTPClient is the AWS SDK's default HTTP client trusting caFile.
func awsHTTPClient(caFile, flag string) (*awshttp.BuildableClient, error) {
	tc, err := tlsreload.ClientConfig(caFile)
	if err != nil {
		return nil, fmt.Errorf("--%s: %w", flag, err)
	}
	return awshttp.NewBuildableClient().WithTransportOptions(func(tr *http.Transport) {
		if tc != nil {
			tr.TLSClientConfig = tc
		}
	}), nil
}

// reloader is one file SIGHUP reloads.
type reloader struct {
	what   string // "SigV4 keys", "TLS certificate"
	stays  string // what the failure log says stays in use
	kv     []any  // log context: the file
	reload func() error
	// after, when set, adds log context after a successful reload.
	after func() []any
}

// reloadOnHUP reloads every r on each SIGHUP until ctx ends, so keys and
// certificates rotate without dropping connections. A reload that fails
// is logged and what is in use stays. It subscribes before returning, so
// a SIGHUP sent once the caller serves cannot kill the process.
func reloadOnHUP(ctx context.Context, log hclog.Logger, rs ...reloader) {
	if len(rs) == 0 {
		return
	}
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	go func() {
		defer signal.Stop(hup)
		for {
			select {
			case <-ctx.Done():
				return
			case <-hup:
			}
			for _, r := range rs {
				if err := r.reload(); err != nil {
					log.Error(r.what+" not reloaded; "+r.stays, append(append([]any{}, r.kv...), "error", err)...)
					continue
				}
				kv := r.kv
				if r.after != nil {
					kv = r.after()
				}
				log.Info(r.what+" reloaded", kv...)
			}
		}
	}()
}

// tlsReloader reloads cert on SIGHUP.
func tlsReloader(cert *tlsreload.Cert, c *cli.Context) reloader {
	return reloader{what: "TLS certificate", stays: "the certificate in use stays", kv: []any{"tls_cert_file", c.String("tls-cert")}, reload: cert.Reload, after: cert.Describe}
}
