# Prometheus scraping every serai router (found in Consul as serai-router)
# for the Nomad Autoscaler's target-value policies and for dashboards.
# Single instance; keep its data on a host volume for longer retention.

variable "prometheus_binary" {
  default = "/usr/bin/prometheus"
}

variable "driver" {
  default = "exec"
}

variable "datacenters" {
  type    = list(string)
  default = ["*"]
}

variable "port" {
  default = 9090
}

variable "consul_addr" {
  default = "127.0.0.1:8500"
}

job "serai-prometheus" {
  type        = "service"
  datacenters = var.datacenters

  group "prometheus" {
    network {
      port "http" {
        static = var.port
      }
    }

    service {
      name     = "serai-prometheus"
      port     = "http"
      provider = "consul"
      check {
        type     = "http"
        path     = "/-/ready"
        interval = "10s"
        timeout  = "2s"
      }
    }

    shutdown_delay = "5s"

    task "prometheus" {
      driver = var.driver

      config {
        command = var.prometheus_binary
        args = [
          "--config.file=${NOMAD_TASK_DIR}/prometheus.yml",
          "--storage.tsdb.path=${NOMAD_ALLOC_DIR}/data/prometheus",
          "--web.listen-address=${NOMAD_ADDR_http}",
        ]
      }

      template {
        destination = "local/prometheus.yml"
        data        = <<-YAML
          global:
            scrape_interval: 10s
          scrape_configs:
            - job_name: serai-router
              consul_sd_configs:
                - server: "${var.consul_addr}"
                  services: ["serai-router"]
        YAML
      }

      resources {
        cpu    = 300
        memory = 512
      }
    }
  }
}
