package main

import (
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"

	consulapi "github.com/hashicorp/consul/api"
	nomadapi "github.com/hashicorp/nomad/api"
	vaultapi "github.com/hashicorp/vault/api"
	"github.com/urfave/cli/v2"

	"github.com/seraihq/serai/internal/tlsreload"
	"github.com/seraihq/serai/policies"
	"github.com/seraihq/serai/scheduler"
	"github.com/seraihq/serai/server"
	"github.com/seraihq/serai/server/api"
	"github.com/seraihq/serai/server/cluster"
	"github.com/seraihq/serai/server/reconcile"
	"github.com/seraihq/serai/server/records"
)

// serverCommand runs the control plane: the SageMaker API on every server,
// the reconciler on the one holding the Consul lock.
func serverCommand() *cli.Command {
	sd, rd, co, ad := server.DefaultConfig(), reconcile.DefaultConfig(), scheduler.DefaultOptions(), api.DefaultConfig()
	return &cli.Command{
		Name:  "server",
		Usage: "run the control plane (SageMaker-compatible API + reconciler)",
		Description: "Serves SageMaker's hosting API (POST / with X-Amz-Target: SageMaker.<Operation>) so the serai CLI,\n" +
			"the AWS SDKs, the AWS CLI and Terraform deploy onto Nomad. Run several for availability: each\n" +
			"serves the API; the holder of the Consul lock serai/leader reconciles.",
		Flags: append([]cli.Flag{
			&cli.StringFlag{Name: "listen", Value: sd.Listen, Usage: "API address"},
			&cli.StringFlag{Name: "advertise-addr", Usage: "host:port registered in Consul as serai-server (default: the listen address)"},
			&cli.StringFlag{Name: "id", Usage: "this server's name in Consul (default serai-server-<advertise addr>)"},
			&cli.StringFlag{Name: "consul-addr", EnvVars: []string{"CONSUL_HTTP_ADDR"}, Value: "127.0.0.1:8500", Usage: "Consul HTTP API address (CONSUL_HTTP_TOKEN is read too)"},
			&cli.StringFlag{Name: "nomad-addr", EnvVars: []string{"NOMAD_ADDR"}, Value: "http://127.0.0.1:4646", Usage: "Nomad HTTP API address (NOMAD_TOKEN is read too)"},
			&cli.StringFlag{Name: "vault-addr", EnvVars: []string{"VAULT_ADDR"}, Usage: "Vault address; without it, models that read an artifact store cannot be deployed (VAULT_TOKEN is read too)"},
			&cli.StringFlag{Name: "region", Value: api.DefaultRegion, Usage: "AWS region in ARNs and SigV4 scopes"},
			&cli.StringFlag{Name: "account", Value: api.DefaultAccount, Usage: "12-digit account ID in ARNs"},
			&cli.StringFlag{Name: "sigv4-keys", Usage: "`FILE` of \"ACCESS_KEY_ID SECRET\" lines (the router's format); when set, API requests must be SigV4-signed; SIGHUP reloads it"},
			&cli.StringFlag{Name: "operator-keys", Usage: "`FILE` of operators' keys (same format): they may also put and delete artifact stores (Serai.PutArtifactStore, serai store) and name any store; turns SigV4 on; SIGHUP reloads it"},
			&cli.StringFlag{Name: "stores", Usage: "`FILE` of artifact_store blocks (HCL, with allowed_principals) the server puts as operator records at start and on SIGHUP"},
			&cli.BoolFlag{Name: "allow-file-artifacts", Usage: "accept models with file:// artifacts (read from the Nomad client's disk); off by default, as such a URL can name any file the fetch task can read"},
			&cli.BoolFlag{Name: "insecure-no-auth", Usage: "serve the API without authentication on a non-loopback --listen address (refused otherwise): anyone who can reach it can run programs on the Nomad clients"},
			&cli.StringSliceFlag{Name: "allow-drivers", Value: cli.NewStringSlice(ad.AllowedDrivers...), Usage: "Nomad task `DRIVERS` models may run with (comma-separated: docker, exec, raw_exec); raw_exec gives a model the Nomad agent's view of the host"},
			&cli.StringFlag{Name: "serai-binary", Value: co.SeraiBinary, Usage: "path of the serai binary on Nomad clients (runs the fetch task of exec/raw_exec models)"},
			&cli.StringFlag{Name: "fetch-image", Value: co.FetchImage, Usage: "serai's image for the fetch task of docker models"},
			&cli.StringFlag{Name: "router-url", Value: co.RouterURL, Usage: "router base URL shown in the Nomad UI"},
			&cli.StringFlag{Name: "namespace", EnvVars: []string{"NOMAD_NAMESPACE"}, Value: policies.DefaultNamespace, Usage: "Nomad namespace of the endpoints' jobs; every model's Vault role binds it"},
			&cli.DurationFlag{Name: "tick", Value: rd.Tick, Usage: "how often the reconciler steps every endpoint"},
			&cli.DurationFlag{Name: "drain-period", Value: rd.DrainPeriod, Usage: "how long a deleted endpoint's instances keep serving in-flight requests"},
			&cli.DurationFlag{Name: "health-timeout", Value: rd.HealthTimeout, Usage: "how long a new generation may take to become healthy when Nomad reports neither success nor failure"},
			&cli.StringFlag{Name: "router-ca-cert", Usage: "PEM CA `FILE` trusted when scraping routers that serve HTTPS, instead of the system's roots"},
			&cli.DurationFlag{Name: "step-timeout", Value: rd.StepTimeout, Usage: "deadline of one endpoint's reconciler step (its calls to Nomad, Consul and Vault); a hung agent fails the step after it"},
			&cli.IntFlag{Name: "reconcile-workers", Value: rd.Workers, Usage: "how many endpoints the reconciler steps at once"},
			&cli.DurationFlag{Name: "metrics-grace", Value: rd.MetricsGrace, Usage: "how long an update with rollback thresholds may go without router metrics before it holds traffic where it is"},
			&cli.DurationFlag{Name: "scrape-timeout", Value: cluster.DefaultScrapeTimeout, Usage: "deadline of one router's /metrics scrape (for rollback thresholds)"},
		}, append(tlsFlags(), logFlags("trace, debug, info, warn or error", true)...)...),
		Action: runServer,
	}
}

