# A GPU-backed text model on ml.g5.xlarge (1 × A10G), with AWS-secrets-engine
# credentials and a shadow variant testing a quantised build on 20% of traffic.
# Render it:  go run ./cmd/serai render examples/gpu.hcl

artifact_store "aws-models" {
  region = "us-east-1"

  vault {
    aws_mount = "aws"
    aws_role  = "serai-model-reader"
  }
}

model "sentiment-bert-fp16" {
  artifact         = "s3://acme-ml-artifacts/sentiment/bert-fp16/model.tar.gz"
  artifact_store   = "aws-models"
  image            = "registry.example.com/ml/torchserve-gpu:0.12"
  download_timeout = "30m"
  startup_timeout  = "10m"
}

model "sentiment-bert-int8" {
  artifact       = "s3://acme-ml-artifacts/sentiment/bert-int8/model.tar.gz"
  artifact_store = "aws-models"
  image          = "registry.example.com/ml/torchserve-gpu:0.12"
}

endpoint_config "sentiment-gpu" {
  datacenters = ["us-east-1a", "us-east-1b"]

  variant "fp16" {
    model          = "sentiment-bert-fp16"
    instance_type  = "ml.g5.xlarge"
    instance_count = 2

    resources {
      memory = 12288
    }
  }

  shadow_variant "int8" {
    model            = "sentiment-bert-int8"
    instance_type    = "ml.g4dn.xlarge"
    instance_count   = 1
    sampling_percent = 20
  }
}

endpoint "sentiment" {
  config = "sentiment-gpu"

  deployment {
    strategy         = "linear"
    linear_step_size = 25
    wait_interval    = "2m"
  }
}
