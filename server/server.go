// Package server runs serai's control plane: the SageMaker-compatible API
// on every server, and the reconciler on exactly one of them, the holder of
// a Consul lock. Any number of servers serve the API; when the leader dies
// its session's health check fails within seconds, the lock is released and
// another server's reconciler takes over from the records.
//
// It keeps the API closed by default: an unauthenticated API listens on
// loopback only (Config.InsecureNoAuth opens it, with a warning on every
// start), and the HTTP server bounds each connection's reads, writes,
// idle time and header size.
//
// It owns process wiring only: the API is server/api, the state machine
// server/reconcile, the agent adapters server/cluster, the records
// server/records. It must not implement any of them.
package server

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	consulapi "github.com/hashicorp/consul/api"
	"github.com/hashicorp/go-hclog"

	"github.com/seraihq/serai/contract"
	"github.com/seraihq/serai/internal/tlsreload"
	"github.com/seraihq/serai/server/reconcile"
)

// ServiceName is the Consul service every serai server registers as.
const ServiceName = "serai-server"

// Config wires a server.
type Config struct {
	// Listen is the API's address.
	Listen string
	// TLS, when set, serves the API over HTTPS (HTTP/1.1 and HTTP/2) with
	// this certificate; its Reload takes effect for new connections.
	TLS *tlsreload.Cert
	// AdvertiseAddr is the host:port registered in Consul (default: the
	// listen address).
	AdvertiseAddr string
	// API serves the SageMaker protocol (server/api).
	API http.Handler
	// Consul holds the lock and the registration.
	Consul *consulapi.Client
	// Reconcile is the reconciler's configuration, run while leading.
	Reconcile reconcile.Config
	// ID names this server in Consul (default serai-server-<host>-<port>).
	ID string
	// AliveTTL is the TTL of the check the leader session depends on:
	// how quickly a dead leader's lock is released.
	AliveTTL time.Duration
	// ShutdownTimeout bounds the graceful stop of the API.
	ShutdownTimeout time.Duration
	Logger          hclog.Logger

	// Authenticated says the API checks every request's credentials
	// (SigV4 keys are configured). Without it the server listens only on
	// a loopback address, unless InsecureNoAuth is set: anyone who can
	// reach an open API can run programs on every Nomad client.
	Authenticated bool
	// InsecureNoAuth lets an unauthenticated API listen on a
	// non-loopback address; the server then warns on every start.
	InsecureNoAuth bool

	// The HTTP server's bounds, so a slow or idle client cannot hold a
	// connection (and its goroutine) for ever. The API has no streaming
	// or long-polling answer (serai apply polls DescribeEndpoint), so one
	// WriteTimeout above the API's own request timeout cuts nothing a
	// well-behaved client waits for.
	//
	// ReadHeaderTimeout bounds reading a request's headers.
	ReadHeaderTimeout time.Duration
	// ReadTimeout bounds reading a whole request, body included.
	ReadTimeout time.Duration
	// WriteTimeout bounds a request from the end of its headers to the
	// end of the answer.
	WriteTimeout time.Duration
	// IdleTimeout closes a kept-alive connection that sends no request.
	IdleTimeout time.Duration
	// MaxHeaderBytes caps a request's header block (431 beyond it).
	MaxHeaderBytes int
}

// DefaultConfig holds the defaults.
func DefaultConfig() Config {
	return Config{
		Listen: "127.0.0.1:8090", AliveTTL: 3 * time.Second, ShutdownTimeout: 10 * time.Second,
		ReadHeaderTimeout: 10 * time.Second,
		// A 1 MiB body (the API's cap) at a slow client's pace.
		ReadTimeout: 30 * time.Second,
		// Above the API's RequestTimeout (15 s) plus its Observer call.
		WriteTimeout: time.Minute,
		IdleTimeout:  2 * time.Minute,
		// SigV4 headers are a few hundred bytes.
		MaxHeaderBytes: 64 << 10,
	}
}

func (c Config) withDefaults() Config {
	d := DefaultConfig()
	if c.Listen == "" {
		c.Listen = d.Listen
	}
	if c.AliveTTL <= 0 {
		c.AliveTTL = d.AliveTTL
	}
	if c.ShutdownTimeout <= 0 {
		c.ShutdownTimeout = d.ShutdownTimeout
	}
	if c.ReadHeaderTimeout <= 0 {
		c.ReadHeaderTimeout = d.ReadHeaderTimeout
	}
	if c.ReadTimeout <= 0 {
		c.ReadTimeout = d.ReadTimeout
	}
	if c.WriteTimeout <= 0 {
		c.WriteTimeout = d.WriteTimeout
	}
	if c.IdleTimeout <= 0 {
		c.IdleTimeout = d.IdleTimeout
	}
	if c.MaxHeaderBytes <= 0 {
		c.MaxHeaderBytes = d.MaxHeaderBytes
	}
	if c.Logger == nil {
		c.Logger = hclog.NewNullLogger()
	}
	return c
}

