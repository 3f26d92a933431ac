// Package records owns the control plane's state: the model, endpoint
// config, endpoint and (operator-owned) artifact store records kept in
// Consul KV under serai/ (layout in package contract), their JSON form,
// and the check-and-set store they are read and written through.
//
// Every write is check-and-set on the key's ModifyIndex, so two writers
// (API servers taking requests, the one reconciling leader) never lose each
// other's updates: the loser gets ErrConflict, re-reads and retries.
//
// It must not talk to Nomad or Vault, and must not decide anything about
// endpoint lifecycles: the server's API handlers and reconciler do that.
package records
