# serai's data plane. A system job: one router per client node, on a fixed
# port so load balancers and clients find it on every node; it registers
# itself in Consul as serai-router, which Prometheus (deploy/prometheus)
# scrapes and router/client discovers.
#
#   nomad job run deploy/serai-router.nomad.hcl
#
# For a fixed number of routers instead, run it with -var type=service
# -var count=N.
#
# Secure by default: clients reach it over the network, so it serves TLS
# and accepts only SigV4-signed invocations. Its keys, session key and
# certificate come from Vault (KV v2 at var.secrets_path, fields
# sigv4_keys, session_key, tls_cert, tls_key) through its own JWT role
# "serai-router" (deploy/vault/), which reads that path and nothing else;
# Nomad renders them into secrets/ (0600) and sends SIGHUP when they
# change, which reloads them in place.

variable "serai_binary" {
  default = "/usr/local/bin/serai"
}

variable "driver" {
  default = "exec"
}

variable "type" {
  description = "system (one per client node) or service (var.count routers)"
  default     = "system"
}

variable "count" {
  default = 2
}

variable "datacenters" {
  type    = list(string)
  default = ["*"]
}

variable "port" {
  default = 8081
}

variable "consul_addr" {
  default = "127.0.0.1:8500"
}

variable "secrets_path" {
  description = "Vault KV v2 API path of the router's keys and certificate"
  default     = "secret/data/serai/deploy/router"
}

variable "args" {
  description = "extra serai router flags (--memory-limit, --sigv4-region, ...)"
  type        = list(string)
  default     = []
}

job "serai-router" {
  type        = var.type
  datacenters = var.datacenters

  meta {
    serai_component = "router"
  }

  update {
    max_parallel     = 1
    min_healthy_time = "5s"
    healthy_deadline = "1m"
  }

  group "router" {
    count = var.type == "system" ? null : var.count

    network {
      port "http" {
        static = var.port
      }
    }

    task "router" {
      driver = var.driver

      config {
        command = var.serai_binary
        args = concat([
          "router",
          "--listen", "${NOMAD_ADDR_http}",
          "--consul-addr", var.consul_addr,
          "--sigv4-keys", "${NOMAD_SECRETS_DIR}/sigv4-keys",
          "--session-key-file", "${NOMAD_SECRETS_DIR}/session-key",
          "--tls-cert", "${NOMAD_SECRETS_DIR}/tls.crt",
          "--tls-key", "${NOMAD_SECRETS_DIR}/tls.key",
        ], var.args)
      }

      vault {
        role = "serai-router"
      }

      # One file per field of the secret, each rendered 0600 into
      # secrets/ and reloaded in place (SIGHUP) when Vault's copy changes.
      dynamic "template" {
        for_each = {
          "sigv4-keys"  = "sigv4_keys"
          "session-key" = "session_key"
          "tls.crt"     = "tls_cert"
          "tls.key"     = "tls_key"
        }
        content {
          destination   = "secrets/${template.key}"
          perms         = "0600"
          change_mode   = "signal"
          change_signal = "SIGHUP"
          data          = "{{ with secret \"${var.secrets_path}\" }}{{ .Data.data.${template.value} }}{{ end }}"
        }
      }

      # With Consul ACLs on, the task's Consul token (the serai-router
      # policy in deploy/consul) from the same secret, field consul_token;
      # absent, no token is set.
      template {
        destination = "secrets/consul.env"
        env         = true
        perms       = "0600"
        change_mode = "restart"
        data        = "{{ with secret \"${var.secrets_path}\" }}{{ if .Data.data.consul_token }}CONSUL_HTTP_TOKEN={{ .Data.data.consul_token }}{{ end }}{{ end }}\n"
      }

      # SIGTERM drains in-flight requests before the router exits.
      kill_signal  = "SIGTERM"
      kill_timeout = "30s"

      resources {
        cpu    = 500
        memory = 128
      }
    }
  }
}
