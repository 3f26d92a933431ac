# serai server: read its own API keys, operator keys and TLS certificate
# (deploy/serai-server.nomad.hcl renders them). No artifact store's keys.
path "secret/data/serai/deploy/server" {
  capabilities = ["read"]
}
