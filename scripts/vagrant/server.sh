#!/usr/bin/env bash
# Configures the server VM: Consul server, Vault server (initialised and
# unsealed with one key share kept on the VM — a demo cluster, never do
# this in production), Nomad server with workload identities for Vault,
# and Vault's JWT auth method trusting them, plus serai's own Vault
# policy and role from deploy/vault.
# Usage: server.sh SERVER_IP
set -euo pipefail

ip=${1:?usage: server.sh SERVER_IP}

# serai's own secrets (docs/operations.md, "Secure"): a private CA and TLS certificates
# for the servers and routers, SigV4 keys for a user and an operator, and
# the routers' session key. Made once; a re-provision keeps them.
pki=/root/serai-pki
if [ ! -f "$pki/ca.crt" ]; then
  mkdir -p "$pki" && chmod 0700 "$pki"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 365 \
    -subj "/CN=serai demo CA" -keyout "$pki/ca.key" -out "$pki/ca.crt" 2>/dev/null
  # Every node may run a server or a router: one certificate each, naming
  # the Consul service names and every node address of the cluster.
  sans="DNS:serai-server.service.consul,DNS:serai-router.service.consul,IP:127.0.0.1,IP:$ip"
  for h in 21 22 23 24 31 32 33 34; do sans="$sans,IP:192.168.56.$h"; done
  for c in server router; do
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=serai-$c" \
      -keyout "$pki/$c.key" -out "$pki/$c.csr" 2>/dev/null
    openssl x509 -req -in "$pki/$c.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" -CAcreateserial \
      -days 365 -extfile <(printf 'subjectAltName=%s\nextendedKeyUsage=serverAuth\n' "$sans") \
      -out "$pki/$c.crt" 2>/dev/null
  done
  printf 'AKIASERAIDEMOUSER001 %s\n' "$(openssl rand -hex 24)" >"$pki/user-keys"
  printf 'AKIASERAIDEMOOPER001 %s\n' "$(openssl rand -hex 24)" >"$pki/operator-keys"
  openssl rand -hex 32 >"$pki/session-key"
  chmod 0600 "$pki"/*
fi
# The CA is public; Consul (its own user) reads this copy.
install -m 0644 "$pki/ca.crt" /etc/consul.d/serai-ca.crt
cat >/etc/consul.d/consul.hcl <<HCL
datacenter           = "dc1"
data_dir             = "/opt/consul"
server               = true
bootstrap_expect     = 1
bind_addr            = "$ip"
client_addr          = "0.0.0.0"
ui_config { enabled = true }
disable_update_check = true
# serai's servers and routers serve TLS: their HTTPS checks verify
# against the demo's CA.
tls { defaults { ca_file = "/etc/consul.d/serai-ca.crt" } }
enable_agent_tls_for_checks = true
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
for p in serai-server serai-server-secrets serai-router; do
  vault policy write "$p" "/vagrant/deploy/vault/$p.policy.hcl"
done
vault write auth/jwt-nomad/role/serai-server @/vagrant/deploy/vault/serai-server.role.json
vault write auth/jwt-nomad/role/serai-router @/vagrant/deploy/vault/serai-router.role.json

vault kv put secret/serai/deploy/server \
  sigv4_keys=@"$pki/user-keys" operator_keys=@"$pki/operator-keys" \
  tls_cert=@"$pki/server.crt" tls_key=@"$pki/server.key" router_ca_cert=@"$pki/ca.crt" >/dev/null
vault kv put secret/serai/deploy/router \
  sigv4_keys=@"$pki/user-keys" session_key=@"$pki/session-key" \
  tls_cert=@"$pki/router.crt" tls_key=@"$pki/router.key" >/dev/null
# The CA is public: clients fetch it from Consul KV for SERAI_CA_CERT.
consul kv put serai-demo/ca.crt @"$pki/ca.crt" >/dev/null

# serai-env runs a serai command as the demo's operator: the server's
# address from Consul, the CA and the operator key (SERAI_*, for the
# control API) and the user key (AWS_*, for invocations through a router)
# from the files above.
cat >/usr/local/bin/serai-env <<SH
#!/bin/sh
# Usage: serai-env serai apply FILE
SERAI_ADDR=\$(curl -sf '127.0.0.1:8500/v1/health/service/serai-server?passing' | jq -r '.[0].Service | "https://\\(.Address):\\(.Port)"')
SERAI_CA_CERT=$pki/ca.crt
SERAI_ACCESS_KEY_ID=\$(cut -d' ' -f1 $pki/operator-keys)
SERAI_SECRET_ACCESS_KEY=\$(cut -d' ' -f2 $pki/operator-keys)
AWS_ACCESS_KEY_ID=\$(cut -d' ' -f1 $pki/user-keys)
AWS_SECRET_ACCESS_KEY=\$(cut -d' ' -f2 $pki/user-keys)
export SERAI_ADDR SERAI_CA_CERT SERAI_ACCESS_KEY_ID SERAI_SECRET_ACCESS_KEY AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY
exec "\$@"
SH
chmod 0755 /usr/local/bin/serai-env

# Shells on the VM talk to the cluster without further setup.
cat >/etc/profile.d/serai.sh <<SH
export NOMAD_ADDR=http://$ip:4646
export VAULT_ADDR=http://127.0.0.1:8200
SH
