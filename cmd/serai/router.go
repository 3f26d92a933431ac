package main

import (
	"fmt"
	"os"
	"os/signal"
	"runtime/debug"
	"strconv"
	"syscall"
	"time"

	consulapi "github.com/hashicorp/consul/api"
	"github.com/urfave/cli/v2"

	"github.com/seraihq/serai/artifact"
	"github.com/seraihq/serai/router"
)

// routerCommand runs the invoke router; the flags map one to one onto
// router.Config, router.ConsulConfig and router.ServerConfig.
func routerCommand() *cli.Command {
	return &cli.Command{
		Name:  "router",
		Usage: "run the invoke router (data plane)",
		Description: "Serves the SageMaker runtime API (POST /endpoints/<name>/invocations), /ping and /metrics,\n" +
			"routing to the model instances Consul reports healthy, weighted by the tables in Consul KV serai/routes/.",
		Flags: append([]cli.Flag{
			&cli.StringFlag{Name: "listen", Value: "127.0.0.1:8081", Usage: "address to listen on (use 0.0.0.0:8081 to serve other hosts)"},
			&cli.StringFlag{Name: "consul-addr", EnvVars: []string{"CONSUL_HTTP_ADDR"}, Value: "127.0.0.1:8500", Usage: "Consul HTTP API address"},
			&cli.DurationFlag{Name: "timeout", Value: router.DefaultTimeout, Usage: "model timeout for endpoints whose routing table sets none"},
			&cli.BoolFlag{Name: "register", Value: true, Usage: "register in Consul as service serai-router with a /ping check"},
			&cli.StringFlag{Name: "advertise-addr", Usage: "host:port clients should use (default: the listen address)"},
			&cli.DurationFlag{Name: "shutdown-timeout", Value: 30 * time.Second, Usage: "how long in-flight requests may take to finish on SIGTERM"},
			&cli.Int64Flag{Name: "max-in-flight", Value: 10000, Usage: "concurrent invocations before answering 503"},
			&cli.StringFlag{Name: "sigv4-keys", Usage: "`FILE` of \"ACCESS_KEY_ID SECRET\" lines (or a JSON object); when set, invocations must carry an AWS SigV4 signature (service sagemaker) by one of these keys. The file must not be accessible to other users; SIGHUP reloads it"},
			&cli.StringFlag{Name: "session-key-file", Usage: "`FILE` of hex HMAC keys (one per line, at least 32 bytes each; the first signs) that every router of the fleet shares; turns on stateful sessions (SessionId)"},
			&cli.DurationFlag{Name: "stream-timeout", Value: router.DefaultStreamTimeout, Usage: "longest InvokeEndpointWithResponseStream answer"},
			&cli.StringFlag{Name: "sigv4-region", Usage: "with --sigv4-keys, the only region signatures may be scoped to (default: any)"},
			&cli.BoolFlag{Name: "scale-from-zero", Value: true, Usage: "hold requests for a variant scaled to zero (autoscaling min_capacity 0) and ask the serai server to start it by writing Consul KV serai/wake/ (the router's only KV write); off: such requests get 503"},
			&cli.IntFlag{Name: "hold-queue-length", Value: router.DefaultHoldQueueLength, Usage: "requests held per endpoint while a variant scales from zero; more get ModelNotReadyException (429)"},
			&cli.StringFlag{Name: "memory-limit", DefaultText: "$NOMAD_MEMORY_LIMIT MiB, else " + artifact.FormatSize(router.DefaultMemoryLimit),
				Usage: "memory the router may use (bytes, or with a unit: 128MiB, 1GiB, 500MB); sizes the request-body budget ((limit - 32MiB) / 2; requests beyond it get 429 ThrottlingException) and the Go runtime's soft memory limit (limit - 32MiB, unless GOMEMLIMIT is set)"},
		}, append(tlsFlags(), logFlags("trace, debug, info, warn or error (debug logs one line per request)", false)...)...),
		Action: runRouter,
	}
}

// routerGCPercent is the router's default GOGC.
const routerGCPercent = 400

// wakeEvery spaces a router's wake-key writes for one variant: the server
// acts on the key within a reconcile tick and keeps it until an instance
// passes, so one write per burst is enough and a rewrite every few seconds
// covers a key deleted while requests still wait.
const wakeEvery = 5 * time.Second

