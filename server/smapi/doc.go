// Package smapi holds the shapes of SageMaker's hosting control-plane API
// (JSON 1.1, X-Amz-Target: SageMaker.<Operation>) as serai speaks them: the
// request and response bodies of the operations serai serves, with
// SageMaker's field names, plus the one optional extension object per
// request ("Serai") that carries what SageMaker has no field for. The AWS
// SDKs never send the extension; without it documented defaults apply.
//
// It owns the wire shapes and nothing else: no validation beyond JSON,
// no storage, no Nomad. The server package decodes into these types, the
// CLI's client encodes them, and the records the server keeps in Consul
// are built from them.
package smapi