// ErrOpenAPI is Validate's answer to an unauthenticated API on a
// non-loopback address without InsecureNoAuth.
var ErrOpenAPI = errors.New("the API would be open to anyone who can reach it")

// Validate reports what is missing.
func (c Config) Validate() error {
	if c.API == nil || c.Consul == nil {
		return errors.New("server: API and Consul are required")
	}
	if !c.Authenticated && !c.InsecureNoAuth && !Loopback(c.withDefaults().Listen) {
		return fmt.Errorf("server: listen address %q is not loopback and no authentication is configured: %w; "+
			"set SigV4 keys (serai server --sigv4-keys), listen on 127.0.0.1, or accept an open API with --insecure-no-auth", c.withDefaults().Listen, ErrOpenAPI)
	}
	return c.Reconcile.Validate()
}

// Loopback reports whether the listen address addr (host:port) accepts
// connections from this host only: a loopback IP or "localhost". An
// empty host, 0.0.0.0, :: and every other name or address listen
// beyond this host.
func Loopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// open reports whether the API is served unauthenticated beyond this
// host (InsecureNoAuth let it through Validate).
func (c Config) open() bool { return !c.Authenticated && !Loopback(c.Listen) }

// Run serves until ctx ends, then stops the API gracefully, gives up the
// lock and deregisters. ready, if not nil, is called with the bound
// address once the API listens.
func Run(ctx context.Context, cfg Config, ready func(addr string)) error {
	cfg = cfg.withDefaults()
	if err := cfg.Validate(); err != nil {
		return err
	}
	log := cfg.Logger
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen %s: %w", cfg.Listen, err)
	}
	addr := ln.Addr().String()
	adv := cfg.AdvertiseAddr
	if adv == "" {
		adv = addr
	}
	id := cfg.ID
	if id == "" {
		id = ServiceName + "-" + adv
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /ping", func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusOK) })
	mux.Handle("/", cfg.API)
	srv := &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: cfg.ReadHeaderTimeout,
		ReadTimeout:       cfg.ReadTimeout,
		WriteTimeout:      cfg.WriteTimeout,
		IdleTimeout:       cfg.IdleTimeout,
		MaxHeaderBytes:    cfg.MaxHeaderBytes,
	}
	errc := make(chan error, 1)
	scheme := "http"
	if cfg.TLS != nil {
		scheme = "https"
		srv.TLSConfig = cfg.TLS.ServerConfig()
		// ServeTLS adds HTTP/2 to the offered protocols; the files come
		// from TLSConfig.GetCertificate.
		go func() { errc <- srv.ServeTLS(ln, "", "") }()
	} else {
		go func() { errc <- srv.Serve(ln) }()
	}
	kv := []any{"addr", addr, "scheme", scheme}
	if cfg.TLS != nil {
		kv = append(kv, cfg.TLS.Describe()...)
	}
	log.Info("API listening", kv...)
	if cfg.open() {
		log.Warn("the API has no authentication and listens beyond loopback (--insecure-no-auth): anyone who can reach "+addr+
			" can create models, put artifact stores and run programs on the Nomad clients; configure --sigv4-keys", "addr", addr)
	}
	if ready != nil {
		ready(addr)
	}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	// A failed registration is not Run's error: the heartbeat retries it.
	checkID, rerr := register(ctx, cfg.Consul, id, adv, cfg.AliveTTL, cfg.TLS)
	if rerr != nil {
		log.Warn("not registered in Consul; will not lead until it is", "error", rerr)
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		heartbeat(ctx, cfg.Consul, id, adv, cfg.AliveTTL, cfg.TLS, log)
	}()
	wg.Add(1)
	go func() {
		defer wg.Done()
		lead(ctx, cfg, id, checkID, log)
	}()

	select {
	case <-ctx.Done():
	case err = <-errc:
		cancel()
	}
	sctx, scancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
	defer scancel()
	serr := srv.Shutdown(sctx)
	wg.Wait()
	_ = cfg.Consul.Agent().ServiceDeregister(id)
	if err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return serr
}

func checkIDFor(id string) string { return id + "-alive" }

