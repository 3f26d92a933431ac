# The two-variant Iris example across the Vagrant cluster's two Nomad
# datacenters (README: "A cluster with Vagrant"). Each client trained both
# models into /opt/serai/models during provisioning, so the artifacts are
# file:// and need no store. Two instances per variant: one in dc1, one in
# dc2 (serai spreads a variant evenly over its datacenters).

model "iris-v1" {
  artifact        = "file:///opt/serai/models/v1/model.tar.gz"
  command         = "/usr/local/bin/model-server"
  driver          = "raw_exec"
  startup_timeout = "1m"
}

model "iris-v2" {
  artifact        = "file:///opt/serai/models/v2/model.tar.gz"
  command         = "/usr/local/bin/model-server"
  driver          = "raw_exec"
  startup_timeout = "1m"
}

endpoint_config "iris-2dc" {
  datacenters = ["dc1", "dc2"]

  variant "v1" {
    model          = "iris-v1"
    instance_type  = "ml.t3.medium"
    instance_count = 2
    weight         = 80
    resources {
      cpu    = 100
      memory = 64
    }
  }

  variant "v2" {
    model          = "iris-v2"
    instance_type  = "ml.t3.medium"
    instance_count = 2
    weight         = 20
    resources {
      cpu    = 100
      memory = 64
    }
  }
}

endpoint "iris" {
  config = "iris-2dc"

  deployment {
    strategy      = "canary"
    canary_size   = 25
    wait_interval = "30s"
  }
}
