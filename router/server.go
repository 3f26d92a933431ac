package router

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	consulapi "github.com/hashicorp/consul/api"
	"github.com/hashicorp/go-hclog"

	"github.com/seraihq/serai/contract"
	"github.com/seraihq/serai/internal/tlsreload"
)

// ServerConfig configures Serve.
type ServerConfig struct {
	// Listen is the address to listen on; ignored when Listener is set.
	Listen   string
	Listener net.Listener

	// TLS, when set, serves HTTPS with this certificate (HTTP/1.1 only;
	// see Serve); its Reload takes effect for new connections.
	TLS *tlsreload.Cert

	// ShutdownTimeout bounds how long in-flight requests may take to
	// finish after SIGTERM (default 30 s).
	ShutdownTimeout time.Duration

	// Consul, when set with Register, receives the router's registration
	// as service serai-router with an HTTP check on /ping.
	Consul   *consulapi.Client
	Register bool
	// AdvertiseAddr is the host:port clients should use; default the
	// listener's address (with the Consul node's address when listening on
	// all interfaces).
	AdvertiseAddr string
	// ServiceID defaults to "serai-router-<host>-<port>".
	ServiceID string

	Logger hclog.Logger

	// OnListening, if set, is called with the bound address once the
	// server accepts connections.
	OnListening func(net.Addr)
}

// Serve runs rt behind an HTTP server fed by disc until ctx ends, then
// shuts down gracefully: /ping turns 503, the Consul registration is
// removed, the listener stops accepting, in-flight requests finish (up to
// ShutdownTimeout), and discovery stops.
//
// With TLS, TLS is terminated at the listener, so HTTPS connections meet
// the fast path (fastserve.go) exactly as plain ones do, and what it hands
// to net/http is the decrypted stream. ALPN offers only HTTP/1.1: every
// runtime operation the router serves works over HTTP/1.1 in every AWS
// SDK (boto3, the AWS CLI and Java's sync client speak nothing else),
// while clients that prefer HTTP/2 when offered (aws-sdk-go-v2 and
// net/http's default transport) would otherwise all bypass the fast path;
// the one runtime operation that needs HTTP/2,
// InvokeEndpointWithBidirectionalStream, is not served.
func Serve(ctx context.Context, rt *Router, disc Discovery, cfg ServerConfig) error {
	return serve(ctx, rt, disc, cfg, nil)
}

// serve is Serve; tests pass seeFast to read the fast path's counters.
func serve(ctx context.Context, rt *Router, disc Discovery, cfg ServerConfig, seeFast func(*fastServer)) error {
	log := cfg.Logger
	if log == nil {
		log = hclog.NewNullLogger()
	}
	if cfg.ShutdownTimeout <= 0 {
		cfg.ShutdownTimeout = 30 * time.Second
	}
	ln := cfg.Listener
	if ln == nil {
		var err error
		ln, err = net.Listen("tcp", cfg.Listen)
		if err != nil {
			return fmt.Errorf("listening on %s: %w", cfg.Listen, err)
		}
	}
	scheme := "http"
	if cfg.TLS != nil {
		scheme = "https"
		ln = tls.NewListener(ln, cfg.TLS.ServerConfig("http/1.1"))
	}
	srv := newHTTPServer(rt, nil, log)

	var wg sync.WaitGroup
	discCtx, stopDisc := context.WithCancel(context.Background())
	defer stopDisc()
	if disc != nil {
		rt.awaitingSync.Store(true)
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := disc.Run(discCtx, rt); err != nil && !errors.Is(err, context.Canceled) {
				log.Error("discovery stopped", "error", err)
			}
		}()
	}

	// Every connection goes through the fast path (fastserve.go), which
	// hands what it does not serve to srv.
	fs := newFastServer(srv)
	if seeFast != nil {
		seeFast(fs)
	}
	var cs connServer = fs
	serveErr := make(chan error, 1)
	go func() { serveErr <- cs.Serve(ln) }()
	kv := []any{"address", ln.Addr().String(), "scheme", scheme}
	if cfg.TLS != nil {
		kv = append(kv, cfg.TLS.Describe()...)
	}
	log.Info("router listening", kv...)
	if cfg.OnListening != nil {
		cfg.OnListening(ln.Addr())
	}

	var reg *registration
	regCtx, stopReg := context.WithCancel(context.Background())
	defer stopReg()
	if cfg.Register && cfg.Consul != nil {
		r, err := newRegistration(cfg, ln.Addr(), scheme)
		if err == nil && r.svc.Check.TLSSkipVerify {
			log.Warn("the TLS certificate names no host or address, so Consul's health check cannot verify it and skips verification", "check", r.svc.Check.HTTP)
		}
		if err != nil {
			cs.Close()
			stopDisc()
			wg.Wait()
			return err
		}
		reg = r
		wg.Add(1)
		go func() {
			defer wg.Done()
			reg.maintain(regCtx, cfg.Consul, log)
		}()
	}

	var err error
	select {
	case <-ctx.Done():
	case err = <-serveErr:
		err = fmt.Errorf("http server: %w", err)
	}

	log.Info("router shutting down", "shutdown_timeout", cfg.ShutdownTimeout)
	rt.SetDraining(true)
	stopReg()
	if reg != nil {
		dctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		if derr := reg.deregister(dctx, cfg.Consul); derr != nil {
			log.Warn("could not deregister from Consul", "service_id", reg.svc.ID, "error", derr)
		} else {
			log.Info("deregistered from Consul", "service_id", reg.svc.ID)
		}
		cancel()
	}
	sctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
	if serr := cs.Shutdown(sctx); serr != nil {
		log.Warn("in-flight requests did not finish in time; closing connections", "error", serr)
		cs.Close()
	}
	cancel()
	stopDisc()
	wg.Wait()
	rt.Close()
	log.Info("router stopped")
	return err
}