func runServer(c *cli.Context) error {
	if c.NArg() > 0 {
		return cli.Exit("serai server: takes no arguments", exitUsage)
	}
	cert, err := loadTLS(c, "server")
	if err != nil {
		return err
	}
	routerTLS, err := tlsreload.ClientConfig(c.String("router-ca-cert"))
	if err != nil {
		return cli.Exit(fmt.Sprintf("serai server: --router-ca-cert: %v", err), exitUsage)
	}
	// The scraping client keeps its own timeouts and no proxy from the
	// environment; only whom it trusts for https routers comes from here.
	routerClient := cluster.DefaultRouterClient()
	routerClient.Transport.(*http.Transport).TLSClientConfig = routerTLS
	log, err := newLogger(c, "serai-server")
	if err != nil {
		return err
	}
	consulCfg := consulapi.DefaultConfig()
	consulCfg.Address = c.String("consul-addr")
	consul, err := consulapi.NewClient(consulCfg)
	if err != nil {
		return cli.Exit(fmt.Sprintf("serai server: consul client: %v", err), exitUsage)
	}
	nomadCfg := nomadapi.DefaultConfig()
	nomadCfg.Address = c.String("nomad-addr")
	if nomadCfg.HttpClient, err = cluster.NomadHTTPClient(nomadCfg.TLSConfig); err != nil {
		return cli.Exit(fmt.Sprintf("serai server: nomad client: %v", err), exitUsage)
	}
	nomad, err := nomadapi.NewClient(nomadCfg)
	if err != nil {
		return cli.Exit(fmt.Sprintf("serai server: nomad client: %v", err), exitUsage)
	}
	var vault reconcile.Vault
	if addr := c.String("vault-addr"); addr != "" {
		vc := vaultapi.DefaultConfig()
		vc.Address = addr
		client, err := vaultapi.NewClient(vc)
		if err != nil {
			return cli.Exit(fmt.Sprintf("serai server: vault client: %v", err), exitUsage)
		}
		w := policies.NewVaultWriter(client)
		w.Log = log.Named("vault")
		w.Role = policies.RoleOptions{Namespace: c.String("namespace")}
		vault = w
	} else {
		log.Warn("no VAULT_ADDR: models that read an artifact store will fail to deploy")
	}

	store := records.Store{KV: records.ConsulKV{KV: consul.KV()}}
	nomadAdapter := &cluster.Nomad{Client: nomad}
	consulAdapter := &cluster.Consul{Client: consul}
	handler, err := api.New(api.Config{
		Store:          store,
		Region:         c.String("region"),
		Account:        c.String("account"),
		Observer:       &cluster.Observer{Nomad: nomadAdapter, Consul: consulAdapter},
		SigV4KeyFile:   c.String("sigv4-keys"),
		AllowedDrivers: allowedDrivers(c.StringSlice("allow-drivers")),
		Logger:         log,

		OperatorKeyFile:    c.String("operator-keys"),
		AllowFileArtifacts: c.Bool("allow-file-artifacts"),
	})
	if err != nil {
		return cli.Exit(fmt.Sprintf("serai server: %v", err), exitUsage)
	}
	ctx, stop := signal.NotifyContext(c.Context, os.Interrupt, syscall.SIGTERM)
	defer stop()
	var reload []reloader
	if path := c.String("sigv4-keys"); path != "" || c.String("operator-keys") != "" {
		reload = append(reload, reloader{what: "SigV4 keys", stays: "the previous keys stay in use",
			kv: []any{"keys_file", path, "operator_keys_file", c.String("operator-keys")}, reload: handler.ReloadSigV4Keys})
	}
	if path := c.String("stores"); path != "" {
		if err := putStoresFile(ctx, handler, path); err != nil {
			return cli.Exit(fmt.Sprintf("serai server: --stores: %v", err), exitUsage)
		}
		// Stores missing from the file are left alone on reload: deleting
		// one is an explicit operator operation (serai store delete).
		reload = append(reload, reloader{what: "artifact stores", stays: "stores already put stay as they are",
			kv: []any{"stores_file", path}, reload: func() error { return putStoresFile(ctx, handler, path) }})
	}
	if cert != nil {
		reload = append(reload, tlsReloader(cert, c))
	}
	reloadOnHUP(ctx, log, reload...)
	err = server.Run(ctx, server.Config{
		Listen:         c.String("listen"),
		TLS:            cert,
		AdvertiseAddr:  c.String("advertise-addr"),
		ID:             c.String("id"),
		Authenticated:  c.String("sigv4-keys") != "" || c.String("operator-keys") != "",
		InsecureNoAuth: c.Bool("insecure-no-auth"),
		API:            handler,
		Consul:         consul,
		Logger:         log,
		Reconcile: reconcile.Config{
			Store:     store,
			Nomad:     nomadAdapter,
			Instances: consulAdapter,
			Routes:    consulAdapter,
			Vault:     vault,
			Metrics:   &cluster.RouterMetrics{Consul: consul, HTTP: routerClient, ScrapeTimeout: c.Duration("scrape-timeout"), Logger: log.Named("metrics")},
			Wakes:     cluster.ConsulWakes{Client: consul},
			Compile: scheduler.Options{
				SeraiBinary: c.String("serai-binary"),
				FetchImage:  c.String("fetch-image"),
				RouterURL:   c.String("router-url"),
				Namespace:   c.String("namespace"),
			},
			Logger:        log,
			Tick:          c.Duration("tick"),
			DrainPeriod:   c.Duration("drain-period"),
			HealthTimeout: c.Duration("health-timeout"),
			StepTimeout:   c.Duration("step-timeout"),
			Workers:       c.Int("reconcile-workers"),
			MetricsGrace:  c.Duration("metrics-grace"),
		},
	}, nil)
	if errors.Is(err, server.ErrOpenAPI) {
		return cli.Exit(fmt.Sprintf("serai server: %v", err), exitUsage)
	}
	if err != nil {
		return cli.Exit(fmt.Sprintf("serai server: %v", err), exitError)
	}
	return nil
}

// allowedDrivers splits "--allow-drivers a,b --allow-drivers c" into
// names; an empty result means the default.
func allowedDrivers(flags []string) []string {
	var out []string
	for _, f := range flags {
		for _, d := range strings.Split(f, ",") {
			if d = strings.TrimSpace(d); d != "" {
				out = append(out, d)
			}
		}
	}
	return out
}
