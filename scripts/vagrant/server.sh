#!/usr/bin/env bash
# Configures the server VM: Consul server, Vault server (initialised and
# unsealed with one key share kept on the VM — a demo cluster, never do
# this in production), Nomad server with workload identities for Vault,
# and Vault's JWT auth method trusting them, plus serai's own Vault
# policy and role from deploy/vault.
# Usage: server.sh SERVER_IP
set -euo pipefail

ip=${1:?usage: server.sh SERVER_IP}

cat >/etc/consul.d/consul.hcl <<HCL
datacenter           = "dc1"
data_dir             = "/opt/consul"
server               = true
bootstrap_expect     = 1
bind_addr            = "$ip"
client_addr          = "0.0.0.0"
ui_config { enabled = true }
disable_update_check = true
HCL
systemctl enable --now consul

cat >/etc/vault.d/vault.hcl <<HCL
ui           = true
storage "file" { path = "/opt/vault/data" }
listener "tcp" {
  address     = "0.0.0.0:8200"
  tls_disable = true
}
api_addr     = "http://$ip:8200"
HCL
systemctl enable --now vault
export VAULT_ADDR=http://127.0.0.1:8200
until curl -s "$VAULT_ADDR/v1/sys/health" >/dev/null; do sleep 1; done
init=/root/vault-init.json
if [ ! -f "$init" ]; then
  vault operator init -key-shares=1 -key-threshold=1 -format=json >"$init"
  chmod 0600 "$init"
fi
vault operator unseal "$(jq -r '.unseal_keys_b64[0]' "$init")" >/dev/null
VAULT_TOKEN=$(jq -r .root_token "$init")
export VAULT_TOKEN
until vault status >/dev/null; do sleep 1; done
vault secrets list | grep -q '^secret/' || vault secrets enable -path=secret -version=2 kv

cat >/etc/nomad.d/nomad.hcl <<HCL
data_dir             = "/opt/nomad/data"
bind_addr            = "0.0.0.0"
disable_update_check = true
advertise {
  http = "$ip"
  rpc  = "$ip"
  serf = "$ip"
}
server {
  enabled          = true
  bootstrap_expect = 1
}
consul {
  address = "127.0.0.1:8500"
}
vault {
  enabled               = true
  address               = "http://$ip:8200"
  jwt_auth_backend_path = "jwt-nomad"
  default_identity {
    aud = ["vault.io"]
    ttl = "1h"
  }
}
HCL
systemctl enable --now nomad
until curl -sf "http://$ip:4646/.well-known/jwks.json" >/dev/null; do sleep 1; done

# Vault trusts Nomad's workload identities (what `serai setup vault
# --apply` does), and serai's server gets its policy and role.
serai setup vault --apply --vault-addr "$VAULT_ADDR" --nomad-addr "http://$ip:4646"
vault policy write serai-server /vagrant/deploy/vault/serai-server.policy.hcl
vault write auth/jwt-nomad/role/serai-server @/vagrant/deploy/vault/serai-server.role.json

# Shells on the VM talk to the cluster without further setup.
cat >/etc/profile.d/serai.sh <<SH
export NOMAD_ADDR=http://$ip:4646
export VAULT_ADDR=http://127.0.0.1:8200
SH