func runRouter(c *cli.Context) error {
	if c.NArg() > 0 {
		return cli.Exit("serai router: takes no arguments", exitUsage)
	}
	cert, err := loadTLS(c, "router")
	if err != nil {
		return err
	}
	if c.Duration("timeout") <= 0 || c.Duration("timeout") > router.MaxTimeout {
		return cli.Exit(fmt.Sprintf("serai router: --timeout must be in (0, %s]", router.MaxTimeout), exitUsage)
	}
	log, err := newLogger(c, "serai-router")
	if err != nil {
		return err
	}

	var keys map[string]string
	if path := c.String("sigv4-keys"); path != "" {
		if keys, err = router.LoadSigV4Keys(path); err != nil {
			return cli.Exit(fmt.Sprintf("serai router: --sigv4-keys: %v", err), exitUsage)
		}
		log.Info("SigV4 authentication on", "keys_file", path, "keys", len(keys), "region", c.String("sigv4-region"))
	} else if c.String("sigv4-region") != "" {
		return cli.Exit("serai router: --sigv4-region needs --sigv4-keys", exitUsage)
	}

	var sessionKeys [][]byte
	if path := c.String("session-key-file"); path != "" {
		if sessionKeys, err = router.LoadSessionKeys(path); err != nil {
			return cli.Exit(fmt.Sprintf("serai router: --session-key-file: %v", err), exitUsage)
		}
		log.Info("stateful sessions on", "session_key_file", path, "keys", len(sessionKeys))
	}
	if c.Duration("stream-timeout") <= 0 {
		return cli.Exit("serai router: --stream-timeout must be positive", exitUsage)
	}

	consulCfg := consulapi.DefaultConfig()
	consulCfg.Address = c.String("consul-addr")
	consul, err := consulapi.NewClient(consulCfg)
	if err != nil {
		return cli.Exit(fmt.Sprintf("serai router: consul client: %v", err), exitUsage)
	}

	// The router's live heap is a few MB, and nearly all it allocates is
	// net/http's per-request garbage: collecting at 5× the live heap
	// instead of 2× cuts GC work for a few MB more (bench/ measures the
	// difference; docs/performance.md). GOGC in the environment wins.
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(routerGCPercent)
	}
	if c.Int("hold-queue-length") <= 0 {
		return cli.Exit("serai router: --hold-queue-length must be positive", exitUsage)
	}
	memLimit, err := routerMemoryLimit(c.String("memory-limit"), os.Getenv("NOMAD_MEMORY_LIMIT"))
	if err != nil {
		return cli.Exit("serai router: "+err.Error(), exitUsage)
	}
	if memLimit < router.MinMemoryLimit {
		return cli.Exit(fmt.Sprintf("serai router: --memory-limit %s is below the minimum of %s", artifact.FormatSize(memLimit), artifact.FormatSize(router.MinMemoryLimit)), exitUsage)
	}
	// The body budget bounds what the router holds; the soft limit makes
	// the runtime collect before garbage takes the process past its limit
	// (with GOGC=400 alone the heap may grow to five times what is live).
	// It leaves out the baseline: the binary's own resident pages (about
	// 20 MiB) count in the process's memory but not in the runtime's.
	if os.Getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(memLimit - router.MemoryBaseline)
	}
	log.Info("memory", "limit", artifact.FormatSize(memLimit), "body_budget", artifact.FormatSize(router.BodyBudget(memLimit)))
	var waker *router.Waker
	if c.Bool("scale-from-zero") {
		who := c.String("advertise-addr")
		if who == "" {
			who = c.String("listen")
		}
		if host, err := os.Hostname(); err == nil {
			who = host + "/" + who
		}
		waker = &router.Waker{KV: router.ConsulWakeKV{Client: consul}, Router: who, Every: wakeEvery}
	}
	rt, err := router.New(router.Config{
		Waker:           waker,
		HoldQueueLength: c.Int("hold-queue-length"),
		Logger:          log,
		Timeout:         c.Duration("timeout"),
		MaxInFlight:     c.Int64("max-in-flight"),
		MemoryLimit:     memLimit,
		SigV4Keys:       keys,
		SigV4Region:     c.String("sigv4-region"),

		SessionKeys:   sessionKeys,
		StreamTimeout: c.Duration("stream-timeout"),
	})
	if err != nil {
		return cli.Exit(fmt.Sprintf("serai router: %v", err), exitUsage)
	}
	disc := router.NewConsulDiscovery(router.ConsulConfig{Client: consul, Logger: log})

	ctx, stop := signal.NotifyContext(c.Context, os.Interrupt, syscall.SIGTERM)
	defer stop()
	var reload []reloader
	if path := c.String("sigv4-keys"); path != "" {
		reload = append(reload, reloader{what: "SigV4 keys", stays: "the previous keys stay in use", kv: []any{"keys_file", path}, reload: func() error {
			keys, err := router.LoadSigV4Keys(path)
			if err != nil {
				return err
			}
			return rt.SetSigV4Keys(keys)
		}})
	}
	if cert != nil {
		reload = append(reload, tlsReloader(cert, c))
	}
	reloadOnHUP(ctx, log, reload...)
	err = router.Serve(ctx, rt, disc, router.ServerConfig{
		Listen:          c.String("listen"),
		TLS:             cert,
		ShutdownTimeout: c.Duration("shutdown-timeout"),
		Consul:          consul,
		Register:        c.Bool("register"),
		AdvertiseAddr:   c.String("advertise-addr"),
		Logger:          log,
	})
	if err != nil {
		return cli.Exit(fmt.Sprintf("serai router: %v", err), exitError)
	}
	return nil
}

// routerMemoryLimit is --memory-limit, else Nomad's NOMAD_MEMORY_LIMIT
// (the task's memory in MiB), else router.DefaultMemoryLimit.
func routerMemoryLimit(flag, nomadMiB string) (int64, error) {
	if flag != "" {
		n, err := parseBytes(flag)
		if err != nil {
			return 0, fmt.Errorf("--memory-limit: %w", err)
		}
		return n, nil
	}
	if nomadMiB != "" {
		n, err := strconv.ParseInt(nomadMiB, 10, 64)
		if err != nil || n <= 0 || n > 1<<30 {
			return 0, fmt.Errorf("NOMAD_MEMORY_LIMIT %q is not a number of MiB; set --memory-limit", nomadMiB)
		}
		return n << 20, nil
	}
	return router.DefaultMemoryLimit, nil
}

// parseBytes reads a positive size: a byte count, or one with a unit
// (artifact.ParseSize's: KiB, MiB, Mi, MB, M, ...).
func parseBytes(s string) (int64, error) {
	n, err := artifact.ParseSize(s)
	if err != nil || n <= 0 {
		return 0, fmt.Errorf("%q is not a size (a positive number with an optional unit: 128MiB, 1GiB, 500MB)", s)
	}
	return n, nil
}
