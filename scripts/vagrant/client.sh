#!/usr/bin/env bash
# Configures a Nomad client in one Nomad datacenter (Docker, exec and
# raw_exec drivers), a Consul client joined to the server, and trains the
# example's two Iris models into /opt/serai/models for file:// artifacts.
# Usage: client.sh SERVER_IP CLIENT_IP DATACENTER
set -euo pipefail

server=${1:?usage: client.sh SERVER_IP CLIENT_IP DATACENTER}
ip=${2:?usage: client.sh SERVER_IP CLIENT_IP DATACENTER}
dc=${3:?usage: client.sh SERVER_IP CLIENT_IP DATACENTER}

# The demo's CA (server.sh made it): serai's servers and routers serve
# TLS, and this agent's HTTPS checks of them verify against it.
until curl -sf "http://$server:8500/v1/kv/serai-demo/ca.crt?raw" >/etc/serai-ca.crt.new; do sleep 2; done
mv /etc/serai-ca.crt.new /etc/serai-ca.crt

cat >/etc/consul.d/consul.hcl <<HCL
datacenter           = "dc1"
data_dir             = "/opt/consul"
bind_addr            = "$ip"
client_addr          = "127.0.0.1"
retry_join           = ["$server"]
disable_update_check = true
tls { defaults { ca_file = "/etc/serai-ca.crt" } }
enable_agent_tls_for_checks = true
HCL
systemctl enable --now consul

cat >/etc/nomad.d/nomad.hcl <<HCL
datacenter           = "$dc"
data_dir             = "/opt/nomad/data"
bind_addr            = "$ip"
disable_update_check = true
client {
  enabled = true
  servers = ["$server"]
  network_interface = "eth1"
  options {
    "fingerprint.denylist" = "env_aws,env_gce,env_azure,env_digitalocean"
  }
}
plugin "raw_exec" {
  config {
    enabled = true
  }
}
consul {
  address = "127.0.0.1:8500"
}
vault {
  enabled = true
  address = "http://$server:8200"
}
HCL
systemctl enable --now nomad

for v in v1 v2; do
  features=all
  [ "$v" = v1 ] && features=sepal
  model-server train --version "$v" --features "$features" \
    --data /vagrant/examples/data/iris.csv --out "/opt/serai/models/$v" >/dev/null
done

cat >/etc/profile.d/serai.sh <<SH
export NOMAD_ADDR=http://$server:4646
export SERAI_ROUTER_ADDR=https://$ip:8081
export SERAI_CA_CERT=/etc/serai-ca.crt
SH
