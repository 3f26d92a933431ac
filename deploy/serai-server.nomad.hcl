# serai's control plane: the SageMaker API on every instance, the reconciler
# on the one holding the Consul lock serai/leader. Run at least two.
#
#   nomad job run deploy/serai-server.nomad.hcl
#   nomad job run -var serai_binary=/opt/serai/bin/serai -var count=3 deploy/serai-server.nomad.hcl
#
# Vault: the task logs in with its workload identity to the JWT role
# "serai-server" (deploy/vault/), whose policy lets it manage per-model
# policies and roles only. docs/operations.md has the whole procedure.

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

variable "args" {
  description = "extra serai server flags (e.g. --sigv4-keys, --region, --tick)"
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
        ], var.args)
      }

      # A Vault token for the serai-server role, in VAULT_TOKEN; Nomad
      # renews it.
      vault {
        role = "serai-server"
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
