#!/usr/bin/env bash
# Runs serai's own jobs from deploy/ on the cluster: two servers, a router
# on every client, Prometheus scraping the routers and the Nomad
# Autoscaler reading it.
# Usage: deploy.sh SERVER_IP
set -euo pipefail

server=${1:?usage: deploy.sh SERVER_IP}
export NOMAD_ADDR="http://$server:4646"

until [ "$(nomad node status -json | jq '[.[] | select(.Status == "ready")] | map(.Datacenter) | unique | length')" -ge 2 ]; do
  echo "waiting for clients in two datacenters..."
  sleep 3
done

# The example's models are host processes (examples/vagrant/iris.hcl):
# raw_exec is allowed here; a production cluster keeps the default.
nomad job run -var "vault_addr=http://$server:8200" -var "nomad_addr=http://$server:4646" \
  -var 'router_url=http://192.168.56.21:8081' -var 'args=["--allow-drivers","raw_exec,exec,docker"]' \
  /vagrant/deploy/serai-server.nomad.hcl
nomad job run /vagrant/deploy/serai-router.nomad.hcl
nomad job run /vagrant/deploy/prometheus.nomad.hcl
# HashiCorp's packages install their binaries in /usr/bin.
nomad job run -var "nomad_addr=http://$server:4646" -var autoscaler_binary=/usr/bin/nomad-autoscaler \
  /vagrant/deploy/nomad-autoscaler.nomad.hcl
