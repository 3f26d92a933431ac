// Package router is serai's data plane: a stateless HTTP server that
// speaks the SageMaker runtime API (POST /endpoints/{name}/invocations) and
// forwards each invocation to one model instance.
//
// # Request path
//
// A request reads the current routing table with one atomic pointer load
// (no lock), looks the endpoint up, buffers the body (at most 6,291,456
// bytes; a larger Content-Length is refused with 413 before a byte of the
// body is read), picks a variant with an alias table (O(1), weights
// precomputed when the table changes) and an instance by power of two
// choices on per-instance atomic in-flight counters, and sends the request
// over a pooled keep-alive connection with the router's own minimal
// HTTP/1.1 client (see upstream.go for why not net/http's Transport). A
// connection that fails before the request is sent is retried once on
// another instance. The pick allocates nothing; the router's own work
// costs about three allocations per request (context.AfterFunc, which lets
// a client hang-up abort the model call).
//
// Requests of that shape are read and answered by the router's own
// HTTP/1.1 serving loop (fastserve.go), which hands every connection it
// does not serve to net/http's server. TLS is terminated at the listener
// (HTTP/1.1 only, certificate reloadable: server.go), so HTTPS takes the
// same loop.
//
// # Bounds
//
// Request bodies in flight are charged to a budget derived from the
// process's memory limit (Config.MemoryLimit, BodyBudget); a request that
// finds it spent is answered 429 ThrottlingException. Clients are held to
// the net/http-style timeouts of Config (ReadHeaderTimeout, ReadTimeout,
// WriteTimeout, IdleTimeout) on both serving paths, with a write deadline
// per answer, so a client that stops reading or stalls mid-request loses
// its connection instead of holding it and the model's.
//
// # Routing table
//
// Routes (routes.go) is the versioned JSON the control plane writes to
// Consul KV serai/routes/<endpoint>; EncodeRoutes and DecodeRoutes are the
// only way either side reads or writes it. Effective weight of
// (generation, variant) = generation share × variant share. Weight 0 takes
// no traffic unless targeted with X-Amzn-SageMaker-Target-Variant. A
// variant without healthy instances gives its share to the others, except to
// requests that target it (503). Shadow variants get a sampled copy of
// requests, sent in the background and never affecting the client's answer.
//
// # Discovery
//
// Discovery is a small interface; ConsulDiscovery is the first backend. It
// watches the KV prefix and, per endpoint, the passing instances of
// serai-<endpoint>, both with blocking queries, so changes land in
// milliseconds. When Consul fails the router keeps its last table, logs
// the outage once, and sets serai_router_discovery_up to 0. An instance
// is used only when it has a passing check of its own and its service
// meta names the job and generation its tags claim (contract.TrustInstance);
// others are ignored, logged once and counted in
// serai_router_untrusted_instances.
//
// # Outlier detection
//
// Consecutive connection failures, timeouts and 502/503/504 answers eject
// an instance for a back-off that grows with repeated ejections. If every
// instance of a variant is ejected the variant is used anyway only when no
// other variant can serve, so a recovering fleet is not refused wholesale.
//
// # Authentication
//
// With Config.SigV4Keys set, invocations must carry an AWS Signature
// Version 4 by one of the keys (service "sagemaker"), as SageMaker
// requires (sigv4.go): the header, key, scope and clock are checked before
// the endpoint is looked up, and the signature, recomputed with the
// aws-sdk-go-v2 signer over the body actually received, once the body is
// in. Refusals are 403 with AWS's error types. Without it the request path
// pays one nil check.
//
// # Streaming and sessions
//
// POST /endpoints/{name}/invocations-response-stream (stream.go) shares the
// admission path and relays each chunk of the model's answer as one AWS
// event-stream PayloadPart as it arrives (chunks that arrive together
// leave in one write); failures after the first byte
// become ModelStreamError events. Stateful sessions (sessions.go) need no
// shared state: the session ID a client holds names its instance under an
// HMAC with a key all routers share. SageMaker headers the router does not
// carry out are refused by name (headers.go), never ignored.
//
// Serve runs a Router with discovery, Consul registration and graceful
// shutdown; `serai router` is a thin wrapper around it. See README.md for
// the operator's view.
//
// The router only reads Consul (health and KV); it must not write routing
// tables, register or stop Nomad jobs, or talk to Vault: the control plane
// owns all of that.
package router
