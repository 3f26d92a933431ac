# A production model and a challenger taking 5% of traffic, spread across
# three datacenters, each autoscaled on invocations per instance, rolled out
# as a canary with auto-rollback, with request/response capture.
# Render it:  go run ./cmd/serai render examples/two-variants.hcl

artifact_store "minio-main" {
  endpoint   = "https://s3.internal.example.com"
  region     = "eu-west-1"
  path_style = true

  vault {
    kv_mount = "secret"
    kv_path  = "serai/stores/minio-main"
  }
}

model "churn-xgb-v7" {
  artifact         = "s3://ml-models/churn/xgb/v7/model.tar.gz"
  sha256           = "0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0"
  artifact_store   = "minio-main"
  image            = "registry.example.com/ml/xgboost-serving:1.7.6"
  download_timeout = "10m"
  startup_timeout  = "3m"
  environment = {
    SAGEMAKER_PROGRAM = "inference.py"
  }
}

model "churn-xgb-v8" {
  artifact       = "s3://ml-models/churn/xgb/v8/model.tar.gz"
  artifact_store = "minio-main"
  image          = "registry.example.com/ml/xgboost-serving:1.7.6"
}

endpoint_config "churn-2026-11-26" {
  datacenters = ["eu-west-1a", "eu-west-1b", "eu-west-1c"]

  variant "champion" {
    model          = "churn-xgb-v7"
    instance_type  = "ml.m5.xlarge"
    instance_count = 3
    weight         = 95

    autoscaling {
      min_capacity                    = 3
      max_capacity                    = 12
      target_invocations_per_instance = 600
      scale_in_cooldown               = "300s"
      scale_out_cooldown              = "60s"
    }
  }

  variant "challenger" {
    model          = "churn-xgb-v8"
    instance_type  = "ml.m5.large"
    instance_count = 2
    weight         = 5

    autoscaling {
      min_capacity                    = 2
      max_capacity                    = 4
      target_invocations_per_instance = 600
    }
  }

  data_capture {
    enabled          = true
    sampling_percent = 10
    destination      = "s3://ml-capture/churn/"
    artifact_store   = "minio-main"
    capture          = ["input", "output"]
  }
}

endpoint "churn" {
  config = "churn-2026-11-26"

  deployment {
    strategy         = "canary"
    canary_size      = 10
    wait_interval    = "5m"
    termination_wait = "2m"

    auto_rollback {
      max_error_rate  = 0.02
      max_p99_latency = "750ms"
      min_invocations = 100
    }
  }
}
