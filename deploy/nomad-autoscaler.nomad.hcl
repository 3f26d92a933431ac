# The Nomad Autoscaler, reading the scaling policies serai compiles into
# every endpoint job (target-value on invocations per instance) and
# querying Prometheus (deploy/prometheus.nomad.hcl), which scrapes the
# routers. The APM plugin's name, "prometheus", is the `source` serai's
# policies use.

variable "autoscaler_binary" {
  default = "/usr/local/bin/nomad-autoscaler"
}

variable "driver" {
  default = "exec"
}

variable "datacenters" {
  type    = list(string)
  default = ["*"]
}

variable "nomad_addr" {
  default = "http://127.0.0.1:4646"
}

job "serai-autoscaler" {
  type        = "service"
  datacenters = var.datacenters

  group "autoscaler" {
    network {
      port "http" {}
    }

    service {
      name     = "serai-autoscaler"
      port     = "http"
      provider = "consul"
      check {
        type     = "http"
        path     = "/v1/health"
        interval = "10s"
        timeout  = "2s"
      }
    }

    shutdown_delay = "5s"

    task "autoscaler" {
      driver = var.driver

      config {
        command = var.autoscaler_binary
        args    = ["agent", "-config", "${NOMAD_TASK_DIR}/autoscaler.hcl"]
      }

      template {
        destination = "local/autoscaler.hcl"
        data        = <<-HCL
          http {
            bind_address = "{{ env "NOMAD_IP_http" }}"
            bind_port    = {{ env "NOMAD_PORT_http" }}
          }
          nomad {
            address = "${var.nomad_addr}"
          }
          apm "prometheus" {
            driver = "prometheus"
            config = {
              # deploy/prometheus.nomad.hcl, found in Consul.
              address = "{{ range service "serai-prometheus" }}http://{{ .Address }}:{{ .Port }}{{ end }}"
            }
          }
          strategy "target-value" {
            driver = "target-value"
          }
        HCL
      }

      resources {
        cpu    = 200
        memory = 128
      }
    }
  }
}
