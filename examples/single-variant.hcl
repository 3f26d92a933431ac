# One model, one variant, one instance: the smallest useful endpoint.
# Render it:  go run ./cmd/serai render examples/single-variant.hcl

artifact_store "minio-main" {
  endpoint   = "http://minio.service.consul:9000"
  region     = "us-east-1"
  path_style = true
  # Keys live in Vault KV v2 at secret/serai/stores/minio-main (the default).
}

model "iris-v2" {
  artifact       = "s3://models/iris/v2/model.tar.gz"
  sha256         = "8d3a1f0c2b5e4d6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b1c2d3e4f5a6b7c8d9e0f"
  artifact_store = "minio-main"
  command        = "/usr/local/bin/serai-model-server"
  args           = ["serve"]
  driver         = "exec"
  environment = {
    LOG_LEVEL = "info"
  }
}

endpoint_config "iris-2026-11" {
  datacenters = ["dc1"]

  variant "primary" {
    model          = "iris-v2"
    instance_type  = "ml.t3.medium"
    instance_count = 1
  }
}

endpoint "iris" {
  config = "iris-2026-11"
}
