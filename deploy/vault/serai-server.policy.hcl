# serai server: manage per-model policies and roles only.
path "sys/policies/acl/serai-model-*" {
  capabilities = ["create", "read", "update", "delete"]
}
path "sys/policies/acl" {
  capabilities = ["list"]
}
path "auth/jwt-nomad/role/serai-model-*" {
  capabilities = ["create", "read", "update", "delete"]
}
