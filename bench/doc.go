// Package bench measures `serai router` the way a user would compare it
// with the proxy they would otherwise put in front of their models: one
// machine, one run, a real load generator (wrk), a fixed backend of two
// instances weighted 0.9/0.1, and the same backend reached directly (the
// limit), through the router (discovering it through a real Consul), and
// through nginx, HAProxy and Caddy from Debian's packages, each configured
// as its documentation recommends for a keep-alive reverse proxy, with
// 1 KiB, 256 KiB and streamed answers (InvokeEndpointWithResponseStream
// through the router). It also
// measures the router's control data at scale: routing-table rebuilds and
// memory for 1,000 endpoints × 10 instances, and discovery convergence.
//
// Everything lives in the package's tests, so the processes are started and
// stopped by internal/testagents like every other helper process:
//
//	bench/run                      # full comparison, rewrites docs/performance.md
//	go test ./bench -run TestPerformance -v   # smoke run (seconds), part of the default suite
//
// The smoke run measures one connection count for a couple of seconds per
// target and checks that every target answers 200 with the right body; it
// skips, saying what to install, when wrk or Consul is missing, and leaves a
// proxy out when its binary is.
//
// It must not be imported: it has no API, only measurements. It starts the
// proxies as plain processes on loopback ports with their own config and
// temp directories, never the packaged services.
package bench
