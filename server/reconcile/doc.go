// Package reconcile is the control plane's reconciler: it carries out the
// operation recorded on each endpoint (create, blue/green update with
// traffic shifting, baking and metric-gated rollback, weight and capacity
// changes, delete) one idempotent step at a time, and publishes SageMaker's
// endpoint status.
//
// Every step first writes the endpoint record (check-and-set), then acts on
// the cluster, so a reconciler restarted anywhere resumes from the record:
// re-registering a job, rewriting a routing table or stopping a stopped job
// are all harmless. The routing table is derived from the record alone, so
// no generation takes traffic without the record saying so.
//
// Artifact store settings and Vault paths come from the operator's store
// records (serai/stores/<name>), read when a generation is compiled and a
// model's Vault policy written; a model record names its store only.
//
// Endpoints are stepped by a bounded pool of workers, each step under a
// deadline (Config.StepTimeout, Config.Workers), so a hung agent or a
// corrupt record costs the endpoint it concerns and no other.
//
// It talks to the cluster only through the small interfaces in
// interfaces.go (Nomad, Instances, Routes, Vault, Metrics); the real
// adapters live in server/cluster. It must not serve the API, hold the
// leader lock (server does), or touch the router's internals: the routing
// table in contract is its only channel to the data plane.
package reconcile
