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

variable "router_ca_cert" {
  description = "PEM of the CA that signed the routers' TLS certificates (deploy/serai-router.nomad.hcl serves TLS); empty: the system's roots"
  default     = ""
}

variable "router_server_name" {
  description = "name the routers' certificates carry, checked on every scrape"
  default     = "serai-router.service.consul"
}

variable "router_scheme" {
  description = "https (the router job's default) or http (routers started without --tls-cert)"
  default     = "https"
}

variable "port" {
  default = 9090
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

      # Targets come from Consul through Nomad's template (every healthy
      # serai-router), not from Prometheus's own Consul discovery, which
      # some distributions' builds (Debian's) leave out. Prometheus
      # re-reads file_sd files by itself when the list changes.
      template {
        destination = "local/prometheus.yml"
        data        = <<-YAML
          global:
            scrape_interval: 10s
          scrape_configs:
            - job_name: serai-router
              scheme: ${var.router_scheme}
              tls_config:
                server_name: ${var.router_server_name}
              %{~if var.router_ca_cert != ""}
                ca_file: {{ env "NOMAD_TASK_DIR" }}/router-ca.crt
              %{~endif}
              file_sd_configs:
                - files: ["{{ env "NOMAD_TASK_DIR" }}/routers.json"]
                  refresh_interval: 30s
        YAML
      }

      template {
        destination = "local/router-ca.crt"
        data        = var.router_ca_cert == "" ? "# no CA given: the system roots apply\n" : var.router_ca_cert
      }

      template {
        destination = "local/routers.json"
        change_mode = "noop"
        data        = <<-JSON
          [{"targets": [{{ range $i, $s := service "serai-router" }}{{ if $i }}, {{ end }}"{{ $s.Address }}:{{ $s.Port }}"{{ end }}], "labels": {"job": "serai-router"}}]
        JSON
      }

      resources {
        cpu    = 300
        memory = 512
      }
    }
  }
}
