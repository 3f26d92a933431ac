// Package policies writes the policies other systems enforce on serai's
// behalf: the Nomad Autoscaler scaling policy embedded in each variant's task
// group, and the per-model Vault policies and JWT roles that scope artifact
// store credentials to one fetch task (in serai's Nomad namespace, of the
// endpoints using the model).
//
// It produces documents and applies Vault changes through a small client
// interface; it must not register Nomad jobs or route traffic.
package policies
