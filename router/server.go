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
)

// ServerConfig configures Serve.
type ServerConfig struct {
	// Listen is the address to listen on; ignored when Listener is set.
	Listen   string
	Listener net.Listener

	// TLSCert and TLSKey are PEM files; both set means HTTPS.
	TLSCert, TLSKey string

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
func Serve(ctx context.Context, rt *Router, disc Discovery, cfg ServerConfig) error {
	log := cfg.Logger
	if log == nil {
		log = hclog.NewNullLogger()
	}
	if cfg.ShutdownTimeout <= 0 {
		cfg.ShutdownTimeout = 30 * time.Second
	}
	useTLS := cfg.TLSCert != "" || cfg.TLSKey != ""
	var tlsConf *tls.Config
	if useTLS {
		cert, err := tls.LoadX509KeyPair(cfg.TLSCert, cfg.TLSKey)
		if err != nil {
			return fmt.Errorf("loading TLS certificate: %w", err)
		}
		tlsConf = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	}
	ln := cfg.Listener
	if ln == nil {
		var err error
		ln, err = net.Listen("tcp", cfg.Listen)
		if err != nil {
			return fmt.Errorf("listening on %s: %w", cfg.Listen, err)
		}
	}
	srv := newHTTPServer(rt, tlsConf, log)

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

	// Plain HTTP goes through the fast path (fastserve.go), which hands
	// what it does not serve to srv; TLS is all net/http's.
	var cs connServer = srv
	if tlsConf == nil {
		cs = newFastServer(srv)
	}
	serveErr := make(chan error, 1)
	go func() {
		if tlsConf != nil {
			// ServeTLS, unlike Serve on a TLS listener, also offers HTTP/2.
			serveErr <- srv.ServeTLS(ln, "", "")
			return
		}
		serveErr <- cs.Serve(ln)
	}()
	scheme := "http"
	if useTLS {
		scheme = "https"
	}
	log.Info("router listening", "address", ln.Addr().String(), "scheme", scheme)
	if cfg.OnListening != nil {
		cfg.OnListening(ln.Addr())
	}

	var reg *registration
	regCtx, stopReg := context.WithCancel(context.Background())
	defer stopReg()
	if cfg.Register && cfg.Consul != nil {
		r, err := newRegistration(cfg, ln.Addr(), scheme)
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

// newHTTPServer is the net/http server Serve runs (alone for TLS, behind
// the fast path for plain HTTP). Its timeouts are the Router's
// (Config.ReadHeaderTimeout and the rest; the defaults for another
// handler), and the fast path reads them from it, so both paths keep the
// same bounds.
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
	return &registration{svc: &consulapi.AgentServiceRegistration{
		ID:      id,
		Name:    RouterServiceName,
		Address: host,
		Port:    port,
		Meta:    map[string]string{"scheme": scheme},
		Check: &consulapi.AgentServiceCheck{
			Name:                           "serai router /ping",
			HTTP:                           scheme + "://" + net.JoinHostPort(checkHost, portStr) + "/ping",
			Interval:                       "5s",
			Timeout:                        "2s",
			TLSSkipVerify:                  scheme == "https",
			Status:                         consulapi.HealthPassing,
			DeregisterCriticalServiceAfter: "1m",
		},
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
