# serai router: read its own SigV4 keys, session key and TLS certificate
# (deploy/serai-router.nomad.hcl renders them). Nothing else.
path "secret/data/serai/deploy/router" {
  capabilities = ["read"]
}