// newHTTPServer is the net/http server Serve runs behind the fast path
// (Serve terminates TLS at the listener and passes tlsConf nil). Its
// timeouts are the Router's (Config.ReadHeaderTimeout and the rest; the
// defaults for another handler), and the fast path reads them from it, so
// both paths keep the same bounds.
func newHTTPServer(h http.Handler, tlsConf *tls.Config, log hclog.Logger) *http.Server {
	var cfg Config
	if rt, ok := h.(*Router); ok {
		cfg = rt.cfg
	} else {
		cfg.setDefaults()
	}
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: cfg.ReadHeaderTimeout,
		ReadTimeout:       cfg.ReadTimeout,
		// Invocations move the deadline to the model timeout plus this
		// (proxy.go); everything else must be written within it.
		WriteTimeout:   cfg.WriteTimeout,
		IdleTimeout:    cfg.IdleTimeout,
		MaxHeaderBytes: 64 << 10,
		TLSConfig:      tlsConf,
		ErrorLog:       log.StandardLogger(&hclog.StandardLoggerOptions{ForceLevel: hclog.Debug}),
	}
}

type registration struct {
	svc *consulapi.AgentServiceRegistration
}

func newRegistration(cfg ServerConfig, bound net.Addr, scheme string) (*registration, error) {
	adv := cfg.AdvertiseAddr
	if adv == "" {
		adv = bound.String()
	}
	host, portStr, err := net.SplitHostPort(adv)
	if err != nil {
		return nil, fmt.Errorf("advertise address %q: %w", adv, err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil || port <= 0 || port > 65535 {
		return nil, fmt.Errorf("advertise address %q: bad port", adv)
	}
	checkHost := host
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		// Listening everywhere: let Consul fill in the node's address and
		// check through loopback, where the local agent can reach us.
		host = ""
		checkHost = "127.0.0.1"
	}
	id := cfg.ServiceID
	if id == "" {
		h := host
		if h == "" {
			h = "node"
		}
		id = RouterServiceName + "-" + strings.NewReplacer(":", "-", "[", "", "]", "").Replace(h) + "-" + portStr
	}
	check := &consulapi.AgentServiceCheck{
		Name:                           "serai router /ping",
		HTTP:                           scheme + "://" + net.JoinHostPort(checkHost, portStr) + "/ping",
		Interval:                       "5s",
		Timeout:                        "2s",
		Status:                         consulapi.HealthPassing,
		DeregisterCriticalServiceAfter: "1m",
	}
	if cfg.TLS != nil {
		// Consul verifies the check's certificate against TLSServerName
		// (its own node name when unset, which no router certificate
		// holds), with the CAs of its agent (tls.defaults.ca_file with
		// enable_agent_tls_for_checks) or the system's roots: agents must
		// trust the router's CA, or the check fails. Verification is
		// skipped only for a certificate that names nothing to verify.
		check.TLSServerName, _ = cfg.TLS.ServerName(checkHost)
		check.TLSSkipVerify = check.TLSServerName == ""
	}
	return &registration{svc: &consulapi.AgentServiceRegistration{
		ID:      id,
		Name:    RouterServiceName,
		Address: host,
		Port:    port,
		Meta:    map[string]string{contract.RouterMetaScheme: scheme},
		Check:   check,
	}}, nil
}

// maintain registers the service and re-registers it whenever the local
// agent forgets it (agent restart without persisted state), retrying while
// Consul is unreachable.
func (r *registration) maintain(ctx context.Context, c *consulapi.Client, log hclog.Logger) {
	failing := false
	for {
		q := (&consulapi.QueryOptions{}).WithContext(ctx)
		_, _, err := c.Agent().Service(r.svc.ID, q)
		if err != nil && ctx.Err() == nil {
			err = c.Agent().ServiceRegisterOpts(r.svc, consulapi.ServiceRegisterOpts{}.WithContext(ctx))
			switch {
			case ctx.Err() != nil:
			case err == nil:
				log.Info("registered in Consul", "service", RouterServiceName, "service_id", r.svc.ID)
				failing = false
			case !failing:
				log.Warn("could not register in Consul; retrying every 2s", "error", err)
				failing = true
			}
		}
		wait := 30 * time.Second
		if err != nil {
			wait = 2 * time.Second
		}
		if sleepCtx(ctx, wait) != nil {
			return
		}
	}
}

func (r *registration) deregister(ctx context.Context, c *consulapi.Client) error {
	return c.Agent().ServiceDeregisterOpts(r.svc.ID, (&consulapi.QueryOptions{}).WithContext(ctx))
}
