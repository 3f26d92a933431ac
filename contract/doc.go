// Package contract holds the names and formats that serai's parts share:
// the routing-table codec the control plane writes and routers read, the
// Consul service and instance tags the compiler writes and routers parse,
// the Nomad job ID and its Vault glob, job meta keys, the Consul KV layout
// of the control plane's records, and the router metric names that
// scaling policies and auto-rollback query.
//
// It is a leaf: it imports only the standard library and internal/names,
// so the control plane can use the routing table without the data plane's
// dependencies and the router without the compiler's. It must not grow
// behaviour beyond encoding, parsing and naming; every writer/reader pair
// here has a round-trip test, because a change on one side alone breaks
// deployed parts. docs/contracts.md is the human-readable table.
package contract
