// Package api serves SageMaker's hosting control-plane protocol (AWS JSON
// 1.1: POST / with X-Amz-Target: SageMaker.<Operation>) for models,
// endpoint configs, endpoints and their tags, so the AWS SDKs, the AWS CLI
// and Terraform pointed at serai with a custom endpoint URL work unchanged.
// docs/api.md lists the operations and how they differ from SageMaker's.
// It also serves serai's operator operations on artifact stores
// (X-Amz-Target: Serai.<Operation>; operator.go): stores are
// operator-owned records that models name and never define, each
// listing the access keys allowed to name it.
//
// It owns request decoding, validation (SageMaker's member constraints,
// then jobspec's rules through the one translation in server/translate),
// ARNs, SageMaker's error shapes and messages, optional SigV4 with
// operator keys, who may name which artifact store, the operator's
// admission policy for models (admission.go: the task drivers a model may
// run with), and the
// check-and-set writes that START operations on endpoint records. It
// reads and writes records only: it must not talk to Nomad, Consul
// services or Vault, nor carry out an operation — the reconciler
// (server/reconcile) does that and publishes status. Live counts come
// through the small Observer interface.
package api
