#!/usr/bin/env bash
# Installs the agents from HashiCorp's official package repository (signed
# with HashiCorp's key), Docker on clients, and serai and the example model
# server built on the host (.vagrant/bin, see the Vagrantfile's trigger).
# Usage: install.sh server|client
set -euo pipefail

role=${1:?usage: install.sh server|client}
export DEBIAN_FRONTEND=noninteractive

apt-get update -q
apt-get install -y -q curl gnupg lsb-release ca-certificates jq

keyring=/usr/share/keyrings/hashicorp-archive-keyring.gpg
if [ ! -f "$keyring" ]; then
  curl -fsSL https://apt.releases.hashicorp.com/gpg | gpg --dearmor -o "$keyring"
fi
echo "deb [signed-by=$keyring] https://apt.releases.hashicorp.com $(lsb_release -cs) main" \
  >/etc/apt/sources.list.d/hashicorp.list
apt-get update -q

case "$role" in
  server)
    apt-get install -y -q consul nomad vault
    ;;
  client)
    apt-get install -y -q consul nomad nomad-autoscaler docker.io prometheus
    # The packaged Prometheus service is not used: deploy/ runs it as a job.
    systemctl disable --now prometheus prometheus-node-exporter 2>/dev/null || true
    systemctl enable --now docker
    ;;
  *)
    echo "install.sh: unknown role $role (want server or client)" >&2
    exit 2
    ;;
esac

install -m 0755 /vagrant/.vagrant/bin/serai /usr/local/bin/serai
install -m 0755 /vagrant/.vagrant/bin/model-server /usr/local/bin/model-server
