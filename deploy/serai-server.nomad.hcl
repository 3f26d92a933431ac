# serai's control plane: the SageMaker API on every instance, the reconciler
# on the one holding the Consul lock serai/leader. Run at least two.
#
#   nomad job run deploy/serai-server.nomad.hcl
#   nomad job run -var serai_binary=/opt/serai/bin/serai -var count=3 deploy/serai-server.nomad.hcl
#
# Secure by default: the API listens on the node's address, so it serves
# TLS and accepts only SigV4-signed requests. Its keys and certificate come
# from Vault (KV v2 at var.secrets_path, fields sigv4_keys, operator_keys,
# tls_cert, tls_key, router_ca_cert); Nomad renders them into the task's
# secrets/ dir (0600) and sends SIGHUP when they change, which reloads them
# without a restart. deploy/README.md says how to write them.
#
# Vault: the task logs in with its workload identity to the JWT role
# "serai-server" (deploy/vault/), whose policies let it manage per-model
# policies and roles and read its own secrets above, nothing else (no
# artifact store's keys). docs/operations.md has the whole procedure.

variable "serai_binary" {
  description = "path of the serai binary on every Nomad client"
  default     = "/usr/local/bin/serai"
}

variable "driver" {
  description = "exec (isolated; the binary must be under /usr or /opt in the chroot) or raw_exec"
  default     = "exec"
}

variable "count" {
  default = 2
}

variable "distinct_hosts" {
  description = "at most one server per node (false only for single-node test clusters)"
  default     = true
}

variable "datacenters" {
  type    = list(string)
  default = ["*"]
}

variable "consul_addr" {
  description = "Consul HTTP API as seen from the task (the local agent)"
  default     = "127.0.0.1:8500"
}

variable "nomad_addr" {
  default = "http://127.0.0.1:4646"
}

variable "vault_addr" {
  default = "http://127.0.0.1:8200"
}

variable "router_url" {
  description = "router base URL the Nomad UI links endpoints to"
  default     = "http://serai-router.service.consul:8081"
}

variable "secrets_path" {
  description = "Vault KV v2 API path of the server's keys and certificate"
  default     = "secret/data/serai/deploy/server"
}

variable "allow_drivers" {
  description = "task drivers models may use (raw_exec gives a model author the node; add it only for trusted authors)"
  default     = "docker,exec"
}

variable "args" {
  description = "extra serai server flags (e.g. --region, --tick, --allow-file-artifacts)"
  type        = list(string)
  default     = []
}

job "serai-server" {
  type        = "service"
  datacenters = var.datacenters

  meta {
    serai_component = "server"
  }

  update {
    max_parallel     = 1
    min_healthy_time = "10s"
    healthy_deadline = "2m"
    auto_revert      = true
  }

  group "server" {
    count = var.count

    # One per node: a node failure takes out at most one server.
    constraint {
      operator = "distinct_hosts"
      value    = var.distinct_hosts ? "true" : "false"
    }

    spread {
      attribute = "${node.datacenter}"
    }

    network {
      port "api" {}
    }

    task "server" {
      driver = var.driver

      config {
        command = var.serai_binary
        args = concat([
          "server",
          "--listen", "${NOMAD_ADDR_api}",
          "--id", "serai-server-${NOMAD_ALLOC_ID}",
          "--consul-addr", var.consul_addr,
          "--nomad-addr", var.nomad_addr,
          "--vault-addr", var.vault_addr,
          "--serai-binary", var.serai_binary,
          "--router-url", var.router_url,
          "--allow-drivers", var.allow_drivers,
          "--sigv4-keys", "${NOMAD_SECRETS_DIR}/sigv4-keys",
          "--operator-keys", "${NOMAD_SECRETS_DIR}/operator-keys",
          "--tls-cert", "${NOMAD_SECRETS_DIR}/tls.crt",
          "--tls-key", "${NOMAD_SECRETS_DIR}/tls.key",
          "--router-ca-cert", "${NOMAD_SECRETS_DIR}/router-ca.crt",
        ], var.args)
      }

      # A Vault token for the serai-server role, in VAULT_TOKEN; Nomad
      # renews it. The templates below read with it too.
      vault {
        role = "serai-server"
      }

      # One file per field of the secret, each rendered 0600 into
      # secrets/ and reloaded in place (SIGHUP) when Vault's copy changes.
      dynamic "template" {
        for_each = {
          "sigv4-keys"    = "sigv4_keys"
          "operator-keys" = "operator_keys"
          "tls.crt"       = "tls_cert"
          "tls.key"       = "tls_key"
          "router-ca.crt" = "router_ca_cert"
        }
        content {
          destination   = "secrets/${template.key}"
          perms         = "0600"
          change_mode   = "signal"
          change_signal = "SIGHUP"
          data          = "{{ with secret \"${var.secrets_path}\" }}{{ .Data.data.${template.value} }}{{ end }}"
        }
      }

      # With Consul ACLs on, the task's Consul token (the serai-server
      # policy in deploy/consul) from the same secret, field consul_token;
      # absent, no token is set.
      template {
        destination = "secrets/consul.env"
        env         = true
        perms       = "0600"
        change_mode = "restart"
        data        = "{{ with secret \"${var.secrets_path}\" }}{{ if .Data.data.consul_token }}CONSUL_HTTP_TOKEN={{ .Data.data.consul_token }}{{ end }}{{ end }}\n"
      }

      # The server registers itself in Consul as serai-server with a TTL
      # check its leader session depends on; no Nomad service block, so
      # it is not registered twice.

      kill_signal  = "SIGTERM"
      kill_timeout = "15s"

      resources {
        cpu    = 200
        memory = 128
      }
    }
  }
}