// register puts this server in Consul with a TTL check the heartbeat keeps
// passing; the leader session depends on that check. With cert, the API
// check is HTTPS, verified by the agent as the router's is
// (router.newRegistration).
func register(ctx context.Context, c *consulapi.Client, id, adv string, ttl time.Duration, cert *tlsreload.Cert) (string, error) {
	host, portStr, err := net.SplitHostPort(adv)
	if err != nil {
		return "", err
	}
	port, _ := strconv.Atoi(portStr)
	checkID := checkIDFor(id)
	api := &consulapi.AgentServiceCheck{Name: "serai API", HTTP: "http://" + adv + "/ping", Interval: "5s", Timeout: "2s"}
	if cert != nil {
		api.HTTP = "https://" + adv + "/ping"
		api.TLSServerName, _ = cert.ServerName(host)
		api.TLSSkipVerify = api.TLSServerName == ""
	}
	reg := &consulapi.AgentServiceRegistration{
		ID: id, Name: ServiceName, Address: host, Port: port,
		Checks: consulapi.AgentServiceChecks{
			{CheckID: checkID, Name: "serai server alive", TTL: ttl.String(), DeregisterCriticalServiceAfter: "5m"},
			api,
		},
	}
	if err := c.Agent().ServiceRegisterOpts(reg, consulapi.ServiceRegisterOpts{}.WithContext(ctx)); err != nil {
		return "", fmt.Errorf("register %s in consul: %w", id, err)
	}
	if err := c.Agent().UpdateTTL(checkID, "alive", consulapi.HealthPassing); err != nil {
		return "", err
	}
	return checkID, nil
}

// heartbeat keeps the alive check passing, re-registering when the agent
// forgot the service (an agent restart).
func heartbeat(ctx context.Context, c *consulapi.Client, id, adv string, ttl time.Duration, cert *tlsreload.Cert, log hclog.Logger) {
	t := time.NewTicker(ttl / 3)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if err := c.Agent().UpdateTTL(checkIDFor(id), "alive", consulapi.HealthPassing); err != nil {
			if _, rerr := register(ctx, c, id, adv, ttl, cert); rerr != nil && ctx.Err() == nil {
				log.Warn("consul heartbeat failed", "error", err, "re-register", rerr)
			}
		}
	}
}

// leaderSessionTTL backs up the session's checks: a leader cut off from
// its agent loses the lock within this.
const leaderSessionTTL = "15s"

// lead contends for the leader lock and runs the reconciler while holding
// it.
func lead(ctx context.Context, cfg Config, id, checkID string, log hclog.Logger) {
	for ctx.Err() == nil {
		if err := leadOnce(ctx, cfg, id, log); err != nil && ctx.Err() == nil {
			log.Warn("leadership attempt failed; retrying", "error", err)
			select {
			case <-ctx.Done():
			case <-time.After(time.Second):
			}
		}
	}
}

func leadOnce(ctx context.Context, cfg Config, id string, log hclog.Logger) error {
	// The session is created here, not by the lock, so its ID can fence
	// the routing-table writes of this leadership term (cluster.Consul.Fenced).
	sid, _, err := cfg.Consul.Session().Create(&consulapi.SessionEntry{
		Name: "serai-server leader " + id,
		// The session dies with this server's alive check (seconds),
		// not only at its TTL.
		Checks: []string{"serfHealth", checkIDFor(id)},
		TTL:    leaderSessionTTL,
		// Consul's default lock-delay (15 s) would hold a dead leader's
		// lock that long; the records' check-and-set and the fenced
		// routing-table writes already keep an old leader's late writes
		// from doing harm.
		LockDelay: 10 * time.Millisecond,
		Behavior:  consulapi.SessionBehaviorRelease,
	}, (&consulapi.WriteOptions{}).WithContext(ctx))
	if err != nil {
		return fmt.Errorf("create the leader session: %w", err)
	}
	// Closing renewDone makes RenewPeriodic destroy the session.
	renewDone := make(chan struct{})
	defer close(renewDone)
	go func() { _ = cfg.Consul.Session().RenewPeriodic(leaderSessionTTL, sid, nil, renewDone) }()
	lock, err := cfg.Consul.LockOpts(&consulapi.LockOptions{
		Key:              contract.LeaderKey,
		Value:            []byte(id),
		Session:          sid,
		MonitorRetries:   3,
		MonitorRetryTime: time.Second,
		LockWaitTime:     2 * time.Second,
	})
	if err != nil {
		return err
	}
	stop := make(chan struct{})
	go func() {
		<-ctx.Done()
		close(stop)
	}()
	lost, err := lock.Lock(stop)
	if err != nil {
		return fmt.Errorf("acquire %s: %w", contract.LeaderKey, err)
	}
	if lost == nil {
		return nil // ctx ended while waiting
	}
	defer func() { _ = lock.Unlock() }()
	log.Info("leading: reconciler started", "id", id)
	lctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-lost:
			log.Warn("leadership lost: reconciler stopping", "id", id)
		case <-lctx.Done():
		}
		cancel()
	}()
	rcfg := cfg.Reconcile
	if rcfg.Logger == nil {
		rcfg.Logger = log
	}
	if f, ok := rcfg.Routes.(interface {
		Fenced(session string) reconcile.Routes
	}); ok {
		rcfg.Routes = f.Fenced(sid)
	}
	r, err := reconcile.New(rcfg)
	if err != nil {
		return err
	}
	err = r.Run(lctx)
	if errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}
