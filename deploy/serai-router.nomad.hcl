# serai's data plane. A system job: one router per client node, on a fixed
# port so load balancers and clients find it on every node; it registers
# itself in Consul as serai-router, which Prometheus (deploy/prometheus)
# scrapes and router/client discovers.
#
#   nomad job run deploy/serai-router.nomad.hcl
#
# For a fixed number of routers instead, run it with -var type=service
# -var count=N.

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

variable "args" {
  description = "extra serai router flags (--sigv4-keys, --session-key-file, ...)"
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
        ], var.args)
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
